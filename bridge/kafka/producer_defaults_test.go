package kafka_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestProducerCompression forwards a compressible event through Producers
// of each Compression, one after the other, each to a Kafka topic of its
// own, and reads the codec of the batch off the produce request (which
// names its topic by ID): snappy by default, as
// ProducerOptions' doc says, else the first codec given; each request asks
// for acks from all in-sync replicas.
func TestProducerCompression(t *testing.T) {
	tests := map[string]struct {
		codecs []kgo.CompressionCodec
		want   int16 // the codec bits of the batch's attributes
	}{
		"default": {nil, 2},
		"lz4":     {[]kgo.CompressionCodec{kgo.Lz4Compression(), kgo.SnappyCompression()}, 3},
		"none":    {noCompression, 0},
	}
	c, ctx := oneBroker(t, kfake.SeedTopics(1, "default", "lz4", "none"))
	reg := registry(t)
	var mu sync.Mutex
	var codecs []int16 // of each batch produced
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.ProduceRequest)
		if r.Acks != -1 {
			t.Errorf("produce request with acks %d, want -1 (all in-sync replicas)", r.Acks)
		}
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(rp.Records); err != nil {
					t.Errorf("batch of partition %d: %v", rp.Partition, err)
					continue
				}
				mu.Lock()
				codecs = append(codecs, b.Attributes&0x07)
				mu.Unlock()
			}
		}
		return nil, nil, false
	})
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mu.Lock()
			before := len(codecs)
			mu.Unlock()
			p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Compression: tc.codecs})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
			orders := newTopic(t, bus)
			if _, err := kafka.Forward(p, orders, name, nil); err != nil {
				t.Fatal(err)
			}
			if err := orders.Publish(ctx, Order{Key: strings.Repeat("a", 1000)}); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := codecs[before:]; len(got) != 1 || got[0] != tc.want {
				t.Errorf("batch codecs %v, want [%d]", got, tc.want)
			}
		})
	}
}
