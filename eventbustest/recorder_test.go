package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// Order is a test payload keyed by its ID.
type Order struct {
	ID string
	N  int
	// note is unexported, and the checks compare it too.
	note string
}

func (o Order) AggregateID() string { return o.ID }

func newTopic[T any](t testing.TB, b *eventbus.Bus, name string) *eventbus.Topic[T] {
	t.Helper()
	topic, err := eventbus.NewTopic[T](b, name, nil)
	require.NoError(t, err)
	return topic
}

func publish[T any](t testing.TB, topic *eventbus.Topic[T], payloads ...T) {
	t.Helper()
	for _, p := range payloads {
		require.NoError(t, topic.Publish(context.Background(), p))
	}
}

func TestRecorderChecksPass(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(fmt.Sprint("mode=", mode), func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: mode})
			orders := newTopic[Order](t, b, "orders")
			rec := eventbustest.Record(t, orders)
			a, c := Order{ID: "a", N: 1, note: "x"}, Order{ID: "c", N: 3}
			publish(t, orders, a, c, a)
			require.NoError(t, b.Flush(t.Context()))

			require.True(t, rec.Want(a, c, a))
			require.True(t, rec.WantContains(a, a))
			require.True(t, rec.WantContains(c))
			require.True(t, rec.WantContains())
			require.True(t, rec.WantLen(3))
			header := eventbus.Header{Type: "Order", Topic: "orders", SchemaVersion: 1}
			want := make([]eventbus.Event[Order], 0, 3)
			for _, p := range []Order{a, c, a} {
				h := header
				h.Key = p.ID
				want = append(want, eventbus.Event[Order]{Header: h, Payload: p})
			}
			require.True(t, rec.WantEvents(want))
			events := rec.Events()
			require.Len(t, events, 3)
			require.Equal(t, "00000000000000000000000001", events[0].ID.String(), "IDs come from a Sequence")
		})
	}
}

// TestRecorderChecksPassForNothing checks what the README and Want's doc
// promise: Want() passes when nothing was published, as do the other
// checks for none. The payloads recorded are then an empty slice, and
// Want() gives a nil one: the two must compare equal.
func TestRecorderChecksPassForNothing(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(fmt.Sprint("mode=", mode), func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: mode})
			orders := newTopic[Order](t, b, "orders")
			spy := newSpy(t)
			rec := eventbustest.Record(spy, orders)
			require.NoError(t, b.Flush(t.Context()))

			require.True(t, rec.Want(), "Want()")
			require.True(t, rec.WantEvents(nil), "WantEvents(nil)")
			require.True(t, rec.WantEvents([]eventbus.Event[Order]{}), "WantEvents of an empty slice")
			require.True(t, rec.WantContains(), "WantContains()")
			require.True(t, rec.WantLen(0), "WantLen(0)")
			require.Empty(t, rec.Events())
			require.False(t, spy.Failed(), "a check of nothing reported %v", spy.errs)
		})
	}
}

