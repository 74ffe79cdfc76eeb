package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerSyncStopDrains stops Run while a Sync-mode handler runs, as
// a process stops its consumer: the handler finishes with its context
// still live, as an Async-mode handler does while Run drains, and its
// record is committed, handled. Run's context was the handler's, so the
// stop cancelled it: a handler that honours its context failed, its event
// was dead-lettered in memory, and its record committed, lost at exit.
func TestConsumerSyncStopDrains(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	started, release := make(chan struct{}), make(chan struct{})
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		close(started)
		select {
		case <-release:
		case <-hctx.Done():
		}
		return hctx.Err() // nil unless the stop cut it short
	}, nil); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, ordersConsumer(t, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour}))
	defer stop()
	awaitRunning(t, ctx, runErr, started, "the record handed to the handler")
	// Run's context is done before the handler is released: given that
	// context, the handler finds it done.
	stop()
	close(release)
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if n := bus.DeadLetters().Len(); n != 0 {
		t.Errorf("the bus holds %d dead letters, want 0: the stop cut the handler short", n)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 1 {
		t.Errorf("group committed %d records of orders, want the 1 handled", got)
	}
}

// TestConsumerSyncStopPastDrainTimeout stops Run while a Sync-mode handler
// runs on past DrainTimeout: its context ends then, it fails, and the bus
// dead-letters its event in memory, unhandled, so Run commits nothing
// past its record, which the next run reads again, as for an Async-mode
// handler still running when the drain gives up.
func TestConsumerSyncStopPastDrainTimeout(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	started := make(chan struct{})
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		close(started)
		<-hctx.Done()
		return hctx.Err()
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: 50 * time.Millisecond})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the record was not handed to the handler")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders, want 0: the handler was cut short", got)
	}
}
