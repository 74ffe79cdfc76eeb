package kafka_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerStopWhileDeadLetterSilent stops a Consumer while Kafka has
// taken the produce request of a bad record's copy to the dead-letter
// topic and does not answer, as a broker that hangs does. franz-go keeps
// a record it has sent until the broker answers, whatever the record's
// context, and Run waited for that answer, so it did not return for as
// long as Kafka was silent (for good here, until the test ended). Now it
// stops waiting once its context is done, commits nothing past the bad
// record, which the next run reads again, and returns nil.
func TestConsumerStopWhileDeadLetterSilent(t *testing.T) {
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", "dead"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var armed atomic.Bool // once the bad record is written: then only copies to the dead-letter topic are produced
	asked := silenceProduce(t, ctx, c, armed.Load)

	// A record with no bridge headers: a bad record.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("not an event")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	runErr, stop := startRun(ctx, ordersConsumer(t, bus, orders, registry(t), &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "dead"}))
	defer stop()
	awaitRunning(t, ctx, runErr, asked, "the record sent to the dead-letter topic")
	stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return while Kafka was silent")
	}
	if n := committedSum(t, ctx, brokers, "g", "orders"); n != 0 {
		t.Errorf("group committed %d records of orders, want none: the bad record was not dead-lettered", n)
	}
}
