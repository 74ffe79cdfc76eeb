package eventbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

func collect(q *eventbus.DeadLetterQueue, f eventbus.DeadLetterFilter) []string {
	var out []string
	for dl := range q.All(f) {
		out = append(out, fmt.Sprintf("%s/%s/%d", dl.Topic, dl.Subscription, dl.Payload().(Order).N))
	}
	return out
}

func TestDeadLetterQueueOperations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errBad := errors.New("bad order")
		var sunk []string
		var mu sync.Mutex
		sink := eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
			mu.Lock()
			defer mu.Unlock()
			sunk = append(sunk, dl.Subscription)
			return nil
		})
		b := newBus(t, &eventbus.Options{Workers: 1, DeadLetterSink: sink})
		orders := newTopic[Order](t, b, "orders", nil)
		refunds := newTopic(t, b, "refunds", &eventbus.TopicOptions[Order]{EventType: "refund"})
		var fixed bool
		handled := map[string][]int{}
		failing := func(_ context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			if !fixed {
				return errBad
			}
			handled[e.Topic] = append(handled[e.Topic], e.Payload.N)
			return nil
		}
		subscribe(t, orders, "billing", failing, nil)
		subscribe(t, orders, "audit", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
		subscribe(t, refunds, "billing", failing, nil)
		ctx := context.Background()
		for i := range 3 {
			require.NoError(t, orders.Publish(ctx, Order{Key: "k", N: i}))
		}
		require.NoError(t, refunds.Publish(ctx, Order{Key: "k", N: 9}))
		require.NoError(t, b.Flush(ctx))

		q := b.DeadLetters()
		require.Equal(t, 7, q.Len())
		require.Len(t, sunk, 7, "the sink saw every dead letter")
		require.Equal(t, []string{"orders/billing/0", "orders/billing/1", "orders/billing/2"},
			collect(q, eventbus.DeadLetterFilter{Topic: "orders", Subscription: "billing"}))
		require.Equal(t, []string{"refunds/billing/9"}, collect(q, eventbus.DeadLetterFilter{Topic: "refunds"}))
		require.Len(t, collect(q, eventbus.DeadLetterFilter{Err: errFlaky}), 3)

		dl, ok := firstDeadLetter(b)
		require.True(t, ok)
		got, ok := q.Get(dl.Subscription, dl.ID)
		require.True(t, ok)
		require.Equal(t, dl.ID, got.ID)
		_, ok = q.Get("nobody", dl.ID)
		require.False(t, ok)

		// Redrive after the fix: back through the subscription, in order.
		mu.Lock()
		fixed = true
		mu.Unlock()
		n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{Subscription: "billing"})
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, map[string][]int{"orders": {0, 1, 2}, "refunds": {9}}, handled, "in order per key")
		require.Equal(t, 3, q.Len(), "redriven entries left the queue")
		require.Equal(t, 3, q.Discard(eventbus.DeadLetterFilter{Err: errFlaky}))
		require.Zero(t, q.Len())
		require.Empty(t, collect(q, eventbus.DeadLetterFilter{}))
	})
}

func TestDeadLetterQueueFullEvictsOldest(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 2,
		DeadLetterSink: eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("sink down") })})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	for i := range 5 {
		require.ErrorIs(t, topic.Publish(context.Background(), Order{N: i}), errFlaky)
	}
	q := b.DeadLetters()
	require.Equal(t, []string{"orders/s/3", "orders/s/4"}, collect(q, eventbus.DeadLetterFilter{}))
	evicted, sinkErrs := q.Evicted()
	require.EqualValues(t, 3, evicted)
	require.EqualValues(t, 5, sinkErrs)
	m := b.Metrics().DeadLetters
	require.Equal(t, eventbus.DeadLetterMetrics{Held: 2, Evicted: 3, SinkErrors: 5}, m)
}

// TestDeadLetterQueueEvictionLetsGoOfPayloads checks that an evicted dead
// letter's payload is garbage once nothing else holds it: the queue drops
// its oldest by reslicing, which keeps the slot in the array until the
// next append that grows it, so the slot must be cleared. With a capacity
// of 3, the fourth dead letter fits in the array the third grew to, and a
// queue that did not clear the slot held the first payload for good.
func TestDeadLetterQueueEvictionLetsGoOfPayloads(t *testing.T) {
	type blob struct {
		_ [1 << 16]byte
		n int
	}
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 3})
	topic := newTopic[*blob](t, b, "blobs", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[*blob]) error { return errFlaky }, nil)
	var payloads []weak.Pointer[blob]
	for n := range 4 {
		p := &blob{n: n}
		payloads = append(payloads, weak.Make(p))
		require.ErrorIs(t, topic.Publish(context.Background(), p), errFlaky)
	}
	q := b.DeadLetters()
	evicted, _ := q.Evicted()
	require.EqualValues(t, 1, evicted)
	runtime.GC()
	require.True(t, payloads[0].Value() == nil, "the queue still holds the evicted payload")
	for n, w := range payloads[1:] {
		require.NotNil(t, w.Value(), "payload %d, held", n+1)
	}
}

// TestDeadLetterCapacityDefault checks the default that
// Options.DeadLetterCapacity's doc gives: zero means 10,000 dead letters
// held, the oldest evicted past them. Every test set a capacity, so a
// default of 1,000 or 100,000 passed every test.
func TestDeadLetterCapacityDefault(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	q := b.DeadLetters()
	for i := range 10_001 {
		require.ErrorIs(t, topic.Publish(context.Background(), Order{N: i}), errFlaky)
		if i == 9_999 {
			evicted, _ := q.Evicted()
			require.Equal(t, 10_000, q.Len(), "the first 10,000")
			require.Zero(t, evicted, "the first 10,000")
		}
	}
	evicted, _ := q.Evicted()
	require.Equal(t, 10_000, q.Len())
	require.EqualValues(t, 1, evicted)
	for dl := range q.All(eventbus.DeadLetterFilter{}) {
		require.Equal(t, 1, dl.Payload().(Order).N, "the oldest evicted")
		break
	}
}

// TestDeadLetterQueueAllAsOfTheCall checks that All yields the dead
// letters held when it was called, as its doc says, and calls the loop's
// body holding no lock of the queue, which the queue's doc promises of
// every method: a loop that discards what it has seen, or looks up an
// entry, neither waits for itself nor changes what it iterates.
func TestDeadLetterQueueAllAsOfTheCall(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	ctx := context.Background()
	for i := range 3 {
		require.ErrorIs(t, topic.Publish(ctx, Order{N: i}), errFlaky)
	}
	q := b.DeadLetters()
	all := q.All(eventbus.DeadLetterFilter{})
	require.ErrorIs(t, topic.Publish(ctx, Order{N: 3}), errFlaky) // after the call
	var got []int
	for dl := range all {
		got = append(got, dl.Payload().(Order).N)
		_, ok := q.Get(dl.Subscription, dl.ID)
		require.Equal(t, len(got) == 1, ok, "Get of dead letter %d", dl.Payload().(Order).N)
		if len(got) == 1 {
			require.Equal(t, 4, q.Discard(eventbus.DeadLetterFilter{Subscription: "s"}))
		}
	}
	require.Equal(t, []int{0, 1, 2}, got)
	require.Zero(t, q.Len())
}

func TestRedriveAfterUnsubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		sub := subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{N: 1}))
		require.NoError(t, b.Flush(context.Background()))
		require.NoError(t, sub.Unsubscribe(context.Background()))
		n, err := b.DeadLetters().Redrive(context.Background(), eventbus.DeadLetterFilter{})
		require.ErrorIs(t, err, eventbus.ErrClosed)
		require.Zero(t, n)
		require.Equal(t, 1, b.DeadLetters().Len(), "an entry that could not be sent stays")
	})
}