// TestRecorderChecksFail checks that each check fails on a mismatch, and
// says what was expected and what was recorded.
func TestRecorderChecksFail(t *testing.T) {
	a, c := Order{ID: "a", N: 1}, Order{ID: "c", N: 3}
	tests := []struct {
		name  string
		check func(rec *eventbustest.Recorder[Order]) bool
		want  []string // parts of the failure message
	}{
		{"Want/order", func(r *eventbustest.Recorder[Order]) bool { return r.Want(c, a) }, []string{`topic "orders": payloads recorded (-want +got)`}},
		{"Want/none", func(r *eventbustest.Recorder[Order]) bool { return r.Want() }, []string{"payloads recorded", `"a"`, `"c"`}},
		{"Want/unexported", func(r *eventbustest.Recorder[Order]) bool {
			return r.Want(Order{ID: "a", N: 1, note: "differs"}, c)
		}, []string{"differs"}},
		{"WantEvents/key", func(r *eventbustest.Recorder[Order]) bool {
			h := eventbus.Header{Type: "Order", Topic: "orders", SchemaVersion: 1}
			return r.WantEvents([]eventbus.Event[Order]{{Header: h, Payload: a}, {Header: h, Payload: c}})
		}, []string{"events recorded (-want +got)", "Key"}},
		// Every header field counts but those the bus makes up.
		{"WantEvents/type", wantEventsWith(a, c, func(h *eventbus.Header) { h.Type = "order" }), []string{"events recorded (-want +got)", "Type"}},
		{"WantEvents/topic", wantEventsWith(a, c, func(h *eventbus.Header) { h.Topic = "shipped" }), []string{"events recorded (-want +got)", "Topic"}},
		{"WantEvents/schema version", wantEventsWith(a, c, func(h *eventbus.Header) { h.SchemaVersion = 2 }), []string{"events recorded (-want +got)", "SchemaVersion"}},
		{"WantEvents/metadata", wantEventsWith(a, c, func(h *eventbus.Header) { h.Metadata = eventbus.Metadata{"tenant": "acme"} }), []string{"events recorded (-want +got)", "tenant"}},
		{"WantContains/missing", func(r *eventbustest.Recorder[Order]) bool { return r.WantContains(a, Order{ID: "b"}) },
			[]string{"payloads not recorded", `ID:"b"`, "recorded 2 events", `0: key="a" eventbustest_test.Order{ID:"a", N:1, note:""}`, `1: key="c"`}},
		{"WantContains/twice", func(r *eventbustest.Recorder[Order]) bool { return r.WantContains(c, c) },
			[]string{"payloads not recorded", `Order{ID:"c", N:3, note:""}`}},
		{"WantLen/more", func(r *eventbustest.Recorder[Order]) bool { return r.WantLen(3) }, []string{"want 3 events, recorded 2 events:"}},
		{"WantLen/fewer", func(r *eventbustest.Recorder[Order]) bool { return r.WantLen(1) }, []string{"want 1 events, recorded 2 events:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
			orders := newTopic[Order](t, b, "orders")
			spy := newSpy(t)
			rec := eventbustest.Record(spy, orders)
			publish(t, orders, a, c)
			require.False(t, tt.check(rec), "the check returned true")
			spy.wantFailure(t, tt.want...)
		})
	}
}

// wantEventsWith returns a check that the events recorded are a and c
// with their right headers, but for what change does to each header.
func wantEventsWith(a, c Order, change func(*eventbus.Header)) func(r *eventbustest.Recorder[Order]) bool {
	return func(r *eventbustest.Recorder[Order]) bool {
		var want []eventbus.Event[Order]
		for _, p := range []Order{a, c} {
			h := eventbus.Header{Type: "Order", Topic: "orders", SchemaVersion: 1, Key: p.ID}
			change(&h)
			want = append(want, eventbus.Event[Order]{Header: h, Payload: p})
		}
		return r.WantEvents(want)
	}
}

func TestRecordTwiceOnOneTopic(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	first := eventbustest.Record(t, orders)
	second := eventbustest.Record(t, orders)
	publish(t, orders, Order{ID: "a"})
	first.Want(Order{ID: "a"})
	second.Want(Order{ID: "a"})
	// Record's doc promises the names, by which a test tells the
	// recorders' metrics and dead letters from its own subscriptions'.
	var names []string
	for _, m := range b.Metrics().Subscriptions {
		names = append(names, m.Subscription)
	}
	require.ElementsMatch(t, []string{"eventbustest-recorder", "eventbustest-recorder-2"}, names)
}

func TestRecordFailsOnClosedBus(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	orders := newTopic[Order](t, b, "orders")
	require.NoError(t, b.Close())
	spy := newSpy(t)
	var rec *eventbustest.Recorder[Order]
	spy.run(func() { rec = eventbustest.Record(spy, orders) })
	require.Nil(t, rec, "Record went on after Fatalf")
	spy.wantFailure(t, `Record("orders")`, eventbus.ErrClosed.Error())
}

// TestRecorderWaitForChain waits for an event that a handler publishes
// after a delay, which Flush does not wait for, and checks on the fake
// clock that Wait returned when it came, not at its deadline.
func TestRecorderWaitForChain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := eventbustest.NewBus(t, nil)
		orders := newTopic[Order](t, b, "orders")
		shipped := newTopic[string](t, b, "shipped")
		_, err := orders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[Order]) error {
			time.Sleep(3 * time.Second) // fake time
			return shipped.Publish(ctx, e.Payload.ID)
		}, nil)
		require.NoError(t, err)
		rec := eventbustest.Record(t, shipped)
		start := time.Now()
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		require.True(t, rec.Wait(t.Context(), func(events []eventbus.Event[string]) bool { return len(events) == 2 }))
		require.Equal(t, 6*time.Second, time.Since(start), "woken by the second event")
		rec.Want("a", "b")
		events := rec.Events()
		require.Equal(t, events[0].CausationID, events[0].CorrelationID, "caused by the first order")
		require.False(t, events[0].CausationID.IsZero())
	})
}

