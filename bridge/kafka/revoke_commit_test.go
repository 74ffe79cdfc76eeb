package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRevokeCommits has a consumer handle three records of each of two
// partitions, with no periodic commit due, then starts another member of
// the group: the consumer gives one partition up to it, and commits the
// partition first, as the Consumer's doc says, so that the other member
// starts after the records handled, not from the first one again.
func TestRevokeCommits(t *testing.T) {
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	src, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for partition := range int32(2) {
		for seq := range 3 {
			ed, err := reg.Encode(Order{Key: fmt.Sprint(partition), Seq: seq})
			if err != nil {
				t.Fatal(err)
			}
			r := &kgo.Record{Topic: "orders", Partition: partition, Value: ed.Data, Headers: []kgo.RecordHeader{
				{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
				{Key: "eventbus-type", Value: []byte(ed.Type)},
			}}
			if err := src.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := newOrderLog(t, 6)
	if _, err := orders.Subscribe("shipping", log.handle, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour})
	log.wait(t, ctx)

	// The other member is assigned a partition once the consumer has
	// given it up.
	assigned := make(chan int32, 1)
	other, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			for _, p := range m["orders"] {
				select {
				case assigned <- p:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
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
