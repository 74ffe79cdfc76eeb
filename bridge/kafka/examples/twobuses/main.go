// Command twobuses connects two buses, as two processes would be, through
// Kafka: the first forwards its "orders" topic to Kafka, the second consumes
// it into its own "orders" topic, where a handler ships each order. It uses
// the brokers in KAFKA_BROKERS (comma-separated) if set, which must have
// the topic "orders" (the bridge creates no topics), else starts an
// in-process kfake cluster of three brokers.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
)

// OrderPlaced is published when a customer places an order.
type OrderPlaced struct {
	Customer string
	Item     string
}

// EventType names the event on the wire.
func (OrderPlaced) EventType() string { return "order.placed" }

// AggregateID keys orders by customer: one customer's orders stay in order.
func (o OrderPlaced) AggregateID() string { return o.Customer }

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var brokers []string
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		brokers = strings.Split(env, ",")
		fmt.Println("using the brokers in KAFKA_BROKERS")
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(8, "orders"))
		if err != nil {
			return err
		}
		defer c.Close()
		brokers = c.ListenAddrs()
		fmt.Println("started an in-process Kafka cluster: 3 brokers, topic orders with 8 partitions")
	}

	// Both sides know the event types.
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		return err
	}
	if err := eventbus.Register[OrderPlaced](reg, nil); err != nil {
		return err
	}

	// The shop: a bus whose orders go to Kafka.
	shop, err := eventbus.New(nil)
	if err != nil {
		return err
	}
	shopOrders, err := eventbus.NewTopic[OrderPlaced](shop, "orders", nil)
	if err != nil {
		return err
	}
	producer, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers})
	if err != nil {
		return err
	}
	defer producer.Close()
	defer shop.Close() // on an early return, before the producer closes; Shutdown below stops it with grace
	if _, err := kafka.Forward(producer, shopOrders, "orders", nil); err != nil {
		return err
	}

	// The warehouse: another bus, fed from Kafka.
	warehouse, err := eventbus.New(nil)
	if err != nil {
		return err
	}
	defer warehouse.Close()
	whOrders, err := eventbus.NewTopic[OrderPlaced](warehouse, "orders", nil)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	shipped := make(map[string][]string)
	all := make(chan struct{})
	const total = 6
	n := 0
	if _, err := whOrders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[OrderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		shipped[e.Payload.Customer] = append(shipped[e.Payload.Customer], e.Payload.Item)
		if n++; n == total {
			close(all)
		}
		return nil
	}, &eventbus.SubscriptionOptions{
		// A record delivered twice to this process ships once. The record of
		// what shipped is in memory: to skip what shipped before a restart,
		// give Idempotency a ProcessedStore (eventbus.NewStoreProcessed).
		Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: kafka.EventID})},
	}); err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(warehouse, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "warehouse"})
	if err != nil {
		return err
	}
	if err := kafka.Route(consumer, "orders", whOrders); err != nil {
		return err
	}
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	consumed := make(chan error, 1)
	go func() { consumed <- consumer.Run(consumeCtx) }()

	for _, o := range []OrderPlaced{
		{"ada", "keyboard"}, {"bob", "lamp"}, {"ada", "mouse"},
		{"bob", "desk"}, {"ada", "screen"}, {"cyd", "chair"},
	} {
		fmt.Printf("shop publishes: %s orders a %s\n", o.Customer, o.Item)
		if err := shopOrders.Publish(ctx, o); err != nil {
			return err
		}
	}
	select {
	case <-all:
	case err := <-consumed: // a record it cannot take, say, or brokers out of reach
		if err == nil {
			err = errors.New("the consumer returned without an error")
		}
		return fmt.Errorf("the warehouse stopped consuming: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the warehouse: %w", ctx.Err())
	}
	stopConsuming()
	err = <-consumed
	err = errors.Join(err, shop.Shutdown(ctx), warehouse.Shutdown(ctx))
	if err != nil {
		return err
	}
	for _, c := range []string{"ada", "bob", "cyd"} {
		fmt.Printf("warehouse shipped to %s, in order: %s\n", c, strings.Join(shipped[c], ", "))
	}
	return nil
}
