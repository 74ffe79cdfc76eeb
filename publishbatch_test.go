package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// orders returns payloads N from..to-1, all with key.
func orders(key string, from, to int) []Order {
	var os []Order
	for n := from; n < to; n++ {
		os = append(os, Order{Key: key, N: n})
	}
	return os
}

// recorder records the N of each event its handler gets.
type recorder struct {
	mu  sync.Mutex
	got []int
}

func (r *recorder) handle(_ context.Context, e eventbus.Event[Order]) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, e.Payload.N)
	return nil
}

func (r *recorder) ns() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// TestPublishBatchOrderPerKeyExactlyOnce publishes batches of random sizes,
// larger and smaller than the queues, from 3 publishers with their own keys
// to 2 subscriptions of 4 workers: each subscription must see every event
// once, in the order given per key.
func TestPublishBatchOrderPerKeyExactlyOnce(t *testing.T) {
	const publishers, keys, perKey = 3, 30, 400
	b := newBus(t, &eventbus.Options{Workers: 4, QueueSize: 16})
	topic := newTopic[Order](t, b, "orders", nil)
	var mu sync.Mutex
	seen := map[string]map[string][]int{} // subscription, key: N in handled order
	for _, name := range []string{"a", "b"} {
		seen[name] = map[string][]int{}
		subscribe(t, topic, name, func(_ context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			seen[name][e.Key] = append(seen[name][e.Key], e.Payload.N)
			return nil
		}, nil)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			// Round-robin over the publisher's keys, so that each batch
			// holds many keys and queues.
			var all []Order
			for n := range perKey {
				for k := p; k < keys; k += publishers {
					all = append(all, Order{Key: fmt.Sprint("k", k), N: n})
				}
			}
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for len(all) > 0 {
				size := min(len(all), 1+rng.IntN(200))
				n, err := topic.PublishBatch(ctx, all[:size])
				if err != nil || n != size {
					t.Errorf("PublishBatch(%d events) = %d, %v", size, n, err)
					return
				}
				all = all[size:]
			}
		})
	}
	wg.Wait()
	require.NoError(t, b.Flush(ctx))
	for name, byKey := range seen {
		require.Len(t, byKey, keys, name)
		for key, ns := range byKey {
			for i, n := range ns {
				if n != i {
					t.Fatalf("subscription %s, key %s: got N %v, want 0..%d in order", name, key, ns, perKey-1)
				}
			}
			require.Len(t, ns, perKey, "subscription %s, key %s", name, key)
		}
	}
}

// TestPublishBatchEnvelope checks that PublishBatch stamps each event as
// Publish would, with one subscription (whose worker numbers the events)
// and with two (where the publisher does), and applies the options to
// every event.
func TestPublishBatchEnvelope(t *testing.T) {
	for _, subs := range []int{1, 2} {
		t.Run(fmt.Sprint(subs, " subscriptions"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, nil)
				topic := newTopic(t, b, "orders", &eventbus.TopicOptions[Order]{SchemaVersion: 2})
				var mu sync.Mutex
				got := map[string][]eventbus.Event[Order]{}
				for i := range subs {
					name := fmt.Sprint("s", i)
					subscribe(t, topic, name, func(_ context.Context, e eventbus.Event[Order]) error {
						mu.Lock()
						defer mu.Unlock()
						got[name] = append(got[name], e)
						return nil
					}, nil)
				}
				start := time.Now()
				md := eventbus.Metadata{"tenant": "acme"}
				n, err := topic.PublishBatch(context.Background(), []Order{{Key: "a", N: 1}, {Key: "b", N: 2}}, eventbus.WithMetadata(md))
				require.NoError(t, err)
				require.Equal(t, 2, n)
				require.NoError(t, b.Flush(context.Background()))
				first := got["s0"]
				require.Len(t, first, 2)
				slices.SortFunc(first, func(x, y eventbus.Event[Order]) int { return x.Payload.N - y.Payload.N })
				require.NotEqual(t, first[0].ID, first[1].ID)
				for i, e := range first {
					want := eventbus.Event[Order]{
						Header: eventbus.Header{
							ID: e.ID, Type: "Order", Topic: "orders", Key: e.Payload.Key, Time: start,
							SchemaVersion: 2, CorrelationID: e.ID, Metadata: md,
						},
						Payload: Order{Key: []string{"a", "b"}[i], N: i + 1},
					}
					if diff := cmp.Diff(want, e); diff != "" {
						t.Errorf("event %d (-want +got):\n%s", i, diff)
					}
					require.False(t, e.ID.IsZero())
				}
				for name, events := range got {
					slices.SortFunc(events, func(x, y eventbus.Event[Order]) int { return x.Payload.N - y.Payload.N })
					require.Equal(t, first, events, "subscription %s got other envelopes", name)
				}
			})
		})
	}
}

