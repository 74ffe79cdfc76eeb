package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

func TestBatchSizesAndOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var sizes []int
		perKey := map[string][]int{}
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			if len(sizes) == 0 {
				<-gate // hold the first batch while the rest queue up
			}
			sizes = append(sizes, len(events))
			for _, e := range events {
				perKey[e.Key] = append(perKey[e.Key], e.Payload.N)
			}
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 4})
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 0}))
		synctest.Wait()
		for i := 1; i <= 10; i++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint([]string{"a", "b"}[i%2]), N: i}))
		}
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 4, 4, 2}, sizes)
		require.Equal(t, map[string][]int{"a": {0, 2, 4, 6, 8, 10}, "b": {1, 3, 5, 7, 9}}, perKey)
	})
}

func TestBatchPartialFailureRetriesOnlyFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var calls [][]int
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			if len(calls) == 0 {
				<-gate
			}
			var ns []int
			failed := map[int]error{}
			for i, e := range events {
				ns = append(ns, e.Payload.N)
				if e.Payload.N%3 == 0 { // 3 and 6 always fail
					failed[i] = fmt.Errorf("bad %d", e.Payload.N)
				}
			}
			calls = append(calls, ns)
			if len(failed) > 0 {
				return &eventbus.BatchError{Failed: failed}
			}
			return nil
		}, nil)
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "k0", N: 1}))
		synctest.Wait()
		for n := 2; n <= 7; n++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint("k", n), N: n}))
		}
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.Len(t, calls, 4)
		require.Equal(t, [][]int{{1}, {2, 3, 4, 5, 6, 7}}, calls[:2])
		require.ElementsMatch(t, [][]int{{3}, {6}}, calls[2:], "only the failed ones, one at a time, in any order across keys")
		var dead []string
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, fmt.Sprintf("%d:%d:%v", dl.Payload().(Order).N, dl.Attempt, dl.Err))
		}
		require.ElementsMatch(t, []string{"3:2:bad 3", "6:2:bad 6"}, dead)
		m := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 5, m.Handled)
		require.EqualValues(t, 4, m.Failed)
		require.EqualValues(t, 2, m.DeadLettered)
	})
}

// TestBatchChangesStayInTheBatch changes the events of a batch in place, as
// a handler converting them for its bulk write may: the retries, one at a
// time, and the dead letters get the events as published, as a Handler's
// do, and so do the dead letters of a handler that calls runtime.Goexit.
// They got the changed events, the key too, so that the retry of a failed
// event ran under its changed key, behind nothing of its own.
func TestBatchChangesStayInTheBatch(t *testing.T) {
	for _, how := range []string{"error", "goexit"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
				topic := newTopic[Order](t, b, "orders", nil)
				gate := make(chan struct{})
				var calls [][]string
				_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
					if len(calls) == 0 {
						<-gate // hold the first batch while the next two queue up
					}
					var seen []string
					for i := range events {
						seen = append(seen, fmt.Sprintf("%s%d", events[i].Key, events[i].Payload.N))
						events[i].Key, events[i].Payload.N = "cents", events[i].Payload.N*100
					}
					calls = append(calls, seen)
					if len(calls) == 2 {
						if how == "goexit" {
							runtime.Goexit()
						}
						return &eventbus.BatchError{Failed: map[int]error{0: errFlaky, 1: eventbus.Permanent(errFlaky)}}
					}
					return nil
				}, nil)
				require.NoError(t, err)
				ctx := context.Background()
				require.NoError(t, topic.Publish(ctx, Order{Key: "x", N: 1}))
				synctest.Wait()
				require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2}))
				require.NoError(t, topic.Publish(ctx, Order{Key: "b", N: 3}))
				close(gate)
				require.NoError(t, b.Flush(ctx))
				want := [][]string{{"x1"}, {"a2", "b3"}, {"a2"}} // a2 retried
				if how == "goexit" {
					want = want[:2]
				}
				require.Equal(t, want, calls)
				var dead []string
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					dead = append(dead, fmt.Sprintf("%s%d", dl.Key, dl.Payload().(Order).N))
				}
				want2 := []string{"b3"}
				if how == "goexit" {
					want2 = []string{"a2", "b3"}
				}
				require.Equal(t, want2, dead, "dead letters as published")
			})
		})
	}
}

// TestBatchSameKeyFailures fails a batch holding two events of one key:
// both are retried, in order.
func TestBatchSameKeyFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		first := true
		var handled []int
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			if first {
				first = false
				<-gate // hold the first batch while the next two queue up
				return nil
			}
			if len(events) > 1 {
				return errors.New("db down")
			}
			handled = append(handled, events[0].Payload.N)
			return nil
		}, nil)
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "x"}))
		synctest.Wait()
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 1}))
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2}))
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 2}, handled, "both retried, in order")
		m := b.Metrics().Subscriptions[0]
		require.Zero(t, m.Pending)
		require.EqualValues(t, 3, m.Handled)
	})
}

