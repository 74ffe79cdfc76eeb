package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// eachBuffered is a producer hook that tells when franz-go buffers each
// record.
type eachBuffered chan struct{}

func (b eachBuffered) OnProduceRecordBuffered(*kgo.Record) { b <- struct{}{} }

// ordersCluster returns a fake Kafka of one broker with the topic
// "orders", closed when the test ends, and a context that ends after 30
// seconds or with the test; it checks that the test leaves no goroutine.
func ordersCluster(t *testing.T) (*kfake.Cluster, context.Context) {
	t.Helper()
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel) // before the cluster closes: held requests let go
	return c, ctx
}

// hookedProducer returns a Producer to c with franz-go's hook, closed when
// the test ends.
func hookedProducer(t *testing.T, c *kfake.Cluster, reg *eventbus.Registry, hook kgo.Hook) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Client: []kgo.Opt{kgo.WithHooks(hook)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
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

// holdFirstMetadata is holdMetadata, which also returns a channel closed
// once the held request arrives: the producer asks for topic once it holds
// a record for it, so the first record buffered before then is the first
// for the topic, whose context franz-go watches while it waits.
func holdFirstMetadata(ctx context.Context, c *kfake.Cluster, topic string, release <-chan struct{}) <-chan struct{} {
	asked := make(chan struct{})
	var held bool
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range req.(*kmsg.MetadataRequest).Topics {
			if rt.Topic != nil && *rt.Topic == topic && !held {
				held = true
				close(asked)
				c.SleepControl(func() {
					select {
					case <-release:
					case <-ctx.Done():
					}
				})
			}
		}
		return nil, nil, false
	})
	return asked
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
	asked := holdFirstMetadata(ctx, c, "orders", release)
	reg := registry(t)
	hook := make(eachBuffered, 2)
	p := hookedProducer(t, c, reg, hook)

	buses := make([]*eventbus.Bus, 2)
	for i := range buses {
		buses[i] = newBus(t, nil)
		orders := newTopic(t, buses[i])
		if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
			t.Fatal(err)
		}
		if err := orders.Publish(ctx, Order{Key: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
		await(t, ctx, hook, "the record buffered")
		await(t, ctx, asked, "the metadata request")
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