// TestRecorderWaitOutsideBubble publishes from another goroutine on the
// real clock.
func TestRecorderWaitOutsideBubble(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	orders := newTopic[Order](t, b, "orders")
	rec := eventbustest.Record(t, orders)
	var wg sync.WaitGroup
	defer wg.Wait() // even if Wait fails, so that Errorf comes before the test ends
	wg.Go(func() {
		for i := range 100 {
			if err := orders.Publish(context.Background(), Order{ID: "k", N: i}); err != nil {
				t.Errorf("Publish(%d) = %v", i, err)
			}
		}
	})
	require.True(t, rec.Wait(t.Context(), func(events []eventbus.Event[Order]) bool { return len(events) == 100 }))
	events := rec.Events()
	for i, e := range events {
		require.Equal(t, i, e.Payload.N, "publish order")
	}
}

// TestRecorderWaitFails checks that Wait gives up at its default deadline,
// or at the context's, on the fake clock, and says what it recorded.
func TestRecorderWaitFails(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration // of the context given to Wait; 0 for none
		wait    time.Duration
		want    []string
	}{
		{"default deadline", 0, 10 * time.Second, []string{
			`Wait on topic "orders": context deadline exceeded (Wait's default deadline, 10s) before the condition held; unfinished events in no subscription; recorded 1 events:`,
			`0: key="a" eventbustest_test.Order{ID:"a", N:1, note:""}`,
		}},
		{"context", time.Second, time.Second, []string{"context deadline exceeded", "recorded 1 events"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := eventbustest.NewBus(t, nil)
				orders := newTopic[Order](t, b, "orders")
				spy := newSpy(t)
				rec := eventbustest.Record(spy, orders)
				publish(t, orders, Order{ID: "a", N: 1})
				ctx := t.Context()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				start := time.Now()
				require.False(t, rec.Wait(ctx, func(events []eventbus.Event[Order]) bool { return len(events) == 2 }))
				require.Equal(t, tt.wait, time.Since(start), "gave up at the deadline, on the fake clock")
				spy.wantFailure(t, tt.want...)
			})
		})
	}
}

// TestRecorderWaitAfterClose checks that Wait on the recorder of a bus
// that is shut down fails at once, in both modes, without waiting for its
// deadline, and still passes when the condition holds for what was
// recorded.
func TestRecorderWaitAfterClose(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(fmt.Sprint("mode=", mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := eventbustest.NewBus(t, &eventbus.Options{Mode: mode})
				orders := newTopic[Order](t, b, "orders")
				spy := newSpy(t)
				rec := eventbustest.Record(spy, orders)
				publish(t, orders, Order{ID: "a", N: 1})
				require.NoError(t, b.Flush(t.Context()))
				require.NoError(t, b.Close())
				start := time.Now()
				require.True(t, rec.Wait(t.Context(), func(events []eventbus.Event[Order]) bool { return len(events) == 1 }),
					"the event published before Close was recorded")
				require.False(t, rec.Wait(t.Context(), func(events []eventbus.Event[Order]) bool { return len(events) == 2 }))
				require.Zero(t, time.Since(start), "no time passed, not even fake time")
				spy.wantFailure(t, `Wait on topic "orders": the bus is shut down and the condition does not hold: no event can come any more; recorded 1 events:`,
					`0: key="a" eventbustest_test.Order{ID:"a", N:1, note:""}`)
			})
		})
	}
}

// TestRecorderWaitEventThenStop checks what Wait documents once the bus
// has stopped: it checks cond once more before it fails. Here the last
// event comes, and the bus stops, while Wait runs cond, so that both wake
// it at once; Go's select takes either, and one that took the stop without
// looking again failed though the condition held, in about half the runs:
// TestRecorderWaitAfterClose's conditions hold, or not, before Wait waits.
func TestRecorderWaitEventThenStop(t *testing.T) {
	for range 32 {
		b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
		orders := newTopic[Order](t, b, "orders")
		spy := newSpy(t)
		rec := eventbustest.Record(spy, orders)
		first := true
		ok := rec.Wait(t.Context(), func(events []eventbus.Event[Order]) bool {
			if first {
				first = false
				publish(t, orders, Order{ID: "a"}) // recorded before Publish returns
				require.NoError(t, b.Close())
			}
			return len(events) == 1
		})
		require.True(t, ok, "Wait failed though the event it waited for came before the bus stopped: %v", spy.errs)
	}
}