var modeName = map[eventbus.Mode]string{eventbus.Async: "async", eventbus.Sync: "sync"}

// TestBatchWholeFailureAndBadIndex checks the errors that fail every
// event of a batch, in both modes: in Sync mode, and on retries, each batch
// holds one event.
func TestBatchWholeFailureAndBadIndex(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want error
	}{
		{"plain error", errFlaky, errFlaky},
		{"panic", nil, nil},
		{"bad index", &eventbus.BatchError{Failed: map[int]error{7: errFlaky}}, eventbus.ErrInvalid},
		{"negative index", &eventbus.BatchError{Failed: map[int]error{-1: errFlaky}}, eventbus.ErrInvalid},
	} {
		for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
			t.Run(fmt.Sprintf("%s/%s", tt.name, modeName[mode]), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode})
					topic := newTopic[Order](t, b, "orders", nil)
					_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
						if tt.err == nil {
							panic("batch panic")
						}
						return tt.err
					}, nil)
					require.NoError(t, err)
					for i := range 3 {
						err := topic.Publish(context.Background(), Order{N: i})
						if mode == eventbus.Async {
							require.NoError(t, err)
						} else {
							require.Error(t, err, "a Sync publish returns its handler's error")
						}
					}
					require.NoError(t, b.Flush(context.Background()))
					require.Equal(t, 3, b.DeadLetters().Len(), "every event failed")
					for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
						if tt.want != nil {
							require.ErrorIs(t, dl.Err, tt.want)
						} else {
							var pe *eventbus.PanicError
							require.ErrorAs(t, dl.Err, &pe)
						}
					}
				})
			})
		}
	}
}

// TestPermanentBatchErrorWithBadIndex has a batch handler return a
// *BatchError marked Permanent that also names an index past the batch:
// every event fails, as for any bad index, but for good, as Permanent's
// doc says, "whatever the retry policy says", and the error quotes the
// handler's. The bad index dropped the mark, so every event was retried
// until MaxAttempts, and the handler's errors were lost.
func TestPermanentBatchErrorWithBadIndex(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(modeName[mode], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 4, InitialDelay: time.Second}})
				topic := newTopic[Order](t, b, "orders", nil)
				gate := make(chan struct{})
				calls := 0
				_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
					if events[0].Payload.N == 0 {
						<-gate // hold the worker while the next two queue up
						return nil
					}
					calls++
					// Event 0 failed for good; the handler miscounts and
					// names an index past the batch too.
					return eventbus.Permanent(&eventbus.BatchError{Failed: map[int]error{0: errFlaky, len(events): errFlaky}})
				}, nil)
				require.NoError(t, err)
				ctx := context.Background()
				if mode == eventbus.Async {
					require.NoError(t, topic.Publish(ctx, Order{N: 0}))
					synctest.Wait()
					require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 1}))
					require.NoError(t, topic.Publish(ctx, Order{Key: "b", N: 2}))
					close(gate)
					require.NoError(t, b.Flush(ctx))
				} else {
					close(gate)
					require.Error(t, topic.Publish(ctx, Order{Key: "a", N: 1}))
					require.Error(t, topic.Publish(ctx, Order{Key: "b", N: 2}))
				}
				var attempts []int
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					require.ErrorIs(t, dl.Err, eventbus.ErrInvalid)
					require.ErrorContains(t, dl.Err, errFlaky.Error(), "the handler's error, quoted")
					attempts = append(attempts, dl.Attempt)
				}
				require.Equal(t, []int{1, 1}, attempts, "dead letters' attempts: a Permanent error is not retried")
				wantCalls := 1 // one batch of two
				if mode == eventbus.Sync {
					wantCalls = 2 // a batch of one per publish
				}
				require.Equal(t, wantCalls, calls, "handler calls")
			})
		})
	}
}

// TestBatchErrorNamingNone checks that a *BatchError naming no event, which
// a handler may return after collecting failures into an empty map, fails
// none, in both modes.
func TestBatchErrorNamingNone(t *testing.T) {
	for _, failed := range []map[int]error{nil, {}} {
		for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode, Metrics: true})
			topic := newTopic[Order](t, b, "orders", nil)
			n := 0
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				n += len(events)
				return &eventbus.BatchError{Failed: failed}
			}, nil)
			require.NoError(t, err)
			for i := range 3 {
				require.NoError(t, topic.Publish(context.Background(), Order{N: i}))
			}
			require.NoError(t, b.Flush(context.Background()))
			require.Equal(t, 3, n)
			require.Zero(t, b.DeadLetters().Len(), "map %v, %s: nothing failed", failed, modeName[mode])
			require.EqualValues(t, 3, b.Metrics().Subscriptions[0].Handled)
		}
	}
}

