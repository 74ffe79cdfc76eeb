package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerRunOnce calls Run and Route on a Consumer whose Run runs,
// and then once it has returned: each returns an error wrapping
// eventbus.ErrInvalid, as their docs say. A second Run would join the
// group again beside the first, in one Consumer, and a Route after Run
// would route nothing: Run has its routes. The later Runs are given a
// context done already, so that one that ran would return at once.
func TestConsumerRunOnce(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 1)
	cons := ordersConsumer(t, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	runErr, stop := startRun(ctx, cons)
	log.wait(t, ctx) // Run runs
	done, cancel := context.WithCancel(ctx)
	cancel()
	check := func(when string) {
		t.Helper()
		if err := cons.Run(done); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Run() %s = %v, want an error wrapping eventbus.ErrInvalid", when, err)
		}
		if err := kafka.Route(cons, "others", orders); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Route() %s = %v, want an error wrapping eventbus.ErrInvalid", when, err)
		}
	}
	check("while Run runs")
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	check("after Run returned")
}
