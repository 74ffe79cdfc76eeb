package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"
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
	relay, cp, _ := oneEventRelay(t, ctx, c, 0)
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

// TestRelayStopSavesAnswered stops a relay, whose CheckpointInterval is an
// hour, while Kafka has taken the produce request of its record and not
// yet answered, and lets Kafka answer after the stop: Run waits for the
// record in flight and saves the checkpoint past it before it returns, as
// Run's doc and RelayOptions.CheckpointInterval's say, so that the next
// Run does not produce it again. A Run that saved only every
// CheckpointInterval, or did not wait for the record, left the checkpoint
// at 0.
func TestRelayStopSavesAnswered(t *testing.T) {
	c, ctx := ordersCluster(t)
	held, answer := context.WithCancel(ctx)
	defer answer()
	asked := silenceProduce(t, held, c, nil) // until answer
	relay, cp, e := oneEventRelay(t, ctx, c, time.Hour)
	runErr, stop := startRun(ctx, relay)
	defer stop()
	await(t, ctx, asked, "the relay's produce request")
	stop()
	answer()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want the stop's context.Canceled", err)
	}
	if next, err := cp.Load(ctx, "r"); err != nil || next != e.Position+1 {
		t.Errorf("Checkpoints.Load() = %d, %v, want %d: the event was acknowledged", next, err, e.Position+1)
	}
}
