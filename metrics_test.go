package eventbus_test

import (
	"context"
	"fmt"
	"iter"
	"math"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestMetricsAfterKnownScenario runs ten events through a subscription where
// event 3 fails once, event 5 always fails and event 7 comes twice, and
// checks every counter.
func TestMetricsAfterKnownScenario(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		synctest.Test(t, func(t *testing.T) {
			ids := make([]eventbus.ID, 10)
			for i := range ids {
				ids[i] = eventbus.NewID()
			}
			ids = append(ids, ids[7])
			b := newBus(t, &eventbus.Options{
				Mode: mode, Workers: 2, Metrics: true, NewID: fixedIDs(ids...),
				Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)},
				Retry:      eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second},
			})
			topic := newTopic[Order](t, b, "orders", nil)
			newTopic[Order](t, b, "idle", nil)
			failedOnce := false
			subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				time.Sleep(time.Millisecond) // fake time: each attempt takes 1ms
				switch {
				case e.Payload.N == 3 && !failedOnce:
					failedOnce = true
					return errFlaky
				case e.Payload.N == 5:
					return errFlaky
				}
				return nil
			}, nil)
			ctx := context.Background()
			for i := range 11 {
				n := i
				if i == 10 {
					n = 7
				}
				err := topic.Publish(ctx, Order{Key: "k", N: n})
				if mode == eventbus.Sync && n == 5 { // Sync returns the handler's last error
					require.ErrorIs(t, err, errFlaky, "mode %v: Publish(%d)", mode, n)
				} else {
					require.NoError(t, err, "mode %v: Publish(%d)", mode, n)
				}
			}
			require.NoError(t, b.Flush(ctx))
			m := b.Metrics()
			want := eventbus.Metrics{
				Topics: []eventbus.TopicMetrics{{Topic: "idle"}, {Topic: "orders", Published: 11}},
				Subscriptions: []eventbus.SubscriptionMetrics{{
					Topic: "orders", Subscription: "s",
					Queued: 11, Handled: 9, Failed: 3, Retried: 2, DeadLettered: 1, Duplicates: 1,
				}},
				DeadLetters: eventbus.DeadLetterMetrics{Held: 1},
			}
			if diff := cmp.Diff(want, m, cmpopts.IgnoreFields(eventbus.SubscriptionMetrics{}, "HandleTime", "Latency")); diff != "" {
				t.Errorf("mode %v: Metrics (-want +got):\n%s", mode, diff)
			}
			s := m.Subscriptions[0]
			require.EqualValues(t, 13, s.HandleTime.Count, "one per attempt")
			require.Equal(t, 12*time.Millisecond, s.HandleTime.Sum, "the duplicate did not run the handler")
			require.Equal(t, s.HandleTime.BucketBound(12), s.HandleTime.Quantile(0.5), "1ms falls in the bucket below 256ns<<12")
			require.EqualValues(t, 11, s.Latency.Count, "one per finished event")
		})
	}
}

// TestMetricsSubscriptionsSortedByTopic checks that Metrics lists the
// subscriptions by topic, then by name, as its doc says: a dashboard that
// groups them by topic reads them in that order. No test had subscriptions
// on two topics, so a sort by name alone passed every test.
func TestMetricsSubscriptionsSortedByTopic(t *testing.T) {
	b := newBus(t, nil)
	for _, topic := range []string{"payments", "audit"} {
		tp := newTopic[Order](t, b, topic, nil)
		for _, name := range []string{"b", "a", "c"} {
			subscribe(t, tp, name, func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
		}
	}
	var got []string
	for _, s := range b.Metrics().Subscriptions {
		got = append(got, s.Topic+"/"+s.Subscription)
	}
	want := []string{"audit/a", "audit/b", "audit/c", "payments/a", "payments/b", "payments/c"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Metrics().Subscriptions (-want +got):\n%s", diff)
	}
}

// TestMetricsUncounted checks SubscriptionMetrics.Uncounted: set for a
// Sync-mode subscription of a bus without Options.Metrics alone, the one
// kind whose counters stay 0.
func TestMetricsUncounted(t *testing.T) {
	for _, tt := range []struct {
		mode      eventbus.Mode
		metrics   bool
		uncounted bool
	}{
		{eventbus.Async, false, false},
		{eventbus.Async, true, false},
		{eventbus.Sync, false, true},
		{eventbus.Sync, true, false},
	} {
		b := newBus(t, &eventbus.Options{Mode: tt.mode, Metrics: tt.metrics})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "billing", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{N: 1}))
		require.NoError(t, b.Flush(context.Background()))
		m := b.Metrics().Subscriptions[0]
		if m.Uncounted != tt.uncounted {
			t.Errorf("mode %v, Metrics %v: Uncounted = %v, want %v", tt.mode, tt.metrics, m.Uncounted, tt.uncounted)
		}
		if counted := m.Handled == 1; counted == tt.uncounted {
			t.Errorf("mode %v, Metrics %v: Handled = %d with Uncounted %v", tt.mode, tt.metrics, m.Handled, m.Uncounted)
		}
	}
}

