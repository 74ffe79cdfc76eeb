// Command bank runs a small event-sourced bank on an event store: accounts
// are aggregates whose commands append events; a projection keeps a read
// model of balances; a notifier sends one message per event. The process
// crashes right after a command commits, restarts on the same store, and
// shows that the read model is intact, that the event committed before the
// crash was delivered after the restart, and that no message went twice.
//
// The store is a FileStore in a temporary directory: the crash closes the
// bus and lets go of the store, and the restart opens the directory again
// with a new bus, as a new process would. The read model and the sent
// messages stand for a database that survives the process too.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/seed-a6f1faae/eventbus"
)

// AccountEvent is an event of an account.
type AccountEvent interface{ accountEvent() }

// Opened opens an account.
type Opened struct{ Owner string }

// Deposited puts money in.
type Deposited struct{ Amount int }

// Withdrawn takes money out.
type Withdrawn struct{ Amount int }

func (Opened) EventType() string    { return "account.opened" }
func (Deposited) EventType() string { return "account.deposited" }
func (Withdrawn) EventType() string { return "account.withdrawn" }

func (Opened) accountEvent()    {}
func (Deposited) accountEvent() {}
func (Withdrawn) accountEvent() {}

// Account is the state of an account, folded from its events.
type Account struct {
	Owner   string
	Balance int
}

func evolve(a Account, e AccountEvent) Account {
	switch e := e.(type) {
	case Opened:
		a.Owner = e.Owner
	case Deposited:
		a.Balance += e.Amount
	case Withdrawn:
		a.Balance -= e.Amount
	}
	return a
}

// Commands decide events from the state.
func open(owner string) func(Account) ([]AccountEvent, error) {
	return func(a Account) ([]AccountEvent, error) {
		if a.Owner != "" {
			return nil, errors.New("account exists")
		}
		return []AccountEvent{Opened{Owner: owner}}, nil
	}
}

func deposit(amount int) func(Account) ([]AccountEvent, error) {
	return func(a Account) ([]AccountEvent, error) {
		if a.Owner == "" {
			return nil, errors.New("no such account")
		}
		return []AccountEvent{Deposited{Amount: amount}}, nil
	}
}

func withdraw(amount int) func(Account) ([]AccountEvent, error) {
	return func(a Account) ([]AccountEvent, error) {
		if a.Balance < amount {
			return nil, fmt.Errorf("cannot withdraw %d from a balance of %d", amount, a.Balance)
		}
		return []AccountEvent{Withdrawn{Amount: amount}}, nil
	}
}

// Balances is the read model: each account's owner and balance, with the
// store position of the last event applied, so that an event delivered
// again after a restart is not applied twice.
type Balances struct {
	mu       sync.Mutex
	rows     map[string]Account
	position map[string]uint64
}

// apply applies a batch of events in one step, as a database would in one
// transaction.
func (b *Balances) apply(events []eventbus.Event[AccountEvent]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rows == nil {
		b.rows, b.position = make(map[string]Account), make(map[string]uint64)
	}
	for _, e := range events {
		stream := e.Key // a durable subscription's key is the stream
		if pos, ok := b.position[stream]; ok && e.Position <= pos {
			continue // applied before the restart
		}
		b.rows[stream] = evolve(b.rows[stream], e.Payload)
		b.position[stream] = e.Position
	}
}

func (b *Balances) reset(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rows, b.position = nil, nil
	return nil
}

func (b *Balances) snapshot() map[string]Account {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.rows)
}

// Outbox records the messages the notifier sent, per event.
type Outbox struct {
	mu   sync.Mutex
	sent map[eventbus.ID]int
}

func (o *Outbox) send(id eventbus.ID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent == nil {
		o.sent = make(map[eventbus.ID]int)
	}
	o.sent[id]++
}

// Service is one run of the bank's process.
type Service struct {
	bus        *eventbus.Bus
	accounts   *eventbus.Aggregate[Account, AccountEvent]
	projection *eventbus.Durable
	notifier   *eventbus.Durable
}

func start(ctx context.Context, store eventbus.Store, reg *eventbus.Registry, db *Balances, outbox *Outbox) (*Service, error) {
	bus, err := eventbus.New(nil)
	if err != nil {
		return nil, err
	}
	accounts, err := eventbus.NewAggregate(store, reg, evolve, &eventbus.AggregateOptions{SnapshotEvery: 3, CacheSize: 100})
	if err != nil {
		return nil, err
	}
	accountsOnly := eventbus.Filter{StreamPrefix: "account-"}
	// The projection takes its events in batches, each applied in one step.
	projection, err := eventbus.SubscribeDurableBatch(ctx, bus, store, reg, "balances",
		func(ctx context.Context, events []eventbus.Event[AccountEvent]) error {
			db.apply(events)
			return nil
		}, &eventbus.DurableOptions{Filter: accountsOnly, CheckpointEvery: 4})
	if err != nil {
		return nil, err
	}
	// The notifier has effects outside the process: the idempotency
	// middleware, recording in the store what was sent, skips the events
	// sent before the restart, though events after the checkpoint come
	// again; but for one whose handler returned as the process died,
	// before its record was saved, which is sent again (see
	// eventbus.Durable). The crash below, a Close, waits for handlers.
	notifier, err := eventbus.SubscribeDurable(ctx, bus, store, reg, "notifier",
		func(ctx context.Context, e eventbus.Event[AccountEvent]) error {
			outbox.send(e.ID)
			return nil
		}, &eventbus.DurableOptions{Filter: accountsOnly, CheckpointEvery: 4, Subscription: eventbus.SubscriptionOptions{
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(store)})},
		}})
	if err != nil {
		return nil, err
	}
	return &Service{bus: bus, accounts: accounts, projection: projection, notifier: notifier}, nil
}