// TestRecorderWaitDuringShutdown checks that Wait, called while the bus
// drains its queues to shut down, waits for the drain (events still queued
// may be recorded) before it fails.
func TestRecorderWaitDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := eventbustest.NewBus(t, nil)
		orders := newTopic[Order](t, b, "orders")
		shipped := newTopic[string](t, b, "shipped")
		spy := newSpy(t)
		rec := eventbustest.Record(spy, orders)
		gate := make(chan struct{})
		_, err := shipped.Subscribe("slow", func(context.Context, eventbus.Event[string]) error { <-gate; return nil }, nil)
		require.NoError(t, err)
		publish(t, shipped, "x")
		publish(t, orders, Order{ID: "a"})
		synctest.Wait()
		stopped := make(chan error)
		go func() { stopped <- b.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown waits for the slow handler
		waited := make(chan bool)
		go func() {
			waited <- rec.Wait(context.Background(), func(events []eventbus.Event[Order]) bool { return len(events) == 2 })
		}()
		synctest.Wait()
		select {
		case <-waited:
			t.Fatal("Wait returned while the bus was still draining")
		default:
		}
		close(gate)
		require.NoError(t, <-stopped)
		require.False(t, <-waited)
		spy.wantFailure(t, "the bus is shut down and the condition does not hold", "recorded 1 events")
	})
}

// Payment is a test payload whose String method leaves out what differs
// between two payments of one ID.
// Payment is a test payload whose String method leaves out what differs
// between two payments of one ID.
type Payment struct {
	ID    string
	Cents int
}

func (p Payment) String() string { return "payment " + p.ID }

// TestFailuresShowEveryField checks that failure messages show payloads
// field by field, not by their String method, which may hide the
// difference that failed the check.
func TestFailuresShowEveryField(t *testing.T) {
	checks := []struct {
		name  string
		check func(r *eventbustest.Recorder[Payment]) bool
	}{
		{"Want", func(r *eventbustest.Recorder[Payment]) bool { return r.Want() }},
		{"WantEvents", func(r *eventbustest.Recorder[Payment]) bool { return r.WantEvents(nil) }},
		{"WantContains", func(r *eventbustest.Recorder[Payment]) bool { return r.WantContains(Payment{ID: "a", Cents: 200}) }},
		{"WantLen", func(r *eventbustest.Recorder[Payment]) bool { return r.WantLen(2) }},
	}
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	payments := newTopic[Payment](t, b, "payments")
	spies := make([]*spyTB, len(checks))
	recs := make([]*eventbustest.Recorder[Payment], len(checks))
	for i := range checks {
		spies[i] = newSpy(t)
		recs[i] = eventbustest.Record(spies[i], payments)
	}
	_, err := payments.Subscribe("ledger", func(context.Context, eventbus.Event[Payment]) error { return errDown }, nil)
	require.NoError(t, err)
	require.ErrorIs(t, payments.Publish(t.Context(), Payment{ID: "a", Cents: 100}), errDown)

	for i, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			require.False(t, c.check(recs[i]))
			spies[i].wantFailure(t, "Cents:100")
		})
	}
	t.Run("WantDeadLetters", func(t *testing.T) {
		spy := newSpy(t)
		require.False(t, eventbustest.WantDeadLetters(spy, b, eventbus.DeadLetterFilter{}))
		spy.wantFailure(t, "Cents:100")
	})
}

// TestRecorderWaitNilArguments checks that Wait fails the test with a
// message, instead of panicking, when given a nil context or condition.
func TestRecorderWaitNilArguments(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	orders := newTopic[Order](t, b, "orders")
	spy := newSpy(t)
	rec := eventbustest.Record(spy, orders)
	//lint:ignore SA1012 checks a nil context
	require.False(t, rec.Wait(nil, func([]eventbus.Event[Order]) bool { return true }))
	spy.wantFailure(t, `Wait on topic "orders": nil context`)
	spy = newSpy(t)
	rec = eventbustest.Record(spy, orders)
	require.False(t, rec.Wait(t.Context(), nil))
	spy.wantFailure(t, `Wait on topic "orders": nil condition`)
}

// TestRecorderWaitDeadlineInBubble checks what Wait documents: inside a
// bubble it still gives up after 10 seconds of fake time, even when an
// event would come later, after a retry's backoff; a context with a later
// deadline waits for it, and takes no real time either.
func TestRecorderWaitDeadlineInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: 30 * time.Second}})
		orders := newTopic[Order](t, b, "orders")
		shipped := newTopic[string](t, b, "shipped")
		ship := func(ctx context.Context, e eventbus.Event[Order]) error { return shipped.Publish(ctx, e.Payload.ID) }
		_, err := orders.Subscribe("shipping", eventbustest.Inject(ship, eventbustest.Fault{Attempts: 1, Err: errDown}), nil)
		require.NoError(t, err)
		spy := newSpy(t)
		rec := eventbustest.Record(spy, shipped)
		start := time.Now()
		publish(t, orders, Order{ID: "a"})
		one := func(events []eventbus.Event[string]) bool { return len(events) == 1 }

		require.False(t, rec.Wait(t.Context(), one))
		require.Equal(t, 10*time.Second, time.Since(start))
		spy.wantFailure(t, "context deadline exceeded (Wait's default deadline, 10s)", "unfinished events in orders/shipping (pending 1)")

		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		require.True(t, rec.Wait(ctx, one))
		require.Equal(t, 30*time.Second, time.Since(start), "woken by the retried attempt")
	})
}

