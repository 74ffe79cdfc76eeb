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
	got := roundTripOrder(t, e).Metadata
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
	e := eventbus.Event[Order]{Payload: Order{Key: "k"}}
	e.ID = eventbus.NewID()
	if got := roundTripOrder(t, e).Key; got != "k" {
		t.Errorf("consumed event's key %q, want the payload's %q", got, "k")
	}
}

// roundTripOrder takes e across Kafka with kafka.RoundTrip, as a Forward
// and a Consumer would, to a Sync-mode topic, and returns the event its
// subscription got.
func roundTripOrder(t *testing.T, e eventbus.Event[Order]) eventbus.Event[Order] {
	t.Helper()
	orders := newTopic(t, newBus(t, &eventbus.Options{Mode: eventbus.Sync}))
	var got eventbus.Event[Order]
	if _, err := orders.Subscribe("record", func(_ context.Context, e eventbus.Event[Order]) error {
		got = e
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	roundTrip, err := kafka.RoundTrip(registry(t), orders)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	return got
}
