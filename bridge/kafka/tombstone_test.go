package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Ping is an event with nothing to say: its codec encodes it to no bytes,
// as protobuf does a message whose fields all hold their defaults.
type Ping struct{}

func (Ping) EventType() string { return "ping" }

// emptyCodec encodes a Ping to no bytes.
type emptyCodec struct{}

func (emptyCodec) Marshal(any) ([]byte, error) { return nil, nil }
func (emptyCodec) Unmarshal(data []byte, v any) error {
	if len(data) != 0 {
		return errors.New("a ping has no bytes")
	}
	return nil
}

// TestEmptyPayloadIsNoTombstone writes events whose payload encodes to no
// bytes to Kafka, through Forward and through a Relay (a store reads such
// a payload back as nil Data): each record's value is empty, not null. A
// record with a null value is a tombstone, which compaction takes for the
// deletion of every record of its key (the event's stream, for a relay)
// before it, and then drops too, and which connectors and stream
// processors take for a delete.
func TestEmptyPayloadIsNoTombstone(t *testing.T) {
	brokers, _, ctx := setup(t, "forwarded", "relayed")
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Ping](reg, &eventbus.TypeOptions{Codec: emptyCodec{}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, reg, brokers)

	bus := newBus(t, nil)
	pings, err := eventbus.NewTopic[Ping](bus, "pings", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kafka.Forward(p, pings, "forwarded", nil); err != nil {
		t.Fatal(err)
	}
	if err := pings.Publish(ctx, Ping{}, eventbus.WithKey("k")); err != nil {
		t.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	store := newStore(t)
	ed, err := reg.Encode(Ping{})
	if err != nil {
		t.Fatal(err)
	}
	ed.ID = eventbus.NewID()
	if _, err := store.Append(ctx, "ping-1", eventbus.NoStream, ed); err != nil {
		t.Fatal(err)
	}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "relayed"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	relayed := make(chan error, 1)
	go func() { relayed <- relay.Run(runCtx) }()

	for _, topic := range []string{"forwarded", "relayed"} {
		r := readOne(t, ctx, brokers, topic)
		if r.Value == nil {
			t.Errorf("the record of %s has a null value, a tombstone; want an empty one", topic)
		}
	}
	stop()
	if err := <-relayed; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}
