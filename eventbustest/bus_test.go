package eventbustest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// outputTB is a testing.TB whose Output is a buffer of its own, so that a
// test reads what a helper writes to the test's output; the rest goes to
// the real test.
type outputTB struct {
	testing.TB

	mu  sync.Mutex
	out strings.Builder
}

func (o *outputTB) Output() io.Writer { return o }

// Write adds p to the output, for the bus's goroutines as well.
func (o *outputTB) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out.Write(p)
}

func (o *outputTB) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out.String()
}

// TestNewBusLogsToTestOutput checks that a bus made by NewBus without a
// Logger writes its own log to the test's output, as NewBus's doc and the
// README promise (failures through t), and that a Logger given in opts is
// kept. No test read what such a bus logged: a NewBus that left the bus
// silent passed, and a test whose DeadLetterSink failed learnt nothing.
func TestNewBusLogsToTestOutput(t *testing.T) {
	errFull := errors.New("archive: disk full")
	opts := func(l *slog.Logger) *eventbus.Options {
		return &eventbus.Options{
			Mode:   eventbus.Sync,
			Logger: l,
			DeadLetterSink: eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error {
				return errFull
			}),
		}
	}
	// deadLetter makes b give up on an event, whose sink then fails.
	deadLetter := func(t *testing.T, b *eventbus.Bus) {
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("warehouse", func(context.Context, eventbus.Event[Order]) error {
			return errors.New("warehouse: 502 bad gateway")
		}, nil)
		require.NoError(t, err)
		require.Error(t, orders.Publish(t.Context(), Order{ID: "o-1"}))
	}
	const logged = "eventbus: dead-letter sink failed"

	t.Run("default", func(t *testing.T) {
		tb := &outputTB{TB: t}
		deadLetter(t, eventbustest.NewBus(tb, opts(nil)))
		out := tb.String()
		require.Contains(t, out, logged, "the test's output")
		require.Contains(t, out, errFull.Error(), "the test's output")
	})
	t.Run("given", func(t *testing.T) {
		tb := &outputTB{TB: t}
		var own outputTB
		deadLetter(t, eventbustest.NewBus(tb, opts(slog.New(slog.NewTextHandler(&own, nil)))))
		require.Contains(t, own.String(), logged, "the given Logger's output")
		require.Empty(t, tb.String(), "the test's output")
	})
}

// TestNewBusMetricsAlwaysOn checks that NewBus turns Options.Metrics on
// whatever the bus's mode, as its doc says: on an Async bus too, a topic
// made Sync by its TopicOptions counts its handled events only then, which
// WantMetrics needs, and Published and the histograms fill only then. A
// NewBus that turned Metrics on for a Sync bus only passed every test.
func TestNewBusMetricsAlwaysOn(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Metrics: false})
	orders := newTopic[Order](t, b, "orders")
	payments, err := eventbus.NewTopic(b, "payments", &eventbus.TopicOptions[Order]{Mode: eventbus.Sync})
	require.NoError(t, err)
	for _, topic := range []*eventbus.Topic[Order]{orders, payments} {
		_, err := topic.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
		require.NoError(t, err)
		publish(t, topic, Order{ID: "o-1"})
	}
	require.NoError(t, b.Flush(t.Context()))
	eventbustest.WantMetrics(t, b, eventbus.SubscriptionMetrics{Topic: "payments", Subscription: "billing", Queued: 1, Handled: 1})
	m := b.Metrics()
	for _, tm := range m.Topics {
		require.EqualValues(t, 1, tm.Published, "Published of topic %s", tm.Topic)
	}
	for _, sm := range m.Subscriptions {
		require.EqualValues(t, 1, sm.HandleTime.Count, "HandleTime.Count of %s/%s", sm.Topic, sm.Subscription)
	}
}

// TestNewBusOneWorker checks that events without a key reach a subscription
// in publish order, which the bus promises only with one worker.
func TestNewBusOneWorker(t *testing.T) {
	b := eventbustest.NewBus(t, nil)
	numbers := newTopic[int](t, b, "numbers")
	var got []int
	_, err := numbers.Subscribe("s", func(_ context.Context, e eventbus.Event[int]) error {
		got = append(got, e.Payload) // one worker: no lock needed, the race detector checks
		return nil
	}, nil)
	require.NoError(t, err)
	var want []int
	for i := range 1000 {
		want = append(want, i)
		require.NoError(t, numbers.Publish(t.Context(), i))
	}
	require.NoError(t, b.Flush(t.Context()))
	require.Equal(t, want, got)
}