// oneDeadLetter returns a bus of mode whose topic "orders" has one
// subscription, "s", that fails every event, and one dead letter of it,
// with the count of the handler's calls.
func oneDeadLetter(t *testing.T, mode eventbus.Mode) (*eventbus.Bus, *int) {
	t.Helper()
	b := newBus(t, &eventbus.Options{Mode: mode})
	topic := newTopic[Order](t, b, "orders", nil)
	calls := new(int)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { *calls++; return errFlaky }, nil)
	ctx := context.Background()
	_ = topic.Publish(ctx, Order{N: 1}) // fails in Sync mode
	require.NoError(t, b.Flush(ctx))
	require.Equal(t, 1, b.DeadLetters().Len())
	return b, calls
}

// TestRedriveAfterClose checks, in both modes, that a Redrive once the bus
// has stopped sends nothing, as Publish then handles nothing: it fails with
// ErrClosed, no handler runs, and the dead letter stays.
func TestRedriveAfterClose(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b, calls := oneDeadLetter(t, mode)
			ctx := context.Background()
			require.NoError(t, b.Close())
			n, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
			require.ErrorIs(t, err, eventbus.ErrClosed)
			require.Zero(t, n)
			require.Equal(t, 1, *calls, "no attempt after Close")
			require.Equal(t, 1, b.DeadLetters().Len(), "an entry that could not be sent stays")
		})
	})
}

// TestRedriveFailsAgain redrives dead letters whose handler fails again,
// in both modes: each is sent, and is one dead letter again, not two.
func TestRedriveFailsAgain(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(modeName[mode], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: mode})
				topic := newTopic[Order](t, b, "orders", nil)
				calls := 0
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { calls++; return errFlaky }, nil)
				ctx := context.Background()
				for i := range 2 {
					_ = topic.Publish(ctx, Order{Key: "a", N: i}) // fails in Sync mode
				}
				require.NoError(t, b.Flush(ctx))
				if mode == eventbus.Sync { // Async queues them, whatever the context
					done, cancel := context.WithCancel(ctx)
					cancel()
					n, err := b.DeadLetters().Redrive(done, eventbus.DeadLetterFilter{})
					require.ErrorIs(t, err, context.Canceled)
					require.Zero(t, n)
					require.Equal(t, 2, calls, "no attempt with a done context")
					require.Equal(t, 2, b.DeadLetters().Len(), "not sent, so kept")
				}
				for round := 1; round <= 2; round++ {
					n, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
					require.NoError(t, err)
					require.Equal(t, 2, n, "round %d: sent", round)
					require.NoError(t, b.Flush(ctx))
					require.Equal(t, 2, b.DeadLetters().Len(), "round %d: dead letters again", round)
					require.Equal(t, 2*(round+1), calls, "round %d: one attempt per event", round)
				}
			})
		})
	}
}

// TestConcurrentRedrives redrives, from two goroutines at once, a dead
// letter whose subscription is gone: each failure names it, and the queue
// keeps it (run with -race: the put-back once shared memory with Redrive).
func TestConcurrentRedrives(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	sub := subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return eventbus.Permanent(errFlaky) }, nil)
	ctx := context.Background()
	require.NoError(t, topic.Publish(ctx, Order{N: 1}))
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, sub.Unsubscribe(ctx))
	dl, ok := firstDeadLetter(b)
	require.True(t, ok)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 20000 {
				if _, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{}); err != nil && !strings.Contains(err.Error(), dl.ID.String()) {
					t.Errorf("Redrive = %v, want an error naming %s", err, dl.ID)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, b.DeadLetters().Len())
}

// TestDeadLetterSinkContextOutlivesClose closes a bus with events queued:
// the sink receives them with a context that is not cancelled, so that a
// sink writing to a database still can.
func TestDeadLetterSinkContextOutlivesClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var sinkErrs []error
		sink := eventbus.DeadLetterFunc(func(ctx context.Context, dl eventbus.DeadLetter) error {
			mu.Lock()
			defer mu.Unlock()
			sinkErrs = append(sinkErrs, ctx.Err())
			return nil
		})
		b := newBus(t, &eventbus.Options{Workers: 1, DeadLetterSink: sink})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		for n := range 3 {
			require.NoError(t, topic.Publish(context.Background(), Order{N: n}))
		}
		synctest.Wait()
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, sinkErrs, 3)
		for _, err := range sinkErrs {
			require.NoError(t, err, "the sink's context is cancelled")
		}
	})
}

// TestRedriveFromHandler redrives a dead letter from a handler into its own
// worker's full queue: like Publish with a handler's context, Redrive then
// queues past the bound instead of waiting for room that only the waiting
// handler's worker could make.
func TestRedriveFromHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		release := make(chan struct{})
		var handled []int
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			switch e.Payload.N {
			case 1:
				if len(handled) == 0 {
					handled = append(handled, -1)
					return eventbus.Permanent(errFlaky) // dead-lettered the first time
				}
			case 2:
				<-release // until 3 fills the queue
				n, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
				if err != nil || n != 1 {
					return fmt.Errorf("redrive: %d, %w", n, err)
				}
			}
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, b.Flush(ctx))
		require.NoError(t, topic.Publish(ctx, Order{N: 2}))
		synctest.Wait() // 2's handler waits for release
		require.NoError(t, topic.Publish(ctx, Order{N: 3}))
		close(release)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{-1, 2, 3, 1}, handled)
		require.Zero(t, b.DeadLetters().Len())
	})
}

// TestDeadLetterSinkAfterGoexit has a sink publish, with its context, into
// the full queue of the worker that calls it, after a handler called
// runtime.Goexit: as from a handler, the event is queued past the bound
// instead of waiting for room that only that worker could make, and it is
// linked to the dead letter's event.
func TestDeadLetterSinkAfterGoexit(t *testing.T) {
	tests := []struct {
		name  string
		retry bool // Goexit during the retry
		batch bool
	}{
		{name: "first attempt"},
		{name: "retry", retry: true},
		{name: "batch", batch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var topic *eventbus.Topic[Order]
				var dead []eventbus.DeadLetter
				sink := eventbus.DeadLetterFunc(func(ctx context.Context, dl eventbus.DeadLetter) error {
					dead = append(dead, dl)
					return topic.Publish(ctx, Order{Key: "k", N: 100 + dl.Payload().(Order).N})
				})
				opts := &eventbus.Options{Workers: 1, QueueSize: 1, DeadLetterSink: sink}
				if tt.retry {
					opts.Retry = eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}
				}
				b := newBus(t, opts)
				topic = newTopic[Order](t, b, "orders", nil)
				gate := make(chan struct{})
				attempts := 0
				var handled []eventbus.Event[Order]
				one := func(e eventbus.Event[Order]) error {
					if e.Payload.N == 1 {
						<-gate // until 2 fills the queue
						if attempts++; tt.retry && attempts == 1 {
							return errFlaky
						}
						runtime.Goexit()
					}
					handled = append(handled, e)
					return nil
				}
				var err error
				if tt.batch {
					_, err = topic.SubscribeBatch("s", func(_ context.Context, es []eventbus.Event[Order]) error {
						for _, e := range es {
							_ = one(e)
						}
						return nil
					}, nil)
				} else {
					_, err = topic.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error { return one(e) }, nil)
				}
				require.NoError(t, err)
				ctx := context.Background()
				corr := eventbus.NewID()
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 1}, eventbus.WithCorrelationID(corr)))
				synctest.Wait()
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 2}))
				close(gate)
				require.NoError(t, b.Flush(ctx))
				require.NoError(t, b.Flush(ctx)) // and the sink's event, published meanwhile

				require.Len(t, dead, 1)
				require.Len(t, handled, 2)
				require.Equal(t, []int{2, 101}, []int{handled[0].Payload.N, handled[1].Payload.N})
				_, sinkErrs := b.DeadLetters().Evicted()
				require.Zero(t, sinkErrs)
				require.Equal(t, dead[0].ID, handled[1].CausationID, "the sink's event is caused by the dead letter's")
				require.Equal(t, corr, handled[1].CorrelationID)
			})
		})
	}
}

