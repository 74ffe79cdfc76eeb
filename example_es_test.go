package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"sync"

	"github.com/seed-a6f1faae/eventbus"
)

// openLedger returns an empty store and a registry of the account events,
// for the examples.
func openLedger() (*eventbus.MemoryStore, *eventbus.Registry) {
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		log.Fatal(err)
	}
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := errors.Join(eventbus.Register[Deposited](reg, nil), eventbus.Register[Withdrawn](reg, nil)); err != nil {
		log.Fatal(err)
	}
	return store, reg
}

// This example runs commands on a bank account kept as events: each one
// loads the account, decides, and appends with the revision it loaded.
func ExampleAggregate() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	evolve := func(balance int, e any) int {
		switch e := e.(type) {
		case Deposited:
			return balance + e.Amount
		case Withdrawn:
			return balance - e.Amount
		}
		return balance
	}
	accounts, err := eventbus.NewAggregate(store, reg, evolve, nil)
	if err != nil {
		log.Fatal(err)
	}
	withdraw := func(amount int) func(int) ([]any, error) {
		return func(balance int) ([]any, error) {
			if balance < amount {
				return nil, fmt.Errorf("cannot withdraw %d from %d", amount, balance)
			}
			return []any{Withdrawn{Amount: amount}}, nil
		}
	}

	if _, err := accounts.Execute(ctx, "account-1", func(int) ([]any, error) {
		return []any{Deposited{Amount: 100}}, nil
	}); err != nil {
		log.Fatal(err)
	}
	if _, err := accounts.Execute(ctx, "account-1", withdraw(30)); err != nil {
		log.Fatal(err)
	}
	_, err = accounts.Execute(ctx, "account-1", withdraw(500))
	fmt.Println("refused:", err)

	v, err := accounts.Load(ctx, "account-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("balance %d at revision %v\n", v.State, v.Expected)
	// Output:
	// refused: cannot withdraw 500 from 70
	// balance 70 at revision 1
}

// This example builds a read model from the store with a durable
// subscription, stops it, and resumes it on a new bus: only the events
// appended meanwhile are handled.
func ExampleSubscribeDurable() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	deposit := func(stream string, amount int) eventbus.AppendResult {
		e, err := reg.Encode(Deposited{Amount: amount})
		if err != nil {
			log.Fatal(err)
		}
		res, err := store.Append(ctx, stream, eventbus.Any, e)
		if err != nil {
			log.Fatal(err)
		}
		return res
	}

	var mu sync.Mutex
	var handled []string
	totals := map[string]int{} // the read model
	project := func(ctx context.Context, e eventbus.Event[Deposited]) error {
		mu.Lock()
		defer mu.Unlock()
		totals[e.Key] += e.Payload.Amount
		handled = append(handled, fmt.Sprintf("%s+%d", e.Key, e.Payload.Amount))
		return nil
	}
	run := func() {
		bus, err := eventbus.New(nil)
		if err != nil {
			log.Fatal(err)
		}
		d, err := eventbus.SubscribeDurable(ctx, bus, store, reg, "totals", project, nil)
		if err != nil {
			log.Fatal(err)
		}
		last := deposit("account-2", 5)
		if err := d.WaitFor(ctx, last.Position); err != nil { // read your writes
			log.Fatal(err)
		}
		if err := bus.Shutdown(ctx); err != nil { // saves the checkpoint
			log.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(handled)
		fmt.Println("handled", handled, "totals", totals)
		handled = nil
	}

	deposit("account-1", 100)
	run()
	deposit("account-1", 20)
	run() // resumes from the checkpoint
	// Output:
	// handled [account-1+100 account-2+5] totals map[account-1:100 account-2:5]
	// handled [account-1+20 account-2+5] totals map[account-1:120 account-2:10]
}

// This example publishes after commit: the event is appended to the store
// before the subscriber sees it, with its position in the store.
func ExampleStoreTopic() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	deposits, err := eventbus.NewStoreTopic[Deposited](bus, store, reg, "deposits")
	if err != nil {
		log.Fatal(err)
	}
	var receipt string // written by the handler, read after WaitFor
	receipts, err := deposits.Subscribe(ctx, "receipts", func(ctx context.Context, e eventbus.Event[Deposited]) error {
		receipt = fmt.Sprintf("receipt for %d on %s, at position %d", e.Payload.Amount, e.Key, e.Position)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	res, err := deposits.Publish(ctx, Deposited{Amount: 100}, eventbus.WithKey("account-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed at position", res.Position)
	if err := receipts.WaitFor(ctx, res.Position); err != nil {
		log.Fatal(err)
	}
	fmt.Println(receipt)
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// committed at position 0
	// receipt for 100 on deposits:account-1, at position 0
}