// TestBatchErrorNilPointer gives the bus the classic typed nil: a batch
// handler that collects failures in a *BatchError it makes on the first
// one, and returns it, nil when nothing failed, as an error that is not
// nil. It names no event, so it fails none, in both modes, first attempts
// and retries; a nil *BatchError's methods do not panic either. The worker
// read its map through the nil pointer outside any recover, so the first
// batch crashed the process in Async mode.
func TestBatchErrorNilPointer(t *testing.T) {
	var none *eventbus.BatchError
	require.Equal(t, "eventbus: 0 events of the batch failed", none.Error())
	require.Empty(t, none.Unwrap())
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode, Metrics: true, Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
			topic := newTopic[Order](t, b, "orders", nil)
			var handled []int
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				var failed *eventbus.BatchError
				for i, e := range events {
					if e.Payload.N == 1 && len(events) > 1 { // fails in a batch, passes on its own
						if failed == nil {
							failed = &eventbus.BatchError{Failed: map[int]error{}}
						}
						failed.Failed[i] = errFlaky
						continue
					}
					handled = append(handled, e.Payload.N)
				}
				return failed
			}, &eventbus.SubscriptionOptions{BatchSize: 3, BatchWait: time.Millisecond})
			require.NoError(t, err)
			for i := range 6 { // a batch where 1 fails, then one where none does
				require.NoError(t, topic.Publish(context.Background(), Order{N: i}))
				if i == 2 {
					require.NoError(t, b.Flush(context.Background()))
				}
			}
			require.NoError(t, b.Flush(context.Background()))
			if mode == eventbus.Async {
				require.Equal(t, []int{0, 2, 1, 3, 4, 5}, handled, "1 retried on its own")
			} else {
				require.Equal(t, []int{0, 1, 2, 3, 4, 5}, handled)
			}
			require.Zero(t, b.DeadLetters().Len())
			require.EqualValues(t, 6, b.Metrics().Subscriptions[0].Handled)
		})
	})
}

// TestBatchHandlerContext checks what BatchHandler's doc says of its
// context: on a first attempt in Async mode it links what it publishes to
// no event and passes no trace context on unless told to; a retry gets the
// event's handler context.
func TestBatchHandlerContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
		topic := newTopic[Order](t, b, "orders", nil)
		follow := newTopic[string](t, b, "follow", nil)
		var got []string
		subscribe(t, follow, "s", func(_ context.Context, e eventbus.Event[string]) error {
			got = append(got, fmt.Sprintf("%s caused=%v tp=%v", e.Payload, !e.CausationID.IsZero(), e.Metadata[eventbus.TraceparentKey] == tp))
			return nil
		}, nil)
		attempt := 0
		_, err := topic.SubscribeBatch("bulk", func(ctx context.Context, events []eventbus.Event[Order]) error {
			attempt++
			if err := follow.Publish(ctx, fmt.Sprint("plain", attempt)); err != nil {
				return err
			}
			tctx, err := eventbus.WithTraceparent(ctx, events[0].Metadata[eventbus.TraceparentKey])
			if err != nil {
				return err
			}
			if err := follow.Publish(tctx, fmt.Sprint("traced", attempt)); err != nil {
				return err
			}
			if attempt == 1 {
				return errFlaky
			}
			return nil
		}, nil)
		require.NoError(t, err)
		ctx, err := eventbus.WithTraceparent(context.Background(), tp)
		require.NoError(t, err)
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, b.Flush(context.Background()))
		synctest.Wait()
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, []string{
			"plain1 caused=false tp=false", "traced1 caused=false tp=true",
			"plain2 caused=true tp=true", "traced2 caused=true tp=true",
		}, got)
	})
}

func TestBatchWaitGathers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		var sizes []int
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(events))
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 3, BatchWait: 10 * time.Millisecond})
		require.NoError(t, err)
		ctx := context.Background()
		for i := range 5 { // one event per millisecond
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{3, 2}, sizes, "full at 3; the rest after the wait")
	})
}

func TestBatchBadInput(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	ok := func(context.Context, []eventbus.Event[Order]) error { return nil }
	_, err := topic.SubscribeBatch("a", nil, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	_, err = topic.SubscribeBatch("b", ok, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second)}})
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	_, err = topic.SubscribeBatch("c", ok, &eventbus.SubscriptionOptions{BatchSize: -1})
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	_, err = topic.SubscribeBatch("d", ok, &eventbus.SubscriptionOptions{BatchWait: -time.Second})
	require.ErrorIs(t, err, eventbus.ErrInvalid)
}

