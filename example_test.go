package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sort"
	"sync"

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
	// subscription "mailer": no address
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
	bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: 1}})
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
	// publish: subscription "mailer": mail server down
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
	// publish: subscription "mailer": no address
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
