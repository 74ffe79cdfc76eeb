package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// unreachable is a broker address that refuses every connection.
var unreachable = []string{"127.0.0.1:1"}

// dialFailed returns a franz-go logger option that tells on the channel
// when franz-go fails to dial a broker.
func dialFailed() (kgo.Opt, <-chan struct{}) {
	l := franzLog{"unable to open connection to broker", make(chan struct{}, 1)}
	return kgo.WithLogger(l), l.c
}

// TestConsumerUnreachableBrokers runs a Consumer whose broker refuses
// every connection, as a wrong address does: Run goes on, retrying, with
// nothing logged by ConsumerOptions.Logger, and returns nil when stopped,
// as ConsumerOptions.Logger's doc says; franz-go's own logger, given in
// Client, reports the failed dial.
func TestConsumerUnreachableBrokers(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	bus := newBus(t, nil)
	var logged bytes.Buffer // read once Run, which logs, has returned
	opt, failed := dialFailed()
	cons := ordersConsumer(t, bus, newTopic(t, bus), registry(t), &kafka.ConsumerOptions{
		Brokers: unreachable, Group: "g", Logger: slog.New(slog.NewTextHandler(&logged, nil)), Client: []kgo.Opt{opt},
	})
	runErr, stop := startRun(ctx, cons)
	awaitRunning(t, ctx, runErr, failed, "franz-go's report of the failed dial")
	stop()
	if err := <-runErr; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if logged.Len() != 0 {
		t.Errorf("ConsumerOptions.Logger got %q, want nothing", logged.String())
	}
}

// TestRelayUnreachableBrokers runs a Relay, with an event to relay,
// through a Producer whose broker refuses every connection: Run waits,
// its record retried, and returns its context's error when stopped, not a
// failure of the record, as ProducerOptions.Brokers' doc says.
func TestRelayUnreachableBrokers(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reg, store := registry(t), newStore(t)
	appendOrder(t, ctx, store, reg, "orders:a", Order{Key: "a"})
	opt, failed := dialFailed()
	relay, err := kafka.NewRelay(store, newProducer(t, reg, unreachable, opt), &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	awaitRunning(t, ctx, runErr, failed, "franz-go's report of the failed dial")
	stop()
	var pe *kafka.ProduceError
	if err := <-runErr; !errors.Is(err, context.Canceled) || errors.As(err, &pe) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}