// TestMetricsPublishedCountsQueued checks what TopicMetrics.Published
// counts in Async mode, as its doc says: the events that Publish and
// TryPublish queued, not those refused for want of room, a context that
// ended or a stop. Only Publishes that all queued were counted in any
// test, so a Published that counted every call (a throwaway change)
// passed every test while a dashboard's publish rate rose with each
// refusal.
func TestMetricsPublishedCountsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1, Metrics: true})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { <-gate; return nil }, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 0}))
		synctest.Wait() // the worker takes it and waits
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		ok, err := topic.TryPublish(ctx, Order{N: 2})
		require.NoError(t, err)
		require.False(t, ok, "TryPublish into a full queue")
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		require.ErrorIs(t, topic.Publish(short, Order{N: 3}), context.DeadlineExceeded)
		close(gate)
		require.NoError(t, b.Flush(ctx))
		ok, err = topic.TryPublish(ctx, Order{N: 4})
		require.NoError(t, err)
		require.True(t, ok, "TryPublish with room")
		require.NoError(t, b.Shutdown(ctx))
		require.ErrorIs(t, topic.Publish(ctx, Order{N: 5}), eventbus.ErrClosed)
		m := b.Metrics()
		want := []eventbus.TopicMetrics{{Topic: "orders", Published: 3}}
		if diff := cmp.Diff(want, m.Topics); diff != "" {
			t.Errorf("Topics (-want +got):\n%s", diff)
		}
		require.EqualValues(t, 3, m.Subscriptions[0].Handled)
	})
}

func TestMetricsDepthAndPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { <-gate; return nil }, nil)
		for i := range 4 {
			require.NoError(t, topic.Publish(context.Background(), Order{N: i}))
			synctest.Wait() // the worker takes the first and blocks
		}
		s := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 3, s.Depth, "one taken, three waiting")
		require.EqualValues(t, 4, s.Pending)
		require.Zero(t, s.HandleTime.Count, "not timed without Options.Metrics")
		close(gate)
		require.NoError(t, b.Flush(context.Background()))
		s = b.Metrics().Subscriptions[0]
		require.Zero(t, s.Depth)
		require.Zero(t, s.Pending)
		require.EqualValues(t, 4, s.Handled)
	})
}

func TestHistogramQuantile(t *testing.T) {
	var h eventbus.Histogram
	require.Zero(t, h.Quantile(0.99))
	require.Equal(t, 256*time.Nanosecond, h.BucketBound(0))
	require.Equal(t, 512*time.Nanosecond, h.BucketBound(1))

	// Nine fast, one slow: nine in ten are fast, so up to the 90th
	// percentile the quantile is fast; past it, slow.
	h.Buckets[0], h.Buckets[3], h.Count = 9, 1, 10
	for q, want := range map[float64]int{0: 0, 0.5: 0, 0.89: 0, 0.9: 0, 0.91: 3, 1: 3, -1: 0, 2: 3} {
		require.Equal(t, h.BucketBound(want), h.Quantile(q), "Quantile(%v)", q)
	}
	require.Equal(t, h.BucketBound(3), h.Quantile(math.NaN()), "Quantile(NaN) reads as Quantile(1)")

	// The median of two observations is the lower one, as with any even
	// count: half of them are at or below it.
	h = eventbus.Histogram{Count: 2}
	h.Buckets[1], h.Buckets[5] = 1, 1
	require.Equal(t, h.BucketBound(1), h.Quantile(0.5), "Quantile(0.5) of two")
	require.Equal(t, h.BucketBound(5), h.Quantile(0.51), "Quantile(0.51) of two")
	// Quantile(0) is the smallest observation's bucket, not bucket 0,
	// which holds none here: a rank of 0 ("at least a fraction 0") is
	// reached before any bucket is counted.
	require.Equal(t, h.BucketBound(1), h.Quantile(0), "Quantile(0) of two")
	require.Equal(t, h.BucketBound(1), h.Quantile(-1), "Quantile(-1) of two")

	// 0.07*100 is 7.000000000000001 in floating point: the 7th of 100 is
	// still the rank, the last fast one.
	h = eventbus.Histogram{Count: 100}
	h.Buckets[0], h.Buckets[5] = 7, 93
	require.Equal(t, h.BucketBound(0), h.Quantile(0.07), "Quantile(0.07) of 7 fast in 100")
	require.Equal(t, h.BucketBound(5), h.Quantile(0.071), "Quantile(0.071) of 7 fast in 100")
}

