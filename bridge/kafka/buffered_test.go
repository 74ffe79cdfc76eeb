package kafka_test

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// franzLog is a franz-go logger that tells, on c, when franz-go logs a
// message (at Debug or above) that begins with prefix: franz-go has hooks
// for neither a Produce that blocks nor a broker it cannot dial.
type franzLog struct {
	prefix string
	c      chan struct{}
}

func (franzLog) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (l franzLog) Log(_ kgo.LogLevel, msg string, _ ...any) {
	if strings.HasPrefix(msg, l.prefix) {
		select {
		case l.c <- struct{}{}:
		default:
		}
	}
}

// TestProducerMaxBufferedRecords forwards three events of three keys at
// once, from three Sync-mode publishers, through a Producer whose
// MaxBufferedRecords is 2, while Kafka holds back the topic's metadata so
// that no record is sent: the third Produce blocks, as the option's doc
// says, rather than being buffered beside the two unanswered; once Kafka
// answers, all three are written.
func TestProducerMaxBufferedRecords(t *testing.T) {
	c, ctx := ordersCluster(t)
	reg := registry(t)
	release := make(chan struct{})
	holdMetadata(ctx, c, "orders", release)
	buffered, blocked := make(eachBuffered, 3), franzLog{"blocking Produce", make(chan struct{}, 1)}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: c.ListenAddrs(), MaxBufferedRecords: 2,
		Client: []kgo.Opt{kgo.WithHooks(buffered), kgo.WithLogger(blocked)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	if _, err := kafka.Forward(p, orders, "orders", nil); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 3)
	for _, key := range []string{"a", "b", "c"} {
		go func() { published <- orders.Publish(ctx, Order{Key: key}) }()
	}
	// franz-go calls the hook as Produce begins, before it counts the
	// record against the limit.
	for range 3 {
		await(t, ctx, buffered, "a record given to franz-go")
	}
	await(t, ctx, blocked.c, "the third Produce blocking, over MaxBufferedRecords 2 with no record answered")
	close(release)
	for range 3 {
		if err := <-published; err != nil {
			t.Errorf("Publish() = %v, want nil", err)
		}
	}
}