// TestPublishBatchStopsWhereRoomRanOut fills the queue of a stuck
// subscription while a second one keeps up: when ctx ends, PublishBatch
// returns how many events it published, and those, exactly, reach both
// subscriptions; the rest reach neither.
func TestPublishBatchStopsWhereRoomRanOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 2})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var fast, slow recorder
		subscribe(t, topic, "fast", fast.handle, nil)
		subscribe(t, topic, "slow", func(ctx context.Context, e eventbus.Event[Order]) error {
			<-gate
			return slow.handle(ctx, e)
		}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		batch := orders("k", 0, 10)
		n, err := topic.PublishBatch(ctx, batch)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		// The stuck worker holds 2 events, and 2 wait in its queue.
		require.Equal(t, 4, n, "events published before the queue of slow stayed full")
		close(gate)
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, []int{0, 1, 2, 3}, fast.ns())
		require.Equal(t, []int{0, 1, 2, 3}, slow.ns())

		// The rest, published again, come after, without duplicates.
		n, err = topic.PublishBatch(context.Background(), batch[n:])
		require.NoError(t, err)
		require.Equal(t, 6, n)
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, fast.ns())
		require.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, slow.ns())
	})
}

// TestPublishBatchWaitsForRoom publishes a batch many times a queue's size
// to a slow subscription: PublishBatch waits for room as often as it must
// and returns once every event is queued.
func TestPublishBatchWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 2, QueueSize: 3})
		topic := newTopic[Order](t, b, "orders", nil)
		var r recorder
		subscribe(t, topic, "slow", func(ctx context.Context, e eventbus.Event[Order]) error {
			time.Sleep(time.Millisecond) // a slow handler, on synctest's clock
			return r.handle(ctx, e)
		}, nil)
		n, err := topic.PublishBatch(context.Background(), orders("k", 0, 100))
		require.NoError(t, err)
		require.Equal(t, 100, n)
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, 100, len(r.ns()))
		for i, n := range r.ns() {
			require.Equal(t, i, n, "one key: in order")
		}
	})
}

// TestPublishBatchStopsAtInvalidPayload checks that a payload Publish
// would refuse ends the batch there: the events before it are published,
// and those after it are not.
func TestPublishBatchStopsAtInvalidPayload(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		b := newBus(t, &eventbus.Options{Mode: mode})
		// Order's key method has a value receiver: it cannot run on nil.
		topic := newTopic[*Order](t, b, "orders", nil)
		var got []int
		var mu sync.Mutex
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[*Order]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		n, err := topic.PublishBatch(ctx, []*Order{{Key: "k", N: 1}, {Key: "k", N: 2}, nil, {Key: "k", N: 4}})
		require.ErrorIs(t, err, eventbus.ErrInvalid)
		require.ErrorContains(t, err, "PublishBatch")
		require.Equal(t, 2, n)
		require.NoError(t, b.Flush(ctx))
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []int{1, 2}, got)
	})
}

