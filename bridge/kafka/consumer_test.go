package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// publishOrders forwards n events of key k to the Kafka topic "orders".
func publishOrders(t *testing.T, ctx context.Context, brokers []string, reg *eventbus.Registry, n int) {
	t.Helper()
	src := newBus(t, nil)
	srcOrders := newTopic(t, src)
	forward(t, reg, srcOrders, "orders", &kafka.ProducerOptions{Brokers: brokers}, nil)
	for seq := range n {
		if err := srcOrders.Publish(ctx, Order{Key: "k", Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestConsumerSyncBus consumes into a Sync-mode bus whose handler fails on
// the first record: the bus dead-letters the event, as its workers would in
// Async mode, and Run goes on to the next record.
func TestConsumerSyncBus(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 2)

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	second := make(chan struct{})
	if _, err := orders.Subscribe("shipping", func(_ context.Context, e eventbus.Event[Order]) error {
		if e.Payload.Seq == 0 {
			return errors.New("handler fails")
		}
		close(second)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: 10 * time.Millisecond})
	select {
	case <-second:
	case <-ended:
		t.Fatalf("Run() = %v after a handler failed", stop())
	case <-ctx.Done():
		t.Fatal("the second record was not handled")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if n := bus.DeadLetters().Len(); n != 1 {
		t.Errorf("the bus holds %d dead letters, want the 1 whose handler failed", n)
	}
	checkCommittedAll(t, ctx, brokers, "g", "orders")
}

// TestConsumerDrainTimeout stops a consumer while a handler runs on: Run
// returns about DrainTimeout later, with the final commit's error, without
// waiting for the handler.
func TestConsumerDrainTimeout(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, _ eventbus.Event[Order]) error {
		close(started)
		select {
		case <-release:
		case <-hctx.Done():
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Hour, DrainTimeout: 200 * time.Millisecond})
	<-started
	res := make(chan error, 1)
	go func() { res <- stop() }()
	select {
	case err := <-res:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run() = %v, want the final commit's deadline", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return while the handler ran on")
	}
}

// OrderRef is a payload whose key comes from a method of its value, which
// a nil *OrderRef does not have.
type OrderRef struct{ Key string }

func (*OrderRef) EventType() string    { return "order.ref" }
func (o OrderRef) AggregateID() string { return o.Key }

// TestConsumerNilValue consumes a record whose value decodes to a nil
// pointer: it is a bad record, sent to the dead-letter topic, and Run goes
// on.
func TestConsumerNilValue(t *testing.T) {
	brokers, _, ctx := setup(t, "orders", "dead")
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[*OrderRef](reg, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("null"), Headers: []kgo.RecordHeader{
		{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
		{Key: "eventbus-type", Value: []byte("order.ref")},
	}}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	bus := newBus(t, nil)
	refs, err := eventbus.NewTopic[*OrderRef](bus, "refs", nil)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "dead", CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", refs); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- cons.Run(runCtx) }()
	dl := readOne(t, ctx, brokers, "dead")
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	for _, h := range dl.Headers {
		if h.Key == "eventbus-error" {
			t.Logf("dead-lettered: %s", h.Value)
			return
		}
	}
	t.Error("the dead-lettered record has no eventbus-error header")
}
