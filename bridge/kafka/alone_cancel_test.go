package kafka_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestProduceAloneOtherHandlerCancelled produces a record alone, as
// Forward and Relay produce one that the broker refused with its batch,
// behind a record of a bus's Forward through the same Producer, while
// the topic's metadata waits, and the bus is closed meanwhile, cancelling
// its handler's context. franz-go fails every record buffered for the
// topic (or the partition) when the first one's context is done, so the
// record produced alone failed with that "context canceled", though its
// own context was fine: Forward dead-lettered its event, and Relay.Run
// returned a *ProduceError wrapping it, which a caller took for a stop.
// Now it is produced again, and written.
func TestProduceAloneOtherHandlerCancelled(t *testing.T) {
	c, ctx := ordersCluster(t)
	release := make(chan struct{})
	asked := holdMetadata(ctx, c, "orders", release)
	hook := make(eachBuffered, 2)
	p := newProducer(t, registry(t), c.ListenAddrs(), kgo.WithHooks(hook))

	bus := forwardBuffered(t, ctx, p, "bus", hook, asked)

	alone := make(chan error, 1)
	go func() {
		alone <- kafka.ProduceAlone(ctx, p, &kgo.Record{Topic: "orders", Key: []byte("alone"), Value: []byte("v")})
	}()
	await(t, ctx, hook, "the record produced alone buffered")
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case err := <-alone:
		if err != nil {
			t.Errorf("produceAlone() = %v with its context not done, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("produceAlone did not return")
	}
	if n := countRecords(t, ctx, c.ListenAddrs(), "orders"); n != 1 {
		t.Errorf("Kafka holds %d records, want the one produced alone", n)
	}
}
