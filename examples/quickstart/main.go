// Command quickstart shows the core of eventbus: a typed topic of
// UserCreated events keyed by user (one user's events are handled in
// order), two subscriptions that each receive every event, a dead letter,
// and a graceful shutdown, all in one process.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/seed-a6f1faae/eventbus"
)

// UserCreated is published when someone signs up.
type UserCreated struct {
	UserID string
	Name   string
	Email  string
}

// EventType names the event the way the rest of the system knows it.
func (UserCreated) EventType() string { return "user.created" }

// AggregateID keys the event by user: events of one user are handled in
// the order they were published.
func (u UserCreated) AggregateID() string { return u.UserID }

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx := context.Background()
	bus, err := eventbus.New(nil)
	if err != nil {
		return err
	}
	users, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		return err
	}

	// The user module keeps its own records.
	var mu sync.Mutex
	records := map[string]string{}
	if _, err := users.Subscribe("user-records", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		mu.Lock()
		defer mu.Unlock()
		records[e.Payload.UserID] = e.Payload.Name
		return nil
	}, nil); err != nil {
		return err
	}

	// The mail module sends a welcome mail; an address it cannot use is a
	// permanent failure, so the event goes to the dead-letter queue at once.
	var sent []string
	if _, err := users.Subscribe("welcome-mail", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
		if !strings.Contains(e.Payload.Email, "@") {
			return eventbus.Permanent(fmt.Errorf("bad address %q", e.Payload.Email))
		}
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, fmt.Sprintf("welcome mail to %s <%s>", e.Payload.Name, e.Payload.Email))
		return nil
	}, nil); err != nil {
		return err
	}

	for _, u := range []UserCreated{
		{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"},
		{UserID: "u-2", Name: "Bruno", Email: "bruno@example.com"},
		{UserID: "u-3", Name: "Chen", Email: "chen-at-example.com"},
	} {
		if err := users.Publish(ctx, u); err != nil {
			return err
		}
		fmt.Printf("published %s for %s\n", users.EventType(), u.UserID)
	}

	// Wait until both subscriptions have handled everything, then stop.
	if err := bus.Flush(ctx); err != nil {
		return err
	}
	if err := bus.Shutdown(ctx); err != nil {
		return err
	}

	ids := make([]string, 0, len(records))
	for id := range records {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Printf("user record %s: %s\n", id, records[id])
	}
	sort.Strings(sent)
	for _, s := range sent {
		fmt.Println(s)
	}
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		fmt.Printf("dead letter in %s: %s for %s after %d attempt(s): %v\n",
			dl.Subscription, dl.Type, dl.Key, dl.Attempt, dl.Err)
	}
	if err := users.Publish(ctx, UserCreated{UserID: "u-4"}); !errors.Is(err, eventbus.ErrClosed) {
		return fmt.Errorf("publish after shutdown: %v", err)
	}
	fmt.Fprintln(os.Stdout, "bus shut down; publishing now returns:", eventbus.ErrClosed)
	return nil
}
