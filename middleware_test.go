package eventbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// trace returns a middleware that appends name's entry and exit to log.
func trace(log *[]string, name string) eventbus.Middleware {
	return func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, env *eventbus.Envelope) error {
			*log = append(*log, name+">")
			err := next(ctx, env)
			*log = append(*log, "<"+name)
			return err
		}
	}
}

func TestMiddlewareOrder(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		var log []string
		b := newBus(t, &eventbus.Options{Mode: mode, Middleware: []eventbus.Middleware{trace(&log, "bus1"), trace(&log, "bus2")}})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			log = append(log, "handler")
			return nil
		}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{trace(&log, "sub1"), trace(&log, "sub2")}})
		require.NoError(t, topic.Publish(context.Background(), Order{}))
		require.NoError(t, b.Flush(context.Background())) // the worker's writes happen before Flush returns
		require.Equal(t, []string{"bus1>", "bus2>", "sub1>", "sub2>", "handler", "<sub2", "<sub1", "<bus2", "<bus1"}, log)
	})
}

// TestBusKeepsItsMiddleware reuses the Options given to New, changing the
// entries of its Middleware in place for a second bus, as a program that
// builds its buses from one base does: the first bus's later subscriptions
// keep the middleware it was made with, and a nil entry, which New would
// refuse, makes no Subscribe panic.
func TestBusKeepsItsMiddleware(t *testing.T) {
	var log []string
	opts := eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{trace(&log, "first")}}
	b := newBus(t, &opts)
	opts.Middleware[0] = trace(&log, "second")
	newBus(t, &opts)
	topic := newTopic[Order](t, b, "orders", nil)
	handler := func(context.Context, eventbus.Event[Order]) error { return nil }
	subscribe(t, topic, "s", handler, nil)
	require.NoError(t, topic.Publish(context.Background(), Order{}))
	require.Equal(t, []string{"first>", "<first"}, log, "the first bus's middleware")

	opts.Middleware[0] = nil
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Subscribe panicked: %v", r)
			}
		}()
		_, err := topic.Subscribe("t", handler, nil)
		require.NoError(t, err)
	}()
}

// TestMiddlewareReturningNil checks that Subscribe refuses a chain in which
// a middleware returns a nil handler, wherever it is: as the outermost, the
// handler ran with no middleware at all, and further in, every attempt
// panicked on calling nil.
func TestMiddlewareReturningNil(t *testing.T) {
	none := func(eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { return nil }
	var log []string
	for _, c := range []struct {
		name     string
		bus, sub []eventbus.Middleware
		want     string
	}{
		{"outermost", []eventbus.Middleware{none}, []eventbus.Middleware{trace(&log, "sub")}, "Options.Middleware[0]"},
		{"innermost", []eventbus.Middleware{trace(&log, "bus")}, []eventbus.Middleware{none}, "SubscriptionOptions.Middleware[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			eachMode(t, func(t *testing.T, mode eventbus.Mode) {
				b := newBus(t, &eventbus.Options{Mode: mode, Middleware: c.bus})
				topic := newTopic[Order](t, b, "orders", nil)
				_, err := topic.Subscribe("s", func(context.Context, eventbus.Event[Order]) error { return nil },
					&eventbus.SubscriptionOptions{Middleware: c.sub})
				require.ErrorIs(t, err, eventbus.ErrInvalid, "Subscribe with a middleware returning nil")
				require.ErrorContains(t, err, c.want)
				require.Empty(t, b.Metrics().Subscriptions, "a refused subscription")
			})
		})
	}
}

// TestMiddlewareConstructorRunsUnlocked subscribes with middleware whose
// constructor subscribes too: to the same topic, and, from two topics at
// once, each to the other. Subscribe builds the chain before it takes the
// topic's lock, so neither waits for itself or for the other.
func TestMiddlewareConstructorRunsUnlocked(t *testing.T) {
	noop := func(context.Context, eventbus.Event[Order]) error { return nil }
	// subscribing returns a middleware whose constructor runs f first.
	subscribing := func(f func()) []eventbus.Middleware {
		return []eventbus.Middleware{func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			f()
			return next
		}}
	}
	// within runs f in a goroutine and fails the test if it does not
	// return within a minute: a deadlock would never return.
	within := func(t *testing.T, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("Subscribe deadlocked: a middleware constructor ran under the topic's lock")
		}
	}
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		t.Run("same topic", func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode})
			orders := newTopic[Order](t, b, "orders", nil)
			var innerErr, err error
			within(t, func() {
				_, err = orders.Subscribe("outer", noop, &eventbus.SubscriptionOptions{Middleware: subscribing(func() {
					_, innerErr = orders.Subscribe("inner", noop, nil)
				})})
			})
			require.NoError(t, innerErr, "Subscribe in a middleware constructor")
			require.NoError(t, err, "Subscribe with that middleware")
			require.Len(t, b.Metrics().Subscriptions, 2)
		})
		t.Run("crossed topics", func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode})
			topics := []*eventbus.Topic[Order]{newTopic[Order](t, b, "a", nil), newTopic[Order](t, b, "b", nil)}
			// Each constructor waits for the other one to run before it
			// subscribes to the other topic.
			arrived := []chan struct{}{make(chan struct{}), make(chan struct{})}
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i, topic := range topics {
				wg.Go(func() {
					_, errs[i] = topic.Subscribe("outer", noop, &eventbus.SubscriptionOptions{Middleware: subscribing(func() {
						close(arrived[i])
						<-arrived[1-i]
						_, errs[2+i] = topics[1-i].Subscribe("inner", noop, nil)
					})})
				})
			}
			within(t, wg.Wait)
			for i, err := range errs {
				require.NoError(t, err, "Subscribe %d", i)
			}
			require.Len(t, b.Metrics().Subscriptions, 4)
		})
	})
}

func TestMiddlewareSeesEnvelope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type sight struct {
			env     eventbus.Envelope
			payload any // taken during the call: an envelope is valid only then
		}
		var seen []sight
		spy := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				seen = append(seen, sight{*env, env.Payload()})
				return next(ctx, env)
			}
		}
		// A middleware may pass on a copy of its envelope.
		relay := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				cp := *env
				return next(ctx, &cp)
			}
		}
		b := newBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{spy, relay}, Retry: eventbus.RetryPolicy{MaxAttempts: 2}, Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		first := true
		var handled []Order
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if first {
				first = false
				return errFlaky
			}
			handled = append(handled, e.Payload)
			return nil
		}, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "k", N: 7}))
		require.NoError(t, topic.Publish(context.Background(), Order{Key: "k", N: 8}))
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, []Order{{Key: "k", N: 7}, {Key: "k", N: 8}}, handled)
		require.Len(t, seen, 3)
		for i, want := range []struct {
			attempt int
			payload Order
		}{{1, Order{Key: "k", N: 7}}, {2, Order{Key: "k", N: 7}}, {1, Order{Key: "k", N: 8}}} {
			env := seen[i].env
			require.Equal(t, want.attempt, env.Attempt, "sight %d", i)
			require.Equal(t, "s", env.Subscription)
			require.Equal(t, "orders", env.Topic)
			require.Equal(t, "Order", env.Type)
			require.Equal(t, "k", env.Key)
			require.Equal(t, want.payload, seen[i].payload, "sight %d", i)
		}
	})
}

// TestMiddlewareLetsGoOfPayloads checks that an idle Async worker whose
// subscription has middleware holds no reference to the last payload it
// handled, as one without middleware holds none: its scratch envelope kept
// the last payload (and its header's metadata) alive until the next event,
// or for good once the bus had shut down.
func TestMiddlewareLetsGoOfPayloads(t *testing.T) {
	type blob struct{ _ [1 << 16]byte }
	pass := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { return next }
	for _, retry := range []bool{false, true} {
		t.Run(fmt.Sprint("retry=", retry), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Workers: 1, Middleware: []eventbus.Middleware{pass}, Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
				topic := newTopic[*blob](t, b, "blobs", nil)
				failed := !retry
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[*blob]) error {
					if !failed { // with retry, the last attempt is the lane's
						failed = true
						return errFlaky
					}
					return nil
				}, nil)
				p := new(blob)
				w := weak.Make(p)
				require.NoError(t, topic.Publish(context.Background(), p))
				p = nil
				require.NoError(t, b.Flush(context.Background()))
				synctest.Wait() // the worker is parked
				runtime.GC()
				require.True(t, w.Value() == nil, "the idle worker still holds the payload")
				require.NoError(t, b.Close())
				runtime.GC()
				require.True(t, w.Value() == nil, "the closed bus still holds the payload")
			})
		})
	}
}

