package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
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

// This example builds a read model in batches: each call of the handler
// gets the events the store has for it, up to BatchSize, and applies them
// in one step, as a projection into a database would in one transaction.
func ExampleSubscribeDurableBatch() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	var last eventbus.AppendResult
	for i, stream := range []string{"account-1", "account-2", "account-1", "account-1"} {
		e, err := reg.Encode(Deposited{Amount: 10 * (i + 1)})
		if err != nil {
			log.Fatal(err)
		}
		if last, err = store.Append(ctx, stream, eventbus.Any, e); err != nil {
			log.Fatal(err)
		}
	}
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	totals := map[string]int{} // the read model
	project := func(ctx context.Context, events []eventbus.Event[Deposited]) error {
		changes := map[string]int{}
		for _, e := range events {
			changes[e.Key] += e.Payload.Amount
		}
		mu.Lock() // the transaction
		defer mu.Unlock()
		for account, amount := range changes {
			totals[account] += amount
		}
		return nil
	}
	d, err := eventbus.SubscribeDurableBatch(ctx, bus, store, reg, "totals", project,
		&eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{BatchSize: 500}})
	if err != nil {
		log.Fatal(err)
	}
	if err := d.WaitFor(ctx, last.Position); err != nil {
		log.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Println("totals", totals)
	// Output:
	// totals map[account-1:80 account-2:20]
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
	fmt.Println("committed at position", res.Position, "as", deposits.EventType(), "of topic", deposits.Name())
	if err := receipts.WaitFor(ctx, res.Position); err != nil {
		log.Fatal(err)
	}
	fmt.Println(receipt)
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// committed at position 0 as account.deposited of topic deposits
	// receipt for 100 on deposits:account-1, at position 0
}

// Salary is a payment to an account, keyed by the account: its events go
// to the account's stream.
type Salary struct {
	Account string
	Amount  int
}

func (s Salary) AggregateID() string { return s.Account }

// This example pays three salaries in one atomic step: the store commits
// all three events, in three streams, or none of them. The subscriber
// catches up to the highest position committed.
func ExampleStoreTopic_PublishBatch() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	if err := eventbus.Register[Salary](reg, &eventbus.TypeOptions{Name: "payroll.salary"}); err != nil {
		log.Fatal(err)
	}
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	payroll, err := eventbus.NewStoreTopic[Salary](bus, store, reg, "payroll")
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex // streams are handled in parallel
	var paid []string
	payslips, err := payroll.Subscribe(ctx, "payslips", func(ctx context.Context, e eventbus.Event[Salary]) error {
		mu.Lock()
		defer mu.Unlock()
		paid = append(paid, fmt.Sprintf("%s got %d", e.Key, e.Payload.Amount))
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	results, err := payroll.PublishBatch(ctx, []Salary{{"ann", 300}, {"bob", 250}, {"cy", 280}})
	if err != nil {
		log.Fatal(err)
	}
	last := results[0].Position
	for _, r := range results {
		last = max(last, r.Position)
	}
	if err := payslips.WaitFor(ctx, last); err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	slices.Sort(paid)
	fmt.Println(strings.Join(paid, "\n"))
	mu.Unlock()
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// payroll:ann got 300
	// payroll:bob got 250
	// payroll:cy got 280
}

// AccountState is the state of a bank account, kept in snapshots.
type AccountState struct{ Balance, Deposits int }

// This example saves the state of an account folded from its stream; a
// later load starts from it and folds only the events after it.
func ExampleSaveSnapshot() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	if err := eventbus.Register[AccountState](reg, nil); err != nil {
		log.Fatal(err)
	}
	deposit := func(amount int) eventbus.AppendResult {
		e, err := reg.Encode(Deposited{Amount: amount})
		if err != nil {
			log.Fatal(err)
		}
		res, err := store.Append(ctx, "account-1", eventbus.Any, e)
		if err != nil {
			log.Fatal(err)
		}
		return res
	}
	deposit(100)
	res := deposit(50)
	snap := eventbus.Snapshot[AccountState]{Revision: res.Revision, State: AccountState{Balance: 150, Deposits: 2}}
	if err := eventbus.SaveSnapshot(ctx, store, reg, "account-1", snap); err != nil {
		log.Fatal(err)
	}
	deposit(20)

	loaded, ok, err := eventbus.LoadSnapshot[AccountState](ctx, store, reg, "account-1")
	if err != nil || !ok {
		log.Fatal("no snapshot: ", err)
	}
	state := loaded.State
	fmt.Printf("snapshot after revision %d: %+v\n", loaded.Revision, state)
	for rec, err := range store.ReadStream(ctx, "account-1", &eventbus.ReadOptions{From: loaded.Revision + 1}) {
		if err != nil {
			log.Fatal(err)
		}
		d, err := eventbus.Decode[Deposited](reg, rec.EventData)
		if err != nil {
			log.Fatal(err)
		}
		state = AccountState{Balance: state.Balance + d.Amount, Deposits: state.Deposits + 1}
		fmt.Printf("revision %d folded: %+v\n", rec.Revision, state)
	}
	_, ok, err = eventbus.LoadSnapshot[AccountState](ctx, store, reg, "account-2")
	fmt.Println("account-2 has a snapshot:", ok, err)
	// Output:
	// snapshot after revision 1: {Balance:150 Deposits:2}
	// revision 2 folded: {Balance:170 Deposits:3}
	// account-2 has a snapshot: false <nil>
}

