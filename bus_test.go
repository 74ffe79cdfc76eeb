package eventbus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	billingv1 "github.com/seed-a6f1faae/eventbus/testdata/samename/billing/v1"
	ordersv1 "github.com/seed-a6f1faae/eventbus/testdata/samename/orders/v1"
)

// Order is a test payload keyed by its Key field.
type Order struct {
	Key string
	N   int
}

func (o Order) AggregateID() string { return o.Key }

func newBus(t *testing.T, opts *eventbus.Options) *eventbus.Bus {
	t.Helper()
	b, err := eventbus.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func newTopic[T any](t *testing.T, b *eventbus.Bus, name string, opts *eventbus.TopicOptions[T]) *eventbus.Topic[T] {
	t.Helper()
	topic, err := eventbus.NewTopic[T](b, name, opts)
	require.NoError(t, err)
	return topic
}

func subscribe[T any](t *testing.T, topic *eventbus.Topic[T], name string, h eventbus.Handler[T], opts *eventbus.SubscriptionOptions) *eventbus.Subscription {
	t.Helper()
	s, err := topic.Subscribe(name, h, opts)
	require.NoError(t, err)
	return s
}

// recordHeaders subscribes name to topic with a handler that records the
// header of every event it handles, and returns what it recorded so far.
func recordHeaders[T any](t *testing.T, topic *eventbus.Topic[T], name string) func() []eventbus.Header {
	t.Helper()
	var mu sync.Mutex
	var got []eventbus.Header
	subscribe(t, topic, name, func(_ context.Context, e eventbus.Event[T]) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.Header)
		return nil
	}, nil)
	return func() []eventbus.Header {
		mu.Lock()
		defer mu.Unlock()
		return got[:len(got):len(got)]
	}
}

// TestOrderPerKeyExactlyOnce publishes a million events over 1,000 keys to 3
// subscriptions of 8 workers each, from 4 publishers with disjoint keys, and
// checks that each subscription saw every event once, in publish order per
// key.
func TestOrderPerKeyExactlyOnce(t *testing.T) {
	const (
		events     = 1_000_000
		keys       = 1000
		subs       = 3
		publishers = 4
	)
	n := events
	if testing.Short() {
		n = events / 10
	}
	b := newBus(t, &eventbus.Options{Workers: 8, QueueSize: 256})
	topic := newTopic[Order](t, b, "orders", nil)
	// seen[s][k] is the next N expected for key k in subscription s; each
	// key is handled by one worker at a time, so per-key slots need no lock
	// beyond the ordering the bus itself promises (the race detector checks).
	seen := make([][]int, subs)
	bad := make([]atomic.Int64, subs)
	for s := range subs {
		seen[s] = make([]int, keys)
		subscribe(t, topic, fmt.Sprintf("s%d", s), func(_ context.Context, e eventbus.Event[Order]) error {
			k := e.Payload.N % keys
			if e.Payload.N/keys != seen[s][k] {
				bad[s].Add(1)
			}
			seen[s][k]++
			return nil
		}, nil)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			keyNames := make([]string, keys)
			for k := range keys {
				keyNames[k] = fmt.Sprintf("k%d", k)
			}
			for i := p; i < n; i += publishers {
				// Event i has key i%keys and is the (i/keys)th of its key.
				// Publisher p owns the keys congruent to p mod publishers.
				if err := topic.Publish(ctx, Order{Key: keyNames[i%keys], N: i}); err != nil {
					t.Errorf("Publish(%d) = %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, b.Flush(ctx))
	for s := range subs {
		require.Zero(t, bad[s].Load(), "subscription %d: events out of order", s)
		for k := range keys {
			want := n / keys
			if got := seen[s][k]; got != want {
				t.Fatalf("subscription %d key %d: handled %d events, want %d", s, k, got, want)
			}
		}
	}
	require.NoError(t, b.Shutdown(ctx))
}

func TestFanOutAndEnvelope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, nil)
		topic := newTopic(t, b, "orders", &eventbus.TopicOptions[Order]{SchemaVersion: 3})
		var mu sync.Mutex
		got := map[string][]eventbus.Event[Order]{}
		for _, name := range []string{"billing", "shipping", "audit"} {
			subscribe(t, topic, name, func(_ context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				got[name] = append(got[name], e)
				return nil
			}, nil)
		}
		start := time.Now()
		md := eventbus.Metadata{"tenant": "acme"}
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "o-1", N: 1}, eventbus.WithMetadata(md)))
		require.NoError(t, b.Flush(context.Background()))
		require.Len(t, got, 3)
		e := got["billing"][0]
		want := eventbus.Event[Order]{
			Header: eventbus.Header{
				ID: e.ID, Type: "Order", Topic: "orders", Key: "o-1", Time: start,
				SchemaVersion: 3, CorrelationID: e.ID, Metadata: md,
			},
			Payload: Order{Key: "o-1", N: 1},
		}
		for name, events := range got {
			require.Len(t, events, 1, name)
			if diff := cmp.Diff(want, events[0]); diff != "" {
				t.Errorf("%s got (-want +got):\n%s", name, diff)
			}
		}
		require.False(t, e.ID.IsZero())
		require.Equal(t, start.UnixMilli(), e.ID.Time().UnixMilli())
	})
}

func TestKeySources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
		var keys []string
		record := func(_ context.Context, e eventbus.Event[Order]) error {
			keys = append(keys, e.Key)
			return nil
		}
		byMethod := newTopic[Order](t, b, "by-method", nil)
		byFunc := newTopic(t, b, "by-func", &eventbus.TopicOptions[Order]{Key: func(o Order) string { return fmt.Sprint("n", o.N) }})
		subscribe(t, byMethod, "rec", record, nil)
		subscribe(t, byFunc, "rec", record, nil)
		ctx := context.Background()
		require.NoError(t, byMethod.Publish(ctx, Order{Key: "m", N: 1}))
		require.NoError(t, byFunc.Publish(ctx, Order{Key: "m", N: 2}))
		require.NoError(t, byFunc.Publish(ctx, Order{Key: "m", N: 3}, eventbus.WithKey("explicit")))
		embedded := newTopic[embedsOrder](t, b, "embedded", nil)
		subscribe(t, embedded, "rec", func(_ context.Context, e eventbus.Event[embedsOrder]) error {
			keys = append(keys, e.Key)
			return nil
		}, nil)
		require.NoError(t, embedded.Publish(ctx, embedsOrder{&Order{Key: "promoted"}}))
		if diff := cmp.Diff([]string{"m", "n2", "explicit", "promoted"}, keys); diff != "" {
			t.Errorf("keys (-want +got):\n%s", diff)
		}
	})
}

// seedEvent is written the way the original design wrote events.
type seedEvent struct {
	UserID    string
	Timestamp time.Time
}

func (e *seedEvent) GetEventType() string    { return "user.created" }
func (e *seedEvent) GetAggregateID() string  { return e.UserID }
func (e *seedEvent) GetTimestamp() time.Time { return e.Timestamp }

// seedValue is seedEvent with its methods on the pointer, as the original
// design declared them, used as a value payload.
type seedValue struct{ UserID string }

func (e *seedValue) GetEventType() string   { return "seed.value" }
func (e *seedValue) GetAggregateID() string { return e.UserID }

// TestPointerReceiverMethods: a value payload type whose methods are
// declared on its pointer is named by its EventType method, as its pointer
// type is, and its key method, which a value cannot call, is refused rather
// than ignored, which would leave its events unordered.
func TestPointerReceiverMethods(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	_, err := eventbus.NewTopic[seedValue](b, "values", nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorContains(t, err, "*eventbus_test.seedValue only")

	values := newTopic(t, b, "values", &eventbus.TopicOptions[seedValue]{Key: func(v seedValue) string { return v.UserID }})
	require.Equal(t, "seed.value", values.EventType())
	var got []string
	subscribe(t, values, "rec", func(_ context.Context, e eventbus.Event[seedValue]) error {
		got = append(got, e.Type+"/"+e.Key)
		return nil
	}, nil)
	require.NoError(t, values.Publish(context.Background(), seedValue{UserID: "u-1"}))
	require.Equal(t, []string{"seed.value/u-1"}, got)

	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[seedValue](r, nil))
	d, err := r.Encode(seedValue{UserID: "u-1"})
	require.NoError(t, err)
	require.Equal(t, "seed.value", d.Type, "Register names a type as NewTopic does")

	// A StoreTopic would put every event in one keyless stream.
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	_, err = eventbus.NewStoreTopic[seedValue](b, store, r, "values")
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorContains(t, err, "*eventbus_test.seedValue only")
}

type typed struct{}

func (typed) EventType() string { return "thing.happened" }

type badlyNamed struct{}

func (badlyNamed) EventType() string { return "no spaces please" }

type Renamed struct{}

func TestEventTypeNames(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	seed := newTopic[*seedEvent](t, b, "users", nil)
	require.Equal(t, "user.created", seed.EventType())
	require.Equal(t, "thing.happened", newTopic[typed](t, b, "things", nil).EventType())
	require.Equal(t, "Order", newTopic[Order](t, b, "orders", nil).EventType())
	require.Equal(t, "Order", newTopic[*Order](t, b, "order-pointers", nil).EventType(), "T and *T share a name")
	require.Equal(t, "renamed", newTopic(t, b, "renamed", &eventbus.TopicOptions[Renamed]{EventType: "renamed"}).EventType())

	var keys []string
	subscribe(t, seed, "rec", func(_ context.Context, e eventbus.Event[*seedEvent]) error {
		keys = append(keys, e.Key+"/"+e.Type)
		return nil
	}, nil)
	require.NoError(t, seed.Publish(context.Background(), &seedEvent{UserID: "u-9"}))
	require.Equal(t, []string{"u-9/user.created"}, keys)

	_, err := eventbus.NewTopic[badlyNamed](b, "bad", nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorContains(t, err, "no spaces please")
	_, err = eventbus.NewTopic[struct{ X int }](b, "anonymous", nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	_, err = eventbus.NewTopic(b, "clash", &eventbus.TopicOptions[Renamed]{EventType: "user.created"})
	require.ErrorIs(t, err, eventbus.ErrDuplicate)
	require.ErrorContains(t, err, "user.created")
}

// TestNewTopicTakenTypeSamePackageName makes topics of the types of one
// name of two packages of one name (two generated "v1" packages, say),
// which take one default event type name: the error must tell the two
// apart by their import paths, as Register's does, where their
// package-qualified names read alike, as if one type clashed with itself.
func TestNewTopicTakenTypeSamePackageName(t *testing.T) {
	b := newBus(t, nil)
	newTopic[ordersv1.Created](t, b, "orders", nil)
	_, err := eventbus.NewTopic[*billingv1.Created](b, "billing", nil)
	require.ErrorIs(t, err, eventbus.ErrDuplicate)
	for _, want := range []string{"eventbus/testdata/samename/orders/v1.Created", "eventbus/testdata/samename/billing/v1.Created"} {
		require.ErrorContains(t, err, want)
	}
}

// TestEventTypeNameErrorsSayHowToName checks that the error for a payload
// type that gives no valid event type name says how to give one: the
// option of the call that needs it (TopicOptions.EventType for NewTopic,
// TypeOptions.Name for Register), and a method only for a named type that
// has none, since a type without a name ([]byte, a map, an anonymous
// struct) can have no methods, and one whose method gave the bad name has
// it already.
func TestEventTypeNameErrorsSayHowToName(t *testing.T) {
	b := newBus(t, nil)
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	const addMethod = "add an EventType() string method"
	for _, tt := range []struct {
		name       string
		call       func() error
		option     string
		wantMethod bool
	}{
		{"NewTopic []byte", func() error {
			_, err := eventbus.NewTopic[[]byte](b, "raw", nil)
			return err
		}, "TopicOptions.EventType", false},
		{"NewTopic anonymous struct", func() error {
			_, err := eventbus.NewTopic[struct{ X int }](b, "anonymous", nil)
			return err
		}, "TopicOptions.EventType", false},
		{"NewTopic bad method", func() error {
			_, err := eventbus.NewTopic[badlyNamed](b, "bad", nil)
			return err
		}, "TopicOptions.EventType", false},
		{"NewTopic generic", func() error {
			_, err := eventbus.NewTopic[box[int]](b, "boxes", nil)
			return err
		}, "TopicOptions.EventType", true},
		{"Register []byte", func() error { return eventbus.Register[[]byte](r, nil) }, "TypeOptions.Name", false},
		{"Register bad method", func() error { return eventbus.Register[badlyNamed](r, nil) }, "TypeOptions.Name", false},
		{"Register generic", func() error { return eventbus.Register[box[int]](r, nil) }, "TypeOptions.Name", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.ErrorIs(t, err, eventbus.ErrInvalid)
			if !strings.Contains(err.Error(), tt.option) {
				t.Errorf("error %q does not name %s", err, tt.option)
			}
			if got := strings.Contains(err.Error(), addMethod); got != tt.wantMethod {
				t.Errorf("error %q: says %q: %t, want %t", err, addMethod, got, tt.wantMethod)
			}
		})
	}
}

// box is a generic payload type, whose Go type name ("box[int]") is no
// valid event type name.
type box[T any] struct{ V T }

// eachMode runs f as a subtest in Async mode, then in Sync mode.
func eachMode(t *testing.T, f func(t *testing.T, mode eventbus.Mode)) {
	for _, m := range []struct {
		name string
		mode eventbus.Mode
	}{{"async", eventbus.Async}, {"sync", eventbus.Sync}} {
		t.Run(m.name, func(t *testing.T) { f(t, m.mode) })
	}
}

func TestCorrelationAndCausation(t *testing.T) { eachMode(t, testCorrelationAndCausation) }

func testCorrelationAndCausation(t *testing.T, mode eventbus.Mode) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: mode})
		orders := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		var got []eventbus.Header
		var leaked context.Context
		subscribe(t, orders, "chain", func(ctx context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			got = append(got, e.Header)
			if e.Payload.N == 1 {
				leaked = ctx // published with after the handler returned
			}
			mu.Unlock()
			if e.Payload.N < 3 {
				return orders.Publish(ctx, Order{Key: e.Key, N: e.Payload.N + 1})
			}
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, orders.Publish(ctx, Order{Key: "k", N: 1}))
		synctest.Wait()
		require.NoError(t, orders.Publish(leaked, Order{Key: "late", N: 10}))
		require.NoError(t, b.Flush(ctx))

		require.Len(t, got, 4)
		root := got[0]
		require.Equal(t, root.ID, root.CorrelationID, "a root event correlates to itself")
		require.True(t, root.CausationID.IsZero())
		for i, h := range got[1:3] {
			require.Equal(t, root.ID, h.CorrelationID, "event %d", i+1)
			require.Equal(t, got[i].ID, h.CausationID, "event %d", i+1)
		}
		require.Equal(t, root.ID, got[3].CausationID, "a kept context still names its event")
	})
}