// TestIdleWorkerLetsGoOfMetadata publishes 32 events with a megabyte of
// metadata each to a one-worker subscription, and measures the live heap
// once the worker has handled them all and parked: it holds none of them,
// as it holds none of their payloads. The handler contexts of events with
// metadata came from chunks of 64, each holding its event's metadata, and
// the worker kept its chunk, so it kept the metadata of up to 63 events it
// had handled: 32 MB here, until 64 more events with metadata came.
func TestIdleWorkerLetsGoOfMetadata(t *testing.T) {
	live := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := newBus(t, &eventbus.Options{Workers: 1})
		topic := newTopic[Order](t, b, "orders", nil)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
		before := live()
		for i := range 32 {
			big := strings.Repeat(fmt.Sprint(i%10), 1<<20)
			require.NoError(t, topic.Publish(ctx, Order{N: i}, eventbus.WithMetadata(eventbus.Metadata{"blob": big})))
		}
		require.NoError(t, b.Flush(ctx))
		synctest.Wait() // the worker is parked
		if grown := int64(live()) - int64(before); grown > 2<<20 {
			t.Errorf("the heap grew by %d bytes after 32 events with 1 MB of metadata each, all handled, the worker parked; want at most %d", grown, 2<<20)
		}
	})
}

// TestSyncMiddlewareLetsGoOfPayloads checks that once a Sync Publish to a
// subscription with middleware has returned, the bus holds no reference to
// its payload: the envelope it reuses, kept in a pool between publishes,
// kept the last payload (and its header's metadata) alive until the pool
// was next emptied, a GC later.
func TestSyncMiddlewareLetsGoOfPayloads(t *testing.T) {
	type blob struct{ _ [1 << 16]byte }
	pass := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { return next }
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{pass}})
	topic := newTopic[*blob](t, b, "blobs", nil)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[*blob]) error { return nil }, nil)
	p := new(blob)
	w := weak.Make(p)
	require.NoError(t, topic.Publish(context.Background(), p))
	p = nil
	// One GC only: a sync.Pool keeps what it holds through one.
	runtime.GC()
	require.True(t, w.Value() == nil, "the bus still holds the payload after Publish returned")
}

// TestMiddlewareOwnEnvelope checks that a middleware passing on an
// envelope of its own making, which has no payload, fails the event with
// ErrInvalid instead of calling the handler with a zero payload.
func TestMiddlewareOwnEnvelope(t *testing.T) {
	forge := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, env *eventbus.Envelope) error {
			return next(ctx, &eventbus.Envelope{Header: env.Header, Attempt: env.Attempt})
		}
	}
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 5}})
	topic := newTopic[Order](t, b, "orders", nil)
	ran := false
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { ran = true; return nil },
		&eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{forge}})
	err := topic.Publish(context.Background(), Order{Key: "k", N: 3})
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	require.ErrorContains(t, err, "did not make")
	require.False(t, ran)
	dl, _ := firstDeadLetter(b)
	require.Equal(t, 1, dl.Attempt, "a missing payload is not retried")
	require.Equal(t, Order{Key: "k", N: 3}, dl.Payload(), "the dead letter keeps the payload")
}

// TestMiddlewareNilEnvelope checks that a middleware passing on a nil
// envelope fails the event at once with ErrInvalid, as one passing on an
// envelope of its own making does: the handler side dereferenced it, so
// the event failed with a *PanicError of a nil pointer, retried for
// nothing.
func TestMiddlewareNilEnvelope(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			drop := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
				return func(ctx context.Context, _ *eventbus.Envelope) error { return next(ctx, nil) }
			}
			b := newBus(t, &eventbus.Options{Mode: mode, Retry: eventbus.RetryPolicy{MaxAttempts: 5}})
			topic := newTopic[Order](t, b, "orders", nil)
			ran := false
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { ran = true; return nil },
				&eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{drop}})
			err := topic.Publish(context.Background(), Order{Key: "k", N: 3})
			if mode == eventbus.Sync {
				require.ErrorIs(t, err, eventbus.ErrInvalid)
			} else {
				require.NoError(t, err)
				require.NoError(t, b.Flush(context.Background()))
			}
			require.False(t, ran)
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			var pe *eventbus.PanicError
			require.False(t, errors.As(dl.Err, &pe), "Err = %v, want no panic", dl.Err)
			require.ErrorIs(t, dl.Err, eventbus.ErrInvalid)
			require.ErrorContains(t, dl.Err, "nil envelope")
			require.Equal(t, 1, dl.Attempt, "a missing envelope is not retried")
			require.Equal(t, Order{Key: "k", N: 3}, dl.Payload(), "the dead letter keeps the payload")
		})
	})
}

// TestBuiltInMiddlewareNilEnvelope checks that Idempotency and Logging,
// given a nil envelope by a middleware outside them, fail the event at once
// with the ErrInvalid that the handler side gives it, as Timeout does: they
// dereferenced it, so the event failed with a *PanicError of a nil pointer,
// retried for nothing.
func TestBuiltInMiddlewareNilEnvelope(t *testing.T) {
	drop := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, _ *eventbus.Envelope) error { return next(ctx, nil) }
	}
	logger := slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	byN := func(env *eventbus.Envelope) string { return fmt.Sprint(env.Payload().(Order).N) }
	for _, tt := range []struct {
		name string
		mw   func(t *testing.T) eventbus.Middleware
	}{
		{"Idempotency", func(*testing.T) eventbus.Middleware { return eventbus.Idempotency(nil) }},
		{"Idempotency with Key", func(*testing.T) eventbus.Middleware {
			return eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: byN})
		}},
		{"Idempotency with Store", func(t *testing.T) eventbus.Middleware {
			return eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(openMemoryStore(t))})
		}},
		{"Logging", func(*testing.T) eventbus.Middleware { return eventbus.Logging(logger) }},
		{"Timeout", func(*testing.T) eventbus.Middleware { return eventbus.Timeout(time.Second) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}})
				topic := newTopic[Order](t, b, "orders", nil)
				ran := false
				subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { ran = true; return nil },
					&eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{drop, tt.mw(t)}})
				err := topic.Publish(context.Background(), Order{Key: "k", N: 3})
				var pe *eventbus.PanicError
				if errors.As(err, &pe) || !errors.Is(err, eventbus.ErrInvalid) {
					t.Errorf("Publish = %v, want ErrInvalid and no panic", err)
				}
				require.False(t, ran)
				dl, ok := firstDeadLetter(b)
				require.True(t, ok)
				require.ErrorContains(t, dl.Err, "nil envelope")
				require.Equal(t, 1, dl.Attempt, "a missing envelope is not retried")
			})
		})
	}
}

func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{
			Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second)},
			Retry:      eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second},
		})
		topic := newTopic[Order](t, b, "orders", nil)
		start := time.Now()
		var ends []time.Duration
		subscribe(t, topic, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
			<-ctx.Done()
			ends = append(ends, time.Since(start))
			return ctx.Err()
		}, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{}))
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, []time.Duration{time.Second, 3 * time.Second}, ends, "each attempt has its own deadline")
		require.ErrorIs(t, firstErr(b), context.DeadlineExceeded)

		for _, d := range []time.Duration{0, -time.Second} {
			var called bool
			h := eventbus.Timeout(d)(func(ctx context.Context, _ *eventbus.Envelope) error {
				_, has := ctx.Deadline()
				called = !has
				return nil
			})
			require.NoError(t, h(context.Background(), &eventbus.Envelope{}))
			require.True(t, called, "Timeout(%v) sets no deadline", d)
		}
	})
}

