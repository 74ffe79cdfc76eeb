package kafka_test

import (
	"context"
	"errors"
	"iter"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// endingStore is a Store whose Subscribe ends without an error after the
// events committed when it began, as a wrapper that breaks the Store
// contract may.
type endingStore struct{ eventbus.Store }

func (s endingStore) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	var from uint64
	if opts != nil {
		from = opts.From
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{From: from}) {
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
}

// TestRelayStoreSubscriptionEnds runs a relay over a store whose Subscribe
// ends without an error, which the Store contract forbids: the relay reads
// nothing more, and Run must say so with an error wrapping
// eventbus.ErrInvalid, as a durable subscription does, not return
// context.Canceled, which a caller takes for the stop it asked for and
// does not run the relay again, leaving the later events out of Kafka.
func TestRelayStoreSubscriptionEnds(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	appendOrder(t, ctx, store, reg, "order-1", Order{Key: "order-1"})
	relay, err := kafka.NewRelay(endingStore{store}, newProducer(t, reg, brokers), &kafka.RelayOptions{Name: "orders", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	if !errors.Is(err, eventbus.ErrInvalid) || errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want an error wrapping %v, not %v", err, eventbus.ErrInvalid, context.Canceled)
	}
	if ctx.Err() != nil {
		t.Fatalf("Run returned at the test's end: %v", ctx.Err())
	}
}