// TestPublishBatchBadInput checks PublishBatch's refusals, which publish
// nothing.
func TestPublishBatchBadInput(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	var r recorder
	subscribe(t, topic, "s", r.handle, nil)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		topic *eventbus.Topic[Order]
		ctx   context.Context
		opts  []eventbus.PublishOption
	}{
		{"nil topic", nil, ctx, nil},
		{"zero topic", new(eventbus.Topic[Order]), ctx, nil},
		{"nil context", topic, nil, nil},
		{"nil option", topic, ctx, []eventbus.PublishOption{nil}},
	} {
		n, err := c.topic.PublishBatch(c.ctx, orders("k", 0, 3), c.opts...)
		require.ErrorIs(t, err, eventbus.ErrInvalid, c.name)
		require.ErrorContains(t, err, "PublishBatch", c.name)
		require.Zero(t, n, c.name)
	}
	n, err := topic.PublishBatch(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, b.Close())
	n, err = topic.PublishBatch(ctx, orders("k", 0, 3))
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.Zero(t, n)
	// Bad input is refused as such, closed bus or not, as by Publish.
	n, err = topic.PublishBatch(ctx, orders("k", 0, 3), nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorIs(t, topic.Publish(ctx, Order{}, nil), eventbus.ErrInvalid)
	require.Zero(t, n)
	require.Empty(t, r.ns())
}

// TestPublishBatchSync checks that in Sync mode PublishBatch runs the
// handlers of each event in turn, before it returns, and stops after the
// first event whose handlers failed, returning their error.
func TestPublishBatchSync(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	boom := errors.New("boom")
	var got []int
	subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
		got = append(got, e.Payload.N)
		if e.Payload.N == 3 {
			return eventbus.Permanent(boom)
		}
		return nil
	}, nil)
	ctx := context.Background()
	n, err := topic.PublishBatch(ctx, orders("k", 1, 3))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, []int{1, 2}, got, "handled before PublishBatch returned")

	got = nil
	n, err = topic.PublishBatch(ctx, orders("k", 1, 6))
	require.ErrorIs(t, err, boom)
	var he *eventbus.HandlerError
	require.ErrorAs(t, err, &he)
	require.Equal(t, "s", he.Subscription)
	require.Equal(t, 3, n, "the failed event was published")
	require.Equal(t, []int{1, 2, 3}, got)
}

// TestPublishBatchFromHandler checks that a handler publishing a batch to
// its own topic, whose queue holds one event, never waits for itself: the
// events go past the bound, and carry the handler's event as their cause.
func TestPublishBatchFromHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		caused := map[eventbus.ID]int{}
		var root eventbus.ID
		subscribe(t, topic, "echo", func(ctx context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			caused[e.CausationID]++
			mu.Unlock()
			if e.Payload.N != -1 { // not the root
				return nil
			}
			root = e.ID
			_, err := topic.PublishBatch(ctx, orders(e.Key, 0, 10))
			return err
		}, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "k", N: -1}))
		synctest.Wait() // every goroutine idle: no deadlock
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, map[eventbus.ID]int{{}: 1, root: 10}, caused)
		require.Zero(t, b.DeadLetters().Len())
	})
}

