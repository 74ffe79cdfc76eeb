package eventbustest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// The tests in this file are those a shop built on eventbus would write:
// inventory keyed by SKU, a checkout saga, a read model over the event
// store, and a payment service that is slow or buggy for some orders.

// OrderPlaced is published when a customer places an order.
type OrderPlaced struct {
	OrderID string
	SKU     string
	Qty     int
	Cents   int
}

func (OrderPlaced) EventType() string     { return "order.placed" }
func (o OrderPlaced) AggregateID() string { return o.OrderID }

// PaymentCaptured is published by the payment handler of the saga.
type PaymentCaptured struct {
	OrderID string
	Cents   int
}

func (p PaymentCaptured) AggregateID() string { return p.OrderID }

// OrderShipped is the saga's last step.
type OrderShipped struct{ OrderID string }

func (o OrderShipped) AggregateID() string { return o.OrderID }

// StockReserved is what the inventory handler is told, keyed by SKU.
type StockReserved struct {
	SKU string
	Seq int
}

// Orders is the service under test.
type Orders struct {
	Placed *eventbus.Topic[OrderPlaced]
}

// Place validates an order and announces it.
func (s *Orders) Place(ctx context.Context, o OrderPlaced) error {
	if o.Qty <= 0 {
		return fmt.Errorf("place %s: quantity %d", o.OrderID, o.Qty)
	}
	return s.Placed.Publish(ctx, o, eventbus.WithMetadata(eventbus.Metadata{"channel": "web"}))
}

// ledger is a fake payment provider that records captures.
type ledger struct {
	mu       sync.Mutex
	captured []string
}

func (l *ledger) capture(_ context.Context, e eventbus.Event[OrderPlaced]) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.captured = append(l.captured, e.Payload.OrderID)
	return nil
}

func (l *ledger) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.captured...)
}

// TestShopInventoryPerKeyOrder checks that an inventory subscription with
// several workers sees each SKU's reservations in publish order, while a
// failing SKU retries without holding the others back.
func TestShopInventoryPerKeyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := eventbustest.NewBus(t, &eventbus.Options{Workers: 4})
		reserved, err := eventbus.NewTopic(bus, "stock", &eventbus.TopicOptions[StockReserved]{
			Key: func(s StockReserved) string { return s.SKU },
		})
		require.NoError(t, err)
		var (
			mu    sync.Mutex
			bySKU = map[string][]int{}
		)
		inventory := func(_ context.Context, e eventbus.Event[StockReserved]) error {
			mu.Lock()
			defer mu.Unlock()
			bySKU[e.Key] = append(bySKU[e.Key], e.Payload.Seq)
			return nil
		}
		_, err = reserved.Subscribe("inventory", eventbustest.Inject(inventory, eventbustest.Fault{Key: "lamp", Attempts: 1, Err: errDown}),
			&eventbus.SubscriptionOptions{Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute}})
		require.NoError(t, err)

		skus := []string{"mug", "lamp", "desk", "chair", "pen"}
		want := map[string][]int{}
		for i := range 50 {
			sku := skus[i%len(skus)]
			want[sku] = append(want[sku], i)
			publish(t, reserved, StockReserved{SKU: sku, Seq: i})
		}
		require.NoError(t, bus.Flush(t.Context()))

		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, want, bySKU)
		eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
			Topic: "stock", Subscription: "inventory", Queued: 50, Handled: 50, Failed: 10, Retried: 10,
		})
	})
}

// TestShopSaga runs a checkout saga: payment follows the order, shipping
// follows the payment, each published with the handler's context, so that
// every event of one checkout shares the order's correlation ID and names
// the event it followed as its cause.
func TestShopSaga(t *testing.T) {
	bus := eventbustest.NewBus(t, nil)
	placed := newTopic[OrderPlaced](t, bus, "orders")
	paid := newTopic[PaymentCaptured](t, bus, "payments")
	shipped := newTopic[OrderShipped](t, bus, "shipments")
	_, err := placed.Subscribe("saga-pay", func(ctx context.Context, e eventbus.Event[OrderPlaced]) error {
		return paid.Publish(ctx, PaymentCaptured{OrderID: e.Payload.OrderID, Cents: e.Payload.Cents})
	}, nil)
	require.NoError(t, err)
	_, err = paid.Subscribe("saga-ship", func(ctx context.Context, e eventbus.Event[PaymentCaptured]) error {
		return shipped.Publish(ctx, OrderShipped{OrderID: e.Payload.OrderID})
	}, nil)
	require.NoError(t, err)
	orders := eventbustest.Record(t, placed)
	payments := eventbustest.Record(t, paid)
	shipments := eventbustest.Record(t, shipped)

	orderSvc := &Orders{Placed: placed}
	require.NoError(t, orderSvc.Place(t.Context(), OrderPlaced{OrderID: "o-1", Qty: 1, Cents: 900}))
	require.NoError(t, orderSvc.Place(t.Context(), OrderPlaced{OrderID: "o-2", Qty: 3, Cents: 2700}))
	require.True(t, shipments.Wait(t.Context(), func(events []eventbus.Event[OrderShipped]) bool { return len(events) == 2 }))
	// The last step's recorder has both shipments, but the other recorders
	// are subscriptions of their own, which may lag behind: now that every
	// event has been published, Flush waits for them.
	require.NoError(t, bus.Flush(t.Context()))

	shipments.Want(OrderShipped{OrderID: "o-1"}, OrderShipped{OrderID: "o-2"})
	payments.Want(PaymentCaptured{OrderID: "o-1", Cents: 900}, PaymentCaptured{OrderID: "o-2", Cents: 2700})
	o, p, s := orders.Events(), payments.Events(), shipments.Events()
	for i := range o {
		require.Equal(t, o[i].ID, o[i].CorrelationID, "an event published outside a handler starts its own correlation")
		require.Zero(t, o[i].CausationID)
		require.Equal(t, o[i].ID, p[i].CorrelationID, "payment %d", i)
		require.Equal(t, o[i].ID, p[i].CausationID, "payment %d", i)
		require.Equal(t, o[i].ID, s[i].CorrelationID, "shipment %d", i)
		require.Equal(t, p[i].ID, s[i].CausationID, "shipment %d", i)
		require.Equal(t, eventbus.Metadata{"channel": "web"}, o[i].Metadata)
	}
}