// TestDeadLetterSinkWhenAbandoned unsubscribes without grace while the sink
// publishes into another subscription's full queue and flushes: for the
// events the stop abandons as for one that failed, the sink's Publish never
// waits for room, its event is linked to the dead letter's, and Flush
// refuses to wait (for the worker calling the sink, among others).
func TestDeadLetterSinkWhenAbandoned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b *eventbus.Bus
		var topic *eventbus.Topic[Order]
		var dead []eventbus.DeadLetter
		var flushErrs []error
		sink := eventbus.DeadLetterFunc(func(ctx context.Context, dl eventbus.DeadLetter) error {
			dead = append(dead, dl)
			flushErrs = append(flushErrs, b.Flush(ctx))
			return topic.Publish(ctx, Order{N: 100 + dl.Payload().(Order).N})
		})
		b = newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1, DeadLetterSink: sink})
		topic = newTopic[Order](t, b, "orders", nil)
		sub := subscribe(t, topic, "stopped", func(ctx context.Context, e eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		gate := make(chan struct{})
		var handled []eventbus.Event[Order]
		subscribe(t, topic, "slow", func(_ context.Context, e eventbus.Event[Order]) error {
			<-gate
			handled = append(handled, e)
			return nil
		}, nil)
		ctx := context.Background()
		corr := eventbus.NewID()
		for n := 1; n <= 2; n++ { // 1 in both handlers, 2 filling both queues
			require.NoError(t, topic.Publish(ctx, Order{N: n}, eventbus.WithCorrelationID(corr)))
			synctest.Wait()
		}
		done, cancel := context.WithCancel(ctx)
		cancel()
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, sub.Unsubscribe(done), &ue)
		require.Equal(t, 1, ue.Count, "2 abandoned; 1 failed")
		close(gate)
		require.NoError(t, b.Flush(ctx))

		require.Len(t, dead, 2)
		for _, err := range flushErrs {
			require.ErrorIs(t, err, eventbus.ErrInvalid)
		}
		_, sinkErrs := b.DeadLetters().Evicted()
		require.Zero(t, sinkErrs)
		var got []int
		for _, e := range handled {
			got = append(got, e.Payload.N)
		}
		require.Equal(t, []int{1, 2, 101, 102}, got)
		for i, dl := range dead {
			require.Equal(t, dl.ID, handled[2+i].CausationID, "the sink's event is caused by the dead letter's")
			require.Equal(t, corr, handled[2+i].CorrelationID)
		}
	})
}

// TestDeadLetterSinkLineage has a sink publish with its context in both
// modes, for an event that failed and again once redriven: the sink's event
// is linked to the dead letter's event each time.
func TestDeadLetterSinkLineage(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(modeName[mode], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var topic *eventbus.Topic[Order]
				var dead []eventbus.DeadLetter
				sink := eventbus.DeadLetterFunc(func(ctx context.Context, dl eventbus.DeadLetter) error {
					dead = append(dead, dl)
					return topic.Publish(ctx, Order{N: 100})
				})
				b := newBus(t, &eventbus.Options{Mode: mode, DeadLetterSink: sink})
				topic = newTopic[Order](t, b, "orders", nil)
				var children []eventbus.Header
				subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
					if e.Payload.N == 100 {
						children = append(children, e.Header)
						return nil
					}
					return eventbus.Permanent(errFlaky)
				}, nil)
				ctx := context.Background()
				corr := eventbus.NewID()
				// Each second Flush waits for the event the sink published
				// while the first one waited.
				_ = topic.Publish(ctx, Order{N: 1}, eventbus.WithCorrelationID(corr)) // fails in Sync mode
				require.NoError(t, b.Flush(ctx))
				require.NoError(t, b.Flush(ctx))
				n, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
				require.NoError(t, err)
				require.Equal(t, 1, n)
				require.NoError(t, b.Flush(ctx))
				require.NoError(t, b.Flush(ctx))

				require.Len(t, dead, 2)
				require.Len(t, children, 2)
				for i, h := range children {
					require.Equal(t, dead[i].ID, h.CausationID, "dead letter %d", i)
					require.Equal(t, corr, h.CorrelationID, "dead letter %d", i)
				}
			})
		})
	}
}

// TestDeadLetterSinkFailureLogNeverWaits gives the bus a logger whose
// handler publishes what it logs, with the context it is given, into the
// full queue of the worker whose sink failed: the report of the failure
// comes with the sink's context, so the handler never waits for room that
// only that worker could make, and its event is linked to the dead letter's.
func TestDeadLetterSinkFailureLogNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &publishingLog{}
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1, Logger: slog.New(h),
			DeadLetterSink: eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("sink down") })})
		h.topic = newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var handled []eventbus.Event[Order]
		subscribe(t, h.topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 1 {
				<-gate // until 2 fills the queue
				return eventbus.Permanent(errFlaky)
			}
			handled = append(handled, e)
			return nil
		}, nil)
		ctx := context.Background()
		corr := eventbus.NewID()
		require.NoError(t, h.topic.Publish(ctx, Order{Key: "k", N: 1}, eventbus.WithCorrelationID(corr)))
		synctest.Wait()
		require.NoError(t, h.topic.Publish(ctx, Order{Key: "k", N: 2}))
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.NoError(t, b.Flush(ctx)) // and the logger's event, published meanwhile

		dl, ok := firstDeadLetter(b)
		require.True(t, ok)
		// The logger's events: the report of the dead letter, then of
		// the sink's failure.
		require.Len(t, handled, 3)
		require.Equal(t, []int{2, 200, 200}, []int{handled[0].Payload.N, handled[1].Payload.N, handled[2].Payload.N})
		for _, e := range handled[1:] {
			require.Equal(t, dl.ID, e.CausationID, "the logger's event is caused by the dead letter's")
			require.Equal(t, corr, e.CorrelationID)
		}
	})
}

// publishingLog is a slog.Handler that publishes an Order{N: 200} for every
// record, with the context it is given, as a handler shipping logs over the
// bus would.
type publishingLog struct{ topic *eventbus.Topic[Order] }

func (h *publishingLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *publishingLog) Handle(ctx context.Context, _ slog.Record) error {
	return h.topic.Publish(ctx, Order{Key: "k", N: 200})
}
func (h *publishingLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *publishingLog) WithGroup(string) slog.Handler      { return h }

// TestFailedRedriveKeepsTheBound fails a Redrive part way after the events
// it sent made new dead letters: the entries it puts back must not take the
// queue past its capacity, and the oldest go, counted as evicted.
func TestFailedRedriveKeepsTheBound(t *testing.T) {
	// One failed order makes two dead letters: its audit's and its own.
	b, orders, refunds, refund := failingOrders(t, 2, 1)
	ctx := context.Background()
	require.ErrorIs(t, orders.Publish(ctx, Order{N: 1}), errFlaky)
	require.ErrorIs(t, refunds.Publish(ctx, Order{N: 2}), errFlaky)
	q := b.DeadLetters()
	require.Equal(t, []string{"orders/s/1", "refunds/s/2"}, collect(q, eventbus.DeadLetterFilter{}))
	require.NoError(t, refund.Unsubscribe(ctx))

	// The order goes and fails again (two new dead letters); the refund's
	// subscription is gone, so it comes back: three for two places.
	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{})
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.Equal(t, 1, n)
	require.Equal(t, []string{"audits/s/1", "orders/s/1"}, collect(q, eventbus.DeadLetterFilter{}))
	evicted, _ := q.Evicted()
	require.EqualValues(t, 2, evicted, "the first audit's dead letter, then the refund's")
}

