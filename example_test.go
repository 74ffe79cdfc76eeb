package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// UserCreated is the example payload: its methods give the event type name
// and the ordering key.
type UserCreated struct {
	UserID, Name, Email string
}

func (UserCreated) EventType() string     { return "user.created" }
func (u UserCreated) AggregateID() string { return u.UserID }

func Example() {
	ctx := context.Background()
	bus, err := eventbus.New(nil)
	if err != nil {
		panic(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	var lines []string
	for _, name := range []string{"accounts", "mailer"} {
		_, err := users.Subscribe(name, func(ctx context.Context, e eventbus.Event[UserCreated]) error {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, fmt.Sprintf("%s: %s %s (key %s)", name, e.Type, e.Payload.Name, e.Key))
			return nil
		}, nil)
		if err != nil {
			panic(err)
		}
	}
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"}); err != nil {
		panic(err)
	}
	if err := bus.Shutdown(ctx); err != nil { // drains the queues first
		panic(err)
	}
	sort.Strings(lines) // the two subscriptions run in parallel
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// accounts: user.created Aiko (key u-1)
	// mailer: user.created Aiko (key u-1)
}

// In Sync mode, handlers run before Publish returns, and their errors come
// back to the publisher.
func Example_sync() {
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if e.Payload.Email == "" {
			return errors.New("no address")
		}
		fmt.Println("mail sent to", e.Payload.Email)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(users.Publish(context.Background(), UserCreated{UserID: "u-1", Email: "aiko@example.com"}))
	err = users.Publish(context.Background(), UserCreated{UserID: "u-2"})
	fmt.Println(err)
	var failed *eventbus.HandlerError
	if errors.As(err, &failed) {
		fmt.Printf("handled by %s, which failed: %v\n", failed.Subscription, failed.Err)
	}
	// Output:
	// mail sent to aiko@example.com
	// <nil>
	// subscription "mailer" of topic "users": no address
	// handled by mailer, which failed: no address
}

// Events with the same key are handled one at a time, in publish order, by
// the same worker.
func Example_ordering() {
	bus, err := eventbus.New(&eventbus.Options{Workers: 4})
	if err != nil {
		log.Fatal(err)
	}
	deposits, err := eventbus.NewTopic(bus, "deposits", &eventbus.TopicOptions[int]{
		EventType: "deposit",
		Key:       func(n int) string { return fmt.Sprint("account-", n%2) },
	})
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	perKey := map[string][]int{}
	_, err = deposits.Subscribe("ledger", func(ctx context.Context, e eventbus.Event[int]) error {
		mu.Lock()
		defer mu.Unlock()
		perKey[e.Key] = append(perKey[e.Key], e.Payload)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for n := range 8 {
		if err := deposits.Publish(ctx, n); err != nil {
			log.Fatal(err)
		}
	}
	if err := bus.Flush(ctx); err != nil { // everything published so far is handled
		log.Fatal(err)
	}
	fmt.Println(perKey["account-0"], perKey["account-1"])
	if err := bus.Close(); err != nil {
		log.Fatal(err)
	}
	// Output: [0 2 4 6] [1 3 5 7]
}

// Middleware wraps every attempt; the bus's runs outside the subscription's,
// and the first given is the outermost.
func ExampleMiddleware() {
	named := func(name string) eventbus.Middleware {
		return func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				fmt.Println("enter", name, "attempt", env.Attempt)
				defer fmt.Println("leave", name)
				return next(ctx, env)
			}
		}
	}
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{named("bus")}})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		fmt.Println("handler", e.Payload.Name)
		return nil
	}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{named("subscription")}})
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(context.Background(), UserCreated{UserID: "u-1", Name: "Aiko"}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// enter bus attempt 1
	// enter subscription attempt 1
	// handler Aiko
	// leave subscription
	// leave bus
}

