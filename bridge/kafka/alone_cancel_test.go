package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
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
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	asked := holdFirstMetadata(ctx, c, "orders", release)
	hook := make(eachBuffered, 2)
	p, err := kafka.NewProducer(registry(t), &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Client: []kgo.Opt{kgo.WithHooks(hook)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		}
	}

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
		t.Fatal(err)
	}
	if err := orders.Publish(ctx, Order{Key: "bus"}); err != nil {
		t.Fatal(err)
	}
	wait(hook, "the bus's record buffered")
	wait(asked, "the metadata request")

	alone := make(chan error, 1)
	go func() {
		alone <- kafka.ProduceAlone(ctx, p, &kgo.Record{Topic: "orders", Key: []byte("alone"), Value: []byte("v")})
	}()
	wait(hook, "the record produced alone buffered")
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
