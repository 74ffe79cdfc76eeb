package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"math"
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

var errFlaky = errors.New("flaky")

func TestRetryPolicyDelay(t *testing.T) {
	p := eventbus.RetryPolicy{InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second, Multiplier: 3}
	var got []time.Duration
	for attempt := 1; attempt <= 5; attempt++ {
		got = append(got, p.Delay(attempt))
	}
	want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, time.Second, time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Delay (-want +got):\n%s", diff)
	}
	require.Equal(t, 100*time.Millisecond, eventbus.RetryPolicy{}.Delay(1), "zero value: 100ms")
	require.Equal(t, 200*time.Millisecond, eventbus.RetryPolicy{}.Delay(2), "zero value doubles")
	require.Equal(t, 30*time.Second, eventbus.RetryPolicy{}.Delay(100), "zero value caps at 30s")
	require.Equal(t, time.Hour, eventbus.RetryPolicy{InitialDelay: time.Hour}.Delay(1), "an InitialDelay over 30s alone is not capped at 30s")
	require.Equal(t, time.Hour, eventbus.RetryPolicy{InitialDelay: time.Hour}.Delay(5), "nor does it grow")
	require.Equal(t, time.Minute, eventbus.RetryPolicy{InitialDelay: time.Hour, MaxDelay: time.Minute}.Delay(1), "a MaxDelay given caps it")
	for _, m := range []float64{math.NaN(), math.Inf(1), math.MaxFloat64} {
		require.Equal(t, 30*time.Second, eventbus.RetryPolicy{Multiplier: m}.Delay(3), "Multiplier %v: capped, never negative", m)
	}
	// Growth of less than a nanosecond an attempt still compounds:
	// 1ns × 1.000001^(10⁷) is about 22µs (e^10 ns).
	slow := eventbus.RetryPolicy{InitialDelay: time.Nanosecond, Multiplier: 1.000001}.Delay(10_000_001)
	require.True(t, slow > 22000 && slow < 22050, "Delay = %v, want about 22.03µs", slow)
	require.Equal(t, time.Second, eventbus.RetryPolicy{InitialDelay: time.Second, Multiplier: 1}.Delay(math.MaxInt), "Multiplier 1, any attempt")
	// A Multiplier below 1, which Subscribe refuses, shrinks the wait by the
	// same formula, from an InitialDelay past MaxDelay too: Delay stayed at
	// MaxDelay for good there, though the product fell below it.
	shrink := eventbus.RetryPolicy{InitialDelay: time.Hour, MaxDelay: time.Minute, Multiplier: 0.01}
	require.Equal(t, time.Minute, shrink.Delay(1), "capped at first")
	require.Equal(t, 36*time.Second, shrink.Delay(2), "1h × 0.01")
	require.Equal(t, 360*time.Millisecond, shrink.Delay(3), "1h × 0.01²")
}

// TestRetryPolicyDelayRounds checks that Delay rounds InitialDelay times
// Multiplier to the power attempt-1 to the nearest nanosecond, and that the
// worker waits that long in both modes: the product in floating point often
// falls just short of a whole number (100ms × 1.7² is 288999999.99999994),
// and truncating it made the wait 288.999999ms, not 289ms.
func TestRetryPolicyDelayRounds(t *testing.T) {
	for _, c := range []struct {
		p       eventbus.RetryPolicy
		attempt int
		want    time.Duration
	}{
		{eventbus.RetryPolicy{InitialDelay: 100 * time.Millisecond, Multiplier: 1.7}, 3, 289 * time.Millisecond},
		{eventbus.RetryPolicy{InitialDelay: 100 * time.Millisecond, Multiplier: 1.7}, 4, 491300 * time.Microsecond},
		{eventbus.RetryPolicy{InitialDelay: 100 * time.Millisecond, Multiplier: 1.2}, 8, 358318080 * time.Nanosecond},
		{eventbus.RetryPolicy{InitialDelay: time.Second, Multiplier: 1.1}, 4, 1331 * time.Millisecond},
	} {
		if got := c.p.Delay(c.attempt); got != c.want {
			t.Errorf("%+v.Delay(%d) = %v, want %v", c.p, c.attempt, got, c.want)
		}
	}
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			policy := eventbus.RetryPolicy{MaxAttempts: 4, InitialDelay: 100 * time.Millisecond, Multiplier: 1.7}
			b := newBus(t, &eventbus.Options{Mode: mode, Retry: policy})
			topic := newTopic[Order](t, b, "orders", nil)
			start := time.Now()
			var at []time.Duration
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				at = append(at, time.Since(start))
				return errFlaky
			}, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k"}) // fails in Sync mode
			require.NoError(t, b.Flush(context.Background()))
			ms := time.Millisecond
			want := []time.Duration{0, 100 * ms, 270 * ms, 559 * ms} // waits of 100, 170 and 289ms
			if diff := cmp.Diff(want, at); diff != "" {
				t.Errorf("attempts at (-want +got):\n%s", diff)
			}
		})
	})
}

