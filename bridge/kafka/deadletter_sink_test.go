package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerCommitsPastFailedSink proves what the Consumer's doc and the
// README say of the events that the consuming bus dead-letters: their
// records are committed once the bus's DeadLetterSink has been given them,
// whether or not Put kept them, so a dead letter that the sink failed to
// keep lives only in the bus's in-memory queue, unlike a durable
// subscription's, whose checkpoint stays before it.
func TestConsumerCommitsPastFailedSink(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)
	put := make(chan struct{})
	bus := newBus(t, &eventbus.Options{DeadLetterSink: eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error {
		close(put)
		return errors.New("the sink's disk is full")
	})})
	orders := newTopic(t, bus)
	if _, err := orders.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error {
		return errors.New("the handler fails")
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	select {
	case <-put:
	case <-ended:
		t.Fatalf("Run() = %v before the dead letter reached the sink", stop())
	case <-ctx.Done():
		t.Fatal("the dead letter did not reach the sink")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if n := bus.DeadLetters().Len(); n != 1 {
		t.Errorf("the bus holds %d dead letters, want 1", n)
	}
	checkCommittedAll(t, ctx, brokers, "g", "orders")
}