// A middleware sees every payload type; it looks at the payload through
// Payload, during the call.
func ExampleEnvelope_Payload() {
	audit := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, env *eventbus.Envelope) error {
			if u, ok := env.Payload().(UserCreated); ok {
				fmt.Printf("%s for %s: user %s\n", env.Type, env.Subscription, u.UserID)
			}
			return next(ctx, env)
		}
	}
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{audit}})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("crm", func(context.Context, eventbus.Event[UserCreated]) error { return nil }, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(context.Background(), UserCreated{UserID: "u-7"}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// user.created for crm: user u-7
}

// A failing event is retried by its subscription's policy, then handed to
// the dead-letter queue, from where it can be redriven once the cause is
// fixed.
func ExampleDeadLetterQueue_Redrive() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond}})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	mailServerUp := false
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if !mailServerUp {
			return errors.New("mail server down")
		}
		fmt.Println("mail sent to", e.Payload.Email)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("publish:", users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}))
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{Subscription: "mailer"}) {
		fmt.Printf("dead letter: %s after %d attempts: %v\n", dl.Type, dl.Attempt, dl.Err)
	}
	mailServerUp = true
	n, err := bus.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{Subscription: "mailer"})
	fmt.Println("redriven:", n, err, "left:", bus.DeadLetters().Len())
	// Output:
	// publish: subscription "mailer" of topic "users": mail server down
	// dead letter: user.created after 2 attempts: mail server down
	// mail sent to aiko@example.com
	// redriven: 1 <nil> left: 0
}

// Bus.Metrics counts what every subscription did.
func ExampleBus_Metrics() {
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Metrics: true})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if e.Payload.Email == "" {
			return eventbus.Permanent(errors.New("no address"))
		}
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(context.Background(), UserCreated{UserID: "u-1", Email: "a@example.com"}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("publish:", users.Publish(context.Background(), UserCreated{UserID: "u-2"}))
	for _, s := range bus.Metrics().Subscriptions {
		fmt.Printf("%s/%s: handled %d, failed %d, dead-lettered %d, timed %d\n",
			s.Topic, s.Subscription, s.Handled, s.Failed, s.DeadLettered, s.HandleTime.Count)
	}
	// Output:
	// publish: subscription "mailer" of topic "users": no address
	// users/mailer: handled 1, failed 1, dead-lettered 1, timed 2
}

// Idempotency skips an event whose key was handled before: here a business
// key, so that an order placed twice (a client's retry, say) is handled
// once.
func ExampleIdempotency() {
	type OrderPlaced struct{ OrderNo, Item string }
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Metrics: true})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	orders, err := eventbus.NewTopic[OrderPlaced](bus, "orders", nil)
	if err != nil {
		log.Fatal(err)
	}
	byOrderNo := eventbus.Idempotency(&eventbus.IdempotencyOptions{
		Key: func(env *eventbus.Envelope) string { return env.Payload().(OrderPlaced).OrderNo },
	})
	_, err = orders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[OrderPlaced]) error {
		fmt.Println("ship", e.Payload.Item, "for order", e.Payload.OrderNo)
		return nil
	}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{byOrderNo}})
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range []OrderPlaced{{"o-1", "book"}, {"o-1", "book"}, {"o-2", "pen"}} {
		if err := orders.Publish(context.Background(), o); err != nil {
			log.Fatal(err)
		}
	}
	m := bus.Metrics().Subscriptions[0]
	fmt.Printf("handled %d, duplicates %d\n", m.Handled, m.Duplicates)
	// Output:
	// ship book for order o-1
	// ship pen for order o-2
	// handled 2, duplicates 1
}

// A batch handler gets whatever is queued for its worker, up to BatchSize
// events at once, for bulk writes; one worker keeps publish order.
func ExampleTopic_SubscribeBatch() {
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	var rows []string // a table, written by one worker only
	_, err = users.SubscribeBatch("users-table", func(ctx context.Context, events []eventbus.Event[UserCreated]) error {
		for _, e := range events { // one INSERT of len(events) rows
			rows = append(rows, e.Payload.UserID+" "+e.Payload.Name)
		}
		return nil
	}, &eventbus.SubscriptionOptions{Workers: 1, BatchSize: 100})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i, name := range []string{"Aiko", "Bruno", "Chen"} {
		if err := users.Publish(ctx, UserCreated{UserID: fmt.Sprint("u-", i+1), Name: name}); err != nil {
			log.Fatal(err)
		}
	}
	if err := bus.Shutdown(ctx); err != nil { // drains the queue first
		log.Fatal(err)
	}
	fmt.Println(rows)
	// Output: [u-1 Aiko u-2 Bruno u-3 Chen]
}

// OrderPlaced is the payload of the examples' orders topic.
type OrderPlaced struct{ OrderID, Item string }

// PaymentRequested is published by a handler of OrderPlaced.
type PaymentRequested struct{ OrderID string }

