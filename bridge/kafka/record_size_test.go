package kafka

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
)

// TestBatchBytesAsFranzGo produces a relay's record through clients whose
// batch limit is its batchBytes, and one byte less: franz-go writes it, and
// refuses it as too large, so the relay's count is franz-go's and its
// check refuses no record that franz-go would write. A client that has
// written a record knows the broker's version, and counts at most 3 bytes
// less: its second produce fits too.
func TestBatchBytesAsFranzGo(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := eventbus.EventData{
		ID: eventbus.NewID(), Type: "order.placed", Data: []byte(strings.Repeat("x", 700)),
		CorrelationID: eventbus.NewID(), Metadata: eventbus.Metadata{"tenant": "t1"},
	}
	for _, key := range []string{"k", ""} {
		r := newRecord("orders", key, &e)
		size := batchBytes(r)
		for _, limit := range []int64{size, size - 1} {
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchMaxBytes(int32(limit)), kgo.ProducerBatchCompression(kgo.NoCompression()))
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				r := newRecord("orders", key, &e)
				r.Timestamp = time.Now() // as Produce would, before the check
				err := cl.ProduceSync(t.Context(), r).FirstErr()
				if fits := size <= limit; fits && err != nil || !fits && !errors.Is(err, kerr.MessageTooLarge) {
					t.Errorf("key %q: batchBytes %d, limit %d: ProduceSync() = %v", key, size, limit, err)
				}
			}
			cl.Close()
		}
	}
}
