package kafka

import (
	"context"
	"errors"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// RoundTrip returns a function that takes an event the bridge's way from one
// bus to another, without Kafka: encoded into a record as Forward does, and
// published on t from the record as a Consumer does.
func RoundTrip[T any](reg *eventbus.Registry, t *eventbus.Topic[T]) (func(context.Context, eventbus.Event[T]) error, error) {
	c := &Consumer{bus: t.Bus(), reg: reg, routes: make(map[string]route)}
	if err := Route(c, "orders", t); err != nil {
		return nil, err
	}
	publish := c.routes["orders"]
	return func(ctx context.Context, e eventbus.Event[T]) error {
		ed, err := reg.Encode(e.Payload)
		if err != nil {
			return err
		}
		ed.ID, ed.CorrelationID, ed.CausationID, ed.Metadata = e.ID, e.CorrelationID, e.CausationID, e.Metadata
		r := newRecord("orders", e.Key, &ed)
		r.Partition, r.Offset = 3, 42
		parsed, key, err := parseRecord(r)
		if err != nil {
			return err
		}
		bad, err := publish(ctx, r, &parsed, key)
		return errors.Join(bad, err)
	}, nil
}

// RouteVia is Route with publish in place of t.Publish, for tests of what
// Route does with errors that the bus, given the Consumer's arguments, does
// not return.
func RouteVia[T any](c *Consumer, kafkaTopic string, t *eventbus.Topic[T], publish func(context.Context, T, ...eventbus.PublishOption) error) error {
	return routeVia(c, kafkaTopic, t, publish)
}

// ProduceAlone is p's produce of r on its own, as Forward and Relay do
// for a record that the broker refused with its batch.
func ProduceAlone(ctx context.Context, p *Producer, r *kgo.Record) error {
	return p.produceAlone(ctx, r)
}

// ConsumerOptionsOf returns the options c runs with, its defaults filled
// in: what the durations' defaults are, which no test can wait out.
func ConsumerOptionsOf(c *Consumer) ConsumerOptions { return c.o }

// RelayOptionsOf returns the options r runs with, its defaults filled in.
func RelayOptionsOf(r *Relay) RelayOptions { return r.o }
