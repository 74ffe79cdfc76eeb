package kafka_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOptionErrorsNameTheBadOne checks that an error for a bad option of
// NewProducer, NewConsumer or NewRelay wraps ErrInvalid and names that
// option alone, with its value: they named two or three at once
// ("negative CommitInterval, MaxPollRecords or DrainTimeout"), and a
// BatchMaxBytes or Linger out of franz-go's range was blamed on
// ProducerOptions.Client, which the caller had not set.
func TestOptionErrorsNameTheBadOne(t *testing.T) {
	reg := registry(t)
	bus := newBus(t, nil)
	store := newStore(t)
	brokers := []string{"127.0.0.1:1"}
	producer := func(o kafka.ProducerOptions) error {
		o.Brokers = brokers
		p, err := kafka.NewProducer(reg, &o)
		p.Close()
		return err
	}
	consumer := func(o kafka.ConsumerOptions) error {
		o.Brokers, o.Group = brokers, "g"
		_, err := kafka.NewConsumer(bus, reg, &o)
		return err
	}
	p := newProducer(t, reg, brokers)
	relay := func(o kafka.RelayOptions) error {
		o.Name, o.Topic = "r", "t"
		_, err := kafka.NewRelay(store, p, &o)
		return err
	}
	tests := []struct {
		name string
		err  error
		want string   // in the message
		not  []string // options that are fine, not in the message
	}{
		{"BatchMaxBytes", producer(kafka.ProducerOptions{BatchMaxBytes: -1}), "BatchMaxBytes -1", []string{"MaxBufferedRecords", "Client"}},
		{"MaxBufferedRecords", producer(kafka.ProducerOptions{MaxBufferedRecords: -2}), "MaxBufferedRecords -2", []string{"BatchMaxBytes", "Client"}},
		{"BatchMaxBytes too small", producer(kafka.ProducerOptions{BatchMaxBytes: 100}), "BatchMaxBytes 100", []string{"MaxBufferedRecords", "Client"}},
		{"BatchMaxBytes too large", producer(kafka.ProducerOptions{BatchMaxBytes: 1<<30 + 1}), "BatchMaxBytes 1073741825", []string{"MaxBufferedRecords", "Client"}},
		// Over franz-go's BrokerMaxWriteBytes (100 MiB unless Client
		// sets it), which it refuses in its own words.
		{"BatchMaxBytes over BrokerMaxWriteBytes", producer(kafka.ProducerOptions{BatchMaxBytes: 200 << 20}), "BatchMaxBytes 209715200", []string{"MaxBufferedRecords"}},
		{"Linger", producer(kafka.ProducerOptions{Linger: 2 * time.Minute}), "Linger 2m0s", []string{"BatchMaxBytes", "Client"}},
		{"CommitInterval", consumer(kafka.ConsumerOptions{CommitInterval: -time.Second}), "CommitInterval -1s", []string{"MaxPollRecords", "DrainTimeout"}},
		{"MaxPollRecords", consumer(kafka.ConsumerOptions{MaxPollRecords: -1}), "MaxPollRecords -1", []string{"CommitInterval", "DrainTimeout"}},
		{"DrainTimeout", consumer(kafka.ConsumerOptions{DrainTimeout: -time.Second}), "DrainTimeout -1s", []string{"CommitInterval", "MaxPollRecords"}},
		{"CheckpointInterval", relay(kafka.RelayOptions{CheckpointInterval: -time.Second}), "CheckpointInterval -1s", []string{"MaxInFlight"}},
		{"MaxInFlight", relay(kafka.RelayOptions{MaxInFlight: -1}), "MaxInFlight -1", []string{"CheckpointInterval"}},
		// A helper that returns a kgo.Opt only when a setting is on may
		// leave a nil one, on which franz-go's NewClient panics.
		{"producer's nil Client option", producer(kafka.ProducerOptions{Client: []kgo.Opt{kgo.ClientID("a"), nil}}), "ProducerOptions.Client[1] is nil", []string{"BatchMaxBytes"}},
		{"consumer's nil Client option", consumer(kafka.ConsumerOptions{Client: []kgo.Opt{nil}}), "ConsumerOptions.Client[0] is nil", []string{"CommitInterval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fmt.Sprint(tt.err)
			if !errors.Is(tt.err, eventbus.ErrInvalid) || !strings.Contains(msg, tt.want) {
				t.Errorf("got %v, want ErrInvalid naming %q", tt.err, tt.want)
			}
			for _, other := range tt.not {
				if strings.Contains(msg, other) {
					t.Errorf("got %v, which names %s, a good option", tt.err, other)
				}
			}
		})
	}
	// With the client's write limit raised, that size is taken.
	o := kafka.ProducerOptions{Brokers: brokers, BatchMaxBytes: 200 << 20, Client: []kgo.Opt{kgo.BrokerMaxWriteBytes(300 << 20)}}
	bp, err := kafka.NewProducer(reg, &o)
	if err != nil {
		t.Errorf("NewProducer(BatchMaxBytes 200 MiB, BrokerMaxWriteBytes 300 MiB) = %v, want nil", err)
	}
	bp.Close()
}