// failingOrders makes a Sync-mode bus whose dead-letter queue holds
// capacity entries, with topics "orders", "audits" and "refunds" whose
// subscriptions "s" all fail: an order's handler first publishes it to
// audits audits times. It returns refunds' subscription too, for a test
// to unsubscribe.
func failingOrders(t *testing.T, capacity, audits int) (b *eventbus.Bus, orders, refunds *eventbus.Topic[Order], refund *eventbus.Subscription) {
	t.Helper()
	b = newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: capacity})
	orders = newTopic[Order](t, b, "orders", nil)
	audit := newTopic[Order](t, b, "audits", nil)
	refunds = newTopic[Order](t, b, "refunds", nil)
	subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		for range audits {
			_ = audit.Publish(ctx, e.Payload)
		}
		return errFlaky
	}, nil)
	subscribe(t, audit, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	refund = subscribe(t, refunds, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	return b, orders, refunds, refund
}

// TestDeadLetterSinkGoexit has a dead-letter sink call runtime.Goexit, as
// t.FailNow or testify's require in a sink do, on its first call: the
// event is dead-lettered once (the sink is not called again, the queue
// holds it once, with its own error) and counts the Goexit as a sink
// error; the events after it are handled, in order, and the worker lives
// on.
func TestDeadLetterSinkGoexit(t *testing.T) {
	for _, tt := range []struct {
		name  string
		retry bool // dead-lettered after a retry, from its lane
		batch bool
	}{
		{name: "first attempt"},
		{name: "retry", retry: true},
		{name: "batch", batch: true},
		{name: "batch retry", batch: true, retry: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var sunk []int
				sink := goexitOnFirst(&sunk)
				opts := &eventbus.Options{Workers: 1, DeadLetterSink: sink}
				if tt.retry {
					opts.Retry = eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}
				}
				b := newBus(t, opts)
				topic := newTopic[Order](t, b, "orders", nil)
				gate := make(chan struct{})
				first := true
				var handled []int
				one := func(e eventbus.Event[Order]) error {
					if first {
						first = false
						<-gate // hold 0 while the others queue up
					}
					if e.Payload.N == 1 {
						return errFlaky
					}
					handled = append(handled, e.Payload.N)
					return nil
				}
				var err error
				if tt.batch {
					_, err = topic.SubscribeBatch("s", func(_ context.Context, es []eventbus.Event[Order]) error {
						failed := map[int]error{}
						for i, e := range es {
							if err := one(e); err != nil {
								failed[i] = err
							}
						}
						return &eventbus.BatchError{Failed: failed}
					}, nil)
				} else {
					_, err = topic.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error { return one(e) }, nil)
				}
				require.NoError(t, err)
				ctx := context.Background()
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 0}))
				synctest.Wait()
				for n := 1; n <= 4; n++ {
					require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint("k", n%2), N: n}))
				}
				close(gate)
				require.NoError(t, b.Flush(ctx))
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 5}))
				require.NoError(t, b.Flush(ctx))

				require.Equal(t, []int{1}, sunk, "the sink's calls")
				var dead []string
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					dead = append(dead, fmt.Sprintf("%d: %v", dl.Payload().(Order).N, dl.Err))
				}
				require.Equal(t, []string{"1: flaky"}, dead, "the dead letters held")
				wantHandled := []int{0, 2, 3, 4, 5}
				if tt.retry && !tt.batch {
					wantHandled = []int{0, 2, 4, 3, 5} // 3 waited behind 1, its key's
				}
				if diff := cmp.Diff(wantHandled, handled); diff != "" {
					t.Errorf("handled (-want +got):\n%s", diff)
				}
				_, sinkErrs := b.DeadLetters().Evicted()
				require.EqualValues(t, 1, sinkErrs, "the Goexit counts as the sink's error")
				m := b.Metrics().Subscriptions[0]
				want := eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "s", Queued: 6, Handled: 5, Failed: 1, DeadLettered: 1}
				if tt.retry {
					want.Failed, want.Retried = 2, 1
				}
				m.HandleTime, m.Latency = eventbus.Histogram{}, eventbus.Histogram{}
				if diff := cmp.Diff(want, m); diff != "" {
					t.Errorf("metrics (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestDeadLetterSinkGoexitWhenAbandoned has the sink call runtime.Goexit
// on the first of the events that Close abandons: each is dead-lettered
// once, and Close returns.
func TestDeadLetterSinkGoexitWhenAbandoned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sunk []int
		sink := goexitOnFirst(&sunk)
		b := newBus(t, &eventbus.Options{Workers: 1, DeadLetterSink: sink})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { <-gate; return nil }, nil)
		ctx := context.Background()
		for n := range 4 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
			synctest.Wait()
		}
		closed := make(chan error)
		go func() { closed <- b.Close() }()
		synctest.Wait()
		close(gate)
		var u *eventbus.UndeliveredError
		require.ErrorAs(t, <-closed, &u)
		require.Equal(t, 3, u.Count)
		require.Equal(t, []int{1, 2, 3}, sunk, "the sink's calls")
		var dead []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl.Payload().(Order).N)
		}
		require.Equal(t, []int{1, 2, 3}, dead, "the dead letters held")
	})
}

// TestDeadLetterSinkPanics has the sink panic, or call runtime.Goexit in
// Sync mode, where it runs for the publisher: the dead letter is held, the
// failure counts as the sink's error, and the bus goes on (in Async mode,
// a panic in the worker's goroutine would end the process).
func TestDeadLetterSinkPanics(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mode   eventbus.Mode
		goexit bool
	}{
		{name: "async panic", mode: eventbus.Async},
		{name: "sync panic", mode: eventbus.Sync},
		{name: "sync goexit", mode: eventbus.Sync, goexit: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				calls := 0
				sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error {
					calls++
					if tt.goexit {
						runtime.Goexit()
					}
					panic("sink broke")
				})
				b := newBus(t, &eventbus.Options{Workers: 1, Mode: tt.mode, DeadLetterSink: sink})
				topic := newTopic[Order](t, b, "orders", nil)
				var handled []int
				subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
					if e.Payload.N == 1 {
						return errFlaky
					}
					handled = append(handled, e.Payload.N)
					return nil
				}, nil)
				ctx := context.Background()
				for n := range 3 {
					err := topic.Publish(ctx, Order{Key: "k", N: n})
					if tt.mode == eventbus.Sync && n == 1 {
						require.ErrorIs(t, err, errFlaky)
						continue
					}
					require.NoError(t, err)
				}
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, []int{0, 2}, handled)
				require.Equal(t, 1, calls, "the sink's calls")
				require.Equal(t, 1, b.DeadLetters().Len(), "the dead letters held")
				_, sinkErrs := b.DeadLetters().Evicted()
				require.EqualValues(t, 1, sinkErrs, "the failure counts as the sink's error")
			})
		})
	}
}

// queueError is a handler's error whose Is method calls back into the
// dead-letter queue, as an Is method that logs through a handler of the
// bus might; a nil one panics there instead.
type queueError struct{ q *eventbus.DeadLetterQueue }

func (e *queueError) Error() string { return "queue error" }

func (e *queueError) Is(error) bool { return e.q.Len() < 0 }

// TestDeadLetterFilterCallsNoUserCodeLocked checks that All, Discard and
// Redrive match DeadLetterFilter.Err without the queue's lock held, as the
// queue's doc comment promises: errors.Is runs the methods of the handlers'
// errors, here one that reads the queue, which waited for its own lock, and
// one that panics, which left the lock held, so that the next dead letter
// stopped its worker for good (such an error now matches nothing, see
// TestDeadLetterFilterBrokenError).
func TestDeadLetterFilterCallsNoUserCodeLocked(t *testing.T) {
	b := newBus(t, &eventbus.Options{Workers: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
		if e.Payload.N == 0 {
			return (*queueError)(nil)
		}
		return &queueError{q: b.DeadLetters()}
	}, nil)
	ctx := context.Background()
	require.NoError(t, topic.Publish(ctx, Order{N: 1}))
	require.NoError(t, b.Flush(ctx))
	only := eventbus.DeadLetterFilter{Err: errFlaky}
	for name, call := range map[string]func(){
		"All":     func() { collect(b.DeadLetters(), only) },
		"Discard": func() { b.DeadLetters().Discard(only) },
		"Redrive": func() { _, _ = b.DeadLetters().Redrive(ctx, only) },
	} {
		done := make(chan struct{})
		go func() { defer close(done); call() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s waits for the queue's lock, which it holds", name)
		}
	}
	require.Equal(t, 1, b.DeadLetters().Len(), "matched by none")

	require.NoError(t, topic.Publish(ctx, Order{N: 0}))
	require.NoError(t, b.Flush(ctx))
	require.Empty(t, collect(b.DeadLetters(), only), "the nil error's Is method panics: matched by none")
	require.NoError(t, topic.Publish(ctx, Order{N: 2}))
	flushed, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, b.Flush(flushed), "the worker waits for the queue's lock")
	require.Equal(t, 3, b.DeadLetters().Len())
}