// TestTimeoutContextEndsWithTheAttempt pins what Timeout's doc says: the
// context a handler gets under Timeout is cancelled once the attempt
// returns, and context.WithoutCancel of it still links what is published.
func TestTimeoutContextEndsWithTheAttempt(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode, Middleware: []eventbus.Middleware{eventbus.Timeout(time.Hour)}})
			topic := newTopic[Order](t, b, "orders", nil)
			var kept context.Context
			var first, causation eventbus.ID
			subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				if e.Payload.N == 0 {
					kept, first = ctx, e.ID
				} else {
					causation = e.CausationID
				}
				return nil
			}, nil)
			require.NoError(t, topic.Publish(context.Background(), Order{N: 0}))
			require.NoError(t, b.Flush(context.Background()))
			require.ErrorIs(t, kept.Err(), context.Canceled, "the attempt's context ended with it")
			require.NoError(t, topic.Publish(context.WithoutCancel(kept), Order{N: 1}))
			require.NoError(t, b.Flush(context.Background()))
			require.Equal(t, first, causation, "still linked")
		})
	})
}

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{eventbus.Logging(logger), eventbus.Logging(nil)}})
	topic := newTopic[Order](t, b, "orders", nil)
	subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
		if e.Payload.N == 1 {
			return errFlaky
		}
		return nil
	}, nil)
	require.NoError(t, topic.Publish(context.Background(), Order{Key: "k0", N: 0}))
	require.ErrorIs(t, topic.Publish(context.Background(), Order{Key: "k1", N: 1}), errFlaky)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	var ok, failed map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &ok))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &failed))
	require.Equal(t, "DEBUG", ok["level"])
	require.Equal(t, "k0", ok["key"])
	require.Equal(t, "WARN", failed["level"])
	require.Equal(t, "eventbus: attempt failed", failed["msg"])
	require.Equal(t, "flaky", failed["error"])
	require.Equal(t, "s", failed["subscription"])
	require.EqualValues(t, 1, failed["attempt"])
	require.Len(t, failed["id"], 26)
}

// TestLoggingLinksFlow checks that Logging's lines name the links of an
// event to its flow: a follow-up's line has the correlation ID of the
// event that started the flow, the ID of the one that caused it, and the
// trace context they carry. Logging logged none of them, so that the lines
// of one flow, which the events link, could not be found together.
func TestLoggingLinksFlow(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{eventbus.Logging(logger)}})
	orders := newTopic[Order](t, b, "orders", nil)
	mails := newTopic[Order](t, b, "mails", nil)
	var root eventbus.Header // the traced event's
	subscribe(t, orders, "mailer", func(ctx context.Context, e eventbus.Event[Order]) error {
		if e.Key == "o" {
			root = e.Header
		}
		if err := mails.Publish(ctx, Order{Key: "m"}); !errors.Is(err, errFlaky) {
			t.Errorf("Publish of the follow-up = %v, want %v", err, errFlaky)
		}
		return nil
	}, nil)
	subscribe(t, mails, "smtp", func(context.Context, eventbus.Event[Order]) error { return errFlaky }, nil)
	traced, err := eventbus.WithTraceparent(context.Background(), tp)
	require.NoError(t, err)
	require.NoError(t, orders.Publish(traced, Order{Key: "o"}))
	require.NoError(t, orders.Publish(context.Background(), Order{Key: "untraced"}))
	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		delete(m, "time")
		lines = append(lines, m)
	}
	require.Len(t, lines, 4, "two follow-ups failed, two events handled")
	want := []map[string]any{{
		"level": "WARN", "msg": "eventbus: attempt failed", "error": "flaky",
		"id": lines[0]["id"], "type": "Order", "topic": "mails", "subscription": "smtp", "key": "m", "attempt": 1.0,
		"correlation_id": root.ID.String(), "causation_id": root.ID.String(), "traceparent": tp,
	}, {
		"level": "DEBUG", "msg": "eventbus: handled",
		"id": root.ID.String(), "type": "Order", "topic": "orders", "subscription": "mailer", "key": "o", "attempt": 1.0,
		"correlation_id": root.ID.String(), "traceparent": tp,
	}}
	if diff := cmp.Diff(want, lines[:2]); diff != "" {
		t.Errorf("log lines of a traced flow (-want +got):\n%s", diff)
	}
	if _, ok := lines[3]["traceparent"]; ok {
		t.Errorf("log line of an untraced event has a traceparent: %v", lines[3])
	}
	require.Equal(t, lines[3]["id"], lines[3]["correlation_id"], "an event published outside any handler is its own correlation ID")
}

// TestLoggingDuplicates checks that Logging, put before Idempotency, logs
// an attempt that Idempotency skipped as a skipped duplicate, not as
// handled: it logged "eventbus: handled" for every one, so logs counted
// each redelivery as a second handling, which Metrics does not.
func TestLoggingDuplicates(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			b := newBus(t, &eventbus.Options{
				Mode: mode, NewID: fixedIDs(eventbus.NewID()),
				Middleware: []eventbus.Middleware{eventbus.Logging(logger), eventbus.Idempotency(nil)},
			})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
			for range 2 { // the same event ID twice
				require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
			}
			require.NoError(t, b.Flush(context.Background()))
			var msgs []string
			for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
				var m map[string]any
				require.NoError(t, json.Unmarshal([]byte(line), &m))
				require.Equal(t, "DEBUG", m["level"])
				msgs = append(msgs, m["msg"].(string))
			}
			require.Equal(t, []string{"eventbus: handled", "eventbus: skipped duplicate"}, msgs)
		})
	})
}

// TestIdempotencyDuplicateMarkIsPerEvent checks that an event an
// Idempotency skipped marks only itself as a duplicate, not the events the
// worker handles after it with the same scratch envelope: a fill that kept
// the mark (dropping its reset of duplicate) passed every test, and then
// each event after a duplicate in a worker's take counted in Metrics as a
// Duplicate, not as Handled, and Logging logged it as "skipped duplicate".
// The first handler holds the worker until a duplicate and a new event
// wait behind it, so that the worker takes them together.
func TestIdempotencyDuplicateMarkIsPerEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dup := eventbus.NewID()
		b := newBus(t, &eventbus.Options{
			Workers:    1,
			NewID:      fixedIDs(eventbus.NewID(), dup, dup, eventbus.NewID()),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)},
		})
		topic := newTopic[Order](t, b, "orders", nil)
		release := make(chan struct{})
		var handled []int
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			if e.Payload.N == 0 {
				<-release
			}
			handled = append(handled, e.Payload.N)
			return nil
		}, nil)
		ctx := context.Background()
		for _, n := range []int{0, 1, 1, 2} { // the second 1 has the first's ID
			require.NoError(t, topic.Publish(ctx, Order{N: n}))
		}
		close(release)
		require.NoError(t, b.Flush(ctx))
		require.Equal(t, []int{0, 1, 2}, handled)
		s := b.Metrics().Subscriptions[0]
		if s.Handled != 3 || s.Duplicates != 1 {
			t.Errorf("Metrics: Handled %d, Duplicates %d, want 3 and 1", s.Handled, s.Duplicates)
		}
	})
}

// TestLoggingPanics checks that Logging logs an attempt that fails by a
// panic, as it logs any other failed attempt, and leaves the panic to the
// worker, whose *PanicError keeps the value and the handler's stack. The
// panic went through Logging unseen, so a panicking handler, the failure
// one most wants to hear of, was never logged.
func TestLoggingPanics(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			b := newBus(t, &eventbus.Options{Mode: mode, Middleware: []eventbus.Middleware{eventbus.Logging(logger)}})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { panic("boom") }, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k", N: 1})
			require.NoError(t, b.Flush(context.Background()))
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			var pe *eventbus.PanicError
			require.ErrorAs(t, dl.Err, &pe)
			require.Equal(t, "boom", pe.Value)
			require.Contains(t, string(pe.Stack), "TestLoggingPanics", "the stack shows the handler")
			var line map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &line), "one line: %s", buf.String())
			require.Equal(t, "WARN", line["level"])
			require.Equal(t, "eventbus: attempt failed", line["msg"])
			require.Equal(t, "eventbus: panic: boom", line["error"])
			require.Equal(t, "k", line["key"])
			require.EqualValues(t, 1, line["attempt"])
		})
	})
	t.Run("goexit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&buf, nil))
			b := newBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Logging(logger)}})
			topic := newTopic[Order](t, b, "orders", nil)
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runtime.Goexit(); return nil }, nil)
			require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
			require.NoError(t, b.Flush(context.Background()))
			var line map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &line), "one line: %s", buf.String())
			require.Equal(t, "WARN", line["level"])
			require.Contains(t, line["error"], "runtime.Goexit")
		})
	})
}

// TestLoggingHandlerPanicFailsAttempt pins what Logging says of a panic
// in its logger's Handler: it is the attempt's, which fails, though the
// handler succeeded, and is retried; the worker, or the publisher, goes on.
func TestLoggingHandlerPanicFailsAttempt(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode, Retry: eventbus.RetryPolicy{MaxAttempts: 2},
				Middleware: []eventbus.Middleware{eventbus.Logging(slog.New(brokenLog{}))}})
			topic := newTopic[Order](t, b, "orders", nil)
			calls := 0
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { calls++; return nil }, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k"})
			require.NoError(t, b.Flush(context.Background()))
			require.Equal(t, 2, calls, "attempts")
			dl, ok := firstDeadLetter(b)
			require.True(t, ok)
			var pe *eventbus.PanicError
			require.ErrorAs(t, dl.Err, &pe)
			require.Equal(t, "log handler broke", pe.Value)
		})
	})
}

