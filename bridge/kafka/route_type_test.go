package kafka_test

import (
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRouteUnregisteredType routes a Kafka topic to a bus topic whose
// payload type is concrete and not registered in the consumer's registry
// (not at all, or only as the type a pointer points to): no record ever
// decodes to it, so Run would send every record to the dead-letter topic,
// and commit past it, or stop at the first. Route refuses it with an error
// wrapping eventbus.ErrInvalid and eventbus.ErrUnknownEvent, as Forward
// does; an interface passes, its types known record by record.
func TestRouteUnregisteredType(t *testing.T) {
	bus := newBus(t, nil)
	brokers := []string{"127.0.0.1:1"}
	empty, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	orders := newTopic(t, bus)
	pointers, err := eventbus.NewTopic[*Order](bus, "order-pointers", nil)
	if err != nil {
		t.Fatal(err)
	}
	typed, err := eventbus.NewTopic[Typed](bus, "typed", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		reg  *eventbus.Registry
		call func(c *kafka.Consumer) error
		want bool // whether Route refuses
	}{
		{"Order, registered", registry(t), func(c *kafka.Consumer) error { return kafka.Route(c, "orders", orders) }, false},
		{"Order, not registered", empty, func(c *kafka.Consumer) error { return kafka.Route(c, "orders", orders) }, true},
		{"*Order, Order registered", registry(t), func(c *kafka.Consumer) error { return kafka.Route(c, "orders", pointers) }, true},
		{"an interface", empty, func(c *kafka.Consumer) error { return kafka.Route(c, "orders", typed) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := kafka.NewConsumer(bus, tt.reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call(c)
			switch {
			case !tt.want && err != nil:
				t.Errorf("Route() = %v, want nil", err)
			case tt.want && (!errors.Is(err, eventbus.ErrInvalid) || !errors.Is(err, eventbus.ErrUnknownEvent)):
				t.Errorf("Route() = %v, want an error wrapping eventbus.ErrInvalid and eventbus.ErrUnknownEvent", err)
			}
		})
	}
}
