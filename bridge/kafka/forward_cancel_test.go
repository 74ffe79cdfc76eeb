package kafka_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// eachBuffered is a producer hook that tells when franz-go buffers each
// record.
type eachBuffered chan struct{}

func (b eachBuffered) OnProduceRecordBuffered(*kgo.Record) { b <- struct{}{} }

// ordersCluster returns a fake Kafka of one broker with the topic
// "orders", of one partition, as oneBroker does.
func ordersCluster(t *testing.T) (*kfake.Cluster, context.Context) {
	t.Helper()
	return oneBroker(t, kfake.SeedTopics(1, "orders"))
}

// await waits for ch, and fails the test, naming what it waited for, if
// ctx ends first.
func await(t *testing.T, ctx context.Context, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// forwardBuffered makes a bus that forwards its topic to the Kafka topic
// orders through p, publishes an event of key there, and waits until
// franz-go has buffered its record (buffered) and asked for the topic's
// metadata (asked, from holdMetadata). It returns the bus.
func forwardBuffered(t *testing.T, ctx context.Context, p *kafka.Producer, key string, buffered, asked <-chan struct{}) *eventbus.Bus {
	t.Helper()
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
		t.Fatal(err)
	}
	if err := orders.Publish(ctx, Order{Key: key}); err != nil {
		t.Fatal(err)
	}
	await(t, ctx, buffered, "the bus's record buffered")
	await(t, ctx, asked, "the metadata request")
	return bus
}

// TestForwardOtherHandlerCancelled forwards two buses, as two parts of a
// process, to one Kafka topic through one Producer: an event of bus a,
// then one of bus b, wait for the topic's metadata, and bus a is closed
// meanwhile, cancelling its handler's context. franz-go fails every
// record buffered for the topic (or, once it knows the topic, for the
// partition) when the first one's context is done, so b's record failed
// with a's "context canceled", and b, whose handler nothing cancelled,
// dead-lettered its event. Now b's event is written.
func TestForwardOtherHandlerCancelled(t *testing.T) {
	c, ctx := ordersCluster(t)
	release := make(chan struct{})
	asked := holdMetadata(ctx, c, "orders", release)
	reg := registry(t)
	hook := make(eachBuffered, 2)
	p := newProducer(t, reg, c.ListenAddrs(), kgo.WithHooks(hook))

	buses := make([]*eventbus.Bus, 2)
	for i := range buses {
		buses[i] = forwardBuffered(t, ctx, p, string(rune('a'+i)), hook, asked)
	}
	if err := buses[0].Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := buses[1].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for dl := range buses[1].DeadLetters().All(eventbus.DeadLetterFilter{}) {
		t.Errorf("bus b dead-lettered %v with %v, want it written", dl.Payload(), dl.Err)
	}
	if n := countRecords(t, ctx, c.ListenAddrs(), "orders"); n != 1 {
		t.Errorf("Kafka holds %d records, want b's", n)
	}
}