// TestNewBusOneWorkerRetryIsPassed checks the exception to publish order
// that NewBus documents: an event waiting for its retry is passed by the
// events of other keys, and, without a key, by every later event.
func TestNewBusOneWorkerRetryIsPassed(t *testing.T) {
	tests := []struct {
		name string
		key  func(Order) string
		want []int
	}{
		{"keyed", nil, []int{2, 1, 3}}, // Order's key is its ID
		{"no key", func(Order) string { return "" }, []int{2, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := eventbustest.NewBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
				orders, err := eventbus.NewTopic(b, "orders", &eventbus.TopicOptions[Order]{Key: tt.key})
				require.NoError(t, err)
				h, got := handled(t)
				failed := false // one worker: no lock needed
				failFirst := func(ctx context.Context, e eventbus.Event[Order]) error {
					if e.Payload.N == 1 && !failed {
						failed = true
						return errDown
					}
					return h(ctx, e)
				}
				_, err = orders.Subscribe("billing", failFirst, nil)
				require.NoError(t, err)
				publish(t, orders, Order{ID: "a", N: 1}, Order{ID: "b", N: 2}, Order{ID: "a", N: 3})
				require.NoError(t, b.Flush(t.Context()))
				var order []int
				for _, o := range got() {
					order = append(order, o.N)
				}
				require.Equal(t, tt.want, order)
			})
		})
	}
}

func TestNewBusBadOptions(t *testing.T) {
	spy := newSpy(t)
	var b *eventbus.Bus
	spy.run(func() { b = eventbustest.NewBus(spy, &eventbus.Options{QueueSize: -1}) })
	require.Nil(t, b)
	spy.wantFailure(t, "NewBus:", "QueueSize")
}

// TestNewBusNilDeadLetterFunc checks that NewBus stops the test when given
// a nil DeadLetterFunc as the sink, as eventbus.New refuses one: NewBus
// wrapped it in a sink of its own, which hid it from New, so every dead
// letter then failed the sink with a panic.
func TestNewBusNilDeadLetterFunc(t *testing.T) {
	spy := newSpy(t)
	var b *eventbus.Bus
	spy.run(func() {
		b = eventbustest.NewBus(spy, &eventbus.Options{DeadLetterSink: eventbus.DeadLetterFunc(nil)})
	})
	require.Nil(t, b)
	spy.wantFailure(t, "NewBus:", "Options.DeadLetterSink")
}

// TestNewBusDrainsAtEnd checks that events still queued when the test ends
// are handled, and that this is no failure.
func TestNewBusDrainsAtEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		h, got := handled(t)
		_, err := orders.Subscribe("billing", eventbustest.Inject(h, eventbustest.Fault{Delay: time.Second}), nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		spy.cleanup()
		require.False(t, spy.Failed(), spy.failures())
		require.Len(t, got(), 2)
		require.ErrorIs(t, orders.Publish(t.Context(), Order{}), eventbus.ErrClosed)
	})
}

// TestNewBusReportsBlockedHandler checks that a handler still blocked 10
// seconds after the test fails it.
func TestNewBusReportsBlockedHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("stuck", func(ctx context.Context, _ eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		start := time.Now()
		spy.cleanup()
		require.Equal(t, 10*time.Second, time.Since(start))
		spy.wantFailure(t, "did not drain within 10s after the test", "eventbus: 1 event undelivered: context deadline exceeded", "is a handler blocked",
			"Dead-lettered by the shutdown:\n\t",
			`orders/stuck key="a" attempts=1 err="context canceled"`, `orders/stuck key="b" attempts=0`)
		eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{}, Order{ID: "a"}, Order{ID: "b"})
	})
}

// TestNewBusReportsBlockedLastEvent checks that a handler blocked on the
// only event left fails the test too: its context is cancelled after 10
// seconds and the event dead-lettered, but no event was left in a queue,
// so Shutdown returned no error, and the test passed.
func TestNewBusReportsBlockedLastEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("stuck", func(ctx context.Context, _ eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"})
		spy.cleanup()
		spy.wantFailure(t, "did not drain within 10s after the test: the handlers' contexts were cancelled; is a handler blocked", `orders/stuck key="a" attempts=1`)
		eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{Err: context.Canceled}, Order{ID: "a"})
	})
}

