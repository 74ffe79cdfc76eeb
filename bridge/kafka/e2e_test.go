package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestBusToKafkaToBus forwards events from one bus through Kafka into another
// bus: every event is handled once, in order per key, and the consumer group
// ends up committed at the end of every partition. It sends 100,000 events
// over 1,000 keys, or 10,000 with -short.
func TestBusToKafkaToBus(t *testing.T) {
	checkNoLeaks(t)
	events, keys := 100_000, 1000
	if testing.Short() {
		events = 10_000
	}
	c := cluster(t, "orders")
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The publishing side: bus A forwards its topic to Kafka.
	busA := newBus(t, nil)
	ordersA := newTopic(t, busA)
	forward(t, reg, ordersA, "orders", &kafka.ProducerOptions{Brokers: brokers}, &eventbus.SubscriptionOptions{Workers: 8, BatchSize: 1000})

	// The consuming side: bus B in another "process".
	busB := newBus(t, nil)
	ordersB := newTopic(t, busB)
	log := logOrders(t, ordersB, events)
	stop, _ := consume(t, ctx, busB, ordersB, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "shipping", CommitInterval: 50 * time.Millisecond})

	perKey := make(map[string]int, keys)
	for i := range events {
		k := fmt.Sprintf("k%04d", i%keys)
		if err := ordersA.Publish(ctx, Order{Key: k, Seq: perKey[k]}); err != nil {
			t.Fatal(err)
		}
		perKey[k]++
	}
	log.wait(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	log.checkExactlyOnce(t, perKey)
	checkCommittedAll(t, ctx, brokers, "shipping", "orders")
	if err := busA.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := busA.DeadLetters().Len(); n != 0 {
		t.Errorf("bus A dead-lettered %d events, want 0", n)
	}
}
