package eventbustest_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// UserCreated is published when a user signs up.
type UserCreated struct {
	UserID, Name, Email string
}

// AggregateID makes the user's ID the event's ordering key.
func (u UserCreated) AggregateID() string { return u.UserID }

// Users is the service under test: it signs users up and announces them.
type Users struct {
	Created *eventbus.Topic[UserCreated]
	n       atomic.Int64 // numbers this service's users u-1, u-2, ...
}

// SignUp creates a user and publishes UserCreated.
func (s *Users) SignUp(ctx context.Context, name, email string) (string, error) {
	if !strings.Contains(email, "@") {
		return "", fmt.Errorf("sign up %s: bad email %q", name, email)
	}
	id := fmt.Sprintf("u-%d", s.n.Add(1))
	return id, s.Created.Publish(ctx, UserCreated{UserID: id, Name: name, Email: email})
}

// Mailer is a fake of the mail service that a subscriber calls.
type Mailer struct {
	mu   sync.Mutex
	sent []string
}

// Welcome handles UserCreated by "sending" a welcome mail.
func (m *Mailer) Welcome(_ context.Context, e eventbus.Event[UserCreated]) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, e.Payload.Email)
	return nil
}

// Sent returns the addresses mailed so far.
func (m *Mailer) Sent() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.sent...)
}

// exampleT stands in for the *testing.T that a test gets, so that this
// example runs as documentation: it prints failures, and drops the bus's
// log (NewBus writes it to t.Output), whose lines carry times that differ
// run by run. In a test, pass t.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func (*exampleT) Helper()                           {}
func (*exampleT) Output() io.Writer                 { return io.Discard }
func (*exampleT) Errorf(format string, args ...any) { fmt.Printf("FAIL: "+format+"\n", args...) }
func (*exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleT) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }

// end runs the cleanup functions, as a test's end does.
func (t *exampleT) end() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// This example tests a service method, SignUp, that publishes UserCreated,
// and the subscriber that mails new users: the bus is real, the mail service
// a fake, and nothing sleeps.
func Example() {
	t := new(exampleT) // in a test: the test's t
	defer t.end()

	bus := eventbustest.NewBus(t, nil)
	topic, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
	if err != nil {
		t.Fatalf("NewTopic: %v", err)
	}
	published := eventbustest.Record(t, topic)
	mailer := new(Mailer)
	if _, err := topic.Subscribe("welcome-mail", mailer.Welcome, nil); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	users := &Users{Created: topic}

	ctx := context.Background()
	if _, err := users.SignUp(ctx, "Aiko", "aiko@example.com"); err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	if _, err := users.SignUp(ctx, "Bo", "bo.example.com"); err != nil {
		fmt.Println(err)
	}
	if err := bus.Flush(ctx); err != nil { // every subscriber is done
		t.Fatalf("Flush: %v", err)
	}

	ok := published.Want(UserCreated{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"})
	fmt.Println("published as expected:", ok)
	fmt.Println("welcome mails:", mailer.Sent())
	fmt.Println("no dead letters:", eventbustest.WantDeadLetters(t, bus, eventbus.DeadLetterFilter{}))
	// Output:
	// sign up Bo: bad email "bo.example.com"
	// published as expected: true
	// welcome mails: [aiko@example.com]
	// no dead letters: true
}
