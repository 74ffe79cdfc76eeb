package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Deposited is an event of a bank account.
type Deposited struct{ Amount int }

// EventType names the event in the store and on the wire.
func (Deposited) EventType() string { return "account.deposited" }

// This example relays the events that a bank appends to its event store,
// its outbox, to Kafka, where another service consumes them into a bus of
// its own. An in-process kfake cluster stands in for Kafka.
func ExampleRelay() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.SeedTopics(4, "accounts"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := eventbus.Register[Deposited](reg, nil); err != nil {
		log.Fatal(err)
	}

	// The bank appends events to its store, one stream per account.
	store, err := eventbus.NewMemoryStore(nil) // a FileStore in production
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for _, d := range []struct {
		account string
		amount  int
	}{{"account-1", 100}, {"account-2", 5}, {"account-1", 20}} {
		e, err := reg.Encode(Deposited{Amount: d.amount})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := store.Append(ctx, d.account, eventbus.Any, e); err != nil {
			log.Fatal(err)
		}
	}
	// Its relay produces them to Kafka, keyed by stream, from a checkpoint
	// kept in the store.
	producer, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	relay, err := kafka.NewRelay(store, producer, &kafka.RelayOptions{Name: "accounts-outbox", Topic: "accounts"})
	if err != nil {
		log.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	relayed := make(chan error, 1)
	go func() { relayed <- relay.Run(relayCtx) }()

	// The statements service consumes them into a topic of its bus.
	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	deposits, err := eventbus.NewTopic[Deposited](bus, "deposits", nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	lines := map[string][]int{}
	all := make(chan struct{})
	_, err = deposits.Subscribe("statements", func(ctx context.Context, e eventbus.Event[Deposited]) error {
		mu.Lock()
		defer mu.Unlock()
		lines[e.Key] = append(lines[e.Key], e.Payload.Amount)
		if len(lines["account-1"])+len(lines["account-2"]) == 3 {
			close(all)
		}
		return nil
	}, &eventbus.SubscriptionOptions{
		// An event that the relay produces again, after a crash of the bank,
		// is handled once; across restarts of this service too with a
		// ProcessedStore (eventbus.NewStoreProcessed) in the options.
		Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: kafka.EventID})},
	})
	if err != nil {
		log.Fatal(err)
	}
	consumer, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "statements"})
	if err != nil {
		log.Fatal(err)
	}
	if err := kafka.Route(consumer, "accounts", deposits); err != nil {
		log.Fatal(err)
	}
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	consumed := make(chan error, 1)
	go func() { consumed <- consumer.Run(consumeCtx) }()

	select {
	case <-all:
	case <-ctx.Done():
		log.Fatal(ctx.Err())
	}
	stopConsuming()
	stopRelay()
	if err := <-relayed; !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	if err := errors.Join(<-consumed, bus.Shutdown(ctx)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("account-1:", lines["account-1"])
	fmt.Println("account-2:", lines["account-2"])
	// Output:
	// account-1: [100 20]
	// account-2: [5]
}

// This example forwards the events of a bus topic to Kafka, and reads the
// records back with a plain franz-go client: the record key is the event's
// key, the value its payload as the registry encodes it, and headers carry
// the envelope. An in-process kfake cluster stands in for Kafka.
func ExampleForward() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.SeedTopics(4, "accounts"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := eventbus.Register[Deposited](reg, nil); err != nil {
		log.Fatal(err)
	}

	bus, err := eventbus.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	deposits, err := eventbus.NewTopic[Deposited](bus, "deposits", nil)
	if err != nil {
		log.Fatal(err)
	}
	producer, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: cluster.ListenAddrs()})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	if _, err := kafka.Forward(producer, deposits, "accounts", nil); err != nil {
		log.Fatal(err)
	}
	for _, d := range []struct {
		account string
		amount  int
	}{{"account-1", 100}, {"account-2", 5}, {"account-1", 20}} {
		if err := deposits.Publish(ctx, Deposited{Amount: d.amount}, eventbus.WithKey(d.account)); err != nil {
			log.Fatal(err)
		}
	}
	if err := bus.Shutdown(ctx); err != nil { // returns once Kafka has acknowledged every event
		log.Fatal(err)
	}

	client, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("accounts"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	perKey := map[string][]string{} // a key's records are in one partition, in order
	for n := 0; n < 3; {
		fetches := client.PollFetches(ctx)
		if err := fetches.Err(); err != nil {
			log.Fatal(err)
		}
		for _, r := range fetches.Records() {
			var typ string
			for _, h := range r.Headers {
				if h.Key == "eventbus-type" {
					typ = string(h.Value)
				}
			}
			perKey[string(r.Key)] = append(perKey[string(r.Key)], fmt.Sprintf("%s %s", typ, r.Value))
			n++
		}
	}
	for _, key := range slices.Sorted(maps.Keys(perKey)) {
		fmt.Println(key, perKey[key])
	}
	// Output:
	// account-1 [account.deposited {"Amount":100} account.deposited {"Amount":20}]
	// account-2 [account.deposited {"Amount":5}]
}
