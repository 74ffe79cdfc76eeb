package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerCommitsNothingRefused shuts the bus down gracefully while
// Run runs, its handler busy with a record: the handler's follow-up
// publish, once the bus has begun to stop, is refused with ErrClosed, and
// its event is dead-lettered, in memory, unhandled. Run's final commit must
// not pass that record, or the follow-up would be lost at exit: Run
// returns an error wrapping eventbus.ErrClosed and the group has committed
// nothing, so the next consumer gets the record again.
func TestConsumerCommitsNothingRefused(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic(t, bus)
	follow, err := eventbus.NewTopic[Order](bus, "follow", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The handler publishes a follow-up at each tick until the stopping
	// bus refuses one, and returns that error.
	tick, published := make(chan struct{}), make(chan error)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, e eventbus.Event[Order]) error {
		for range tick {
			err := follow.Publish(hctx, e.Payload)
			published <- err
			if err != nil {
				return err
			}
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: time.Minute})
	tick <- struct{}{} // the handler has the record
	if err := <-published; err != nil {
		t.Fatalf("follow-up Publish before the stop = %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- bus.Shutdown(context.Background()) }()
	for {
		tick <- struct{}{}
		if err := <-published; err != nil {
			if !errors.Is(err, eventbus.ErrClosed) {
				t.Fatalf("follow-up Publish = %v, want eventbus.ErrClosed", err)
			}
			break
		}
	}
	close(tick)
	if err := <-stopped; err != nil {
		t.Fatalf("bus.Shutdown() = %v", err)
	}
	if err := stop(); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Run() = %v, want an error wrapping eventbus.ErrClosed", err)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders, whose follow-up was refused, want 0", got)
	}
}
