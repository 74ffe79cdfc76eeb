package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestUnroutedTopic consumes, because of an option in
// ConsumerOptions.Client, a topic that has no Route: its record is a bad
// record, sent to the dead-letter topic (and committed) if there is one, else
// stopping Run with an error; it does not panic. Nor does it go round for
// ever when the topic is the dead-letter topic itself: Run stops.
func TestUnroutedTopic(t *testing.T) {
	checkNoLeaks(t)
	const want = `topic "other" is not routed`
	for name, deadLetter := range map[string]string{"no dead-letter topic": "", "dead-letter topic": "dead", "its own dead-letter topic": "other"} {
		t.Run(name, func(t *testing.T) {
			c := cluster(t, "orders", "other", "dead")
			brokers := c.ListenAddrs()
			reg := registry(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// A well-formed event on the Kafka topic "other".
			src := newBus(t, nil)
			srcOrders := newTopic(t, src)
			forward(t, reg, srcOrders, "other", &kafka.ProducerOptions{Brokers: brokers}, nil)
			if err := srcOrders.Publish(ctx, Order{Key: "k"}); err != nil {
				t.Fatal(err)
			}
			if err := src.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if n := src.DeadLetters().Len(); n != 0 {
				t.Fatalf("forwarding dead-lettered %d events, want 0", n)
			}

			bus := newBus(t, nil)
			orders := newTopic(t, bus)
			cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "g", DeadLetterTopic: deadLetter, CommitInterval: 10 * time.Millisecond,
				Client: []kgo.Opt{kgo.ConsumeTopics("orders", "other")},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := kafka.Route(cons, "orders", orders); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			runErr := make(chan error, 1)
			ran := make(chan struct{})
			go func() {
				defer close(ran)
				runErr <- cons.Run(runCtx)
			}()
			// On every path, a failed one too, Run ends before the bus and
			// the cluster close.
			defer func() { stop(); <-ran }()

			if deadLetter != "dead" {
				select {
				case err := <-runErr:
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("Run() = %v, want an error saying %s", err, want)
					}
				case <-ctx.Done():
					stop()
					t.Fatalf("Run() did not stop on the unrouted record; then returned %v", <-runErr)
				}
				return
			}

			dl := readOne(t, ctx, brokers, deadLetter)
			headers := make(map[string]string)
			for _, h := range dl.Headers {
				headers[h.Key] = string(h.Value)
			}
			if headers["eventbus-error"] != want || headers[kafka.MetadataTopic] != "other" {
				t.Errorf("dead-lettered record's headers: eventbus-error %q, %s %q; want %q, %q",
					headers["eventbus-error"], kafka.MetadataTopic, headers[kafka.MetadataTopic], want, "other")
			}
			stop()
			if err := <-runErr; err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			checkCommittedAll(t, ctx, brokers, "g", "other")
		})
	}
}

// readOne returns the first record of topic.
func readOne(t testing.TB, ctx context.Context, brokers []string, topic string) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no record on %s: %v", topic, ctx.Err())
		}
		if rs := fetches.Records(); len(rs) > 0 {
			return rs[0]
		}
	}
}
