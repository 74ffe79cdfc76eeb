package kafka_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerKeepsItsOptions changes the Brokers and Client given to
// NewConsumer, as a caller reusing its options for another consumer does,
// before Run: Run consumes with the options the Consumer was made with. It
// kept the caller's slices, read at Run, so that it ran with the other
// consumer's: here a Client option franz-go refuses, so that Run failed.
func TestConsumerKeepsItsOptions(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 1)
	opts := &kafka.ConsumerOptions{Brokers: append([]string(nil), brokers...), Group: "g", Client: []kgo.Opt{kgo.ClientID("shipping")}}
	cons, err := kafka.NewConsumer(bus, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", orders); err != nil {
		t.Fatal(err)
	}
	// For another consumer.
	opts.Brokers[0], opts.Client[0] = "127.0.0.1:1", kgo.RequiredAcks(kgo.LeaderAck())

	ran, stop := startRun(ctx, cons)
	defer stop()
	select {
	case <-log.done:
	case err := <-ran:
		t.Fatalf("Run() = %v, want it to consume", err)
	case <-ctx.Done():
		t.Fatal("the record was not handled")
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// polledHook is a franz-go hook that counts the records the client has
// returned from polls; it runs in the polling goroutine, before the poll
// returns.
type polledHook struct{ n *atomic.Int64 }

func (h polledHook) OnFetchRecordUnbuffered(_ *kgo.Record, polled bool) {
	if polled {
		h.n.Add(1)
	}
}

// TestConsumerMaxPollRecords consumes the records of one partition,
// written before Run starts and so in its first fetch, into a Sync-mode
// bus, with MaxPollRecords 1 and with its zero value, which means 1,000:
// when the handler, which runs in Run's goroutine, gets a record, the
// client has returned no more records than that many after it from
// polls, as MaxPollRecords promises. A Consumer that ignored the option,
// or its default, took every record from its first poll, whose records a
// rebalance waits for.
func TestConsumerMaxPollRecords(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		maxPoll, records, want int
	}{
		{maxPoll: 1, records: 3, want: 1},
		{maxPoll: 0, records: 1001, want: 1000},
	} {
		t.Run(fmt.Sprintf("MaxPollRecords %d", tc.maxPoll), func(t *testing.T) {
			brokers, reg := cluster(t, "orders").ListenAddrs(), registry(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			publishOrders(t, ctx, brokers, reg, tc.records)
			bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
			orders := newTopic(t, bus)
			var polled atomic.Int64
			last := make(chan struct{})
			if _, err := orders.Subscribe("shipping", func(_ context.Context, e eventbus.Event[Order]) error {
				if n, most := polled.Load(), int64(e.Payload.Seq+tc.want); n > most {
					t.Errorf("the client returned %d records from its polls when the handler got record %d, want %d at most", n, e.Payload.Seq, most)
				}
				if e.Payload.Seq == tc.records-1 {
					close(last)
				}
				return nil
			}, nil); err != nil {
				t.Fatal(err)
			}
			stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "g", MaxPollRecords: tc.maxPoll, Client: []kgo.Opt{kgo.WithHooks(polledHook{&polled})},
			})
			select {
			case <-last:
			case <-ended:
				t.Fatalf("Run() = %v before the last record was handled", stop())
			case <-ctx.Done():
				t.Fatal("the last record was not handled")
			}
			if err := stop(); err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
		})
	}
}
