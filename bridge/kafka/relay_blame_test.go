package kafka_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayBrokerRefusesBatchNamesLarge relays a small event of stream a,
// one of stream b larger than the topic's max.message.bytes (below the
// producer's own limit), and a small one of stream c, all in one batch:
// the broker refuses the whole batch, and franz-go fails each of its
// records as too large. Run must name b, the event too large, not a, the
// first of the batch, and write a, so that the checkpoint is at b, as the
// way past b (a checkpoint saved after it) needs: naming a, it sent a
// user who followed that way to skip a small event, which was lost.
func TestRelayBrokerRefusesBatchNamesLarge(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, map[string]string{"max.message.bytes": "1000"})
	brokers := c.ListenAddrs()
	a := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	b := appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 3000)})
	last := appendOrder(t, ctx, store, reg, "c", Order{Key: "c"})

	// The producer learns where "orders" is only once the relay has read
	// the last event, so that franz-go holds the three records, and
	// sends them in one batch.
	read := make(chan struct{})
	var readOnce sync.Once
	holdMetadata(ctx, c, "orders", read)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, Linger: -1, Compression: noCompression})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: func(e eventbus.RecordedEvent) string {
		if e.ID == last.ID {
			defer readOnce.Do(func() { close(read) })
		}
		return e.Stream
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	checkProduceError(t, err, b, kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(a), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after the broker refused the batch (-want +got):\n%s", diff)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != b.Position {
		t.Errorf("checkpoint = %d, %v; want %d, the large event's position", next, err, b.Position)
	}
}

// TestRelayBrokerRefusesBatchLateAnswer relays a small event of stream a
// and one of stream b too large for the topic in one batch, which the
// broker refuses, and holds franz-go's report of b back until the relay has
// stopped: a stopped relay waits for the records in flight
// CheckpointInterval at most, so that it heard only of a failing as too
// large. It took the one record for the large one, as it never produced
// it alone, and stopped with the checkpoint at a and an error naming a,
// the way past a record too large (a checkpoint saved after it) open for
// a small event, which a user following it lost. Now a is produced alone
// too, written, and the checkpoint moves past it, to b.
func TestRelayBrokerRefusesBatchLateAnswer(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, map[string]string{"max.message.bytes": "1000"})
	brokers := c.ListenAddrs()
	a := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	b := appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 3000)})

	// The producer learns where "orders" is only once it holds b, so that
	// it sends both records in one batch (its linger keeps it from
	// sending a before b is in the batch).
	bGiven := make(chan struct{})
	holdMetadata(ctx, c, "orders", bGiven)
	// When the broker refuses the batch, franz-go reports b, after a, once
	// a is given to it again or Run has returned.
	ran, aAgain, aRefused := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var aGiven atomic.Int32
	var aRefusedOnce sync.Once
	hooks := produceHooks{
		buffered: func(id string) {
			switch {
			case id == b.ID.String():
				close(bGiven)
			case id == a.ID.String() && aGiven.Add(1) == 2:
				close(aAgain)
			}
		},
		unbuffered: func(id string, err error) {
			switch {
			case id == a.ID.String() && errors.Is(err, kerr.MessageTooLarge):
				aRefusedOnce.Do(func() { close(aRefused) })
			case id == b.ID.String():
				select {
				case <-aRefused:
				default:
					return // a went alone after all: nothing to hold
				}
				select {
				case <-aAgain:
				case <-ran:
				}
			}
		},
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: brokers, Linger: 50 * time.Millisecond, Compression: noCompression,
		Client: []kgo.Opt{kgo.WithHooks(hooks)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", CheckpointInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	close(ran)
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("Run() = %v, want an error wrapping %v", err, kerr.MessageTooLarge)
	}
	if diff := cmp.Diff(idsOf(a), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after the broker refused the batch (-want +got):\n%s", diff)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != b.Position {
		t.Errorf("checkpoint = %d, %v; want %d, the large event's position", next, err, b.Position)
	}
}

// TestRelayBrokerRefusesBatchStopped relays a small event of stream a and
// one of stream b too large for the topic in one batch, which the broker
// refuses, and stops the relay as it produces a again, alone, to tell the
// two apart. Run returned the first failure, a's, as if a were the one
// too large, with the checkpoint at a: the way past a record too large (a
// checkpoint saved after it) then skipped a small event, which a user
// following it lost. Stopped before it has told them apart, Run now
// returns its context's error, as for any stop, and names no event; the
// next Run finds b again.
func TestRelayBrokerRefusesBatchStopped(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, map[string]string{"max.message.bytes": "1000"})
	brokers := c.ListenAddrs()
	a := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	b := appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 3000)})

	// The producer learns where "orders" is only once it holds b, so that
	// it sends both records in one batch (its linger keeps it from
	// sending a before b is in the batch).
	bGiven := make(chan struct{})
	holdMetadata(ctx, c, "orders", bGiven)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var aGiven atomic.Int32
	var bOnce sync.Once
	hooks := produceHooks{
		buffered: func(id string) {
			switch {
			case id == b.ID.String():
				bOnce.Do(func() { close(bGiven) })
			case id == a.ID.String() && aGiven.Add(1) == 2:
				stop() // a goes alone: the relay is telling a and b apart
			}
		},
		unbuffered: func(string, error) {},
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: brokers, Linger: 50 * time.Millisecond, Compression: noCompression,
		Client: []kgo.Opt{kgo.WithHooks(hooks)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(runCtx)
	if aGiven.Load() < 2 {
		t.Fatalf("Run() = %v before a went alone", err)
	}
	var pe *kafka.ProduceError
	if errors.As(err, &pe) || !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want %v naming no event", err, context.Canceled)
	}
	next, err := kafka.StoreCheckpoints(store).Load(ctx, "r")
	if err != nil || next != a.Position && next != b.Position {
		t.Errorf("checkpoint = %d, %v; want %d or %d", next, err, a.Position, b.Position)
	}

	err = relay.Run(ctx)
	checkProduceError(t, err, b, kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(a), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after the next Run (-want +got):\n%s", diff)
	}
}