// goexitOnFirst returns a dead-letter sink that appends each dead letter's
// Order.N to sunk and calls runtime.Goexit on the first.
func goexitOnFirst(sunk *[]int) eventbus.DeadLetterSink {
	return eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
		*sunk = append(*sunk, dl.Payload().(Order).N)
		if len(*sunk) == 1 {
			runtime.Goexit()
		}
		return nil
	})
}

// clockAt returns a fake clock reading t0, a time that a synctest bubble's
// clock, which starts where an eventbustest.Clock does, never shows: a
// time taken from the bubble's clock instead fails the checks.
func clockAt(t0 time.Time) *eventbustest.Clock {
	clk := new(eventbustest.Clock)
	clk.Advance(t0.Sub(clk.Now()))
	return clk
}

// TestDeadLetterTimesFollowClock checks that a dead letter's failure times
// come from Options.Clock, as its events' times do, on every path to the
// dead-letter queue: a first attempt, retries in Async and Sync mode, a
// handler's runtime.Goexit, and an event abandoned by Close. Each attempt
// moves the fake clock on by an hour before it fails.
func TestDeadLetterTimesFollowClock(t *testing.T) {
	t0 := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	tests := []struct {
		name     string
		mode     eventbus.Mode
		attempts int
		goexit   bool
	}{
		{"async first attempt", eventbus.Async, 1, false},
		{"async retries", eventbus.Async, 3, false},
		{"sync retries", eventbus.Sync, 3, false},
		{"async goexit", eventbus.Async, 1, true},
		{"async goexit on retry", eventbus.Async, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clk := clockAt(t0)
				b := newBus(t, &eventbus.Options{Mode: tt.mode, Clock: clk.Now,
					Retry: eventbus.RetryPolicy{MaxAttempts: tt.attempts}})
				topic := newTopic[Order](t, b, "orders", nil)
				calls := 0
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
					clk.Advance(time.Hour)
					if calls++; tt.goexit && calls == tt.attempts {
						runtime.Goexit()
					}
					return errFlaky
				}, nil)
				_ = topic.Publish(context.Background(), Order{Key: "k"})
				if tt.mode == eventbus.Async {
					require.NoError(t, b.Flush(context.Background()))
				}
				dl, ok := firstDeadLetter(b)
				require.True(t, ok)
				if dl.FirstFailure != t0.Add(time.Hour) || dl.LastFailure != t0.Add(time.Duration(tt.attempts)*time.Hour) {
					t.Errorf("failures at %v and %v, want %v and %v", dl.FirstFailure, dl.LastFailure,
						t0.Add(time.Hour), t0.Add(time.Duration(tt.attempts)*time.Hour))
				}
			})
		})
	}
	t.Run("abandoned", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			clk := clockAt(t0)
			b, err := eventbus.New(&eventbus.Options{Workers: 1, Clock: clk.Now})
			require.NoError(t, err)
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				<-ctx.Done() // until Close
				return nil
			}, nil)
			ctx := context.Background()
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 1}))
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 2}))
			synctest.Wait()
			clk.Advance(time.Hour)
			var ue *eventbus.UndeliveredError
			require.ErrorAs(t, b.Close(), &ue)
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			require.Equal(t, 2, dl.Payload().(Order).N)
			if want := t0.Add(time.Hour); dl.FirstFailure != want || dl.LastFailure != want {
				t.Errorf("failures at %v and %v, want %v", dl.FirstFailure, dl.LastFailure, want)
			}
		})
	})
}

// TestRedriveToReusedName unsubscribes a subscription with a dead letter
// and subscribes again under its name, as a redeploy of a handler does:
// Redrive sends the old dead letter, and the new subscription's own, to the
// subscription of that name, oldest first, where it stopped at the old one
// with ErrClosed and so never sent the new one either.
func TestRedriveToReusedName(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(modeName[mode], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: mode})
				topic := newTopic[Order](t, b, "orders", nil)
				ctx := context.Background()
				old := subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
				_ = topic.Publish(ctx, Order{Key: "k", N: 1}) // fails in Sync mode
				require.NoError(t, b.Flush(ctx))
				require.NoError(t, old.Unsubscribe(ctx))
				fixed := false
				var handled []int
				subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
					if !fixed {
						return errFlaky
					}
					handled = append(handled, e.Payload.N)
					return nil
				}, nil)
				_ = topic.Publish(ctx, Order{Key: "k", N: 2})
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, []string{"orders/s/1", "orders/s/2"}, collect(b.DeadLetters(), eventbus.DeadLetterFilter{}))
				fixed = true
				n, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{Subscription: "s"})
				require.NoError(t, err)
				require.Equal(t, 2, n)
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, []int{1, 2}, handled)
				require.Zero(t, b.DeadLetters().Len())
			})
		})
	}
}

// errorLog is a slog.Handler that keeps the "error" attributes it is given.
type errorLog struct {
	mu   *sync.Mutex
	errs *[]error
}

func (h errorLog) Enabled(context.Context, slog.Level) bool { return true }
func (h errorLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "error" {
			h.mu.Lock()
			*h.errs = append(*h.errs, err)
			h.mu.Unlock()
		}
		return true
	})
	return nil
}
func (h errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errorLog) WithGroup(string) slog.Handler      { return h }

// TestGoexitMatchesErrGoexit checks that the error of a runtime.Goexit
// matches ErrGoexit wherever it shows: a handler's dead letter, which a
// DeadLetterFilter selects apart from a panic's, the Logging middleware's
// report, the bus's report of the dead letter, and a dead-letter sink's
// error in the bus's log.
func TestGoexitMatchesErrGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var logged []error
		log := slog.New(errorLog{&mu, &logged})
		sunk := 0
		sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error {
			if sunk++; sunk == 3 {
				runtime.Goexit()
			}
			return nil
		})
		b := newBus(t, &eventbus.Options{Workers: 1, DeadLetterSink: sink, Logger: log})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			switch e.Payload.N {
			case 1:
				runtime.Goexit()
			case 2:
				panic("boom")
			}
			return errFlaky
		}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{eventbus.Logging(log)}})
		ctx := context.Background()
		for n := 1; n <= 3; n++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		var goexits []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: eventbus.ErrGoexit}) {
			goexits = append(goexits, dl.Payload().(Order).N)
		}
		require.Equal(t, []int{1}, goexits, "the dead letters of a Goexit")
		mu.Lock()
		defer mu.Unlock()
		// Each event's failed attempt, by Logging, then its dead letter,
		// by the bus's report; the sink's error last.
		require.Len(t, logged, 7, "three attempts, three dead letters, one sink error")
		for i, want := range []bool{true, true, false, false, false, false, true} {
			if got := errors.Is(logged[i], eventbus.ErrGoexit); got != want {
				t.Errorf("errors.Is(%v, ErrGoexit) = %v, want %v", logged[i], got, want)
			}
		}
	})
}

// TestFailedRedriveKeepsOrder fails a Redrive of some dead letters, those
// of a subscription gone, with older ones of another left in the queue:
// the unsent ones go back to their places, so that All still lists the
// queue oldest first and a full queue still evicts its oldest entry.
func TestFailedRedriveKeepsOrder(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 3})
	orders := newTopic[Order](t, b, "orders", nil)
	refunds := newTopic[Order](t, b, "refunds", nil)
	failing := func(context.Context, eventbus.Event[Order]) error { return errFlaky }
	subscribe(t, orders, "s", failing, nil)
	refund := subscribe(t, refunds, "s", failing, nil)
	ctx := context.Background()
	require.ErrorIs(t, orders.Publish(ctx, Order{N: 1}), errFlaky)
	require.ErrorIs(t, refunds.Publish(ctx, Order{N: 2}), errFlaky)
	require.ErrorIs(t, refunds.Publish(ctx, Order{N: 3}), errFlaky)
	require.NoError(t, refund.Unsubscribe(ctx))
	q := b.DeadLetters()

	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{Topic: "refunds"})
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.Zero(t, n)
	want := []string{"orders/s/1", "refunds/s/2", "refunds/s/3"}
	if diff := cmp.Diff(want, collect(q, eventbus.DeadLetterFilter{})); diff != "" {
		t.Errorf("All after a failed Redrive (-want +got):\n%s", diff)
	}

	require.ErrorIs(t, orders.Publish(ctx, Order{N: 4}), errFlaky)
	want = []string{"refunds/s/2", "refunds/s/3", "orders/s/4"}
	if diff := cmp.Diff(want, collect(q, eventbus.DeadLetterFilter{})); diff != "" {
		t.Errorf("All once full (-want +got):\n%s", diff)
	}
}