// TestHistogramBucketBoundOutOfRange checks that BucketBound of an index
// that names no bucket is 0, not a panic (a negative shift) or a bound
// that overflowed.
func TestHistogramBucketBoundOutOfRange(t *testing.T) {
	var h eventbus.Histogram
	last := len(h.Buckets) - 1
	require.Equal(t, time.Duration(256)<<last, h.BucketBound(last), "the last bucket")
	for _, i := range []int{-1, math.MinInt, last + 1, 64, math.MaxInt} {
		if got := h.BucketBound(i); got != 0 {
			t.Errorf("BucketBound(%d) = %v, want 0", i, got)
		}
	}
}

// TestMetricsLatencyWithCustomClock measures publish-to-handled latency
// with the clock that stamped the events: Options.Clock's, not the real one,
// which is decades away from a test's fixed time.
func TestMetricsLatencyWithCustomClock(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				return now
			}
			b := newBus(t, &eventbus.Options{Mode: mode, Metrics: true, Clock: clock})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				now = now.Add(3 * time.Millisecond) // handling takes 3ms by the test's clock
				return nil
			}, nil)
			ctx := context.Background()
			require.NoError(t, topic.Publish(ctx, Order{N: 1}))
			require.NoError(t, b.Flush(ctx))
			l := b.Metrics().Subscriptions[0].Latency
			require.EqualValues(t, 1, l.Count)
			require.Equal(t, 3*time.Millisecond, l.Sum)
		})
	})
}

// TestMetricsLatencyOfStoredEvents checks that a durable subscription's
// latency is measured from the store's stamp by the wall clock, not by
// Options.Clock, which did not stamp those events: here an hour ahead.
func TestMetricsLatencyOfStoredEvents(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ahead := func() time.Time { return time.Now().Add(time.Hour) }
		b := newBus(t, &eventbus.Options{Metrics: true, Clock: ahead})
		d := subscribeDurable(t, b, s, reg, "ledger", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
		require.NoError(t, d.WaitFor(context.Background(), appendDeposits(t, s, reg, "a", 1).Position))
		require.NoError(t, b.Flush(context.Background())) // the worker's counters are published as it reports its progress
		for _, sm := range b.Metrics().Subscriptions {
			require.EqualValues(t, 1, sm.Latency.Count)
			require.Less(t, sm.Latency.Sum, time.Minute, "measured by the wall clock, not the bus's")
		}
	})
}

// aheadStore is a Store whose clock runs an hour ahead of the bus's, as a
// store written by another machine may, or any store after the wall clock
// was set back.
type aheadStore struct{ eventbus.Store }

func (s aheadStore) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			e.Time = e.Time.Add(time.Hour)
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestMetricsLatencyNeverNegative checks that an event stamped after the
// bus's clock reads, by a store's clock ahead of it, counts a latency of
// zero, as one stamped ahead by Options.Clock does: it counted minus an
// hour, which took an hour off Latency.Sum for every such event.
func TestMetricsLatencyNeverNegative(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		b := newBus(t, &eventbus.Options{Metrics: true})
		d := subscribeDurable(t, b, aheadStore{s}, reg, "ledger", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
		require.NoError(t, d.WaitFor(context.Background(), appendDeposits(t, s, reg, "a", 1).Position))
		require.NoError(t, b.Flush(context.Background()))
		for _, sm := range b.Metrics().Subscriptions {
			require.EqualValues(t, 1, sm.Latency.Count)
			require.Zero(t, sm.Latency.Sum, "an hour early: no latency, not a negative one")
		}
	})
}

