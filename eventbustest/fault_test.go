package eventbustest_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

var errDown = errors.New("downstream unavailable")

// handled returns a handler that records the payloads it handled, and a
// function returning them.
func handled(t *testing.T) (eventbus.Handler[Order], func() []Order) {
	var (
		mu  sync.Mutex
		got []Order
	)
	h := func(_ context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.Payload)
		return nil
	}
	return h, func() []Order {
		mu.Lock()
		defer mu.Unlock()
		return append([]Order(nil), got...)
	}
}

// TestInjectFailFirstAttempts fails the first two attempts at each of two
// events of one key, with a retry policy of three attempts (they get
// through) and of two (they are dead-lettered).
func TestInjectFailFirstAttempts(t *testing.T) {
	for _, attempts := range []int{2, 3} {
		synctest.Test(t, func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: attempts, InitialDelay: time.Second}})
			orders := newTopic[Order](t, b, "orders")
			h, got := handled(t)
			_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Attempts: 2, Err: errDown}), nil)
			require.NoError(t, err)
			start := time.Now()
			one, two := Order{ID: "a", N: 1}, Order{ID: "a", N: 2}
			publish(t, orders, one, two)
			require.NoError(t, b.Flush(t.Context()))

			want := eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "billing", Queued: 2, Failed: 4}
			if attempts == 3 {
				// Each event: attempts at 0s, 1s and 3s after it starts.
				require.Equal(t, 6*time.Second, time.Since(start))
				require.Equal(t, []Order{one, two}, got())
				eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{})
				want.Handled, want.Retried = 2, 4
			} else {
				// Each event: attempts at 0s and 1s after it starts.
				require.Equal(t, 2*time.Second, time.Since(start))
				require.Empty(t, got())
				eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{Err: errDown}, one, two)
				want.DeadLettered, want.Retried = 2, 2
			}
			eventbustest.WantMetrics(t, b, want)
		})
	}
}

func TestInjectKey(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 3}})
	orders := newTopic[Order](t, b, "orders")
	h, got := handled(t)
	_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Key: "bad", Err: eventbus.Permanent(errDown)}), nil)
	require.NoError(t, err)
	require.NoError(t, orders.Publish(t.Context(), Order{ID: "good", N: 1}))
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "bad", N: 2}), errDown)
	require.NoError(t, orders.Publish(t.Context(), Order{ID: "good", N: 3}))
	require.Equal(t, []Order{{ID: "good", N: 1}, {ID: "good", N: 3}}, got())
	eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{Subscription: "billing", Err: errDown}, Order{ID: "bad", N: 2})
	eventbustest.WantMetrics(t, b, eventbus.SubscriptionMetrics{
		Topic: "orders", Subscription: "billing", Queued: 3, Handled: 2, Failed: 1, DeadLettered: 1,
	})
}

func TestInjectPanic(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	h, got := handled(t)
	_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Panic: "boom"}), nil)
	require.NoError(t, err)
	var pe *eventbus.PanicError
	require.ErrorAs(t, orders.Publish(t.Context(), Order{ID: "a"}), &pe)
	require.Equal(t, "boom", pe.Value)
	require.Empty(t, got())
	eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{}, Order{ID: "a"})
}

func TestInjectDelay(t *testing.T) {
	t.Run("runs the handler after the delay", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
			orders := newTopic[Order](t, b, "orders")
			h, got := handled(t)
			_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Key: "slow", Delay: time.Minute}), nil)
			require.NoError(t, err)
			start := time.Now()
			publish(t, orders, Order{ID: "fast"})
			require.Zero(t, time.Since(start))
			publish(t, orders, Order{ID: "slow"})
			require.Equal(t, time.Minute, time.Since(start))
			require.Equal(t, []Order{{ID: "fast"}, {ID: "slow"}}, got())
		})
	})
	t.Run("honours the handler's context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second)}})
			orders := newTopic[Order](t, b, "orders")
			h, got := handled(t)
			_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Delay: time.Minute}), nil)
			require.NoError(t, err)
			start := time.Now()
			publish(t, orders, Order{ID: "a"})
			require.NoError(t, b.Flush(t.Context()))
			require.Equal(t, time.Second, time.Since(start), "cut short by the Timeout middleware")
			require.Empty(t, got())
			eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{Err: context.DeadlineExceeded}, Order{ID: "a"})
		})
	})
}

func TestInjectZeroFaultChangesNothing(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	h, got := handled(t)
	_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{}), nil)
	require.NoError(t, err)
	publish(t, orders, Order{ID: "a"})
	require.Equal(t, []Order{{ID: "a"}}, got())
}

// TestInjectNilHandler checks that a nil handler stays nil, so that
// Subscribe refuses it with its clear error instead of taking a handler
// that panics on every event.
func TestInjectNilHandler(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	orders := newTopic[Order](t, b, "orders")
	_, err := orders.Subscribe("billing", eventbustest.Inject[Order](nil, eventbustest.Fault{Err: errDown}), nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorContains(t, err, "nil handler")
}

// TestInjectAttemptsPerSubscription checks what Fault.Attempts documents:
// an Inject for each subscription fails the first attempts in each, while
// one Inject shared by both counts their attempts together.
func TestInjectAttemptsPerSubscription(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Nanosecond}})
	orders := newTopic[Order](t, b, "orders")
	h, _ := handled(t)
	fault := eventbustest.Fault{Attempts: 2, Err: errDown}
	shared := eventbustest.Inject(h, fault)
	for name, inject := range map[string]eventbus.Handler[Order]{
		"own-1": eventbustest.Inject(h, fault), "own-2": eventbustest.Inject(h, fault),
		"shared-1": shared, "shared-2": shared,
	} {
		_, err := orders.Subscribe(name, inject, nil)
		require.NoError(t, err)
	}
	publish(t, orders, Order{ID: "a"})
	for _, name := range []string{"own-1", "own-2"} {
		eventbustest.WantMetrics(t, b, eventbus.SubscriptionMetrics{Topic: "orders", Subscription: name, Queued: 1, Handled: 1, Failed: 2, Retried: 2})
	}
	m := b.Metrics()
	var failed uint64
	for _, s := range m.Subscriptions {
		if s.Subscription == "shared-1" || s.Subscription == "shared-2" {
			failed += s.Failed
		}
	}
	require.Equal(t, uint64(2), failed, "the shared Inject fails 2 attempts in all")
}

