package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// Accounts is a service that signs users up by publishing UserCreated to
// a StoreTopic: committed to the store first, then read by durable
// subscriptions.
type Accounts struct {
	Created *eventbus.StoreTopic[UserCreated]
	n       atomic.Int64 // numbers this service's users u-1, u-2, ...
}

// SignUp creates a user and publishes UserCreated, returning the user's
// ID but not the event's store position, as a service would.
func (s *Accounts) SignUp(ctx context.Context, name, email string) (string, error) {
	if !strings.Contains(email, "@") {
		return "", fmt.Errorf("sign up %s: bad email %q", name, email)
	}
	id := fmt.Sprintf("u-%d", s.n.Add(1))
	_, err := s.Created.Publish(ctx, UserCreated{UserID: id, Name: name, Email: email})
	return id, err
}

// Directory is a read model of the users, kept by a durable subscription.
type Directory struct {
	mu     sync.Mutex
	emails map[string]string // user ID to email
}

// Apply handles UserCreated by adding the user to the directory.
func (d *Directory) Apply(_ context.Context, e eventbus.Event[UserCreated]) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.emails == nil {
		d.emails = make(map[string]string)
	}
	d.emails[e.Payload.UserID] = e.Payload.Email
	return nil
}

// Emails returns a copy of the directory.
func (d *Directory) Emails() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.emails))
	for k, v := range d.emails {
		out[k] = v
	}
	return out
}

// accountsFixture is the service wired as in production, with its store,
// a directory projection and a welcome mailer whose handler is wrapped by
// fault.
type accountsFixture struct {
	bus       *eventbus.Bus
	store     *eventbus.MemoryStore
	accounts  *Accounts
	published *eventbustest.Recorder[UserCreated]
	directory *Directory
	mailer    *Mailer
	durables  []*eventbus.Durable
}

func newAccounts(t *testing.T, fault eventbustest.Fault) *accountsFixture {
	t.Helper()
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, store.Close()) }) // before NewBus: the bus stops first
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[UserCreated](reg, nil))
	bus := eventbustest.NewBus(t, nil)
	topic, err := eventbus.NewStoreTopic[UserCreated](bus, store, reg, "users")
	require.NoError(t, err)
	f := &accountsFixture{
		bus: bus, store: store, accounts: &Accounts{Created: topic},
		published: eventbustest.RecordStoreTopic(t, topic),
		directory: new(Directory), mailer: new(Mailer),
	}
	projection, err := topic.Subscribe(t.Context(), "directory", f.directory.Apply, nil)
	require.NoError(t, err)
	welcome, err := topic.Subscribe(t.Context(), "welcome-mail", eventbustest.Inject(f.mailer.Welcome, fault),
		&eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{
			Retry: &eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
		}})
	require.NoError(t, err)
	f.durables = []*eventbus.Durable{projection, welcome}
	return f
}

var errSMTP = errors.New("smtp: 421 try again later")

// TestAccountsSignUp tests the service with a mail service that fails
// twice at each mail and then takes it: the mailer's retries get every
// mail through, on the fake clock of a synctest bubble, and WaitDurable
// waits for both durable subscriptions without knowing a store position.
func TestAccountsSignUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAccounts(t, eventbustest.Fault{Attempts: 2, Err: errSMTP})
		start := time.Now()
		for _, u := range []struct{ name, email string }{{"Aiko", "aiko@example.com"}, {"Bo", "bo@example.com"}} {
			_, err := f.accounts.SignUp(t.Context(), u.name, u.email)
			require.NoError(t, err)
		}
		_, err := f.accounts.SignUp(t.Context(), "Dee", "not-an-address")
		require.Error(t, err)

		require.True(t, eventbustest.WaitDurable(t.Context(), t, f.store, f.durables...))
		require.Equal(t, 3*time.Second, time.Since(start), "the mails' two retries, 1s then 2s, of fake time")
		f.published.Want(
			UserCreated{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"},
			UserCreated{UserID: "u-2", Name: "Bo", Email: "bo@example.com"},
		)
		require.Equal(t, map[string]string{"u-1": "aiko@example.com", "u-2": "bo@example.com"}, f.directory.Emails())
		// Two users' streams, two keys: their mails retry at the same fake
		// instants, on workers of their own, in no promised order.
		require.ElementsMatch(t, []string{"aiko@example.com", "bo@example.com"}, f.mailer.Sent())
		eventbustest.WantDeadLetters(t, f.bus, eventbus.DeadLetterFilter{})
		eventbustest.WantMetrics(t, f.bus, eventbus.SubscriptionMetrics{
			Topic: "durable.users.welcome-mail", Subscription: "users.welcome-mail",
			Queued: 2, Handled: 2, Failed: 4, Retried: 4,
		})
		eventbustest.WantMetrics(t, f.bus, eventbus.SubscriptionMetrics{
			Topic: "durable.users.directory", Subscription: "users.directory",
			Queued: 2, Handled: 2,
		})
	})
}

// TestAccountsMailDown tests the service with a mail service that is down
// for one user, named in the Fault by the key that the recorder of the
// StoreTopic shows: the mail is dead-lettered after its three attempts,
// and the projection and the other mails go on.
func TestAccountsMailDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAccounts(t, eventbustest.Fault{Key: "u-2", Err: errSMTP})
		for _, u := range []struct{ name, email string }{{"Aiko", "aiko@example.com"}, {"Bo", "bo@example.com"}, {"Chen", "chen@example.com"}} {
			_, err := f.accounts.SignUp(t.Context(), u.name, u.email)
			require.NoError(t, err)
		}

		require.True(t, eventbustest.WaitDurable(t.Context(), t, f.store, f.durables...))
		require.Equal(t, "u-2", f.published.Events()[1].Key, "the key the recorder shows, which the Fault names")
		require.Len(t, f.directory.Emails(), 3)
		// Two keys, on workers of their own: in no promised order.
		require.ElementsMatch(t, []string{"aiko@example.com", "chen@example.com"}, f.mailer.Sent(),
			"Bo's mail failed; Chen's did not wait behind it")
		var dead []string
		for dl := range f.bus.DeadLetters().All(eventbus.DeadLetterFilter{Err: errSMTP}) {
			dead = append(dead, fmt.Sprintf("%s %s attempts=%d", dl.Subscription, dl.Key, dl.Attempt))
		}
		require.Equal(t, []string{"users.welcome-mail users:u-2 attempts=3"}, dead)
		eventbustest.WantMetrics(t, f.bus, eventbus.SubscriptionMetrics{
			Topic: "durable.users.welcome-mail", Subscription: "users.welcome-mail",
			Queued: 3, Handled: 2, Failed: 3, Retried: 2, DeadLettered: 1,
		})
	})
}