// TestKeptContextEnds keeps the contexts of handled events, one plain and
// one carrying a trace context, past their handlers: they stay live and keep
// their links while the subscription runs, and are cancelled once it has
// ended, even after a new subscription has taken its place.
func TestKeptContextEnds(t *testing.T) {
	b := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic[Order](t, b, "orders", nil)
	ctx := context.Background()
	type kept struct {
		ctx context.Context
		id  eventbus.ID
	}
	var mu sync.Mutex
	var keep []kept
	handler := func(ctx context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		keep = append(keep, kept{ctx, e.ID})
		return nil
	}
	traced, err := eventbus.WithTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	require.NoError(t, err)

	first := subscribe(t, orders, "first", handler, nil)
	require.NoError(t, orders.Publish(ctx, Order{Key: "plain"}))
	require.NoError(t, orders.Publish(traced, Order{Key: "traced"}))
	require.NoError(t, b.Flush(ctx))
	require.Len(t, keep, 2)
	for _, k := range keep {
		require.NoError(t, k.ctx.Err(), "a kept context is live while its subscription runs")
	}
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", eventbus.Traceparent(keep[1].ctx))

	require.NoError(t, first.Unsubscribe(ctx))
	subscribe(t, orders, "second", handler, nil)
	require.NoError(t, orders.Publish(ctx, Order{Key: "later"}))
	require.NoError(t, b.Flush(ctx))
	require.Len(t, keep, 3)
	for _, k := range keep[:2] {
		require.ErrorIs(t, k.ctx.Err(), context.Canceled, "the subscription has ended")
		require.ErrorIs(t, context.Cause(k.ctx), eventbus.ErrClosed)
		select {
		case <-k.ctx.Done():
		default:
			t.Fatal("Done is not closed after the subscription ended")
		}
	}
	require.NoError(t, keep[2].ctx.Err(), "the new subscription's context is live")

	got := recordHeaders(t, orders, "record")
	for _, k := range keep[:2] {
		require.NoError(t, orders.Publish(k.ctx, Order{Key: "linked"}))
	}
	require.NoError(t, b.Flush(ctx))
	require.Len(t, got(), 2)
	for i, h := range got() {
		require.Equal(t, keep[i].id, h.CausationID, "an ended context still names its event")
	}

	require.NoError(t, b.Close())
	require.ErrorIs(t, keep[2].ctx.Err(), context.Canceled)
}

func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var handled []int
		subscribe(t, topic, "slow", func(_ context.Context, e eventbus.Event[Order]) error {
			<-gate
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 1})) // taken by the worker, which blocks
		synctest.Wait()
		require.NoError(t, topic.Publish(ctx, Order{N: 2})) // fills the queue

		ok, err := topic.TryPublish(ctx, Order{N: 3})
		require.NoError(t, err)
		require.False(t, ok, "TryPublish on a full queue")

		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		require.ErrorIs(t, topic.Publish(short, Order{N: 3}), context.DeadlineExceeded)

		done := make(chan error)
		go func() { done <- topic.Publish(ctx, Order{N: 4}) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Publish on a full queue returned %v before room appeared", err)
		default:
		}
		close(gate)
		require.NoError(t, <-done)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 2, 4}, handled, "the failed publishes queued nothing")
	})
}

// TestStopWakesPublisherWaitingForRoom checks that a Publish waiting for
// room in a full queue returns ErrClosed, having queued nothing, once the
// bus stops without grace, as it does after Shutdown: the worker of a
// stuck handler never takes from its queue again, so only the stop can
// wake the publisher.
func TestStopWakesPublisherWaitingForRoom(t *testing.T) {
	for _, stop := range []string{"Close", "Shutdown past its deadline"} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
				topic := newTopic[Order](t, b, "orders", nil)
				subscribe(t, topic, "stuck", func(ctx context.Context, _ eventbus.Event[Order]) error {
					<-ctx.Done() // only a stop without grace ends it
					return ctx.Err()
				}, nil)
				bg := context.Background()
				require.NoError(t, topic.Publish(bg, Order{N: 1})) // taken: the handler is stuck
				synctest.Wait()
				require.NoError(t, topic.Publish(bg, Order{N: 2})) // fills the queue
				// Cancelled at the end, so that a Publish the stop left
				// waiting fails the test rather than hanging it.
				ctx, cancel := context.WithCancel(bg)
				defer cancel()
				published := make(chan error, 1)
				go func() { published <- topic.Publish(ctx, Order{N: 3}) }()
				synctest.Wait()

				var err error
				if stop == "Close" {
					err = b.Close()
				} else {
					short, cancel := context.WithTimeout(bg, time.Second)
					defer cancel()
					err = b.Shutdown(short)
				}
				var ue *eventbus.UndeliveredError
				require.ErrorAs(t, err, &ue)
				require.Equal(t, 1, ue.Count, "the event queued")
				synctest.Wait()
				select {
				case err := <-published:
					require.ErrorIs(t, err, eventbus.ErrClosed, "Publish waiting for room when the bus stopped")
				default:
					t.Errorf("Publish still waits for room after %s returned", stop)
				}
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					require.NotEqual(t, 3, dl.Payload().(Order).N, "the refused event was queued")
				}
			})
		})
	}
}

// TestFanOutAllOrNothing checks that an event is queued for every
// subscription or for none when one of them is full.
func TestFanOutAllOrNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var fast, slow []int
		subscribe(t, topic, "fast", func(_ context.Context, e eventbus.Event[Order]) error {
			fast = append(fast, e.Payload.N)
			return nil
		}, nil)
		subscribe(t, topic, "slow", func(_ context.Context, e eventbus.Event[Order]) error {
			<-gate
			slow = append(slow, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		synctest.Wait()
		require.NoError(t, topic.Publish(ctx, Order{N: 2}))
		synctest.Wait()
		ok, err := topic.TryPublish(ctx, Order{N: 3})
		require.False(t, ok)
		require.NoError(t, err)
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		require.ErrorIs(t, topic.Publish(short, Order{N: 4}), context.DeadlineExceeded)
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 2}, fast)
		require.Equal(t, []int{1, 2}, slow)
	})
}

// TestFanOutToManySubscriptions checks that every subscription receives
// every event however many a topic has: Publish chooses up to 32 queues
// without allocating, more in a slice of their own, and wakes the parked
// worker of each once it has let go of its lock. Each event here comes to
// workers that all sleep, waiting for the next one.
func TestFanOutToManySubscriptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const subs, events = 70, 3
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		got := make([][]int, subs)
		for i := range subs {
			subscribe(t, topic, fmt.Sprint("s", i), func(_ context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				got[i] = append(got[i], e.Payload.N)
				return nil
			}, nil)
		}
		ctx := context.Background()
		for n := range events {
			synctest.Wait() // every worker sleeps
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		mu.Lock()
		defer mu.Unlock()
		for i, ns := range got {
			require.Equal(t, []int{0, 1, 2}, ns, "subscription s%d", i)
		}
	})
}

// TestSyncModeOrdersOnlyEachPublisher pins what the Sync constant, the
// Key header and RetryPolicy say of Sync mode: each publisher runs the
// handlers itself, so events of one key from two publishers are handled at
// once, not one at a time, and an event waiting for its retry holds up its
// own publisher only, not a later event of its key from another one.
func TestSyncModeOrdersOnlyEachPublisher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync,
			Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
		topic := newTopic[Order](t, b, "orders", nil)
		first, second := make(chan struct{}), make(chan struct{})
		var mu sync.Mutex
		var handled []int
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			switch e.Payload.N {
			case 1: // runs until event 2 of its key has started
				close(first)
				<-second
			case 2:
				close(second)
			}
			mu.Lock()
			defer mu.Unlock()
			if e.Payload.N == 3 && len(handled) == 0 {
				handled = append(handled, -3) // a failed attempt
				return errFlaky
			}
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		var wg sync.WaitGroup
		wg.Go(func() { require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 1})) })
		<-first
		require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 2}), "handled while event 1 of its key is")
		wg.Wait()

		mu.Lock()
		handled = nil
		mu.Unlock()
		wg.Go(func() { require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 3})) })
		synctest.Wait() // event 3 failed and waits for its retry
		require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 4}))
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []int{-3, 4, 3}, handled, "event 4 of the key went ahead of event 3's retry")
	})
}

// TestSyncUnsubscribeWaitsForNoPublish pins what Unsubscribe says of Sync
// mode: it does not wait for a Publish already running, which may call the
// handler after Unsubscribe has returned, through its middleware. So does
// a Publish running when Close returns, which does not wait for it
// either, though the stop lets go of the chain.
func TestSyncUnsubscribeWaitsForNoPublish(t *testing.T) {
	for _, stop := range []string{"Unsubscribe", "Close"} {
		t.Run(stop, func(t *testing.T) {
			b := newBus(t, nil)
			topic := newTopic(t, b, "orders", &eventbus.TopicOptions[Order]{Mode: eventbus.Sync})
			in, release := make(chan struct{}), make(chan struct{})
			subscribe(t, topic, "first", func(context.Context, eventbus.Event[Order]) error {
				close(in)
				<-release
				return nil
			}, nil)
			var ran, wrapped atomic.Bool
			mark := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
				return func(ctx context.Context, env *eventbus.Envelope) error {
					wrapped.Store(true)
					return next(ctx, env)
				}
			}
			s := subscribe(t, topic, "second", func(context.Context, eventbus.Event[Order]) error {
				ran.Store(true)
				return nil
			}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{mark}})
			published := make(chan error)
			go func() { published <- topic.Publish(context.Background(), Order{N: 1}) }()
			<-in // the Publish has reached the first subscription
			if stop == "Unsubscribe" {
				require.NoError(t, s.Unsubscribe(context.Background()))
			} else {
				require.NoError(t, b.Close())
			}
			require.False(t, ran.Load())
			close(release)
			require.NoError(t, <-published)
			require.True(t, ran.Load(), "the Publish running called the handler after %s returned", stop)
			require.True(t, wrapped.Load(), "the Publish running called the handler after %s returned, but not its middleware", stop)
		})
	}
}

func TestSyncModeReturnsErrors(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic(t, b, "orders", &eventbus.TopicOptions[Order]{Mode: eventbus.Sync})
	errA, errB := errors.New("a failed"), errors.New("b failed")
	var ran []string
	for _, s := range []struct {
		name string
		err  error
	}{{"a", errA}, {"ok", nil}, {"b", errB}} {
		subscribe(t, topic, s.name, func(_ context.Context, e eventbus.Event[Order]) error {
			ran = append(ran, s.name)
			if e.Payload.N == 0 {
				return nil
			}
			return s.err
		}, nil)
	}
	ctx := context.Background()
	err := topic.Publish(ctx, Order{N: 1})
	require.ErrorIs(t, err, errA)
	require.ErrorIs(t, err, errB)
	require.Equal(t, []string{"a", "ok", "b"}, ran, "handlers ran before Publish returned, in order")
	var failed []eventbus.HandlerError
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "Publish(N: 1) = %v, want errors joined", err)
	for _, e := range joined.Unwrap() {
		var h *eventbus.HandlerError
		require.ErrorAs(t, e, &h)
		failed = append(failed, *h)
	}
	if diff := cmp.Diff([]eventbus.HandlerError{{Topic: "orders", Subscription: "a", Err: errA}, {Topic: "orders", Subscription: "b", Err: errB}}, failed, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("Publish(N: 1) returned handler errors (-want +got):\n%s", diff)
	}
	if want := `subscription "a" of topic "orders": ` + errA.Error(); failed[0].Error() != want {
		t.Errorf("HandlerError.Error() = %q, want %q", failed[0].Error(), want)
	}
	require.NoError(t, topic.Publish(ctx, Order{N: 0}))
	require.Equal(t, 2, b.DeadLetters().Len(), "each final failure is also dead-lettered")

	// A refusal is no handler's failure: no handler ran.
	ran = nil
	err = topic.Publish(ctx, Order{N: 1}, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	var h *eventbus.HandlerError
	require.False(t, errors.As(err, &h), "Publish with a nil option = %v, want no *HandlerError", err)
	require.Empty(t, ran)
}

// TestTopicBus checks that a topic tells its own bus, as the Kafka bridge
// needs to refuse a topic of another bus than its consumer's.
func TestTopicBus(t *testing.T) {
	b1, b2 := newBus(t, nil), newBus(t, nil)
	t1 := newTopic[Order](t, b1, "orders", nil)
	t2 := newTopic[Order](t, b2, "orders", nil)
	require.Same(t, b1, t1.Bus())
	require.Same(t, b2, t2.Bus())
}

func TestFlushWaitsForEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 4})
		topic := newTopic[Order](t, b, "orders", nil)
		var handled atomic.Int64
		subscribe(t, topic, "slow", func(context.Context, eventbus.Event[Order]) error {
			time.Sleep(time.Millisecond) // fake time: handlers take a while
			handled.Add(1)
			return nil
		}, nil)
		ctx := context.Background()
		for i := range 100 {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint(i % 7), N: i}))
		}
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 100, handled.Load())

		short, cancel := context.WithTimeout(ctx, time.Microsecond)
		defer cancel()
		require.NoError(t, topic.Publish(ctx, Order{N: 100}))
		require.ErrorIs(t, b.Flush(short), context.DeadlineExceeded)
	})
}

// TestFlushLeavesLaterEvents checks that Flush waits for the events
// published before the call and not for those that handlers publish
// meanwhile, as its doc says: were it to wait for them too, a Flush made
// while a handler's event waits for something that comes only after the
// Flush (here, the test's next step) would never return.
func TestFlushLeavesLaterEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		release, later := make(chan struct{}), make(chan struct{})
		var handled atomic.Int64
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			defer handled.Add(1)
			if e.Payload.N == 0 {
				<-release
				return topic.Publish(ctx, Order{N: 1})
			}
			<-later // the event published meanwhile waits for the Flush
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 0}))
		flushed := make(chan error, 1)
		go func() { flushed <- b.Flush(ctx) }()
		synctest.Wait() // Flush waits for event 0
		close(release)
		require.NoError(t, <-flushed)
		require.EqualValues(t, 1, handled.Load(), "event 0 handled, event 1 not yet")
		close(later)
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 2, handled.Load())
	})
}

// TestFlushLeavesLaterEventsOfOtherQueues checks that Flush waits for none
// of the events published after the call in any queue, as its doc says,
// not only in the queue it waits on first: a Flush that read each queue's
// position only once it came to that queue, after the queues before it
// had drained, took an event published meanwhile for one it had to wait
// for, and here, where that event waits for the test's next step after
// the Flush, never returned.
func TestFlushLeavesLaterEventsOfOtherQueues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		release, later := make(chan struct{}), make(chan struct{})
		var handled atomic.Int64
		h := func(ctx context.Context, e eventbus.Event[Order]) error {
			defer handled.Add(1)
			if e.Payload.N == 0 {
				<-release
			} else {
				<-later // published after the Flush, it waits for it
			}
			return nil
		}
		// Two subscriptions: whichever Flush waits on first, it comes to
		// the other once event 1 is queued there.
		subscribe(t, topic, "a", h, nil)
		subscribe(t, topic, "b", h, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 0}))
		flushed := make(chan error, 1)
		go func() { flushed <- b.Flush(ctx) }()
		synctest.Wait() // Flush waits for event 0 in one subscription
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		close(release)
		synctest.Wait()
		select {
		case err := <-flushed:
			require.NoError(t, err)
		default:
			close(later)
			require.NoError(t, <-flushed)
			t.Fatal("Flush waited for an event published after it was called")
		}
		require.EqualValues(t, 2, handled.Load(), "event 0 handled twice, event 1 not yet")
		close(later)
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 4, handled.Load())
	})
}

// TestHandlerPublishesToItself checks that a handler publishing to its own
// topic through a queue of one cannot deadlock the bus.
func TestHandlerPublishesToItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var handled atomic.Int64
		subscribe(t, topic, "echo", func(ctx context.Context, e eventbus.Event[Order]) error {
			handled.Add(1)
			if e.Payload.N > 0 {
				// Two events per event: the queue of one fills at once.
				for range 2 {
					if err := topic.Publish(ctx, Order{Key: e.Key, N: e.Payload.N - 1}); err != nil {
						return err
					}
				}
			}
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 6}))
		synctest.Wait() // every goroutine idle: no deadlock
		require.EqualValues(t, 1<<7-1, handled.Load())
		require.Zero(t, b.DeadLetters().Len())
	})
}

// TestHandlerTryPublishFullQueue checks that TryPublish with a handler's
// context keeps the queue's bound: it returns false on a full queue, as
// its doc says, where Publish with that context queues past the bound
// (it would otherwise wait, maybe for itself).
func TestHandlerTryPublishFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
		orders := newTopic[Order](t, b, "orders", nil)
		mails := newTopic[string](t, b, "mails", nil)
		gate := make(chan struct{})
		var mailed []string
		subscribe(t, mails, "smtp", func(_ context.Context, e eventbus.Event[string]) error {
			<-gate
			mailed = append(mailed, e.Payload)
			return nil
		}, nil)
		var (
			tried          bool
			tryErr, pubErr error
		)
		subscribe(t, orders, "notify", func(ctx context.Context, e eventbus.Event[Order]) error {
			tried, tryErr = mails.TryPublish(ctx, "try")
			pubErr = mails.Publish(ctx, "publish")
			return nil
		}, nil)
		ctx := context.Background()
		require.NoError(t, mails.Publish(ctx, "first")) // taken by the worker, which blocks
		synctest.Wait()
		require.NoError(t, mails.Publish(ctx, "second")) // fills the queue
		require.NoError(t, orders.Publish(ctx, Order{N: 1}))
		synctest.Wait()
		if tried || tryErr != nil {
			t.Errorf("TryPublish(handler's ctx) on a full queue = %v, %v, want false, nil", tried, tryErr)
		}
		if pubErr != nil {
			t.Errorf("Publish(handler's ctx) on a full queue = %v, want nil", pubErr)
		}
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []string{"first", "second", "publish"}, mailed, "what TryPublish refused was queued nowhere")
	})
}

// TestQueueLetsGoOfBurst has a handler publish 20,000 events of 1 KB to a
// subscription whose queue holds 16, which its handler holds up meanwhile:
// published with the handler's context, they are queued past the bound.
// Once they are handled, the subscription holds about what an idle one
// does, not slices sized for the burst, which it would keep for good.
func TestQueueLetsGoOfBurst(t *testing.T) {
	type big struct{ B [1024]byte }
	b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 16})
	src := newTopic[Order](t, b, "src", nil)
	dst := newTopic[big](t, b, "dst", nil)
	const n = 20_000
	gate := make(chan struct{})
	subscribe(t, src, "fan", func(ctx context.Context, e eventbus.Event[Order]) error {
		defer close(gate)
		for range n {
			if err := dst.Publish(ctx, big{}); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	subscribe(t, dst, "slow", func(context.Context, eventbus.Event[big]) error {
		<-gate
		return nil
	}, nil)
	ctx := context.Background()
	before := liveHeap()
	require.NoError(t, src.Publish(ctx, Order{Key: "k"}))
	require.NoError(t, b.Flush(ctx)) // the fan-out is done
	require.NoError(t, b.Flush(ctx)) // and so are the events it published
	if grown := int64(liveHeap()) - int64(before); grown > 2<<20 {
		t.Errorf("heap grew by %d bytes over a burst of %d events of 1 KB, all handled; want at most %d", grown, n, 2<<20)
	}
}

func TestPanicBecomesError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var handled []int
		subscribe(t, topic, "fragile", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 2 {
				panic("boom")
			}
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		for i := 1; i <= 3; i++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: i}))
		}
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{1, 3}, handled, "the worker survived the panic")
		var dls []eventbus.DeadLetter
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dls = append(dls, dl)
		}
		require.Len(t, dls, 1)
		var pe *eventbus.PanicError
		require.ErrorAs(t, dls[0].Err, &pe)
		require.Equal(t, "boom", pe.Value)
		require.Contains(t, string(pe.Stack), "TestPanicBecomesError")
		require.Equal(t, 1, dls[0].Attempt)
		require.Equal(t, Order{Key: "k", N: 2}, dls[0].Payload())
	})
}

func TestShutdownDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := eventbus.New(&eventbus.Options{Workers: 2})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		var handled atomic.Int64
		subscribe(t, topic, "slow", func(ctx context.Context, e eventbus.Event[Order]) error {
			time.Sleep(time.Second)
			handled.Add(1)
			return ctx.Err()
		}, nil)
		ctx := context.Background()
		for i := range 10 {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint(i), N: i}))
		}
		generous, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		require.NoError(t, b.Shutdown(generous))
		require.EqualValues(t, 10, handled.Load())
		require.Zero(t, b.DeadLetters().Len())
		require.ErrorIs(t, topic.Publish(ctx, Order{}), eventbus.ErrClosed)
		require.NoError(t, b.Shutdown(ctx), "Shutdown is idempotent")
		require.NoError(t, b.Close())
	})
}

// TestDoneClosesWhenStopped checks that Bus.Done is open while the bus
// runs and while Shutdown drains it, and closed once every handler has
// returned.
func TestDoneClosesWhenStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		returned := false
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			<-gate
			returned = true
			return nil
		}, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
		stopped := make(chan error)
		go func() { stopped <- b.Shutdown(context.Background()) }()
		synctest.Wait()
		select {
		case <-b.Done():
			t.Fatal("Done is closed while Shutdown waits for a handler")
		default:
		}
		close(gate)
		<-b.Done()
		require.True(t, returned, "the handler returned before Done closed")
		require.NoError(t, <-stopped)
	})
}

func TestShutdownDeadlineReportsUndelivered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log bytes.Buffer
		b, err := eventbus.New(&eventbus.Options{Workers: 1, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		var cancelled atomic.Int64
		subscribe(t, topic, "stuck", func(ctx context.Context, e eventbus.Event[Order]) error {
			<-ctx.Done() // only a forced stop ends it
			cancelled.Add(1)
			return ctx.Err()
		}, nil)
		ctx := context.Background()
		for i := range 5 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: i}))
			if i == 0 {
				// The worker takes the first alone, so that the others
				// are still in its queue at the stop, unnumbered.
				synctest.Wait()
			}
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err = b.Shutdown(short)
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, 4, ue.Count, "the four events still queued")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Contains(t, log.String(), `level=WARN msg="eventbus: events undelivered at shutdown" count=4 cause="context deadline exceeded"`, "the bus's log")
		require.EqualValues(t, 1, cancelled.Load(), "the running handler saw its context cancelled")
		require.Equal(t, 5, b.DeadLetters().Len(), "the cancelled one and the four queued ones")
		var ns []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: context.DeadlineExceeded}) {
			ns = append(ns, dl.Payload().(Order).N)
		}
		require.Equal(t, []int{1, 2, 3, 4}, ns, "never-run events carry the shutdown's cause")
		ids := map[eventbus.ID]bool{}
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			require.False(t, dl.ID.IsZero(), "never-run events are numbered too")
			require.Equal(t, dl.ID, dl.CorrelationID)
			ids[dl.ID] = true
		}
		require.Len(t, ids, 5)
		require.Equal(t, err, b.Close(), "later calls return the first result")
	})
}

// TestAbandonKeepsKeyOrderBehindRetry checks that when Close abandons a
// key's event waiting for its retry and a later event of the key still
// queued, the dead letters keep their publish order, so that a Redrive,
// oldest first, hands them on in their key's order.
func TestAbandonKeepsKeyOrderBehindRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Hour}})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			if e.Key == "stuck" {
				<-ctx.Done() // holds the worker until Close
				return ctx.Err()
			}
			return errFlaky
		}, nil)
		ctx := context.Background()
		for _, o := range []Order{{Key: "k", N: 1}, {Key: "stuck", N: 2}, {Key: "k", N: 3}} {
			// 1 fails and waits for its retry; 2 holds the worker, so 3
			// stays queued.
			require.NoError(t, topic.Publish(ctx, o))
			synctest.Wait()
		}
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		require.Equal(t, 3, ue.Count)
		var got []int
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if dl.Key == "k" {
				got = append(got, dl.Payload().(Order).N)
			}
		}
		if diff := cmp.Diff([]int{1, 3}, got); diff != "" {
			t.Errorf("dead letters of key k (-want +got):\n%s", diff)
		}
	})
}

// TestCloseLeavesNoGoroutine relies on synctest, which fails a test whose
// bubble still has goroutines blocked when its function returns.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	for _, stop := range []string{"Close", "Shutdown", "Unsubscribe then Close"} {
		t.Run(stop, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, err := eventbus.New(&eventbus.Options{Workers: 8, Retry: eventbus.RetryPolicy{MaxAttempts: 5}})
				require.NoError(t, err)
				topic, err := eventbus.NewTopic[Order](b, "orders", nil)
				require.NoError(t, err)
				var subs []*eventbus.Subscription
				for i := range 20 {
					s, err := topic.Subscribe(fmt.Sprint("s", i), func(_ context.Context, e eventbus.Event[Order]) error {
						if e.Payload.N%2 == 1 {
							return errors.New("odd") // parks the key for a retry: a timer
						}
						return nil
					}, nil)
					require.NoError(t, err)
					subs = append(subs, s)
				}
				for i := range 10 {
					require.NoError(t, topic.Publish(context.Background(), Order{Key: fmt.Sprint(i % 3), N: i}))
				}
				synctest.Wait()
				switch stop {
				case "Close":
					var ue *eventbus.UndeliveredError
					require.ErrorAs(t, b.Close(), &ue, "retries were pending")
				case "Shutdown":
					require.NoError(t, b.Shutdown(context.Background()), "retries run to the end")
				default:
					for _, s := range subs {
						require.NoError(t, s.Unsubscribe(context.Background()))
					}
					require.NoError(t, b.Close())
				}
			})
		})
	}
}

func TestUnsubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		var kept, gone atomic.Int64
		subscribe(t, topic, "kept", func(context.Context, eventbus.Event[Order]) error { kept.Add(1); return nil }, nil)
		sub := subscribe(t, topic, "gone", func(context.Context, eventbus.Event[Order]) error {
			time.Sleep(time.Second)
			gone.Add(1)
			return nil
		}, nil)
		ctx := context.Background()
		for i := range 3 {
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
		}
		require.NoError(t, sub.Unsubscribe(ctx), "drains what was queued")
		require.EqualValues(t, 3, gone.Load())
		require.ErrorIs(t, sub.Unsubscribe(ctx), eventbus.ErrClosed)
		require.NoError(t, topic.Publish(ctx, Order{N: 3}))
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 4, kept.Load())
		require.EqualValues(t, 3, gone.Load(), "no events after Unsubscribe")

		// The name is free again; a short deadline reports what is left.
		sub = subscribe(t, topic, "gone", func(ctx context.Context, _ eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		for i := range 3 {
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, sub.Unsubscribe(short), &ue)
		require.Equal(t, 2, ue.Count)
		require.Equal(t, 3, b.DeadLetters().Len())
	})
}

// TestStoppedSubscriptionLetsGoOfQueues fills the queues of subscriptions,
// 1,000 events of 1 KB each, then stops them with Unsubscribe, or by
// closing their bus, and keeps the *Subscription, as an owner does in a
// field, and the bus: what the workers kept for the events to come goes
// all the same, so the heap holds nothing like ten queues' worth.
func TestStoppedSubscriptionLetsGoOfQueues(t *testing.T) {
	type big struct{ B [1024]byte }
	for _, stop := range []string{"Unsubscribe", "Close"} {
		t.Run(stop, func(t *testing.T) {
			ctx := context.Background()
			var kept []any
			before := liveHeap()
			for range 10 {
				b := newBus(t, &eventbus.Options{Workers: 2})
				topic := newTopic[big](t, b, "t", nil)
				gate := make(chan struct{})
				sub := subscribe(t, topic, "s", func(context.Context, eventbus.Event[big]) error {
					<-gate
					return nil
				}, nil)
				for range 1000 {
					require.NoError(t, topic.Publish(ctx, big{}))
				}
				close(gate)
				require.NoError(t, b.Flush(ctx))
				if stop == "Unsubscribe" {
					require.NoError(t, sub.Unsubscribe(ctx))
				} else {
					require.NoError(t, b.Close())
				}
				kept = append(kept, sub, b)
			}
			if grown := int64(liveHeap()) - int64(before); grown > 2<<20 {
				t.Errorf("heap grew by %d bytes over 10 subscriptions stopped after 1,000 events of 1 KB, kept; want at most %d", grown, 2<<20)
			}
			runtime.KeepAlive(kept)
		})
	}
}

// TestStoppedSubscriptionLetsGoOfMiddleware runs 20,000 events through
// subscriptions with the Idempotency middleware, whose in-memory record
// then holds about 1 MB, stops them with Unsubscribe, or by closing their
// bus, and keeps the *Subscription and the bus: the records go all the
// same, in both modes. A Sync subscription kept its chain, and the record,
// for as long as its Subscription, or its bus, was kept.
func TestStoppedSubscriptionLetsGoOfMiddleware(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) { testStoppedSubscriptionLetsGoOfMiddleware(t, mode) })
}

func testStoppedSubscriptionLetsGoOfMiddleware(t *testing.T, mode eventbus.Mode) {
	for _, stop := range []string{"Unsubscribe", "Close"} {
		t.Run(stop, func(t *testing.T) {
			ctx := context.Background()
			var kept []any
			before := liveHeap()
			for range 5 {
				b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1, Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)}})
				topic := newTopic[int](t, b, "t", nil)
				sub := subscribe(t, topic, "s", func(context.Context, eventbus.Event[int]) error { return nil }, nil)
				for i := range 20_000 {
					require.NoError(t, topic.Publish(ctx, i))
				}
				require.NoError(t, b.Flush(ctx))
				if stop == "Unsubscribe" {
					require.NoError(t, sub.Unsubscribe(ctx))
				} else {
					require.NoError(t, b.Close())
				}
				kept = append(kept, sub, b)
			}
			if grown := int64(liveHeap()) - int64(before); grown > 2<<20 {
				t.Errorf("heap grew by %d bytes over 5 subscriptions with Idempotency stopped after 20,000 events, kept; want at most %d", grown, 2<<20)
			}
			runtime.KeepAlive(kept)
		})
	}
}

// TestStoppedSubscriptionsLetGoOfTheirContexts subscribes and stops 10,000
// subscriptions, with Unsubscribe on one bus, or by closing a bus of their
// own, and keeps nothing of them: the heap must not grow with their
// number. Handler contexts name their subscription's context through a
// table that every bus of the process shares, so that they hold no
// pointers; a stop that did not take the subscription out of it kept its
// context, and its bus's, for as long as the process ran.
func TestStoppedSubscriptionsLetGoOfTheirContexts(t *testing.T) {
	const n = 10_000
	noop := func(context.Context, eventbus.Event[int]) error { return nil }
	for _, stop := range []string{"Unsubscribe", "Close"} {
		t.Run(stop, func(t *testing.T) {
			ctx := context.Background()
			b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
			topic := newTopic[int](t, b, "t", nil)
			cycle := func() {
				if stop == "Unsubscribe" {
					require.NoError(t, subscribe(t, topic, "s", noop, nil).Unsubscribe(ctx))
					return
				}
				// Not newBus: its Cleanup would keep every bus until the test ends.
				b, err := eventbus.New(&eventbus.Options{Workers: 1, QueueSize: 1})
				require.NoError(t, err)
				subscribe(t, newTopic[int](t, b, "t", nil), "s", noop, nil)
				require.NoError(t, b.Close())
			}
			cycle() // the table's first slots, and the like, are not this test's
			before := liveHeap()
			for range n {
				cycle()
			}
			if grown := int64(liveHeap()) - int64(before); grown > 256<<10 {
				t.Errorf("heap grew by %d bytes over %d subscriptions stopped with %s; want at most %d", grown, n, stop, 256<<10)
			}
		})
	}
}

// keyed is an interface payload type with a key method.
type keyed interface{ AggregateID() string }

// nilSafe has a key method that runs on a nil pointer too: only the check
// of a nil pointer payload, not a recovered panic, refuses a nil *nilSafe.
type nilSafe struct{ ID string }

func (n *nilSafe) AggregateID() string {
	if n == nil {
		return ""
	}
	return n.ID
}

// embedsOrder has Order's key method, promoted through a pointer, which
// cannot run while the pointer is nil; so has embedsDeeper, one level down.
type (
	embedsOrder  struct{ *Order }
	embedsDeeper struct{ embedsOrder }
)

func TestBadInput(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	// Order's key method has a value receiver: it cannot run on nil.
	pointers := newTopic[*Order](t, b, "order-pointers", &eventbus.TopicOptions[*Order]{EventType: "order-pointer"})
	interfaces := newTopic[keyed](t, b, "keyed", nil)
	embedded := newTopic[embedsOrder](t, b, "embedded", nil)
	deeper := newTopic[*embedsDeeper](t, b, "deeper", nil)
	subscribe(t, topic, "taken", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
	ok := func(context.Context, eventbus.Event[Order]) error { return nil }
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"bus workers", func() error { _, err := eventbus.New(&eventbus.Options{Workers: -1}); return err }, eventbus.ErrInvalid},
		{"bus queue", func() error { _, err := eventbus.New(&eventbus.Options{QueueSize: 1 << 30}); return err }, eventbus.ErrInvalid},
		{"bus mode", func() error { _, err := eventbus.New(&eventbus.Options{Mode: 9}); return err }, eventbus.ErrInvalid},
		{"bus retry", func() error {
			_, err := eventbus.New(&eventbus.Options{Retry: eventbus.RetryPolicy{Jitter: 2}})
			return err
		}, eventbus.ErrInvalid},
		{"bus retry NaN multiplier", func() error {
			_, err := eventbus.New(&eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 3, Multiplier: math.NaN()}})
			return err
		}, eventbus.ErrInvalid},
		{"bus retry infinite multiplier", func() error {
			_, err := eventbus.New(&eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 3, Multiplier: math.Inf(1)}})
			return err
		}, eventbus.ErrInvalid},
		{"bus retry NaN jitter", func() error {
			_, err := eventbus.New(&eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 3, Jitter: math.NaN()}})
			return err
		}, eventbus.ErrInvalid},
		{"nil publish option", func() error { return topic.Publish(context.Background(), Order{Key: "a"}, nil) }, eventbus.ErrInvalid},
		{"nil pointer payload", func() error { return pointers.Publish(context.Background(), nil) }, eventbus.ErrInvalid},
		{"nil pointer in an interface payload", func() error {
			return interfaces.Publish(context.Background(), (*Order)(nil))
		}, eventbus.ErrInvalid},
		{"nil pointer in an interface payload, TryPublish", func() error {
			_, err := interfaces.TryPublish(context.Background(), (*Order)(nil))
			return err
		}, eventbus.ErrInvalid},
		{"nil pointer whose key method runs on nil, in an interface payload", func() error {
			return interfaces.Publish(context.Background(), (*nilSafe)(nil))
		}, eventbus.ErrInvalid},
		{"nil embedded pointer with the key method", func() error {
			return embedded.Publish(context.Background(), embedsOrder{})
		}, eventbus.ErrInvalid},
		{"nil embedded pointer with the key method, deeper", func() error {
			return deeper.Publish(context.Background(), &embedsDeeper{})
		}, eventbus.ErrInvalid},
		{"nil embedded pointer in an interface payload", func() error {
			return interfaces.Publish(context.Background(), embedsOrder{})
		}, eventbus.ErrInvalid},
		{"nil middleware", func() error {
			_, err := eventbus.New(&eventbus.Options{Middleware: []eventbus.Middleware{nil}})
			return err
		}, eventbus.ErrInvalid},
		{"empty topic", func() error { _, err := eventbus.NewTopic[Order](b, "", nil); return err }, eventbus.ErrInvalid},
		{"bad topic", func() error { _, err := eventbus.NewTopic[Order](b, "a/b", nil); return err }, eventbus.ErrInvalid},
		{"duplicate topic", func() error { _, err := eventbus.NewTopic[Order](b, "orders", nil); return err }, eventbus.ErrDuplicate},
		{"empty subscription", func() error { _, err := topic.Subscribe("", ok, nil); return err }, eventbus.ErrInvalid},
		{"duplicate subscription", func() error { _, err := topic.Subscribe("taken", ok, nil); return err }, eventbus.ErrDuplicate},
		{"nil handler", func() error { _, err := topic.Subscribe("nil", nil, nil); return err }, eventbus.ErrInvalid},
		{"zero workers", func() error {
			_, err := topic.Subscribe("w", ok, &eventbus.SubscriptionOptions{Workers: -3})
			return err
		}, eventbus.ErrInvalid},
		{"huge queue", func() error {
			_, err := topic.Subscribe("q", ok, &eventbus.SubscriptionOptions{QueueSize: 1 << 30})
			return err
		}, eventbus.ErrInvalid},
		{"negative retry", func() error {
			_, err := topic.Subscribe("r", ok, &eventbus.SubscriptionOptions{Retry: &eventbus.RetryPolicy{MaxAttempts: -1}})
			return err
		}, eventbus.ErrInvalid},
		{"nil context", func() error {
			//lint:ignore SA1012 checking that a nil context is refused
			return topic.Publish(nil, Order{}) //nolint:staticcheck
		}, eventbus.ErrInvalid},
		{"bad ID", func() error { _, err := eventbus.ParseID("not-an-id"); return err }, eventbus.ErrInvalid},
		{"nil bus", func() error { _, err := eventbus.NewTopic[Order](nil, "t", nil); return err }, eventbus.ErrInvalid},
		{"zero topic: Publish", func() error { return new(eventbus.Topic[Order]).Publish(context.Background(), Order{}) }, eventbus.ErrInvalid},
		{"nil topic: TryPublish", func() error {
			_, err := (*eventbus.Topic[Order])(nil).TryPublish(context.Background(), Order{})
			return err
		}, eventbus.ErrInvalid},
		{"zero topic: Subscribe", func() error { _, err := new(eventbus.Topic[Order]).Subscribe("s", ok, nil); return err }, eventbus.ErrInvalid},
		{"nil topic: SubscribeBatch", func() error {
			_, err := (*eventbus.Topic[Order])(nil).SubscribeBatch("s", func(context.Context, []eventbus.Event[Order]) error { return nil }, nil)
			return err
		}, eventbus.ErrInvalid},
		{"nil registry: Register", func() error { return eventbus.Register[Order](nil, nil) }, eventbus.ErrInvalid},
		{"schema version over 2^31: Register", func() error {
			reg, err := eventbus.NewRegistry(nil)
			require.NoError(t, err)
			over := int64(1)<<31 + 1 // negative on 32-bit platforms: refused too
			return eventbus.Register[Order](reg, &eventbus.TypeOptions{Version: int(over)})
		}, eventbus.ErrInvalid},
		{"nil registry: Decode", func() error { _, err := eventbus.Decode[Order](nil, eventbus.EventData{Type: "Order"}); return err }, eventbus.ErrInvalid},
		{"nil registry: Encode", func() error { _, err := (*eventbus.Registry)(nil).Encode(Order{}); return err }, eventbus.ErrInvalid},
		{"nil registry: upcaster", func() error {
			return eventbus.RegisterUpcaster[Order, Order](nil, func(o Order) (Order, error) { return o, nil })
		}, eventbus.ErrInvalid},
		{"nil store: SaveSnapshot", func() error {
			return eventbus.SaveSnapshot(context.Background(), nil, nil, "s", eventbus.Snapshot[Order]{})
		}, eventbus.ErrInvalid},
		{"nil store: LoadSnapshot", func() error {
			_, _, err := eventbus.LoadSnapshot[Order](context.Background(), nil, nil, "s")
			return err
		}, eventbus.ErrInvalid},
		{"nil store: StoreProcessed", func() error {
			return eventbus.NewStoreProcessed(nil).MarkProcessed(context.Background(), eventbus.IdempotencyKey{})
		}, eventbus.ErrInvalid},
		//lint:ignore SA1012 checking that a nil context is refused
		{"flush nil context", func() error { return b.Flush(nil) }, eventbus.ErrInvalid}, //nolint:staticcheck
		//lint:ignore SA1012 checking that a nil context is refused
		{"shutdown nil context", func() error { return b.Shutdown(nil) }, eventbus.ErrInvalid}, //nolint:staticcheck
		{"redrive nil context", func() error {
			//lint:ignore SA1012 checking that a nil context is refused
			_, err := b.DeadLetters().Redrive(nil, eventbus.DeadLetterFilter{}) //nolint:staticcheck
			return err
		}, eventbus.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}

	require.NoError(t, b.Close())
	for name, call := range map[string]func() error{
		"publish":   func() error { return topic.Publish(context.Background(), Order{}) },
		"subscribe": func() error { _, err := topic.Subscribe("late", ok, nil); return err },
		"topic":     func() error { _, err := eventbus.NewTopic[Order](b, "late", nil); return err },
	} {
		if err := call(); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestEventTime checks what the bus promises of Header.Time: an event that
// wakes an idle worker has the exact time of its publish; events queued
// behind a busy worker may share a clock reading, but one at most a tick
// (500 µs) old, and times never go back.
func TestEventTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		release := make(chan struct{})
		var times []time.Time // one worker appends: no lock needed
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			times = append(times, e.Time)
			<-release
			return nil
		}, nil)
		ctx := context.Background()
		var published []time.Time
		publish := func(n int) {
			published = append(published, time.Now())
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		const busy = 40
		for i := range busy {
			publish(i)
			time.Sleep(30 * time.Microsecond)
		}
		close(release)
		require.NoError(t, b.Flush(ctx))
		time.Sleep(time.Second) // idle: the clock's helper goes to sleep
		publish(busy)
		require.NoError(t, b.Flush(ctx))

		require.Len(t, times, busy+1)
		require.Equal(t, published[0], times[0], "the event that woke the worker")
		require.Equal(t, published[busy], times[busy], "the event published after an idle second")
		shared := 0
		for i := 1; i < busy; i++ {
			require.False(t, times[i].Before(times[i-1]), "event %d is older than event %d", i, i-1)
			require.False(t, times[i].After(published[i]), "event %d is stamped after its publish", i)
			require.LessOrEqual(t, published[i].Sub(times[i]), 500*time.Microsecond, "event %d", i)
			if times[i].Equal(times[i-1]) {
				shared++
			}
		}
		require.NotZero(t, shared, "events behind a busy worker share clock readings")
	})
}