func TestBatchInSyncMode(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	errOdd := errors.New("odd")
	_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
		if len(events) != 1 {
			return fmt.Errorf("got %d events", len(events))
		}
		if events[0].Payload.N%2 == 1 {
			return &eventbus.BatchError{Failed: map[int]error{0: errOdd}}
		}
		return nil
	}, nil)
	require.NoError(t, err)
	require.NoError(t, topic.Publish(context.Background(), Order{N: 2}))
	err = topic.Publish(context.Background(), Order{N: 3})
	require.ErrorIs(t, err, errOdd)
	var be *eventbus.BatchError
	require.False(t, errors.As(err, &be), "the event's own error, not the batch's")
}

// TestBatchWaitEndsForARetry checks that a worker gathering a batch stops
// waiting when a retry comes due: the retry runs on time, not after
// BatchWait, which may be much longer than the retry's delay.
func TestBatchWaitEndsForARetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: 100 * time.Millisecond}
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var log []string
		failed := false
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			for _, e := range events {
				log = append(log, fmt.Sprintf("%s@%v", e.Key, time.Since(start)))
			}
			if events[0].Key == "a" && !failed {
				failed = true
				return errFlaky
			}
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 10, BatchWait: time.Second})
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "a"}))
		time.Sleep(1050 * time.Millisecond) // a failed at 1s, after the wait; its retry is due at 1.1s
		require.NoError(t, topic.Publish(ctx, Order{Key: "b"}))
		require.NoError(t, b.Flush(ctx))
		want := []string{"a@1s", "b@1.1s", "a@1.1s"}
		if diff := cmp.Diff(want, log); diff != "" {
			t.Errorf("handling (-want +got):\n%s", diff)
		}
	})
}

// TestBatchErrorPermanent checks that Permanent around a *BatchError marks
// the events it names: they go to the dead-letter queue after one attempt,
// whatever the retry policy, in both modes.
func TestBatchErrorPermanent(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode, Retry: policy})
			topic := newTopic[Order](t, b, "orders", nil)
			attempts := map[int]int{}
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				failed := map[int]error{}
				for i, e := range events {
					attempts[e.Payload.N]++
					if e.Payload.N == 1 {
						failed[i] = errFlaky
					}
				}
				return eventbus.Permanent(&eventbus.BatchError{Failed: failed})
			}, nil)
			require.NoError(t, err)
			ctx := context.Background()
			for n := range 3 {
				err := topic.Publish(ctx, Order{Key: fmt.Sprint(n), N: n})
				if mode == eventbus.Sync && n == 1 {
					require.ErrorIs(t, err, errFlaky)
				} else {
					require.NoError(t, err)
				}
			}
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, map[int]int{0: 1, 1: 1, 2: 1}, attempts, "attempts by event")
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			require.Equal(t, 1, dl.Payload().(Order).N)
			require.Equal(t, 1, dl.Attempt)
			require.ErrorIs(t, dl.Err, errFlaky)
		})
	})
}

// TestBatchPanicFailsAll checks that a batch handler's panic fails every
// event of the batch, even when the panic value is a *BatchError naming
// only some: the handler stopped part way, so none is known to be handled.
func TestBatchPanicFailsAll(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode})
			topic := newTopic[Order](t, b, "orders", nil)
			gate := make(chan struct{})
			first := true
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				if first && mode == eventbus.Async {
					first = false
					<-gate // hold the first batch while the others queue up
				}
				panic(&eventbus.BatchError{Failed: map[int]error{0: errFlaky}})
			}, nil)
			require.NoError(t, err)
			ctx := context.Background()
			for n := range 3 {
				err := topic.Publish(ctx, Order{N: n})
				if mode == eventbus.Async {
					require.NoError(t, err)
					synctest.Wait()
				} else {
					var pe *eventbus.PanicError
					require.ErrorAs(t, err, &pe)
				}
			}
			close(gate)
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, 3, b.DeadLetters().Len(), "every event failed")
			for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				var pe *eventbus.PanicError
				require.ErrorAs(t, dl.Err, &pe, "event %d", dl.Payload().(Order).N)
			}
		})
	})
}

// errQuota is an error type that a batch handler reports for some events.
type errQuota struct{ key string }

func (e *errQuota) Error() string { return "quota exceeded for " + e.key }

