package kafka_test

import (
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestBadInput checks that the bridge's constructors refuse what they
// cannot work with, with errors wrapping eventbus.ErrInvalid, and never
// panic.
func TestBadInput(t *testing.T) {
	bus := newBus(t, nil)
	topic := newTopic(t, bus)
	reg := registry(t)
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	brokers := []string{"127.0.0.1:1"}
	tests := map[string]func() error{
		"producer without registry": func() error { _, err := kafka.NewProducer(nil, &kafka.ProducerOptions{Brokers: brokers}); return err },
		"producer without brokers":  func() error { _, err := kafka.NewProducer(reg, nil); return err },
		"forward without producer":  func() error { _, err := kafka.Forward(nil, topic, "k", nil); return err },
		"consumer without bus": func() error {
			_, err := kafka.NewConsumer(nil, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			return err
		},
		"consumer without group": func() error {
			_, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers})
			return err
		},
		"route without consumer": func() error { return kafka.Route[Order](nil, "k", topic) },
		"route to a topic of another bus": func() error {
			c, err := kafka.NewConsumer(newBus(t, nil), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			if err != nil {
				return err
			}
			return kafka.Route(c, "k", topic)
		},
		"relay without producer": func() error {
			_, err := kafka.NewRelay(store, nil, &kafka.RelayOptions{Name: "r", Topic: "k"})
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("got %v, want an error wrapping eventbus.ErrInvalid", err)
			}
		})
	}
}
