package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestRelayMissingTopic relays an event to a Kafka topic that does not
// exist, which the bridge does not create: Run stops with a
// *kafka.ProduceError naming the topic and wrapping
// kerr.UnknownTopicOrPartition, as RelayOptions.Topic's doc says, rather
// than waiting for it.
func TestRelayMissingTopic(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	store := newStore(t)
	appendOrder(t, ctx, store, reg, "orders:a", Order{Key: "a"})
	relay, err := kafka.NewRelay(store, newProducer(t, reg, brokers), &kafka.RelayOptions{Name: "r", Topic: "nosuch"})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	if pe := (*kafka.ProduceError)(nil); !errors.As(err, &pe) || pe.Topic != "nosuch" || !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("Run() = %v, want a *kafka.ProduceError of topic \"nosuch\" wrapping kerr.UnknownTopicOrPartition", err)
	}
}

// TestConsumerMissingDeadLetterTopic gives a consumer a DeadLetterTopic
// that does not exist, and a bad record: Run stops with an error naming
// the dead-letter topic and wrapping kerr.UnknownTopicOrPartition, as
// ConsumerOptions.DeadLetterTopic's doc says.
func TestConsumerMissingDeadLetterTopic(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, nil)
	stop, ended := consume(t, ctx, bus, newTopic(t, bus), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: "nosuch"})
	await(t, ctx, ended, "Run stopping at the bad record")
	if err := stop(); !errors.Is(err, kerr.UnknownTopicOrPartition) || !strings.Contains(fmt.Sprint(err), `dead-letter topic "nosuch"`) {
		t.Errorf("Run() = %v, want an error naming dead-letter topic \"nosuch\" and wrapping kerr.UnknownTopicOrPartition", err)
	}
}

// TestConsumerWaitsForMissingTopic routes a Kafka topic that does not
// exist yet: Run waits for it, as Route's doc says, and once the topic is
// created (after the consumer has asked Kafka for it) handles its records
// from the first.
func TestConsumerWaitsForMissingTopic(t *testing.T) {
	checkNoLeaks(t)
	c := cluster(t, "other")
	brokers, reg := c.ListenAddrs(), registry(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	asked := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, rt := range req.(*kmsg.MetadataRequest).Topics {
			if rt.Topic != nil && *rt.Topic == "orders" {
				once.Do(func() { close(asked) })
			}
		}
		return nil, nil, false
	})

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := logOrders(t, orders, 1)
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	await(t, ctx, asked, "the consumer asking for the topic")

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	publishOrders(t, ctx, brokers, reg, 1)
	select {
	case <-log.done:
	case <-ended:
		t.Fatalf("Run() = %v before the record was handled", stop())
	case <-ctx.Done():
		t.Fatal("the record of the topic created after Run started was not handled")
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}
