//go:build !race

// The race detector allocates on its own, so allocation budgets are checked
// without it: .ci/run runs these tests in a separate step.

package eventbus_test

import (
	"context"
	"io"
	"log/slog"
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
