package kafka_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestPeriodicCommitAfterRevoke gives one of a consumer's two partitions
// to another member of the group while a periodic commit of both waits for
// the bus (a handler holds it up): the other member reads the partition
// further and commits it, and once the handler returns, the periodic commit
// commits nothing, as the Consumer's doc says, so the next commit holds the
// partition the consumer kept alone. Committed as noted, the offset of the
// partition given up would move the group back over the other member's
// commit, so that its records would be handled again.
func TestPeriodicCommitAfterRevoke(t *testing.T) {
	c, ctx := oneBroker(t, kfake.SeedTopics(2, "orders"))
	brokers := c.ListenAddrs()
	reg := registry(t)

	// The first commit that holds the partition kept (once known) ends
	// the test; none that does may hold the one given up.
	var kept, given atomic.Int32
	kept.Store(-1)
	keptCommitted := make(chan struct{})
	var once sync.Once
	var stale atomic.Bool
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var hasKept, hasGiven bool
		for _, rt := range req.(*kmsg.OffsetCommitRequest).Topics { // one topic
			for _, rp := range rt.Partitions {
				hasKept = hasKept || rp.Partition == kept.Load()
				hasGiven = hasGiven || rp.Partition == given.Load()
			}
		}
		if hasKept {
			if hasGiven {
				stale.Store(true)
			}
			once.Do(func() { close(keptCommitted) })
		}
		return nil, nil, false
	})

	write := orderWriter(t, ctx, brokers, reg)
	write(0, Order{Key: "0"})
	write(1, Order{Key: "1"})

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	started, release := holdHandling(t, orders, nil)
	// A periodic commit starts a millisecond after the first records are
	// published, and waits for the handler; a rebalance gives up waiting
	// after DrainTimeout.
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
		Brokers: brokers, Group: "g", CommitInterval: time.Millisecond, DrainTimeout: 100 * time.Millisecond,
		Client: []kgo.Opt{kgo.HeartbeatInterval(50 * time.Millisecond)},
	})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("no record was handled")
	}

	// The other member, assigned one of the two partitions, reads it to
	// its end and commits.
	other, assigned := otherMember(t, brokers, kgo.HeartbeatInterval(50*time.Millisecond))
	// Polls join the group, and may return records of the partition
	// before the test knows it.
	var p int32 = -1
	last := map[int32]int64{0: -1, 1: -1}
	poll := func(what string) {
		t.Helper()
		fetches := other.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, ctx.Err())
		}
		fetches.EachRecord(func(r *kgo.Record) { last[r.Partition] = r.Offset })
	}
	for p < 0 {
		poll("the other member was assigned no partition")
		select {
		case p = <-assigned:
		default:
		}
	}
	given.Store(p)
	kept.Store(1 - p)
	for seq := 1; seq <= 5; seq++ {
		write(p, Order{Key: fmt.Sprint(p), Seq: seq})
	}
	for last[p] < 5 {
		poll(fmt.Sprintf("the other member did not read partition %d to its end", p))
	}
	if err := other.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	close(release)
	select {
	case <-keptCommitted:
	case <-ctx.Done():
		t.Fatalf("the consumer did not commit partition %d: %v", 1-p, ctx.Err())
	}
	if stale.Load() {
		t.Errorf("the consumer committed partition %d, given up, over the other member's commit", p)
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}