// fixedIDs returns an ID source that repeats ids in turn, to stage
// redeliveries of the same event.
func fixedIDs(ids ...eventbus.ID) func() eventbus.ID {
	var mu sync.Mutex
	i := 0
	return func() eventbus.ID {
		mu.Lock()
		defer mu.Unlock()
		id := ids[i%len(ids)]
		i++
		return id
	}
}

func TestIdempotencyRetriesFailuresSkipsDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id := eventbus.NewID()
		b := newBus(t, &eventbus.Options{
			Workers:    1,
			NewID:      fixedIDs(id),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)},
			Retry:      eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
		})
		topic := newTopic[Order](t, b, "orders", nil)
		var runs, effects atomic.Int64
		for _, name := range []string{"a", "b"} {
			subscribe(t, topic, name, func(context.Context, eventbus.Event[Order]) error {
				if runs.Add(1) == 1 {
					return errFlaky // the first attempt fails: its retry must run
				}
				effects.Add(1)
				return nil
			}, nil)
		}
		ctx := context.Background()
		for range 3 { // the same event ID three times
			require.NoError(t, topic.Publish(ctx, Order{Key: "k"}))
		}
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 2, effects.Load(), "once per subscription")
		require.EqualValues(t, 3, runs.Load(), "one failure, one success per subscription, duplicates skipped")
		m := b.Metrics()
		for _, s := range m.Subscriptions {
			require.EqualValues(t, 2, s.Duplicates, s.Subscription)
			require.EqualValues(t, 1, s.Handled, s.Subscription)
		}
	})
}

// TestIdempotencyBehindACopy checks that a duplicate skipped by
// Idempotency behind a middleware that passes on a copy of its envelope,
// which middleware may do, is counted as a duplicate: the mark went on the
// copy, so the bus counted the skipped event as handled.
func TestIdempotencyBehindACopy(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			relay := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
				return func(ctx context.Context, env *eventbus.Envelope) error {
					cp := *env
					return next(ctx, &cp)
				}
			}
			b := newBus(t, &eventbus.Options{
				Mode: mode, Metrics: true, NewID: fixedIDs(eventbus.NewID()),
				Middleware: []eventbus.Middleware{relay, eventbus.Idempotency(nil)},
			})
			topic := newTopic[Order](t, b, "orders", nil)
			var runs atomic.Int64
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs.Add(1); return nil }, nil)
			for range 3 { // the same event ID three times
				require.NoError(t, topic.Publish(context.Background(), Order{Key: "k"}))
			}
			require.NoError(t, b.Flush(context.Background()))
			require.EqualValues(t, 1, runs.Load())
			s := b.Metrics().Subscriptions[0]
			require.EqualValues(t, 1, s.Handled, "handled")
			require.EqualValues(t, 2, s.Duplicates, "duplicates")
		})
	})
}

func TestIdempotencyConcurrentDuplicatesRunOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Workers: 8})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var runs atomic.Int64
		byN := eventbus.Idempotency(&eventbus.IdempotencyOptions{
			Key: func(env *eventbus.Envelope) string { return fmt.Sprint(env.Payload().(Order).N) },
		})
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			runs.Add(1)
			<-gate
			return nil
		}, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{byN}})
		ctx := context.Background()
		// Same business key 42, different ordering keys: different workers.
		for k := range 8 {
			require.NoError(t, topic.Publish(ctx, Order{Key: fmt.Sprint("k", k), N: 42}))
		}
		synctest.Wait()
		require.EqualValues(t, 1, runs.Load(), "the others wait for the first")
		close(gate)
		require.NoError(t, b.Flush(ctx))
		require.EqualValues(t, 1, runs.Load())
		require.EqualValues(t, 7, b.Metrics().Subscriptions[0].Duplicates)
	})
}

// TestIdempotencyWaitSaysWhy checks that a delivery whose context ends
// while it waits for another delivery of its key, in flight, fails with an
// error that says so and still matches the context's: it failed with the
// context's error alone, which read as if its handler, which never ran,
// had timed out.
func TestIdempotencyWaitSaysWhy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		byKey := eventbus.Idempotency(&eventbus.IdempotencyOptions{
			Key: func(*eventbus.Envelope) string { return "order-1" },
		})
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{byKey}})
		topic := newTopic[Order](t, b, "orders", nil)
		gate := make(chan struct{})
		var runs atomic.Int64
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			runs.Add(1)
			<-gate
			return nil
		}, nil)
		first := make(chan error)
		go func() { first <- topic.Publish(context.Background(), Order{N: 1}) }()
		synctest.Wait() // the first delivery runs its handler
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := topic.Publish(ctx, Order{N: 2})
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(fmt.Sprint(err), "in flight") {
			t.Errorf("Publish waiting for its key = %v, want DeadlineExceeded, saying it waited for a delivery in flight", err)
		}
		close(gate)
		require.NoError(t, <-first)
		require.EqualValues(t, 1, runs.Load(), "handler runs")
	})
}

// memoryProcessed is a ProcessedStore as a user would write one over a
// database table, with a failure switch.
type memoryProcessed struct {
	mu   sync.Mutex
	done map[eventbus.IdempotencyKey]bool
	fail error
	// MarkProcessed fails the next fails calls with failErr.
	fails   int
	failErr error
}

// failNext makes the next n calls of MarkProcessed fail with err.
func (m *memoryProcessed) failNext(n int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fails, m.failErr = n, err
}

func (m *memoryProcessed) Processed(_ context.Context, k eventbus.IdempotencyKey) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done[k], nil
}

func (m *memoryProcessed) MarkProcessed(_ context.Context, k eventbus.IdempotencyKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fails > 0 {
		m.fails--
		return m.failErr
	}
	if m.fail != nil {
		return m.fail
	}
	m.done[k] = true
	return nil
}

// TestIdempotencyRetriesOnlyTheRecord checks that when a handler succeeds
// and the Store fails to record it, the retry and a redrive of the dead
// letter record it again without running the handler again: its effect
// happened once, and the record alone was missing.
func TestIdempotencyRetriesOnlyTheRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Metrics: true,
			Retry:      eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store})}})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := map[int]int{}
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error { runs[e.Payload.N]++; return nil }, nil)
		ctx := context.Background()

		store.failNext(1, errors.New("disk full")) // the retry records it
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.Equal(t, 1, runs[1], "Publish(1): handler runs")
		require.Len(t, store.done, 1, "Publish(1): recorded")

		store.failNext(2, errors.New("disk full")) // both attempts fail
		require.ErrorContains(t, topic.Publish(ctx, Order{N: 2}), "disk full")
		require.Equal(t, 1, runs[2], "Publish(2): handler runs")
		sent, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
		require.NoError(t, err)
		require.Equal(t, 1, sent)
		require.Equal(t, 1, runs[2], "Redrive(2): handler runs")
		require.Len(t, store.done, 2, "Redrive(2): recorded")
		s := b.Metrics().Subscriptions[0]
		require.EqualValues(t, 2, s.Handled, "handled: 1's retry and 2's redrive")
		require.Zero(t, s.Duplicates, "duplicates")
	})
}

// TestIdempotencyUnrecordedBounded checks the bound that Capacity puts,
// with a Store, on the keys whose handler succeeded but whose record
// failed: the first Capacity of them are remembered, so that a redrive of
// their dead letters only records them, and past Capacity the handler runs
// again (at-least-once), as Idempotency's doc says. No test failed more
// records than Capacity, so a middleware that remembered every one, for as
// long as the subscription lasts, passed every test.
func TestIdempotencyUnrecordedBounded(t *testing.T) {
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			store := &memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}, fail: errors.New("disk full")}
			b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1,
				Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store, Capacity: 2})}})
			topic := newTopic[Order](t, b, "orders", nil)
			var mu sync.Mutex
			runs := map[int]int{}
			subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				runs[e.Payload.N]++
				return nil
			}, nil)
			ctx := context.Background()
			for n := range 3 {
				err := topic.Publish(ctx, Order{N: n})
				if mode == eventbus.Sync {
					require.ErrorContains(t, err, "disk full", "Publish(%d)", n)
				} else {
					require.NoError(t, err, "Publish(%d)", n)
				}
			}
			require.NoError(t, b.Flush(ctx))
			require.Equal(t, 3, b.DeadLetters().Len(), "dead letters: records failed")

			store.mu.Lock()
			store.fail = nil
			store.mu.Unlock()
			sent, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
			require.NoError(t, err)
			require.Equal(t, 3, sent)
			require.NoError(t, b.Flush(ctx))
			require.Zero(t, b.DeadLetters().Len(), "dead letters after the redrive")
			require.Len(t, store.done, 3, "recorded")
			require.Equal(t, map[int]int{0: 1, 1: 1, 2: 2}, runs,
				"handler runs: the first Capacity remembered, the third run again")
		})
	})
}