func TestIDRoundTrip(t *testing.T) {
	for range 100 {
		id := eventbus.NewID()
		s := id.String()
		require.Len(t, s, 26)
		back, err := eventbus.ParseID(s)
		require.NoError(t, err)
		require.Equal(t, id, back)
	}
	synctest.Test(t, func(t *testing.T) {
		a := eventbus.NewID()
		time.Sleep(time.Millisecond)
		b := eventbus.NewID()
		require.Less(t, a.String(), b.String(), "IDs sort by time")
		require.Equal(t, time.Now().UnixMilli(), b.Time().UnixMilli())
	})
}

// TestIdleSubscriptionsSleep checks that 1,000 idle subscriptions leave
// every goroutine of the bus blocked: synctest.Wait returns only then, so a
// worker or clock that spun would hang it, and fake hours pass without a
// wake-up of any of them.
func TestIdleSubscriptionsSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 2})
		topic := newTopic[Order](t, b, "orders", nil)
		var handled atomic.Int64
		for i := range 1000 {
			subscribe(t, topic, fmt.Sprint("s", i), func(context.Context, eventbus.Event[Order]) error {
				handled.Add(1)
				return nil
			}, nil)
		}
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
		synctest.Wait()
		require.EqualValues(t, 1000, handled.Load())
		time.Sleep(time.Hour)
		synctest.Wait()
		require.EqualValues(t, 1000, handled.Load())
	})
}

// TestDefaultWorkersCapped makes a bus with the default Workers in a
// process whose GOMAXPROCS (set by the GOMAXPROCS variable, say) is above
// the most workers a subscription may have: the default is capped there,
// and the bus works, instead of New refusing an option that was never set.
func TestDefaultWorkersCapped(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(5000))
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	var handled atomic.Int64
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
		handled.Add(1)
		return nil
	}, nil)
	require.NoError(t, topic.Publish(t.Context(), Order{Key: "k"}))
	require.NoError(t, b.Flush(t.Context()))
	require.EqualValues(t, 1, handled.Load())
}

func TestShutdownFromHandlerIsRefused(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		if e.Payload.N == 0 {
			return b.Shutdown(ctx)
		}
		return nil
	}, nil)
	require.ErrorIs(t, topic.Publish(context.Background(), Order{}), eventbus.ErrInvalid)
	require.NoError(t, topic.Publish(context.Background(), Order{N: 1}), "the bus is still open")
}

// TestWaitingWithTracedContext calls Flush, Unsubscribe and Shutdown with
// a context that carries a trace context of WithTraceparent, as a request
// handler's may: it is no event handler's, so none of them refuses it.
func TestWaitingWithTracedContext(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	s := subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
	ctx, err := eventbus.WithTraceparent(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	require.NoError(t, err)
	require.NoError(t, topic.Publish(ctx, Order{N: 1}))
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, s.Unsubscribe(ctx))
	require.NoError(t, b.Shutdown(ctx))
}

// TestWaitingFromHandlerIsRefused calls Flush and Unsubscribe with an Async
// handler's context, which would wait for that very handler. An event with
// metadata has a handler context of another kind (a linkedContext): one
// that did not say it was a handler's (handler: false in its init) passed
// every test, and then Flush from such a handler waited for itself.
func TestWaitingFromHandlerIsRefused(t *testing.T) {
	for _, opts := range [][]eventbus.PublishOption{nil, {eventbus.WithMetadata(eventbus.Metadata{"x": "y"})}} {
		// In a bubble, so that a call that waited for its own handler would be
		// reported as a deadlock at once, not at the test timeout.
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1})
			topic := newTopic[Order](t, b, "orders", nil)
			errs := make(chan error, 2)
			var sub *eventbus.Subscription
			sub = subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				errs <- b.Flush(ctx)
				errs <- sub.Unsubscribe(ctx)
				return nil
			}, nil)
			require.NoError(t, topic.Publish(context.Background(), Order{}, opts...))
			require.ErrorIs(t, <-errs, eventbus.ErrInvalid, "Flush")
			require.ErrorIs(t, <-errs, eventbus.ErrInvalid, "Unsubscribe")
			require.NoError(t, b.Flush(context.Background()))
		})
	}
}

// TestHandlerGoexitCostsOneEvent checks that a handler calling
// runtime.Goexit, as t.FailNow does, loses only its own event: the worker
// carries on in a new goroutine, in order, and Flush does not hang.
func TestHandlerGoexitCostsOneEvent(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1})
				topic := newTopic[Order](t, b, "orders", nil)
				var handled []int
				gate := make(chan struct{})
				one := func(e eventbus.Event[Order]) {
					if e.Payload.N == 0 {
						<-gate // let the others queue up behind
					}
					if e.Payload.N == 2 {
						runtime.Goexit()
					}
					handled = append(handled, e.Payload.N)
				}
				var err error
				if batch {
					_, err = topic.SubscribeBatch("s", func(_ context.Context, es []eventbus.Event[Order]) error {
						for _, e := range es {
							one(e)
						}
						return nil
					}, &eventbus.SubscriptionOptions{BatchSize: 2})
				} else {
					_, err = topic.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error { one(e); return nil }, nil)
				}
				require.NoError(t, err)
				ctx := context.Background()
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 0}))
				synctest.Wait()
				for n := 1; n <= 5; n++ {
					require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
				}
				close(gate)
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, []int{0, 1, 3, 4, 5}, handled, "the rest, in order")
				var dead []int
				for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					var pe *eventbus.PanicError
					require.ErrorAs(t, dl.Err, &pe)
					require.ErrorContains(t, dl.Err, "runtime.Goexit")
					dead = append(dead, dl.Payload().(Order).N)
				}
				want := []int{2}
				if batch {
					want = []int{1, 2} // the whole batch the handler held
				}
				require.Equal(t, want, dead)
				require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: 6}))
				require.NoError(t, b.Flush(ctx))
				require.Equal(t, 6, handled[len(handled)-1], "the worker lives on")
				m := b.Metrics().Subscriptions[0]
				require.EqualValues(t, len(want), m.Failed, "failed attempts")
				require.EqualValues(t, len(want), m.DeadLettered)
				require.EqualValues(t, 7-len(want), m.Handled)
				require.Zero(t, m.Pending)
			})
		})
	}
}

func TestHandlerGoexitDuringRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}})
		topic := newTopic[Order](t, b, "orders", nil)
		var handled []int
		attempts := 0
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 1 {
				attempts++
				if attempts == 1 {
					return errFlaky // parks key k behind a retry
				}
				runtime.Goexit() // during the retry
			}
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		start := time.Now()
		for n := 1; n <= 3; n++ {
			require.NoError(t, topic.Publish(ctx, Order{Key: "k", N: n}))
		}
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{2, 3}, handled, "the events behind it in its lane, in order")
		dl, ok := firstDeadLetter(b)
		require.True(t, ok)
		require.Equal(t, 2, dl.Attempt)
		require.ErrorContains(t, dl.Err, "runtime.Goexit")
		require.Equal(t, start, dl.FirstFailure, "the first attempt's failure")
		require.Equal(t, start.Add(time.Second), dl.LastFailure, "the Goexit")
		m := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 2, m.Failed, "failed attempts: the error, then the Goexit")
		require.EqualValues(t, 1, m.Retried)
		require.EqualValues(t, 1, m.DeadLettered)
		require.EqualValues(t, 2, m.Handled)
	})
}

// TestSyncIDsUnique publishes from parallel goroutines to a Sync-mode
// topic, with context.Background() and with a handler's context (the two
// kinds of handler context, each numbered from chunks of its own), and
// checks that every event got an ID of its own, which its handler's
// context carries: the events published with it name it as their cause.
// The publishers take their contexts from the chunks concurrently.
func TestSyncIDsUnique(t *testing.T) {
	const publishers, each = 8, 500 // 4,000 events a topic: many chunks
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders", nil)
	audit := newTopic[Order](t, b, "audit", nil)
	ledger := newTopic[Order](t, b, "ledger", nil)
	var mu sync.Mutex
	seen := map[eventbus.ID]string{}
	// ids[topic][N] is the ID of the event of that topic with payload N.
	ids := map[string]map[int]eventbus.ID{"orders": {}, "audit": {}}
	// record records e, of topic, and checks that it was published with
	// the handler's context of the event of topic cause, if any, with the
	// same payload.
	record := func(topic, cause string, e eventbus.Event[Order]) {
		mu.Lock()
		defer mu.Unlock()
		if prior, ok := seen[e.ID]; ok {
			t.Errorf("event %v of %s has the ID of an event of %s", e.ID, topic, prior)
		}
		seen[e.ID] = topic
		if m := ids[topic]; m != nil {
			m[e.Payload.N] = e.ID
		}
		if cause == "" {
			return
		}
		if want := ids[cause][e.Payload.N]; e.CausationID != want {
			t.Errorf("%s event %v has causation ID %v, want %v, the ID of its cause", topic, e.ID, e.CausationID, want)
		}
		if want := ids["orders"][e.Payload.N]; e.CorrelationID != want {
			t.Errorf("%s event %v has correlation ID %v, want %v, the ID of the order", topic, e.ID, e.CorrelationID, want)
		}
	}
	subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		record("orders", "", e)
		return audit.Publish(ctx, e.Payload) // with the handler's context
	}, nil)
	subscribe(t, audit, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		record("audit", "orders", e)
		return ledger.Publish(ctx, e.Payload)
	}, nil)
	subscribe(t, ledger, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		record("ledger", "audit", e)
		return nil
	}, nil)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := orders.Publish(context.Background(), Order{N: p*each + i}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := len(seen), 3*publishers*each; got != want {
		t.Errorf("%d distinct IDs, want %d", got, want)
	}
}

// TestSyncLineage checks what a Sync-mode handler passes on when its
// publisher used context.Background() and set a correlation ID or metadata
// at publish: both reach the handler's context and the events it publishes.
func TestSyncLineage(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	var got []eventbus.Header
	var traces []string
	subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		got = append(got, e.Header)
		traces = append(traces, eventbus.Traceparent(ctx))
		if e.Payload.N%2 == 1 {
			return topic.Publish(ctx, Order{N: e.Payload.N + 1})
		}
		return nil
	}, nil)
	corr := eventbus.NewID()
	ctx := context.Background()
	require.NoError(t, topic.Publish(ctx, Order{N: 1}, eventbus.WithCorrelationID(corr)))
	require.NoError(t, topic.Publish(ctx, Order{N: 3}, eventbus.WithMetadata(eventbus.Metadata{eventbus.TraceparentKey: tp})))
	require.Len(t, got, 4)
	require.Equal(t, corr, got[0].CorrelationID)
	require.Equal(t, corr, got[1].CorrelationID, "the child keeps the correlation ID given at publish")
	require.Equal(t, got[0].ID, got[1].CausationID)
	require.Equal(t, got[2].ID, got[2].CorrelationID)
	require.Equal(t, got[2].ID, got[3].CorrelationID)
	require.Equal(t, got[2].ID, got[3].CausationID)
	require.Equal(t, []string{"", "", tp, tp}, traces)
}

