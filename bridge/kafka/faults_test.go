package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// failProduce makes every other produce request fail, up to n failures, by
// dropping the connection it came on, as a broker that crashes before
// answering does; it returns the count of failures.
func failProduce(c *kfake.Cluster, n int64) *atomic.Int64 {
	var seen, failed atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if seen.Add(1)%2 == 0 || failed.Load() >= n {
			return nil, nil, false
		}
		failed.Add(1)
		return nil, errors.New("injected fault"), true
	})
	return &failed
}

// commitChecker watches every offset commit of group on the single topic of
// a test: it fails the test if one commits beyond a record not yet handled,
// and makes every other commit fail, up to failN failures, with failWith
// (nil means COORDINATOR_LOAD_IN_PROGRESS, which franz-go retries).
type commitChecker struct {
	t        testing.TB
	log      *orderLog
	topic    string
	failN    int64
	failWith *kerr.Error
	seen     atomic.Int64
	failed   atomic.Int64
	checked  atomic.Int64
}

func (cc *commitChecker) install(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if cc.seen.Add(1)%2 == 1 && cc.failed.Load() < cc.failN {
			cc.failed.Add(1)
			resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
			resp.Version = r.Version
			for _, rt := range r.Topics {
				st := kmsg.NewOffsetCommitResponseTopic()
				st.Topic, st.TopicID = rt.Topic, rt.TopicID
				for _, rp := range rt.Partitions {
					sp := kmsg.NewOffsetCommitResponseTopicPartition()
					sp.Partition = rp.Partition
					sp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
					if cc.failWith != nil {
						sp.ErrorCode = cc.failWith.Code
					}
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			return resp, nil, true
		}
		for _, rt := range r.Topics { // v10+ names topics by ID: the test has one
			for _, rp := range rt.Partitions {
				tp := cc.topic + "/" + strconv.Itoa(int(rp.Partition))
				if missing, ok := cc.log.handledBelow(tp, rp.Offset); !ok {
					cc.t.Errorf("commit of %s at offset %d before offset %d was handled", tp, rp.Offset, missing)
				}
				cc.checked.Add(1)
			}
		}
		return nil, nil, false
	})
}

// forwardOrders publishes events over keys through a bus forwarding to the
// Kafka topic "orders", counting them per key in perKey.
func forwardOrders(t testing.TB, ctx context.Context, brokers []string, reg *eventbus.Registry, events, keys int, perKey map[string]int) {
	t.Helper()
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	forward(t, reg, orders, "orders", &kafka.ProducerOptions{Brokers: brokers, Client: []kgo.Opt{
		// A failed produce waits for a metadata refresh, at most this often.
		kgo.MetadataMinAge(10 * time.Millisecond),
	}}, &eventbus.SubscriptionOptions{Workers: 4, Retry: &eventbus.RetryPolicy{MaxAttempts: 10, InitialDelay: time.Millisecond}})
	for i := range events {
		k := fmt.Sprintf("k%03d", i%keys)
		if err := orders.Publish(ctx, Order{Key: k, Seq: perKey[k]}); err != nil {
			t.Fatal(err)
		}
		perKey[k]++
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bus.DeadLetters().Len(); n != 0 {
		t.Fatalf("forwarding dead-lettered %d events, want 0", n)
	}
}

// TestBrokerFaults fails produce requests and offset commits: the producer
// and the consumer retry, every event is handled once and in order, no commit
// goes beyond a handled record, and the group ends committed at the end.
func TestBrokerFaults(t *testing.T) {
	checkNoLeaks(t)
	c := cluster(t, "orders")
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceFailures := failProduce(c, 20)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := newOrderLog(t, 5000)
	cc := &commitChecker{t: t, log: log, topic: "orders", failN: 10}
	cc.install(c)
	if _, err := orders.Subscribe("shipping", log.handle, nil); err != nil {
		t.Fatal(err)
	}
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "shipping", CommitInterval: 5 * time.Millisecond})

	perKey := make(map[string]int)
	forwardOrders(t, ctx, brokers, reg, 5000, 100, perKey)
	log.wait(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	log.checkExactlyOnce(t, perKey)
	checkCommittedAll(t, ctx, brokers, "shipping", "orders")
	if produceFailures.Load() == 0 || cc.failed.Load() == 0 || cc.checked.Load() == 0 {
		t.Errorf("failed %d produce requests and %d commits, checked %d committed offsets; want some of each", produceFailures.Load(), cc.failed.Load(), cc.checked.Load())
	}
}