// TestIdempotencyStoreKeys checks the keys a ProcessedStore is given, as
// IdempotencyKey's doc says: the subscription and the event's ID, or,
// with IdempotencyOptions.Key, the subscription and that key alone, with
// no ID, so that a store keyed by the whole IdempotencyKey, as a table
// with one column per field would be, skips a later event of the same
// business key. No test gave a Store and a Key function together, so a
// middleware that gave the event's ID with the key too (a throwaway
// change) passed every test while such a store skipped nothing.
func TestIdempotencyStoreKeys(t *testing.T) {
	type placed struct{ OrderNo string }
	byOrderNo := func(env *eventbus.Envelope) string { return env.Payload().(placed).OrderNo }
	for _, tt := range []struct {
		name string
		key  func(*eventbus.Envelope) string
		runs int
	}{{"ID", nil, 3}, {"Key", byOrderNo, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			store := &memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}
			ids := []eventbus.ID{eventbus.NewID(), eventbus.NewID(), eventbus.NewID()}
			b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(ids...),
				Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: tt.key, Store: store})}})
			topic := newTopic[placed](t, b, "orders", nil)
			runs := 0
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[placed]) error { runs++; return nil }, nil)
			for _, no := range []string{"o-1", "o-1", "o-2"} {
				require.NoError(t, topic.Publish(context.Background(), placed{no}))
			}
			require.Equal(t, tt.runs, runs, "handler runs")
			want := map[eventbus.IdempotencyKey]bool{}
			if tt.key == nil {
				for _, id := range ids {
					want[eventbus.IdempotencyKey{Subscription: "s", ID: id}] = true
				}
			} else {
				want[eventbus.IdempotencyKey{Subscription: "s", Key: "o-1"}] = true
				want[eventbus.IdempotencyKey{Subscription: "s", Key: "o-2"}] = true
			}
			if diff := cmp.Diff(want, store.done); diff != "" {
				t.Errorf("keys recorded (-want +got):\n%s", diff)
			}
		})
	}
}

// markPanics is a ProcessedStore whose MarkProcessed fails as script says,
// call by call: "panic" panics, "fail" returns an error, "lost reply"
// records the key and returns an error (as a store whose reply is lost on
// the way back), anything else (or a call past the script) records the key.
type markPanics struct {
	memoryProcessed
	script []string
}

func (m *markPanics) MarkProcessed(ctx context.Context, k eventbus.IdempotencyKey) error {
	m.mu.Lock()
	step := ""
	if len(m.script) > 0 {
		step, m.script = m.script[0], m.script[1:]
	}
	m.mu.Unlock()
	switch step {
	case "panic":
		panic("store down")
	case "fail":
		return errors.New("disk full")
	case "lost reply":
		_ = m.memoryProcessed.MarkProcessed(ctx, k)
		return errors.New("connection reset")
	}
	return m.memoryProcessed.MarkProcessed(ctx, k)
}

// TestIdempotencyRecordedAfterAllLeavesRoom checks that a key whose failed
// MarkProcessed recorded it after all (its reply was lost), which the retry
// finds recorded and skips, no longer takes one of the Capacity places that
// remember a handled but unrecorded key: the record kept it, so with
// Capacity 1 the next key whose MarkProcessed fails found no place, and its
// retry ran the handler again, though the doc promises that for up to
// Capacity such keys the retry only calls MarkProcessed again.
func TestIdempotencyRecordedAfterAllLeavesRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &markPanics{script: []string{"lost reply", "fail"},
			memoryProcessed: memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}}
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync,
			Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(
				&eventbus.IdempotencyOptions{Store: store, Capacity: 1})}})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := map[int]int{}
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error { runs[e.Payload.N]++; return nil }, nil)
		ctx := context.Background()
		for n := range 2 {
			if err := topic.Publish(ctx, Order{N: n}); err != nil {
				t.Fatalf("Publish(%d) = %v, want nil", n, err)
			}
		}
		require.Equal(t, map[int]int{0: 1, 1: 1}, runs, "handler runs by event")
		require.Len(t, store.done, 2, "recorded")
	})
}

// TestIdempotencyRecordPanicRetriesOnlyTheRecord checks that a panic in the
// Store's MarkProcessed, a failed attempt like its error, leaves the
// handler's success remembered as the error does: the retry records the
// event without running the handler again, whose effect happened once.
func TestIdempotencyRecordPanicRetriesOnlyTheRecord(t *testing.T) {
	modes := map[string]eventbus.Mode{"Async": eventbus.Async, "Sync": eventbus.Sync}
	for _, script := range [][]string{{"panic"}, {"fail", "panic"}} {
		for name, mode := range modes {
			t.Run(name+"/"+strings.Join(script, ","), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					store := &markPanics{script: script,
						memoryProcessed: memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}}
					b := newBus(t, &eventbus.Options{Mode: mode, Workers: 1,
						Retry:      eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
						Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store})}})
					topic := newTopic[Order](t, b, "orders", nil)
					var runs atomic.Int64
					subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs.Add(1); return nil }, nil)
					ctx := context.Background()
					require.NoError(t, topic.Publish(ctx, Order{}))
					require.NoError(t, b.Flush(ctx))
					if got := runs.Load(); got != 1 {
						t.Errorf("handler ran %d times, want 1", got)
					}
					require.Len(t, store.done, 1, "recorded")
					require.Zero(t, b.DeadLetters().Len(), "dead letters")
				})
			})
		}
	}
}

// lookupFails is a ProcessedStore whose Processed always fails with err.
type lookupFails struct {
	memoryProcessed
	err error
}

func (l *lookupFails) Processed(context.Context, eventbus.IdempotencyKey) (bool, error) {
	return false, l.err
}

// TestIdempotencyLookupErrorSaysWhy checks that an attempt whose Store
// fails to say whether the event was handled fails with an error that
// names that lookup and wraps the Store's: it failed with the Store's
// error alone, which read as the handler's, although the handler never
// ran, while a failed MarkProcessed says that it was handled but not
// recorded.
func TestIdempotencyLookupErrorSaysWhy(t *testing.T) {
	errDown := errors.New("db down")
	store := &lookupFails{err: errDown}
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync,
		Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store})}})
	topic := newTopic[Order](t, b, "orders", nil)
	runs := 0
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, nil)
	err := topic.Publish(context.Background(), Order{})
	if !errors.Is(err, errDown) || !strings.Contains(fmt.Sprint(err), "ProcessedStore.Processed") {
		t.Errorf("Publish with a failing lookup = %v, want %v, naming ProcessedStore.Processed", err, errDown)
	}
	require.Zero(t, runs, "handler runs")
}

func TestIdempotencyWithStore(t *testing.T) {
	store := &memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}
	id := eventbus.NewID()
	newSyncBus := func() (*eventbus.Bus, *eventbus.Topic[Order], *int) {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(id),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store})}})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := new(int)
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { *runs++; return nil }, nil)
		return b, topic, runs
	}
	ctx := context.Background()
	_, topic, runs := newSyncBus()
	store.fail = errors.New("disk full")
	require.ErrorContains(t, topic.Publish(ctx, Order{}), "disk full", "recording failed: the attempt fails")
	store.fail = nil
	require.NoError(t, topic.Publish(ctx, Order{}))
	require.Equal(t, 1, *runs, "handled before: only recorded now")
	require.NoError(t, topic.Publish(ctx, Order{}))
	require.Equal(t, 1, *runs)

	// A new bus, as after a restart, shares the durable record.
	_, topic, runs = newSyncBus()
	require.NoError(t, topic.Publish(ctx, Order{}))
	require.Zero(t, *runs)
}