// TestGivenIDsKept publishes events whose IDs come from Options.NewID and
// from a PublishOption, with context.Background(), and checks that each
// keeps its ID, as its correlation ID too, and that its handler's context
// carries it: the event its handler publishes names it as cause and
// correlation.
func TestGivenIDsKept(t *testing.T) {
	for name, mode := range map[string]eventbus.Mode{"sync": eventbus.Sync, "async": eventbus.Async} {
		t.Run(name, func(t *testing.T) {
			fromNewID, fromOption := eventbus.NewID(), eventbus.NewID()
			b := newBus(t, &eventbus.Options{Mode: mode, NewID: fixedIDs(fromNewID)})
			topic := newTopic[Order](t, b, "orders", nil)
			var mu sync.Mutex
			got := map[int]eventbus.Header{}
			subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				got[e.Payload.N] = e.Header
				mu.Unlock()
				if e.Payload.N < 2 {
					return topic.Publish(ctx, Order{N: e.Payload.N + 2}, func(h *eventbus.Header) { h.ID = eventbus.NewID() })
				}
				return nil
			}, nil)
			ctx := context.Background()
			require.NoError(t, topic.Publish(ctx, Order{N: 0}))
			require.NoError(t, topic.Publish(ctx, Order{N: 1}, func(h *eventbus.Header) { h.ID = fromOption }))
			require.NoError(t, b.Flush(ctx))
			require.NoError(t, b.Flush(ctx)) // for the children too
			mu.Lock()
			defer mu.Unlock()
			for n, want := range []eventbus.ID{fromNewID, fromOption} {
				require.Equal(t, want, got[n].ID, "event %d", n)
				require.Equal(t, want, got[n].CorrelationID, "event %d", n)
				require.Equal(t, want, got[n+2].CausationID, "the child of event %d", n)
				require.Equal(t, want, got[n+2].CorrelationID, "the child of event %d", n)
			}
		})
	}
}

// TestPublishOptionsSeeTheHeader checks that a PublishOption sees the
// header the bus stamped (the topic's type, name and schema version, the
// key, the time), and that what every event of the topic shares comes
// back where an option cleared it, in both modes and from PublishBatch.
func TestPublishOptionsSeeTheHeader(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		b := newBus(t, &eventbus.Options{Mode: mode})
		topic := newTopic(t, b, "orders", &eventbus.TopicOptions[Order]{EventType: "order.placed", SchemaVersion: 3})
		got := recordHeaders(t, topic, "s")
		var seen []eventbus.Header
		look := func(h *eventbus.Header) { seen = append(seen, *h) }
		blank := func(h *eventbus.Header) { h.Type, h.Topic, h.SchemaVersion = "", "", 0 }
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "k"}, look, blank))
		_, err := topic.PublishBatch(ctx, []Order{{Key: "k"}}, look, blank)
		require.NoError(t, err)
		require.NoError(t, b.Flush(ctx))
		require.Len(t, seen, 2)
		for _, h := range seen {
			require.Equal(t, "order.placed", h.Type)
			require.Equal(t, "orders", h.Topic)
			require.Equal(t, 3, h.SchemaVersion)
			require.Equal(t, "k", h.Key)
			require.False(t, h.Time.IsZero())
		}
		require.Len(t, got(), 2)
		for _, h := range got() {
			require.Equal(t, "order.placed", h.Type, "refilled")
			require.Equal(t, "orders", h.Topic, "refilled")
			require.Equal(t, 3, h.SchemaVersion, "refilled")
		}
	})
}

// stuckSubscription returns a bus of one worker and its subscription "s"
// of topic "orders", which holds three events: the first in a handler that
// returns only when its context ends, which only a stop without grace does,
// and two queued behind it.
func stuckSubscription(t *testing.T) (*eventbus.Bus, *eventbus.Subscription) {
	t.Helper()
	b := newBus(t, &eventbus.Options{Workers: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	started := make(chan struct{})
	sub := subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		if e.Payload.N == 0 {
			close(started)
		}
		<-ctx.Done()
		return ctx.Err()
	}, nil)
	for i := range 3 {
		require.NoError(t, topic.Publish(context.Background(), Order{N: i}))
	}
	<-started
	return b, sub
}

// TestUnsubscribeCutShortByClose checks that an Unsubscribe that Close cuts
// short reports why: its *UndeliveredError wraps ErrClosed, not nil.
func TestUnsubscribeCutShortByClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, sub := stuckSubscription(t)
		ctx := context.Background()
		errc := make(chan error, 1)
		go func() { errc <- sub.Unsubscribe(ctx) }()
		synctest.Wait() // Unsubscribe waits for the handler
		require.Error(t, b.Close())
		err := <-errc
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, 2, ue.Count)
		require.ErrorIs(t, err, eventbus.ErrClosed, "Unsubscribe() = %v", err)
	})
}

// TestCloseReportsErrClosed checks the cause that Close's
// *UndeliveredError carries, as its doc says: ErrClosed, alone. Close
// stops the bus as a Shutdown whose context is done, but the events it
// abandons were not lost to a context's end, and an error that matched
// context.Canceled too would send its reader looking for one.
func TestCloseReportsErrClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := stuckSubscription(t)
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		require.Equal(t, 2, ue.Count)
		if ue.Err != eventbus.ErrClosed {
			t.Errorf("Close() = %v, whose Err is %q; want ErrClosed alone", ue, ue.Err)
		}
	})
}

// TestUnsubscribeAfterClose checks that Unsubscribe after Close, with
// nothing left to wait for, returns nil, as the package documents: the
// events that Close abandoned are Close's to report, not again
// Unsubscribe's.
func TestUnsubscribeAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		sub := subscribe(t, topic, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
			<-ctx.Done()
			return ctx.Err()
		}, nil)
		ctx := context.Background()
		for i := range 3 {
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
		}
		synctest.Wait()
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, b.Close(), &ue)
		require.Equal(t, 2, ue.Count)
		require.NoError(t, sub.Unsubscribe(ctx))
		require.Equal(t, 3, b.DeadLetters().Len())
	})
}

// TestUnsubscribeDuringCloseLeavesItsLosses calls Unsubscribe once Close
// has cut the subscription short, while one of its two workers has
// abandoned its events and the other, whose handler ignores its context,
// has yet to: the events are all Close's to report, as they are once
// Close has returned (TestUnsubscribeAfterClose), and Unsubscribe returns
// nil. It counted those that the second worker abandoned after the call,
// a part of Close's events, reporting them twice between the two.
func TestUnsubscribeDuringCloseLeavesItsLosses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 2, Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		started := make(chan struct{}, 2)
		sub := subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			started <- struct{}{}
			if e.Key == "a" {
				<-gate // ignores ctx
				return nil
			}
			<-ctx.Done()
			return ctx.Err() // retries left: abandoned
		}, nil)
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{Key: "a"}))
		<-started
		// Keyless, to the worker that key "a" leaves free.
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		<-started
		for i := range 2 {
			require.NoError(t, topic.Publish(ctx, Order{Key: "a", N: 2 + i})) // queued behind the gate
		}
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		synctest.Wait() // the keyless event abandoned; Close waits for the gated handler
		unsubscribed := make(chan error, 1)
		go func() { unsubscribed <- sub.Unsubscribe(ctx) }()
		synctest.Wait()
		close(gate)
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, <-closed, &ue)
		require.Equal(t, 3, ue.Count, "Close()")
		err := <-unsubscribed
		require.NoError(t, err, "Unsubscribe() = %v, want nil: Close cut the subscription short before it", err)
		require.Equal(t, 3, b.DeadLetters().Len())
	})
}

// TestShutdownLeavesUnsubscribeLossesToIt checks that a graceful Shutdown
// does not report the events that a concurrent Unsubscribe, whose own
// context ended, abandoned: they are Unsubscribe's to report, and Shutdown,
// whose context never ended, stopped nothing short.
func TestShutdownLeavesUnsubscribeLossesToIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, sub := stuckSubscription(t)
		ctx := context.Background()
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		unsubscribed := make(chan error, 1)
		go func() { unsubscribed <- sub.Unsubscribe(short) }()
		synctest.Wait() // Unsubscribe waits for the handler
		shut := make(chan error, 1)
		go func() { shut <- b.Shutdown(ctx) }()
		err := <-unsubscribed
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, 2, ue.Count)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		err = <-shut
		require.NoError(t, err, "Shutdown() = %v, want nil: its context never ended", err)
		require.Equal(t, 3, b.DeadLetters().Len())
	})
}

// TestUnsubscribeCutShortByShutdownDeadline checks that an Unsubscribe that
// a Shutdown past its deadline cuts short reports the Shutdown context's
// cause, as does the Shutdown, which stopped the events short and so
// reports them too.
func TestUnsubscribeCutShortByShutdownDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, sub := stuckSubscription(t)
		ctx := context.Background()
		unsubscribed := make(chan error, 1)
		go func() { unsubscribed <- sub.Unsubscribe(ctx) }()
		synctest.Wait() // Unsubscribe waits for the handler
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		shut := b.Shutdown(short)
		for name, err := range map[string]error{"Unsubscribe": <-unsubscribed, "Shutdown": shut} {
			var ue *eventbus.UndeliveredError
			require.ErrorAs(t, err, &ue, name)
			require.Equal(t, 2, ue.Count, name)
			require.ErrorIs(t, err, context.DeadlineExceeded, "%s() = %v", name, err)
		}
	})
}

// TestShutdownContextCutsShortAnotherShutdown checks that a Shutdown made
// while another one waits keeps to its own context: when it ends, it stops
// the bus without grace, as the first call would have at its own deadline,
// and both return the result, whose cause is the second call's.
func TestShutdownContextCutsShortAnotherShutdown(t *testing.T) {
	b, _ := stuckSubscription(t)
	idle := newTopic[Order](t, b, "idle", nil) // Publish sees the stop, and queues nothing
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- b.Shutdown(ctx) }() // no deadline: it waits for the handler
	for !errors.Is(idle.Publish(ctx, Order{}), eventbus.ErrClosed) {
		runtime.Gosched() // until the first Shutdown has begun
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	second := make(chan error, 1)
	go func() { second <- b.Shutdown(cancelled) }()
	var err error
	select {
	case err = <-second:
	case <-time.After(time.Minute):
		t.Fatal("Shutdown with a cancelled context still waits for the handler")
	}
	var ue *eventbus.UndeliveredError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, 2, ue.Count)
	require.ErrorIs(t, err, context.Canceled, "Shutdown() = %v", err)
	require.Equal(t, err, <-first, "the first call's result")
}

// TestCloseDuringShutdownInABubble closes a bus in a synctest bubble while
// a graceful Shutdown waits for a handler that sleeps, ignoring its
// context, as a test's fake slow handler does. Close waits for that
// handler too, and must wait in a way the bubble counts as blocked, so
// that its fake time moves on and the handler wakes: waiting on a
// sync.Once's lock, it stood still for good.
func TestCloseDuringShutdownInABubble(t *testing.T) {
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, nil)
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				time.Sleep(time.Minute) // ignores its context
				return nil
			}, nil)
			require.NoError(t, topic.Publish(context.Background(), Order{}))
			synctest.Wait() // the handler sleeps
			shut := make(chan error, 1)
			go func() { shut <- b.Shutdown(context.Background()) }()
			synctest.Wait() // Shutdown waits for the handler
			start := time.Now()
			require.NoError(t, b.Close(), "Close after a Shutdown that drained everything")
			require.Equal(t, time.Minute, time.Since(start), "Close returned before the handler")
			require.NoError(t, <-shut)
		})
	}()
	select {
	case <-finished:
	case <-time.After(time.Minute): // real time: the bubble's stands still
		t.Fatal("Close during a Shutdown hung in a synctest bubble")
	}
}

// TestWorkersShareOutKeys checks that a subscription's workers share out
// events of different keys, and keyless events, as Options.Workers
// promises: with every handler held, each of the four workers runs one,
// so four run at once. 1,000 events over four workers leave one idle with
// a chance of 4×(3/4)^1000. A choice of worker that reached only some of
// them (half, or one for every keyless event) passed every other test.
func TestWorkersShareOutKeys(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const workers = 4
				b := newBus(t, &eventbus.Options{Workers: workers, QueueSize: 1000})
				topic := newTopic[Order](t, b, "orders", nil)
				var running atomic.Int32
				gate := make(chan struct{})
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
					running.Add(1)
					<-gate
					return nil
				}, nil)
				ctx := context.Background()
				for i := range 1000 {
					o := Order{N: i}
					if keyed {
						o.Key = fmt.Sprint("k", i)
					}
					require.NoError(t, topic.Publish(ctx, o))
				}
				synctest.Wait()
				if got := running.Load(); got != workers {
					t.Errorf("handlers running at once = %d, want %d, one per worker", got, workers)
				}
				close(gate)
				require.NoError(t, b.Flush(ctx))
			})
		})
	}
}

