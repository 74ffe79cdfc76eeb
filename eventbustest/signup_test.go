package eventbustest_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// TestSignUp is the test a user of the library would write for the service
// of Example: what SignUp published, what the mail subscriber did, and how
// it copes with a mail service that is down for one user, all on the fake
// clock of a synctest bubble, which also checks that no goroutine is left.
func TestSignUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := eventbustest.NewBus(t, &eventbus.Options{
			Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
		})
		topic, err := eventbus.NewTopic[UserCreated](bus, "users", nil)
		require.NoError(t, err)
		published := eventbustest.Record(t, topic)
		mailer := new(Mailer)
		errSMTP := errors.New("smtp: 550 mailbox unavailable")
		welcome := eventbustest.Inject(mailer.Welcome, eventbustest.Fault{Key: "u-2", Err: errSMTP})
		_, err = topic.Subscribe("welcome-mail", welcome, nil)
		require.NoError(t, err)
		users := &Users{Created: topic}

		for _, u := range []struct{ name, email string }{
			{"Aiko", "aiko@example.com"}, {"Bo", "bo@example.com"}, {"Chen", "chen@example.com"},
		} {
			_, err := users.SignUp(t.Context(), u.name, u.email)
			require.NoError(t, err)
		}
		_, err = users.SignUp(t.Context(), "Dee", "not-an-address")
		require.Error(t, err)
		require.NoError(t, bus.Flush(t.Context()))

		published.Want(
			UserCreated{UserID: "u-1", Name: "Aiko", Email: "aiko@example.com"},
			UserCreated{UserID: "u-2", Name: "Bo", Email: "bo@example.com"},
			UserCreated{UserID: "u-3", Name: "Chen", Email: "chen@example.com"},
		)
		require.Equal(t, []string{"aiko@example.com", "chen@example.com"}, mailer.Sent(),
			"Bo's mail failed; Chen's did not wait behind it")
		eventbustest.WantDeadLetters(t, bus, eventbus.DeadLetterFilter{Subscription: "welcome-mail", Err: errSMTP},
			UserCreated{UserID: "u-2", Name: "Bo", Email: "bo@example.com"})
		eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
			Topic: "users", Subscription: "welcome-mail",
			Queued: 3, Handled: 2, Failed: 3, Retried: 2, DeadLettered: 1,
		})
	})
}
