package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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
// the first records: the bus dead-letters each event, as its workers would
// in Async mode, and Run goes on to the next record. What the handler's
// error wraps does not matter: eventbus.ErrInvalid or eventbus.ErrClosed
// from a handler is its failure, not the bus refusing the event.
func TestConsumerSyncBus(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders", "dead")
	failures := []error{
		errors.New("handler fails"),
		fmt.Errorf("%w: the handler finds the order bad", eventbus.ErrInvalid),
		fmt.Errorf("the handler's store: %w", eventbus.ErrClosed),
	}
	publishOrders(t, ctx, brokers, reg, len(failures)+1)

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	last := make(chan struct{})
	if _, err := orders.Subscribe("shipping", func(_ context.Context, e eventbus.Event[Order]) error {
		if e.Payload.Seq < len(failures) {
			return failures[e.Payload.Seq]
		}
		close(last)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "dead", CommitInterval: 10 * time.Millisecond})
	select {
	case <-last:
	case <-ended:
		t.Fatalf("Run() = %v after a handler failed", stop())
	case <-ctx.Done():
		t.Fatal("the last record was not handled")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if n := bus.DeadLetters().Len(); n != len(failures) {
		t.Errorf("the bus holds %d dead letters, want the %d whose handler failed", n, len(failures))
	}
	if n := countRecords(t, ctx, brokers, "dead"); n != 0 {
		t.Errorf("the dead-letter topic holds %d records, want 0: the bus had them", n)
	}
	checkCommittedAll(t, ctx, brokers, "g", "orders")
}

// TestConsumerSyncFailureWhileStopping stops Run from inside a Sync-mode
// handler that then fails: the bus has dead-lettered the event, so the
// record is consumed and committed, not read again by the next run and
// dead-lettered twice.
func TestConsumerSyncFailureWhileStopping(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	if _, err := orders.Subscribe("shipping", func(context.Context, eventbus.Event[Order]) error {
		stopRun()
		return errors.New("handler fails")
	}, nil); err != nil {
		t.Fatal(err)
	}
	_, ended := consume(t, runCtx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("Run did not stop")
	}
	if n := bus.DeadLetters().Len(); n != 1 {
		t.Errorf("the bus holds %d dead letters, want 1", n)
	}
	checkCommittedAll(t, ctx, brokers, "g", "orders")
}

// TestConsumerRefusedEvent consumes records whose event the bus topic's
// Publish refuses (here with a nil PublishOption, which the Consumer never
// passes): the event was published nowhere, so in either mode the record is
// a bad record, sent to the dead-letter topic if there is one, else stopping
// Run with the error, and never committed past silently.
func TestConsumerRefusedEvent(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders", "dead-async", "dead-sync")
	publishOrders(t, ctx, brokers, reg, 2) // one key: one partition, in order
	eachConsumerCase(t, func(t *testing.T, mode eventbus.Mode, group, deadLetter string) {
		testConsumerRefusedEvent(t, ctx, brokers, reg, mode, group, deadLetter)
	})
}

func testConsumerRefusedEvent(t *testing.T, ctx context.Context, brokers []string, reg *eventbus.Registry, mode eventbus.Mode, group, deadLetter string) {
	bus := newBus(t, &eventbus.Options{Mode: mode})
	orders := newTopic(t, bus)
	first, second := make(chan struct{}), make(chan struct{})
	if _, err := orders.Subscribe("shipping", func(_ context.Context, e eventbus.Event[Order]) error {
		close([]chan struct{}{first, second}[e.Payload.Seq])
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: group, DeadLetterTopic: deadLetter, CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	refuseFirst := func(ctx context.Context, o Order, opts ...eventbus.PublishOption) error {
		if o.Seq == 0 {
			opts = append(opts, nil)
		}
		return orders.Publish(ctx, o, opts...)
	}
	if err := kafka.RouteVia(cons, "orders", orders, refuseFirst); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, cons)
	defer stop()

	if deadLetter == "" {
		select {
		case err := <-runErr:
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "orders/") {
				t.Errorf("Run() = %v, want an error naming the record and wrapping eventbus.ErrInvalid", err)
			}
		case <-second:
			stop()
			t.Fatalf("Run went on past the refused record; then returned %v", <-runErr)
		case <-ctx.Done():
			t.Fatal("Run did not stop on the refused record")
		}
		if err := bus.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-second:
			t.Error("the record after the refused one was handled, without the refused one being dead-lettered")
		default:
		}
		return
	}

	handledThenStop(t, ctx, second, runErr, stop, "the second record")
	select {
	case <-first:
		t.Error("the refused event was handled")
	default:
	}
	// The refused record was dead-lettered before the next was published.
	if n := countRecords(t, ctx, brokers, deadLetter); n != 1 {
		t.Fatalf("the dead-letter topic holds %d records, want the 1 refused", n)
	}
	dl := readOne(t, ctx, brokers, deadLetter)
	var reason string
	for _, h := range dl.Headers {
		if h.Key == "eventbus-error" {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "nil PublishOption") {
		t.Errorf("the dead-lettered record's eventbus-error is %q, want the bus's refusal", reason)
	}
	checkCommittedAll(t, ctx, brokers, group, "orders")
}

// TestConsumerDrainTimeout stops a consumer while a handler runs on: Run
// returns about DrainTimeout later, with the final commit's error, without
// waiting for the handler.
func TestConsumerDrainTimeout(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	started, release := holdHandling(t, orders, nil)
	defer close(release)
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
func TestConsumerNilValue(t *testing.T) { consumeNilValue[*OrderRef](t) }

// Typed is an interface that *OrderRef implements, for a bus topic of
// several event types.
type Typed interface{ EventType() string }

// TestConsumerNilValueInterface does the same on a topic whose payload type
// is an interface: the record was published, a nil *OrderRef in the
// interface, for handlers to dereference.
func TestConsumerNilValueInterface(t *testing.T) { consumeNilValue[Typed](t) }

// consumeNilValue routes a record whose value is null to a bus topic of
// payload type T, and checks that it is dead-lettered as a bad record that
// no handler sees.
func consumeNilValue[T any](t *testing.T) {
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
	refs, err := eventbus.NewTopic[T](bus, "refs", nil)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	if _, err := refs.Subscribe("count", func(context.Context, eventbus.Event[T]) error {
		handled.Add(1)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "dead", CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", refs); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, cons)
	dl := readOne(t, ctx, brokers, "dead")
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if err := bus.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := handled.Load(); n != 0 {
		t.Errorf("handlers saw %d events, want none", n)
	}
	for _, h := range dl.Headers {
		if h.Key == "eventbus-error" {
			if want := eventbus.ErrInvalid.Error() + ": the value of the record decodes to a nil *kafka_test.OrderRef"; !strings.HasPrefix(string(h.Value), want) {
				t.Errorf("dead-lettered with eventbus-error %q, want it to start %q", h.Value, want)
			}
			return
		}
	}
	t.Error("the dead-lettered record has no eventbus-error header")
}

// TestConsumerFailedStart calls Run on a Consumer with no Route, and on one
// whose Client options franz-go refuses: each Run returns at once an error
// wrapping eventbus.ErrInvalid, and leaves the Consumer as it was, so that
// Route works after it and Run, given a Route, consumes; with the bad
// options, each Run says so again, not that Run was called twice.
func TestConsumerFailedStart(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)
	bus := newBus(t, nil)
	orders := newTopic(t, bus)

	t.Run("no route", func(t *testing.T) {
		log := logOrders(t, orders, 1)
		cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		if err := cons.Run(ctx); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "without a Route") {
			t.Fatalf("Run() without a Route = %v, want an error wrapping eventbus.ErrInvalid", err)
		}
		if err := kafka.Route(cons, "orders", orders); err != nil {
			t.Fatalf("Route() after the failed Run = %v, want nil", err)
		}
		runErr, stop := startRun(ctx, cons)
		log.wait(t, ctx)
		stop()
		if err := <-runErr; err != nil {
			t.Fatalf("Run() = %v, want nil", err)
		}
	})

	t.Run("bad client options", func(t *testing.T) {
		cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g2",
			Client: []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck())}, // the bridge's idempotent writes need all acks
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := kafka.Route(cons, "orders", orders); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := cons.Run(ctx); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "acks") {
				t.Errorf("Run() #%d = %v, want an error wrapping eventbus.ErrInvalid and franz-go's", i+1, err)
			}
		}
		if err := kafka.Route(cons, "others", orders); err != nil {
			t.Errorf("Route() after the failed Run = %v, want nil", err)
		}
	})
}

// TestConsumerSkipsAbortedTransactions consumes a partition where a
// transactional producer outside the bridge aborted one record and then
// committed the next: the aborted one never happened, so the Consumer, which
// reads committed records only, publishes just the committed one.
func TestConsumerSkipsAbortedTransactions(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("outside"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for seq, end := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte("k"), Value: fmt.Appendf(nil, `{"Key":"k","Seq":%d}`, seq), Headers: []kgo.RecordHeader{
			{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
			{Key: "eventbus-type", Value: []byte("order.placed")},
		}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	handled := make(chan int, 2)
	if _, err := orders.Subscribe("shipping", func(_ context.Context, e eventbus.Event[Order]) error {
		handled <- e.Payload.Seq
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	select {
	case seq := <-handled:
		if seq != 1 {
			t.Errorf("handled the order of Seq %d first, want only the committed one, Seq 1", seq)
		}
	case <-ctx.Done():
		t.Fatal("the committed record was not handled")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
}
