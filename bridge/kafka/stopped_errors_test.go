package kafka_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerBusStoppedErrorNamesConsumer shuts the consuming bus down
// under a running Consumer, then writes a record: Run returns an error
// wrapping eventbus.ErrClosed, as documented, but it should say which
// consumer stopped, and at which record, as Run's other errors do ("kafka:
// record orders/0@1: ...", "kafka: consumer group \"g\": ..."): a process
// that runs several consumers (and relays) gets the bare "eventbus: closed".
func TestConsumerBusStoppedErrorNamesConsumer(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	write := orderWriter(t, ctx, brokers, reg)
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 1)
	cons := ordersConsumer(t, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	runErr, stop := startRun(ctx, cons)
	defer stop()
	write(0, Order{Key: "k"})
	log.wait(t, ctx)
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	write(0, Order{Key: "k", Seq: 1})
	err := runReturned(t, ctx, runErr)
	if !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("Run() = %v, want an error wrapping ErrClosed", err)
	}
	if !strings.Contains(err.Error(), "kafka") || !strings.Contains(err.Error(), `"g"`) && !strings.Contains(err.Error(), "orders/0@1") {
		t.Errorf("Run() = %q: names neither the consumer's group nor the record", err)
	}
}

// TestRelayStoreClosedErrorNamesRelay closes the store under a running
// relay that has relayed its event and saved its checkpoint: Run returns the store's bare
// "eventbus: closed", not naming the relay, where its other failures of
// the store do ("kafka: relay \"r\": loading checkpoint: ...").
func TestRelayStoreClosedErrorNamesRelay(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	e := appendOrder(t, ctx, store, reg, "s", Order{Key: "s"})
	p := newProducer(t, reg, brokers)
	saved := make(chan struct{})
	cp := &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: e.Position + 1, do: func() { close(saved) }}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Checkpoints: cp, CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	awaitRunning(t, ctx, runErr, saved, "the checkpoint saved past the event")
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	err = runReturned(t, ctx, runErr)
	if !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("Run() = %v, want an error wrapping ErrClosed", err)
	}
	t.Logf("Run() = %q", err)
	if !strings.Contains(err.Error(), `relay "r"`) {
		t.Errorf("Run() = %q: does not name the relay", err)
	}
}