// TestRetryPolicyDelayNegative checks that Delay, which takes any policy,
// never returns a negative wait: a negative InitialDelay, MaxDelay or
// Multiplier, which Subscribe refuses, counts as zero, the default. Delay
// returned them, or a negative product of them, as the wait.
func TestRetryPolicyDelayNegative(t *testing.T) {
	for _, c := range []struct {
		p       eventbus.RetryPolicy
		attempt int
		want    time.Duration
	}{
		{eventbus.RetryPolicy{InitialDelay: -time.Second}, 1, 100 * time.Millisecond},
		{eventbus.RetryPolicy{InitialDelay: -time.Second}, 3, 400 * time.Millisecond},
		{eventbus.RetryPolicy{MaxDelay: -time.Second}, 1, 100 * time.Millisecond},
		{eventbus.RetryPolicy{MaxDelay: -time.Second}, 100, 30 * time.Second},
		{eventbus.RetryPolicy{InitialDelay: -time.Hour, MaxDelay: -time.Minute}, 2, 200 * time.Millisecond},
		{eventbus.RetryPolicy{Multiplier: -2}, 2, 200 * time.Millisecond},
		{eventbus.RetryPolicy{Multiplier: -3}, 4, 800 * time.Millisecond},
	} {
		if got := c.p.Delay(c.attempt); got != c.want {
			t.Errorf("%+v.Delay(%d) = %v, want %v", c.p, c.attempt, got, c.want)
		}
	}
}

// TestRetryPolicyErrors checks that a bad RetryPolicy is refused where it
// is configured, bus-wide or per subscription, with an error naming the
// field and its value: a negative duration was "RetryPolicy has a negative
// duration", whichever of the three it was.
func TestRetryPolicyErrors(t *testing.T) {
	for _, c := range []struct {
		p    eventbus.RetryPolicy
		want string
	}{
		{eventbus.RetryPolicy{MaxAttempts: -1}, "MaxAttempts -1"},
		{eventbus.RetryPolicy{InitialDelay: -time.Second}, "InitialDelay -1s"},
		{eventbus.RetryPolicy{MaxDelay: -time.Minute}, "MaxDelay -1m0s"},
		{eventbus.RetryPolicy{MaxElapsed: -time.Hour}, "MaxElapsed -1h0m0s"},
		{eventbus.RetryPolicy{Multiplier: 0.5}, "Multiplier 0.5"},
		{eventbus.RetryPolicy{Multiplier: -2}, "Multiplier -2"},
		{eventbus.RetryPolicy{Jitter: -0.1}, "Jitter -0.1"},
		{eventbus.RetryPolicy{Jitter: 1.5}, "Jitter 1.5"},
	} {
		_, err := eventbus.New(&eventbus.Options{Retry: c.p})
		require.ErrorIs(t, err, eventbus.ErrInvalid, "New(Retry: %+v)", c.p)
		require.ErrorContains(t, err, c.want, "New(Retry: %+v)", c.p)
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		_, err = topic.Subscribe("s", func(context.Context, eventbus.Event[Order]) error { return nil }, &eventbus.SubscriptionOptions{Retry: &c.p})
		require.ErrorIs(t, err, eventbus.ErrInvalid, "Subscribe(Retry: %+v)", c.p)
		require.ErrorContains(t, err, c.want, "Subscribe(Retry: %+v)", c.p)
	}
}

