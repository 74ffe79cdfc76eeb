package kafka_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerLeaveWhileKafkaSilent stops a Consumer once Kafka has gone
// silent, as a hung broker or a network that drops replies does, with
// franz-go told to wait long for answers. Run waited up to
// DrainTimeout for the bus and the commit, then for franz-go's Close,
// which waits for Kafka's answer to the group leave however long that
// takes (for good here, until the test ended), so that a process could
// not stop within its grace period. Now the leave waits DrainTimeout at
// most too, and Run returns.
func TestConsumerLeaveWhileKafkaSilent(t *testing.T) {
	c, ctx := ordersCluster(t)
	reg := registry(t)
	publishOrders(t, ctx, c.ListenAddrs(), reg, 1)
	var armed atomic.Bool
	asked := silenceAll(t, ctx, c, armed.Load)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 1)
	runErr, stop := startRun(ctx, ordersConsumer(t, bus, orders, reg, &kafka.ConsumerOptions{
		Brokers: c.ListenAddrs(), Group: "g", DrainTimeout: 100 * time.Millisecond,
		Client: []kgo.Opt{kgo.RetryTimeout(time.Hour), kgo.RequestTimeoutOverhead(15 * time.Minute)},
	}))
	defer stop()
	awaitRunning(t, ctx, runErr, log.done, "the record handled")
	armed.Store(true)
	await(t, ctx, asked, "a request held")
	stop()
	select {
	case <-runErr: // the final commit may fail: Kafka is silent
	case <-ctx.Done():
		t.Fatal("Run did not return while Kafka was silent")
	}
}
