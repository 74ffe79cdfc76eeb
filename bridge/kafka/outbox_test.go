package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Shipped is version 1 of the event "order.shipped", as the outbox of the
// tests stores it.
type Shipped struct {
	Order string
	Seq   int
}

func (Shipped) EventType() string { return "order.shipped" }

// ShippedV2 is version 2 of "order.shipped", which the consuming side
// handles, upcasting version 1.
type ShippedV2 struct {
	Order string
	Seq   int
	Via   string
}

func (ShippedV2) EventType() string { return "order.shipped" }

// shipLog records what the consuming side's handler saw, and closes done
// once it has seen want events.
type shipLog struct {
	mu   sync.Mutex
	seqs map[string][]int // per key
	bad  []string
	n    int
	want int
	done chan struct{}
}

func (l *shipLog) handle(traceparent string) eventbus.Handler[ShippedV2] {
	return func(ctx context.Context, e eventbus.Event[ShippedV2]) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.seqs[e.Key] = append(l.seqs[e.Key], e.Payload.Seq)
		if e.Payload.Via != "v1" || eventbus.Traceparent(ctx) != traceparent || e.Metadata[kafka.MetadataEventID] == "" {
			l.bad = append(l.bad, fmt.Sprintf("%+v", e))
		}
		if l.n++; l.n == l.want {
			close(l.done)
		}
		return nil
	}
}

// TestOutboxAcrossRestarts takes the path of the README from one process to
// several: an Aggregate appends events to a FileStore, a Relay produces
// them to Kafka, and a Consumer feeds them to a bus whose subscription
// deduplicates by EventID over a ProcessedStore in a FileStore of its own.
// Both sides then restart: the outbox store is closed and reopened, and its
// relay resumes from a checkpoint before every event (a crash before the
// first save), so that it produces every event again; the consuming
// process starts over with a new bus over its reopened store. A poison
// record goes to the dead-letter topic. Every event is handled once, in
// order per key, upcast from version 1, with its trace context.
func TestOutboxAcrossRestarts(t *testing.T) {
	brokers, _, ctx := setup(t, "shipments", "shipments-dlt")
	outboxDir, processedDir := t.TempDir(), t.TempDir()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	const before, after = 40, 20 // events before the restarts and after

	regA, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Shipped](regA, nil); err != nil {
		t.Fatal(err)
	}
	regB, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Shipped](regB, nil); err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[ShippedV2](regB, &eventbus.TypeOptions{Version: 2}); err != nil {
		t.Fatal(err)
	}
	if err := eventbus.RegisterUpcaster(regB, func(s Shipped) (ShippedV2, error) {
		return ShippedV2{Order: s.Order, Seq: s.Seq, Via: "v1"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	openStore := func(dir string) *eventbus.FileStore {
		t.Helper()
		s, err := eventbus.OpenFileStore(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	p := newProducer(t, regA, brokers)
	log := &shipLog{seqs: make(map[string][]int), want: before, done: make(chan struct{})}

	// One run of each side: the outbox appends events [from, to) and its
	// relay produces them; the consuming process handles them.
	run := func(from, to int) {
		t.Helper()
		outbox := openStore(outboxDir)
		orders, err := eventbus.NewAggregate(outbox, regA, func(n int, _ Shipped) int { return n + 1 }, nil)
		if err != nil {
			t.Fatal(err)
		}
		tctx, err := eventbus.WithTraceparent(ctx, tp)
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			id := fmt.Sprintf("o%d", i%4)
			if _, err := orders.Execute(tctx, "order-"+id, func(n int) ([]Shipped, error) {
				return []Shipped{{Order: id, Seq: n}}, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		relay, err := kafka.NewRelay(outbox, p, &kafka.RelayOptions{Name: "shipments", Topic: "shipments"})
		if err != nil {
			t.Fatal(err)
		}
		relayErr, stopRelay := startRun(ctx, relay)

		bus := newBus(t, nil)
		processed := openStore(processedDir)
		topic, err := eventbus.NewTopic[ShippedV2](bus, "shipments", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := topic.Subscribe("shipping", log.handle(tp), &eventbus.SubscriptionOptions{
			Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{
				Key: kafka.EventID, Store: eventbus.NewStoreProcessed(processed),
			})},
		}); err != nil {
			t.Fatal(err)
		}
		c, err := kafka.NewConsumer(bus, regB, &kafka.ConsumerOptions{Brokers: brokers, Group: "shipping", DeadLetterTopic: "shipments-dlt"})
		if err != nil {
			t.Fatal(err)
		}
		if err := kafka.Route(c, "shipments", topic); err != nil {
			t.Fatal(err)
		}
		consumerErr, stopConsumer := startRun(ctx, c)
		// Every key has events in this run, after the duplicates of the
		// last: once they are handled, so is every record before them.
		awaitRunning(t, ctx, consumerErr, log.done, "the events handled")
		stopConsumer()
		if err := <-consumerErr; err != nil {
			t.Fatalf("Consumer.Run() = %v, want nil", err)
		}
		stopRelay()
		if err := <-relayErr; err != context.Canceled {
			t.Fatalf("Relay.Run() = %v, want %v", err, context.Canceled)
		}
		if err := bus.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := outbox.Close(); err != nil {
			t.Fatal(err)
		}
		if err := processed.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run(0, before)

	// The outbox crashes before its relay's first save: its next run
	// produces every event again.
	outbox := openStore(outboxDir)
	if err := kafka.StoreCheckpoints(outbox).Save(ctx, "shipments", 0); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Close(); err != nil {
		t.Fatal(err)
	}
	// A record that no bridge produced, in the partition of a key.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	poison := &kgo.Record{Topic: "shipments", Key: []byte("order-o1"), Value: []byte("{")}
	if err := cl.ProduceSync(ctx, poison).FirstErr(); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	log.want, log.done = before+after, make(chan struct{})
	log.mu.Unlock()
	run(before, before+after)

	log.mu.Lock()
	defer log.mu.Unlock()
	for _, b := range log.bad {
		t.Errorf("handled %s, want its payload upcast from version 1, traceparent %s and metadata %s", b, tp, kafka.MetadataEventID)
	}
	for i := range 4 {
		k := fmt.Sprintf("order-o%d", i)
		got := log.seqs[k]
		ok := len(got) == (before+after)/4
		for s := 0; ok && s < len(got); s++ {
			ok = got[s] == s
		}
		if !ok {
			t.Errorf("key %s: handled %v, want 0..%d once each in order", k, got, (before+after)/4-1)
		}
	}
	dl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("shipments-dlt"))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	f := dl.PollFetches(ctx)
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	if recs := f.Records(); len(recs) != 1 || string(recs[0].Value) != "{" {
		t.Errorf("dead-letter topic holds %d records, want the poison record", len(recs))
	}
	checkCommittedAll(t, ctx, brokers, "shipping", "shipments")
}
