package kafka_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRevokeCommits has a consumer handle three records of each of two
// partitions, with no periodic commit due, then starts another member of
// the group: the consumer gives one partition up to it, and commits the
// partition first, as the Consumer's doc says, so that the other member
// starts after the records handled, not from the first one again.
func TestRevokeCommits(t *testing.T) {
	c, ctx := oneBroker(t, kfake.SeedTopics(2, "orders"))
	brokers := c.ListenAddrs()
	reg := registry(t)
	write := orderWriter(t, ctx, brokers, reg)
	for partition := range int32(2) {
		for seq := range 3 {
			write(partition, Order{Key: fmt.Sprint(partition), Seq: seq})
		}
	}

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 6)
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour})
	log.wait(t, ctx)

	// The other member is assigned a partition once the consumer has
	// given it up.
	other, assigned := otherMember(t, brokers)
	var p int32
	select {
	case p = <-assigned:
	case <-ctx.Done():
		t.Fatal("the other member was assigned no partition")
	}
	committed, err := kadm.NewClient(other).FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := committed.Lookup("orders", p); !ok || o.At != 3 {
		t.Errorf("group committed orders/%d at %d (found: %v) when it went to the other member, want 3, past the records handled", p, o.At, ok)
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}