// TestSyncRedriveGoexitKeepsDeadLetters redrives three dead letters of a
// Sync-mode topic whose handler calls runtime.Goexit for the first: that
// ends Redrive's goroutine, as it ends a publisher's, but the dead letter
// it was handling and the two not sent yet stay in the queue, in order.
func TestSyncRedriveGoexitKeepsDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
		orders := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		fixed := false
		subscribe(t, orders, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			if !fixed {
				return errFlaky
			}
			if e.Payload.N == 1 {
				runtime.Goexit()
			}
			return nil
		}, nil)
		ctx := context.Background()
		for i := 1; i <= 3; i++ {
			require.ErrorIs(t, orders.Publish(ctx, Order{N: i}), errFlaky)
		}
		mu.Lock()
		fixed = true
		mu.Unlock()
		q := b.DeadLetters()
		returned := false
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = q.Redrive(ctx, eventbus.DeadLetterFilter{})
			returned = true
		}()
		<-done
		require.False(t, returned, "the handler's Goexit ended Redrive's goroutine")
		want := []string{"orders/s/1", "orders/s/2", "orders/s/3"}
		if diff := cmp.Diff(want, collect(q, eventbus.DeadLetterFilter{})); diff != "" {
			t.Errorf("All after a Redrive ended by Goexit (-want +got):\n%s", diff)
		}
	})
}

// TestNilDeadLetterFunc checks that New refuses a nil DeadLetterFunc as
// the sink, with an error wrapping ErrInvalid that names the option, and
// that Put on one returns such an error: New took it, and each dead letter
// then failed the sink with a *PanicError of a nil func call, counted and
// logged, which held a durable subscription's checkpoint back for good.
func TestNilDeadLetterFunc(t *testing.T) {
	var f eventbus.DeadLetterFunc
	b, err := eventbus.New(&eventbus.Options{DeadLetterSink: f})
	if b != nil {
		require.NoError(t, b.Close())
	}
	if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "Options.DeadLetterSink") {
		t.Errorf("New(Options{DeadLetterSink: nil DeadLetterFunc}) = %v, want ErrInvalid naming Options.DeadLetterSink", err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Put on a nil DeadLetterFunc panicked: %v", r)
			}
		}()
		if err := f.Put(context.Background(), eventbus.DeadLetter{}); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Put on a nil DeadLetterFunc = %v, want ErrInvalid", err)
		}
	}()
}

// TestLoggerWithoutHandler checks that New refuses a Logger that has no
// Handler (a zero slog.Logger, which slog.New never makes), with an error
// wrapping ErrInvalid that names the option: New took it, and the first
// report then panicked in the goroutine that made it, a worker whose sink
// failed, which ended the process.
func TestLoggerWithoutHandler(t *testing.T) {
	b, err := eventbus.New(&eventbus.Options{Logger: new(slog.Logger)})
	if b != nil {
		require.NoError(t, b.Close())
	}
	if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "Options.Logger") {
		t.Errorf("New(Options{Logger: new(slog.Logger)}) = %v, want ErrInvalid naming Options.Logger", err)
	}
}

// TestDeadLetterFilterBrokenError has a handler panic with an error whose
// Unwrap panics, and filters the dead letters by Err: errors.Is walked
// that error in the caller's goroutine, and the caller panicked. Such a
// dead letter now matches no Err, and the others are selected as before.
func TestDeadLetterFilterBrokenError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 0 {
				panic(brokenError{})
			}
			return eventbus.Permanent(errFlaky)
		}, nil)
		ctx := context.Background()
		for n := range 2 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		var flaky []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: errFlaky}) {
			flaky = append(flaky, dl.Payload().(Order).N)
		}
		require.Equal(t, []int{1}, flaky)
		require.Equal(t, 2, b.DeadLetters().Len())
	})
}

// TestFailedRedriveCountsEveryEviction checks that a failed Redrive whose
// unsent dead letters come back to a queue that the dead letters made
// meanwhile filled counts each one it evicts then: two over the bound go
// at once, and Evicted (and Metrics) counted the two as one.
func TestFailedRedriveCountsEveryEviction(t *testing.T) {
	// One failed order makes three dead letters: its two audits' and its own.
	b, orders, refunds, refund := failingOrders(t, 3, 2)
	ctx := context.Background()
	require.ErrorIs(t, orders.Publish(ctx, Order{N: 1}), errFlaky)
	require.ErrorIs(t, refunds.Publish(ctx, Order{N: 2}), errFlaky)
	require.ErrorIs(t, refunds.Publish(ctx, Order{N: 3}), errFlaky)
	q := b.DeadLetters()
	require.Equal(t, []string{"orders/s/1", "refunds/s/2", "refunds/s/3"}, collect(q, eventbus.DeadLetterFilter{}))
	evicted, _ := q.Evicted()
	require.EqualValues(t, 2, evicted, "the first two audits' dead letters")
	require.NoError(t, refund.Unsubscribe(ctx))

	// The order goes and fails again (three new dead letters, filling the
	// queue); the refunds' subscription is gone, so both come back, the
	// oldest, and go at once.
	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{})
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.Equal(t, 1, n)
	require.Equal(t, []string{"audits/s/1", "audits/s/1", "orders/s/1"}, collect(q, eventbus.DeadLetterFilter{}))
	evicted, _ = q.Evicted()
	if evicted != 4 {
		t.Errorf("Evicted() = %d after the failed Redrive, want 4: the two audits', then both refunds'", evicted)
	}
	if got := b.Metrics().DeadLetters.Evicted; got != 4 {
		t.Errorf("Metrics().DeadLetters.Evicted = %d, want 4", got)
	}
}

// TestRedriveWaitingForRoomEndsWithContext redrives dead letters into a
// full queue in Async mode: Redrive waits for room, as Publish does, and
// when its context ends first it returns that context's error, naming the
// dead letter, having sent none, and every dead letter is back in its
// place; once there is room, a Redrive sends them all.
func TestRedriveWaitingForRoomEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		release := make(chan struct{})
		var handled []int
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 10 {
				<-release // holds the worker while 11 fills its queue
			}
			handled = append(handled, e.Payload.N)
			if e.Payload.N < 10 && len(handled) <= 3 {
				return errFlaky // dead-lettered the first time
			}
			return nil
		}, nil)
		ctx := context.Background()
		for n := 1; n <= 3; n++ {
			require.NoError(t, topic.Publish(ctx, Order{N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		q := b.DeadLetters()
		want := []string{"orders/s/1", "orders/s/2", "orders/s/3"}
		require.Equal(t, want, collect(q, eventbus.DeadLetterFilter{}))

		require.NoError(t, topic.Publish(ctx, Order{N: 10}))
		synctest.Wait() // 10's handler holds the worker
		require.NoError(t, topic.Publish(ctx, Order{N: 11}))
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var first eventbus.ID
		for dl := range q.All(eventbus.DeadLetterFilter{}) {
			first = dl.ID
			break
		}
		n, err := q.Redrive(short, eventbus.DeadLetterFilter{})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, first.String(), "names the dead letter it waited to send")
		require.Zero(t, n)
		require.Equal(t, want, collect(q, eventbus.DeadLetterFilter{}), "all back in their places")

		close(release)
		require.NoError(t, b.Flush(ctx))
		n, err = q.Redrive(ctx, eventbus.DeadLetterFilter{})
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.NoError(t, b.Flush(ctx))
		require.Zero(t, q.Len())
		require.Equal(t, []int{1, 2, 3, 10, 11, 1, 2, 3}, handled)
	})
}

