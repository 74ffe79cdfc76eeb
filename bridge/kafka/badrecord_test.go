package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerBadRecordError consumes, with no dead-letter topic, records
// of foreign producers that cannot be made into events: Run stops with an
// error that wraps eventbus.ErrInvalid for each, so that a caller can tell
// a bad record, which stops every run until it is dealt with, from a
// failure that a restart may get past; and that still wraps the record's
// own error. A payload that did not decode, or a type the registry did not
// know, gave the codec's or the registry's error alone. The error quotes
// no more than the start of a bad header: a schema version of 100,000
// digits was quoted whole, and so were a type and an encoding of 100,000
// bytes, in the registry's error.
func TestConsumerBadRecordError(t *testing.T) {
	checkNoLeaks(t)
	id := []byte(eventbus.NewID().String())
	for _, tc := range []struct {
		name    string
		headers []kgo.RecordHeader
		value   string
		also    error // wrapped too, if not nil
	}{
		{name: "no bridge headers", value: `{}`},
		{name: "unknown type", headers: []kgo.RecordHeader{{Key: "eventbus-id", Value: id}, {Key: "eventbus-type", Value: []byte("order.unknown")}}, value: `{}`, also: eventbus.ErrUnknownEvent},
		{name: "payload not JSON", headers: []kgo.RecordHeader{{Key: "eventbus-id", Value: id}, {Key: "eventbus-type", Value: []byte("order.placed")}}, value: `not json`},
		{name: "large schema version", headers: []kgo.RecordHeader{{Key: "eventbus-id", Value: id}, {Key: "eventbus-type", Value: []byte("order.placed")}, {Key: "eventbus-schema-version", Value: []byte(strings.Repeat("9", 100_000))}}, value: `{}`},
		{name: "large type", headers: []kgo.RecordHeader{{Key: "eventbus-id", Value: id}, {Key: "eventbus-type", Value: []byte(strings.Repeat("x", 100_000))}}, value: `{}`, also: eventbus.ErrUnknownEvent},
		{name: "large encoding", headers: []kgo.RecordHeader{{Key: "eventbus-id", Value: id}, {Key: "eventbus-type", Value: []byte("order.placed")}, {Key: "eventbus-encoding", Value: []byte(strings.Repeat("z", 100_000))}}, value: `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, reg := cluster(t, "orders").ListenAddrs(), registry(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(tc.value), Headers: tc.headers}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			bus := newBus(t, nil)
			stop, ended := consume(t, ctx, bus, newTopic(t, bus), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			select {
			case <-ended:
			case <-ctx.Done():
				t.Fatal("Run() did not stop at the bad record")
			}
			err = stop()
			if !errors.Is(err, eventbus.ErrInvalid) || tc.also != nil && !errors.Is(err, tc.also) {
				t.Errorf("Run() = %.300v, want an error wrapping %v (and %v)", err, eventbus.ErrInvalid, tc.also)
			}
			if err != nil && len(err.Error()) > 500 {
				t.Errorf("Run() = %.300v..., of %d bytes: it quotes the record at length", err, len(err.Error()))
			}
		})
	}
}
