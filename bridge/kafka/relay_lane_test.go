package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayLaneIsKeyAndTopic relays two events of one stream, the first to
// the Kafka topic "orders" and the second, by TopicFor, to "audit", and
// holds the first's acknowledgement until the second is given to
// franz-go: the Relay's doc holds a record back only behind the one in
// flight of the same key and Kafka topic, and records of different topics
// have no order to keep between them (they are in different partitions).
// A relay whose lanes were keys alone held the second back behind the
// first, waiting for each other until the test's end.
func TestRelayLaneIsKeyAndTopic(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	if err := c.CreateTopic("audit", 1, nil); err != nil {
		t.Fatal(err)
	}
	first := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	second := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1", Seq: 1})
	// The first's acknowledgement waits, in the promise goroutine, before
	// the relay's promise, until the second is given to franz-go.
	firstID, secondID := first.ID.String(), second.ID.String()
	secondHanded := make(chan struct{})
	hooks := produceHooks{
		buffered: func(id string) {
			if id == secondID {
				close(secondHanded)
			}
		},
		unbuffered: func(id string, _ error) {
			if id == firstID {
				select {
				case <-secondHanded:
				case <-ctx.Done():
				}
			}
		},
	}
	p := newProducer(t, reg, c.ListenAddrs(), kgo.WithHooks(hooks))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r",
		TopicFor: func(e eventbus.RecordedEvent) string {
			if e.Position == first.Position {
				return "orders"
			}
			return "audit"
		},
		Checkpoints:        &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: second.Position + 1, do: stop},
		CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) || ctx.Err() != nil {
		t.Fatalf("Run() = %v, want the stop's %v once both were written", err, context.Canceled)
	}
	for topic, e := range map[string]eventbus.RecordedEvent{"orders": first, "audit": second} {
		if diff := cmp.Diff(idsOf(e), eventIDs(t, ctx, c.ListenAddrs(), topic)); diff != "" {
			t.Errorf("records of %s (-want +got):\n%s", topic, diff)
		}
	}
}
