package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerRunWithHandlerContext starts a Consumer from a handler of
// another bus, with the handler's context made uncancellable, as a process
// that starts consumers when an event says so does. Every commit waits for
// the bus (Bus.Flush), which refuses a handler's context, so such a Run
// would consume and never commit: Run refuses the context at once with an
// error wrapping eventbus.ErrInvalid, as Flush does, and consumes nothing.
func TestConsumerRunWithHandlerContext(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	handled := make(chan struct{}, 1)
	if _, err := orders.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error {
		handled <- struct{}{}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", orders); err != nil {
		t.Fatal(err)
	}

	// The control bus's handler starts Run and returns.
	control := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	start := newTopic(t, control)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	if _, err := start.Subscribe("start", func(hctx context.Context, _ eventbus.Event[Order]) error {
		rctx, cancel := context.WithCancel(context.WithoutCancel(hctx))
		context.AfterFunc(runCtx, cancel)
		go func() { runErr <- cons.Run(rctx) }()
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	if err := start.Publish(ctx, Order{Key: "start"}); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-runErr:
		if !errors.Is(err, eventbus.ErrInvalid) {
			t.Fatalf("Run(a handler's context) = %v, want an error wrapping eventbus.ErrInvalid", err)
		}
	case <-handled:
		stop()
		err := <-runErr
		t.Fatalf("Run(a handler's context) consumed the record, committed %d records and returned %v; want an error wrapping eventbus.ErrInvalid at once",
			committedSum(t, ctx, brokers, "g", "orders"), err)
	case <-ctx.Done():
		t.Fatal("Run(a handler's context) did not return")
	}
}