// TestIdempotencyForgetsOldest checks the in-memory record's bounds: it
// always remembers the last Capacity keys, and forgets keys older than the
// last 2×Capacity; and it forgets keys older than the TTL.
func TestIdempotencyForgetsOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := make([]eventbus.ID, 5)
		for i := range ids {
			ids[i] = eventbus.NewID()
		}
		a, b, c, d, e := ids[0], ids[1], ids[2], ids[3], ids[4]
		bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(a, b, c, d, e, d, e, c, a, b),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Capacity: 2, TTL: time.Hour})}})
		topic := newTopic[Order](t, bus, "orders", nil)
		var ran []eventbus.ID
		subscribe(t, topic, "s", func(_ context.Context, ev eventbus.Event[Order]) error { ran = append(ran, ev.ID); return nil }, nil)
		ctx := context.Background()
		for range 10 {
			require.NoError(t, topic.Publish(ctx, Order{}))
		}
		// d and e, the last 2, are skipped; so is c, among the last 4 (the
		// record holds 2 to 4 keys); a and b, older, run again.
		require.Equal(t, []eventbus.ID{a, b, c, d, e, a, b}, ran)

		b2 := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(ids[0], ids[1], ids[0]),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{TTL: time.Hour})}})
		topic2 := newTopic[Order](t, b2, "orders", nil)
		runs := 0
		subscribe(t, topic2, "s", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, nil)
		require.NoError(t, topic2.Publish(ctx, Order{}))
		time.Sleep(2 * time.Hour)
		require.NoError(t, topic2.Publish(ctx, Order{})) // published 2h later: id 0 expires
		require.NoError(t, topic2.Publish(ctx, Order{}))
		require.Equal(t, 3, runs)
	})
}

// TestIdempotencyExpiresAll lets every remembered key expire before the
// record has reached its capacity, then fills it past a new generation: the
// keys remembered since expire in their turn, in either generation.
func TestIdempotencyExpiresAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := make([]eventbus.ID, 7)
		for i := range ids {
			ids[i] = eventbus.NewID()
		}
		a, b, c, d, e, f, z := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]
		bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(a, b, c, d, e, f, z, z, c, d),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Capacity: 4, TTL: time.Hour})}})
		topic := newTopic[Order](t, bus, "orders", nil)
		runs := 0
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, nil)
		ctx := context.Background()
		publish := func(n int) {
			for range n {
				require.NoError(t, topic.Publish(ctx, Order{}))
			}
		}
		publish(2) // a, b
		time.Sleep(24 * time.Hour)
		publish(4) // c, d, e, f: a and b have expired
		time.Sleep(24 * time.Hour)
		publish(4) // z twice (the second a duplicate), then c and d again: they have expired too
		require.Equal(t, 9, runs)
	})
}

// TestIdempotencyDefaults checks the zero IdempotencyOptions as its doc
// gives them: a record of 10,000 keys, which still remembers the first of
// 10,000 events once they are all handled but not a key 20,000 events
// back, and a TTL of 24 hours, within which an event published again with
// its ID is a duplicate and past which it runs again. Every test set both,
// so defaults of 1,000 or 20,000 keys, or of an hour, passed every test.
func TestIdempotencyDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fresh := func(n int) []eventbus.ID {
			ids := make([]eventbus.ID, n)
			for i := range ids {
				ids[i] = eventbus.NewID()
			}
			return ids
		}
		ids := fresh(10_000)
		first := ids[0]
		// Then the first again: an hour after it, 24 hours after it, and
		// past that (by a millisecond: the bus's clock reads anew each
		// 0.5ms); and after 20,000 more events, which the record of
		// 10,000 keys no longer holds it behind.
		ids = append(ids, first, first, first)
		ids = append(append(ids, fresh(20_000)...), first)
		bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync, NewID: fixedIDs(ids...),
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)}})
		topic := newTopic[Order](t, bus, "orders", nil)
		runs := map[eventbus.ID]int{}
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			runs[e.ID]++
			return nil
		}, nil)
		ctx := context.Background()
		for range 10_000 {
			require.NoError(t, topic.Publish(ctx, Order{}))
		}
		time.Sleep(time.Hour)
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 1, runs[first], "the first of 10,000 keys, again")
		time.Sleep(23 * time.Hour)
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 1, runs[first], "the first, 24 hours after it")
		time.Sleep(time.Millisecond)
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 2, runs[first], "the first, past 24 hours")
		for range 20_000 {
			require.NoError(t, topic.Publish(ctx, Order{}))
		}
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 3, runs[first], "the first, 20,000 keys later")
	})
}

func TestTraceparentPropagates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		b := newBus(t, nil)
		topic := newTopic[Order](t, b, "orders", nil)
		var mu sync.Mutex
		got := map[int]string{}
		subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			got[e.Payload.N] = eventbus.Traceparent(ctx) + "|" + e.Metadata[eventbus.TraceparentKey]
			mu.Unlock()
			if e.Payload.N == 1 {
				return topic.Publish(ctx, Order{N: 2}, eventbus.WithMetadata(eventbus.Metadata{"x": "y"}))
			}
			return nil
		}, nil)
		ctx, err := eventbus.WithTraceparent(context.Background(), tp)
		require.NoError(t, err)
		require.Equal(t, tp, eventbus.Traceparent(ctx))
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, topic.Publish(context.Background(), Order{N: 3}))
		synctest.Wait()
		require.NoError(t, b.Flush(context.Background()))
		require.Equal(t, map[int]string{1: tp + "|" + tp, 2: tp + "|" + tp, 3: "|"}, got)

		for _, bad := range []string{"", "00-xyz", strings.Repeat("0", 55), "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
			"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
			// Letters past f are no hex digits, in every field.
			"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
			// One character short, its dashes in place.
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
			// A later version's own fields have no space, as a header
			// value's token has none.
			"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-a b"} {
			_, err := eventbus.WithTraceparent(context.Background(), bad)
			require.ErrorIs(t, err, eventbus.ErrInvalid, bad)
		}
	})
}

// TestTraceparentMalformedInMetadata publishes events whose metadata holds
// a traceparent that is not one, as WithMetadata or a Kafka record may
// give: the handler's context carries no trace context (Traceparent is ""),
// so that the trace restarts, as W3C Trace Context asks, and the events the
// handler publishes, on a Topic or a StoreTopic, do not inherit it. The
// event's own metadata keeps what was published.
func TestTraceparentMalformedInMetadata(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	s := openMemoryStore(t)
	reg, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Order](reg, nil))
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	stored := newStoreTopic[Order](t, b, s, reg, "stored")
	var got []string
	subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		got = append(got, eventbus.Traceparent(ctx)+"|"+e.Metadata[eventbus.TraceparentKey])
		if e.Payload.N == 1 {
			if _, err := stored.Publish(ctx, Order{N: 2}); err != nil {
				return err
			}
			return topic.Publish(ctx, Order{N: 2})
		}
		return nil
	}, nil)
	for _, bad := range []string{
		"garbage",
		"00-xyz",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace-id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent-id
		tp + "-extra",            // version 00 is 55 characters
		tp[:54],                  // cut short
		tp[:20] + "\n" + tp[21:], // not hex
	} {
		got = nil
		require.NoError(t, topic.Publish(context.Background(), Order{N: 1}, eventbus.WithMetadata(eventbus.Metadata{eventbus.TraceparentKey: bad})))
		if want := []string{"|" + bad, "|"}; !slices.Equal(got, want) {
			t.Errorf("Traceparent(ctx)|metadata of an event published with traceparent %q, then of its child = %q, want %q", bad, got, want)
		}
	}
	for e, err := range s.ReadAll(context.Background(), nil) {
		require.NoError(t, err)
		if v, ok := e.Metadata[eventbus.TraceparentKey]; ok {
			t.Errorf("StoreTopic event published by the handler has traceparent %q, want none", v)
		}
	}

	got = nil
	require.NoError(t, topic.Publish(context.Background(), Order{N: 1}, eventbus.WithMetadata(eventbus.Metadata{eventbus.TraceparentKey: tp})))
	require.Equal(t, []string{tp + "|" + tp, tp + "|" + tp}, got, "a well-formed one is carried on")
}

