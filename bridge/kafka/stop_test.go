package kafka_test

import (
	"context"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerStopsWithinPoll stops Run from inside the Sync-mode handler
// of the first of three records that one poll returns: Run publishes no
// more, so the other two are neither handled with a done context nor
// dead-lettered as failures of the stop, and the next run reads them.
func TestConsumerStopsWithinPoll(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 3) // one key: one partition

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var mu sync.Mutex
	var handled []int
	if _, err := orders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		handled = append(handled, e.Payload.Seq)
		mu.Unlock()
		if e.Payload.Seq == 0 {
			stopRun()
			return nil
		}
		return ctx.Err() // a handler that gives up once its context is done
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", orders); err != nil {
		t.Fatal(err)
	}
	if err := cons.Run(runCtx); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	mu.Lock()
	if len(handled) != 1 {
		t.Errorf("handled %v after Run was stopped in the first, want [0]", handled)
	}
	mu.Unlock()
	if n := bus.DeadLetters().Len(); n != 0 {
		t.Errorf("the bus holds %d dead letters, want 0", n)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 1 {
		t.Errorf("group committed %d records of orders, want 1", got)
	}
}

// committedSum returns the sum of group's committed offsets over the
// partitions of topic: with one partition written, how many of its records
// the group has committed.
func committedSum(t testing.TB, ctx context.Context, brokers []string, group, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}