// TestRetryPolicyEdges checks that a RetryPolicy at the edges of what its
// doc allows is taken where it is configured, bus-wide and per
// subscription: a Jitter of 1 ("from 0 to 1"), a Multiplier of 1 (which
// keeps the wait the same) and the largest one.
func TestRetryPolicyEdges(t *testing.T) {
	for _, p := range []eventbus.RetryPolicy{
		{MaxAttempts: 3, Jitter: 1},
		{MaxAttempts: 3, Multiplier: 1},
		{MaxAttempts: 3, Multiplier: math.MaxFloat64},
	} {
		b, err := eventbus.New(&eventbus.Options{Retry: p})
		if err != nil {
			t.Errorf("New(Retry: %+v) = %v, want nil", p, err)
		} else {
			require.NoError(t, b.Close())
		}
		b = newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		_, err = topic.Subscribe("s", func(context.Context, eventbus.Event[Order]) error { return nil }, &eventbus.SubscriptionOptions{Retry: &p})
		if err != nil {
			t.Errorf("Subscribe(Retry: %+v) = %v, want nil", p, err)
		}
	}
}

// TestRetryScheduleThenDeadLetter checks, on the fake clock, that attempts
// happen exactly when the policy says and that the event is dead-lettered
// with its history when they are spent.
func TestRetryScheduleThenDeadLetter(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			policy := eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: 100 * time.Millisecond, MaxDelay: 500 * time.Millisecond}
			b := newBus(t, &eventbus.Options{Mode: mode, Retry: policy})
			topic := newTopic[Order](t, b, "orders", nil)
			start := time.Now()
			var at []time.Duration
			subscribe(t, topic, "failing", func(_ context.Context, e eventbus.Event[Order]) error {
				at = append(at, time.Since(start))
				return errFlaky
			}, nil)
			err := topic.Publish(context.Background(), Order{Key: "k"})
			if mode == eventbus.Sync {
				require.ErrorIs(t, err, errFlaky)
			} else {
				require.NoError(t, err)
				require.NoError(t, b.Flush(context.Background()))
			}
			ms := time.Millisecond
			require.Equal(t, []time.Duration{0, 100 * ms, 300 * ms, 700 * ms, 1200 * ms}, at)
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			require.Equal(t, 5, dl.Attempt)
			require.ErrorIs(t, dl.Err, errFlaky)
			require.Equal(t, start, dl.FirstFailure)
			require.Equal(t, start.Add(1200*ms), dl.LastFailure)
			require.Equal(t, "orders", dl.Topic)
			require.Equal(t, "failing", dl.Subscription)
		})
	})
}

func firstDeadLetter(b *eventbus.Bus) (eventbus.DeadLetter, bool) {
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		return dl, true
	}
	return eventbus.DeadLetter{}, false
}

func TestRetryStops(t *testing.T) {
	tests := []struct {
		name     string
		policy   eventbus.RetryPolicy
		err      error
		attempts int
	}{
		{"no policy: one attempt", eventbus.RetryPolicy{}, errFlaky, 1},
		{"permanent error", eventbus.RetryPolicy{MaxAttempts: 10}, eventbus.Permanent(errFlaky), 1},
		{"max elapsed", eventbus.RetryPolicy{MaxAttempts: 10, InitialDelay: time.Second, Multiplier: 1, MaxElapsed: 2500 * time.Millisecond}, errFlaky, 3},
		{"panics retry too", eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Retry: tt.policy})
				topic := newTopic[Order](t, b, "orders", nil)
				attempts := 0
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
					attempts++
					if tt.err == nil {
						panic("always")
					}
					return tt.err
				}, nil)
				require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
				require.NoError(t, b.Flush(context.Background()))
				require.Equal(t, tt.attempts, attempts)
				dl, ok := firstDeadLetter(b)
				require.True(t, ok)
				require.Equal(t, tt.attempts, dl.Attempt)
				if tt.err != nil {
					require.ErrorIs(t, dl.Err, errFlaky, "Permanent keeps the error matchable")
				}
			})
		})
	}
}