// TestNewBusReportsHandlerIgnoringContext checks that a handler that
// ignores its cancelled context does not hang the test's end: 10 seconds
// after the handlers' contexts were cancelled, the cleanup gives up
// waiting and fails the test, naming the subscription.
func TestNewBusReportsHandlerIgnoringContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		release := make(chan struct{})
		_, err := orders.Subscribe("stuck", func(context.Context, eventbus.Event[Order]) error {
			<-release
			return nil
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		start := time.Now()
		spy.cleanup()
		require.Equal(t, 20*time.Second, time.Since(start), "10s to drain, 10s more for the cancelled handlers")
		spy.wantFailure(t, "did not drain within 10s after the test, and a handler still runs 10s after its context was cancelled",
			"in orders/stuck (pending 2)", "does it ignore its context?")
		close(release) // the handler returns, and the bus's goroutines exit
		require.ErrorIs(t, b.Shutdown(t.Context()), context.DeadlineExceeded, "the cleanup's Shutdown, finished")
		eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{}, Order{ID: "b"})
	})
}

// chanSink is a DeadLetterSink that hands each dead letter to a test
// reading the channel.
type chanSink chan eventbus.DeadLetter

func (c chanSink) Put(_ context.Context, dl eventbus.DeadLetter) error {
	c <- dl
	return nil
}

// TestNewBusReportsBlockedSink checks that a DeadLetterSink that blocks the
// shutdown is named as the culprit, not the handler whose worker waits for
// it: the sink's context is never cancelled, so it cannot be told to stop.
func TestNewBusReportsBlockedSink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		sink := make(chanSink)
		b := eventbustest.NewBus(spy, &eventbus.Options{DeadLetterSink: sink})
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		require.Equal(t, "a", (<-sink).Key) // and the test reads no more
		spy.cleanup()
		spy.wantFailure(t, "its DeadLetterSink's Put still runs 10s after the handlers' contexts were cancelled, in orders/billing (pending",
			"does it wait for the test?")
		require.NotContains(t, spy.failures(), "a handler still runs")
		require.Equal(t, "b", (<-sink).Key) // the sink returns, and the bus's goroutines exit
		require.NoError(t, b.Shutdown(t.Context()), "the cleanup's Shutdown, finished")
	})
}

// TestNewBusClosedByTest checks that what the test's own Close returned is
// not reported again.
func TestNewBusClosedByTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		gate := make(chan struct{})
		_, err := orders.Subscribe("slow", func(context.Context, eventbus.Event[Order]) error { <-gate; return nil }, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		synctest.Wait() // the worker holds a, b waits
		closed := make(chan error)
		go func() { closed <- b.Close() }()
		synctest.Wait()
		close(gate)
		var u *eventbus.UndeliveredError
		require.ErrorAs(t, <-closed, &u)
		require.Equal(t, 1, u.Count)
		spy.cleanup()
		require.False(t, spy.Failed(), spy.failures())
	})
}

// TestNewBusShutdownByTest checks that what the test's own Shutdown
// returned, events undelivered at its deadline, is not reported again as a
// bus that did not drain after the test.
func TestNewBusShutdownByTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, nil)
		orders := newTopic[Order](t, b, "orders")
		h, _ := handled(t)
		_, err := orders.Subscribe("slow", eventbustest.Inject(h, eventbustest.Fault{Delay: time.Minute}), nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"}, Order{ID: "b"})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		var u *eventbus.UndeliveredError
		require.ErrorAs(t, b.Shutdown(ctx), &u)
		require.ErrorIs(t, u, context.DeadlineExceeded)
		spy.cleanup()
		require.False(t, spy.Failed(), spy.failures())
	})
}

func TestWantDeadLettersFails(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	_, err := orders.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
	require.NoError(t, err)
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "a", N: 1}), errDown)

	spy := newSpy(t)
	require.False(t, eventbustest.WantDeadLetters(spy, b, eventbus.DeadLetterFilter{}))
	spy.wantFailure(t, "dead letters matching", "payloads (-want +got)",
		`orders/billing key="a" attempts=1 err="downstream unavailable" eventbustest_test.Order{ID:"a", N:1, note:""}`)

	spy = newSpy(t)
	require.False(t, eventbustest.WantDeadLetters(spy, b, eventbus.DeadLetterFilter{Err: errors.New("other")}, Order{ID: "a", N: 1}))
	spy.wantFailure(t, "Err:other", "payloads (-want +got)", "dead letters: none\nnot matching:\n",
		`orders/billing key="a" attempts=1 err="downstream unavailable" eventbustest_test.Order{ID:"a", N:1, note:""}`)
}

