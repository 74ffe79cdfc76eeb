package kafka_test

import (
	"context"
	"math/rand/v2"
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
// next record, instead of stopping at the bad one at every run. A large
// header (a type the registry does not know) is left out with the others,
// and quoted short in the error, so that the copy fits.
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

// Memo's key method panics with its text, which a record from the wire
// may make as long as Kafka takes.
type Memo struct{ Text string }

func (Memo) EventType() string     { return "memo" }
func (m Memo) AggregateID() string { panic("no key in memo " + m.Text) }

// TestConsumerDeadLetterStubCutsError consumes a record whose payload makes
// its key method panic with a message that quotes the payload, 30,000
// random letters, to a dead-letter topic that takes 20,000 bytes at most:
// the copy is too large, and so would be one without the record's key,
// value and headers that held the error whole, which would stop Run at the
// record at every run. The copy holds the error's first kilobyte, as
// ConsumerOptions.DeadLetterTopic says, and Run goes on.
func TestConsumerDeadLetterStubCutsError(t *testing.T) {
	checkNoLeaks(t)
	c := cluster(t, "memos")
	if err := c.CreateTopic("dead", 1, map[string]string{"max.message.bytes": "20000"}); err != nil {
		t.Fatal(err)
	}
	brokers := c.ListenAddrs()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Memo](reg, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Random letters, which no codec compresses to the topic's limit.
	text := make([]byte, 30_000)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range text {
		text[i] = 'a' + byte(rnd.IntN(26))
	}
	ed, err := reg.Encode(Memo{Text: string(text)})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "memos", Value: ed.Data, Headers: []kgo.RecordHeader{
		{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
		{Key: "eventbus-type", Value: []byte("memo")},
	}}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	bus := newBus(t, nil)
	memos, err := eventbus.NewTopic[Memo](bus, "memos", nil)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "dead"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "memos", memos); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, cons)
	defer stop()
	dl := readOne(t, ctx, brokers, "dead")
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	for _, h := range dl.Headers {
		if h.Key == "eventbus-error" {
			if e := string(h.Value); !strings.Contains(e, "panic: no key in memo "+string(text[:100])) || !strings.Contains(e, "too large") || len(e) > 2000 {
				t.Errorf("dead letter's eventbus-error of %d bytes, %.100q...; want the panic's first kilobyte and a word on the size", len(e), e)
			}
			return
		}
	}
	t.Error("the dead letter has no eventbus-error header")
}
