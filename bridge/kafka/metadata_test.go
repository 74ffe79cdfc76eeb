package kafka_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerMetadataOfSecondHop takes an event that a Consumer published
// (so its metadata holds the kafka.* entries of its record) across Kafka a
// second time, as a bus that forwards what it consumes does, with no
// causation ID of its own: the consumed event's kafka.* entries are those
// of the second record. The first record's causation ID stayed, as if it
// were the second's.
func TestConsumerMetadataOfSecondHop(t *testing.T) {
	reg := registry(t)
	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	var got eventbus.Metadata
	if _, err := orders.Subscribe("record", func(_ context.Context, e eventbus.Event[Order]) error {
		got = e.Metadata
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	roundTrip, err := kafka.RoundTrip(reg, orders)
	if err != nil {
		t.Fatal(err)
	}
	first := eventbus.NewID()
	e := eventbus.Event[Order]{Payload: Order{Key: "k"}}
	e.ID, e.Key = eventbus.NewID(), "k"
	e.Metadata = eventbus.Metadata{
		"tenant":                  "t1",
		kafka.MetadataEventID:     first.String(),
		kafka.MetadataCausationID: eventbus.NewID().String(),
		kafka.MetadataTopic:       "upstream",
		kafka.MetadataPartition:   "0",
		kafka.MetadataOffset:      "7",
	}
	if err := roundTrip(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	want := eventbus.Metadata{
		"tenant":                "t1",
		kafka.MetadataEventID:   e.ID.String(),
		kafka.MetadataTopic:     "orders",
		kafka.MetadataPartition: "3",
		kafka.MetadataOffset:    "42",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata after the second hop (-want +got):\n%s", diff)
	}
}

// TestConsumerKeylessRecord takes an event without a key across Kafka, as
// a Relay whose Key returns "" writes it: its record has no key, and the
// consumed event gets the key that Publish gives its payload, its key
// method's, as the Consumer's doc says, not an empty one.
func TestConsumerKeylessRecord(t *testing.T) {
	reg := registry(t)
	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	var got string
	if _, err := orders.Subscribe("record", func(_ context.Context, e eventbus.Event[Order]) error {
		got = e.Key
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	roundTrip, err := kafka.RoundTrip(reg, orders)
	if err != nil {
		t.Fatal(err)
	}
	e := eventbus.Event[Order]{Payload: Order{Key: "k"}}
	e.ID = eventbus.NewID()
	if err := roundTrip(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	if got != "k" {
		t.Errorf("consumed event's key %q, want the payload's %q", got, "k")
	}
}
