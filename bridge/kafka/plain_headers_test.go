package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestPlainEventHeaders relays an event stored with nothing but its ID,
// type and payload: not compressed, with no correlation or causation ID
// and no metadata. Its record carries the ID, type and schema version
// alone: the package doc sends "eventbus-encoding" only for a compressed
// payload, and the other headers only for what the event has. A record
// with each header whatever the event, empty or a zero ID, passed every
// test, and each record carried their bytes for nothing.
func TestPlainEventHeaders(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	e := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	relay, err := kafka.NewRelay(store, newProducer(t, reg, c.ListenAddrs()), &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	r := readOne(t, ctx, c.ListenAddrs(), "orders")
	stop()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
	want := []kgo.RecordHeader{
		{Key: "eventbus-id", Value: []byte(e.ID.String())},
		{Key: "eventbus-type", Value: []byte("order.placed")},
		{Key: "eventbus-schema-version", Value: []byte("1")},
	}
	if diff := cmp.Diff(want, r.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}