// TestMetricsClockOutsideLocks gives the bus an Options.Clock that reads
// the bus's metrics, which take the counters' locks: the bus must not call
// it while it holds one, as it did for a dead letter's latency in Sync mode.
func TestMetricsClockOutsideLocks(t *testing.T) {
	var b *eventbus.Bus
	clock := func() time.Time {
		_ = b.Metrics()
		return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	b = newBus(t, &eventbus.Options{Mode: eventbus.Sync, Metrics: true, Clock: clock})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	done := make(chan error, 1)
	go func() { done <- topic.Publish(context.Background(), Order{N: 1}) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, errFlaky)
	case <-time.After(time.Minute): // a guard against a deadlock, not a wait for work
		t.Fatal("Publish deadlocked: the bus called Options.Clock under its lock")
	}
	require.EqualValues(t, 1, b.Metrics().Subscriptions[0].DeadLettered)
}

// TestMetricsSnapshotDuringRetry takes snapshots while an event is being
// retried and after it was dead-lettered, from the handler and from the
// dead-letter sink, and checks that each is consistent: one HandleTime
// observation per attempt counted (Handled, Failed or Duplicates), one
// Latency observation per event finished (Handled, DeadLettered or
// Duplicates). In Sync mode an earlier attempt's timing, and a dead
// letter's latency, went into the histograms before their counts did.
func TestMetricsSnapshotDuringRetry(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var b *eventbus.Bus
			var snaps []eventbus.SubscriptionMetrics
			snap := func() {
				if m := b.Metrics(); len(m.Subscriptions) > 0 {
					snaps = append(snaps, m.Subscriptions[0])
				}
			}
			b = newBus(t, &eventbus.Options{
				Mode: mode, Workers: 1, Metrics: true,
				Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Millisecond},
				DeadLetterSink: eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error {
					snap()
					return nil
				}),
			})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				snap()
				if e.Payload.N == 1 {
					return errFlaky
				}
				return nil
			}, nil)
			ctx := context.Background()
			require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 0}))
			_ = topic.Publish(ctx, Order{Key: "a", N: 1})
			require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2}))
			require.NoError(t, b.Flush(ctx))
			synctest.Wait() // the sink has run
			snap()
			require.Len(t, snaps, 7, "5 attempts, the sink, the end")
			for i, s := range snaps {
				require.Equal(t, s.Handled+s.Failed+s.Duplicates, s.HandleTime.Count,
					"snapshot %d: HandleTime.Count, want one per attempt counted: %+v", i, s)
				require.Equal(t, s.Handled+s.DeadLettered+s.Duplicates, s.Latency.Count,
					"snapshot %d: Latency.Count, want one per event finished: %+v", i, s)
			}
			last := snaps[len(snaps)-1]
			require.EqualValues(t, 2, last.Handled)
			require.EqualValues(t, 3, last.Failed)
			require.EqualValues(t, 2, last.Retried)
			require.EqualValues(t, 1, last.DeadLettered)
		})
	})
}

// unstampedStore is a Store that leaves its events' Time zero, as one that
// does not stamp them may: their latency is the longest Duration.
type unstampedStore struct{ eventbus.Store }

func (s unstampedStore) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			e.Time = time.Time{}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestHistogramSumSaturates checks that a Histogram's Sum stops at the
// longest Duration instead of wrapping around to a negative one: two events
// stamped at the zero time, each of the longest latency, summed to -2ns.
func TestHistogramSumSaturates(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		b := newBus(t, &eventbus.Options{Metrics: true})
		d := subscribeDurable(t, b, unstampedStore{s}, reg, "ledger", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
		require.NoError(t, d.WaitFor(context.Background(), appendDeposits(t, s, reg, "a", 3).Position))
		require.NoError(t, b.Flush(context.Background()))
		for _, sm := range b.Metrics().Subscriptions {
			require.EqualValues(t, 3, sm.Latency.Count)
			require.Equal(t, time.Duration(math.MaxInt64), sm.Latency.Sum)
			require.Equal(t, sm.Latency.BucketBound(len(sm.Latency.Buckets)-1), sm.Latency.Quantile(0.5))
		}
	})
}

