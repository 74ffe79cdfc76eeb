package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerCommitsNothingAbandoned closes the bus while Run runs, its
// handler busy with the first of three records and the others queued or
// not yet published: the bus dead-letters what it abandons, in memory, and
// Run's final commit must not pass those records, or they would be lost
// at exit. Run returns an error wrapping eventbus.ErrClosed and the group
// has committed nothing, so the next consumer gets all three again.
func TestConsumerCommitsNothingAbandoned(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 3)

	bus := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic(t, bus)
	started := make(chan struct{}, 3)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		started <- struct{}{}
		<-hctx.Done() // only the bus's Close ends it
		return hctx.Err()
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: time.Minute})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the first record was not handed to the handler")
	}
	var ue *eventbus.UndeliveredError
	if err := bus.Close(); !errors.As(err, &ue) {
		t.Fatalf("bus.Close() = %v, want an *UndeliveredError", err)
	}
	if err := stop(); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Run() = %v, want an error wrapping eventbus.ErrClosed", err)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders, none of which was handled, want 0", got)
	}
}

// TestConsumerCommitsNothingCutShort closes the bus while its handler is
// busy with the one record read, nothing queued: Close cancels the handler,
// which fails, and its event is dead-lettered, in memory, though no event
// was undelivered (Close returns nil). Run's final commit must not pass
// that record either, or it would be lost at exit.
func TestConsumerCommitsNothingCutShort(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic(t, bus)
	started := make(chan struct{}, 1)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		started <- struct{}{}
		<-hctx.Done() // only the bus's Close ends it
		return hctx.Err()
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: time.Minute})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the record was not handed to the handler")
	}
	if err := bus.Close(); err != nil {
		t.Fatalf("bus.Close() = %v, want nil: the event was in its handler, not queued", err)
	}
	if err := stop(); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Run() = %v, want an error wrapping eventbus.ErrClosed", err)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders, whose one event was cut short, want 0", got)
	}
}
