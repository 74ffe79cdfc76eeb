package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
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
