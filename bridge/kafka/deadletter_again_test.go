package kafka_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerDeadLetterAgain consumes a bad record that was dead-lettered
// before, copied back to its topic with the dead letter's headers (as a
// user redriving the dead-letter topic does), and still bad: its new dead
// letter holds one eventbus-error, the new one, and the coordinates where
// it was read this time. It held the old ones as well, first, so that a
// reader taking the first header of a name saw the old error and where
// the record had been the first time.
func TestConsumerDeadLetterAgain(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders", "dead")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	bad := &kgo.Record{Topic: "orders", Key: []byte("k"), Value: []byte(`{}`), Headers: []kgo.RecordHeader{
		{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
		{Key: "eventbus-type", Value: []byte("order.unknown")},
		{Key: "eventbus-md-tenant", Value: []byte("t1")},
		{Key: "eventbus-error", Value: []byte("the old error")},
		{Key: kafka.MetadataTopic, Value: []byte("elsewhere")},
		{Key: kafka.MetadataPartition, Value: []byte("99")},
		{Key: kafka.MetadataOffset, Value: []byte("12345")},
	}}
	if err := cl.ProduceSync(ctx, bad).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, nil)
	stop, _ := consume(t, ctx, bus, newTopic(t, bus), reg, &kafka.ConsumerOptions{
		Brokers: brokers, Group: "g", DeadLetterTopic: "dead", CommitInterval: 10 * time.Millisecond,
	})
	dl := readOne(t, ctx, brokers, "dead")
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	got := make(map[string][]string)
	for _, h := range dl.Headers {
		got[h.Key] = append(got[h.Key], string(h.Value))
	}
	if e := got["eventbus-error"]; len(e) != 1 || !strings.Contains(e[0], "order.unknown") {
		t.Errorf("dead letter's eventbus-error %q, want the one error of this read", e)
	}
	delete(got, "eventbus-error")
	want := map[string][]string{
		"eventbus-id":           {string(bad.Headers[0].Value)},
		"eventbus-type":         {"order.unknown"},
		"eventbus-md-tenant":    {"t1"},
		kafka.MetadataTopic:     {"orders"},
		kafka.MetadataPartition: {strconv.Itoa(int(bad.Partition))}, // set by ProduceSync
		kafka.MetadataOffset:    {"0"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead letter's headers (-want +got):\n%s", diff)
	}
}