// TestMetricsLatencyOfAbandonedRetry gives up on an event while it waits
// for a retry, when the publisher's context ends (Sync mode) or Shutdown's
// (Async): its latency runs to then, its final outcome, not to its last
// failure, which came long before. The clock is the real one, whose
// monotonic readings the bus measures with (synctest's have none); the
// handler cancels the context a while after it ran, so the event, stamped
// before, is given up at least that long after its publish: Latency.Sum
// has a lower bound only.
func TestMetricsLatencyOfAbandonedRetry(t *testing.T) {
	const wait = 20 * time.Millisecond
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		b := newBus(t, &eventbus.Options{Mode: mode, Metrics: true,
			Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour, MaxDelay: time.Hour}})
		topic := newTopic[Order](t, b, "orders", nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			time.AfterFunc(wait, cancel)
			return errFlaky
		}, nil)
		if mode == eventbus.Sync {
			require.ErrorIs(t, topic.Publish(ctx, Order{Key: "k"}), context.Canceled)
		} else {
			require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
			require.ErrorIs(t, b.Shutdown(ctx), context.Canceled)
		}
		s := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 1, s.DeadLettered)
		require.EqualValues(t, 1, s.Latency.Count)
		if s.Latency.Sum < wait {
			t.Errorf("Latency.Sum = %v, want at least %v: the event was given up when the context ended", s.Latency.Sum, wait)
		}
	})
}

// TestBatchHandleTimeCountsEachBatchOnce runs one batch of four events for
// a second, one of them failing: HandleTime counts four attempts, as the
// counters count events, and their Sum is the second the handler ran, not
// four seconds.
func TestBatchHandleTimeCountsEachBatchOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, Metrics: true})
		topic := newTopic[Order](t, b, "orders", nil)
		_, err := topic.SubscribeBatch("s", func(_ context.Context, es []eventbus.Event[Order]) error {
			time.Sleep(time.Second) // fake time: the batch takes a second
			if len(es) != 4 {
				t.Errorf("batch of %d events, want 4", len(es))
			}
			return &eventbus.BatchError{Failed: map[int]error{1: errFlaky}}
		}, &eventbus.SubscriptionOptions{BatchSize: 4, BatchWait: time.Minute})
		require.NoError(t, err)
		ctx := context.Background()
		for i := range 4 {
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
		}
		require.NoError(t, b.Flush(ctx))
		s := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 3, s.Handled)
		require.EqualValues(t, 1, s.Failed)
		require.EqualValues(t, 4, s.HandleTime.Count, "one per event")
		if s.HandleTime.Sum != time.Second {
			t.Errorf("HandleTime.Sum = %v, want 1s, the batch's time", s.HandleTime.Sum)
		}
		require.EqualValues(t, 4, s.Latency.Count, "one per finished event")
	})
}

// TestGoexitHandleTime has a handler run for a second and then call
// runtime.Goexit, as t.FailNow does after a wait: the attempt is timed like
// a failed one, a second, not 0.
func TestGoexitHandleTime(t *testing.T) {
	tests := []struct {
		name    string
		batch   bool
		attempt int // the attempt that calls Goexit; earlier ones fail
	}{
		{"first attempt", false, 1},
		{"retry", false, 2},
		{"batch", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, Metrics: true,
					Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
				topic := newTopic[Order](t, b, "orders", nil)
				calls := 0
				run := func() error {
					time.Sleep(time.Second) // fake time: each attempt takes a second
					if calls++; calls == tt.attempt {
						runtime.Goexit()
					}
					return errFlaky
				}
				var err error
				if tt.batch {
					_, err = topic.SubscribeBatch("s", func(context.Context, []eventbus.Event[Order]) error {
						return run()
					}, nil)
				} else {
					_, err = topic.Subscribe("s", func(context.Context, eventbus.Event[Order]) error {
						return run()
					}, nil)
				}
				require.NoError(t, err)
				require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
				require.NoError(t, b.Flush(context.Background()))
				s := b.Metrics().Subscriptions[0]
				require.EqualValues(t, 1, s.DeadLettered)
				require.EqualValues(t, tt.attempt, s.HandleTime.Count, "one per attempt")
				if want := time.Duration(tt.attempt) * time.Second; s.HandleTime.Sum != want {
					t.Errorf("HandleTime.Sum = %v, want %v", s.HandleTime.Sum, want)
				}
			})
		})
	}
}

