package kafka_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// badTopics are names that Kafka does not take for a topic.
var badTopics = map[string]string{
	"empty":            "",
	"dot":              ".",
	"dot dot":          "..",
	"250 bytes":        strings.Repeat("a", 250),
	"a space":          "orders placed",
	"a slash":          "orders/placed",
	"a non-ASCII rune": "commandé",
	"a control byte":   "orders\n",
}

// TestTopicNames checks that Route, Forward, NewRelay's Topic and
// NewConsumer's DeadLetterTopic refuse a name that Kafka does not take for
// a topic with an error wrapping eventbus.ErrInvalid, and take the longest
// and oddest names it does: such a name failed only once records went to
// it, in fetch errors in the consumer's log, a ProduceError or dead letters.
func TestTopicNames(t *testing.T) {
	reg := registry(t)
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	brokers := []string{"127.0.0.1:1"}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	calls := map[string]func(topic string) error{
		"Route": func(topic string) error {
			bus := newBus(t, nil)
			c, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			if err != nil {
				t.Fatal(err)
			}
			return kafka.Route(c, topic, newTopic(t, bus))
		},
		"Forward": func(topic string) error {
			_, err := kafka.Forward(p, newTopic(t, newBus(t, nil)), topic, nil)
			return err
		},
		"NewRelay": func(topic string) error {
			_, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: topic})
			return err
		},
		"NewConsumer": func(topic string) error {
			_, err := kafka.NewConsumer(newBus(t, nil), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", DeadLetterTopic: topic})
			return err
		},
	}
	for call, f := range calls {
		for name, topic := range badTopics {
			if call == "NewConsumer" && topic == "" {
				continue // no dead-letter topic
			}
			if err := f(topic); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("%s with a topic name with %s = %v, want an error wrapping eventbus.ErrInvalid", call, name, err)
			}
		}
		for _, topic := range []string{"a", "...", "Orders_v2.placed-eu", strings.Repeat("a", 243)} {
			if err := f(topic); err != nil {
				t.Errorf("%s(%q) = %v, want nil", call, topic, err)
			}
		}
	}
}

// TestRelayBadTopicFor relays an event to "orders", then one for which
// TopicFor returns a name that Kafka does not take for a topic: Run stops
// at once with a *ProduceError naming that event and its topic, wrapping
// eventbus.ErrInvalid, as for a record too large to be written, and the
// checkpoint stays before it. The record went to franz-go, which failed
// it some 10 seconds later with the broker's UNKNOWN_TOPIC_OR_PARTITION.
func TestRelayBadTopicFor(t *testing.T) {
	c, reg, _, ctx := relayCluster(t, nil)
	for name, bad := range badTopics {
		store := newStore(t)
		appendOrder(t, ctx, store, reg, "good", Order{Key: "good"})
		failed := appendOrder(t, ctx, store, reg, "bad", Order{Key: "bad"})
		p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Linger: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		topicFor := func(e eventbus.RecordedEvent) string {
			if e.Stream == "bad" {
				return bad
			}
			return "orders"
		}
		relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", TopicFor: topicFor})
		if err != nil {
			t.Fatal(err)
		}
		err = relay.Run(ctx)
		var pe *kafka.ProduceError
		if !errors.As(err, &pe) || !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Run() with TopicFor giving a name with %s = %v, want a *ProduceError wrapping eventbus.ErrInvalid", name, err)
			continue
		}
		if pe.Position != failed.Position || pe.ID != failed.ID || pe.Topic != bad {
			t.Errorf("ProduceError names event %s at %d, topic %q; want %s at %d, topic %q", pe.ID, pe.Position, pe.Topic, failed.ID, failed.Position, bad)
		}
		next, err := kafka.StoreCheckpoints(store).Load(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		if next > failed.Position {
			t.Errorf("checkpoint after a topic name with %s = %d, want at most %d", name, next, failed.Position)
		}
	}
}