// TestRebalance runs a second consumer of the group while the first one
// consumes, then stops it: every event is handled, in order per key (records
// handled again after the handover only repeat a run), no commit goes beyond
// a handled record, and the group ends committed at the end.
func TestRebalance(t *testing.T) {
	checkNoLeaks(t)
	const events, keys = 6000, 200
	c := cluster(t, "orders")
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := newOrderLog(t, events)
	cc := &commitChecker{t: t, log: log, topic: "orders"}
	cc.install(c)

	// consumer starts a member of the group on a bus of its own, and
	// returns a channel closed when it was first assigned partitions and
	// one closed when it first handled an event.
	consumer := func() (assigned, handled chan struct{}, stop func() error) {
		bus := newBus(t, nil)
		orders := newTopic(t, bus)
		assigned, handled = make(chan struct{}), make(chan struct{})
		var once, onceH sync.Once
		if _, err := orders.Subscribe("shipping", func(ctx context.Context, e eventbus.Event[Order]) error {
			onceH.Do(func() { close(handled) })
			return log.handle(ctx, e)
		}, nil); err != nil {
			t.Fatal(err)
		}
		stop, _ = consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
			Brokers: brokers, Group: "shipping", CommitInterval: 10 * time.Millisecond,
			Client: []kgo.Opt{kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				if len(m) > 0 {
					once.Do(func() { close(assigned) })
				}
			})},
		})
		return assigned, handled, stop
	}
	waitFor := func(ch chan struct{}, what string) {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		}
	}

	aAssigned, _, stopA := consumer()
	waitFor(aAssigned, "a assigned")
	perKey := make(map[string]int)
	forwardOrders(t, ctx, brokers, reg, events/3, keys, perKey)

	bAssigned, bHandled, stopB := consumer()
	waitFor(bAssigned, "b assigned")
	forwardOrders(t, ctx, brokers, reg, events/3, keys, perKey)
	waitFor(bHandled, "b handled an event")
	if err := stopB(); err != nil {
		t.Fatalf("b: Run() = %v, want nil", err)
	}
	forwardOrders(t, ctx, brokers, reg, events/3, keys, perKey)
	log.wait(t, ctx)
	if err := stopA(); err != nil {
		t.Fatalf("a: Run() = %v, want nil", err)
	}
	log.checkInOrder(t, perKey)
	checkCommittedAll(t, ctx, brokers, "shipping", "orders")
	if cc.checked.Load() == 0 {
		t.Error("no commit checked")
	}
}

// TestRebalanceDrainTimeout starts a second member of the group while the
// first member's handler runs on: the first member gives partitions up to
// it after DrainTimeout. A periodic commit, waiting for the bus to handle
// the record, held the lock of the commits for as long as the handler
// ran, and the rebalance waited for the lock before its own DrainTimeout
// began: the second member was assigned nothing until the handler
// returned.
func TestRebalanceDrainTimeout(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	publishOrders(t, ctx, brokers, reg, 1)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	started, release := holdHandling(t, orders, nil)
	stop, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g", CommitInterval: time.Millisecond, DrainTimeout: 100 * time.Millisecond})
	defer func() {
		close(release)
		if err := stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the record was not handled")
	}

	assigned := make(chan struct{})
	var once sync.Once
	other, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m) > 0 {
				once.Do(func() { close(assigned) })
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	select {
	case <-assigned:
	case <-ctx.Done():
		t.Fatal("the second member was assigned no partition while the first member's handler ran")
	}
}