// TestWantDeadLettersDurable runs TestWantDeadLettersDurableChild, whose
// check of a StoreTopic subscription's dead letter fails, in a child
// process (this test binary), and checks that the failure, as a test's
// output shows it, lists the dead letter readably and says why the
// decoded payload that the test wanted is not there: it listed the stored
// event with %#v, its IDs and its JSON as lists of bytes and its time in
// the local zone, and said nothing of why the payloads differed.
func TestWantDeadLettersDurable(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestWantDeadLettersDurableChild$", "-test.count=1", "-test.shuffle=off")
	cmd.Env = append(os.Environ(), "EVENTBUSTEST_DURABLE_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child test fails:\n%s", out)
	for _, want := range []string{
		"bus_test.go:", // the line of the check, in the child
		"payloads (-want +got)",
		`eventbustest_test.Order{ID: "a", N: 1}`, // cmp.Diff's -, with spaces it varies on purpose
		"dead letters: \n",                       // each line indented by the test's output
		"\tdurable.orders.billing/orders.billing key=\"orders:a\" attempts=1 err=\"downstream unavailable\" " +
			"eventbus.RecordedEvent{Type:\"Order\", SchemaVersion:1, Stream:\"orders:a\", Revision:0, Position:0, " +
			"Metadata:eventbus.Metadata{\"tenant\":\"acme\"}, Data:`{\"ID\":\"a\",\"N\":1}`}\n",
		"is the eventbus.RecordedEvent as stored, not the decoded event",
	} {
		require.Contains(t, string(out), want, "the child's output")
	}
	require.NotContains(t, string(out), "0x7b", "the encoded payload as bytes")
}

// TestWantDeadLettersDurableChild is run by TestWantDeadLettersDurable: it
// fails.
func TestWantDeadLettersDurableChild(t *testing.T) {
	if os.Getenv("EVENTBUSTEST_DURABLE_CHILD") == "" {
		t.Skip("run by TestWantDeadLettersDurable")
	}
	orders, b := newStoreTopic(t, func(t testing.TB) *eventbus.Bus { return eventbustest.NewBus(t, nil) }, "orders")
	d, err := orders.Subscribe(t.Context(), "billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
	require.NoError(t, err)
	res, err := orders.Publish(t.Context(), Order{ID: "a", N: 1}, eventbus.WithMetadata(eventbus.Metadata{"tenant": "acme"}))
	require.NoError(t, err)
	require.NoError(t, d.WaitFor(t.Context(), res.Position))
	eventbustest.WantDeadLetters(t, b, eventbus.DeadLetterFilter{}, Order{ID: "a", N: 1})
}

// TestWantDeadLettersDurableData checks how a failure shows the encoded
// payload of a durable subscription's dead letter that is not plain text
// in backquotes: one with a backquote is quoted, and a compressed one
// shows its size and encoding, not bytes that read as nothing.
func TestWantDeadLettersDurableData(t *testing.T) {
	tests := []struct {
		name  string
		opts  eventbus.RegistryOptions
		order Order
		want  string // "" for a compressed payload, whose size it shows
	}{
		{"backquote", eventbus.RegistryOptions{}, Order{ID: "`a`"}, `Data:"{\"ID\":\"` + "`a`" + `\",\"N\":0}"}`},
		{"compressed", eventbus.RegistryOptions{CompressAbove: 1}, Order{ID: strings.Repeat("a", 100)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := eventbus.NewMemoryStore(nil)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, store.Close()) })
			reg, err := eventbus.NewRegistry(&tt.opts)
			require.NoError(t, err)
			require.NoError(t, eventbus.Register[Order](reg, nil))
			b := eventbustest.NewBus(t, nil)
			orders, err := eventbus.NewStoreTopic[Order](b, store, reg, "orders")
			require.NoError(t, err)
			d, err := orders.Subscribe(t.Context(), "billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
			require.NoError(t, err)
			res, err := orders.Publish(t.Context(), tt.order)
			require.NoError(t, err)
			require.NoError(t, d.WaitFor(t.Context(), res.Position))
			dl, ok := b.DeadLetters().Get("orders.billing", eventbustest.Sequence()())
			require.True(t, ok, "the dead letter of the first event")
			want := tt.want
			if want == "" {
				e := dl.Payload().(eventbus.RecordedEvent)
				require.Equal(t, "deflate", e.Encoding)
				want = fmt.Sprintf("Data:%d bytes, deflate}", len(e.Data))
			}
			spy := newSpy(t)
			require.False(t, eventbustest.WantDeadLetters(spy, b, eventbus.DeadLetterFilter{}))
			spy.wantFailure(t, want)
		})
	}
}