// TestKeylessEventsGoToFreeWorkers publishes keyless events one at a time
// to subscriptions whose handlers block: each goes to a worker with nothing
// to do while there is one, so none waits behind another, also once the
// workers have run dry again, and with more workers than the 64 that are
// looked for (at random, 4 events would meet 4 workers 9% of the time).
func TestKeylessEventsGoToFreeWorkers(t *testing.T) {
	for _, c := range []struct{ subs, workers, free int }{{1, 4, 4}, {2, 4, 4}, {1, 70, 64}} {
		t.Run(fmt.Sprintf("subs=%d/workers=%d", c.subs, c.workers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: c.workers})
				topic := newTopic[Order](t, b, "orders", nil)
				running := make([]atomic.Int32, c.subs)
				var gate chan struct{}
				for i := range c.subs {
					subscribe(t, topic, fmt.Sprint("s", i), func(context.Context, eventbus.Event[Order]) error {
						running[i].Add(1)
						<-gate
						return nil
					}, nil)
				}
				ctx := context.Background()
				for round := range 2 {
					gate = make(chan struct{})
					for i := range c.free {
						require.NoError(t, topic.Publish(ctx, Order{N: i}))
					}
					synctest.Wait()
					for i := range running {
						if got := running[i].Swap(0); got != int32(c.free) {
							t.Errorf("round %d: subscription s%d: handlers running at once = %d, want %d, one per event", round, i, got, c.free)
						}
					}
					close(gate)
					require.NoError(t, b.Flush(ctx))
				}
			})
		})
	}
}

// TestKeylessEventsSkipAFullFreeWorker fails a keyless event, so that its
// worker holds it for a retry a minute away and its queue, of one event, is
// full though empty: the next keyless event goes to the other worker, which
// has room, and Publish does not wait the minute for the retry.
func TestKeylessEventsSkipAFullFreeWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		var failed atomic.Bool
		handled := make(chan int, 2)
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 0 && !failed.Swap(true) {
				return errors.New("first attempt")
			}
			handled <- e.Payload.N
			return nil
		}, &eventbus.SubscriptionOptions{Workers: 2, QueueSize: 1, Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute}})
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 0}))
		synctest.Wait() // failed, and held for its retry: its worker's queue is full
		start := time.Now()
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		synctest.Wait()
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Publish waited %v for room behind a retry while another worker had room", waited)
		}
		select {
		case n := <-handled:
			require.Equal(t, 1, n, "handled first")
		default:
			t.Error("the second event is not handled before the first one's retry")
		}
	})
}

// TestKeylessEventsSkipAWorkerRetrying fails a keyless event once and
// blocks its retry: the next keyless event goes to the other worker, not
// to the one whose last take, before the retry came due, found its queue
// empty.
func TestKeylessEventsSkipAWorkerRetrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		const delay = time.Minute
		var attempts atomic.Int32
		gate := make(chan struct{})
		handled := make(chan int, 2)
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 0 {
				if attempts.Add(1) == 1 {
					return errors.New("first attempt")
				}
				<-gate
			}
			handled <- e.Payload.N
			return nil
		}, &eventbus.SubscriptionOptions{Workers: 2, Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: delay}})
		ctx := context.Background()
		require.NoError(t, topic.Publish(ctx, Order{N: 0}))
		time.Sleep(delay) // the retry comes due, and blocks
		synctest.Wait()
		require.Equal(t, int32(2), attempts.Load(), "attempts")
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		synctest.Wait()
		select {
		case n := <-handled:
			require.Equal(t, 1, n, "handled first")
		default:
			t.Error("the second event waits behind the first one's retry while another worker has nothing to do")
		}
		close(gate)
		require.NoError(t, b.Flush(ctx))
	})
}

// TestKeylessEventsSkipABatchBeingHandled publishes a keyless event to a
// batch subscription with a BatchWait, whose worker gathers for it and then
// hands it to a handler that blocks: the next keyless event goes to the
// other worker, not to the one whose last take, while it gathered, found
// its queue empty.
func TestKeylessEventsSkipABatchBeingHandled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		const wait = time.Second
		var running atomic.Int32
		gate := make(chan struct{})
		_, err := topic.SubscribeBatch("bulk", func(_ context.Context, events []eventbus.Event[Order]) error {
			running.Add(1)
			<-gate
			return nil
		}, &eventbus.SubscriptionOptions{Workers: 2, BatchSize: 10, BatchWait: wait})
		require.NoError(t, err)
		ctx := context.Background()
		for i := range 2 {
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
			time.Sleep(wait) // the batch waits for more, in vain
			synctest.Wait()
		}
		if got := running.Load(); got != 2 {
			t.Errorf("batch handlers running at once = %d, want 2, one per event", got)
		}
		close(gate)
		require.NoError(t, b.Flush(ctx))
	})
}

// TestShutdownReportsTheFirstCause checks which cause a Shutdown cut
// short by two stops reports: its context ends, with a cause of its own,
// while it waits for one subscription's handler, which cuts that
// subscription short; then a Close cuts short the other, which the
// Shutdown has not come to. Both lose an event, so the result counts both,
// and it wraps the cause of the first stop, not the Close's ErrClosed,
// as Shutdown's doc says; Close returns the same result.
func TestShutdownReportsTheFirstCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		started := make(chan struct{})
		cut := make(chan error)
		release := make(chan struct{})
		for _, name := range []string{"a", "b"} {
			subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
				if e.Payload.N == 0 {
					started <- struct{}{}
					<-ctx.Done()
					cut <- context.Cause(ctx)
					<-release
				}
				return nil
			}, nil)
		}
		ctx := context.Background()
		for i := range 2 { // the second waits behind the first in each subscription
			require.NoError(t, topic.Publish(ctx, Order{N: i}))
		}
		<-started
		<-started

		errFirst := errors.New("the first stop")
		short, cancel := context.WithCancelCause(ctx)
		shut := make(chan error, 1)
		go func() { shut <- b.Shutdown(short) }()
		synctest.Wait() // Shutdown waits for a handler
		cancel(errFirst)
		require.ErrorIs(t, <-cut, errFirst, "the cause of the subscription the Shutdown waited for")
		synctest.Wait() // Shutdown waits for that handler to return
		select {
		case err := <-cut:
			t.Fatalf("the other subscription was cut short (%v) before the Close", err)
		default:
		}
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		require.ErrorIs(t, <-cut, eventbus.ErrClosed, "the cause of the subscription the Close cut short")
		close(release)

		err := <-shut
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, 2, ue.Count, "events lost, one of each subscription")
		if !errors.Is(err, errFirst) || errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Shutdown() = %v, want the cause of the first stop, %v, not %v", err, errFirst, eventbus.ErrClosed)
		}
		require.Equal(t, err, <-closed, "Close's result")
	})
}

// TestSyncHandlerGoexitEndsThePublisher checks what the Handler doc comment
// says of runtime.Goexit in Sync mode: it ends the publishing goroutine,
// which the handler runs in, so Publish does not return, the event is not
// dead-lettered and later subscriptions do not see it; the bus carries on,
// and Metrics, which count a Sync-mode event once its handlers are done with
// it, do not count it as pending for good.
func TestSyncHandlerGoexitEndsThePublisher(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Metrics: true})
	topic := newTopic[Order](t, b, "orders", nil)
	var later []int
	subscribe(t, topic, "a", func(_ context.Context, e eventbus.Event[Order]) error {
		if e.Payload.N == 1 {
			runtime.Goexit()
		}
		return nil
	}, nil)
	subscribe(t, topic, "b", func(_ context.Context, e eventbus.Event[Order]) error {
		later = append(later, e.Payload.N)
		return nil
	}, nil)
	returned := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = topic.Publish(context.Background(), Order{N: 1})
		returned = true
	}()
	<-done
	require.False(t, returned, "Publish returned")
	require.Zero(t, b.DeadLetters().Len())
	require.NoError(t, topic.Publish(context.Background(), Order{N: 2}))
	require.Equal(t, []int{2}, later)
	for _, sm := range b.Metrics().Subscriptions {
		require.Zero(t, sm.Pending, "%+v", sm)
		require.EqualValues(t, 1, sm.Queued, "%+v", sm)
		require.EqualValues(t, 1, sm.Handled, "%+v", sm)
	}
}

// liveHeap returns the bytes of the heap that are still reachable, after a
// garbage collection, for the tests of what the bus and the stores let go:
// the least of three readings, so that what another goroutine of the
// process (a finishing test's, the runtime's) holds for a moment does not
// count, while what the code under test keeps shows in every one.
func liveHeap() uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		least = min(least, m.HeapAlloc)
	}
	return least
}

// TestTryPublishErrorsNameIt calls TryPublish on a Topic not made by
// NewTopic, with a nil context, a nil PublishOption, a nil pointer payload
// whose key comes from its method, and a payload whose key method panics:
// the errors wrap ErrInvalid and name TryPublish, the call made, not
// Publish, which the last three named.
func TestTryPublishErrorsNameIt(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	pointers := newTopic[*Order](t, b, "order-pointers", &eventbus.TopicOptions[*Order]{EventType: "order-pointer"})
	embedded := newTopic[embedsOrder](t, b, "embedded", nil)
	ctx := context.Background()
	var nilCtx context.Context // the bad input
	for name, call := range map[string]func() (bool, error){
		"zero Topic":        func() (bool, error) { return new(eventbus.Topic[Order]).TryPublish(ctx, Order{}) },
		"nil Topic":         func() (bool, error) { return (*eventbus.Topic[Order])(nil).TryPublish(ctx, Order{}) },
		"nil context":       func() (bool, error) { return topic.TryPublish(nilCtx, Order{}) },
		"nil option":        func() (bool, error) { return topic.TryPublish(ctx, Order{Key: "a"}, nil) },
		"nil pointer":       func() (bool, error) { return pointers.TryPublish(ctx, nil) },
		"key method panics": func() (bool, error) { return embedded.TryPublish(ctx, embedsOrder{}) },
	} {
		ok, err := call()
		if ok || !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "TryPublish") {
			t.Errorf("%s: TryPublish() = %v, %v; want false and an ErrInvalid naming TryPublish", name, ok, err)
		}
	}
}

// TestTryPublishInSyncMode checks what TryPublish's doc says of Sync mode,
// that it is Publish: there is no queue to be full, so it never refuses an
// event; the handlers run before it returns; a failure comes back as a
// *HandlerError, with the event sent; and once the bus is closed nothing
// is handled and it returns ErrClosed.
func TestTryPublishInSyncMode(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, QueueSize: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	var handled []int
	subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
		handled = append(handled, e.Payload.N)
		if e.Payload.N == 2 {
			return errFlaky
		}
		return nil
	}, nil)
	ctx := context.Background()
	for n := range 2 {
		ok, err := topic.TryPublish(ctx, Order{N: n})
		require.NoError(t, err, "TryPublish(%d)", n)
		require.True(t, ok, "TryPublish(%d)", n)
	}
	ok, err := topic.TryPublish(ctx, Order{N: 2})
	var he *eventbus.HandlerError
	require.ErrorAs(t, err, &he, "TryPublish(2)")
	require.Equal(t, "s", he.Subscription)
	require.ErrorIs(t, err, errFlaky)
	require.True(t, ok, "TryPublish(2): the event was sent, and failed")
	require.Equal(t, []int{0, 1, 2}, handled)

	require.NoError(t, b.Close())
	ok, err = topic.TryPublish(ctx, Order{N: 3})
	require.ErrorIs(t, err, eventbus.ErrClosed)
	require.False(t, ok, "TryPublish after Close")
	require.Equal(t, []int{0, 1, 2}, handled)
}

// TestOptionErrorsNameTheBadOne checks that an error for a bad option of
// NewAggregate, NewMemoryStore or Subscribe wraps ErrInvalid and names
// that option alone, with its value: they named two or three at once
// ("nil store or evolve", "AggregateOptions {SnapshotEvery:-1
// MaxAttempts:0 CacheSize:0}: negative option", "MaxEventSize 0 and
// MaxBatchSize -1 must not be negative", "BatchSize 100 or BatchWait -1ns
// out of range"), leaving the caller to find the bad one.
func TestOptionErrorsNameTheBadOne(t *testing.T) {
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newUserRegistry(t, nil)
	evolve := func(n int, _ userV1) int { return n + 1 }
	aggregate := func(s eventbus.Store, evolve func(int, userV1) int, o eventbus.AggregateOptions) error {
		_, err := eventbus.NewAggregate(s, reg, evolve, &o)
		return err
	}
	memory := func(o eventbus.MemoryStoreOptions) error { _, err := eventbus.NewMemoryStore(&o); return err }
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	batch := func(o eventbus.SubscriptionOptions) error {
		_, err := topic.SubscribeBatch("batch", func(context.Context, []eventbus.Event[Order]) error { return nil }, &o)
		return err
	}
	bus := func(o eventbus.Options) error { _, err := eventbus.New(&o); return err }
	subscription := func(o eventbus.SubscriptionOptions) error {
		_, err := topic.Subscribe("single", func(context.Context, eventbus.Event[Order]) error { return nil }, &o)
		return err
	}
	newTopic := func(name string, o eventbus.TopicOptions[Order]) error {
		_, err := eventbus.NewTopic(b, name, &o)
		return err
	}
	tests := []struct {
		name string
		err  error
		want string   // in the message
		not  []string // options that are fine, not in the message
	}{
		{"nil store", aggregate(nil, evolve, eventbus.AggregateOptions{}), "nil store", []string{"evolve"}},
		{"nil evolve", aggregate(store, nil, eventbus.AggregateOptions{}), "nil evolve", []string{"store"}},
		{"SnapshotEvery", aggregate(store, evolve, eventbus.AggregateOptions{SnapshotEvery: -1}), "SnapshotEvery -1", []string{"MaxAttempts", "CacheSize"}},
		{"MaxAttempts", aggregate(store, evolve, eventbus.AggregateOptions{MaxAttempts: -2}), "MaxAttempts -2", []string{"SnapshotEvery", "CacheSize"}},
		{"CacheSize", aggregate(store, evolve, eventbus.AggregateOptions{CacheSize: -3}), "CacheSize -3", []string{"SnapshotEvery", "MaxAttempts"}},
		{"MaxEventSize", memory(eventbus.MemoryStoreOptions{MaxEventSize: -1}), "MaxEventSize -1", []string{"MaxBatchSize"}},
		{"MaxBatchSize", memory(eventbus.MemoryStoreOptions{MaxBatchSize: -1}), "MaxBatchSize -1", []string{"MaxEventSize"}},
		{"BatchSize", batch(eventbus.SubscriptionOptions{BatchSize: -1}), "BatchSize -1", []string{"BatchWait"}},
		{"BatchWait", batch(eventbus.SubscriptionOptions{BatchWait: -time.Second}), "BatchWait -1s", []string{"BatchSize"}},
		// Taken, each would panic later: the first dead letter's eviction
		// (in a worker), the chain's construction (in Subscribe).
		{"DeadLetterCapacity", bus(eventbus.Options{DeadLetterCapacity: -1}), "DeadLetterCapacity -1", []string{"Workers", "QueueSize"}},
		{"nil subscription middleware", subscription(eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second), nil}}), "SubscriptionOptions.Middleware[1] is nil", []string{"Middleware[0]"}},
		// Taken, the name would be stamped on every event, and the Mode
		// run as Async without a word.
		{"topic EventType", newTopic("placed", eventbus.TopicOptions[Order]{EventType: "order placed"}), `event type name "order placed"`, []string{"Mode"}},
		{"topic Mode", newTopic("moded", eventbus.TopicOptions[Order]{Mode: 9}), "Mode 9", []string{"EventType"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fmt.Sprint(tt.err)
			if !errors.Is(tt.err, eventbus.ErrInvalid) || !strings.Contains(msg, tt.want) {
				t.Errorf("%s: got %v, want ErrInvalid naming %q", tt.name, tt.err, tt.want)
			}
			for _, other := range tt.not {
				if strings.Contains(msg, other) {
					t.Errorf("%s: got %v, which names %s, a good option", tt.name, tt.err, other)
				}
			}
		})
	}
}

