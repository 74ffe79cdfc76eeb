//go:build !race

// The race detector allocates on its own, so allocation budgets are checked
// without it: .ci/run runs these tests in a separate step.

package eventbus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

// TestPublishAllocations holds the hot paths to their budget: no
// allocation per event, amortised, from Publish to the handler and back, in
// both modes, with the payload's key method or a key function, and with a
// middleware chain and metrics.
func TestPublishAllocations(t *testing.T) {
	layer := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, env *eventbus.Envelope) error { return next(ctx, env) }
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // Info: successes are not logged
	for _, c := range []struct {
		name string
		opts eventbus.Options
	}{
		{"plain", eventbus.Options{Workers: 2}},
		{"chain", eventbus.Options{
			Workers: 2, Metrics: true, Retry: eventbus.RetryPolicy{MaxAttempts: 3},
			Middleware: []eventbus.Middleware{layer, eventbus.Logging(quiet), eventbus.Timeout(0)},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			eachMode(t, func(t *testing.T, mode eventbus.Mode) {
				opts := c.opts
				opts.Mode = mode
				checkPublishAllocations(t, &opts)
			})
		})
	}
}

func checkPublishAllocations(t *testing.T, opts *eventbus.Options) {
	b := newBus(t, opts)
	byFunc := newTopic(t, b, "by-func", &eventbus.TopicOptions[Order]{Key: func(o Order) string { return o.Key }})
	byMethod := newTopic[*Order](t, b, "by-method", nil)
	subscribe(t, byFunc, "s", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
	subscribe(t, byMethod, "s", func(context.Context, eventbus.Event[*Order]) error { return nil }, nil)
	ctx := context.Background()
	order := &Order{Key: "k"}
	allocs := testing.AllocsPerRun(10_000, func() {
		if err := byFunc.Publish(ctx, Order{Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if err := byMethod.Publish(ctx, order); err != nil {
			t.Fatal(err)
		}
	})
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per two publishes, want 0", allocs)
	}

	// A batch, over 64 keys: the handler contexts, which come in chunks
	// of 64, are the only allocations, about one per 64 events published.
	batch := make([]Order, 256)
	for i := range batch {
		batch[i] = Order{Key: benchKeys[i%64]}
	}
	allocs = testing.AllocsPerRun(1_000, func() {
		if _, err := byFunc.PublishBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	})
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if allocs > float64(len(batch))/64 {
		t.Errorf("%v allocations per batch of %d events, want at most 1 per 64 events", allocs, len(batch))
	}
}

// TestDurableDeliveryAllocations holds a durable subscription's delivery
// to its budget: its events come stamped from the store and go to a
// worker's queue with no copy of their header on the heap, so catching up
// with 10,000 events makes a few hundred allocations (the bus, the
// subscription, its queues and chunks of handler contexts), not one or
// more per event.
func TestDurableDeliveryAllocations(t *testing.T) {
	const n = 10_000
	s, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fillStore(t, s, n)
	ctx := context.Background()
	run := 0
	allocs := testing.AllocsPerRun(3, func() {
		run++ // a new name each time: a checkpoint would skip the events
		bus, err := eventbus.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "catch-up-"+strconv.Itoa(run),
			func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.WaitFor(ctx, n-1); err != nil {
			t.Fatal(err)
		}
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := bus.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > n/4 {
		t.Errorf("a durable subscription catching up with %d events makes %v allocations, want at most %d", n, allocs, n/4)
	}
}

// TestDeadLetterAllocationsWithoutLogger holds a dead letter to its
// budget when no Logger is set: the report of each dead letter, made for
// Options.Logger, must cost nothing then. Its arguments, built before the
// Logger was looked at, doubled a dead letter's allocations (19, not 9).
func TestDeadLetterAllocationsWithoutLogger(t *testing.T) {
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, DeadLetterCapacity: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	failed := eventbus.Permanent(errFlaky)
	subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error { return failed }, nil)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1_000, func() {
		if err := topic.Publish(ctx, Order{Key: "k"}); !errors.Is(err, errFlaky) {
			t.Fatalf("Publish = %v, want %v", err, errFlaky)
		}
	})
	// The dead letter's payload, envelope and error, the handler's
	// context and the publisher's error: nothing for a log.
	if allocs > 9 {
		t.Errorf("%v allocations per dead letter without a Logger, want at most 9", allocs)
	}
}
