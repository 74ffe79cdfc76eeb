package kafka_test

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestConsumerGroupRetriable fails requests of the consumer group protocol
// with errors that clear as the coordinator recovers, or as the member
// joins the group again, while events stream in: Run rejoins and goes on,
// every event is handled in order, no commit goes beyond a handled record,
// and the group ends committed at the end. Each event is handled once, but
// after a heartbeat that fails otherwise than with a rebalance: franz-go
// then takes the partitions for lost, which the Consumer gives up without
// a commit (another member may own them already), so their records since
// the last commit may be handled again. A Consumer that took a member
// dropped by the group (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION) for a fatal
// error returns from Run before the last events.
func TestConsumerGroupRetriable(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		key       kmsg.Key
		fail      *kerr.Error
		exactOnce bool
	}{
		{kmsg.JoinGroup, kerr.CoordinatorNotAvailable, true},
		{kmsg.JoinGroup, kerr.NotCoordinator, true},
		{kmsg.SyncGroup, kerr.RebalanceInProgress, true},
		{kmsg.SyncGroup, kerr.CoordinatorLoadInProgress, true},
		{kmsg.OffsetFetch, kerr.CoordinatorLoadInProgress, true},
		{kmsg.OffsetFetch, kerr.CoordinatorNotAvailable, true},
		{kmsg.Heartbeat, kerr.RebalanceInProgress, true},
		{kmsg.Heartbeat, kerr.CoordinatorNotAvailable, false},
		{kmsg.Heartbeat, kerr.UnknownMemberID, false},
		{kmsg.Heartbeat, kerr.IllegalGeneration, false},
	} {
		t.Run(tc.key.Name()+" "+tc.fail.Message, func(t *testing.T) {
			c, reg, ctx := groupCluster(t)
			brokers := c.ListenAddrs()
			const events = 2000
			failedAll := failGroupRequests(c, tc.key, tc.fail, 3)
			bus := newBus(t, nil)
			orders := newTopic(t, bus)
			log := newOrderLog(t, events)
			cc := &commitChecker{t: t, log: log, topic: "orders"}
			cc.install(c)
			if _, err := orders.Subscribe("shipping", log.handle, nil); err != nil {
				t.Fatal(err)
			}
			stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "shipping", CommitInterval: 5 * time.Millisecond,
				// Heartbeats fail while the first events stream in.
				Client: []kgo.Opt{kgo.HeartbeatInterval(5 * time.Millisecond)},
			})
			perKey := make(map[string]int)
			forwardOrders(t, ctx, brokers, reg, events/2, 50, perKey)
			await(t, ctx, failedAll, "the failures of "+tc.key.Name())
			forwardOrders(t, ctx, brokers, reg, events/2, 50, perKey)
			select {
			case <-log.done:
			case <-ended:
				t.Fatalf("Run() = %v before every event was handled", stop())
			case <-ctx.Done():
				t.Fatal("not every event was handled")
			}
			if err := stop(); err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			if tc.exactOnce {
				log.checkExactlyOnce(t, perKey)
			} else {
				log.checkInOrder(t, perKey)
			}
			checkCommittedAll(t, ctx, brokers, "shipping", "orders")
		})
	}
}

// TestConsumerGroupFatal fails requests of the consumer group protocol, all
// of them, with errors that no retry clears: Run returns on its own an
// error that names the group and matches Kafka's. franz-go retries such a
// group for ever, and Run went on, consuming nothing, saying nothing but
// "fetch failed" to its Logger.
func TestConsumerGroupFatal(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		key  kmsg.Key
		fail *kerr.Error
	}{
		{kmsg.JoinGroup, kerr.GroupAuthorizationFailed},
		{kmsg.JoinGroup, kerr.InvalidGroupID},
		{kmsg.JoinGroup, kerr.InconsistentGroupProtocol},
		{kmsg.SyncGroup, kerr.GroupAuthorizationFailed},
		{kmsg.OffsetFetch, kerr.GroupAuthorizationFailed},
		{kmsg.Heartbeat, kerr.GroupAuthorizationFailed},
	} {
		t.Run(tc.key.Name()+" "+tc.fail.Message, func(t *testing.T) {
			c, reg, ctx := groupCluster(t)
			failGroupRequests(c, tc.key, tc.fail, -1)
			bus := newBus(t, nil)
			orders := newTopic(t, bus)
			stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
				Brokers: c.ListenAddrs(), Group: "shipping",
				Client: []kgo.Opt{kgo.HeartbeatInterval(5 * time.Millisecond)},
			})
			await(t, ctx, ended, "Run returning")
			err := stop()
			if !errors.Is(err, tc.fail) || !strings.Contains(err.Error(), `group "shipping"`) {
				t.Errorf("Run() = %v, want an error naming group \"shipping\" and matching %v", err, tc.fail)
			}
		})
	}
}