// TestSyncMetricsDuringRetryWait checks that a Sync-mode attempt that
// failed is counted, with its timing, while its publisher waits for the
// retry: it was held until the next attempt ended, so that a dashboard
// read Failed 0 for the whole wait (up to MaxDelay, 30s by default) and
// an error rate lagged one attempt behind, where an Async worker hands
// over its counts before it waits.
func TestSyncMetricsDuringRetryWait(t *testing.T) {
	for _, stop := range []string{"retried", "cancelled"} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{
					Mode: eventbus.Sync, Metrics: true,
					Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute},
				})
				topic := newTopic[Order](t, b, "orders", nil)
				attempts := 0 // the handler runs in the publisher's goroutine alone
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
					if attempts++; attempts == 1 {
						return errFlaky
					}
					return nil
				}, nil)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				published := make(chan error)
				go func() { published <- topic.Publish(ctx, Order{Key: "a"}) }()
				synctest.Wait() // the publisher waits for the retry
				s := b.Metrics().Subscriptions[0]
				if s.Failed != 1 || s.HandleTime.Count != 1 || s.Handled != 0 {
					t.Errorf("during the wait: Failed %d, HandleTime.Count %d, Handled %d; want 1, 1, 0",
						s.Failed, s.HandleTime.Count, s.Handled)
				}
				want := eventbus.SubscriptionMetrics{Queued: 1, Failed: 1, Retried: 1, Handled: 1}
				if stop == "cancelled" {
					cancel()
					want = eventbus.SubscriptionMetrics{Queued: 1, Failed: 1, DeadLettered: 1}
					require.ErrorIs(t, <-published, context.Canceled)
				} else {
					require.NoError(t, <-published)
				}
				s = b.Metrics().Subscriptions[0]
				got := eventbus.SubscriptionMetrics{Queued: s.Queued, Failed: s.Failed, Retried: s.Retried,
					Handled: s.Handled, DeadLettered: s.DeadLettered}
				require.Equal(t, want, got)
				require.Equal(t, s.Handled+s.Failed, s.HandleTime.Count, "one HandleTime per attempt")
				require.Equal(t, s.Handled+s.DeadLettered, s.Latency.Count, "one Latency per event finished")
			})
		})
	}
}

// TestMetricsDeadLetterLatencyWithCustomClock measures the latency of a
// dead-lettered event, as of a handled one, with Options.Clock, which
// stamped it: two attempts of 3ms each by the test's clock, a second apart
// by the bubble's, which Options.Clock does not follow. Only a handled
// event's latency was checked against Options.Clock, so a dead letter's,
// measured by the wall clock from a time that it did not stamp, counted 0
// unnoticed.
func TestMetricsDeadLetterLatencyWithCustomClock(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			clk := clockAt(time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
			b := newBus(t, &eventbus.Options{Mode: mode, Metrics: true, Clock: clk.Now,
				Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				clk.Advance(3 * time.Millisecond) // each attempt takes 3ms by the test's clock
				return errFlaky
			}, nil)
			ctx := context.Background()
			_ = topic.Publish(ctx, Order{Key: "k"})
			require.NoError(t, b.Flush(ctx))
			s := b.Metrics().Subscriptions[0]
			require.EqualValues(t, 1, s.DeadLettered)
			require.EqualValues(t, 1, s.Latency.Count)
			if s.Latency.Sum != 6*time.Millisecond {
				t.Errorf("Latency.Sum = %v, want 6ms by Options.Clock", s.Latency.Sum)
			}
		})
	})
}