// TestWantDeadLettersUnknownName checks that WantDeadLetters fails, naming
// what the bus has, when its filter names a topic or subscription that the
// bus does not have and no dead letter names: a mistyped name matched no
// dead letter, so a check that there are none passed whatever the real
// subscription dead-lettered.
func TestWantDeadLettersUnknownName(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	shipped := newTopic[string](t, b, "shipped")
	_, err := orders.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
	require.NoError(t, err)
	_, err = shipped.Subscribe("mailer", func(context.Context, eventbus.Event[string]) error { return nil }, nil)
	require.NoError(t, err)
	gone, err := orders.Subscribe("audit", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
	require.NoError(t, err)
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "a"}), errDown)
	require.NoError(t, gone.Unsubscribe(t.Context()))

	fails := []struct {
		name string
		f    eventbus.DeadLetterFilter
		want []any
		msg  []string
	}{
		{"subscription", eventbus.DeadLetterFilter{Subscription: "biling"}, nil,
			[]string{`no subscription "biling"`, "[orders/billing shipped/mailer]"}},
		{"topic", eventbus.DeadLetterFilter{Topic: "order"}, nil,
			[]string{`no topic "order"`, "[orders shipped]"}},
		{"subscription of another topic", eventbus.DeadLetterFilter{Topic: "orders", Subscription: "mailer"}, nil,
			[]string{`topic "orders" has no subscription "mailer"`, "[orders/billing shipped/mailer]"}},
		{"with payloads", eventbus.DeadLetterFilter{Subscription: "biling"}, []any{Order{ID: "a"}},
			[]string{"payloads (-want +got)", `no subscription "biling"`}},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			spy := newSpy(t)
			require.False(t, eventbustest.WantDeadLetters(spy, b, tt.f, tt.want...))
			spy.wantFailure(t, tt.msg...)
		})
	}

	passes := []struct {
		name string
		f    eventbus.DeadLetterFilter
		want []any
	}{
		{"existing subscription without dead letters", eventbus.DeadLetterFilter{Subscription: "mailer"}, nil},
		{"existing topic without dead letters", eventbus.DeadLetterFilter{Topic: "shipped"}, nil},
		{"removed subscription with dead letters", eventbus.DeadLetterFilter{Topic: "orders", Subscription: "audit"}, []any{Order{ID: "a"}}},
	}
	for _, tt := range passes {
		t.Run(tt.name, func(t *testing.T) {
			spy := newSpy(t)
			require.True(t, eventbustest.WantDeadLetters(spy, b, tt.f, tt.want...), spy.failures())
		})
	}
}

// TestWantDeadLettersEvicted checks that WantDeadLetters fails on a bus
// whose dead-letter queue evicted dead letters to make room: it passed a
// check that a subscription has none when the queue had evicted them, and
// a check of the payloads that saw only those left.
func TestWantDeadLettersEvicted(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 1})
	orders := newTopic[Order](t, b, "orders")
	for _, name := range []string{"billing", "shipping"} {
		h := eventbustest.Inject(func(context.Context, eventbus.Event[Order]) error { return nil },
			eventbustest.Fault{Key: name, Err: errDown})
		_, err := orders.Subscribe(name, h, nil)
		require.NoError(t, err)
	}
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "billing"}), errDown)
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "shipping"}), errDown)

	tests := []struct {
		name string
		f    eventbus.DeadLetterFilter
		want []any
	}{
		{"none of an evicted subscription", eventbus.DeadLetterFilter{Subscription: "billing"}, nil},
		{"those left", eventbus.DeadLetterFilter{}, []any{Order{ID: "shipping"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spy := newSpy(t)
			require.False(t, eventbustest.WantDeadLetters(spy, b, tt.f, tt.want...))
			spy.wantFailure(t, "the bus evicted 1 dead letters", "DeadLetterCapacity")
		})
	}
}