// TestTraceparentLaterVersion gives WithTraceparent and an event's metadata
// traceparents of versions after 00, which W3C Trace Context asks parsers
// to accept: version 00's fields, then the end or a '-' and fields of the
// later version, longer than 55 characters. They are carried on as they
// are; version 00 with more, or more without the '-', is refused.
func TestTraceparentLaterVersion(t *testing.T) {
	const fields = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	topic := newTopic[Order](t, b, "orders", nil)
	var got []string
	subscribe(t, topic, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		got = append(got, eventbus.Traceparent(ctx))
		if e.Payload.N == 1 {
			return topic.Publish(ctx, Order{N: 2})
		}
		return nil
	}, nil)
	for _, tp := range []string{
		"01-" + fields,
		"01-" + fields + "-",
		"01-" + fields + "-0123456789abcdef",
		"cc-" + fields + "-what-comes-next_v2",
		"01-" + fields + "-~!", // the last printable character and the first
	} {
		ctx, err := eventbus.WithTraceparent(context.Background(), tp)
		if err != nil {
			t.Errorf("WithTraceparent(%q) = %v, want no error", tp, err)
			continue
		}
		got = nil
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, topic.Publish(context.Background(), Order{N: 1}, eventbus.WithMetadata(eventbus.Metadata{eventbus.TraceparentKey: tp})))
		if want := []string{tp, tp, tp, tp}; !slices.Equal(got, want) {
			t.Errorf("Traceparent in the handlers of events published with %q = %q, want %q", tp, got, want)
		}
	}
	for _, bad := range []string{
		"00-" + fields + "-0123",   // version 00 has 55 characters
		"01-" + fields + "0123",    // no '-' after the flags
		"01-" + fields + "-01\n23", // a control character
		"01-" + fields + "-\x7f",   // DEL, past '~', first of the fields
		"ff-" + fields + "-0123",   // version ff is invalid
		"01-" + fields[:31] + "-" + fields[32:] + "-0123",
	} {
		if _, err := eventbus.WithTraceparent(context.Background(), bad); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("WithTraceparent(%q) = %v, want %v", bad, err, eventbus.ErrInvalid)
		}
	}
}

// TestTraceparentChildMetadata checks what a handler's event gets when
// it is published with metadata of its own: a traceparent of its own is
// kept, not replaced by the handled event's, and the handled event's is
// added to a copy of the map, as inherit says, leaving the caller's map,
// which it may reuse for the next event, as it was. No test published
// from a handler with a traceparent of its own, or with a map it kept.
func TestTraceparentChildMetadata(t *testing.T) {
	const parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const ownTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Mode: mode})
			orders := newTopic[Order](t, b, "orders", nil)
			follow := newTopic[Order](t, b, "follow", nil)
			var mu sync.Mutex
			got := map[int]eventbus.Metadata{}
			subscribe(t, follow, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				got[e.Payload.N] = e.Metadata
				return nil
			}, nil)
			kept := eventbus.Metadata{"tenant": "t1"}
			subscribe(t, orders, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
				if err := follow.Publish(ctx, Order{N: 1}, eventbus.WithMetadata(kept)); err != nil {
					return err
				}
				own := eventbus.Metadata{eventbus.TraceparentKey: ownTP}
				return follow.Publish(ctx, Order{N: 2}, eventbus.WithMetadata(own))
			}, nil)
			ctx, err := eventbus.WithTraceparent(context.Background(), parentTP)
			require.NoError(t, err)
			require.NoError(t, orders.Publish(ctx, Order{}))
			require.NoError(t, b.Flush(context.Background()))
			require.NoError(t, b.Flush(context.Background())) // the follow-ups
			want := map[int]eventbus.Metadata{
				1: {"tenant": "t1", eventbus.TraceparentKey: parentTP},
				2: {eventbus.TraceparentKey: ownTP},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("metadata of the handler's events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(eventbus.Metadata{"tenant": "t1"}, kept); diff != "" {
				t.Errorf("the map given to WithMetadata (-want +got):\n%s", diff)
			}
		})
	})
}

// TestWithTraceparentKeepsHandlerContext checks that a handler's context
// given a trace context of its own with WithTraceparent is still a
// handler's, as for any context made from it: a publish with it never
// waits for room (a handler filling its own topic's queue would wait for
// itself), and Flush refuses it. No test published or flushed with one.
func TestWithTraceparentKeepsHandlerContext(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, &eventbus.Options{Workers: 1, QueueSize: 1})
			orders := newTopic[Order](t, b, "orders", &eventbus.TopicOptions[Order]{Mode: mode})
			follow := newTopic[Order](t, b, "follow", nil) // Async
			var got []int
			subscribe(t, follow, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				if tr := eventbus.Traceparent(ctx); tr != tp {
					t.Errorf("follow-up %d: Traceparent = %q, want %q", e.Payload.N, tr, tp)
				}
				got = append(got, e.Payload.N)
				return nil
			}, nil)
			var flushed error
			subscribe(t, orders, "s", func(ctx context.Context, _ eventbus.Event[Order]) error {
				traced, err := eventbus.WithTraceparent(ctx, tp)
				if err != nil {
					return err
				}
				// Bounded, so that a wait fails the test instead of
				// hanging it.
				traced, cancel := context.WithTimeout(traced, time.Minute)
				defer cancel()
				flushed = b.Flush(traced)
				for n := range 3 {
					if err := follow.Publish(traced, Order{N: n}); err != nil {
						return err
					}
				}
				return nil
			}, nil)
			require.NoError(t, orders.Publish(context.Background(), Order{}))
			require.NoError(t, b.Flush(context.Background()))
			require.NoError(t, b.Flush(context.Background())) // the follow-ups
			require.ErrorIs(t, flushed, eventbus.ErrInvalid, "Flush with the handler's traced context")
			require.Zero(t, b.DeadLetters().Len(), "dead letters: %v", firstErr(b))
			require.Equal(t, []int{0, 1, 2}, got)
		})
	})
}

// TestWithTraceparentKeepsLineage checks that a handler's context given a
// trace context of its own with WithTraceparent keeps the lineage of the
// event being handled: an event published with it takes that event's ID
// as its CausationID and its CorrelationID, as with the handler's context
// itself, and carries the new trace context. Dropped, the correlation ID
// did not fail a test: the event became its own correlation ID.
func TestWithTraceparentKeepsLineage(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	eachMode(t, func(t *testing.T, mode eventbus.Mode) {
		synctest.Test(t, func(t *testing.T) {
			b := newBus(t, nil)
			orders := newTopic[Order](t, b, "orders", &eventbus.TopicOptions[Order]{Mode: mode})
			follow := newTopic[Order](t, b, "follow", &eventbus.TopicOptions[Order]{Mode: mode})
			var parent, child eventbus.Event[Order]
			subscribe(t, follow, "s", func(_ context.Context, e eventbus.Event[Order]) error {
				child = e
				return nil
			}, nil)
			subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
				parent = e
				traced, err := eventbus.WithTraceparent(ctx, tp)
				if err != nil {
					return err
				}
				return follow.Publish(traced, Order{N: 1})
			}, nil)
			corr := eventbus.NewID()
			require.NoError(t, orders.Publish(context.Background(), Order{}, eventbus.WithCorrelationID(corr)))
			require.NoError(t, b.Flush(context.Background()))
			require.NoError(t, b.Flush(context.Background())) // the follow-up
			require.Zero(t, b.DeadLetters().Len(), "dead letters: %v", firstErr(b))
			require.Equal(t, 1, child.Payload.N, "the follow-up was handled")
			if child.CausationID != parent.ID {
				t.Errorf("follow-up's CausationID = %v, want the handled event's ID %v", child.CausationID, parent.ID)
			}
			if child.CorrelationID != corr {
				t.Errorf("follow-up's CorrelationID = %v, want the handled event's %v", child.CorrelationID, corr)
			}
			if got := child.Metadata[eventbus.TraceparentKey]; got != tp {
				t.Errorf("follow-up's traceparent = %q, want %q", got, tp)
			}
		})
	})
}

// TestTraceparentLongInput checks that the error of WithTraceparent quotes
// only the start of a long malformed value, as a traceparent from outside
// (an HTTP header, a Kafka record) may be: it quoted all of it, four bytes
// for each byte that is not text, a 4 MB error for a hostile megabyte.
func TestTraceparentLongInput(t *testing.T) {
	for _, in := range []string{
		strings.Repeat("\xff", 1<<20),
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + strings.Repeat("\x00", 1<<20),
	} {
		_, err := eventbus.WithTraceparent(context.Background(), in)
		if !errors.Is(err, eventbus.ErrInvalid) || len(err.Error()) > 400 {
			t.Errorf("WithTraceparent of %d bytes = an error of %d bytes (%.100v), want ErrInvalid in at most 400", len(in), len(err.Error()), err)
		}
	}
}

