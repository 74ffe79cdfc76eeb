package kafka_test

import (
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestClosedProducer uses a Producer once closed, as a process does whose
// deferred Close ran first: Forward and NewRelay refuse it, a Relay made
// before refuses to Run, and a Relay running on a store with nothing new
// stops, each with an error wrapping eventbus.ErrClosed. Forward took it,
// and dead-lettered every event published since; a Relay ran on without
// a word for as long as no event came, and NewRelay and Run took it.
func TestClosedProducer(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	bus := newBus(t, nil)
	opts := &kafka.RelayOptions{Name: "orders", Topic: "orders"}

	t.Run("forward and relay after close", func(t *testing.T) {
		p := newProducer(t, reg, brokers)
		made, err := kafka.NewRelay(store, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		if _, err := kafka.Forward(p, newTopic(t, bus), "orders", nil); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Forward() = %v, want an error wrapping %v", err, eventbus.ErrClosed)
		}
		if _, err := kafka.NewRelay(store, p, opts); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("NewRelay() = %v, want an error wrapping %v", err, eventbus.ErrClosed)
		}
		runErr, stop := startRun(ctx, made)
		defer stop()
		select {
		case err := <-runErr:
			if !errors.Is(err, eventbus.ErrClosed) {
				t.Errorf("Run() = %v, want an error wrapping %v", err, eventbus.ErrClosed)
			}
		case <-ctx.Done():
			t.Fatal("Run of a relay whose Producer is closed did not return")
		}
	})

	t.Run("close while a relay runs", func(t *testing.T) {
		p := newProducer(t, reg, brokers)
		store := newStore(t)
		if _, err := store.Append(ctx, "s", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		relay, err := kafka.NewRelay(store, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		runErr, stop := startRun(ctx, relay)
		defer stop()
		readOne(t, ctx, brokers, "orders") // Run runs, with nothing more to do
		p.Close()
		select {
		case err := <-runErr:
			if !errors.Is(err, eventbus.ErrClosed) {
				t.Errorf("Run() = %v, want an error wrapping %v", err, eventbus.ErrClosed)
			}
		case <-ctx.Done():
			t.Fatal("Run went on after its Producer was closed")
		}
	})
}
