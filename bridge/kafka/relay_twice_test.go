package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// heldCheckpoints holds each Load, having said so on loading, until
// release is closed.
type heldCheckpoints struct {
	kafka.Checkpoints
	loading chan struct{}
	release chan struct{}
}

func (c *heldCheckpoints) Load(ctx context.Context, name string) (uint64, error) {
	c.loading <- struct{}{}
	select {
	case <-c.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return c.Checkpoints.Load(ctx, name)
}

// TestRelayRunWhileRunning calls Run of a relay that is running: it
// returns at once an error wrapping eventbus.ErrInvalid, as a second
// Consumer.Run does. It ran a second pass beside the first, which produced
// every event twice and saved the checkpoint from two goroutines, against
// the Checkpoints contract. Once the first Run has returned, Run runs
// again.
func TestRelayRunWhileRunning(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	p := newProducer(t, reg, brokers)
	cps := &heldCheckpoints{Checkpoints: kafka.StoreCheckpoints(store), loading: make(chan struct{}, 3), release: make(chan struct{})}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Checkpoints: cps})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	first := make(chan error, 1)
	go func() { first <- relay.Run(runCtx) }()
	select {
	case <-cps.loading:
	case <-ctx.Done():
		t.Fatal("the first Run did not load its checkpoint")
	}

	second := make(chan error, 2)
	go func() { second <- relay.Run(runCtx) }()
	select {
	case err := <-second:
		if !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Run() while running = %v, want an error wrapping %v", err, eventbus.ErrInvalid)
		}
	case <-cps.loading:
		t.Error("Run() while running loaded the checkpoint, to run beside the first")
	case <-ctx.Done():
		t.Fatal("Run() while running did not return")
	}
	close(cps.release)
	stop()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("first Run() = %v, want %v", err, context.Canceled)
	}
	if t.Failed() {
		<-second // the second Run, stopped too
		return
	}

	// Stopped, the relay runs again: the next Run loads its checkpoint.
	again, stopAgain := context.WithCancel(ctx)
	defer stopAgain()
	go func() { second <- relay.Run(again) }()
	select {
	case <-cps.loading:
	case err := <-second:
		t.Fatalf("Run() after the first returned = %v, want it to run", err)
	}
	stopAgain()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() after the first returned = %v, want %v", err, context.Canceled)
	}
}