// Publish options set an event's key and metadata; a handler that publishes
// with the context it was given links the new event to the one it handles,
// by correlation and causation IDs.
func ExampleTopic_Publish() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	orders, err := eventbus.NewTopic[OrderPlaced](bus, "orders", &eventbus.TopicOptions[OrderPlaced]{EventType: "order.placed"})
	if err != nil {
		log.Fatal(err)
	}
	payments, err := eventbus.NewTopic[PaymentRequested](bus, "payments", &eventbus.TopicOptions[PaymentRequested]{EventType: "payment.requested"})
	if err != nil {
		log.Fatal(err)
	}
	var placed eventbus.Event[OrderPlaced]
	_, err = orders.Subscribe("billing", func(ctx context.Context, e eventbus.Event[OrderPlaced]) error {
		placed = e
		fmt.Printf("%s %s: key %s, tenant %s\n", e.Type, e.Payload.OrderID, e.Key, e.Metadata["tenant"])
		return payments.Publish(ctx, PaymentRequested{OrderID: e.Payload.OrderID}) // ctx links the events
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = payments.Subscribe("psp", func(ctx context.Context, e eventbus.Event[PaymentRequested]) error {
		fmt.Printf("%s %s: caused by the order: %t, same correlation: %t\n",
			e.Type, e.Payload.OrderID, e.CausationID == placed.ID, e.CorrelationID == placed.CorrelationID)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	err = orders.Publish(ctx, OrderPlaced{OrderID: "o-1", Item: "book"},
		eventbus.WithKey("customer-7"), // the customer's orders are handled in order
		eventbus.WithMetadata(eventbus.Metadata{"tenant": "acme"}),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the order starts its own chain:", placed.CorrelationID == placed.ID && placed.CausationID.IsZero())
	// Output:
	// order.placed o-1: key customer-7, tenant acme
	// payment.requested o-1: caused by the order: true, same correlation: true
	// the order starts its own chain: true
}

// PublishBatch publishes a slice of payloads, as fast as it can: events of
// one key keep their order. It returns how many it published, so that a
// caller whose context ended can publish the rest later.
func ExampleTopic_PublishBatch() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Workers: 4})
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	names := map[string][]string{} // by user ID, in the order handled
	_, err = users.Subscribe("directory", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		mu.Lock()
		defer mu.Unlock()
		names[e.Key] = append(names[e.Key], e.Payload.Name)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	imported := []UserCreated{
		{UserID: "u-1", Name: "Ada"},
		{UserID: "u-2", Name: "Grace"},
		{UserID: "u-1", Name: "Ada Lovelace"},
		{UserID: "u-2", Name: "Grace Hopper"},
	}
	n, err := users.PublishBatch(ctx, imported)
	if err != nil {
		log.Fatalf("published %d of %d: %v", n, len(imported), err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", n)
	fmt.Println("u-1:", names["u-1"])
	fmt.Println("u-2:", names["u-2"])
	// Output:
	// published: 4
	// u-1: [Ada Ada Lovelace]
	// u-2: [Grace Grace Hopper]
}

// TryPublish never waits: with the queue full it queues the event nowhere
// and returns false, so that the caller can shed load or answer "try later".
func ExampleTopic_TryPublish() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Workers: 1, QueueSize: 1})
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	busy, mailServerBack := make(chan struct{}), make(chan struct{})
	var mailed []string // written by the one worker, read after Shutdown
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if e.Payload.UserID == "u-1" {
			close(busy)
			<-mailServerBack // a slow mail server
		}
		mailed = append(mailed, e.Payload.UserID)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{"u-1", "u-2", "u-3"} {
		ok, err := users.TryPublish(ctx, UserCreated{UserID: id})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(id, "queued:", ok)
		if id == "u-1" {
			<-busy // the worker has taken u-1 from the queue
		}
	}
	close(mailServerBack)
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("mailed:", mailed)
	// Output:
	// u-1 queued: true
	// u-2 queued: true
	// u-3 queued: false
	// mailed: [u-1 u-2]
}

// Shutdown drains the queues: every event published before it is handled.
// Afterwards the bus refuses events with ErrClosed.
func ExampleBus_Shutdown() {
	ctx := context.Background()
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	var mailed []string
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		mu.Lock()
		defer mu.Unlock()
		mailed = append(mailed, e.Payload.UserID)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{"u-1", "u-2", "u-3"} {
		if err := users.Publish(ctx, UserCreated{UserID: id}); err != nil {
			log.Fatal(err)
		}
	}
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	slices.Sort(mailed) // keys u-1, u-2 and u-3 run in parallel
	fmt.Println("mailed:", mailed)
	err = users.Publish(ctx, UserCreated{UserID: "u-4"})
	fmt.Println("after shutdown:", err, errors.Is(err, eventbus.ErrClosed))
	// Output:
	// mailed: [u-1 u-2 u-3]
	// after shutdown: eventbus: closed true
}

// When Shutdown's context ends before the queues are drained, running
// handlers see their context cancelled, and the events not handled go to
// the dead-letter queue, counted in an *UndeliveredError.
func ExampleBus_Shutdown_deadline() {
	bus, err := eventbus.New(&eventbus.Options{Workers: 1})
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	stuck := make(chan struct{})
	_, err = users.Subscribe("crm", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		close(stuck)
		<-ctx.Done() // a call to a CRM that does not answer, until the bus gives up
		return ctx.Err()
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{"u-1", "u-2", "u-3"} {
		if err := users.Publish(context.Background(), UserCreated{UserID: id}); err != nil {
			log.Fatal(err)
		}
	}
	<-stuck

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err = bus.Shutdown(ctx)
	var undelivered *eventbus.UndeliveredError
	if errors.As(err, &undelivered) {
		fmt.Println("undelivered:", undelivered.Count, errors.Is(err, context.DeadlineExceeded))
	}
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		fmt.Printf("dead letter: %s after %d attempt(s): %v\n", dl.Payload().(UserCreated).UserID, dl.Attempt, dl.Err)
	}
	// Output:
	// undelivered: 2 true
	// dead letter: u-1 after 1 attempt(s): context canceled
	// dead letter: u-2 after 0 attempt(s): context deadline exceeded
	// dead letter: u-3 after 0 attempt(s): context deadline exceeded
}

// Unsubscribe removes one subscription, once it has handled the events
// already queued for it; the topic's other subscriptions go on.
func ExampleSubscription_Unsubscribe() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	subscribe := func(name string) *eventbus.Subscription {
		sub, err := users.Subscribe(name, func(ctx context.Context, e eventbus.Event[UserCreated]) error {
			fmt.Println(name, "got", e.Payload.UserID)
			return nil
		}, nil)
		if err != nil {
			log.Fatal(err)
		}
		return sub
	}
	subscribe("accounts")
	newsletter := subscribe("newsletter")

	if err := users.Publish(ctx, UserCreated{UserID: "u-1"}); err != nil {
		log.Fatal(err)
	}
	if err := newsletter.Unsubscribe(ctx); err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(ctx, UserCreated{UserID: "u-2"}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("again:", newsletter.Unsubscribe(ctx))
	// Output:
	// accounts got u-1
	// newsletter got u-1
	// accounts got u-2
	// again: eventbus: closed
}

// A retry policy tries a failing event again after a growing wait; an error
// wrapped with Permanent is not worth retrying and goes straight to the
// dead-letter queue.
func ExampleRetryPolicy() {
	policy := eventbus.RetryPolicy{MaxAttempts: 4, InitialDelay: time.Millisecond}
	fmt.Println("waits:", policy.Delay(1), policy.Delay(2), policy.Delay(3))

	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Retry: policy})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	attempts := 0
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		attempts++
		if !strings.Contains(e.Payload.Email, "@") {
			return eventbus.Permanent(fmt.Errorf("bad address %q", e.Payload.Email))
		}
		if attempts < 3 {
			return errors.New("smtp: 421 try again later") // the mail server is busy
		}
		fmt.Printf("mailed %s at attempt %d\n", e.Payload.Email, attempts)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}); err != nil {
		log.Fatal(err)
	}
	attempts = 0
	fmt.Println(users.Publish(ctx, UserCreated{UserID: "u-2", Email: "bruno.example.com"}))
	fmt.Println("attempts:", attempts, "dead letters:", bus.DeadLetters().Len())
	// Output:
	// waits: 1ms 2ms 4ms
	// mailed aiko@example.com at attempt 3
	// subscription "mailer" of topic "users": bad address "bruno.example.com"
	// attempts: 1 dead letters: 1
}