// TestRetryJitterShortensDelays checks that Jitter shortens each wait by a
// random fraction of up to Jitter: over 199 waits of a second, every one
// lies in [1-Jitter, 1] seconds, they vary, and some come near both ends,
// so that a jitter drawn from half the range, or shortening the waits by
// a constant, fails (a uniform draw misses a tenth of the range at one
// end 199 times in a row with odds under 10^-9).
func TestRetryJitterShortensDelays(t *testing.T) {
	for _, jitter := range []float64{0.5, 1} {
		t.Run(fmt.Sprint(jitter), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				policy := eventbus.RetryPolicy{MaxAttempts: 200, InitialDelay: time.Second, Multiplier: 1, Jitter: jitter}
				b := newBus(t, &eventbus.Options{Retry: policy})
				topic := newTopic[Order](t, b, "orders", nil)
				var last time.Time
				var gaps []time.Duration
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
					if !last.IsZero() {
						gaps = append(gaps, time.Since(last))
					}
					last = time.Now()
					return errFlaky
				}, nil)
				require.NoError(t, topic.Publish(context.Background(), Order{}))
				require.NoError(t, b.Flush(context.Background()))
				require.Len(t, gaps, 199)
				shortest := time.Duration(float64(time.Second) * (1 - jitter))
				tenth := time.Duration(float64(time.Second) * jitter / 10)
				distinct := map[time.Duration]bool{}
				for _, g := range gaps {
					require.GreaterOrEqual(t, g, shortest)
					require.LessOrEqual(t, g, time.Second)
					distinct[g] = true
				}
				require.Greater(t, len(distinct), 10, "jitter varies the delays")
				require.Less(t, slices.Min(gaps), shortest+tenth, "no wait near the shortest")
				require.Greater(t, slices.Max(gaps), time.Second-tenth, "no wait near the longest")
			})
		})
	}
}

// TestRetryKeepsKeyOrderWhileOtherKeysFlow checks the heart of the retry
// design: while key a waits for its retry, a's later events wait behind it,
// and key b, on the same single worker, keeps flowing.
func TestRetryKeepsKeyOrderWhileOtherKeysFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second, Multiplier: 1}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var mu sync.Mutex
		var log []string
		fails := map[string]int{"a1": 2} // a1 fails twice, then succeeds
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			name := fmt.Sprint(e.Key, e.Payload.N)
			if fails[name] > 0 {
				fails[name]--
				return errFlaky
			}
			log = append(log, fmt.Sprintf("%s@%v", name, time.Since(start)))
			return nil
		}, nil)
		ctx := context.Background()
		for _, o := range []Order{{"a", 1}, {"b", 1}, {"a", 2}, {"b", 2}, {"a", 3}, {"b", 3}} {
			require.NoError(t, topic.Publish(ctx, o))
		}
		require.NoError(t, b.Flush(ctx))
		want := []string{"b1@0s", "b2@0s", "b3@0s", "a1@2s", "a2@2s", "a3@2s"}
		if diff := cmp.Diff(want, log); diff != "" {
			t.Errorf("handling order (-want +got):\n%s", diff)
		}
		require.Zero(t, b.DeadLetters().Len())
	})
}

// TestRetryRunsUnderLoad keeps a worker busy, its queue never empty, while
// a failed event waits for its retry: the retry runs when it is due, not
// when the load stops.
func TestRetryRunsUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: 100 * time.Millisecond}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var retried time.Duration
		failed := false
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Key == "bad" {
				if !failed {
					failed = true
					return errFlaky
				}
				retried = time.Since(start)
				return nil
			}
			time.Sleep(10 * time.Millisecond) // the work takes twice the time between events
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "bad"}))
		for i := range 300 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "good", N: i}))
			time.Sleep(5 * time.Millisecond)
		}
		require.NoError(t, b.Flush(ctx))
		require.NotZero(t, retried)
		require.Less(t, retried, 500*time.Millisecond, "the retry, due at 100ms, waited for the load to stop (3s)")
	})
}

// TestRetryLanesAreBounded publishes to a key that waits for a retry:
// the events held behind it count toward the queue's bound, so Publish
// waits for room instead of queueing without limit.
func TestRetryLanesAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 8, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		failed := false
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			if !failed {
				failed = true
				return errFlaky
			}
			return nil
		}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		n := 0
		for ; n < 1000; n++ {
			if err := topic.Publish(ctx, Order{Key: "k", N: n}); err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				break
			}
			synctest.Wait() // the worker moves what it took into the lane
		}
		require.LessOrEqual(t, n, 2*8+1, "events accepted while the key waits")
		require.NoError(t, b.Flush(context.Background()))
		require.EqualValues(t, n, b.Metrics().Subscriptions[0].Handled, "every accepted event, once the retry ran")
	})
}

func TestShutdownCutsRetriesShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 100, InitialDelay: time.Minute, MaxDelay: time.Minute}
		b, err := eventbus.New(&eventbus.Options{Workers: 1, Retry: policy})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Key == "bad" {
				return errFlaky
			}
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "bad", N: 1}))
		require.NoError(t, topic.Publish(ctx, Order{Key: "bad", N: 2}))
		require.NoError(t, topic.Publish(ctx, Order{Key: "good"}))
		short, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		start := time.Now()
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Shutdown(short), &ue)
		require.Equal(t, 90*time.Second, time.Since(start), "retries ran until the deadline")
		require.Equal(t, 2, ue.Count)
		var got []string
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			got = append(got, fmt.Sprintf("%d:%d", dl.Payload().(Order).N, dl.Attempt))
			require.ErrorIs(t, dl.Err, context.DeadlineExceeded)
		}
		require.Equal(t, []string{"1:2", "2:0"}, got, "attempts made before the deadline")
		require.ErrorIs(t, firstErr(b), errFlaky, "the last error is kept beside the cause")
	})
}

func firstErr(b *eventbus.Bus) error {
	dl, _ := firstDeadLetter(b)
	return dl.Err
}

// brokenError is an error whose Unwrap panics, as a buggy error type of an
// application's might.
type brokenError struct{}

func (brokenError) Error() string { return "broken" }
func (brokenError) Unwrap() error { panic("Unwrap broke") }

// TestBrokenHandlerError has handlers return an error whose Unwrap panics,
// which the retry policy calls (errors.As, looking for Permanent): in a
// worker that panic was not recovered and ended the process. The attempt
// now fails with a *PanicError holding it, and the bus goes on: the event
// is retried and dead-lettered, the others are handled. Handlers that
// panic with such an error, which no probe of returned errors walks, get
// the same (in Sync mode, Publish panicked), with the value they panicked
// with.
func TestBrokenHandlerError(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mode   eventbus.Mode
		batch  func(n int) error // the batch handler's error for a batch holding event n, or nil for a handler
		panics bool              // the handler panics with brokenError{}
	}{
		{name: "async", mode: eventbus.Async},
		{name: "sync", mode: eventbus.Sync},
		{name: "batch", mode: eventbus.Async, batch: func(int) error { return brokenError{} }},
		{name: "batch error", mode: eventbus.Async, batch: func(n int) error {
			return &eventbus.BatchError{Failed: map[int]error{0: brokenError{}}}
		}},
		{name: "async panics", mode: eventbus.Async, panics: true},
		{name: "sync panics", mode: eventbus.Sync, panics: true},
		{name: "batch panics", mode: eventbus.Async, batch: func(int) error { panic(brokenError{}) }, panics: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, Mode: tt.mode, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
				topic := newTopic[Order](t, b, "orders", nil)
				var handled []int
				if tt.batch != nil {
					_, err := topic.SubscribeBatch("s", func(_ context.Context, es []eventbus.Event[Order]) error {
						if len(es) == 1 && es[0].Payload.N == 1 {
							return tt.batch(1)
						}
						for _, e := range es {
							handled = append(handled, e.Payload.N)
						}
						return nil
					}, &eventbus.SubscriptionOptions{BatchSize: 1})
					require.NoError(t, err)
				} else {
					subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
						if e.Payload.N == 1 && tt.panics {
							panic(brokenError{})
						}
						if e.Payload.N == 1 {
							return brokenError{}
						}
						handled = append(handled, e.Payload.N)
						return nil
					}, nil)
				}
				ctx := context.Background()
				for n := range 3 {
					err := topic.Publish(ctx, Order{Key: fmt.Sprint("k", n), N: n})
					if tt.mode == eventbus.Sync && n == 1 {
						var pe *eventbus.PanicError
						require.ErrorAs(t, err, &pe)
						continue
					}
					require.NoError(t, err)
				}
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, []int{0, 2}, handled)
				var dead []string
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					var pe *eventbus.PanicError
					require.ErrorAs(t, dl.Err, &pe)
					dead = append(dead, fmt.Sprintf("%d after %d: %v", dl.Payload().(Order).N, dl.Attempt, pe.Value))
				}
				want := "1 after 2: Unwrap broke" // the probe's panic
				if tt.panics {
					want = "1 after 2: broken" // the handler's
				}
				require.Equal(t, []string{want}, dead)
			})
		})
	}
}