// TestDeadLetterSinkFailureLogNamesTopic fails a dead-letter sink on a
// bus with a Logger: the warning names the topic as well as the
// subscription, as the Logging middleware's reports do, so that two
// topics' subscriptions of one name are told apart.
func TestDeadLetterSinkFailureLogNamesTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errFlaky })
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterSink: sink, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "mailer", func(context.Context, eventbus.Event[Order]) error { return eventbus.Permanent(errFlaky) }, nil)
		require.Error(t, topic.Publish(context.Background(), Order{Key: "k"}))
		recs := logRecords(t, &buf)
		require.Len(t, recs, 2, "the dead letter's report, then the sink's failure")
		if rec := recs[1]; rec["topic"] != "orders" || rec["subscription"] != "mailer" {
			t.Errorf("dead-letter sink failure logged topic %v, subscription %v; want orders, mailer", rec["topic"], rec["subscription"])
		}
	})
}

// TestDeadLetterQueueGet looks up each dead letter of a subscription by
// its event's ID: Get finds that one, not the subscription's first, and
// finds nothing for an ID that no dead letter has, or once its dead letter
// is evicted. The other tests looked up only the oldest dead letter, which
// a Get that matched the subscription alone found too.
func TestDeadLetterQueueGet(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 3})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	ctx := context.Background()
	for n := range 3 {
		require.ErrorIs(t, topic.Publish(ctx, Order{Key: "k", N: n}), errFlaky)
	}
	q := b.DeadLetters()
	var ids []eventbus.ID
	for dl := range q.All(eventbus.DeadLetterFilter{}) {
		ids = append(ids, dl.ID)
	}
	require.Len(t, ids, 3)
	for n, id := range ids {
		dl, ok := q.Get("s", id)
		if !ok || dl.ID != id || dl.Payload().(Order).N != n {
			t.Errorf("Get(s, %v) = order %v (ok %v), want order %d", id, dl.Payload(), ok, n)
		}
	}
	if dl, ok := q.Get("s", eventbus.NewID()); ok {
		t.Errorf("Get(s, an unknown ID) = order %v, want none", dl.Payload())
	}
	require.ErrorIs(t, topic.Publish(ctx, Order{Key: "k", N: 3}), errFlaky) // evicts order 0
	if dl, ok := q.Get("s", ids[0]); ok {
		t.Errorf("Get(s, %v) = order %v, want none: evicted", ids[0], dl.Payload())
	}
}

// TestDeadLetterSinkFailureLogNamesEvent fails a dead-letter sink on a bus
// with a Logger: the warning names the dead letter's event by its ID, the
// one handle on it (Get, and the sink's own records), and carries the
// sink's error. No test read the ID, so a warning without it, or with
// another event's, passed.
func TestDeadLetterSinkFailureLogNamesEvent(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			errSink := errors.New("sink down")
			sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errSink })
			b := newBus(t, &eventbus.Options{Mode: mode, DeadLetterSink: sink, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "mailer", func(context.Context, eventbus.Event[Order]) error { return eventbus.Permanent(errFlaky) }, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k"})
			require.NoError(t, b.Flush(context.Background()))
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			recs := logRecords(t, &buf)
			require.Len(t, recs, 2, "the dead letter's report, then the sink's failure")
			if rec := recs[0]; rec["level"] != "ERROR" || rec["msg"] != "eventbus: event dead-lettered" ||
				rec["id"] != dl.ID.String() || rec["subscription"] != "mailer" || rec["key"] != "k" ||
				rec["attempts"] != 1.0 || rec["correlation_id"] != dl.CorrelationID.String() || rec["error"] != dl.Err.Error() {
				t.Errorf("the dead letter's report = %v; want it at ERROR, naming %v of mailer, key k, 1 attempt, its correlation ID and error", rec, dl.ID)
			}
			if rec := recs[1]; rec["id"] != dl.ID.String() || rec["error"] != errSink.Error() {
				t.Errorf("dead-letter sink failure logged id %v, error %v; want %v, %v", rec["id"], rec["error"], dl.ID, errSink)
			}
		})
	})
}

// logRecords decodes the records of a slog.JSONHandler's output.
func logRecords(t *testing.T, r io.Reader) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for dec := json.NewDecoder(r); dec.More(); {
		var rec map[string]any
		require.NoError(t, dec.Decode(&rec), "the log")
		recs = append(recs, rec)
	}
	return recs
}

// TestDeadLetterSinkPanicLogged has a dead-letter sink panic: the bus's log
// reports it as a *PanicError that carries the value the sink panicked
// with and the stack of the sink's goroutine at the panic, as a handler's
// panic does, so that the failure can be traced to its line. The tests saw
// only the sink's error counted, which an error without the value or the
// stack passed.
func TestDeadLetterSinkPanicLogged(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var mu sync.Mutex
			var logged []error
			errBroke := errors.New("sink broke")
			sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { panicInSink(errBroke); return nil })
			b := newBus(t, &eventbus.Options{Mode: mode, DeadLetterSink: sink, Logger: slog.New(errorLog{&mu, &logged})})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return eventbus.Permanent(errFlaky) }, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k"})
			require.NoError(t, b.Flush(context.Background()))
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, logged, 2, "the dead letter's error, then the sink's")
			require.ErrorIs(t, logged[0], errFlaky, "the dead letter's error")
			var pe *eventbus.PanicError
			require.ErrorAs(t, logged[1], &pe)
			if pe.Value != errBroke {
				t.Errorf("PanicError.Value = %v, want %v", pe.Value, errBroke)
			}
			require.ErrorIs(t, logged[1], errBroke, "a panic with an error matches it")
			if !bytes.Contains(pe.Stack, []byte("panicInSink")) {
				t.Errorf("PanicError.Stack does not show the sink's panic:\n%s", pe.Stack)
			}
		})
	})
}

// TestLoggerFailureLosesOnlyTheReport gives the bus a Logger whose
// Handler panics, or calls runtime.Goexit, and a sink that fails, so that
// the bus reports each dead letter to the logger, from the worker or the
// publisher: the report is lost, and nothing else. The panic went on
// through the worker and ended the process; the Goexit ended the worker
// for good, since the salvage of its events reported to the logger again,
// so that Flush, and Close, waited for it forever; in Sync mode Publish
// panicked, or never returned, and kept no dead letter.
func TestLoggerFailureLosesOnlyTheReport(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		for _, goexit := range []bool{false, true} {
			t.Run(fmt.Sprint("goexit=", goexit), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("sink down") })
					b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1, Metrics: true, DeadLetterSink: sink, Logger: slog.New(brokenLog{goexit})})
					topic := newTopic[Order](t, b, "orders", nil)
					var handled []int
					subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
						handled = append(handled, e.Payload.N)
						if e.Payload.N == 1 {
							return eventbus.Permanent(errFlaky)
						}
						return nil
					}, nil)
					ctx := context.Background()
					err := topic.Publish(ctx, Order{Key: "k", N: 1})
					if mode == eventbus.Sync {
						require.ErrorIs(t, err, errFlaky)
					}
					require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 2}))
					require.NoError(t, b.Flush(ctx))
					require.Equal(t, []int{1, 2}, handled, "the events handled")
					require.Equal(t, 1, b.DeadLetters().Len(), "the dead letters")
					_, sinkErrs := b.DeadLetters().Evicted()
					require.Equal(t, uint64(1), sinkErrs)
					m := b.Metrics().Subscriptions[0]
					require.Equal(t, [2]uint64{1, 1}, [2]uint64{m.Handled, m.DeadLettered}, "Handled and DeadLettered")
				})
			})
		}
	})
}

// TestShutdownLoggerFailureLosesOnlyTheReport closes a bus whose Logger
// panics, or calls runtime.Goexit, when Close reports the events it
// abandoned: Close returns its *UndeliveredError all the same. It went on
// to Close's caller.
func TestShutdownLoggerFailureLosesOnlyTheReport(t *testing.T) {
	for _, goexit := range []bool{false, true} {
		t.Run(fmt.Sprint("goexit=", goexit), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, Logger: slog.New(brokenLog{goexit})})
				topic := newTopic[Order](t, b, "orders", nil)
				subscribe(t, topic, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
					<-ctx.Done()
					return ctx.Err()
				}, nil)
				for i := range 3 {
					require.NoError(t, topic.Publish(context.Background(), Order{N: i}))
				}
				synctest.Wait() // the first event's handler waits for the stop
				var ue *eventbus.UndeliveredError
				require.ErrorAs(t, b.Close(), &ue)
				require.Equal(t, 2, ue.Count)
			})
		})
	}
}