// TestBadNameErrorShowsTheCharacter checks that the error for a name with a
// character outside letters, digits, '.', '_' and '-' shows that character
// as the caller typed it, or the byte that is not UTF-8: it showed the
// first byte of the character as a character of its own, so that "café"
// had 'Ã' and "订单" had 'è', which the caller never typed.
func TestBadNameErrorShowsTheCharacter(t *testing.T) {
	ctx := context.Background()
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	tests := []struct {
		name string
		err  error
		want string // in the message
	}{
		{"NewTopic", func() error { _, err := eventbus.NewTopic[userV1](b, "café", nil); return err }(), `'é' at byte 3`},
		{"Subscribe", func() error {
			_, err := topic.Subscribe("订单", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
			return err
		}(), `'订' at byte 0`},
		{"Register", eventbus.Register[userV1](reg, &eventbus.TypeOptions{Name: "user\xffcreated"}), `'\xff' at byte 4`},
		{"Append", func() error {
			_, err := store.Append(ctx, "s", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "naïve"})
			return err
		}(), `'ï' at byte 2`},
		{"ASCII", func() error { _, err := eventbus.NewTopic[userV1](b, "a b", nil); return err }(), `' ' at byte 1`},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(tt.err), tt.want) {
			t.Errorf("%s: got %v, want ErrInvalid with %s", tt.name, tt.err, tt.want)
		}
	}
}

// TestNewTopicSchemaVersionTooHigh checks that NewTopic refuses a
// SchemaVersion above 1<<31, which no Store keeps and Register refuses,
// with an error wrapping ErrInvalid: it took it, and stamped it on events
// that a StoreTopic or a bridge could then not store.
func TestNewTopicSchemaVersionTooHigh(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("an int cannot hold a version above 1<<31 here")
	}
	b := newBus(t, nil)
	v := math.MaxInt32
	v += 2 // 1<<31 + 1, which a 32-bit int cannot hold as a constant
	_, err := eventbus.NewTopic[Order](b, "orders", &eventbus.TopicOptions[Order]{SchemaVersion: v})
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	_, err = eventbus.NewTopic[Order](b, "orders", &eventbus.TopicOptions[Order]{SchemaVersion: v - 1})
	require.NoError(t, err, "the highest version a store keeps")
}

// TestSizeLimitsAreInclusive checks the sizes that the options' docs say
// are the most allowed: each is accepted, and one more is refused with
// ErrInvalid. None makes anything of that size until events come.
func TestSizeLimitsAreInclusive(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[Order](t, b, "orders", nil)
	handle := func(context.Context, eventbus.Event[Order]) error { return nil }
	batch := func(context.Context, []eventbus.Event[Order]) error { return nil }
	newClosed := func(opts *eventbus.Options) error {
		b, err := eventbus.New(opts)
		if err == nil {
			err = b.Close()
		}
		return err
	}
	for _, tt := range []struct {
		name string
		call func(n int) error
		max  int
	}{
		{"Options.Workers", func(n int) error { return newClosed(&eventbus.Options{Workers: n}) }, 1 << 12},
		{"Options.QueueSize", func(n int) error { return newClosed(&eventbus.Options{QueueSize: n}) }, 1 << 24},
		{"SubscriptionOptions.QueueSize", func(n int) error {
			s, err := topic.Subscribe(fmt.Sprint("q", n), handle, &eventbus.SubscriptionOptions{Workers: 1, QueueSize: n})
			if err == nil {
				err = s.Unsubscribe(context.Background())
			}
			return err
		}, 1 << 24},
		{"SubscriptionOptions.BatchSize", func(n int) error {
			s, err := topic.SubscribeBatch(fmt.Sprint("b", n), batch, &eventbus.SubscriptionOptions{Workers: 1, BatchSize: n})
			if err == nil {
				err = s.Unsubscribe(context.Background())
			}
			return err
		}, 1 << 24},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.call(tt.max), "%d, the most allowed", tt.max)
			require.ErrorIs(t, tt.call(tt.max+1), eventbus.ErrInvalid, "%d, one more", tt.max+1)
		})
	}
}

// TestFlushReportsAbandoned checks that Flush returns an error wrapping
// ErrClosed when a subscription it waited for was stopped without grace
// and abandoned events to the dead-letter queue unhandled: a caller that
// acknowledges its input after Flush (a Kafka consumer committing
// offsets) must not take them for handled. A graceful stop abandons
// nothing, and Flush then returns nil.
func TestFlushReportsAbandoned(t *testing.T) {
	stuck := func(ctx context.Context, e eventbus.Event[Order]) error {
		<-ctx.Done() // only a stop without grace ends it
		return ctx.Err()
	}
	// publish publishes n events of one key to a new bus's subscription
	// "s", handled by h, and returns the bus and the subscription.
	publish := func(t *testing.T, n int, h eventbus.Handler[Order]) (*eventbus.Bus, *eventbus.Subscription) {
		b, err := eventbus.New(&eventbus.Options{Workers: 1})
		require.NoError(t, err)
		topic := newTopic[Order](t, b, "orders", nil)
		sub := subscribe(t, topic, "s", h, nil)
		for i := range n {
			require.NoError(t, topic.Publish(context.Background(), Order{Key: "k", N: i}))
		}
		return b, sub
	}
	flushing := func(b *eventbus.Bus) <-chan error {
		done := make(chan error, 1)
		go func() { done <- b.Flush(context.Background()) }()
		return done
	}
	t.Run("Close while Flush waits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := publish(t, 3, stuck)
			done := flushing(b)
			synctest.Wait()
			var ue *eventbus.UndeliveredError
			require.ErrorAs(t, b.Close(), &ue)
			err := <-done
			require.ErrorIs(t, err, eventbus.ErrClosed)
			require.ErrorContains(t, err, `subscription "s" of topic "orders"`)
			require.ErrorIs(t, b.Flush(context.Background()), eventbus.ErrClosed, "a later Flush too")
		})
	})
	t.Run("Shutdown past its deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := publish(t, 3, stuck)
			done := flushing(b)
			short, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			require.Error(t, b.Shutdown(short))
			require.ErrorIs(t, <-done, eventbus.ErrClosed)
		})
	})
	t.Run("Unsubscribe past its deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, sub := publish(t, 3, stuck)
			defer func() { require.NoError(t, b.Close()) }()
			done := flushing(b)
			short, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			require.Error(t, sub.Unsubscribe(short))
			err := <-done
			require.ErrorIs(t, err, eventbus.ErrClosed)
			// The bus runs: an error blaming its stop would send the
			// reader looking for a Shutdown that never was.
			require.NotContains(t, err.Error(), "as the bus stopped")
			require.ErrorContains(t, err, "Unsubscribe")
		})
	})
	t.Run("graceful Shutdown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var handled atomic.Int64
			b, _ := publish(t, 3, func(context.Context, eventbus.Event[Order]) error {
				handled.Add(1)
				return nil
			})
			require.NoError(t, b.Shutdown(context.Background()))
			require.NoError(t, b.Flush(context.Background()))
			require.EqualValues(t, 3, handled.Load())
		})
	})
	t.Run("graceful Shutdown refusing a follow-up", func(t *testing.T) {
		// A handler held until the stop has begun publishes a follow-up,
		// which the stopping bus refuses: its event is dead-lettered, not
		// handled, as one abandoned is, and a caller that acknowledges its
		// input after Flush (the Kafka Consumer) must not take it for
		// handled, or the follow-up is lost for good.
		for name, mode := range map[string]eventbus.Mode{"async": eventbus.Async, "sync": eventbus.Sync} {
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b, err := eventbus.New(&eventbus.Options{Mode: mode, Workers: 1})
					require.NoError(t, err)
					orders := newTopic[Order](t, b, "orders", nil)
					follow := newTopic[Order](t, b, "follow", nil)
					entered, release := make(chan struct{}), make(chan struct{})
					subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
						close(entered)
						<-release
						return follow.Publish(ctx, e.Payload)
					}, nil)
					published := make(chan error, 1)
					go func() { published <- orders.Publish(context.Background(), Order{Key: "k"}) }()
					<-entered
					stopped := make(chan error, 1)
					go func() { stopped <- b.Shutdown(context.Background()) }()
					synctest.Wait() // the bus is stopping
					close(release)
					require.NoError(t, <-stopped)
					<-published
					err = b.Flush(context.Background())
					require.ErrorIs(t, err, eventbus.ErrClosed)
					require.ErrorContains(t, err, `subscription "s" of topic "orders"`)
				})
			})
		}
	})
	t.Run("Close with nothing queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := publish(t, 3, func(context.Context, eventbus.Event[Order]) error { return nil })
			require.NoError(t, b.Flush(context.Background()))
			require.NoError(t, b.Close())
			require.NoError(t, b.Flush(context.Background()), "nothing was abandoned")
		})
	})
}

// TestFlushReportsCutShort checks that Flush returns an error wrapping
// ErrClosed when a stop without grace cancelled the context of a handler
// it waited for, which then failed, and its event went to the dead-letter
// queue: not handled, but, as UndeliveredError says, not counted there
// either. A caller that acknowledges its input after Flush (a Kafka
// consumer committing offsets) must not take it for handled. A handler
// that fails on its own, before any stop, is a dead letter Flush passes.
func TestFlushReportsCutShort(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, err := eventbus.New(&eventbus.Options{Workers: 1})
				require.NoError(t, err)
				topic := newTopic[Order](t, b, "orders", nil)
				stuck := func(ctx context.Context) error {
					<-ctx.Done() // only the stop ends it
					return ctx.Err()
				}
				if batch {
					_, err = topic.SubscribeBatch("s", func(ctx context.Context, _ []eventbus.Event[Order]) error {
						return stuck(ctx)
					}, nil)
					require.NoError(t, err)
				} else {
					subscribe(t, topic, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
						return stuck(ctx)
					}, nil)
				}
				require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
				done := make(chan error, 1)
				go func() { done <- b.Flush(context.Background()) }()
				synctest.Wait() // the handler holds the one event
				require.NoError(t, b.Close(), "the event was in its handler, not queued: none undelivered")
				require.Equal(t, 1, b.DeadLetters().Len(), "the event cut short")
				require.ErrorIs(t, <-done, eventbus.ErrClosed)
			})
		})
	}
	t.Run("failed before the stop", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, err := eventbus.New(&eventbus.Options{Workers: 1})
			require.NoError(t, err)
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				return errors.New("no")
			}, nil)
			require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
			require.NoError(t, b.Flush(context.Background()))
			require.NoError(t, b.Close())
			require.NoError(t, b.Flush(context.Background()), "its own failure, not the stop's")
		})
	})
	t.Run("Sync, failed on its own after a Close", func(t *testing.T) {
		// A stop cancels no Sync-mode handler, which runs in its
		// publisher's goroutine: one that then fails on its own was not
		// cut short, though its subscription has stopped meanwhile.
		synctest.Test(t, func(t *testing.T) {
			b, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
			require.NoError(t, err)
			topic := newTopic[Order](t, b, "orders", nil)
			entered, release := make(chan struct{}), make(chan struct{})
			errNo := errors.New("no")
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				close(entered)
				<-release
				return errNo
			}, nil)
			published := make(chan error, 1)
			go func() { published <- topic.Publish(context.Background(), Order{Key: "k"}) }()
			<-entered
			require.NoError(t, b.Close())
			close(release)
			require.ErrorIs(t, <-published, errNo)
			require.Equal(t, 1, b.DeadLetters().Len())
			require.NoError(t, b.Flush(context.Background()), "its own failure, not the stop's")
		})
	})
}
