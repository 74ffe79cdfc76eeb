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
