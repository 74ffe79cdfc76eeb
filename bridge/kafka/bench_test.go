package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// BenchmarkBridge sends b.N events from one bus through kfake into another
// bus, over 1,000 keys, and reports events per second end to end.
func BenchmarkBridge(b *testing.B) {
	c := cluster(b, "orders")
	brokers := c.ListenAddrs()
	reg := registry(b)
	ctx := context.Background()
	busA := newBus(b, nil)
	ordersA := newTopic(b, busA)
	forward(b, reg, ordersA, "orders", &kafka.ProducerOptions{Brokers: brokers}, &eventbus.SubscriptionOptions{Workers: 8, BatchSize: 1000})
	busB := newBus(b, nil)
	ordersB := newTopic(b, busB)
	handled := make(chan struct{}, 1024)
	if _, err := ordersB.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error {
		handled <- struct{}{}
		return nil
	}, nil); err != nil {
		b.Fatal(err)
	}
	stop, _ := consume(b, ctx, busB, ordersB, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "bench"})
	defer func() {
		if err := stop(); err != nil {
			b.Error(err)
		}
	}()

	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%04d", i)
	}
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if err := ordersA.Publish(ctx, Order{Key: keys[n%len(keys)], Seq: n}); err != nil {
			b.Fatal(err)
		}
		n++
		for len(handled) > 0 {
			<-handled
			n--
		}
	}
	for ; n > 0; n-- {
		<-handled
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkOverhead measures what the bridge adds per event on top of the two
// buses and Kafka: the record built from an event on the producer side and
// the event published from the record on the consumer side.
func BenchmarkOverhead(b *testing.B) {
	reg := registry(b)
	bus := newBus(b, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(b, bus)
	if _, err := orders.Subscribe("noop", func(context.Context, eventbus.Event[Order]) error { return nil }, nil); err != nil {
		b.Fatal(err)
	}
	e := eventbus.Event[Order]{Header: eventbus.Header{ID: eventbus.NewID(), Key: "k0001", CorrelationID: eventbus.NewID(), Metadata: eventbus.Metadata{eventbus.TraceparentKey: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}, Payload: Order{Key: "k0001", Seq: 7}}
	roundTrip, err := kafka.RoundTrip(reg, orders)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("bridge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := roundTrip(context.Background(), e); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same publish on the bus without the bridge, to subtract.
	b.Run("publish-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := orders.Publish(context.Background(), e.Payload, eventbus.WithKey(e.Key), eventbus.WithMetadata(e.Metadata)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