// TestBatchErrorUnwrap checks that errors.Is and errors.As see the events'
// errors through a *BatchError, in the order of their indexes, whether it
// is returned as is or wrapped.
func TestBatchErrorUnwrap(t *testing.T) {
	quota := &errQuota{key: "b"}
	be := &eventbus.BatchError{Failed: map[int]error{4: quota, 0: errFlaky, 2: nil, 9: context.DeadlineExceeded}}
	if diff := cmp.Diff([]error{errFlaky, quota, context.DeadlineExceeded}, be.Unwrap(), cmpopts.EquateErrors()); diff != "" {
		t.Errorf("Unwrap() (-want +got):\n%s", diff)
	}
	for _, err := range []error{be, fmt.Errorf("saving: %w", be), eventbus.Permanent(be)} {
		for _, target := range []error{errFlaky, context.DeadlineExceeded} {
			if !errors.Is(err, target) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, target)
			}
		}
		if errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("errors.Is(%v, ErrInvalid) = true, want false", err)
		}
		var got *errQuota
		if !errors.As(err, &got) || got != quota {
			t.Errorf("errors.As(%v, *errQuota) = %v, want %v", err, got, quota)
		}
	}
	require.Empty(t, (&eventbus.BatchError{}).Unwrap(), "a BatchError naming none wraps none")
}

// TestBatchErrorMessage checks that a *BatchError's message lists the
// failed events by index, in increasing order whatever the map's, with each
// one's error, a nil one too.
func TestBatchErrorMessage(t *testing.T) {
	tests := []struct {
		name   string
		failed map[int]error
		want   string
	}{
		{"none", nil, "eventbus: 0 events of the batch failed"},
		{"one", map[int]error{3: errFlaky}, "eventbus: 1 event of the batch failed; [3]: " + errFlaky.Error()},
		{"several", map[int]error{7: errors.New("seven"), 0: errors.New("zero"), 2: nil, 10: errors.New("ten")},
			"eventbus: 4 events of the batch failed; [0]: zero; [2]: <nil>; [7]: seven; [10]: ten"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &eventbus.BatchError{Failed: tt.failed}
			for range 5 { // map order changes from one range to the next
				if got := be.Error(); got != tt.want {
					t.Fatalf("Error() = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

// TestBatchErrorPermanentInside checks that a Permanent mark on one event's
// error in a *BatchError marks that event only: the others it names are
// retried, although errors.As finds the mark through the BatchError.
func TestBatchErrorPermanentInside(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode, Retry: policy})
			topic := newTopic[Order](t, b, "orders", nil)
			gate := make(chan struct{})
			first := true
			attempts := map[int]int{}
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				if first && mode == eventbus.Async {
					first = false
					<-gate // hold the first batch while the others queue up
				}
				failed := map[int]error{}
				for i, e := range events {
					attempts[e.Payload.N]++
					switch e.Payload.N {
					case 1:
						failed[i] = eventbus.Permanent(errFlaky)
					case 2:
						failed[i] = errFlaky
					}
				}
				return &eventbus.BatchError{Failed: failed}
			}, nil)
			require.NoError(t, err)
			ctx := context.Background()
			for n := range 3 {
				err := topic.Publish(ctx, Order{Key: fmt.Sprint(n), N: n})
				if mode == eventbus.Sync && n > 0 {
					require.ErrorIs(t, err, errFlaky)
				} else {
					require.NoError(t, err)
				}
			}
			close(gate)
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, map[int]int{0: 1, 1: 1, 2: 3}, attempts, "attempts by event")
			var dead []string
			for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				dead = append(dead, fmt.Sprintf("%d after %d", dl.Payload().(Order).N, dl.Attempt))
			}
			require.ElementsMatch(t, []string{"1 after 1", "2 after 3"}, dead)
		})
	})
}

// TestBatchErrorPermanentWrapped checks that a Permanent mark around a
// *BatchError counts however the two are wrapped, and one inside it only
// for its event.
func TestBatchErrorPermanentWrapped(t *testing.T) {
	inner := func() *eventbus.BatchError {
		return &eventbus.BatchError{Failed: map[int]error{0: errFlaky, 1: eventbus.Permanent(errFlaky)}}
	}
	for _, tt := range []struct {
		name string
		err  error
		want string // attempts of events 0 and 1
	}{
		{"bare", inner(), "3 1"},
		{"wrapped", fmt.Errorf("bulk: %w", inner()), "3 1"},
		{"joined", errors.Join(errors.New("also"), inner()), "3 1"},
		{"permanent wrapped", fmt.Errorf("bulk: %w", eventbus.Permanent(inner())), "1 1"},
		{"permanent joined", errors.Join(errors.New("also"), eventbus.Permanent(inner())), "1 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				policy := eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}
				b := newBus(t, &eventbus.Options{Workers: 1, Retry: policy})
				topic := newTopic[Order](t, b, "orders", nil)
				gate := make(chan struct{})
				first := true
				attempts := map[int]int{}
				_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
					if first {
						first = false
						<-gate // hold the first batch while the other two queue up
						return nil
					}
					for _, e := range events {
						attempts[e.Payload.N]++
					}
					if len(events) == 2 {
						return tt.err
					}
					return errFlaky // a retry, one event at a time
				}, nil)
				require.NoError(t, err)
				ctx := context.Background()
				for n := -1; n < 2; n++ {
					require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint(n), N: n}))
					synctest.Wait()
				}
				close(gate)
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, tt.want, fmt.Sprint(attempts[0], " ", attempts[1]), "attempts of events 0 and 1")
			})
		})
	}
}