// This example builds a read model with a durable subscription, then
// rebuilds it from the first event, as after fixing a bug in its handler.
func ExampleDurable_Rebuild() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	var last eventbus.AppendResult
	for _, d := range []struct {
		account string
		amount  int
	}{{"account-1", 100}, {"account-2", 5}, {"account-1", 20}} {
		e, err := reg.Encode(Deposited{Amount: d.amount})
		if err != nil {
			log.Fatal(err)
		}
		if last, err = store.Append(ctx, d.account, eventbus.Any, e); err != nil {
			log.Fatal(err)
		}
	}
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	bonus := 1 // the bug: a bonus nobody asked for
	totals := map[string]int{}
	d, err := eventbus.SubscribeDurable(ctx, bus, store, reg, "totals", func(ctx context.Context, e eventbus.Event[Deposited]) error {
		mu.Lock()
		defer mu.Unlock()
		totals[e.Key] += e.Payload.Amount + bonus
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	show := func(when string) {
		if err := d.WaitFor(ctx, last.Position); err != nil {
			log.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Println(when, totals)
	}
	show("with the bug:")

	mu.Lock()
	bonus = 0 // the fix, deployed
	mu.Unlock()
	err = d.Rebuild(ctx, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		clear(totals) // the read model starts over
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	show("rebuilt:")
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// with the bug: map[account-1:122 account-2:6]
	// rebuilt: map[account-1:120 account-2:5]
}

// This example keeps the Idempotency middleware's record in the event
// store, so that an order charged before a restart is not charged again
// when it comes once more (a client's retry) after it.
func ExampleNewStoreProcessed() {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil) // a FileStore in production
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	run := func(orderIDs ...string) {
		bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
		if err != nil {
			log.Fatal(err)
		}
		defer bus.Close()
		orders, err := eventbus.NewTopic[OrderPlaced](bus, "orders", nil)
		if err != nil {
			log.Fatal(err)
		}
		once := eventbus.Idempotency(&eventbus.IdempotencyOptions{
			Key:   func(env *eventbus.Envelope) string { return env.Payload().(OrderPlaced).OrderID },
			Store: eventbus.NewStoreProcessed(store),
		})
		_, err = orders.Subscribe("payments", func(ctx context.Context, e eventbus.Event[OrderPlaced]) error {
			fmt.Println("charge order", e.Payload.OrderID)
			return nil
		}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{once}})
		if err != nil {
			log.Fatal(err)
		}
		for _, id := range orderIDs {
			if err := orders.Publish(ctx, OrderPlaced{OrderID: id}); err != nil {
				log.Fatal(err)
			}
		}
	}
	run("o-1", "o-2")
	fmt.Println("restart")
	run("o-2", "o-3") // o-2 again
	// Output:
	// charge order o-1
	// charge order o-2
	// restart
	// charge order o-3
}

// This example configures an Aggregate of accounts to snapshot every two
// events, so that a load replays at most one event after the latest
// snapshot, and to cache states, so that a load of an account that has not
// changed reads nothing.
func ExampleNewAggregate() {
	ctx := context.Background()
	store, reg := openLedger()
	defer store.Close()
	if err := eventbus.Register[AccountState](reg, nil); err != nil { // the snapshots' type
		log.Fatal(err)
	}
	evolve := func(s AccountState, e Deposited) AccountState {
		return AccountState{Balance: s.Balance + e.Amount, Deposits: s.Deposits + 1}
	}
	accounts, err := eventbus.NewAggregate(store, reg, evolve, &eventbus.AggregateOptions{SnapshotEvery: 2, CacheSize: 1000})
	if err != nil {
		log.Fatal(err)
	}
	for _, amount := range []int{100, 50, 20} {
		_, err := accounts.Execute(ctx, "account-1", func(AccountState) ([]Deposited, error) {
			return []Deposited{{Amount: amount}}, nil
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	snap, ok, err := eventbus.LoadSnapshot[AccountState](ctx, store, reg, "account-1")
	if err != nil || !ok {
		log.Fatal("no snapshot: ", err)
	}
	fmt.Printf("snapshot after revision %d: %+v\n", snap.Revision, snap.State)
	v, err := accounts.Load(ctx, "account-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("loaded at revision %v: %+v\n", v.Expected, v.State)
	hits, misses := accounts.CacheStats() // only the first load read the stream
	fmt.Printf("cache: %d hits, %d misses\n", hits, misses)
	// Output:
	// snapshot after revision 1: {Balance:150 Deposits:2}
	// loaded at revision 2: {Balance:170 Deposits:3}
	// cache: 3 hits, 1 misses
}