// TestRecordCleanupBounded checks that the end of a test does not hang on
// a Recorder whose events a middleware of the bus holds up: the recorder's
// subscription is removed at the end of the test, which waited for its
// events with no deadline, so a middleware that waits on its context (for
// a gate the failed test never opened, say) hung the test forever instead
// of failing it within 10 seconds, as NewBus does for the bus.
func TestRecordCleanupBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		gate := make(chan struct{})
		held := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
				return next(ctx, env)
			}
		}
		b := eventbustest.NewBus(spy, &eventbus.Options{Middleware: []eventbus.Middleware{held}})
		orders := newTopic[Order](t, b, "orders")
		eventbustest.Record(spy, orders)
		publish(t, orders, Order{ID: "a"})
		start := time.Now()
		spy.cleanup()
		require.Equal(t, 10*time.Second, time.Since(start))
		spy.wantFailure(t, `recorder of topic "orders" did not drain within 10s after the test`, "does a middleware of the bus block?")
		eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{}, Order{ID: "a"})
	})
}

// TestRecordCleanupMiddlewareIgnoringContext checks that a middleware of
// the bus that ignores its cancelled context does not hang the end of a
// test on its Recorder either: 10 seconds after the cancellation, the
// cleanup gives up waiting and fails the test.
func TestRecordCleanupMiddlewareIgnoringContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		release := make(chan struct{})
		stuck := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				<-release
				return next(ctx, env)
			}
		}
		b := eventbustest.NewBus(spy, &eventbus.Options{Middleware: []eventbus.Middleware{stuck}})
		orders := newTopic[Order](t, b, "orders")
		eventbustest.Record(spy, orders)
		publish(t, orders, Order{ID: "a"})
		start := time.Now()
		spy.cleanup()
		require.Equal(t, 40*time.Second, time.Since(start), "20s for the recorder, 20s for the bus")
		spy.wantFailure(t, `recorder of topic "orders" did not drain within 10s after the test, and a middleware of the bus still runs 10s after its context was cancelled`,
			"does it ignore its context", "a handler still runs 10s after its context was cancelled")
		close(release) // the middleware returns, and the bus's goroutines exit
		require.NoError(t, b.Shutdown(t.Context()), "the cleanup's Shutdown, finished")
	})
}

// TestRecordOrderOnManyWorkers checks Record's promise that its
// subscription has one worker, so that it records events in the order they
// were queued, whatever their keys, on a bus whose other subscriptions
// have several workers: a Recorder that took the bus's workers recorded
// events of different keys in the order its workers happened to run.
func TestRecordOrderOnManyWorkers(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Workers: 8})
	orders := newTopic[Order](t, b, "orders")
	rec := eventbustest.Record(t, orders)
	var want []Order
	for i := range 200 {
		want = append(want, Order{ID: fmt.Sprint("o-", i), N: i})
	}
	publish(t, orders, want...)
	require.NoError(t, b.Flush(t.Context()))
	rec.Want(want...)
}

// TestRecorderEventsIsACopy checks Events' promise that it returns a copy:
// a test that changes or sorts what Events returned leaves the recorder's
// events, and its later checks, as they were. An Events that handed out
// the recorder's own slice let such a change rewrite what was recorded.
func TestRecorderEventsIsACopy(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	rec := eventbustest.Record(t, orders)
	a, c := Order{ID: "a", N: 1}, Order{ID: "c", N: 3}
	publish(t, orders, a, c)
	events := rec.Events()
	require.Len(t, events, 2)
	events[0], events[1] = events[1], events[0]
	events[0].Payload.N = 99
	rec.Want(a, c)
}