func ExampleBatchError_Unwrap() {
	errFull := errors.New("disk full")
	err := fmt.Errorf("bulk insert: %w", &eventbus.BatchError{Failed: map[int]error{
		3: errFull,
		1: errors.New("bad row"),
	}})
	fmt.Println(errors.Is(err, errFull))
	var be *eventbus.BatchError
	if errors.As(err, &be) {
		fmt.Println(be.Unwrap())
	}
	// Output:
	// true
	// [bad row disk full]
}

// TestBatchErrorNilEntry checks that an event a *BatchError names with a
// nil error counts as failed, not handled, with an error saying so, in both
// modes.
func TestBatchErrorNilEntry(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode, Metrics: true})
			topic := newTopic[Order](t, b, "orders", nil)
			gate := make(chan struct{})
			first := true
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				if first && mode == eventbus.Async {
					first = false
					<-gate // hold the first batch while the others queue up
				}
				failed := map[int]error{}
				for i, e := range events {
					if e.Payload.N == 2 {
						var err error // the handler meant to set it
						failed[i] = err
					}
				}
				return &eventbus.BatchError{Failed: failed}
			}, nil)
			require.NoError(t, err)
			ctx := context.Background()
			for n := range 4 {
				err := topic.Publish(ctx, Order{N: n})
				if mode == eventbus.Sync && n == 2 {
					require.ErrorIs(t, err, eventbus.ErrInvalid)
				} else {
					require.NoError(t, err, "Publish(%d)", n)
				}
			}
			close(gate)
			require.NoError(t, b.Flush(ctx))
			dl, ok := firstDeadLetter(b)
			require.True(t, ok, "the event named with a nil error is dead-lettered")
			require.Equal(t, 1, b.DeadLetters().Len())
			require.Equal(t, 2, dl.Payload().(Order).N)
			require.ErrorIs(t, dl.Err, eventbus.ErrInvalid)
			require.ErrorContains(t, dl.Err, "failed with a nil error")
			m := b.Metrics().Subscriptions[0]
			require.EqualValues(t, 3, m.Handled)
			require.EqualValues(t, 1, m.Failed)
			require.EqualValues(t, 1, m.DeadLettered)
		})
	})
}

// TestBatchWaitFillsLeftover checks that events left over when a worker
// cuts what it took into batches of BatchSize wait, as a smaller batch
// does, up to BatchWait for more to fill their batch, keeping each key's
// order.
func TestBatchWaitFillsLeftover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		start := time.Now()
		var batches []string
		perKey := map[string][]int{}
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			at := time.Since(start)
			if len(batches) == 0 {
				<-gate // hold the first batch while the next four queue up
			}
			var ns []int
			for _, e := range events {
				ns = append(ns, e.Payload.N)
				perKey[e.Key] = append(perKey[e.Key], e.Payload.N)
			}
			batches = append(batches, fmt.Sprintf("%v@%v", ns, at))
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 3, BatchWait: 10 * time.Millisecond})
		require.NoError(t, err)
		ctx := context.Background()
		publish := func(n int) {
			t.Helper()
			require.NoError(t, topic.Publish(ctx, Order{Key: []string{"a", "b"}[n%2], N: n}))
		}
		publish(0)
		time.Sleep(20 * time.Millisecond) // the first batch waited 10ms for more, then the gate
		for n := 1; n <= 4; n++ {
			publish(n)
		}
		close(gate)
		synctest.Wait() // 1, 2, 3 handled; 4 waits for more
		time.Sleep(5 * time.Millisecond)
		publish(5)
		publish(6)
		time.Sleep(5 * time.Millisecond)
		publish(7)
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, b.Flush(ctx))
		want := []string{"[0]@10ms", "[1 2 3]@20ms", "[4 5 6]@25ms", "[7]@40ms"}
		if diff := cmp.Diff(want, batches); diff != "" {
			t.Errorf("batches (-want +got):\n%s", diff)
		}
		require.Equal(t, map[string][]int{"a": {0, 2, 4, 6}, "b": {1, 3, 5, 7}}, perKey, "each key in publish order")
	})
}

