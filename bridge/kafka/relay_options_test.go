package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayKeepsItsOptions changes the filter's types in the options given
// to NewRelay, as a caller reusing them for another relay does, before the
// relay runs: it relays the type it was made with. It kept the caller's
// slice, so that it relayed the other type, and the store's goroutine read
// the types while the caller could write them, a data race.
func TestRelayKeepsItsOptions(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	for _, typ := range []string{"order.placed", "order.cancelled"} {
		if _, err := store.Append(ctx, "s", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: typ, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	p := newProducer(t, reg, brokers)
	opts := &kafka.RelayOptions{Name: "placed", Topic: "orders", Filter: eventbus.Filter{Types: []string{"order.placed"}}}
	relay, err := kafka.NewRelay(store, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Name, opts.Filter.Types[0] = "cancelled", "order.cancelled" // for another relay

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(runCtx) }()
	r := readOne(t, ctx, brokers, "orders") // both are of one stream: the first relayed
	stop()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want %v", err, context.Canceled)
	}
	for _, h := range r.Headers {
		if h.Key == "eventbus-type" && string(h.Value) != "order.placed" {
			t.Errorf("relayed a record of type %s, want order.placed", h.Value)
		}
	}
}
