package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestUnkeyedRecordHasNullKey writes events without a key to Kafka,
// through Forward (a payload with no key method) and through a Relay whose
// Key returns "": each record has a null key, which Kafka reads as no key,
// as the Relay's doc says ("records without a key"). An empty key is a
// key: franz-go's partitioner hashes it, so that every unkeyed record of a
// topic went to one partition, and compaction keeps only the last of them.
func TestUnkeyedRecordHasNullKey(t *testing.T) {
	brokers, _, ctx := setup(t, "forwarded", "relayed")
	reg := registry(t)
	if err := eventbus.Register[Remark](reg, nil); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, reg, brokers)

	bus := newBus(t, nil)
	remarks, err := eventbus.NewTopic[Remark](bus, "remarks", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kafka.Forward(p, remarks, "forwarded", nil); err != nil {
		t.Fatal(err)
	}
	if err := remarks.Publish(ctx, Remark{"forwarded"}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	store := newStore(t)
	appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"}) // a key the relay's Key drops
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r", Topic: "relayed", Key: func(eventbus.RecordedEvent) string { return "" },
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()

	for _, topic := range []string{"forwarded", "relayed"} {
		if r := readOne(t, ctx, brokers, topic); r.Key != nil {
			t.Errorf("the record of %s has the key %q, want a null one", topic, r.Key)
		}
	}
	stop()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}
