package kafka_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerKeepsItsOptions changes the Brokers and Client given to
// NewConsumer, as a caller reusing its options for another consumer does,
// before Run: Run consumes with the options the Consumer was made with. It
// kept the caller's slices, read at Run, so that it ran with the other
// consumer's: here a Client option franz-go refuses, so that Run failed.
func TestConsumerKeepsItsOptions(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := newOrderLog(t, 1)
	if _, err := orders.Subscribe("shipping", log.handle, nil); err != nil {
		t.Fatal(err)
	}
	opts := &kafka.ConsumerOptions{Brokers: append([]string(nil), brokers...), Group: "g", Client: []kgo.Opt{kgo.ClientID("shipping")}}
	cons, err := kafka.NewConsumer(bus, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", orders); err != nil {
		t.Fatal(err)
	}
	// For another consumer.
	opts.Brokers[0], opts.Client[0] = "127.0.0.1:1", kgo.RequiredAcks(kgo.LeaderAck())

	ran, stop := startRun(ctx, cons)
	defer stop()
	select {
	case <-log.done:
	case err := <-ran:
		t.Fatalf("Run() = %v, want it to consume", err)
	case <-ctx.Done():
		t.Fatal("the record was not handled")
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}
