package kafka_test

import (
	"context"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerCorrelatesOriginal relays an event appended to the store with
// no correlation ID (as ExampleRelay appends them), twice, as a relay does
// after a crash: each delivery's event has the original event's ID as its
// correlation ID, as Publish gives an event that starts a chain its own
// ID, so that the chain it starts in the consuming process is tied to the
// original event, and the same in every delivery.
func TestConsumerCorrelatesOriginal(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	e, err := reg.Encode(Order{Key: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !e.CorrelationID.IsZero() {
		t.Fatalf("Encode gave correlation ID %v, want none", e.CorrelationID)
	}
	if _, err := store.Append(ctx, "a", eventbus.Any, e); err != nil {
		t.Fatal(err)
	}
	relay, err := kafka.NewRelay(store, newProducer(t, reg, brokers), &kafka.RelayOptions{Name: "orders", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	got := make(chan eventbus.Header, 2)
	if _, err := orders.Subscribe("s", func(_ context.Context, e eventbus.Event[Order]) error {
		got <- e.Header
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	for delivery := range 2 {
		if err := kafka.StoreCheckpoints(store).Save(ctx, "orders", 0); err != nil {
			t.Fatal(err)
		}
		relayErr, stop := startRun(ctx, relay)
		var h eventbus.Header
		select {
		case h = <-got:
		case err := <-relayErr:
			t.Fatalf("Relay.Run() = %v", err)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		stop()
		<-relayErr
		if h.CorrelationID != e.ID {
			t.Errorf("delivery %d: correlation ID %v (its own ID %v), want the original event's ID %v", delivery+1, h.CorrelationID, h.ID, e.ID)
		}
	}
}
