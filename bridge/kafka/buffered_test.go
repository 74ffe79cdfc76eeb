package kafka_test

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// blockLog is a franz-go logger that tells when a Produce blocks, over
// the client's limit of buffered records: franz-go logs it (at Debug, its
// message beginning "blocking Produce"), and has no hook for it.
type blockLog chan struct{}

func (blockLog) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (b blockLog) Log(_ kgo.LogLevel, msg string, _ ...any) {
	if strings.HasPrefix(msg, "blocking Produce") {
		select {
		case b <- struct{}{}:
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
	buffered, blocked := make(eachBuffered, 3), make(blockLog, 1)
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
	await(t, ctx, blocked, "the third Produce blocking, over MaxBufferedRecords 2 with no record answered")
	close(release)
	for range 3 {
		if err := <-published; err != nil {
			t.Errorf("Publish() = %v, want nil", err)
		}
	}
}
