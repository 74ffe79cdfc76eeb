package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerCommitsNothingAbandoned closes the bus while Run runs, its
// handler busy with the first of three records and the others queued or
// not yet published: the bus dead-letters what it abandons, in memory, and
// Run's final commit must not pass those records, or they would be lost
// at exit.
func TestConsumerCommitsNothingAbandoned(t *testing.T) { commitsNothingAtClose(t, 3, true) }

// TestConsumerCommitsNothingCutShort closes the bus while its handler is
// busy with the one record read, nothing queued: Close cancels the handler,
// which fails, and its event is dead-lettered, in memory, though no event
// was undelivered (Close returns nil). Run's final commit must not pass
// that record either.
func TestConsumerCommitsNothingCutShort(t *testing.T) { commitsNothingAtClose(t, 1, false) }

// commitsNothingAtClose closes the bus while Run runs, its handler busy
// with the first of records records, wants Close to return an
// *UndeliveredError if undelivered, and the group to commit nothing.
func commitsNothingAtClose(t *testing.T, records int, undelivered bool) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, records)

	bus := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic(t, bus)
	started := make(chan struct{}, records)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		started <- struct{}{}
		<-hctx.Done() // only the bus's Close ends it
		return hctx.Err()
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: time.Minute})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the first record was not handed to the handler")
	}
	// Run publishes the other records after the first, from its own
	// goroutine: a Close before they are queued would abandon none of
	// them, and return nil. No event tells of a queueing, so poll for it.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for queued(bus, "shipping") < uint64(records) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%d of %d records queued for the handler", queued(bus, "shipping"), records)
		}
	}
	var ue *eventbus.UndeliveredError
	if err := bus.Close(); errors.As(err, &ue) != undelivered {
		t.Fatalf("bus.Close() = %v, want an *UndeliveredError: %v", err, undelivered)
	}
	wantNothingCommitted(t, ctx, brokers, stop)
}

// queued returns how many events were queued for bus's subscription sub.
func queued(bus *eventbus.Bus, sub string) uint64 {
	for _, m := range bus.Metrics().Subscriptions {
		if m.Subscription == sub {
			return m.Queued
		}
	}
	return 0
}

// TestConsumerCommitsNothingRefused shuts the bus down gracefully while
// Run runs, its handler busy with a record: the handler's follow-up
// publish, once the bus has begun to stop, is refused with ErrClosed, and
// its event is dead-lettered, in memory, unhandled. Run's final commit must
// not pass that record, or the follow-up would be lost at exit: Run
// returns an error wrapping eventbus.ErrClosed and the group has committed
// nothing, so the next consumer gets the record again.
func TestConsumerCommitsNothingRefused(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic(t, bus)
	follow, err := eventbus.NewTopic[Order](bus, "follow", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The handler publishes a follow-up at each tick until the stopping
	// bus refuses one, and returns that error.
	tick, published := make(chan struct{}), make(chan error)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, e eventbus.Event[Order]) error {
		for range tick {
			err := follow.Publish(hctx, e.Payload)
			published <- err
			if err != nil {
				return err
			}
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: time.Minute})
	tick <- struct{}{} // the handler has the record
	if err := <-published; err != nil {
		t.Fatalf("follow-up Publish before the stop = %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- bus.Shutdown(context.Background()) }()
	for {
		tick <- struct{}{}
		if err := <-published; err != nil {
			if !errors.Is(err, eventbus.ErrClosed) {
				t.Fatalf("follow-up Publish = %v, want eventbus.ErrClosed", err)
			}
			break
		}
	}
	close(tick)
	if err := <-stopped; err != nil {
		t.Fatalf("bus.Shutdown() = %v", err)
	}
	wantNothingCommitted(t, ctx, brokers, stop)
}

// wantNothingCommitted stops the consumer, wants Run's error to wrap
// eventbus.ErrClosed, and the group "g" to have committed no record of
// orders.
func wantNothingCommitted(t *testing.T, ctx context.Context, brokers []string, stop func() error) {
	t.Helper()
	if err := stop(); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Run() = %v, want an error wrapping eventbus.ErrClosed", err)
	}
	if got := committedSum(t, ctx, brokers, "g", "orders"); got != 0 {
		t.Errorf("group committed %d records of orders, none of them handled, want 0", got)
	}
}
