package kafka_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerForgetsLostPartitions makes the group drop a consumer whose
// heartbeats do not reach Kafka (a long GC pause, a network partition),
// while its Sync-mode handler holds the third of the partition's records:
// the other member of the group takes the partition over, reads it to its
// end, five records, and commits them. Told of the loss, the consumer
// rejoins; its stop must not commit the three records it published before
// (their offsets noted, never committed) over the other member's commit,
// which would move the group back and have the next owner handle records
// 3 and 4 again.
func TestConsumerForgetsLostPartitions(t *testing.T) {
	c, ctx := oneBroker(t, kfake.SeedTopics(1, "orders"), kfake.GroupMinSessionTimeout(10*time.Millisecond))
	brokers := c.ListenAddrs()
	reg := registry(t)
	group := []kgo.Opt{kgo.SessionTimeout(300 * time.Millisecond), kgo.RebalanceTimeout(300 * time.Millisecond), kgo.HeartbeatInterval(30 * time.Millisecond)}

	// The first heartbeat is the consumer's: beat is closed then. While
	// held, Kafka does not see them, and the consumer sees them
	// succeed; once the group has dropped it, the next is answered as
	// Kafka answers a member it dropped.
	const (
		pass = iota
		hold
		drop
	)
	var member atomic.Value
	var state atomic.Int32
	beat := make(chan struct{})
	c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		hb := req.(*kmsg.HeartbeatRequest)
		if member.CompareAndSwap(nil, hb.MemberID) {
			close(beat)
		}
		if member.Load() != hb.MemberID {
			return nil, nil, false
		}
		resp := hb.ResponseKind().(*kmsg.HeartbeatResponse)
		switch state.Load() {
		case hold:
			return resp, nil, true
		case drop:
			state.Store(pass)
			resp.ErrorCode = kerr.UnknownMemberID.Code
			return resp, nil, true
		}
		return nil, nil, false
	})

	write := orderWriter(t, ctx, brokers, reg)
	for seq := range 3 {
		write(0, Order{Key: "k", Seq: seq})
	}

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	held, release := holdHandling(t, orders, func(o Order) bool { return o.Seq == 2 })
	// The loss waits for the poll that the handler holds; the consumer is
	// assigned partitions twice: as it joins, and as it joins again.
	blocked, assigned := make(chan struct{}, 1), make(chan struct{}, 2)
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
		Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: 10 * time.Second,
		Client: append(group,
			kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) {
				select {
				case blocked <- struct{}{}:
				default:
				}
			}),
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				select {
				case assigned <- struct{}{}:
				default:
				}
			})),
	})
	await(t, ctx, held, "the third record handed to the handler")
	await(t, ctx, assigned, "the consumer assigned the partition")
	await(t, ctx, beat, "the consumer's first heartbeat")

	// The group drops the consumer at its session timeout, and gives the
	// partition to the other member, which reads it to its end.
	state.Store(hold)
	cl, _ := otherMember(t, brokers, group...)
	for seq := 3; seq < 5; seq++ {
		write(0, Order{Key: "k", Seq: seq})
	}
	var last int64 = -1
	for last < 4 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the other member did not read the partition to its end: %v", ctx.Err())
		}
		fetches.EachRecord(func(r *kgo.Record) { last = r.Offset })
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	// Told of the loss, the consumer forgets the partition once the
	// handler lets its poll end, and joins again.
	state.Store(drop)
	await(t, ctx, blocked, "the loss reported, waiting for the poll")
	close(release)
	await(t, ctx, assigned, "the consumer joining the group again")
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}

	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := committed.Lookup("orders", 0); o.At != 5 {
		t.Errorf("group committed orders/0 at %d, want 5, the other member's commit", o.At)
	}
}