// TestPublishBatchLockOrder runs batch publishers, single publishers and a
// subscription that comes and goes on one topic at once, with small queues
// that keep the publishers waiting: a publisher that locked its queues in
// another order than the others would sooner or later wait for one that
// waits for it, and the test would not end.
func TestPublishBatchLockOrder(t *testing.T) {
	const rounds = 300
	// Not newBus: its cleanup, which testing runs on a panic too, would
	// wait for the workers of a deadlocked bus before the panic is told.
	b, err := eventbus.New(&eventbus.Options{Workers: 3, QueueSize: 4})
	require.NoError(t, err)
	topic := newTopic[Order](t, b, "orders", nil)
	var handled atomic.Int64
	count := func(context.Context, eventbus.Event[Order]) error { handled.Add(1); return nil }
	for _, name := range []string{"a", "b", "c"} {
		subscribe(t, topic, name, count, nil)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 2))
			batch := make([]Order, 40)
			for range rounds {
				for i := range batch {
					batch[i] = Order{Key: fmt.Sprint(rng.IntN(20))}
				}
				if _, err := topic.PublishBatch(ctx, batch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for p := range 2 {
		wg.Go(func() {
			for i := range rounds * 10 {
				if err := topic.Publish(ctx, Order{Key: fmt.Sprint(p, i%20)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range rounds / 10 {
			s, err := topic.Subscribe(fmt.Sprint("d", i), count, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if err := s.Unsubscribe(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a watchdog, far beyond the test's few seconds
		// A panic prints every goroutine's stack; t.Fatal would leave the
		// test stuck in its cleanup, which closes the bus and waits for
		// its workers.
		panic("publishers still waiting after a minute: locks taken in different orders?")
	}
	require.NoError(t, b.Shutdown(ctx))
	require.GreaterOrEqual(t, handled.Load(), int64(3*(4*rounds*40+2*rounds*10)))
}

// TestPublishBatchMetricsCountsPublished checks that TopicMetrics.Published
// counts the events PublishBatch published, and only those: in Async mode
// the events queued before ctx ended, then the rest, and none on a closed
// bus; in Sync mode the events up to and with the first that failed.
func TestPublishBatchMetricsCountsPublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 2, Metrics: true})
		orders := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		subscribe(t, orders, "s", func(context.Context, eventbus.Event[Order]) error { <-gate; return nil }, nil)
		type Audit struct{ N int }
		audit := newTopic(t, b, "audit", &eventbus.TopicOptions[Audit]{Mode: eventbus.Sync})
		subscribe(t, audit, "s", func(_ context.Context, e eventbus.Event[Audit]) error {
			if e.Payload.N == 2 {
				return eventbus.Permanent(errors.New("boom"))
			}
			return nil
		}, nil)

		ctx := context.Background()
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		batch := make([]Order, 10)
		n, err := orders.PublishBatch(short, batch)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, n, len(batch))
		close(gate)
		rest, err := orders.PublishBatch(ctx, batch[n:])
		require.NoError(t, err)
		require.Equal(t, len(batch)-n, rest)

		synced, err := audit.PublishBatch(ctx, []Audit{{N: 0}, {N: 1}, {N: 2}, {N: 3}})
		require.Error(t, err)
		require.Equal(t, 3, synced)

		require.NoError(t, b.Shutdown(ctx))
		none, err := orders.PublishBatch(ctx, batch)
		require.ErrorIs(t, err, eventbus.ErrClosed)
		require.Zero(t, none)
		want := []eventbus.TopicMetrics{{Topic: "audit", Published: 3}, {Topic: "orders", Published: uint64(len(batch))}}
		if diff := cmp.Diff(want, b.Metrics().Topics); diff != "" {
			t.Errorf("Topics (-want +got):\n%s", diff)
		}
	})
}

// TestPublishBatchFanOutIDsUnique publishes a batch of more than one run
// (PublishBatch stamps 32 events at a time on its stack) to two
// subscriptions, where the publisher numbers the events itself: every event
// must get an ID of its own, and be its own correlation ID.
func TestPublishBatchFanOutIDsUnique(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[int](t, b, "ints", nil)
	var mu sync.Mutex
	seen := map[eventbus.ID]int{}
	h := func(_ context.Context, e eventbus.Event[int]) error {
		mu.Lock()
		defer mu.Unlock()
		if e.CorrelationID != e.ID {
			t.Errorf("event %d: correlation ID %v, want its ID %v", e.Payload, e.CorrelationID, e.ID)
		}
		if p, ok := seen[e.ID]; ok && p != e.Payload {
			t.Errorf("events %d and %d share the ID %v", p, e.Payload, e.ID)
		}
		seen[e.ID] = e.Payload
		return nil
	}
	subscribe(t, topic, "a", h, nil)
	subscribe(t, topic, "b", h, nil)
	payloads := make([]int, 100)
	for i := range payloads {
		payloads[i] = i
	}
	n, err := topic.PublishBatch(context.Background(), payloads)
	require.NoError(t, err)
	require.Equal(t, len(payloads), n)
	require.NoError(t, b.Flush(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, len(payloads))
}