// TestRetryMaxElapsedFromFirstFailure pins what MaxElapsed's doc says:
// it counts from the first failure, the end of the first attempt, not
// from its start nor from the last failure. Every attempt takes a second
// and fails, a second apart: from the first failure, at 1s, the third
// attempt starts at 4s, within 3s, and a fourth would start at 6s, past
// them. No test had a handler that took time, so a count from the first
// attempt's start (two attempts) passed every test in either mode.
func TestRetryMaxElapsedFromFirstFailure(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			policy := eventbus.RetryPolicy{MaxAttempts: 10, InitialDelay: time.Second, Multiplier: 1, MaxElapsed: 3 * time.Second}
			b := newBus(t, &eventbus.Options{Mode: mode, Retry: policy})
			topic := newTopic[Order](t, b, "orders", nil)
			start := time.Now()
			var starts []time.Duration
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				starts = append(starts, time.Since(start))
				time.Sleep(time.Second)
				return errFlaky
			}, nil)
			err := topic.Publish(context.Background(), Order{Key: "k"})
			if mode == eventbus.Sync {
				require.ErrorIs(t, err, errFlaky)
			} else {
				require.NoError(t, err)
			}
			require.NoError(t, b.Flush(context.Background()))
			want := []time.Duration{0, 2 * time.Second, 4 * time.Second}
			if diff := cmp.Diff(want, starts); diff != "" {
				t.Errorf("attempts started at (-want +got):\n%s", diff)
			}
			dl, ok := firstDeadLetter(b)
			require.True(t, ok, "no dead letter")
			require.Equal(t, 3, dl.Attempt)
		})
	})
}

// TestPermanentNil pins what Permanent's doc says: Permanent(nil) is nil,
// so that a handler may return Permanent(call()) and succeed when call
// does. No test called it with nil: a Permanent that marked nil as well
// failed every such handler's successes, dead-lettered at once, and
// passed every test.
func TestPermanentNil(t *testing.T) {
	require.NoError(t, eventbus.Permanent(nil))
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 3}})
			topic := newTopic[Order](t, b, "orders", nil)
			var handled []int
			subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				handled = append(handled, e.Payload.N)
				return eventbus.Permanent(nil)
			}, nil)
			ctx := context.Background()
			for n := range 2 {
				require.NoError(t, topic.Publish(ctx, Order{N: n}))
			}
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, []int{0, 1}, handled, "each handled once")
			require.Zero(t, b.DeadLetters().Len(), "dead letters")
		})
	})
}

// TestShutdownSkipsRetriesOfRefusedPublishes has a handler, held until the
// bus has begun a graceful Shutdown, publish a follow-up event, which the
// stopping bus refuses with ErrClosed, under a retry policy of hours: every
// retry would be refused the same way, so the event is given up at once,
// and neither the Shutdown (Async) nor the Publish (Sync) waits for hours
// of retries. Another error is retried as before (TestShutdownCutsRetriesShort),
// and so is this one while the bus runs (TestRetriesErrClosedWhileRunning).
func TestShutdownSkipsRetriesOfRefusedPublishes(t *testing.T) {
	for name, mode := range map[string]eventbus.Mode{"async": eventbus.Async, "sync": eventbus.Sync} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: mode, Retry: eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Hour}})
				orders := newTopic[Order](t, b, "orders", nil)
				follow := newTopic[Order](t, b, "follow", nil)
				entered, release := make(chan struct{}), make(chan struct{})
				var attempts atomic.Int64
				subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
					if attempts.Add(1) == 1 {
						close(entered)
						<-release
					}
					return follow.Publish(ctx, e.Payload)
				}, nil)
				ctx := context.Background()
				published := make(chan error, 1)
				go func() { published <- orders.Publish(ctx, Order{Key: "k"}) }()
				<-entered
				start := time.Now()
				stopped := make(chan error, 1)
				go func() { stopped <- b.Shutdown(ctx) }()
				synctest.Wait() // the bus is stopping
				close(release)
				require.NoError(t, <-stopped)
				err := <-published
				if mode == eventbus.Sync {
					require.ErrorIs(t, err, eventbus.ErrClosed)
				} else {
					require.NoError(t, err)
				}
				require.Less(t, time.Since(start), time.Hour, "the stop waited for retries")
				require.EqualValues(t, 1, attempts.Load())
				var dead []int
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: eventbus.ErrClosed}) {
					dead = append(dead, dl.Attempt)
				}
				require.Equal(t, []int{1}, dead)
			})
		})
	}
}

