package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// produced is a producer hook that tells when franz-go buffers each record,
// and when one is written.
type produced struct {
	buffered chan struct{}
	written  chan struct{}
}

func (h produced) OnProduceRecordBuffered(*kgo.Record) { h.buffered <- struct{}{} }

func (h produced) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if err == nil {
		h.written <- struct{}{}
	}
}

// TestRelayOtherHandlerCancelled relays an event through a Producer that a
// bus's Forward shares, to the same Kafka topic: the Forward's record is
// buffered first, while the topic's metadata waits, then the relay's, and
// the bus is closed meanwhile, cancelling its handler's context. franz-go
// fails every record buffered for the topic when the first one's context
// is done, so the relay stopped with a *ProduceError wrapping that
// "context canceled", which a caller telling a stop from a failure with
// errors.Is(err, context.Canceled), as Run's doc says, took for a stop.
// Now the relay produces its record again and runs on.
func TestRelayOtherHandlerCancelled(t *testing.T) {
	c, ctx := ordersCluster(t)
	release := make(chan struct{})
	asked := holdMetadata(ctx, c, "orders", release)
	reg := registry(t)
	hook := produced{buffered: make(chan struct{}, 2), written: make(chan struct{}, 2)}
	p := newProducer(t, reg, c.ListenAddrs(), kgo.WithHooks(hook))

	bus := forwardBuffered(t, ctx, p, "bus", hook.buffered, asked)

	store := newStore(t)
	e := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	await(t, ctx, hook.buffered, "the relay's record buffered")

	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case <-hook.written:
	case err := <-runErr:
		t.Fatalf("Run() = %v while its context was not done, want it to write event %s and run on", err, e.ID)
	case <-ctx.Done():
		t.Fatal("the relay's record was not written")
	}
	stop()
	err = <-runErr
	var pe *kafka.ProduceError
	if !errors.Is(err, context.Canceled) || errors.As(err, &pe) {
		t.Errorf("Run() = %v, want the stop's context.Canceled", err)
	}
	if got := eventIDs(t, ctx, c.ListenAddrs(), "orders"); len(got) != 1 || got[0] != e.ID.String() {
		t.Errorf("Kafka holds events %v, want the relay's %s", got, e.ID)
	}
}