func TestWantMetricsFails(t *testing.T) {
	b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	_, err := orders.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
	require.NoError(t, err)
	publish(t, orders, Order{ID: "a"})

	spy := newSpy(t)
	require.False(t, eventbustest.WantMetrics(spy, b, eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "billing", Queued: 1, Handled: 2}))
	spy.wantFailure(t, "metrics of orders/billing (-want +got)", "Handled")

	// Every counter is compared, only the histograms are not: a check
	// that skipped one would pass whatever that counter said.
	got := eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "billing", Queued: 1, Handled: 1}
	require.True(t, eventbustest.WantMetrics(t, b, got))
	for _, c := range []struct {
		name string
		off  func(*eventbus.SubscriptionMetrics)
	}{
		{"Queued", func(m *eventbus.SubscriptionMetrics) { m.Queued++ }},
		{"Handled", func(m *eventbus.SubscriptionMetrics) { m.Handled++ }},
		{"Failed", func(m *eventbus.SubscriptionMetrics) { m.Failed++ }},
		{"Retried", func(m *eventbus.SubscriptionMetrics) { m.Retried++ }},
		{"DeadLettered", func(m *eventbus.SubscriptionMetrics) { m.DeadLettered++ }},
		{"Duplicates", func(m *eventbus.SubscriptionMetrics) { m.Duplicates++ }},
		{"Depth", func(m *eventbus.SubscriptionMetrics) { m.Depth++ }},
		{"Pending", func(m *eventbus.SubscriptionMetrics) { m.Pending++ }},
	} {
		want := got
		c.off(&want)
		spy = newSpy(t)
		require.False(t, eventbustest.WantMetrics(spy, b, want), "WantMetrics with %s off by one", c.name)
		spy.wantFailure(t, "metrics of orders/billing (-want +got)", c.name)
	}

	spy = newSpy(t)
	require.False(t, eventbustest.WantMetrics(spy, b, eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "shipping"}))
	spy.wantFailure(t, "no subscription orders/shipping; the bus has [orders/billing]")
}

// TestWantMetricsUncounted checks WantMetrics on a Sync-mode subscription
// of a bus made without Options.Metrics, which counts nothing: it must
// fail, not pass all-zero counters for a subscription that dead-lettered
// an event, which made a check that nothing failed one that cannot fail.
func TestWantMetricsUncounted(t *testing.T) {
	b, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	orders := newTopic[Order](t, b, "orders")
	_, err = orders.Subscribe("billing", func(context.Context, eventbus.Event[Order]) error { return errDown }, nil)
	require.NoError(t, err)
	require.ErrorIs(t, orders.Publish(t.Context(), Order{ID: "a"}), errDown)
	require.Equal(t, 1, b.DeadLetters().Len())

	spy := newSpy(t)
	require.False(t, eventbustest.WantMetrics(spy, b, eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "billing"}))
	spy.wantFailure(t, "metrics of orders/billing", "counts nothing", "Options.Metrics")
}

// TestWantNilBus checks that the checks of a bus fail the test with a
// message, instead of panicking, when given a nil bus.
func TestWantNilBus(t *testing.T) {
	spy := newSpy(t)
	require.False(t, eventbustest.WantDeadLetters(spy, nil, eventbus.DeadLetterFilter{}, Order{ID: "a"}))
	spy.wantFailure(t, "WantDeadLetters: nil bus")
	spy = newSpy(t)
	require.False(t, eventbustest.WantMetrics(spy, nil, eventbus.SubscriptionMetrics{Topic: "orders", Subscription: "billing"}))
	spy.wantFailure(t, "WantMetrics of orders/billing: nil bus")
}

// TestWantDeadLettersZeroBus checks that WantDeadLetters fails on a Bus
// not made by eventbus.New, which never runs and has no dead-letter queue:
// a check that it has no dead letters passed.
func TestWantDeadLettersZeroBus(t *testing.T) {
	spy := newSpy(t)
	require.False(t, eventbustest.WantDeadLetters(spy, new(eventbus.Bus), eventbus.DeadLetterFilter{}))
	spy.wantFailure(t, "WantDeadLetters: a Bus not made by eventbus.New")
}

