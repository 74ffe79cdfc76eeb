package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestForwardTooLarge forwards, in one batch, an event too large for a
// Kafka batch and a later one of its key: the large one is dead-lettered
// after its attempts, and the later one is written once.
func TestForwardTooLarge(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	forward(t, reg, orders, "orders", &kafka.ProducerOptions{Brokers: brokers, BatchMaxBytes: 2048}, &eventbus.SubscriptionOptions{
		Workers: 1, BatchSize: 10, BatchWait: 300 * time.Millisecond,
		Retry: &eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Millisecond},
	})
	if err := orders.Publish(ctx, Order{Key: strings.Repeat("x", 8000)}, eventbus.WithKey("k")); err != nil {
		t.Fatal(err)
	}
	if err := orders.Publish(ctx, Order{Key: "k", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRecords(t, ctx, brokers, "orders"); n != 1 {
		t.Errorf("Kafka holds %d records, want the small event once", n)
	}
	var dead []eventbus.DeadLetter
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		dead = append(dead, dl)
	}
	if len(dead) != 1 || !errors.Is(dead[0].Err, kerr.MessageTooLarge) || dead[0].Attempt != 3 {
		t.Fatalf("dead letters %v, want the large event's, after 3 attempts, with MessageTooLarge", dead)
	}
}

// TestForwardBrokerRejectsBatch forwards a batch of small events that the
// broker refuses as a whole, as larger than its limit: each event fits
// alone, so the retries write them all, in order of their key.
func TestForwardBrokerRejectsBatch(t *testing.T) {
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.BrokerConfigs(map[string]string{"message.max.bytes": "600"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	forward(t, reg, orders, "orders", &kafka.ProducerOptions{Brokers: brokers}, &eventbus.SubscriptionOptions{
		Workers: 1, BatchSize: 20, BatchWait: 300 * time.Millisecond,
		Retry: &eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Millisecond},
	})
	for seq := range 20 {
		if err := orders.Publish(ctx, Order{Key: "k", Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bus.DeadLetters().Len(); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if n := countRecords(t, ctx, brokers, "orders"); n != 20 {
		t.Errorf("Kafka holds %d records, want 20", n)
	}
}

// TestForwardSchemaVersion forwards from a topic whose SchemaVersion differs
// from the one the payload's type is registered at: the record's header
// names the version the payload was encoded at.
func TestForwardSchemaVersion(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders") // Order at version 1
	bus := newBus(t, nil)
	orders, err := eventbus.NewTopic[Order](bus, "orders", &eventbus.TopicOptions[Order]{SchemaVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	forward(t, reg, orders, "orders", &kafka.ProducerOptions{Brokers: brokers}, nil)
	if err := orders.Publish(ctx, Order{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range readOne(t, ctx, brokers, "orders").Headers {
		if h.Key == "eventbus-schema-version" && string(h.Value) != "1" {
			t.Errorf("schema version header %q, want 1", h.Value)
		}
	}
}
