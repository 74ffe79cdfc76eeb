package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayStopWhileKafkaSilent stops a relay while Kafka has taken the
// produce request of its record and does not answer, as a broker that
// hangs or a network that drops replies does. franz-go keeps a record it
// has sent until the broker answers, whatever the record's context, and
// Run waited for that answer, so it did not return for as long as Kafka
// was silent (for good here, until the test ended) unless the Producer was
// closed, and the process could not stop. Now it waits CheckpointInterval
// at most, as long as the duplicates of a crash cost, and returns the
// stop's error with its checkpoint before the record, which the next Run
// produces again.
func TestRelayStopWhileKafkaSilent(t *testing.T) {
	c, ctx := ordersCluster(t)
	asked := silenceProduce(t, ctx, c, nil)
	reg := registry(t)
	p := newProducer(t, reg, c.ListenAddrs())
	store := newStore(t)
	appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	cp := kafka.StoreCheckpoints(store)
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Checkpoints: cp})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	await(t, ctx, asked, "the relay's produce request")
	stop()
	select {
	case err := <-runErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want the stop's context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return while Kafka was silent")
	}
	if next, err := cp.Load(ctx, "r"); err != nil || next != 0 {
		t.Errorf("Checkpoints.Load() = %d, %v, want 0: the event was not acknowledged", next, err)
	}
}
