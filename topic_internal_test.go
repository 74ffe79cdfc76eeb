package eventbus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// numbers returns a bus of one worker per subscription, closed when the
// test ends, and its topic "numbers" with a subscription of each of names
// that handles nothing.
func numbers(t *testing.T, names ...string) (*Bus, *Topic[int]) {
	b, err := New(&Options{Workers: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	topic, err := NewTopic[int](b, "numbers", nil)
	require.NoError(t, err)
	for _, name := range names {
		_, err = topic.Subscribe(name, func(context.Context, Event[int]) error { return nil }, nil)
		require.NoError(t, err)
	}
	return b, topic
}

// TestNumberingSkipsStoppedQueue publishes to two subscriptions while the
// first one's intake is stopped but it is still listed, as a publisher
// can find it while it is being unsubscribed: the stopped queue counts no
// events, so the events must still get distinct IDs.
func TestNumberingSkipsStoppedQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, topic := numbers(t, "first")
		var ids []ID
		_, err := topic.Subscribe("second", func(_ context.Context, e Event[int]) error { ids = append(ids, e.ID); return nil }, nil)
		require.NoError(t, err)
		(*topic.subs.Load())[0].stopIntake()

		ctx := context.Background()
		for i := range 3 {
			require.NoError(t, topic.Publish(ctx, i))
		}
		require.NoError(t, b.Flush(ctx))
		require.Len(t, ids, 3)
		require.NotEqual(t, ids[0], ids[1])
		require.NotEqual(t, ids[1], ids[2])
	})
}

// TestStopHalfwayQueuesNowhere publishes as a publisher that saw the bus
// open may, while its stop has closed intake and stopped the queues of the
// first subscription but not yet those of the second: the event must go
// to neither, since Publish returns ErrClosed for it, so that an event is
// queued for every subscription or for none.
func TestStopHalfwayQueuesNowhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, topic := numbers(t, "first", "second")
		b.closeIntake() // as Shutdown does, before it stops each subscription
		subs := *topic.subs.Load()
		subs[0].stopIntake()

		var e [1]Event[int]
		topic.stamp(&e[0], 1, "", time.Now(), &lineage{})
		ok, err := topic.enqueue(context.Background(), &e, false, false)
		require.False(t, ok)
		require.ErrorIs(t, err, ErrClosed)
		q := &subs[1].workers[0].q
		q.mu.Lock()
		queued := q.enq
		q.mu.Unlock()
		require.Zero(t, queued, "the refused event went to the open subscription")
	})
}

// TestRefusedSubscriptionReleasesContext subscribes while a Shutdown waits
// for a handler: on a closed bus, with a taken name, with a middleware
// that returns nil, and with one whose constructor panics. Each Subscribe
// fails, and must cancel the context it made for the subscription's
// handlers, if any, which the bus's context would otherwise keep until the
// Shutdown ends, if ever.
func TestRefusedSubscriptionReleasesContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := New(&Options{Workers: 1})
		require.NoError(t, err)
		ctx := &countedContext{Context: b.ctx}
		b.ctx = ctx
		topic, err := NewTopic[int](b, "numbers", nil)
		require.NoError(t, err)
		release := make(chan struct{})
		_, err = topic.Subscribe("stuck", func(context.Context, Event[int]) error { <-release; return nil }, nil)
		require.NoError(t, err)
		require.NoError(t, topic.Publish(context.Background(), 1))
		shut := make(chan error)
		go func() { shut <- b.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown waits for the handler
		require.EqualValues(t, 1, ctx.live.Load(), "live contexts of the subscription that runs")

		noop := func(context.Context, Event[int]) error { return nil }
		none := func(EnvelopeHandler) EnvelopeHandler { return nil }
		for _, c := range []struct {
			name, sub string
			opts      *SubscriptionOptions
			want      error
		}{
			{"on a closed bus", "late", nil, ErrClosed},
			{"with a taken name", "stuck", nil, ErrDuplicate},
			{"with a middleware returning nil", "late", &SubscriptionOptions{Middleware: []Middleware{none}}, ErrInvalid},
		} {
			_, err := topic.Subscribe(c.sub, noop, c.opts)
			if !errors.Is(err, c.want) {
				t.Errorf("Subscribe %s = %v, want %v", c.name, err, c.want)
			}
			if n := ctx.live.Load(); n != 1 {
				t.Errorf("live contexts after Subscribe %s = %d, want 1", c.name, n)
			}
		}
		func() {
			defer func() { _ = recover() }() // the constructor's panic goes on to the caller
			panicking := func(EnvelopeHandler) EnvelopeHandler { panic("constructor") }
			_, _ = topic.Subscribe("late", noop, &SubscriptionOptions{Middleware: []Middleware{panicking}})
		}()
		if n := ctx.live.Load(); n != 1 {
			t.Errorf("live contexts after Subscribe with a panicking middleware constructor = %d, want 1", n)
		}
		close(release)
		require.NoError(t, <-shut)
	})
}

// countedContext is a bus's context that counts the contexts linked to it
// that are not cancelled: context links a child to a parent with an
// AfterFunc method through that method, and stops the link when the child
// is cancelled.
type countedContext struct {
	context.Context
	live atomic.Int64
}

