package kafka_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayTooLargeForBrokerWrite relays two events of stream "a", then an
// event of stream "b" whose record fits ProducerOptions.BatchMaxBytes
// (1024) but not the batch that franz-go builds under a BrokerMaxWriteBytes
// of the same size, which ProducerOptions.BatchMaxBytes' doc allows ("up
// to the most the client writes to a broker at once"): franz-go takes the
// request's overhead off the latter (about 60 bytes here), and refuses
// the record as too large. The Relay's doc promises that such a record is
// never produced, and that Run stops "once the events read before it are
// written ... so that the checkpoint is at it". The relay checks the size
// against BatchMaxBytes alone, produces the record, and its failure drops
// the second event of "a", held back behind the first: Kafka holds the
// first alone and the checkpoint is before the second.
func TestRelayTooLargeForBrokerWrite(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	brokers := c.ListenAddrs()
	a0 := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	a1 := appendOrder(t, ctx, store, reg, "a", Order{Key: "a", Seq: 1})
	// A record of about 995 bytes of batch: under 1024, over 1024 less
	// franz-go's produce request overhead.
	big := appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 810)})

	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: brokers, BatchMaxBytes: 1024, Compression: noCompression,
		Client: []kgo.Opt{kgo.BrokerMaxWriteBytes(1024)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	checkProduceError(t, err, big, kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(a0, a1), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records written before the event too large (-want +got):\n%s", diff)
	}
	next, err := kafka.StoreCheckpoints(store).Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if next != big.Position {
		t.Errorf("checkpoint = %d, want %d, at the event too large, as the way past it needs", next, big.Position)
	}
}