// do runs a command and prints its outcome.
func (s *Service) do(ctx context.Context, account, what string, cmd func(Account) ([]AccountEvent, error)) eventbus.AppendResult {
	res, err := s.accounts.Execute(ctx, account, cmd)
	if err != nil {
		fmt.Printf("  %s %s: refused: %v\n", account, what, err)
	} else {
		fmt.Printf("  %s %s: committed as revision %d\n", account, what, res.Revision)
	}
	return res
}

func printBalances(title string, rows map[string]Account) {
	fmt.Println(title)
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		fmt.Printf("  %s (%s): %d\n", id, rows[id].Owner, rows[id].Balance)
	}
}

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bank-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := eventbus.OpenFileStore(dir, nil)
	if err != nil {
		return err
	}
	defer func() { store.Close() }() // the store open at the end; Close is idempotent
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		return err
	}
	if err := errors.Join(
		eventbus.Register[Opened](reg, nil),
		eventbus.Register[Deposited](reg, nil),
		eventbus.Register[Withdrawn](reg, nil),
		eventbus.Register[Account](reg, &eventbus.TypeOptions{Name: "account.state"}),
	); err != nil {
		return err
	}
	var db Balances
	var outbox Outbox

	fmt.Println("first run:")
	svc, err := start(ctx, store, reg, &db, &outbox)
	if err != nil {
		return err
	}
	svc.do(ctx, "account-ada", "open", open("Ada"))
	svc.do(ctx, "account-bob", "open", open("Bob"))
	svc.do(ctx, "account-ada", "deposit 100", deposit(100))
	svc.do(ctx, "account-bob", "deposit 40", deposit(40))
	svc.do(ctx, "account-bob", "withdraw 50", withdraw(50))
	svc.do(ctx, "account-ada", "withdraw 30", withdraw(30))
	var wg sync.WaitGroup // two tellers at once: an append that conflicts is retried
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = svc.accounts.Execute(ctx, "account-bob", deposit(5)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("  account-bob two concurrent deposits of 5: both committed")
	res := svc.do(ctx, "account-ada", "deposit 7", deposit(7))
	if err := svc.projection.WaitFor(ctx, res.Position); err != nil {
		return err
	}
	printBalances("read model, read after the last write:", db.snapshot())

	late := svc.do(ctx, "account-bob", "deposit 1000", deposit(1000))
	fmt.Println("crash right after that commit, before waiting for any delivery")
	_ = svc.bus.Close() // may report events it could not deliver; they are in the store
	if err := store.Close(); err != nil {
		return err
	}

	fmt.Println("second run, on the store opened again:")
	reopened, err := eventbus.OpenFileStore(dir, nil)
	if err != nil {
		return err
	}
	store = reopened
	svc, err = start(ctx, store, reg, &db, &outbox)
	if err != nil {
		return err
	}
	if err := errors.Join(svc.projection.WaitFor(ctx, late.Position), svc.notifier.WaitFor(ctx, late.Position)); err != nil {
		return err
	}
	late = svc.do(ctx, "account-ada", "withdraw 7", withdraw(7))
	if err := errors.Join(svc.projection.WaitFor(ctx, late.Position), svc.notifier.WaitFor(ctx, late.Position)); err != nil {
		return err
	}
	live := db.snapshot()
	printBalances("read model after the restart:", live)

	failed := false
	for id, row := range live {
		v, err := svc.accounts.Load(ctx, id)
		if err != nil {
			return err
		}
		if v.State != row {
			fmt.Printf("  MISMATCH: %s is %+v in the read model, %+v in its stream\n", id, row, v.State)
			failed = true
		}
	}
	fmt.Println("every balance matches its account's events:", !failed)

	if err := svc.projection.Rebuild(ctx, db.reset); err != nil {
		return err
	}
	if err := svc.projection.WaitFor(ctx, late.Position); err != nil {
		return err
	}
	rebuilt := db.snapshot()
	fmt.Println("rebuilt from the first event, the read model is the same:", maps.Equal(live, rebuilt))
	failed = failed || !maps.Equal(live, rebuilt)

	events := 0
	for _, err := range store.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "account-"}}) {
		if err != nil {
			return err
		}
		events++
	}
	outbox.mu.Lock()
	once := len(outbox.sent) == events
	for _, n := range outbox.sent {
		once = once && n == 1
	}
	outbox.mu.Unlock()
	fmt.Printf("notifications: %d events, each sent exactly once: %v\n", events, once)
	failed = failed || !once

	hits, misses := svc.accounts.CacheStats() // Ada's state was cached by her withdrawal
	fmt.Printf("aggregate cache of the second run: %d hits, %d misses\n", hits, misses)
	if err := svc.bus.Shutdown(ctx); err != nil {
		return err
	}
	if failed {
		return errors.New("the read model or the notifications are wrong")
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}
