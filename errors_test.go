package eventbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestStopWithContextCause stops a bus, and a subscription, with contexts
// given a cause of their own (context.WithTimeoutCause, WithCancelCause):
// the *UndeliveredError, and the dead letters of the events never run,
// match both the cause and the context's error, which the docs of
// Shutdown and UndeliveredError.Unwrap promise (errors.Is(err,
// context.DeadlineExceeded)). They carried the cause alone, which hid the
// context's error.
func TestStopWithContextCause(t *testing.T) {
	errMine := errors.New("mine")
	for _, tc := range []struct {
		name string
		want error
		stop func(b *eventbus.Bus, s *eventbus.Subscription) error
	}{
		{"Shutdown", context.DeadlineExceeded, func(b *eventbus.Bus, _ *eventbus.Subscription) error {
			ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, errMine)
			defer cancel()
			return b.Shutdown(ctx)
		}},
		{"Unsubscribe", context.Canceled, func(_ *eventbus.Bus, s *eventbus.Subscription) error {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(errMine)
			return s.Unsubscribe(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1})
				topic := newTopic[Order](t, b, "orders", nil)
				s := subscribe(t, topic, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
					<-ctx.Done() // only a stop without grace ends it
					return ctx.Err()
				}, nil)
				for n := range 2 {
					require.NoError(t, topic.Publish(context.Background(), Order{Key: "k", N: n}))
				}
				synctest.Wait() // the first event runs, the second waits
				err := tc.stop(b, s)
				var ue *eventbus.UndeliveredError
				require.ErrorAs(t, err, &ue)
				for _, target := range []error{tc.want, errMine} {
					if !errors.Is(err, target) {
						t.Errorf("%s = %v, want an error matching %v", tc.name, err, target)
					}
				}
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					if dl.Attempt == 0 && !(errors.Is(dl.Err, tc.want) && errors.Is(dl.Err, errMine)) {
						t.Errorf("dead letter of an event never run: Err = %v, want an error matching %v and %v", dl.Err, tc.want, errMine)
					}
				}
			})
		})
	}
}

// TestSyncRetryAbandonedWithContextCause publishes in Sync mode with a
// context given a cause of its own, which ends while a failed event waits
// for its retry: the error, and the dead letter, match the handler's error,
// the context's and its cause, as an Async subscription's abandoned retry
// does.
func TestSyncRetryAbandonedWithContextCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errMine, errHandler := errors.New("mine"), errors.New("handler fails")
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Minute}})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errHandler }, nil)
		ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, errMine)
		defer cancel()
		err := topic.Publish(ctx, Order{Key: "k"})
		dls := slices.Collect(b.DeadLetters().All(eventbus.DeadLetterFilter{}))
		require.Len(t, dls, 1)
		for _, target := range []error{errHandler, context.DeadlineExceeded, errMine} {
			if !errors.Is(err, target) || !errors.Is(dls[0].Err, target) {
				t.Errorf("Publish = %v, dead letter's Err = %v; want both to match %v", err, dls[0].Err, target)
			}
		}
	})
}

// TestUndeliveredErrorMessage pins the message's count, in the singular for
// one event.
func TestUndeliveredErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		count int
		want  string
	}{
		{0, "eventbus: 0 events undelivered: context deadline exceeded"},
		{1, "eventbus: 1 event undelivered: context deadline exceeded"},
		{5, "eventbus: 5 events undelivered: context deadline exceeded"},
	} {
		e := &eventbus.UndeliveredError{Count: tc.count, Err: context.DeadlineExceeded}
		require.Equal(t, tc.want, e.Error())
	}
}
