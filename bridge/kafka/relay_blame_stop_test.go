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

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

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
