package kafka_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// commits returns a channel that receives, for each offset commit that c
// is asked for, the offsets it holds by partition, of a cluster of one
// topic. It has room for n; commits past them are not told.
func commits(c *kfake.Cluster, n int) <-chan map[int32]int64 {
	ch := make(chan map[int32]int64, n)
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		got := make(map[int32]int64)
		for _, t := range req.(*kmsg.OffsetCommitRequest).Topics {
			for _, p := range t.Partitions { // t may name its topic by ID alone
				got[p.Partition] = p.Offset
			}
		}
		select {
		case ch <- got:
		default:
		}
		return nil, nil, false
	})
	return ch
}

// TestCommitOnlyWhatMoved has a consumer, committing every 10ms, handle
// a record of partition 0 and commit it, then a record of partition 1:
// the next commit holds partition 1 alone. The Consumer commits the
// offsets not committed yet; one that committed every partition it had
// published each time passed every test, while a consumer that had
// nothing new committed everything again (and waited for Bus.Flush) at
// every CommitInterval, for as long as it ran idle.
func TestCommitOnlyWhatMoved(t *testing.T) {
	c, ctx := oneBroker(t, kfake.SeedTopics(2, "orders"))
	brokers := c.ListenAddrs()
	reg := registry(t)
	committed := commits(c, 100)
	write := orderWriter(t, ctx, brokers, reg)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: 10 * time.Millisecond})
	next := func(what string) map[int32]int64 {
		t.Helper()
		select {
		case m := <-committed:
			return m
		case <-ctx.Done():
			t.Fatalf("no commit %s: %v", what, ctx.Err())
			return nil
		}
	}

	write(0, Order{Key: "a"})
	for m := next("of partition 0"); m[0] != 1; m = next("of partition 0") {
	}
	write(1, Order{Key: "b"})
	m := next("after the commit of partition 0")
	if len(m) != 1 || m[1] != 1 {
		t.Errorf("commit after the one of partition 0 holds %v, want partition 1 alone, at 1", m)
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}
