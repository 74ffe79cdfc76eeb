package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBadInput checks that the bridge's constructors refuse what they
// cannot work with, with errors wrapping eventbus.ErrInvalid, and never
// panic.
func TestBadInput(t *testing.T) {
	var nilCtx context.Context // a variable, which staticcheck lets pass as nil
	bus := newBus(t, nil)
	topic := newTopic(t, bus)
	reg := registry(t)
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	brokers := []string{"127.0.0.1:1"}
	tests := map[string]func() error{
		"producer without registry": func() error { _, err := kafka.NewProducer(nil, &kafka.ProducerOptions{Brokers: brokers}); return err },
		"producer without brokers":  func() error { _, err := kafka.NewProducer(reg, nil); return err },
		"forward without producer":  func() error { _, err := kafka.Forward(nil, topic, "k", nil); return err },
		"producer with an empty broker": func() error {
			// As strings.Split makes of an unset KAFKA_BROKERS: franz-go
			// took it for localhost:9092.
			p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: []string{""}})
			p.Close()
			return err
		},
		"producer with a blank broker among others": func() error {
			p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: []string{brokers[0], " "}})
			p.Close()
			return err
		},
		"forward of a payload type not registered": func() error {
			empty, err := eventbus.NewRegistry(nil)
			if err != nil {
				return err
			}
			p, err := kafka.NewProducer(empty, &kafka.ProducerOptions{Brokers: brokers})
			if err != nil {
				return err
			}
			defer p.Close()
			_, err = kafka.Forward(p, topic, "k", nil)
			return err
		},
		"producer with a negative BatchMaxBytes": func() error {
			_, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, BatchMaxBytes: -1})
			return err
		},
		"producer with a negative MaxBufferedRecords": func() error {
			_, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, MaxBufferedRecords: -1})
			return err
		},
		"producer with client options franz-go refuses": func() error {
			_, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, Client: []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck())}})
			return err
		},
		"consumer without bus": func() error {
			_, err := kafka.NewConsumer(nil, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			return err
		},
		"consumer with an empty broker": func() error {
			_, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: []string{""}, Group: "g"})
			return err
		},
		"consumer with a logger without a Handler": func() error {
			// A zero slog.Logger panics at its first report, in Run.
			_, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", Logger: &slog.Logger{}})
			return err
		},
		// A Registry not made by NewRegistry encodes and decodes nothing:
		// every event forwarded was dead-lettered, every record routed
		// was a bad record.
		"producer with a zero registry": func() error {
			p, err := kafka.NewProducer(new(eventbus.Registry), &kafka.ProducerOptions{Brokers: brokers})
			p.Close()
			return err
		},
		"consumer with a zero bus": func() error {
			// Every Route blamed the topic for not being on its bus.
			_, err := kafka.NewConsumer(new(eventbus.Bus), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			return err
		},
		"consumer with a zero registry": func() error {
			_, err := kafka.NewConsumer(bus, new(eventbus.Registry), &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			return err
		},
		"consumer without group": func() error {
			_, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers})
			return err
		},
		"route without consumer": func() error { return kafka.Route[Order](nil, "k", topic) },
		"route to a topic of another bus": func() error {
			c, err := kafka.NewConsumer(newBus(t, nil), reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			if err != nil {
				return err
			}
			return kafka.Route(c, "k", topic)
		},
		"Run of a consumer with a nil context": func() error {
			c, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g"})
			if err != nil {
				return err
			}
			if err := kafka.Route(c, "k", topic); err != nil {
				return err
			}
			return c.Run(nilCtx)
		},
		"Run of a relay with a nil context": func() error {
			p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers})
			if err != nil {
				return err
			}
			defer p.Close()
			r, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "k", Checkpoints: noCheckpoints{}})
			if err != nil {
				return err
			}
			return r.Run(nilCtx)
		},
		"relay without producer": func() error {
			_, err := kafka.NewRelay(store, nil, &kafka.RelayOptions{Name: "r", Topic: "k"})
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("got %v, want an error wrapping eventbus.ErrInvalid", err)
			}
		})
	}
}

