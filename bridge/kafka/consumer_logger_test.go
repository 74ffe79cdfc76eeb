package kafka_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerLogger runs a Consumer, with a Logger, on a Sync-mode bus
// whose handler fails, while Kafka fails its first offset commit
// (OFFSET_METADATA_TOO_LARGE, which franz-go does not retry) and its first
// heartbeat (UNKNOWN_MEMBER_ID, a member the group dropped): the
// Logger gets each, as ConsumerOptions.Logger's doc promises, with the
// group, or the record's topic, partition and offset, and the error; Run
// goes on and returns nil when stopped.
func TestConsumerLogger(t *testing.T) {
	checkNoLeaks(t)
	c, reg, ctx := groupCluster(t)
	brokers := c.ListenAddrs()
	publishOrders(t, ctx, brokers, reg, 1)
	const (
		commitFailed  = "kafka: commit failed; retrying at the next interval"
		handlerFailed = "kafka: handlers failed; the bus dead-lettered the event"
		sessionFailed = "kafka: consumer group session failed; rejoining"
	)
	logged := newLogRecorder(commitFailed, handlerFailed, sessionFailed)
	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic(t, bus)
	log := newOrderLog(t, 1)
	cc := &commitChecker{t: t, log: log, topic: "orders", failN: 1, failWith: kerr.OffsetMetadataTooLarge}
	cc.install(c)
	failGroupRequests(c, kmsg.Heartbeat, kerr.UnknownMemberID, 1)
	if _, err := orders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[Order]) error {
		_ = log.handle(ctx, e)
		return errors.New("handler fails")
	}, nil); err != nil {
		t.Fatal(err)
	}
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
		Brokers: brokers, Group: "g", CommitInterval: 5 * time.Millisecond, Logger: slog.New(logged),
		Client: []kgo.Opt{kgo.HeartbeatInterval(5 * time.Millisecond)},
	})
	for m, ch := range logged.want {
		select {
		case <-ch:
		case <-ended:
			t.Fatalf("Run() = %v before the Logger got %q", stop(), m)
		case <-ctx.Done():
			t.Fatalf("the Logger did not get %q", m)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	var partition string // of the one record
	for tp := range log.offsets {
		partition = strings.TrimPrefix(tp, "orders/")
	}
	want := map[string]map[string]string{
		commitFailed:  {"group": "g", "err": "err"},
		handlerFailed: {"topic": "orders", "partition": partition, "offset": "0", "err": "err"},
		sessionFailed: {"group": "g", "err": "err"},
	}
	if diff := cmp.Diff(want, logged.got); diff != "" {
		t.Errorf("logged (-want +got):\n%s", diff)
	}
}
