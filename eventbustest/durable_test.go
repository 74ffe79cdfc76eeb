package eventbustest_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// TestWaitDurable checks that WaitDurable returns once every durable
// subscription given has finished every event committed before the call,
// those it retried and those it dead-lettered too, and passes those its
// filter does not select, at once: the last event of the store here is
// of another topic.
func TestWaitDurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := storeOf(t)
		b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
		orders, err := eventbus.NewStoreTopic[Order](b, store, registryOf(t), "orders")
		require.NoError(t, err)
		invoices, err := eventbus.NewStoreTopic[Order](b, store, registryOf(t), "invoices")
		require.NoError(t, err)
		h, got := handled(t)
		billing, err := orders.Subscribe(t.Context(), "billing", eventbustest.Inject(h, eventbustest.Fault{Key: "b", Err: errDown}), nil)
		require.NoError(t, err)
		retried, err := orders.Subscribe(t.Context(), "retried", eventbustest.Inject(h, eventbustest.Fault{Key: "a", Attempts: 1, Err: errDown}), nil)
		require.NoError(t, err)
		start := time.Now()
		storePublish(t, orders, Order{ID: "a"}, Order{ID: "b"}, Order{ID: "c"})
		_, err = invoices.Publish(t.Context(), Order{ID: "i"})
		require.NoError(t, err)

		require.True(t, eventbustest.WaitDurable(t.Context(), t, store, billing, retried))
		require.Equal(t, time.Second, time.Since(start), "waited for the retry of a, and no longer")
		require.ElementsMatch(t, []Order{{ID: "a"}, {ID: "c"}, {ID: "a"}, {ID: "b"}, {ID: "c"}}, got())
		var dead []string
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl.Subscription+" "+dl.Key)
		}
		require.Equal(t, []string{"orders.billing orders:b"}, dead)
	})
}

// TestWaitDurableEmptyStore checks that WaitDurable returns at once when
// nothing was committed.
func TestWaitDurableEmptyStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		orders, _ := newStoreTopic(t, func(t testing.TB) *eventbus.Bus { return eventbustest.NewBus(t, nil) }, "orders")
		h, _ := handled(t)
		d, err := orders.Subscribe(t.Context(), "billing", h, nil)
		require.NoError(t, err)
		start := time.Now()
		require.True(t, eventbustest.WaitDurable(t.Context(), t, orders.Store(), d))
		require.Zero(t, time.Since(start))
	})
}

// TestWaitDurableFails checks that WaitDurable fails the test, saying why,
// when a subscription cannot finish the events committed: one waits for a
// retry longer than the default deadline, one has stopped; and for bad
// arguments, instead of panicking or passing.
func TestWaitDurableFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := storeOf(t)
		b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute}})
		orders, err := eventbus.NewStoreTopic[Order](b, store, registryOf(t), "orders")
		require.NoError(t, err)
		h, _ := handled(t)
		slow, err := orders.Subscribe(t.Context(), "slow", eventbustest.Inject(h, eventbustest.Fault{Attempts: 1, Err: errDown}), nil)
		require.NoError(t, err)
		stopped, err := orders.Subscribe(t.Context(), "stopped", h, nil)
		require.NoError(t, err)
		require.NoError(t, stopped.Stop(t.Context()))
		storePublish(t, orders, Order{ID: "a"})

		spy := newSpy(t)
		start := time.Now()
		require.False(t, eventbustest.WaitDurable(t.Context(), spy, store, stopped, slow))
		require.Equal(t, 10*time.Second, time.Since(start), "gave up at 10s, on the fake clock")
		spy.wantFailure(t,
			`durable subscription "orders.slow" has not finished the events committed up to position 0: context deadline exceeded (WaitDurable's default deadline, 10s); it has finished those before position 0`,
			`durable subscription "orders.stopped" has not finished the events committed up to position 0: `+eventbus.ErrClosed.Error())

		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		require.True(t, eventbustest.WaitDurable(ctx, t, store, slow), "a later deadline waits for the retry")

		for _, tt := range []struct {
			name  string
			call  func(tb testing.TB) bool
			wants string
		}{
			{"nil context", func(tb testing.TB) bool { return eventbustest.WaitDurable(nil, tb, store, slow) }, "WaitDurable: nil context"}, //lint:ignore SA1012 a nil context is the bad input under test
			{"nil store", func(tb testing.TB) bool { return eventbustest.WaitDurable(t.Context(), tb, nil, slow) }, "WaitDurable: nil store"},
			{"no subscription", func(tb testing.TB) bool { return eventbustest.WaitDurable(t.Context(), tb, store) }, "WaitDurable: no durable subscription to wait for"},
			{"nil subscription", func(tb testing.TB) bool { return eventbustest.WaitDurable(t.Context(), tb, store, slow, nil) }, "WaitDurable: durable subscription 2 of 2 is nil"},
		} {
			spy := newSpy(t)
			require.False(t, tt.call(spy), tt.name)
			spy.wantFailure(t, tt.wants)
		}
	})
}

// storeOf returns a MemoryStore closed when t ends, after the buses that
// t makes later have stopped.
func storeOf(t *testing.T) eventbus.Store {
	t.Helper()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// registryOf returns a Registry of Order.
func registryOf(t *testing.T) *eventbus.Registry {
	t.Helper()
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Order](reg, nil))
	return reg
}