// TestLoggerReportNamesItsSource gives the bus a Logger and a sink that
// fails: the report of the failure names, as its source, the code that
// reports it, the dead-letter queue's, as an slog.HandlerOptions.AddSource
// shows it. Every report of the bus's named the goroutine that calls the
// Logger's Handler.
func TestLoggerReportNamesItsSource(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		files := make(chan string, 2)
		sink := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("sink down") })
		b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1, DeadLetterSink: sink, Logger: slog.New(sourceLog{files})})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return eventbus.Permanent(errFlaky) }, nil)
		_ = topic.Publish(context.Background(), Order{N: 1})
		for _, report := range []string{"the dead letter", "the sink's failure"} {
			if file := <-files; !strings.HasSuffix(file, "/dlq.go") {
				t.Errorf("the report of %s names %s as its source, want dlq.go", report, file)
			}
		}
	})
}

// sourceLog is a slog.Handler that sends the file of each record's source
// to files.
type sourceLog struct{ files chan<- string }

func (sourceLog) Enabled(context.Context, slog.Level) bool { return true }
func (h sourceLog) Handle(_ context.Context, r slog.Record) error {
	f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
	h.files <- f.File
	return nil
}
func (h sourceLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h sourceLog) WithGroup(string) slog.Handler      { return h }

// brokenLog is a slog.Handler that panics at every record, or with goexit
// calls runtime.Goexit, as t.FailNow in a test's handler does.
type brokenLog struct{ goexit bool }

func (brokenLog) Enabled(context.Context, slog.Level) bool { return true }
func (h brokenLog) Handle(context.Context, slog.Record) error {
	if h.goexit {
		runtime.Goexit()
	}
	panic("log handler broke")
}
func (h brokenLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h brokenLog) WithGroup(string) slog.Handler      { return h }

// panicInSink panics with v, from a frame of its own name, for a test to
// find in a stack.
//
//go:noinline
func panicInSink(v any) { panic(v) }

// TestRedriveGoesOnPastGoneSubscription redrives every dead letter of a
// topic one of whose subscriptions is gone: the dead letters of the gone
// one stay, in order, and the others are sent. Redrive stopped at the
// first one that could not be sent, so that one dead letter of a removed
// subscription held back every later dead letter of the bus, run after
// run, until it was discarded.
func TestRedriveGoesOnPastGoneSubscription(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders", nil)
	fixed := false // Sync mode: handlers run in this goroutine
	var handled []int
	failing := func(_ context.Context, e eventbus.Event[Order]) error {
		if !fixed {
			return errFlaky
		}
		handled = append(handled, e.Payload.N)
		return nil
	}
	old := subscribe(t, orders, "old", failing, nil)
	subscribe(t, orders, "live", failing, nil)
	ctx := context.Background()
	for n := 1; n <= 2; n++ {
		require.ErrorIs(t, orders.Publish(ctx, Order{N: n}), errFlaky)
	}
	q := b.DeadLetters()
	require.Equal(t, []string{"orders/old/1", "orders/live/1", "orders/old/2", "orders/live/2"}, collect(q, eventbus.DeadLetterFilter{}))
	var first eventbus.DeadLetter
	for dl := range q.All(eventbus.DeadLetterFilter{Subscription: "old"}) {
		first = dl
		break
	}
	require.NoError(t, old.Unsubscribe(ctx))
	fixed = true

	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{})
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.ErrorContains(t, err, first.ID.String())
	require.Equal(t, 2, n, "dead letters sent")
	require.Equal(t, []int{1, 2}, handled, "the live subscription's events")
	require.Equal(t, []string{"orders/old/1", "orders/old/2"}, collect(q, eventbus.DeadLetterFilter{}))
}

// TestDeadLetterFilterID picks out the dead letters of one event by its
// ID, among others that share its error, to redrive and discard them
// alone.
func TestDeadLetterFilterID(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders", nil)
	fixed := false // Sync mode: handlers run in this goroutine
	var handled []string
	handler := func(name string) eventbus.Handler[Order] {
		return func(_ context.Context, e eventbus.Event[Order]) error {
			if !fixed {
				return errFlaky
			}
			handled = append(handled, fmt.Sprintf("%s/%d", name, e.Payload.N))
			return nil
		}
	}
	subscribe(t, orders, "a", handler("a"), nil)
	subscribe(t, orders, "b", handler("b"), nil)
	ctx := context.Background()
	for n := 1; n <= 3; n++ {
		require.ErrorIs(t, orders.Publish(ctx, Order{N: n}), errFlaky)
	}
	q := b.DeadLetters()
	var ids []eventbus.ID
	for dl := range q.All(eventbus.DeadLetterFilter{Subscription: "a"}) {
		ids = append(ids, dl.ID)
	}
	require.Len(t, ids, 3)
	require.Equal(t, []string{"orders/a/2", "orders/b/2"}, collect(q, eventbus.DeadLetterFilter{ID: ids[1]}))

	fixed = true
	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{ID: ids[1], Subscription: "b"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []string{"b/2"}, handled)
	require.Equal(t, 2, q.Discard(eventbus.DeadLetterFilter{ID: ids[0]}))
	require.Equal(t, []string{"orders/a/2", "orders/a/3", "orders/b/3"}, collect(q, eventbus.DeadLetterFilter{}))
}

// TestRedriveContextEndsAtGoneSubscription ends Redrive's context while
// it sends a dead letter, and has the next one's subscription gone:
// Redrive stops there, and its error says that the context stopped it, as
// well as naming the gone subscription's dead letter. It said only the
// latter, so a caller took the dead letters left behind for those of the
// gone subscription alone.
func TestRedriveContextEndsAtGoneSubscription(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fixed := false // Sync mode: handlers run in this goroutine
	var handled []int
	subscribe(t, orders, "live", func(_ context.Context, e eventbus.Event[Order]) error {
		if !fixed {
			return errFlaky
		}
		handled = append(handled, e.Payload.N)
		cancel() // the caller gives up after the first
		return nil
	}, nil)
	old := subscribe(t, orders, "old", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	for n := 1; n <= 2; n++ {
		require.ErrorIs(t, orders.Publish(context.Background(), Order{N: n}), errFlaky)
	}
	q := b.DeadLetters()
	require.Equal(t, []string{"orders/live/1", "orders/old/1", "orders/live/2", "orders/old/2"}, collect(q, eventbus.DeadLetterFilter{}))
	require.NoError(t, old.Unsubscribe(context.Background()))
	fixed = true

	n, err := q.Redrive(ctx, eventbus.DeadLetterFilter{})
	require.Equal(t, 1, n, "dead letters sent")
	require.Equal(t, []int{1}, handled)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Redrive = %v, want an error matching context.Canceled (it stopped Redrive) and ErrClosed (the gone subscription)", err)
	}
	require.Equal(t, []string{"orders/old/1", "orders/live/2", "orders/old/2"}, collect(q, eventbus.DeadLetterFilter{}))
}

// TestRedriveWithEndedContextSendsNothing redrives a dead letter with a
// context that has already ended, in both modes: nothing is sent, the
// dead letter stays, and Redrive returns the context's error. In Async
// mode it was queued anyway whenever its queue had room.
func TestRedriveWithEndedContextSendsNothing(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b, calls := oneDeadLetter(t, mode)
			ctx := context.Background()
			ended, cancel := context.WithCancel(ctx)
			cancel()
			n, err := b.DeadLetters().Redrive(ended, eventbus.DeadLetterFilter{})
			require.ErrorIs(t, err, context.Canceled)
			require.Zero(t, n)
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, 1, *calls, "attempts: none after the Redrive")
			require.Equal(t, 1, b.DeadLetters().Len(), "the dead letter stays")
		})
	})
}
