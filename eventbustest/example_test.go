package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// This example checks what a service commits to a StoreTopic, right after
// the calls: the recorder's checks first wait for the events committed to
// the topic, which Bus.Flush does not wait for.
func ExampleRecordStoreTopic() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatalf("NewMemoryStore: %v", err)
	}
	t.Cleanup(func() { // before NewBus, so that the bus stops first
		if err := store.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	if err := eventbus.Register[UserCreated](reg, nil); err != nil {
		t.Fatalf("Register: %v", err)
	}
	bus := eventbustest.NewBus(t, nil)
	users, err := eventbus.NewStoreTopic[UserCreated](bus, store, reg, "users")
	if err != nil {
		t.Fatalf("NewStoreTopic: %v", err)
	}
	published := eventbustest.RecordStoreTopic(t, users)

	ctx := context.Background()
	for _, u := range []UserCreated{{UserID: "u-1", Name: "Aiko"}, {UserID: "u-2", Name: "Bo"}} {
		if _, err := users.Publish(ctx, u); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	fmt.Println("published:", published.Want(UserCreated{UserID: "u-1", Name: "Aiko"}, UserCreated{UserID: "u-2", Name: "Bo"}))
	for _, e := range published.Events() {
		fmt.Println(e.Topic, e.Key, e.Payload.Name) // the key, not the stream "users:u-1"
	}
	// Output:
	// published: true
	// users u-1 Aiko
	// users u-2 Bo
}

// This example waits for an event that a subscriber publishes, which
// Bus.Flush does not wait for.
func ExampleRecorder_Wait() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	bus := eventbustest.NewBus(t, nil)
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	mailed, err := eventbus.NewTopic[string](bus, "mail-sent", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	_, err = users.Subscribe("welcome-mail", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		return mailed.Publish(ctx, e.Payload.Email) // ctx links the two events
	}, nil)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	sent := eventbustest.Record(t, mailed)

	ctx := context.Background()
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	ok := sent.Wait(ctx, func(events []eventbus.Event[string]) bool { return len(events) == 1 })
	fmt.Println("mail sent:", ok, sent.Want("aiko@example.com"))
	// Output:
	// mail sent: true true
}

// This example checks that a subscriber's retry policy gets an event
// through a mail service that fails twice.
func ExampleInject() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	bus := eventbustest.NewBus(t, &eventbus.Options{
		Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Millisecond},
	})
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	mailer := new(Mailer)
	flaky := eventbustest.Inject(mailer.Welcome, eventbustest.Fault{Attempts: 2, Err: errors.New("smtp: 421 try again")})
	if _, err := users.Subscribe("welcome-mail", flaky, nil); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}

	ctx := context.Background()
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := bus.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	fmt.Println("welcome mails:", mailer.Sent())
	fmt.Println("counted:", eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
		Topic: "users", Subscription: "welcome-mail",
		Queued: 1, Handled: 1, Failed: 2, Retried: 2,
	}))
	// Output:
	// welcome mails: [aiko@example.com]
	// counted: true
}

// This example makes event IDs and times the same on every run, for golden
// files of events.
func ExampleSequence() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	var clock eventbustest.Clock
	bus := eventbustest.NewBus(t, &eventbus.Options{
		Mode:  eventbus.Sync,
		Clock: clock.Now,
		// NewBus's default numbers IDs the same way, but from the test's
		// Sequence, which every bus of the test shares, so that a bus
		// restarted over a store does not reuse the IDs of the first:
		// a Sequence of its own, as here, suits a bus that shares its
		// store with no other.
		NewID: eventbustest.Sequence(),
	})
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	published := eventbustest.Record(t, users)

	ctx := context.Background()
	for _, id := range []string{"u-1", "u-2"} {
		if err := users.Publish(ctx, UserCreated{UserID: id}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		clock.Advance(time.Minute)
	}
	for _, e := range published.Events() {
		fmt.Println(e.ID, e.Time.Format(time.RFC3339), e.Payload.UserID)
	}
	// Output:
	// 00000000000000000000000001 2000-01-01T00:00:00Z u-1
	// 00000000000000000000000002 2000-01-01T00:01:00Z u-2
}

// This example parks the orders that a warehouse rejects while its API is
// down, checks the dead letters, and redrives them once it is back.
func ExampleWantDeadLetters() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	bus := eventbustest.NewBus(t, nil) // no retry policy: one attempt
	orders, err := eventbus.NewTopic[Order](bus, "orders", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	errDown := errors.New("warehouse: 502 bad gateway")
	var (
		mu      sync.Mutex
		down    = true
		shipped []string
	)
	warehouse := func(_ context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		if down && e.Payload.N > 1 {
			return errDown // the warehouse rejects orders of several items while it is down
		}
		shipped = append(shipped, e.Payload.ID)
		return nil
	}
	if _, err := orders.Subscribe("warehouse", warehouse, nil); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}

	ctx := context.Background()
	for _, o := range []Order{{ID: "o-1", N: 1}, {ID: "o-2", N: 3}, {ID: "o-3", N: 1}} {
		if err := orders.Publish(ctx, o); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if err := bus.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	fmt.Println("parked:", eventbustest.WantDeadLetters(t, bus, eventbus.DeadLetterFilter{Err: errDown}, Order{ID: "o-2", N: 3}))

	mu.Lock()
	down = false
	mu.Unlock()
	n, err := bus.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{Subscription: "warehouse"})
	if err != nil {
		t.Fatalf("Redrive: %v", err)
	}
	if err := bus.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	fmt.Println("redriven:", n)
	fmt.Println("none left:", eventbustest.WantDeadLetters(t, bus, eventbus.DeadLetterFilter{}))
	mu.Lock()
	fmt.Println("shipped:", shipped)
	mu.Unlock()
	fmt.Println("counted:", eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
		Topic: "orders", Subscription: "warehouse",
		Queued: 4, Handled: 3, Failed: 1, DeadLettered: 1, // the redriven event is queued again
	}))
	// Output:
	// parked: true
	// redriven: 1
	// none left: true
	// shipped: [o-1 o-3 o-2]
	// counted: true
}

// This example checks the headers of the events a service publishes, not
// only their payloads: here the key, and the trace context of the request
// that signed the user up.
func ExampleRecorder_WantEvents() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	bus := eventbustest.NewBus(t, nil)
	topic, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	published := eventbustest.Record(t, topic)
	users := &Users{Created: topic}

	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, err := eventbus.WithTraceparent(context.Background(), traceparent)
	if err != nil {
		t.Fatalf("WithTraceparent: %v", err)
	}
	if _, err := users.SignUp(ctx, "Aiko", "aiko@example.com"); err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	if err := bus.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	ok := published.WantEvents([]eventbus.Event[UserCreated]{{
		Header: eventbus.Header{
			Type: "UserCreated", Topic: "users", Key: "u-1", SchemaVersion: 1,
			Metadata: eventbus.Metadata{eventbus.TraceparentKey: traceparent},
		},
		Payload: UserCreated{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"},
	}})
	fmt.Println("published as expected:", ok)
	// Output:
	// published as expected: true
}