// newStoreTopic returns the StoreTopic name of Orders, over a new
// MemoryStore, on the bus that newBus makes, which it returns too; the
// store closes after the bus has shut down.
func newStoreTopic(t *testing.T, newBus func(testing.TB) *eventbus.Bus, name string) (*eventbus.StoreTopic[Order], *eventbus.Bus) {
	t.Helper()
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, store.Close()) })
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Order](reg, nil))
	bus := newBus(t) // after the store's cleanup, so that the bus shuts down before the store closes
	topic, err := eventbus.NewStoreTopic[Order](bus, store, reg, name)
	require.NoError(t, err)
	return topic, bus
}

func storePublish(t testing.TB, topic *eventbus.StoreTopic[Order], orders ...Order) {
	t.Helper()
	for _, o := range orders {
		_, err := topic.Publish(context.Background(), o)
		require.NoError(t, err)
	}
}

// TestRecordStoreTopic checks that a StoreTopic's recorder records what is
// committed to the topic from RecordStoreTopic on, as it was published
// (the topic's name as Topic, the key as Key, not the stream), and that its
// checks see every event committed before them without a Flush or a
// WaitFor: a durable subscription reads the store in a goroutine of its
// own, which Flush does not wait for.
func TestRecordStoreTopic(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		t.Run(fmt.Sprint("mode=", mode), func(t *testing.T) {
			orders, _ := newStoreTopic(t, func(t testing.TB) *eventbus.Bus {
				return eventbustest.NewBus(t, &eventbus.Options{Mode: mode})
			}, "orders")
			storePublish(t, orders, Order{ID: "before"})
			rec := eventbustest.RecordStoreTopic(t, orders)
			a, c := Order{ID: "a", N: 1}, Order{ID: "c", N: 3}
			for range 50 { // so that a recorder that does not wait falls behind
				storePublish(t, orders, a, c)
			}
			require.True(t, rec.WantLen(100))
			storePublish(t, orders, a)
			require.True(t, rec.WantContains(a, c))
			events := rec.Events()
			require.Len(t, events, 101)
			require.Equal(t, a, events[100].Payload)
			var want []eventbus.Event[Order]
			for _, e := range events {
				h := eventbus.Header{Type: "Order", Topic: "orders", Key: e.Payload.ID, SchemaVersion: 1}
				want = append(want, eventbus.Event[Order]{Header: h, Payload: e.Payload})
			}
			require.True(t, rec.WantEvents(want))
		})
	}
}

// TestRecordStoreTopicFails checks that a StoreTopic's recorder fails a
// check, saying why, when it cannot record an event committed to the
// topic: here the bus stopped before the recorder read it, and a check
// that saw only what was recorded passed Want() though the code under test
// published.
func TestRecordStoreTopicFails(t *testing.T) {
	orders, b := newStoreTopic(t, func(t testing.TB) *eventbus.Bus { return eventbustest.NewBus(t, nil) }, "orders")
	spy := newSpy(t)
	rec := eventbustest.RecordStoreTopic(spy, orders)
	storePublish(t, orders, Order{ID: "a"})
	require.True(t, rec.WantLen(1))
	require.NoError(t, b.Close())
	storePublish(t, orders, Order{ID: "b"}) // a StoreTopic commits on a closed bus
	require.False(t, rec.Want())
	spy.wantFailure(t, `topic "orders": the recorder has not recorded every event committed to the store:`,
		eventbus.ErrClosed.Error(), `recorded 1 events:`, `0: key="a"`)
}

// TestRecordStoreTopicTimeout checks that a StoreTopic's recorder that
// does not catch up fails the check at 10 seconds of fake time, naming the
// subscription that holds its event, instead of hanging the test.
func TestRecordStoreTopicTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		held := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				<-gate
				return next(ctx, env)
			}
		}
		orders, _ := newStoreTopic(t, func(t testing.TB) *eventbus.Bus {
			return eventbustest.NewBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{held}})
		}, "orders")
		spy := newSpy(t)
		rec := eventbustest.RecordStoreTopic(spy, orders)
		storePublish(t, orders, Order{ID: "a"})
		start := time.Now()
		require.False(t, rec.WantLen(1))
		require.Equal(t, 10*time.Second, time.Since(start), "gave up at 10s, on the fake clock")
		close(gate)
		spy.wantFailure(t, "not within 10s", "durable.orders.eventbustest-recorder/orders.eventbustest-recorder (pending 1)", "recorded 0 events")
	})
}