// TestBatchLetsGoOfPayloads checks that a batch subscription's worker keeps
// no payload of the events it dead-lettered once their dead letters are
// discarded: those of a batch abandoned by Close, and those of a batch whose
// handler called runtime.Goexit. The worker's slice for the batch handler's
// events kept them, for good after Close (the bus keeps its subscriptions
// for Metrics).
func TestBatchLetsGoOfPayloads(t *testing.T) {
	type blob struct {
		_ [1 << 16]byte
		n int
	}
	for stop, events := range map[string]int{"close": 3, "goexit": 2} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1})
				topic := newTopic[*blob](t, b, "blobs", nil)
				gate := make(chan struct{})
				_, err := topic.SubscribeBatch("s", func(ctx context.Context, batch []eventbus.Event[*blob]) error {
					switch batch[0].Payload.n {
					case 0: // hold the first batch while the others queue up
						<-gate
					case 1:
						if stop == "goexit" {
							runtime.Goexit()
						}
						<-ctx.Done() // until Close
						return ctx.Err()
					}
					return nil
				}, &eventbus.SubscriptionOptions{BatchSize: 1})
				require.NoError(t, err)
				var payloads []weak.Pointer[blob]
				for n := range events {
					p := &blob{n: n}
					payloads = append(payloads, weak.Make(p))
					require.NoError(t, topic.Publish(context.Background(), p))
					synctest.Wait()
				}
				close(gate)
				synctest.Wait()
				if stop == "close" {
					require.Error(t, b.Close(), "the third event is abandoned")
				} else {
					require.NoError(t, b.Flush(context.Background()))
				}
				require.NotZero(t, b.DeadLetters().Discard(eventbus.DeadLetterFilter{}))
				synctest.Wait()
				runtime.GC()
				for n, w := range payloads {
					require.True(t, w.Value() == nil, "the worker still holds payload %d", n)
				}
			})
		})
	}
}

// TestBatchErrorJoinedWithAnother checks that a *BatchError joined with
// another error, as a handler returns when some rows were bad and then its
// commit failed too, fails every event of the batch with the other error,
// not only the ones the *BatchError names: the rest were not handled
// either. Named events carry their own error as well. So does a typed nil
// *BatchError joined with another error. Both modes.
func TestBatchErrorJoinedWithAnother(t *testing.T) {
	errRow := errors.New("bad row")
	errCommit := errors.New("commit failed")
	for _, typedNil := range []bool{false, true} {
		t.Run(fmt.Sprint("typed nil=", typedNil), func(t *testing.T) {
			testBatchErrorJoinedWithAnother(t, typedNil, errRow, errCommit)
		})
	}
}

func testBatchErrorJoinedWithAnother(t *testing.T, typedNil bool, errRow, errCommit error) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1, Mode: mode})
			topic := newTopic[Order](t, b, "orders", nil)
			_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
				be := &eventbus.BatchError{Failed: map[int]error{}}
				for i, e := range events {
					if e.Payload.N == 0 {
						be.Failed[i] = errRow
					}
				}
				if typedNil {
					var none *eventbus.BatchError // none named
					return errors.Join(none, errCommit)
				}
				return errors.Join(be, errCommit)
			}, nil)
			require.NoError(t, err)
			ctx := context.Background()
			for i := range 3 {
				_ = topic.Publish(ctx, Order{N: i}) // Sync returns the error
			}
			require.NoError(t, b.Flush(ctx))
			got := map[int]error{}
			for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				o, ok := dl.Payload().(Order)
				require.True(t, ok)
				got[o.N] = dl.Err
			}
			require.Len(t, got, 3, "every event failed: the commit failed")
			for n, err := range got {
				require.ErrorIs(t, err, errCommit, "event %d", n)
				if n == 0 && !typedNil {
					require.ErrorIs(t, err, errRow, "event 0 keeps its own")
				} else {
					require.NotErrorIs(t, err, errRow, "event %d", n)
				}
			}
		})
	})
}

// TestBatchAbandonKeepsKeyOrder checks that the events a batch
// subscription abandons when Close cuts a batch short reach the dead-letter
// queue in publish order, so that a Redrive, oldest first, hands them to
// the next subscription of the name in their key's order: the rest of the
// batch being handled comes before the events queued behind it.
func TestBatchAbandonKeepsKeyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		calls := 0
		_, err := topic.SubscribeBatch("bulk", func(ctx context.Context, events []eventbus.Event[Order]) error {
			calls++
			switch calls {
			case 1:
				<-gate // while 1 to 5 queue up, to be taken as one
			case 2:
				<-ctx.Done() // 1 and 2, until Close
			}
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 2})
		require.NoError(t, err)
		ctx := context.Background()
		for n := range 6 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
			synctest.Wait() // the first batch holds 0 alone
		}
		close(gate)
		synctest.Wait() // the second batch, 1 and 2, waits for Close
		for n := 6; n < 8; n++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		var got []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			got = append(got, dl.Payload().(Order).N)
		}
		if diff := cmp.Diff([]int{3, 4, 5, 6, 7}, got); diff != "" {
			t.Errorf("dead letters (-want +got):\n%s", diff)
		}
		if ue.Count != 5 {
			t.Errorf("Close() = %v, want 5 events undelivered", ue)
		}
	})
}

