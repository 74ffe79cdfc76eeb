package kafka_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// buffered is a franz-go hook that closes all once n records were given to
// the client.
type buffered struct {
	n     int64
	count atomic.Int64
	all   chan struct{}
}

func (b *buffered) OnProduceRecordBuffered(*kgo.Record) {
	if b.count.Add(1) == b.n {
		close(b.all)
	}
}

// TestForwardBrokerRefusesOneOfBatch forwards, in one batch, a small event
// of key a, one of key b larger than the topic's max.message.bytes (below
// the producer's own limit), and a small one of key c, with no retries.
// The broker refuses the whole batch, and franz-go fails each of its
// records as too large, but only b is too large: a and c are written, and
// b alone is dead-lettered, with MessageTooLarge. All three were
// dead-lettered, each blamed for b's size.
func TestForwardBrokerRefusesOneOfBatch(t *testing.T) {
	brokers, reg, ctx, hook := oneBatchCluster(t, 3)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	forward(t, reg, orders, "orders", &kafka.ProducerOptions{
		Brokers: brokers, Linger: 50 * time.Millisecond, Compression: noCompression,
		Client: []kgo.Opt{kgo.WithHooks(hook)},
	}, &eventbus.SubscriptionOptions{Workers: 1, BatchSize: 3, BatchWait: time.Minute})
	want := []Order{{Key: "a"}, {Key: strings.Repeat("b", 3000)}, {Key: "c"}}
	for _, o := range want {
		if err := orders.Publish(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	dead := tooLargeAfterShutdown(t, ctx, bus)
	if diff := cmp.Diff(want[1:2], dead); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	if n := countRecords(t, ctx, brokers, "orders"); n != 2 {
		t.Errorf("Kafka holds %d records, want a's and c's", n)
	}
}

// TestForwardBrokerRefusesBatchOfTwoHandlers forwards two bus topics to
// one Kafka topic through one Producer, a small event on one and one
// larger than the topic's max.message.bytes on the other, which franz-go
// sends in one batch: the broker refuses it whole, and each handler sees
// one record fail as too large. The small one is written, and the large
// one alone is dead-lettered. A handler with a single failure took it for
// the large record's own, and dead-lettered the small one, blamed for the
// other's size.
func TestForwardBrokerRefusesBatchOfTwoHandlers(t *testing.T) {
	brokers, reg, ctx, hook := oneBatchCluster(t, 2)

	bus := newBus(t, nil)
	small := newTopic(t, bus)
	large, err := eventbus.NewTopic[Order](bus, "large-orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: brokers, Linger: 50 * time.Millisecond, Compression: noCompression,
		Client: []kgo.Opt{kgo.WithHooks(hook)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for _, topic := range []*eventbus.Topic[Order]{small, large} {
		if _, err := kafka.Forward(p, topic, "orders", nil); err != nil {
			t.Fatal(err)
		}
	}
	big := Order{Key: strings.Repeat("b", 3000)}
	if err := small.Publish(ctx, Order{Key: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := large.Publish(ctx, big); err != nil {
		t.Fatal(err)
	}
	dead := tooLargeAfterShutdown(t, ctx, bus)
	if diff := cmp.Diff([]Order{big}, dead); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	if n := countRecords(t, ctx, brokers, "orders"); n != 1 {
		t.Errorf("Kafka holds %d records, want a's", n)
	}
}

// oneBatchCluster starts a fake cluster whose topic "orders" takes records
// of up to 1,000 bytes, and returns its brokers, a registry, a context for
// the test, and a hook for the producer: the producer learns where
// "orders" is only once it holds n records, so that it sends them in one
// batch.
func oneBatchCluster(t *testing.T, n int64) ([]string, *eventbus.Registry, context.Context, *buffered) {
	t.Helper()
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.BrokerConfigs(map[string]string{"message.max.bytes": "1000"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	hook := &buffered{n: n, all: make(chan struct{})}
	holdMetadata(ctx, c, "orders", hook.all)
	return c.ListenAddrs(), registry(t), ctx, hook
}

// tooLargeAfterShutdown shuts bus down and returns the payloads of its dead
// letters, each of which must have failed with MessageTooLarge.
func tooLargeAfterShutdown(t *testing.T, ctx context.Context, bus *eventbus.Bus) []Order {
	t.Helper()
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var dead []Order
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		if !errors.Is(dl.Err, kerr.MessageTooLarge) {
			t.Errorf("dead letter with %v, want MessageTooLarge", dl.Err)
		}
		dead = append(dead, dl.Payload().(Order))
	}
	return dead
}
