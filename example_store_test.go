package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/seed-a6f1faae/eventbus"
)

// Deposited is an event of a bank account.
type Deposited struct{ Amount int }

// EventType names the event in the store.
func (Deposited) EventType() string { return "account.deposited" }

// This example appends events with an expected revision, shows a
// concurrency conflict, and reads the stream back.
func ExampleMemoryStore() {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := eventbus.Register[Deposited](reg, nil); err != nil {
		log.Fatal(err)
	}

	var events []eventbus.EventData
	for _, amount := range []int{100, 50} {
		e, err := reg.Encode(Deposited{Amount: amount})
		if err != nil {
			log.Fatal(err)
		}
		events = append(events, e)
	}
	res, err := store.Append(ctx, "account-1", eventbus.NoStream, events...)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended up to revision", res.Revision)

	// A writer that loaded the account before that append is refused.
	e, err := reg.Encode(Deposited{Amount: 7})
	if err != nil {
		log.Fatal(err)
	}
	_, err = store.Append(ctx, "account-1", eventbus.NoStream, e)
	var conflict *eventbus.WrongExpectedVersionError
	if errors.As(err, &conflict) {
		fmt.Printf("conflict: expected %v, actual %v\n", conflict.Expected, conflict.Actual)
	}

	balance := 0
	for rec, err := range store.ReadStream(ctx, "account-1", nil) {
		if err != nil {
			log.Fatal(err)
		}
		d, err := eventbus.Decode[Deposited](reg, rec.EventData)
		if err != nil {
			log.Fatal(err)
		}
		balance += d.Amount
		fmt.Printf("revision %d: %s %+v\n", rec.Revision, rec.Type, d)
	}
	fmt.Println("balance", balance)
	// Output:
	// appended up to revision 1
	// conflict: expected no stream, actual 1
	// revision 0: account.deposited {Amount:100}
	// revision 1: account.deposited {Amount:50}
	// balance 150
}

// NameV1 is version 1 of an event whose name became two fields.
type NameV1 struct{ Name string }

// EventType names the event in the store.
func (NameV1) EventType() string { return "user.named" }

// NameV2 is version 2 of the event.
type NameV2 struct{ First, Last string }

// EventType names the event in the store.
func (NameV2) EventType() string { return "user.named" }

// This example reads an event stored with an old schema version: the
// upcaster turns it into the current Go type.
func ExampleRegisterUpcaster() {
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		log.Fatal(err)
	}
	err = errors.Join(
		eventbus.Register[NameV1](reg, &eventbus.TypeOptions{Version: 1}),
		eventbus.Register[NameV2](reg, &eventbus.TypeOptions{Version: 2}),
		eventbus.RegisterUpcaster(reg, func(v NameV1) (NameV2, error) {
			first, last, _ := strings.Cut(v.Name, " ")
			return NameV2{First: first, Last: last}, nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	old, err := reg.Encode(NameV1{Name: "Ada Lovelace"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stored: version %d %s\n", old.SchemaVersion, old.Data)

	v, err := eventbus.Decode[NameV2](reg, old)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("read: %+v\n", v)
	// Output:
	// stored: version 1 {"Name":"Ada Lovelace"}
	// read: {First:Ada Last:Lovelace}
}

// This example follows every stream of the store: history first, then a
// live event, with a note when the subscription has caught up.
func ExampleStore_subscribe() {
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	appendText := func(stream, text string) {
		e := eventbus.EventData{ID: eventbus.NewID(), Type: "note", Data: []byte(text)}
		if _, err := store.Append(ctx, stream, eventbus.Any, e); err != nil {
			log.Fatal(err)
		}
	}
	appendText("a", "history 1")
	appendText("b", "history 2")

	opts := &eventbus.SubscribeOptions{CaughtUp: func(next uint64) {
		fmt.Println("caught up; next position", next)
		appendText("a", "live") // in a real program, another goroutine appends
	}}
	for rec, err := range store.Subscribe(ctx, opts) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s: %s\n", rec.Position, rec.Stream, rec.Data)
		if rec.Position == 2 {
			break
		}
	}
	// Output:
	// 0 a: history 1
	// 1 b: history 2
	// caught up; next position 2
	// 2 a: live
}
