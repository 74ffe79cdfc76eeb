package kafka_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Remark is a payload without a key method: a StoreTopic stores it without a
// key unless Publish is given one.
type Remark struct{ Text string }

func (Remark) EventType() string { return "remark.written" }

// TestRelayStoreTopicKeys proves what RelayOptions.Key's doc and the
// README say a handler sees as the key of a StoreTopic's events relayed
// to another bus: by default their stream, "orders:o1" for the key "o1"
// and "orders:" for none; with a Key that cuts the topic's prefix off,
// the key given to StoreTopic.Publish, and none for an event stored
// without one, whose record then has no key.
func TestRelayStoreTopicKeys(t *testing.T) {
	brokers, _, ctx := setup(t, "plain", "cut")
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Remark](reg, nil); err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	outbox, err := eventbus.NewStoreTopic[Remark](newBus(t, nil), store, reg, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Publish(ctx, Remark{"keyed"}, eventbus.WithKey("o1")); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Publish(ctx, Remark{"unkeyed"}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, reg, brokers)
	cut := func(e eventbus.RecordedEvent) string {
		key, _ := strings.CutPrefix(e.Stream, "orders:")
		return key
	}
	for _, o := range []*kafka.RelayOptions{{Name: "plain", Topic: "plain"}, {Name: "cut", Topic: "cut", Key: cut}} {
		relay, err := kafka.NewRelay(store, p, o)
		if err != nil {
			t.Fatal(err)
		}
		runErr, stop := startRun(ctx, relay)
		t.Cleanup(func() {
			stop()
			<-runErr
		})
	}

	bus := newBus(t, nil)
	c, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keys := make(map[string]map[string]string) // Kafka topic, text: key
	all := make(chan struct{})
	for _, kt := range []string{"plain", "cut"} {
		topic, err := eventbus.NewTopic[Remark](bus, kt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := topic.Subscribe("s", func(_ context.Context, e eventbus.Event[Remark]) error {
			mu.Lock()
			defer mu.Unlock()
			if keys[kt] == nil {
				keys[kt] = make(map[string]string)
			}
			keys[kt][e.Payload.Text] = e.Key
			if len(keys["plain"])+len(keys["cut"]) == 4 {
				close(all)
			}
			return nil
		}, nil); err != nil {
			t.Fatal(err)
		}
		if err := kafka.Route(c, kt, topic); err != nil {
			t.Fatal(err)
		}
	}
	runErr, stop := startRun(ctx, c)
	awaitRunning(t, ctx, runErr, all, "the four events handled")
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Consumer.Run() = %v, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]map[string]string{
		"plain": {"keyed": "orders:o1", "unkeyed": "orders:"},
		"cut":   {"keyed": "o1", "unkeyed": ""},
	}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("keys handled (-want +got):\n%s", diff)
	}
}