// TestConsumerPartitionFatal answers every OffsetFetch with
// TOPIC_AUTHORIZATION_FAILED for each partition, as Kafka does for a group
// that may read its offsets but not the topic: franz-go reports each
// partition's error once and leaves the partition out of the assignment,
// so that no member consumes it until the next rebalance. Run returns an
// error naming the group and the partition and matching Kafka's, as for a
// group Kafka refuses; it went on, saying "fetch failed" to its Logger, and consumed
// nothing.
func TestConsumerPartitionFatal(t *testing.T) {
	checkNoLeaks(t)
	c, reg, ctx := groupCluster(t)
	c.ControlKey(int16(kmsg.OffsetFetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.SetVersion(req.GetVersion())
		for _, g := range req.(*kmsg.OffsetFetchRequest).Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group = g.Group
			for _, tp := range g.Topics {
				rt := kmsg.NewOffsetFetchResponseGroupTopic()
				rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
				for _, p := range tp.Partitions {
					rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					rp.Partition, rp.ErrorCode = p, kerr.TopicAuthorizationFailed.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				rg.Topics = append(rg.Topics, rt)
			}
			resp.Groups = append(resp.Groups, rg)
		}
		return resp, nil, true
	})
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: c.ListenAddrs(), Group: "shipping"})
	await(t, ctx, ended, "Run returning")
	err := stop()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) || !strings.Contains(err.Error(), `group "shipping": partition orders/`) {
		t.Errorf("Run() = %v, want an error naming group \"shipping\" and a partition of orders, matching %v", err, kerr.TopicAuthorizationFailed)
	}
}

// TestConsumerGroupFullWaits runs a second Consumer in a group that Kafka
// holds to one member (group.max.size): Kafka refuses it
// (GROUP_MAX_SIZE_REACHED), which the Consumer does not take for fatal,
// since the group makes room once a member leaves. It waits as a standby,
// logging each refusal and handling nothing, and takes over the partitions
// once the first member stops, from the offsets that member committed.
func TestConsumerGroupFullWaits(t *testing.T) {
	c, ctx := oneBroker(t, kfake.SeedTopics(8, "orders"), kfake.BrokerConfigs(map[string]string{"group.max.size": "1"}))
	brokers, reg := c.ListenAddrs(), registry(t)
	opts := func(logger *slog.Logger) *kafka.ConsumerOptions {
		return &kafka.ConsumerOptions{Brokers: brokers, Group: "shipping", CommitInterval: 5 * time.Millisecond, Logger: logger}
	}
	const events = 200
	perKey := make(map[string]int)

	first := newBus(t, nil)
	firstOrders := newTopic(t, first)
	firstLog := logOrders(t, firstOrders, events)
	stopFirst, firstEnded := consume(t, ctx, first, firstOrders, reg, opts(nil))
	forwardOrders(t, ctx, brokers, reg, events, 10, perKey)
	firstLog.wait(t, ctx)

	const refused = "kafka: consumer group session failed; rejoining"
	logged := newLogRecorder(refused)
	standby := newBus(t, nil)
	standbyOrders := newTopic(t, standby)
	standbyLog := logOrders(t, standbyOrders, events)
	stopStandby, standbyEnded := consume(t, ctx, standby, standbyOrders, reg, opts(slog.New(logged)))
	select {
	case <-logged.want[refused]:
	case <-standbyEnded:
		t.Fatalf("the standby's Run() = %v, want it to wait for room in the group", stopStandby())
	case <-ctx.Done():
		t.Fatal("the standby did not log Kafka's refusal")
	}
	logged.mu.Lock()
	err := logged.errs[refused]
	logged.mu.Unlock()
	if !errors.Is(err, kerr.GroupMaxSizeReached) {
		t.Fatalf("the standby logged %v, want Kafka's refusal %v", err, kerr.GroupMaxSizeReached)
	}
	select {
	case <-firstEnded:
		t.Fatalf("the first member's Run() = %v while the standby waited", stopFirst())
	default:
	}
	if err := stopFirst(); err != nil {
		t.Fatalf("the first member's Run() = %v, want nil", err)
	}

	before := maps.Clone(perKey)
	forwardOrders(t, ctx, brokers, reg, events, 10, perKey)
	standbyLog.wait(t, ctx)
	if err := stopStandby(); err != nil {
		t.Fatalf("the standby's Run() = %v, want nil", err)
	}
	standbyLog.mu.Lock()
	defer standbyLog.mu.Unlock()
	for k, n := range perKey {
		if got, want := standbyLog.seqs[k], seqRange(before[k], n); !slices.Equal(got, want) {
			t.Errorf("key %s: the standby handled %v, want %v: the events after the first member's commits, once each", k, abbreviate(got), abbreviate(want))
		}
	}
}

// seqRange returns the sequence numbers from to to, not included.
func seqRange(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