// TestClockAndSequence checks that a bus with a Clock and a Sequence stamps
// the same headers on every run, also under concurrent publishers.
func TestClockAndSequence(t *testing.T) {
	var clock eventbustest.Clock
	require.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), clock.Now())
	b := eventbustest.NewBus(t, &eventbus.Options{Clock: clock.Now, Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders")
	rec := eventbustest.Record(t, orders)
	publish(t, orders, Order{ID: "a"})
	clock.Advance(time.Hour)
	publish(t, orders, Order{ID: "b"})
	// Back, as a wall clock set back goes: the bus stamps what it reads.
	clock.Advance(-2 * time.Hour)
	require.Equal(t, time.Date(1999, 12, 31, 23, 0, 0, 0, time.UTC), clock.Now())
	publish(t, orders, Order{ID: "c"})
	events := rec.Events()
	require.Equal(t, "2000-01-01T00:00:00Z", events[0].Time.Format(time.RFC3339))
	require.Equal(t, "2000-01-01T01:00:00Z", events[1].Time.Format(time.RFC3339))
	require.Equal(t, "1999-12-31T23:00:00Z", events[2].Time.Format(time.RFC3339))
	require.Equal(t, "00000000000000000000000001", events[0].ID.String())
	require.Equal(t, "00000000000000000000000002", events[1].ID.String())

	next := eventbustest.Sequence()
	var (
		mu   sync.Mutex
		seen = map[eventbus.ID]bool{}
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				id := next()
				mu.Lock()
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 800, "unique under concurrency")
	require.Equal(t, "00000000000000000000000001", eventbustest.Sequence()().String(), "each Sequence starts at 1")
}

// processed is an in-memory eventbus.ProcessedStore that outlives a bus.
type processed struct {
	mu   sync.Mutex
	keys map[eventbus.IdempotencyKey]bool
}

func (p *processed) Processed(_ context.Context, k eventbus.IdempotencyKey) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[k], nil
}

func (p *processed) MarkProcessed(_ context.Context, k eventbus.IdempotencyKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[k] = true
	return nil
}

// TestNewBusRestartSharesSequence checks what NewBus documents about IDs
// across buses: the buses of one test number their events from one
// Sequence, so a bus and its restart never reuse an ID. Each had a
// Sequence of its own, and the restarted bus's first event then had the
// first bus's ID: a ProcessedStore they shared skipped it as a duplicate,
// and a store they shared took its StoreTopic append for a retry and
// stored nothing. A subtest numbers its events from 1 again.
func TestNewBusRestartSharesSequence(t *testing.T) {
	t.Run("idempotency", func(t *testing.T) {
		store := &processed{keys: map[eventbus.IdempotencyKey]bool{}}
		h, got := handled(t)
		for run := range 2 {
			b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{
				eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store}),
			}})
			orders := newTopic[Order](t, b, "orders")
			_, err := orders.Subscribe("billing", h, nil)
			require.NoError(t, err)
			publish(t, orders, Order{ID: "a", N: run})
			require.NoError(t, b.Close())
		}
		require.Equal(t, []Order{{ID: "a", N: 0}, {ID: "a", N: 1}}, got())
	})
	t.Run("store", func(t *testing.T) {
		store, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[Order](reg, nil))
		var ids []string
		for run := range 2 {
			b := eventbustest.NewBus(t, nil)
			orders, err := eventbus.NewStoreTopic[Order](b, store, reg, "orders")
			require.NoError(t, err)
			_, err = orders.Publish(t.Context(), Order{ID: "a", N: run})
			require.NoError(t, err)
			require.NoError(t, b.Close())
		}
		for e, err := range store.ReadAll(t.Context(), nil) {
			require.NoError(t, err)
			ids = append(ids, e.ID.String())
		}
		require.Equal(t, []string{"00000000000000000000000001", "00000000000000000000000002"}, ids, "the IDs of the events stored by a bus and its restart")
	})
	t.Run("subtest", func(t *testing.T) {
		b := eventbustest.NewBus(t, &eventbus.Options{Mode: eventbus.Sync})
		orders := newTopic[Order](t, b, "orders")
		var id eventbus.ID
		_, err := orders.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error {
			id = e.ID
			return nil
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"})
		require.Equal(t, "00000000000000000000000001", id.String(), "a subtest's first event")
	})
}