// TestMissingArgumentNamed checks that NewProducer, NewConsumer, NewRelay,
// Forward and Route given one missing argument name that one, as
// eventbus.ErrInvalid's doc promises (the message says which argument):
// they named every argument at once ("NewRelay needs a store, a producer
// made by NewProducer and options"), leaving the caller to find the nil one,
// and a Producer not made by NewProducer was told apart from a nil one only
// by its caller.
func TestMissingArgumentNamed(t *testing.T) {
	reg := registry(t)
	bus := newBus(t, nil)
	topic := newTopic(t, bus)
	store := newStore(t)
	brokers := []string{"127.0.0.1:1"}
	p := newProducer(t, reg, brokers)
	copts := &kafka.ConsumerOptions{Brokers: brokers, Group: "g"}
	ropts := &kafka.RelayOptions{Name: "r", Topic: "k"}
	c, err := kafka.NewConsumer(bus, reg, copts)
	if err != nil {
		t.Fatal(err)
	}
	noTopic := (*eventbus.Topic[Order])(nil)
	tests := []struct {
		name string
		err  error
		want string   // in the message
		not  []string // good arguments, or calls not made: not in the message
	}{
		{"NewProducer without registry", func() error { _, err := kafka.NewProducer(nil, &kafka.ProducerOptions{Brokers: brokers}); return err }(), "NewProducer: nil Registry", nil},
		{"NewConsumer without bus", func() error { _, err := kafka.NewConsumer(nil, reg, copts); return err }(), "NewConsumer: nil Bus", []string{"egistry", "options"}},
		{"NewConsumer without registry", func() error { _, err := kafka.NewConsumer(bus, nil, copts); return err }(), "NewConsumer: nil Registry", []string{"Bus", "options"}},
		{"NewConsumer without options", func() error { _, err := kafka.NewConsumer(bus, reg, nil); return err }(), "NewConsumer: nil options", []string{"Bus", "egistry"}},
		{"NewRelay without store", func() error { _, err := kafka.NewRelay(nil, p, ropts); return err }(), "NewRelay: nil Store", []string{"roducer", "options"}},
		{"NewRelay without producer", func() error { _, err := kafka.NewRelay(store, nil, ropts); return err }(), "NewRelay: nil Producer", []string{"Store", "options"}},
		{"NewRelay with a zero producer", func() error { _, err := kafka.NewRelay(store, new(kafka.Producer), ropts); return err }(), "NewRelay: a Producer not made by NewProducer", []string{"Store", "options"}},
		{"NewRelay without options", func() error { _, err := kafka.NewRelay(store, p, nil); return err }(), "NewRelay: nil options", []string{"Store", "roducer"}},
		{"Forward without producer", func() error { _, err := kafka.Forward(nil, topic, "k", nil); return err }(), `Forward to "k": nil Producer`, []string{"opic"}},
		{"Forward with a zero producer", func() error { _, err := kafka.Forward(new(kafka.Producer), topic, "k", nil); return err }(), `Forward to "k": a Producer not made by NewProducer`, []string{"opic"}},
		{"Forward without topic", func() error { _, err := kafka.Forward(p, noTopic, "k", nil); return err }(), `Forward to "k": nil Topic`, []string{"roducer"}},
		// Its SubscribeBatch refused it, naming a call the caller never
		// made, where Route names itself.
		{"Forward of a zero topic", func() error { _, err := kafka.Forward(p, new(eventbus.Topic[Order]), "k", nil); return err }(), `Forward to "k": a Topic not made by NewTopic`, []string{"SubscribeBatch", "roducer"}},
		{"Route without consumer", kafka.Route(nil, "k", topic), `Route("k"): nil Consumer`, []string{"Topic"}},
		{"Route without topic", kafka.Route(c, "k", noTopic), `Route("k"): nil Topic`, []string{"onsumer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fmt.Sprint(tt.err)
			if !errors.Is(tt.err, eventbus.ErrInvalid) || !strings.Contains(msg, tt.want) {
				t.Errorf("got %v, want ErrInvalid saying %q", tt.err, tt.want)
			}
			for _, good := range tt.not {
				if strings.Contains(msg, good) {
					t.Errorf("got %v, which names %s", tt.err, good)
				}
			}
		})
	}
}