// TestRetriesErrClosedWhileRunning checks that a handler's error matching
// ErrClosed is retried like any other while the bus runs: only once the
// bus has begun to stop does it mean that the stop refused what the
// handler published (TestShutdownSkipsRetriesOfRefusedPublishes). A
// handler whose own client reports a closed connection, or that writes to
// a store being reopened, gets its retries.
func TestRetriesErrClosedWhileRunning(t *testing.T) {
	for name, mode := range map[string]eventbus.Mode{"async": eventbus.Async, "sync": eventbus.Sync} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: mode, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}})
				orders := newTopic[Order](t, b, "orders", nil)
				attempts := 0
				subscribe(t, orders, "s", func(context.Context, eventbus.Event[Order]) error {
					if attempts++; attempts < 3 {
						return fmt.Errorf("write: %w", eventbus.ErrClosed)
					}
					return nil
				}, nil)
				ctx := context.Background()
				require.NoError(t, orders.Publish(ctx, Order{Key: "k"}))
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, 3, attempts)
				require.Zero(t, b.DeadLetters().Len(), "dead letters")
			})
		})
	}
}

// TestKeylessRetriesWaitForNoOther checks that failed events without a key
// wait for their retries each on its own, as keyless events promise no
// order: one that fails again and again does not hold back the retry of
// another that failed beside it.
func TestKeylessRetriesWaitForNoOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second, Multiplier: 1}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		attempts := map[int][]time.Duration{}
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			n := e.Payload.N
			attempts[n] = append(attempts[n], time.Since(start))
			if n == 1 || len(attempts[n]) == 1 { // 1 always fails, 2 once
				return errFlaky
			}
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, topic.Publish(ctx, Order{N: 2}))
		require.NoError(t, b.Flush(ctx))
		want := map[int][]time.Duration{1: {0, time.Second, 2 * time.Second}, 2: {0, time.Second}}
		if diff := cmp.Diff(want, attempts); diff != "" {
			t.Errorf("attempts by event (-want +got):\n%s", diff)
		}
	})
}

// TestRetryOfAnEventQueuedBehindARetry checks that an event that waited in
// its key's lane behind a retry, and fails in turn there, is retried by the
// same policy, MaxElapsed measured from its own first failure, and that its
// dead letter's FirstFailure is that failure's time.
func TestRetryOfAnEventQueuedBehindARetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second, Multiplier: 1, MaxElapsed: time.Hour}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var log []string
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			log = append(log, fmt.Sprintf("%d@%v", e.Payload.N, time.Since(start)))
			if e.Payload.N == 2 || len(log) == 1 {
				return errFlaky
			}
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 1}))
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2}))
		require.NoError(t, b.Flush(ctx))
		if diff := cmp.Diff([]string{"1@0s", "1@1s", "2@1s", "2@2s"}, log); diff != "" {
			t.Errorf("attempts (-want +got):\n%s", diff)
		}
		var got []string
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			got = append(got, fmt.Sprintf("%d first@%v last@%v", dl.Payload().(Order).N, dl.FirstFailure.Sub(start), dl.LastFailure.Sub(start)))
		}
		if diff := cmp.Diff([]string{"2 first@1s last@2s"}, got); diff != "" {
			t.Errorf("dead letters (-want +got):\n%s", diff)
		}
	})
}
