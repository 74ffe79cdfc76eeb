package kafka_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerFinalCommitFailedIsLast stops a consumer whose final commit
// the broker refuses: Run returns that error, and the record handled
// since the last commit must then be read again by the next run, as
// Run's doc says. Leaving the group takes its partitions away, and the
// consumer's callback for partitions taken away commits them: run after
// the final commit, it made another, which the broker took, so that Run
// reported a failed commit of a record it had committed.
func TestConsumerFinalCommitFailedIsLast(t *testing.T) {
	checkNoLeaks(t)
	c := cluster(t, "orders")
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	publishOrders(t, ctx, brokers, reg, 1)
	var commits atomic.Int64
	refuseFirstCommit(c, &commits)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	handled := make(chan struct{})
	var once sync.Once
	if _, err := orders.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error {
		once.Do(func() { close(handled) })
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour})
	select {
	case <-handled:
	case <-ctx.Done():
		t.Fatal("the record was not handled")
	}
	if err := stop(); !errors.Is(err, kerr.OffsetMetadataTooLarge) {
		t.Fatalf("Run() = %v, want its final commit's error, %v", err, kerr.OffsetMetadataTooLarge)
	}
	if n := commits.Load(); n != 1 {
		t.Errorf("the consumer sent %d commits, want 1, its final one", n)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders after its final commit failed, want 0", got)
	}
}

// refuseFirstCommit makes c count the offset commits it gets in n, and
// refuse the first one with an error no client retries.
func refuseFirstCommit(c *kfake.Cluster, n *atomic.Int64) {
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if n.Add(1) > 1 {
			return nil, nil, false
		}
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		resp.Version = r.Version
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetMetadataTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}
