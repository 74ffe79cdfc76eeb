package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestForwardSubscriptionErrors checks the errors of the subscription that
// Forward makes, as its doc lists them: options the bus refuses, or with
// Middleware, which a batch subscription cannot run; a second Forward of a
// topic to the same Kafka topic, whose subscription name is taken; and a
// bus shut down. None of them needs Kafka.
func TestForwardSubscriptionErrors(t *testing.T) {
	reg := registry(t)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tests := map[string]struct {
		forward func(t *testing.T) error
		want    error
	}{
		"options out of range": {func(t *testing.T) error {
			_, err := kafka.Forward(p, newTopic(t, newBus(t, nil)), "orders", &eventbus.SubscriptionOptions{Workers: -1})
			return err
		}, eventbus.ErrInvalid},
		"middleware": {func(t *testing.T) error {
			_, err := kafka.Forward(p, newTopic(t, newBus(t, nil)), "orders", &eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second)}})
			return err
		}, eventbus.ErrInvalid},
		"the same Kafka topic twice": {func(t *testing.T) error {
			orders := newTopic(t, newBus(t, nil))
			if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
				t.Fatalf("first Forward() = %v, want nil", err)
			}
			_, err := kafka.Forward(p, orders, "orders", nil)
			return err
		}, eventbus.ErrDuplicate},
		"a bus shut down": {func(t *testing.T) error {
			bus := newBus(t, nil)
			orders := newTopic(t, bus)
			if err := bus.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, err := kafka.Forward(p, orders, "orders", nil)
			return err
		}, eventbus.ErrClosed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if err := tt.forward(t); !errors.Is(err, tt.want) {
				t.Errorf("Forward() = %v, want an error wrapping %v", err, tt.want)
			}
		})
	}
}

// TestForwardSubscriptionName forwards a topic that has a subscription of
// the application's named as the Kafka topic: Forward's subscription is
// named "kafka." followed by the Kafka topic, as its doc says, apart from
// the application's, and under that name the bus's dead letters and
// metrics report it. A Forward that named it after the Kafka topic alone
// was refused there as a duplicate.
func TestForwardSubscriptionName(t *testing.T) {
	reg := registry(t)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	orders := newTopic(t, newBus(t, nil))
	if _, err := orders.Subscribe("orders", func(context.Context, eventbus.Event[Order]) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	sub, err := kafka.Forward(p, orders, "orders", nil)
	if err != nil {
		t.Fatalf("Forward() = %v beside a subscription named %q", err, "orders")
	}
	if got := sub.Name(); got != "kafka.orders" {
		t.Errorf("Forward's subscription is named %q, want %q", got, "kafka.orders")
	}
}