// TestRecordStoreTopicTwice checks that two recorders of one StoreTopic
// each record every event, under the names RecordStoreTopic documents, and
// that neither saves its checkpoint in the store before it stops: a save
// every 100 events took positions of the test's store while it ran.
func TestRecordStoreTopicTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := eventbustest.NewBus(t, nil)
		store, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		defer store.Close()
		reg, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[Order](reg, nil))
		orders, err := eventbus.NewStoreTopic[Order](b, store, reg, "orders")
		require.NoError(t, err)
		first := eventbustest.RecordStoreTopic(t, orders)
		second := eventbustest.RecordStoreTopic(t, orders)
		var want []Order
		for i := range 150 {
			want = append(want, Order{ID: "o", N: i})
		}
		storePublish(t, orders, want...)
		first.Want(want...)
		second.Want(want...)
		synctest.Wait() // for checkpoint saves, which run in goroutines of their own
		var streams []string
		for e, err := range store.ReadAll(t.Context(), &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$"}}) {
			require.NoError(t, err)
			streams = append(streams, e.Stream)
		}
		require.Empty(t, streams, "system streams written while the recorders run")
		var names []string
		for _, m := range b.Metrics().Subscriptions {
			names = append(names, m.Subscription)
		}
		require.ElementsMatch(t, []string{"orders.eventbustest-recorder", "orders.eventbustest-recorder-2"}, names)
		require.NoError(t, b.Close())
	})
}

// TestRecordStoreTopicNotMade checks that RecordStoreTopic stops the test
// with a message, instead of panicking, for a StoreTopic that
// NewStoreTopic did not make.
func TestRecordStoreTopicNotMade(t *testing.T) {
	for _, topic := range []*eventbus.StoreTopic[Order]{nil, new(eventbus.StoreTopic[Order])} {
		spy := newSpy(t)
		var rec *eventbustest.Recorder[Order]
		spy.run(func() { rec = eventbustest.RecordStoreTopic(spy, topic) })
		require.Nil(t, rec, "RecordStoreTopic went on after Fatalf")
		spy.wantFailure(t, "RecordStoreTopic: a StoreTopic not made by eventbus.NewStoreTopic")
	}
}

// TestRecorderWantEventsGeneratedFieldsWhenSet checks that WantEvents
// compares the header fields that the bus makes up when want sets them: a
// test that gives the correlation ID a request set (WithCorrelationID), or
// the causation ID of a follow-up, passed whatever the event carried.
func TestRecorderWantEventsGeneratedFieldsWhenSet(t *testing.T) {
	var clock eventbustest.Clock
	clock.Advance(time.Hour)
	req, other := eventbus.ID{15: 0xAA}, eventbus.ID{15: 0xBB}
	first := eventbus.ID{15: 1} // from the test's Sequence
	header := func(change func(*eventbus.Header)) []eventbus.Event[Order] {
		h := eventbus.Header{Type: "Order", Topic: "orders", Key: "a", SchemaVersion: 1}
		change(&h)
		return []eventbus.Event[Order]{{Header: h, Payload: Order{ID: "a"}}}
	}
	tests := []struct {
		name string
		want []eventbus.Event[Order]
		fail string // part of the failure message; "" if the check passes
	}{
		{"unset", header(func(*eventbus.Header) {}), ""},
		{"all right", header(func(h *eventbus.Header) {
			h.ID, h.CorrelationID, h.Time = first, req, clock.Now()
		}), ""},
		{"correlation", header(func(h *eventbus.Header) { h.CorrelationID = other }), "CorrelationID"},
		{"causation", header(func(h *eventbus.Header) { h.CausationID = req }), "CausationID"},
		{"id", header(func(h *eventbus.Header) { h.ID = other }), "ID"},
		{"time", header(func(h *eventbus.Header) { h.Time = clock.Now().Add(time.Second) }), "Time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync, Clock: clock.Now})
			orders := newTopic[Order](t, b, "orders")
			spy := newSpy(t)
			rec := eventbustest.Record(spy, orders)
			require.NoError(t, orders.Publish(t.Context(), Order{ID: "a"}, eventbus.WithCorrelationID(req)))
			if tt.fail == "" {
				require.True(t, rec.WantEvents(tt.want), spy.failures())
				return
			}
			require.False(t, rec.WantEvents(tt.want), "WantEvents passed with a wrong %s", tt.fail)
			spy.wantFailure(t, "events recorded (-want +got)", tt.fail)
		})
	}
}

// TestRecorderWantEventsPositionWhenSet checks the same of a StoreTopic's
// recorder for the store position.
func TestRecorderWantEventsPositionWhenSet(t *testing.T) {
	orders, _ := newStoreTopic(t, func(t testing.TB) *eventbus.Bus { return eventbustest.NewBus(t, nil) }, "orders")
	spy := newSpy(t)
	rec := eventbustest.RecordStoreTopic(spy, orders)
	storePublish(t, orders, Order{ID: "a"})
	h := eventbus.Header{Type: "Order", Topic: "orders", Key: "a", SchemaVersion: 1}
	require.True(t, rec.WantEvents([]eventbus.Event[Order]{{Header: h, Payload: Order{ID: "a"}}}), spy.failures())
	h.Position = 7
	require.False(t, rec.WantEvents([]eventbus.Event[Order]{{Header: h, Payload: Order{ID: "a"}}}), "WantEvents passed with a wrong Position")
	spy.wantFailure(t, "Position")
}

