package kafka_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestDurationDefaults makes a Consumer and a Relay of zero options (but
// the required ones) and of set ones: the zero durations and caps take the
// defaults the options' docs give (CommitInterval one second,
// MaxPollRecords 1,000, DrainTimeout 30 seconds; CheckpointInterval one
// second, MaxInFlight 10,000), and set ones are kept. A default duration is
// read off the Consumer, as waiting it out is no test; the effect of each
// is proven with a set value (TestBrokerFaults, TestRebalanceDrainTimeout,
// TestRelayMaxInFlight, ...), and the caps' defaults by behaviour too
// (TestConsumerMaxPollRecords, TestRelayMaxInFlightDefault).
func TestDurationDefaults(t *testing.T) {
	checkNoLeaks(t)
	reg := registry(t)
	bus := newBus(t, nil)
	brokers := []string{"127.0.0.1:1"} // never dialled
	type resolved struct {
		CommitInterval, DrainTimeout, CheckpointInterval time.Duration
		MaxPollRecords, MaxInFlight                      int
	}
	for _, tc := range []struct {
		name string
		set  resolved
		want resolved
	}{
		{"zero", resolved{}, resolved{time.Second, 30 * time.Second, time.Second, 1000, 10_000}},
		{"set", resolved{time.Minute, time.Hour, time.Millisecond, 7, 3}, resolved{time.Minute, time.Hour, time.Millisecond, 7, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "g",
				CommitInterval: tc.set.CommitInterval, DrainTimeout: tc.set.DrainTimeout, MaxPollRecords: tc.set.MaxPollRecords,
			})
			if err != nil {
				t.Fatal(err)
			}
			r, err := kafka.NewRelay(newStore(t), newProducer(t, reg, brokers), &kafka.RelayOptions{
				Name: "r", Topic: "orders",
				CheckpointInterval: tc.set.CheckpointInterval, MaxInFlight: tc.set.MaxInFlight,
			})
			if err != nil {
				t.Fatal(err)
			}
			co, ro := kafka.ConsumerOptionsOf(c), kafka.RelayOptionsOf(r)
			got := resolved{co.CommitInterval, co.DrainTimeout, ro.CheckpointInterval, co.MaxPollRecords, ro.MaxInFlight}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("options run with (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProducerDefaults makes Producers of zero options (but Brokers) and of
// set ones, and reads the franz-go client's options off it: Linger 5ms,
// none for a negative one; MaxBufferedRecords 10,000; franz-go's own batch
// limit of 1MB; acks from all in-sync replicas, idempotent, as
// ProducerOptions' doc says; set values are kept. The wait of a linger,
// too short to tell from a slow machine's scheduling, is read off the
// client; TestProducerMaxBufferedRecordsDefault proves the cap by its
// effect.
func TestProducerDefaults(t *testing.T) {
	checkNoLeaks(t)
	reg := registry(t)
	type client struct {
		Linger         time.Duration
		MaxBuffered    int64
		BatchMaxBytes  int32
		AllISRAcks     bool
		IdempotenceOff bool
	}
	for _, tc := range []struct {
		name string
		opts kafka.ProducerOptions
		want client
	}{
		{"zero", kafka.ProducerOptions{}, client{5 * time.Millisecond, 10_000, 1_000_012, true, false}},
		{"no linger", kafka.ProducerOptions{Linger: -1}, client{0, 10_000, 1_000_012, true, false}},
		{"set", kafka.ProducerOptions{Linger: 20 * time.Millisecond, MaxBufferedRecords: 3, BatchMaxBytes: 4096}, client{20 * time.Millisecond, 3, 4096, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook := &newClientHook{}
			opts := tc.opts
			opts.Brokers, opts.Client = []string{"127.0.0.1:1"}, []kgo.Opt{kgo.WithHooks(hook)}
			p, err := kafka.NewProducer(reg, &opts)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			cl := hook.cl
			got := client{
				Linger:         cl.OptValue(kgo.ProducerLinger).(time.Duration),
				MaxBuffered:    cl.OptValue(kgo.MaxBufferedRecords).(int64),
				BatchMaxBytes:  cl.OptValue(kgo.ProducerBatchMaxBytes).(int32),
				AllISRAcks:     cl.OptValue(kgo.RequiredAcks) == kgo.AllISRAcks(),
				IdempotenceOff: cl.OptValue(kgo.DisableIdempotentWrite).(bool),
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("franz-go options (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProducerMaxBufferedRecordsDefault relays 10,001 events of as many
// streams, with a MaxInFlight above that, while Kafka holds back the
// topic's metadata so that no record is answered: the relay's Produce of
// the 10,001st record blocks, and none before it, as
// ProducerOptions.MaxBufferedRecords's default, 10,000, says; once Kafka
// answers, every event is written.
func TestProducerMaxBufferedRecordsDefault(t *testing.T) {
	const limit = 10_000
	var given atomic.Int64
	blocked := franzLog{"blocking Produce", make(chan struct{}, 1)}
	counted := produceHooks{buffered: func(string) { given.Add(1) }, unbuffered: func(string, error) {}}
	popts := kafka.ProducerOptions{Client: []kgo.Opt{kgo.WithHooks(counted), kgo.WithLogger(blocked)}}
	relayHeld(t, limit+1, popts, kafka.RelayOptions{MaxInFlight: 2 * limit}, func(ctx context.Context, release chan<- struct{}) {
		await(t, ctx, blocked.c, "a Produce blocking, over the default MaxBufferedRecords")
		// franz-go calls the hook as Produce begins, before it counts
		// the record against the limit; the relay produces one at a
		// time.
		if n := given.Load(); n != limit+1 {
			t.Errorf("Produce blocked once franz-go was given %d records, want %d", n, limit+1)
		}
		close(release)
	})
}

// TestRelayMaxInFlightDefault relays 10,001 events of as many streams,
// through a Producer that buffers more, while Kafka holds back the
// topic's metadata so that no record is acknowledged: the relay reads
// 10,000 events (it calls Key for each once it has taken a place in its
// window) and the 10,001st only after an acknowledgement, as
// RelayOptions.MaxInFlight's default, 10,000, says.
func TestRelayMaxInFlightDefault(t *testing.T) {
	const limit = 10_000
	var read, acked atomic.Int64
	full := make(chan struct{})
	ropts := kafka.RelayOptions{Key: func(e eventbus.RecordedEvent) string {
		switch n := read.Add(1); {
		case n == limit:
			close(full)
		case n > limit && acked.Load() == 0:
			t.Errorf("the relay read event %d with none acknowledged, want %d at most", n, limit)
		}
		return e.Stream
	}}
	counted := produceHooks{buffered: func(string) {}, unbuffered: func(string, error) { acked.Add(1) }}
	popts := kafka.ProducerOptions{MaxBufferedRecords: 2 * limit, Client: []kgo.Opt{kgo.WithHooks(counted)}}
	relayHeld(t, limit+1, popts, ropts, func(ctx context.Context, release chan<- struct{}) {
		await(t, ctx, full, "the relay reading 10,000 events")
		close(release)
	})
}
