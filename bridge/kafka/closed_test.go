package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
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

// TestForwardClosedProducerNoRetries shuts a bus down after the Producer
// it forwards through was closed, as when Close is deferred after
// Shutdown and so runs first: every record then fails with
// kgo.ErrClientClosed, and would at every retry too, so each forwarded
// event is dead-lettered at its first attempt and Shutdown returns nil,
// as Producer.Close's doc says. The events went through the whole retry
// policy, an hour's wait here, holding up the Shutdown (a Sync-mode
// Publish) until its context ended: Shutdown then returned an
// *UndeliveredError.
func TestForwardClosedProducerNoRetries(t *testing.T) {
	brokers, reg, _ := setup(t, "orders")
	for _, tt := range []struct {
		name string
		mode eventbus.Mode
	}{{"Async", eventbus.Async}, {"Sync", eventbus.Sync}} {
		t.Run(tt.name, func(t *testing.T) {
			// Ends a test that waits for the retries.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			bus := newBus(t, &eventbus.Options{Mode: tt.mode, Retry: eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Hour}})
			orders := newTopic(t, bus)
			p := newProducer(t, reg, brokers)
			if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
				t.Fatal(err)
			}
			p.Close()
			for seq := range 2 {
				err := orders.Publish(ctx, Order{Key: "k", Seq: seq})
				if tt.mode == eventbus.Async && err != nil {
					t.Fatalf("Publish() = %v", err)
				}
				if tt.mode == eventbus.Sync && !errors.Is(err, kgo.ErrClientClosed) {
					t.Fatalf("Publish() = %v, want an error wrapping %v", err, kgo.ErrClientClosed)
				}
			}
			if err := bus.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown() = %v, want nil: the closed Producer's records were retried", err)
			}
			n := 0
			for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				n++
				if dl.Attempt != 1 || !errors.Is(dl.Err, kgo.ErrClientClosed) {
					t.Errorf("dead letter after %d attempts with %v, want 1 attempt failed with %v", dl.Attempt, dl.Err, kgo.ErrClientClosed)
				}
			}
			if n != 2 {
				t.Errorf("the bus holds %d dead letters, want the 2 events forwarded", n)
			}
		})
	}
}

// TestProduceErrorOfClosedProducer checks that the *ProduceError of a
// record that the Producer's Close failed matches eventbus.ErrClosed, as
// Run's other error after a Close does: which of the two Run returns
// depends on whether a record was in flight, so a caller that checked for
// ErrClosed alone took a Close for a failed record.
func TestProduceErrorOfClosedProducer(t *testing.T) {
	var err error = &kafka.ProduceError{Relay: "r", Err: kgo.ErrClientClosed}
	if !errors.Is(err, eventbus.ErrClosed) || !errors.Is(err, kgo.ErrClientClosed) {
		t.Errorf("errors.Is(%v, ErrClosed), errors.Is(_, kgo.ErrClientClosed) = %v, %v, want true, true", err, errors.Is(err, eventbus.ErrClosed), errors.Is(err, kgo.ErrClientClosed))
	}
	err = &kafka.ProduceError{Relay: "r", Err: errors.New("broker down")}
	if errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("errors.Is(%v, ErrClosed) = true, want false", err)
	}
	if errors.Is((*kafka.ProduceError)(nil), eventbus.ErrClosed) {
		t.Error("a nil *ProduceError matches ErrClosed")
	}
}