// TestRecorderFailureNamesDeadLetters checks that a check that fails for
// want of an event names the dead letters of the bus: a follow-up that
// never came is most often the dead letter of the handler that was to
// publish it, and the failure said "unfinished events in no subscription;
// recorded 0 events", which points nowhere.
func TestRecorderFailureNamesDeadLetters(t *testing.T) {
	errAddress := errors.New("shipping: no address")
	checks := map[string]func(context.Context, *eventbustest.Recorder[string]) bool{
		"Wait": func(ctx context.Context, r *eventbustest.Recorder[string]) bool {
			return r.Wait(ctx, func(events []eventbus.Event[string]) bool { return len(events) == 1 })
		},
		"Want":    func(_ context.Context, r *eventbustest.Recorder[string]) bool { return r.Want("a") },
		"WantLen": func(_ context.Context, r *eventbustest.Recorder[string]) bool { return r.WantLen(1) },
	}
	for name, check := range checks {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := eventbustest.NewBus(t, nil)
				orders := newTopic[Order](t, b, "orders")
				shipped := newTopic[string](t, b, "shipped")
				_, err := orders.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error { return errAddress }, nil)
				require.NoError(t, err)
				spy := newSpy(t)
				rec := eventbustest.Record(spy, shipped)
				publish(t, orders, Order{ID: "a"})
				require.NoError(t, b.Flush(t.Context()))
				require.False(t, check(t.Context(), rec))
				spy.wantFailure(t, "recorded 0 events", "dead letters:", `orders/shipping key="a" attempts=1 err="shipping: no address"`)
				b.DeadLetters().Discard(eventbus.DeadLetterFilter{})
			})
		})
	}
}

// Signed is a payload with a field that the code under test sets and a
// test cannot know: the time of the signature.
type Signed struct {
	ID string
	At time.Time
}

func (s Signed) AggregateID() string { return s.ID }

// TestRecorderCompareOptions checks that the cmp options given to Record
// and RecordStoreTopic apply to every check of the recorder, Want,
// WantContains and WantEvents, so that a test can ignore a payload's
// field or compare times approximately, and to no other recorder.
func TestRecorderCompareOptions(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	signed := newTopic[Signed](t, b, "signed")
	ignored := eventbustest.Record(t, signed, cmpopts.IgnoreFields(Signed{}, "At"))
	far := newSpy(t)
	approx := eventbustest.Record(far, signed, cmpopts.EquateApproxTime(time.Second))
	spy := newSpy(t)
	strict := eventbustest.Record(spy, signed)
	at := time.Now()
	publish(t, signed, Signed{ID: "a", At: at})
	require.NoError(t, b.Flush(t.Context()))

	require.True(t, ignored.Want(Signed{ID: "a"}))
	require.True(t, ignored.WantContains(Signed{ID: "a"}))
	require.True(t, ignored.WantEvents([]eventbus.Event[Signed]{{
		Header:  eventbus.Header{Type: "Signed", Topic: "signed", Key: "a", SchemaVersion: 1},
		Payload: Signed{ID: "a"},
	}}))
	require.True(t, approx.Want(Signed{ID: "a", At: at.Add(time.Millisecond)}))
	require.False(t, far.Failed())
	require.False(t, approx.Want(Signed{ID: "a", At: at.Add(time.Minute)}), "an approximation of a second")
	far.wantFailure(t, `payloads recorded (-want +got)`, "At:")
	require.False(t, strict.Want(Signed{ID: "a"}))
	spy.wantFailure(t, `payloads recorded (-want +got)`, "At:")

	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, store.Close()) })
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Signed](reg, nil))
	sb := eventbustest.NewBus(t, nil)
	stored, err := eventbus.NewStoreTopic[Signed](sb, store, reg, "signed")
	require.NoError(t, err)
	rec := eventbustest.RecordStoreTopic(t, stored, cmpopts.IgnoreFields(Signed{}, "At"))
	_, err = stored.Publish(t.Context(), Signed{ID: "a", At: at})
	require.NoError(t, err)
	require.True(t, rec.Want(Signed{ID: "a"}))
}
