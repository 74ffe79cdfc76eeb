//go:build !race

// The race detector allocates on its own, so allocation budgets are checked
// without it: .ci/run runs these tests in a separate step.

package eventbus_test

import (
	"context"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

// TestPublishAllocations holds the hot paths to their budget: no
// allocation per event, amortised, from Publish to the handler and back, in
// both modes, with the payload's key method or a key function.
func TestPublishAllocations(t *testing.T) {
	for _, mode := range []eventbus.Mode{eventbus.Async, eventbus.Sync} {
		b := newBus(t, &eventbus.Options{Mode: mode, Workers: 2})
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
			t.Errorf("mode %v: %v allocations per two publishes, want 0", mode, allocs)
		}
	}
}