// Timeout gives each attempt a deadline, so that a call that hangs fails
// the attempt instead of holding up the events of its key for good.
func ExampleTimeout() {
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("crm", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		<-ctx.Done() // a CRM that does not answer; a real client honours ctx the same way
		return ctx.Err()
	}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{eventbus.Timeout(10 * time.Millisecond)}})
	if err != nil {
		log.Fatal(err)
	}
	err = users.Publish(context.Background(), UserCreated{UserID: "u-1"})
	fmt.Println(err)
	fmt.Println("timed out:", errors.Is(err, context.DeadlineExceeded))
	// Output:
	// subscription "crm" of topic "users": context deadline exceeded
	// timed out: true
}

// Logging logs each failed attempt at level Warn and each success at Debug.
// Here the time and the event's IDs are left out of the log, so that the
// output is the same on every run.
func ExampleLogging() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "id" || a.Key == "correlation_id" {
				return slog.Attr{}
			}
			return a
		},
	}))
	bus, err := eventbus.New(&eventbus.Options{
		Mode:       eventbus.Sync,
		Middleware: []eventbus.Middleware{eventbus.Logging(logger)},
		Retry:      eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	busy := true
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if busy {
			busy = false
			return errors.New("smtp: 421 try again later")
		}
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(context.Background(), UserCreated{UserID: "u-1"}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// level=WARN msg="eventbus: attempt failed" type=user.created topic=users subscription=mailer key=u-1 attempt=1 error="smtp: 421 try again later"
	// level=DEBUG msg="eventbus: handled" type=user.created topic=users subscription=mailer key=u-1 attempt=2
}

// WithTraceparent puts the trace context of an incoming request on the
// events published with the context; handlers carry it on, so that a
// tracer follows the request through the bus.
func ExampleWithTraceparent() {
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	mails, err := eventbus.NewTopic[string](bus, "mail-sent", &eventbus.TopicOptions[string]{EventType: "mail.sent"})
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		fmt.Println("mailer:", eventbus.Traceparent(ctx))
		return mails.Publish(ctx, e.Payload.Email)
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = mails.Subscribe("audit", func(ctx context.Context, e eventbus.Event[string]) error {
		fmt.Println("audit:", e.Metadata[eventbus.TraceparentKey])
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}

	// The header of an incoming HTTP request, r.Header.Get("traceparent").
	header := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, err := eventbus.WithTraceparent(context.Background(), header)
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}); err != nil {
		log.Fatal(err)
	}
	_, err = eventbus.WithTraceparent(context.Background(), "not a trace")
	fmt.Println("malformed:", errors.Is(err, eventbus.ErrInvalid))
	// Output:
	// mailer: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// audit: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// malformed: true
}

// A topic's event type name comes from the payload's EventType method, or
// from TopicOptions, or else from the Go type's name. Names are checked:
// errors are matched with errors.Is.
func ExampleNewTopic() {
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	orders, err := eventbus.NewTopic(bus, "orders", &eventbus.TopicOptions[OrderPlaced]{
		EventType:     "order.placed",
		SchemaVersion: 2,
		Key:           func(o OrderPlaced) string { return o.OrderID },
	})
	if err != nil {
		log.Fatal(err)
	}
	payments, err := eventbus.NewTopic[PaymentRequested](bus, "payments", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(users.Name(), users.EventType())
	fmt.Println(orders.Name(), orders.EventType())
	fmt.Println(payments.Name(), payments.EventType())

	_, err = eventbus.NewTopic[string](bus, "users", nil)
	fmt.Println("taken:", errors.Is(err, eventbus.ErrDuplicate))
	_, err = eventbus.NewTopic[string](bus, "user events", nil)
	fmt.Println("bad name:", errors.Is(err, eventbus.ErrInvalid))
	// Output:
	// users user.created
	// orders order.placed
	// payments PaymentRequested
	// taken: true
	// bad name: true
}

// A dead-letter sink hears of every event given up on, as it happens: here
// it raises an alert; a real one might also keep the dead letter in a
// database, since the bus's queue lives in memory.
func ExampleDeadLetterFunc() {
	alert := eventbus.DeadLetterFunc(func(ctx context.Context, dl eventbus.DeadLetter) error {
		fmt.Printf("ALERT %s/%s gave up on %s %s after %d attempt(s): %v\n",
			dl.Topic, dl.Subscription, dl.Type, dl.Key, dl.Attempt, dl.Err)
		return nil
	})
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, DeadLetterSink: alert})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = users.Subscribe("billing", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		return errors.New("no payment method")
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("publish:", users.Publish(context.Background(), UserCreated{UserID: "u-1"}))
	// Output:
	// ALERT users/billing gave up on user.created u-1 after 1 attempt(s): no payment method
	// publish: subscription "billing" of topic "users": no payment method
}

// A subscription receives the events published after it is made. Its
// options override the bus's defaults for it alone: here a retry policy for
// a flaky mail server, while the bus's default makes one attempt.
func ExampleTopic_Subscribe() {
	ctx := context.Background()
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := users.Publish(ctx, UserCreated{UserID: "u-0", Email: "early@example.com"}); err != nil {
		log.Fatal(err)
	}

	attempts := 0
	mailer, err := users.Subscribe("welcome-mail", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if attempts++; attempts < 3 {
			return errors.New("smtp: 421 try again later")
		}
		fmt.Printf("%s: mailed %s at attempt %d\n", e.Topic, e.Payload.Email, attempts)
		return nil
	}, &eventbus.SubscriptionOptions{
		Retry: &eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Millisecond},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("subscribed:", mailer.Topic(), mailer.Name())
	if err := users.Publish(ctx, UserCreated{UserID: "u-1", Email: "aiko@example.com"}); err != nil {
		log.Fatal(err)
	}

	_, err = users.Subscribe("welcome-mail", func(context.Context, eventbus.Event[UserCreated]) error { return nil }, nil)
	fmt.Println("name taken:", errors.Is(err, eventbus.ErrDuplicate))
	// Output:
	// subscribed: users welcome-mail
	// users: mailed aiko@example.com at attempt 3
	// name taken: true
}

// Flush waits until every event published before it is handled: in a test,
// or before reading what handlers wrote, it replaces a sleep. Events that
// handlers publish meanwhile are not waited for: a second Flush covers
// them.
func ExampleBus_Flush() {
	ctx := context.Background()
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	mails, err := eventbus.NewTopic[string](bus, "mail-sent", &eventbus.TopicOptions[string]{EventType: "mail.sent"})
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	var welcomed, audited []string
	_, err = users.Subscribe("welcome-mail", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		mu.Lock()
		welcomed = append(welcomed, e.Payload.UserID)
		mu.Unlock()
		return mails.Publish(ctx, e.Payload.Email)
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = mails.Subscribe("audit", func(ctx context.Context, e eventbus.Event[string]) error {
		mu.Lock()
		defer mu.Unlock()
		audited = append(audited, e.Payload)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for i, name := range []string{"aiko", "bruno", "chen"} {
		if err := users.Publish(ctx, UserCreated{UserID: fmt.Sprint("u-", i+1), Email: name + "@example.com"}); err != nil {
			log.Fatal(err)
		}
	}

	if err := bus.Flush(ctx); err != nil { // the three users are handled
		log.Fatal(err)
	}
	mu.Lock()
	slices.Sort(welcomed) // users are handled in parallel
	fmt.Println("welcomed:", welcomed)
	mu.Unlock()
	if err := bus.Flush(ctx); err != nil { // and now the mails their handlers published
		log.Fatal(err)
	}
	mu.Lock()
	slices.Sort(audited)
	fmt.Println("audited:", audited)
	mu.Unlock()
	// Output:
	// welcomed: [u-1 u-2 u-3]
	// audited: [aiko@example.com bruno@example.com chen@example.com]
}

// A batch handler that fails for some events of its batch names them in a
// *BatchError: only those are retried or dead-lettered, while the others
// count as handled.
func ExampleBatchError() {
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		log.Fatal(err)
	}
	var rows []string // a table, written by one worker only
	_, err = users.SubscribeBatch("users-table", func(ctx context.Context, events []eventbus.Event[UserCreated]) error {
		failed := map[int]error{}
		for i, e := range events {
			if !strings.Contains(e.Payload.Email, "@") {
				failed[i] = fmt.Errorf("row %s: bad email %q", e.Payload.UserID, e.Payload.Email)
				continue
			}
			rows = append(rows, e.Payload.UserID)
		}
		if len(failed) > 0 {
			return &eventbus.BatchError{Failed: failed}
		}
		return nil
	}, &eventbus.SubscriptionOptions{Workers: 1})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i, email := range []string{"aiko@example.com", "bruno.example.com", "chen@example.com"} {
		if err := users.Publish(ctx, UserCreated{UserID: fmt.Sprint("u-", i+1), Email: email}); err != nil {
			log.Fatal(err)
		}
	}
	if err := bus.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("inserted:", rows)
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		fmt.Println("dead letter:", dl.Err)
	}
	m := bus.Metrics().Subscriptions[0]
	fmt.Printf("handled %d, dead-lettered %d\n", m.Handled, m.DeadLettered)
	// Output:
	// inserted: [u-1 u-3]
	// dead letter: row u-2: bad email "bruno.example.com"
	// handled 2, dead-lettered 1
}