// TestIdempotencyInFlightAcrossTurnover checks that a key stays in flight,
// and only while it is, however often the record turns over meanwhile: a
// duplicate waits for a slow first delivery, and a key done after a
// turnover is not taken for one in flight at the next. With Capacity 2,
// the record turns over at the first claim after two keys were done.
func TestIdempotencyInFlightAcrossTurnover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		byN := eventbus.Idempotency(&eventbus.IdempotencyOptions{
			Capacity: 2,
			Key:      func(env *eventbus.Envelope) string { return fmt.Sprint(env.Payload().(Order).N) },
		})
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Metrics: true, Middleware: []eventbus.Middleware{byN}})
		topic := newTopic[Order](t, b, "orders", nil)
		gates := map[int]chan struct{}{42: make(chan struct{}), 43: make(chan struct{})}
		var runs [44]atomic.Int64
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			runs[e.Payload.N].Add(1)
			if gate := gates[e.Payload.N]; gate != nil {
				<-gate
			}
			return nil
		}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		publish := func(ns ...int) {
			for _, n := range ns {
				require.NoError(t, topic.Publish(ctx, Order{N: n}))
			}
		}
		background := func(n int) { wg.Go(func() { publish(n) }); synctest.Wait() }

		publish(0, 1)
		background(42) // turnover; 42 in flight in the newer generation
		publish(2, 3)
		background(43) // turnover; 42's mark is now in the older generation
		close(gates[42])
		synctest.Wait() // 42 done in the newer generation; its old mark cleared
		publish(42)     // a duplicate
		publish(4, 5)   // turnover: the older generation, which had 42's mark, is forgotten
		publish(42)     // still a duplicate, not taken for a key in flight
		publish(6, 7)   // turnover: 43's mark moves to the newer generation
		background(43)  // in flight: waits
		require.EqualValues(t, 1, runs[43].Load(), "the duplicate of 43 waits for the first delivery")
		close(gates[43])
		wg.Wait()
		require.EqualValues(t, 1, runs[42].Load())
		require.EqualValues(t, 1, runs[43].Load())
		require.EqualValues(t, 3, b.Metrics().Subscriptions[0].Duplicates)
	})
}

func TestIdempotencyEmptyKeyIsNotDeduplicated(t *testing.T) {
	byKey := eventbus.Idempotency(&eventbus.IdempotencyOptions{
		Key: func(env *eventbus.Envelope) string { return env.Payload().(Order).Key },
	})
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Middleware: []eventbus.Middleware{byKey}})
	topic := newTopic[Order](t, b, "orders", nil)
	runs := 0
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, nil)
	for _, o := range []Order{{Key: "a"}, {Key: "a"}, {}, {}} {
		require.NoError(t, topic.Publish(context.Background(), o))
	}
	require.Equal(t, 3, runs, "a once, and both keyless events")
}

// TestIdempotencyAfterPanic checks that a handler's panic, a failed attempt
// like any other, takes the event's key out of flight: the retry runs
// instead of waiting for itself.
func TestIdempotencyAfterPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 2},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)}})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := 0
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
			runs++
			if runs == 1 {
				panic("first attempt")
			}
			return nil
		}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 2, runs)
	})
}

// panickyProcessed is a ProcessedStore whose first Processed panics.
type panickyProcessed struct {
	memoryProcessed
	panicked atomic.Bool
}

func (p *panickyProcessed) Processed(ctx context.Context, k eventbus.IdempotencyKey) (bool, error) {
	if !p.panicked.Swap(true) {
		panic("store down")
	}
	return p.memoryProcessed.Processed(ctx, k)
}

// scriptedProcessed is a ProcessedStore whose Processed answers as
// scripted, then (false, nil), and whose MarkProcessed returns the errors
// in marks, then nil.
type scriptedProcessed struct {
	mu        sync.Mutex
	marks     []error
	processed []struct {
		done bool
		err  error
	}
}

func (p *scriptedProcessed) Processed(context.Context, eventbus.IdempotencyKey) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.processed) == 0 {
		return false, nil
	}
	r := p.processed[0]
	p.processed = p.processed[1:]
	return r.done, r.err
}

func (p *scriptedProcessed) MarkProcessed(context.Context, eventbus.IdempotencyKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.marks) == 0 {
		return nil
	}
	err := p.marks[0]
	p.marks = p.marks[1:]
	return err
}

// TestIdempotencyProcessedErrorIsNoAnswer has the handler succeed and its
// record fail to save, then the Store's Processed fail on the retry with
// done set too: a failed call is no answer, so the retry only saves the
// record, as Idempotency's doc says, without running the handler again.
// Trusting done dropped the note of the handler's success, and the next
// attempt ran the handler twice.
func TestIdempotencyProcessedErrorIsNoAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		errDown := errors.New("store down")
		p := &scriptedProcessed{marks: []error{errDown}}
		p.processed = append(p.processed, struct {
			done bool
			err  error
		}{false, nil}, struct {
			done bool
			err  error
		}{true, errDown})
		b := newBus(t, &eventbus.Options{Metrics: true})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := 0
		subscribe(t, topic, "ledger", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, &eventbus.SubscriptionOptions{
			Retry:      &eventbus.RetryPolicy{MaxAttempts: 4, InitialDelay: time.Millisecond},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: p})},
		})
		require.NoError(t, topic.Publish(ctx, Order{N: 1}))
		require.NoError(t, b.Flush(ctx))
		m := b.Metrics().Subscriptions[0]
		require.Equal(t, 1, runs, "handler runs")
		require.Zero(t, m.Duplicates, "a failed Processed counted as a duplicate")
		require.Equal(t, uint64(1), m.Handled)
	})
}

// TestIdempotencyAfterStorePanic checks that a panic in the Store's
// Processed, a failed attempt like a handler's panic, takes the event's key
// out of flight: the retry runs instead of waiting for itself.
func TestIdempotencyAfterStorePanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &panickyProcessed{memoryProcessed: memoryProcessed{done: map[eventbus.IdempotencyKey]bool{}}}
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Retry: eventbus.RetryPolicy{MaxAttempts: 2},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: store})}})
		topic := newTopic[Order](t, b, "orders", nil)
		runs := 0
		subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { runs++; return nil }, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, topic.Publish(ctx, Order{}))
		require.Equal(t, 1, runs)
	})
}

// TestMisconfiguredMiddleware checks that Subscribe refuses built-in
// middleware given invalid options, which the Middleware has no error
// return to report: Idempotency with a negative Capacity or TTL, Logging
// with a logger that has no Handler. The error wraps ErrInvalid and names
// the option and the Middleware, on the bus or on the subscription; no
// subscription is made, so no event runs into the middleware (it ran the
// handler, then Logging panicked reporting the outcome, so an event was
// handled at every retry and dead-lettered all the same). A constructor's
// own panic still goes on to Subscribe's caller, and the Middleware called
// by hand panics with an error wrapping ErrInvalid.
func TestMisconfiguredMiddleware(t *testing.T) {
	noop := func(context.Context, eventbus.Event[Order]) error { return nil }
	for _, c := range []struct {
		mw   eventbus.Middleware
		want string
	}{
		{eventbus.Idempotency(&eventbus.IdempotencyOptions{Capacity: -1}), "IdempotencyOptions.Capacity -1 is negative"},
		{eventbus.Idempotency(&eventbus.IdempotencyOptions{TTL: -time.Hour}), "IdempotencyOptions.TTL -1h0m0s is negative"},
		{eventbus.Logging(new(slog.Logger)), "Logging's logger has no Handler"},
	} {
		t.Run(c.want, func(t *testing.T) {
			eachMode(t, func(t *testing.T, mode eventbus.Mode) {
				b := newBus(t, &eventbus.Options{Mode: mode, Middleware: []eventbus.Middleware{eventbus.Logging(nil), c.mw}})
				topic := newTopic[Order](t, b, "orders", nil)
				_, err := topic.Subscribe("s", noop, nil)
				require.ErrorIs(t, err, eventbus.ErrInvalid)
				require.ErrorContains(t, err, "Options.Middleware[1]: "+c.want)

				b = newBus(t, &eventbus.Options{Mode: mode})
				topic = newTopic[Order](t, b, "orders", nil)
				_, err = topic.Subscribe("s", noop, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{c.mw}})
				require.ErrorIs(t, err, eventbus.ErrInvalid)
				require.ErrorContains(t, err, "SubscriptionOptions.Middleware[0]: "+c.want)
				require.Empty(t, b.Metrics().Subscriptions, "a refused subscription")
				_, err = topic.Subscribe("s", noop, nil)
				require.NoError(t, err, "the refused subscription's name")
				require.NoError(t, topic.Publish(context.Background(), Order{}))
			})

			defer func() {
				err, _ := recover().(error)
				require.ErrorIs(t, err, eventbus.ErrInvalid, "the Middleware called by hand")
				require.ErrorContains(t, err, c.want)
			}()
			c.mw(func(context.Context, *eventbus.Envelope) error { return nil })
			t.Fatal("the Middleware called by hand returned")
		})
	}

	t.Run("a constructor's own panic", func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)}})
		topic := newTopic[Order](t, b, "orders", nil)
		panicking := func(eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { panic("constructor") }
		require.PanicsWithValue(t, "constructor", func() {
			_, _ = topic.Subscribe("s", noop, &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{panicking}})
		})
	})
}