// TestCleanupFailuresNameTheTest runs TestCleanupFailuresNameTheTestChild,
// whose bus and recorder do not drain at its end, in a child process (this
// test binary), and checks that the failures name the lines of the test
// that called NewBus and Record, as the checks' failures do, not lines of
// the kit, which do not say which bus of which test did not drain. The
// child runs outside a testing/synctest bubble, where the testing package
// names cleanups' callers (inside one it names its own line), so NewBus
// waits for them in real time: one second, set by SetStopTimeout.
func TestCleanupFailuresNameTheTest(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupFailuresNameTheTestChild$", "-test.count=1", "-test.shuffle=off")
	cmd.Env = append(os.Environ(), "EVENTBUSTEST_CLEANUP_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child test fails:\n%s", out)
	src, err := os.ReadFile("bus_test.go")
	require.NoError(t, err)
	want := map[string]bool{}
	for i, line := range strings.Split(string(src), "\n") {
		if strings.HasSuffix(line, "// a failure names this line") {
			want[fmt.Sprintf("bus_test.go:%d:", i+1)] = true
		}
	}
	got := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "eventbustest: ") {
			got[strings.Fields(line)[0]] = true
		}
	}
	require.Len(t, want, 2)
	require.Equal(t, want, got, "the child's output:\n%s", out)
	require.Contains(t, string(out), "eventbustest: the bus did not drain within 1s after the test", "the bus's failure")
	require.Contains(t, string(out), `eventbustest: the recorder of topic "orders" did not drain within 1s after the test`, "the recorder's failure")
}

// TestCleanupFailuresNameTheTestChild is run by
// TestCleanupFailuresNameTheTest. In one subtest a handler, in the other a
// middleware of the bus that the recorder's subscription runs, holds its
// event up until its context is cancelled, so that neither the bus nor the
// recorder drains at the end. Not in a synctest bubble, where the failure
// of a cleanup names a line of package testing, not the test's: the drain
// takes real time, one second, not the 10 that a user's test gets.
func TestCleanupFailuresNameTheTestChild(t *testing.T) {
	if os.Getenv("EVENTBUSTEST_CLEANUP_CHILD") == "" {
		t.Skip("run by TestCleanupFailuresNameTheTest")
	}
	eventbustest.SetStopTimeout(t, time.Second)
	held := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	t.Run("bus", func(t *testing.T) {
		t.Parallel()
		b := eventbustest.NewBus(t, nil) // a failure names this line
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("stuck", func(ctx context.Context, _ eventbus.Event[Order]) error { return held(ctx) }, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"})
	})
	t.Run("recorder", func(t *testing.T) {
		t.Parallel()
		b := eventbustest.NewBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{
			func(eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
				return func(ctx context.Context, _ *eventbus.Envelope) error { return held(ctx) }
			},
		}})
		orders := newTopic[Order](t, b, "orders")
		eventbustest.Record(t, orders) // a failure names this line
		publish(t, orders, Order{ID: "a"})
	})
}

// valueTB is a user's wrapper of a test's t, passed by value: its slice
// field makes it unhashable.
type valueTB struct {
	testing.TB
	//lint:ignore U1000 the field is there to make the struct unhashable
	notes []string
}

// TestNewBusUnhashableTB checks that NewBus takes a testing.TB that cannot
// be a map key, as a wrapper struct passed by value may be, and gives its
// buses one Sequence still, rather than panicking.
func TestNewBusUnhashableTB(t *testing.T) {
	tb := valueTB{TB: t}
	var ids []string
	for range 2 {
		b := eventbustest.NewBus(tb, &eventbus.Options{Mode: eventbus.Sync})
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error {
			ids = append(ids, e.ID.String())
			return nil
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"})
		require.NoError(t, b.Close())
	}
	require.Equal(t, []string{"00000000000000000000000001", "00000000000000000000000002"}, ids, "the IDs of a bus and its restart")
}

// TestNewBusReportsRetryAtEnd checks that a test that ends while an event
// waits for a retry longer than the shutdown's 10 seconds fails naming the
// subscription and the event, and does not send its reader to look only
// for a blocked handler: the failure read "the bus did not drain within 10s after the
// test: eventbus: 1 event undelivered: context deadline exceeded; is a
// handler blocked?", with no subscription named.
func TestNewBusReportsRetryAtEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spy := newSpy(t)
		b := eventbustest.NewBus(spy, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute}})
		orders := newTopic[Order](t, b, "orders")
		_, err := orders.Subscribe("payments", func(context.Context, eventbus.Event[Order]) error {
			return errors.New("gateway: 503")
		}, nil)
		require.NoError(t, err)
		publish(t, orders, Order{ID: "a"})
		synctest.Wait()
		spy.cleanup()
		spy.wantFailure(t, "did not drain within 10s after the test", "or an event waiting for a retry",
			`orders/payments key="a" attempts=1 err="gateway: 503 (retry abandoned: context deadline exceeded)"`)
	})
}