// TestBatchWaitEndsAtShutdown checks that a graceful Shutdown hands over a
// batch that waits for more at once: the queue takes no more events, so the
// worker waits out no BatchWait.
func TestBatchWaitEndsAtShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := eventbus.New(&eventbus.Options{Workers: 1})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var got []string
		_, err = topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			for _, e := range events {
				got = append(got, fmt.Sprintf("%d@%v", e.Payload.N, time.Since(start)))
			}
			return nil
		}, &eventbus.SubscriptionOptions{BatchSize: 10, BatchWait: time.Hour})
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		synctest.Wait() // the worker waits for more
		require.NoError(t, b.Shutdown(ctx))
		if diff := cmp.Diff([]string{"1@0s"}, got); diff != "" {
			t.Errorf("handled (-want +got):\n%s", diff)
		}
	})
}

// TestBatchPermanentFailureWaitsBehindItsKey fails, in one batch, an event
// with an error to retry and a later one of its key for good: the later one
// must go to the dead-letter queue after the earlier one, once that one's
// attempts are spent, so that a Redrive, oldest first, hands them out in
// their key's order. It was dead-lettered at once, ahead of the earlier
// one, and the Redrive handled the key's events 2, then 1.
func TestBatchPermanentFailureWaitsBehindItsKey(t *testing.T) {
	// fail fails events: a:2 for good with bad, the others with an error
	// to retry.
	fail := func(events []eventbus.Event[Order], bad error) error {
		be := &eventbus.BatchError{Failed: map[int]error{}}
		for i, e := range events {
			be.Failed[i] = errors.New("temporary")
			if e.Payload.N == 2 {
				be.Failed[i] = eventbus.Permanent(bad)
			}
		}
		return be
	}
	// publish publishes x, whose batch the handler holds until gate is
	// closed, then a:1 and a:2, which queue behind it, and closes gate.
	publish := func(t *testing.T, topic *eventbus.Topic[Order], gate chan struct{}) {
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "x"}))
		synctest.Wait() // the worker holds the first batch
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 1}))
		require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2}))
		close(gate)
	}
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var mu sync.Mutex
		first, fixed := true, false
		var redriven []int
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case fixed:
				for _, e := range events {
					redriven = append(redriven, e.Payload.N)
				}
				return nil
			case first: // holds the worker while a:1 and a:2 queue up behind
				first = false
				mu.Unlock()
				<-gate
				mu.Lock()
				return nil
			}
			return fail(events, errors.New("bad"))
		}, nil)
		require.NoError(t, err)
		publish(t, topic, gate)
		ctx := context.Background()
		require.NoError(t, b.Flush(ctx))

		var dead []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl.Payload().(Order).N)
		}
		require.Equal(t, []int{1, 2}, dead, "dead letters of key a, oldest first")
		mu.Lock()
		fixed = true
		mu.Unlock()
		_, err = b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
		require.NoError(t, err)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 2}, redriven, "key a redriven in publish order")
		s := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 2, s.DeadLettered, "dead-lettered once each")
	})

	// Closed while a:1 waits for its retry, the bus abandons a:1, and
	// dead-letters a:2 after it, as it failed: not abandoned, not counted
	// as undelivered, its error its own.
	synctest.Test(t, func(t *testing.T) {
		b, err := eventbus.New(&eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Hour}})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		errBad := errors.New("bad")
		gate := make(chan struct{})
		var mu sync.Mutex
		first := true
		_, err = topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			mu.Lock()
			if first {
				first = false
				mu.Unlock()
				<-gate
				return nil
			}
			mu.Unlock()
			return fail(events, errBad)
		}, nil)
		require.NoError(t, err)
		publish(t, topic, gate)
		synctest.Wait() // a:1 waits an hour for its retry, a:2 behind it
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		require.Equal(t, 1, ue.Count, "undelivered: a:1 alone")
		var dead []eventbus.DeadLetter
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl)
		}
		require.Len(t, dead, 2)
		require.Equal(t, 1, dead[0].Payload().(Order).N, "a:1 first")
		require.ErrorIs(t, dead[0].Err, eventbus.ErrClosed, "a:1 abandoned")
		require.Equal(t, 2, dead[1].Payload().(Order).N, "a:2 after it")
		require.ErrorIs(t, dead[1].Err, errBad)
		require.NotErrorIs(t, dead[1].Err, eventbus.ErrClosed, "a:2 failed for good, not abandoned: %v", dead[1].Err)
	})
}