// TestInjectBatch checks what Inject documents for batch handlers: a batch
// handler that calls an injected Handler for each of its events fails the
// first attempt at the selected one, whose retry gets through.
func TestInjectBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
		orders := newTopic[Order](t, b, "orders")
		h, got := handled(t)
		each := eventbustest.Inject(h, eventbustest.Fault{Key: "b", Attempts: 1, Err: errDown})
		_, err := orders.SubscribeBatch("billing", func(ctx context.Context, events []eventbus.Event[Order]) error {
			failed := make(map[int]error)
			for i, e := range events {
				if err := each(ctx, e); err != nil {
					failed[i] = err
				}
			}
			return &eventbus.BatchError{Failed: failed}
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"}, Order{ID: "c"})
		require.NoError(t, b.Flush(t.Context()))
		require.ElementsMatch(t, []Order{{ID: "a"}, {ID: "b"}, {ID: "c"}}, got())
		eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{})
		eventbustest.WantMetrics(t, b, eventbus.SubscriptionMetrics{
			Topic: "orders", Subscription: "billing", Queued: 3, Handled: 3, Failed: 1, Retried: 1,
		})
	})
}

// TestInjectDelayThenFail checks the order that Fault documents: a faulty
// attempt waits Delay, then panics with Panic if it is set, else fails
// with Err; Err does not cut the delay short, and Panic wins over Err.
func TestInjectDelayThenFail(t *testing.T) {
	tests := []struct {
		name  string
		fault eventbustest.Fault
		check func(t *testing.T, err error)
	}{
		{"Err", eventbustest.Fault{Delay: time.Minute, Err: errDown}, func(t *testing.T, err error) {
			require.ErrorIs(t, err, errDown)
		}},
		{"Panic and Err", eventbustest.Fault{Delay: time.Minute, Err: errDown, Panic: "boom"}, func(t *testing.T, err error) {
			var pe *eventbus.PanicError
			require.ErrorAs(t, err, &pe, "Panic wins over Err")
			require.Equal(t, "boom", pe.Value)
			require.NotErrorIs(t, err, errDown)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
				orders := newTopic[Order](t, b, "orders")
				h, got := handled(t)
				_, err := orders.Subscribe("billing", eventbustest.Inject(h, tt.fault), nil)
				require.NoError(t, err)
				start := time.Now()
				tt.check(t, orders.Publish(t.Context(), Order{ID: "a"}))
				require.Equal(t, time.Minute, time.Since(start), "the attempt waited Delay first")
				require.Empty(t, got())
			})
		})
	}
}

// TestInjectKeyOfStoreTopic checks what Fault.Key documents for a durable
// subscription, whose handler sees the event's stream as Key: a Fault
// selects the events of key "a" of StoreTopic "orders" by the stream,
// "orders:a", and by the key that RecordStoreTopic records, "a" (a Fault
// written from the recorder's output selected none), but not by a key that
// is only a part of it ("orders", or the "b" of a key "x:b"), and on a
// Topic a key's part selects nothing.
func TestInjectKeyOfStoreTopic(t *testing.T) {
	orders, b := newStoreTopic(t, func(t testing.TB) *eventbus.Bus { return eventbustest.NewBus(t, nil) }, "orders")
	rec := eventbustest.RecordStoreTopic(t, orders)
	var subs []*eventbus.Durable
	for name, key := range map[string]string{"stream": "orders:a", "key": "a", "topic": "orders", "part": "b"} {
		h, _ := handled(t)
		d, err := orders.Subscribe(t.Context(), name, eventbustest.Inject(h, eventbustest.Fault{Key: key, Err: errDown}), nil)
		require.NoError(t, err)
		subs = append(subs, d)
	}
	plain := newTopic[Order](t, b, "plain")
	h, _ := handled(t)
	_, err := plain.Subscribe("part", eventbustest.Inject(h, eventbustest.Fault{Key: "b", Err: errDown}), nil)
	require.NoError(t, err)
	require.NoError(t, plain.Publish(t.Context(), Order{ID: "x:b"}))
	storePublish(t, orders, Order{ID: "x:b"})
	res, err := orders.Publish(t.Context(), Order{ID: "a"})
	require.NoError(t, err)
	for _, d := range subs {
		require.NoError(t, d.WaitFor(t.Context(), res.Position))
	}
	require.NoError(t, b.Flush(t.Context()))
	var keys []string
	for _, e := range rec.Events() {
		keys = append(keys, e.Key)
	}
	require.Equal(t, []string{"x:b", "a"}, keys, "the keys that the recorder shows")
	var got []string
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: errDown}) {
		got = append(got, dl.Subscription+" "+dl.Key)
	}
	slices.Sort(got)
	require.Equal(t, []string{"orders.key orders:a", "orders.stream orders:a"}, got)
}