// Value hides the wrapped context, which context would otherwise link
// children to directly.
func (c *countedContext) Value(any) any { return nil }

func (c *countedContext) AfterFunc(f func()) (stop func() bool) {
	c.live.Add(1)
	stopLink := context.AfterFunc(c.Context, f)
	return func() bool {
		stopped := stopLink()
		if stopped {
			c.live.Add(-1)
		}
		return stopped
	}
}

// TestEnqueueAllCountsEventsBeforeAStop queues a run of events while a
// stop has begun, as Shutdown does it (intake closed, then each
// subscription's queues stopped in turn), for a publisher that saw the bus
// open: the events before the first that meets a stopped queue go to both
// subscriptions, and enqueueAll must count them, so that PublishBatch's
// caller does not publish them again; that event and those after it go
// nowhere.
func TestEnqueueAllCountsEventsBeforeAStop(t *testing.T) {
	const stopAt = 3
	b, err := New(&Options{Workers: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	topic, err := NewTopic[int](b, "numbers", nil)
	require.NoError(t, err)
	for _, name := range []string{"first", "second"} {
		_, err = topic.Subscribe(name, func(context.Context, Event[int]) error { return nil }, nil)
		require.NoError(t, err)
	}
	subs := *topic.subs.Load()
	var keys [2]string // keys[w] is a key of worker w (of 2)
	for i := 0; keys[0] == "" || keys[1] == ""; i++ {
		k := fmt.Sprint("k", i)
		if subs[0].queueFor(topic.hash(k)) == &subs[0].workers[0].q {
			keys[0] = k
		} else {
			keys[1] = k
		}
	}
	events := make([]Event[int], 6)
	hashes := make([]uint64, len(events))
	for i := range events {
		key := keys[min(i/stopAt, 1)] // worker 0 up to stopAt, then worker 1
		topic.stamp(&events[i], i, key, time.Now(), &lineage{})
		hashes[i] = topic.hash(key)
	}
	b.closeIntake()
	subs[0].workers[1].q.stop() // the first subscription's second queue, only

	n, err := topic.enqueueAll(context.Background(), events, hashes, false, false, false)
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, stopAt, n, "events queued before the stopped queue")
	for _, s := range subs {
		for w, want := range []uint64{stopAt, 0} {
			q := &s.workers[w].q
			q.mu.Lock()
			queued := q.enq
			q.mu.Unlock()
			require.Equal(t, want, queued, "subscription %s, worker %d", s.name, w)
		}
	}
}

// TestQueueOfTakesTheLowestFreeWorker checks which worker a keyless event
// published alone goes to: the lowest-numbered of those with nothing to
// do, once the workers have run dry, and a random one by its hash when
// none is free, as a keyed event always goes to its hash's.
func TestQueueOfTakesTheLowestFreeWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		topic, s := idleSubscription(t, 4)
		h := topic.hash("k")
		setFree := func(w int, free bool) {
			q := &s.workers[w].q
			q.mu.Lock()
			q.setFree(free)
			q.mu.Unlock()
		}
		for _, c := range []struct {
			busy []int
			want int // -1: h's
		}{{nil, 0}, {[]int{0}, 1}, {[]int{0, 1, 2}, 3}, {[]int{0, 1, 2, 3}, -1}} {
			for _, w := range c.busy {
				setFree(w, false)
			}
			want := s.queueFor(h)
			if c.want >= 0 {
				want = &s.workers[c.want].q
			}
			require.Same(t, want, s.queueOf(h, true), "keyless, workers %v busy", c.busy)
			require.Same(t, s.queueFor(h), s.queueOf(h, false), "keyed, workers %v busy", c.busy)
			for _, w := range c.busy {
				setFree(w, true)
			}
		}
	})
}

// TestFreeMaskLeavesOutWorkersPast64 checks that the workers past the 64th
// have no bit in the mask of free workers: with the first 64 busy, the
// others going busy and free again leave the mask empty, where a bit they
// shared with a worker of the first 64 would send keyless events to it.
func TestFreeMaskLeavesOutWorkersPast64(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, s := idleSubscription(t, 70)
		require.Equal(t, ^uint64(0), s.idle.Load(), "the first 64 workers free")
		for _, free := range []bool{false, true} {
			for i := range s.workers {
				if i < 64 && free {
					continue // the first 64 stay busy
				}
				q := &s.workers[i].q
				q.mu.Lock()
				q.setFree(free)
				q.mu.Unlock()
			}
		}
		require.Zero(t, s.idle.Load(), "the first 64 workers busy, the rest free")
	})
}

// idleSubscription returns a topic of a new bus and its one subscription,
// of workers workers, each parked with nothing to do. Callers run in a
// synctest bubble.
func idleSubscription(t *testing.T, workers int) (*Topic[int], *subscription[int]) {
	t.Helper()
	b, err := New(&Options{Workers: workers})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	topic, err := NewTopic[int](b, "numbers", nil)
	require.NoError(t, err)
	_, err = topic.Subscribe("s", func(context.Context, Event[int]) error { return nil }, nil)
	require.NoError(t, err)
	synctest.Wait() // every worker parked, with nothing to do
	return topic, (*topic.subs.Load())[0].subscription
}