// TestShopProjection keeps a read model of revenue per SKU from the event
// store, with a durable subscription, and reads its own writes with WaitFor.
func TestShopProjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := eventbustest.NewBus(t, nil)
		store, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[OrderPlaced](reg, nil))
		placed, err := eventbus.NewStoreTopic[OrderPlaced](bus, store, reg, "orders")
		require.NoError(t, err)

		var (
			mu      sync.Mutex
			revenue = map[string]int{}
		)
		project := func(_ context.Context, e eventbus.Event[OrderPlaced]) error {
			mu.Lock()
			defer mu.Unlock()
			revenue[e.Payload.SKU] += e.Payload.Cents
			return nil
		}
		d, err := placed.Subscribe(t.Context(), "revenue", project, nil)
		require.NoError(t, err)

		var last eventbus.AppendResult
		for _, o := range []OrderPlaced{
			{OrderID: "o-1", SKU: "mug", Qty: 1, Cents: 900},
			{OrderID: "o-2", SKU: "lamp", Qty: 1, Cents: 4500},
			{OrderID: "o-3", SKU: "mug", Qty: 2, Cents: 1800},
		} {
			last, err = placed.Publish(t.Context(), o)
			require.NoError(t, err)
		}
		require.NoError(t, d.WaitFor(t.Context(), last.Position))
		mu.Lock()
		require.Equal(t, map[string]int{"mug": 2700, "lamp": 4500}, revenue)
		mu.Unlock()

		// The same handler after a restart of the subscription resumes from
		// its checkpoint: nothing is counted twice.
		require.NoError(t, d.Stop(t.Context()))
		d, err = placed.Subscribe(t.Context(), "revenue", project, nil)
		require.NoError(t, err)
		last, err = placed.Publish(t.Context(), OrderPlaced{OrderID: "o-4", SKU: "lamp", Qty: 1, Cents: 4500})
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(t.Context(), last.Position))
		mu.Lock()
		require.Equal(t, map[string]int{"mug": 2700, "lamp": 9000}, revenue)
		mu.Unlock()
		// A durable subscription's metrics are those of its internal topic,
		// "durable." and its name, which is the topic's and the handler's;
		// they count both runs on the bus.
		require.NoError(t, bus.Flush(t.Context()))
		eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
			Topic: "durable.orders.revenue", Subscription: "orders.revenue", Queued: 4, Handled: 4,
		})
	})
}

// TestShopFaults injects a slow warehouse under a Timeout middleware and a
// panicking handler for one key, and checks what became of each order.
func TestShopFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := eventbustest.NewBus(t, &eventbus.Options{Workers: 2})
		placed := newTopic[OrderPlaced](t, bus, "orders")
		pay := new(ledger)
		h := eventbustest.Inject(pay.capture, eventbustest.Fault{Key: "o-slow", Delay: time.Minute})
		h = eventbustest.Inject(h, eventbustest.Fault{Key: "o-bug", Panic: "nil map"})
		_, err := placed.Subscribe("payments", h, &eventbus.SubscriptionOptions{
			Middleware: []eventbus.Middleware{eventbus.Timeout(5 * time.Second)},
		})
		require.NoError(t, err)

		slow, bug := OrderPlaced{OrderID: "o-slow", Qty: 1}, OrderPlaced{OrderID: "o-bug", Qty: 1}
		publish(t, placed, slow, OrderPlaced{OrderID: "o-ok", Qty: 1}, bug)
		require.NoError(t, bus.Flush(t.Context()))

		require.Equal(t, []string{"o-ok"}, pay.list())
		eventbustest.WantDeadLetters(t, bus, eventbus.DeadLetterFilter{Err: context.DeadlineExceeded}, slow)
		var perr *eventbus.PanicError
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if dl.Key == "o-bug" {
				require.ErrorAs(t, dl.Err, &perr)
			}
		}
		require.NotNil(t, perr, "no dead letter for o-bug")
		require.Equal(t, "nil map", perr.Value)
		eventbustest.WantMetrics(t, bus, eventbus.SubscriptionMetrics{
			Topic: "orders", Subscription: "payments", Queued: 3, Handled: 1, Failed: 2, DeadLettered: 2,
		})
	})
}
