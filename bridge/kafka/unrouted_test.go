package kafka_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestUnroutedTopic consumes, because of an option in
// ConsumerOptions.Client, a topic that has no Route: its record is a bad
// record, sent to the dead-letter topic (and committed) if there is one, else
// stopping Run with an error; it does not panic. Nor does it go round for
// ever when the topic is the dead-letter topic itself: it is logged, and
// skipped.
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
			logged := make(chan string, 1)
			stop, ended := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{
				Brokers: brokers, Group: "g", DeadLetterTopic: deadLetter, CommitInterval: 10 * time.Millisecond,
				Client: []kgo.Opt{kgo.ConsumeTopics("orders", "other")},
				Logger: slog.New(errorSignal(logged)),
			})

			switch deadLetter {
			case "other":
				select {
				case msg := <-logged:
					if !strings.Contains(msg, "dead-letter topic itself") {
						t.Errorf("logged %q, want a word on skipping a record of the dead-letter topic", msg)
					}
				case <-ended:
					t.Fatalf("Run() = %v before skipping the record", stop())
				case <-ctx.Done():
					t.Fatal("the record of the dead-letter topic was not skipped")
				}
				if err := stop(); err != nil {
					t.Fatalf("Run() = %v, want nil", err)
				}
				checkCommittedAll(t, ctx, brokers, "g", "other")
				if n := countRecords(t, ctx, brokers, "other"); n != 1 {
					t.Errorf("the dead-letter topic holds %d records, want the 1 forwarded", n)
				}
				return
			case "":
				select {
				case <-ended:
					if err := stop(); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), want) {
						t.Fatalf("Run() = %v, want an error wrapping ErrInvalid saying %s", err, want)
					}
				case <-ctx.Done():
					t.Fatalf("Run() did not stop on the unrouted record; then returned %v", stop())
				}
				return
			}

			dl := readOne(t, ctx, brokers, deadLetter)
			headers := make(map[string]string)
			for _, h := range dl.Headers {
				headers[h.Key] = string(h.Value)
			}
			if !strings.HasSuffix(headers["eventbus-error"], want) || headers[kafka.MetadataTopic] != "other" {
				t.Errorf("dead-lettered record's headers: eventbus-error %q, %s %q; want %q, %q",
					headers["eventbus-error"], kafka.MetadataTopic, headers[kafka.MetadataTopic], want, "other")
			}
			if err := stop(); err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			checkCommittedAll(t, ctx, brokers, "g", "other")
		})
	}
}

// errorSignal is a slog.Handler that sends the message of each record at
// level Error or above on ch, if ch has room.
type errorSignal chan string

func (h errorSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h errorSignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h errorSignal) WithGroup(string) slog.Handler            { return h }

func (h errorSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		select {
		case h <- r.Message:
		default:
		}
	}
	return nil
}

// countRecords returns the number of records in topic, from its end
// offsets.
func countRecords(t testing.TB, ctx context.Context, brokers []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(e kadm.ListedOffset) { n += e.Offset })
	return n
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
