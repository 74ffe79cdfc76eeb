package kafka_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayBrokerRefusesBatchNamesLarge relays a small event of stream a,
// one of stream b larger than the topic's max.message.bytes (below the
// producer's own limit), and a small one of stream c, all in one batch:
// the broker refuses the whole batch, and franz-go fails each of its
// records as too large. Run must name b, the event too large, not a, the
// first of the batch, and write a, so that the checkpoint is at b, as the
// way past b (a checkpoint saved after it) needs: naming a, it sent a
// user who followed that way to skip a small event, which was lost.
func TestRelayBrokerRefusesBatchNamesLarge(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, map[string]string{"max.message.bytes": "1000"})
	brokers := c.ListenAddrs()
	a := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	b := appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 3000)})
	last := appendOrder(t, ctx, store, reg, "c", Order{Key: "c"})

	// The producer learns where "orders" is only once the relay has read
	// the last event, so that franz-go holds the three records, and
	// sends them in one batch.
	read := make(chan struct{})
	var readOnce sync.Once
	holdMetadata(ctx, c, "orders", read)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, Linger: -1, Compression: noCompression})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: func(e eventbus.RecordedEvent) string {
		if e.ID == last.ID {
			defer readOnce.Do(func() { close(read) })
		}
		return e.Stream
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	checkProduceError(t, err, b, kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(a), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after the broker refused the batch (-want +got):\n%s", diff)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != b.Position {
		t.Errorf("checkpoint = %d, %v; want %d, the large event's position", next, err, b.Position)
	}
}