// TestMetricsHistogramsSumWorkers runs sixteen events of as many keys,
// spread over four workers, each handled in 10ms: the snapshot's histograms
// add up every worker's, in Count, Sum and each bucket. The tests with
// timings kept all their events on one worker, so a snapshot that kept one
// worker's Sum or buckets passed them.
func TestMetricsHistogramsSumWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const events = 16
		b := newBus(t, &eventbus.Options{Workers: 4, Metrics: true})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			time.Sleep(10 * time.Millisecond) // fake time: each event takes 10ms
			return nil
		}, nil)
		ctx := context.Background()
		start := time.Now()
		for n := range events {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint("k", n), N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		// The keys' hashes are not the test's to pick: that the events took
		// less than 16 times 10ms shows that workers ran them side by side.
		require.Less(t, time.Since(start), events*10*time.Millisecond, "the events went to more than one worker")
		s := b.Metrics().Subscriptions[0]
		h := s.HandleTime
		var want eventbus.Histogram
		want.Count, want.Sum = events, events*10*time.Millisecond
		want.Buckets[16] = events // 10ms is at least 256ns<<15 and below 256ns<<16
		if diff := cmp.Diff(want, h); diff != "" {
			t.Errorf("HandleTime (-want +got):\n%s", diff)
		}
		var inBuckets uint64
		for _, n := range s.Latency.Buckets {
			inBuckets += n
		}
		require.EqualValues(t, events, s.Latency.Count)
		require.EqualValues(t, events, inBuckets, "Latency's buckets count every event")
	})
}

// TestMetricsDurableCountsGoOnAcrossRuns checks that a Durable's counters
// go on across its runs, a Rebuild's and a resumption's on the same bus
// after Stop: each run is a new subscription of the bus, whose counters
// started at zero, so a Rebuild that replayed as many events as the run
// before had handled left Handled where it was. A Prometheus counter read
// before and after saw no increase, and no reset either: the rebuild's
// work vanished from the dashboard.
func TestMetricsDurableCountsGoOnAcrossRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := openMemoryStore(t)
		reg := newBankRegistry(t)
		b := newBus(t, &eventbus.Options{Metrics: true})
		h := func(_ context.Context, e eventbus.Event[Deposited]) error {
			time.Sleep(time.Millisecond) // fake time: each attempt takes 1ms
			if e.Payload.Amount == 2 {
				return errFlaky
			}
			return nil
		}
		d := subscribeDurable(t, b, s, reg, "ledger", h, nil)
		appendAmounts(t, s, reg, "a", 1, 2)
		res := appendDeposits(t, s, reg, "a", 1)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		require.NoError(t, b.Flush(ctx))
		want := eventbus.SubscriptionMetrics{
			Topic: "durable.ledger", Subscription: "ledger",
			Queued: 3, Handled: 2, Failed: 1, DeadLettered: 1,
		}
		check := func(when string, handled uint64) {
			t.Helper()
			got := b.Metrics().Subscriptions
			if diff := cmp.Diff([]eventbus.SubscriptionMetrics{want}, got, cmpopts.IgnoreFields(eventbus.SubscriptionMetrics{}, "HandleTime", "Latency")); diff != "" {
				t.Fatalf("%s: Metrics().Subscriptions (-want +got):\n%s", when, diff)
			}
			if sm := got[0]; sm.HandleTime.Count != handled || sm.HandleTime.Sum != time.Duration(handled)*time.Millisecond || sm.Latency.Count != sm.Queued {
				t.Errorf("%s: HandleTime %d attempts in %v, Latency %d events; want %d attempts in %dms, %d events", when, sm.HandleTime.Count, sm.HandleTime.Sum, sm.Latency.Count, handled, handled, sm.Queued)
			}
		}
		check("first run", 3)

		require.NoError(t, d.Rebuild(ctx, nil))
		require.NoError(t, d.WaitFor(ctx, res.Position))
		require.NoError(t, b.Flush(ctx))
		want.Queued, want.Handled, want.Failed, want.DeadLettered = 6, 4, 2, 2
		check("after Rebuild", 6)

		require.NoError(t, d.Stop(ctx))
		require.Empty(t, b.Metrics().Subscriptions, "a stopped Durable is no live subscription")
		d = subscribeDurable(t, b, s, reg, "ledger", h, nil)
		res = appendDeposits(t, s, reg, "a", 1)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		require.NoError(t, b.Flush(ctx))
		want.Queued, want.Handled = 7, 5
		check("resumed after Stop", 7)
	})
}