// TestNotMade calls the bridge's methods on values not made by its
// constructors, nil or zero, or made of a nil store: each returns an error
// wrapping eventbus.ErrInvalid, or for Close does nothing, instead of
// panicking; Route's says which value was not made.
func TestNotMade(t *testing.T) {
	bus := newBus(t, nil)
	topic := newTopic(t, bus)
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	tests := map[string]func() error{
		"Run of a nil relay":  func() error { return (*kafka.Relay)(nil).Run(t.Context()) },
		"Run of a zero relay": func() error { return new(kafka.Relay).Run(t.Context()) },
		"Run of a nil consumer": func() error {
			return (*kafka.Consumer)(nil).Run(t.Context())
		},
		"relay with a zero producer": func() error {
			_, err := kafka.NewRelay(store, new(kafka.Producer), &kafka.RelayOptions{Name: "r", Topic: "k"})
			return err
		},
		"forward with a zero producer": func() error { _, err := kafka.Forward(new(kafka.Producer), topic, "k", nil); return err },
		"Load of checkpoints of a nil store": func() error {
			_, err := kafka.StoreCheckpoints(nil).Load(t.Context(), "r")
			return err
		},
		"Save of checkpoints of a nil store": func() error { return kafka.StoreCheckpoints(nil).Save(t.Context(), "r", 1) },
		"Run of a zero consumer":             func() error { return new(kafka.Consumer).Run(t.Context()) },
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("got %v, want an error wrapping eventbus.ErrInvalid", err)
			}
		})
	}
	// Route on a zero Consumer with a zero Topic panicked on the nil map of
	// routes, and blamed a topic of a bus for not being on the consumer's.
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: []string{"localhost:9092"}, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Route on a zero consumer":                 func() error { return kafka.Route(new(kafka.Consumer), "k", topic) },
		"Route of a zero topic on a zero consumer": func() error { return kafka.Route(new(kafka.Consumer), "k", new(eventbus.Topic[Order])) },
		"Route of a zero topic":                    func() error { return kafka.Route(c, "k", new(eventbus.Topic[Order])) },
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "not made by New") {
				t.Errorf("got %v, want an error wrapping eventbus.ErrInvalid that says what was not made by its constructor", err)
			}
		})
	}
	t.Run("Close of a nil and a zero producer", func(t *testing.T) {
		(*kafka.Producer)(nil).Close()
		new(kafka.Producer).Close()
	})
}

// TestEventIDOfNothing calls EventID on a nil envelope and on one that did
// not come from a Consumer: it returns "", and does not panic.
func TestEventIDOfNothing(t *testing.T) {
	for name, env := range map[string]*eventbus.Envelope{"nil": nil, "no metadata": {}} {
		if got := kafka.EventID(env); got != "" {
			t.Errorf("EventID(%s) = %q, want \"\"", name, got)
		}
	}
}

// noCheckpoints keeps no checkpoint, and takes no notice of its context.
type noCheckpoints struct{}

func (noCheckpoints) Load(context.Context, string) (uint64, error) { return 0, nil }
func (noCheckpoints) Save(context.Context, string, uint64) error   { return nil }

// TestZeroProduceError checks that Error and Unwrap read a nil
// *ProduceError as the zero one, as those of package eventbus's error
// types do, instead of panicking on the nil pointer.
func TestZeroProduceError(t *testing.T) {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("nil *ProduceError panicked: %v", r)
		}
	}()
	var nilErr *kafka.ProduceError
	if got, want := nilErr.Error(), new(kafka.ProduceError).Error(); got != want {
		t.Errorf("nil *ProduceError: Error() = %q, want %q", got, want)
	}
	if err := nilErr.Unwrap(); err != nil {
		t.Errorf("nil *ProduceError: Unwrap() = %v, want nil", err)
	}
}

// TestClosedBus checks that NewConsumer refuses a bus stopped already, and
// Run one stopped since NewConsumer, with an error wrapping
// eventbus.ErrClosed, at once: Run joined the group, taking partitions
// from its other members, to fail at its first record, or, with no record
// coming, to return nil only once its context ended, having consumed
// nothing. The broker is unreachable: the context is only a guard.
func TestClosedBus(t *testing.T) {
	reg := registry(t)
	opts := &kafka.ConsumerOptions{Brokers: []string{"127.0.0.1:1"}, Group: "g"}
	closed := newBus(t, nil)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := kafka.NewConsumer(closed, reg, opts); !errors.Is(err, eventbus.ErrClosed) || c != nil {
		t.Errorf("NewConsumer of a closed bus = %v, %v, want nil, an error wrapping eventbus.ErrClosed", c, err)
	}

	bus := newBus(t, nil)
	c, err := kafka.NewConsumer(bus, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(c, "k", newTopic(t, bus)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Run(ctx); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Run on a closed bus = %v, want an error wrapping eventbus.ErrClosed", err)
	}
}
