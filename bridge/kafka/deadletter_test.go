package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerDeadLetterTooLarge consumes bad records that Kafka took, but
// whose copies for the dead-letter topic, larger with their errors and
// coordinates, are over the client's batch limit (franz-go's 1MB): the
// dead-letter topic receives a copy without the record's key, value and
// headers, which says why and where the record is, and Run goes on to the
// next record, instead of stopping at the bad one at every run. An error
// that quotes a large header (a type the registry does not know) is cut
// short there, so that the copy fits.
func TestConsumerDeadLetterTooLarge(t *testing.T) {
	checkNoLeaks(t)
	id := []byte(eventbus.NewID().String())
	for _, tc := range []struct {
		name   string
		record *kgo.Record
		want   string // in the dead letter's eventbus-error
	}{
		{
			name:   "large value",
			record: &kgo.Record{Value: []byte(strings.Repeat("x", 1_040_000))},
			want:   "has no eventbus-id or eventbus-type header",
		},
		{
			name: "large type",
			record: &kgo.Record{Value: []byte(`{}`), Headers: []kgo.RecordHeader{
				{Key: "eventbus-id", Value: id},
				{Key: "eventbus-type", Value: []byte(strings.Repeat("x", 1_000_000))},
			}},
			want: "unknown event type",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, reg := cluster(t, "orders", "dead").ListenAddrs(), registry(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(1_048_000), kgo.ProducerBatchCompression(kgo.NoCompression()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			tc.record.Topic, tc.record.Key = "orders", []byte("k")
			if err := cl.ProduceSync(ctx, tc.record).FirstErr(); err != nil {
				t.Fatal(err)
			}
			publishOrders(t, ctx, brokers, reg, 1) // lands in the bad one's partition

			bus := newBus(t, nil)
			orders := newTopic(t, bus)
			log := newOrderLog(t, 1)
			if _, err := orders.Subscribe("log", log.handle, nil); err != nil {
				t.Fatal(err)
			}
			stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "g", DeadLetterTopic: "dead", CommitInterval: 10 * time.Millisecond,
			})
			select {
			case <-log.done:
			case <-ended:
				t.Fatalf("Run() = %v before the record after the bad one", stop())
			case <-ctx.Done():
				t.Fatal("the record after the bad one was not handled")
			}
			if err := stop(); err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			checkCommittedAll(t, ctx, brokers, "g", "orders")

			dl := readOne(t, ctx, brokers, "dead")
			headers := make(map[string]string)
			for _, h := range dl.Headers {
				headers[h.Key] = string(h.Value)
			}
			if e := headers["eventbus-error"]; !strings.Contains(e, tc.want) || !strings.Contains(e, "too large") {
				t.Errorf("dead letter's eventbus-error %.200q, want the record's error (%s) and a word on its size", e, tc.want)
			}
			if headers[kafka.MetadataTopic] != "orders" || headers[kafka.MetadataPartition] == "" || headers[kafka.MetadataOffset] != "0" {
				t.Errorf("dead letter's coordinates %.200v, want orders, its partition, offset 0", headers)
			}
			if len(dl.Value) != 0 || len(dl.Key) != 0 {
				t.Errorf("dead letter of %d key and %d value bytes, want none", len(dl.Key), len(dl.Value))
			}
		})
	}
}
