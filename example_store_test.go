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

// This example moves money between two accounts in one atomic step: both
// events are committed, or, when one account changed since it was read,
// neither is.
func ExampleMemoryStore_AppendMulti() {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	event := func(typ string, amount int) eventbus.EventData {
		return eventbus.EventData{ID: eventbus.NewID(), Type: typ, Data: fmt.Appendf(nil, `{"Amount":%d}`, amount)}
	}
	for _, account := range []string{"account-1", "account-2"} {
		if _, err := store.Append(ctx, account, eventbus.NoStream, event("account.deposited", 100)); err != nil {
			log.Fatal(err)
		}
	}
	transfer := func(amount int, fromRevision uint64) error {
		_, err := store.AppendMulti(ctx,
			eventbus.StreamAppend{Stream: "account-1", Expected: eventbus.Exact(fromRevision), Events: []eventbus.EventData{event("account.withdrawn", amount)}},
			eventbus.StreamAppend{Stream: "account-2", Events: []eventbus.EventData{event("account.deposited", amount)}},
		)
		return err
	}
	fmt.Println("transfer 30:", transfer(30, 0))
	err = transfer(80, 0) // decided on a stale balance of account-1
	fmt.Println("transfer 80 refused:", errors.Is(err, eventbus.ErrWrongExpectedVersion))

	for rec, err := range store.ReadAll(ctx, nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(rec.Position, rec.Stream, rec.Type, string(rec.Data))
	}
	// Output:
	// transfer 30: <nil>
	// transfer 80 refused: true
	// 0 account-1 account.deposited {"Amount":100}
	// 1 account-2 account.deposited {"Amount":100}
	// 2 account-1 account.withdrawn {"Amount":30}
	// 3 account-2 account.deposited {"Amount":30}
}

// This example reads the store by global position: the last events first,
// of the account streams only, and of one type.
func ExampleMemoryStore_ReadAll() {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for _, e := range []struct{ stream, typ string }{
		{"account-1", "account.opened"},
		{"user-1", "user.created"},
		{"account-1", "account.deposited"},
		{"account-2", "account.opened"},
		{"account-2", "account.deposited"},
		{"account-1", "account.deposited"},
	} {
		data := eventbus.EventData{ID: eventbus.NewID(), Type: e.typ}
		if _, err := store.Append(ctx, e.stream, eventbus.Any, data); err != nil {
			log.Fatal(err)
		}
	}
	opts := &eventbus.ReadOptions{
		Direction: eventbus.Backwards,
		From:      eventbus.End,
		Limit:     2,
		Filter:    eventbus.Filter{StreamPrefix: "account-", Types: []string{"account.deposited"}},
	}
	for rec, err := range store.ReadAll(ctx, opts) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(rec.Position, rec.Stream, rec.Type)
	}
	// Output:
	// 5 account-1 account.deposited
	// 4 account-2 account.deposited
}

// This example reads a stream of events of several types: Decode into an
// interface, here any, gives each its registered Go type, told apart with a
// type switch. An event type that the registry does not know is an error
// matched with ErrUnknownEvent.
func ExampleDecode() {
	ctx := context.Background()
	store, reg := openLedger() // Deposited and Withdrawn are registered
	defer store.Close()
	var events []eventbus.EventData
	for _, payload := range []any{Deposited{Amount: 100}, Withdrawn{Amount: 30}} {
		e, err := reg.Encode(payload)
		if err != nil {
			log.Fatal(err)
		}
		events = append(events, e)
	}
	events = append(events, eventbus.EventData{ID: eventbus.NewID(), Type: "account.frozen", Data: []byte(`{}`)})
	if _, err := store.Append(ctx, "account-1", eventbus.NoStream, events...); err != nil {
		log.Fatal(err)
	}

	for rec, err := range store.ReadStream(ctx, "account-1", nil) {
		if err != nil {
			log.Fatal(err)
		}
		event, err := eventbus.Decode[any](reg, rec.EventData)
		if errors.Is(err, eventbus.ErrUnknownEvent) {
			fmt.Printf("revision %d: %s is not registered\n", rec.Revision, rec.Type)
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		switch e := event.(type) {
		case Deposited:
			fmt.Printf("revision %d: deposited %d\n", rec.Revision, e.Amount)
		case Withdrawn:
			fmt.Printf("revision %d: withdrawn %d\n", rec.Revision, e.Amount)
		}
	}
	// Output:
	// revision 0: deposited 100
	// revision 1: withdrawn 30
	// revision 2: account.frozen is not registered
}

// This example reads the data of a stored event without a Registry, as a
// tool that shows any store's events does: the registry that wrote it
// compressed it, and Decompress gives back the bytes its codec wrote.
func ExampleEventData_Decompress() {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	reg, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 32})
	if err != nil {
		log.Fatal(err)
	}
	type Noted struct{ Note string }
	if err := eventbus.Register[Noted](reg, &eventbus.TypeOptions{Name: "account.noted"}); err != nil {
		log.Fatal(err)
	}
	e, err := reg.Encode(Noted{Note: strings.Repeat("overdrawn ", 5)})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Append(ctx, "account-1", eventbus.NoStream, e); err != nil {
		log.Fatal(err)
	}

	for rec, err := range store.ReadAll(ctx, nil) {
		if err != nil {
			log.Fatal(err)
		}
		data, err := rec.Decompress()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (%s): %s\n", rec.Type, rec.Encoding, data)
	}
	// Output:
	// account.noted (deflate): {"Note":"overdrawn overdrawn overdrawn overdrawn overdrawn "}
}
