package kafka_test

import (
	"context"
	"errors"
	"iter"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// passedStore is a Store that tells when its subscriptions report, with
// SubscribeOptions.Passed, that they have passed a position, once the
// subscriber has taken the report.
type passedStore struct {
	eventbus.Store
	mu      sync.Mutex
	next    uint64        // the latest report
	changed chan struct{} // closed, and replaced, at each report
}

func newPassedStore(s eventbus.Store) *passedStore {
	return &passedStore{Store: s, changed: make(chan struct{})}
}

func (s *passedStore) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	o := *opts
	if passed := o.Passed; passed != nil {
		o.Passed = func(next uint64) {
			passed(next)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.next = next
			close(s.changed)
			s.changed = make(chan struct{})
		}
	}
	return s.Store.Subscribe(ctx, &o)
}

// awaitPassed waits until a subscription of s has reported that it passed
// every position before next, and fails the test if ctx ends first.
func (s *passedStore) awaitPassed(t *testing.T, ctx context.Context, next uint64) {
	t.Helper()
	for {
		s.mu.Lock()
		got, changed := s.next, s.changed
		s.mu.Unlock()
		if got >= next {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the relay reported passing the positions before %d, want %d: %v", got, next, ctx.Err())
		}
	}
}

// appendAudit appends n events to the stream "audit", which the relays of
// these tests do not select, in one batch, and returns the position of the
// last one.
func appendAudit(t *testing.T, ctx context.Context, store eventbus.Store, n int) uint64 {
	t.Helper()
	events := make([]eventbus.EventData, n)
	for i := range events {
		events[i] = eventbus.EventData{ID: eventbus.NewID(), Type: "audit.logged", Data: []byte("{}")}
	}
	res, err := store.Append(ctx, "audit", eventbus.Any, events...)
	if err != nil {
		t.Fatal(err)
	}
	return res.Position
}

// awaitSave waits for a save of saves at or past next, and fails the test
// if Run returns or ctx ends first.
func awaitSave(t *testing.T, ctx context.Context, runErr <-chan error, saves <-chan uint64, next uint64) {
	t.Helper()
	for {
		select {
		case got := <-saves:
			if got >= next {
				return
			}
		case err := <-runErr:
			t.Fatalf("Run() = %v before it saved a checkpoint at %d", err, next)
		case <-ctx.Done():
			t.Fatalf("no checkpoint saved at %d: %v", next, ctx.Err())
		}
	}
}

// TestRelaySavesPassedUnselected runs a relay, caught up with its store,
// while 1,000 events that its filter does not select are appended: the
// store reports that the relay passed them (SubscribeOptions.Passed), and
// the relay saves its checkpoint past them, so that its next Run does not
// read them again; its own save, which it passes next, makes no save of
// its own, at the stop either, or an idle relay would append a checkpoint
// every CheckpointInterval for ever. A relay that moved its checkpoint
// over unselected events only when it first caught up kept it there, and
// each Run read again every event that the store took since: here it
// saved nothing past its first catch-up, until the test's context ended.
func TestRelaySavesPassedUnselected(t *testing.T) {
	c, reg, mem, ctx := relayCluster(t, nil)
	store := newPassedStore(mem)
	first := appendAudit(t, ctx, store, 1)
	saved := make(chan uint64, 16)
	cp := &savesLog{Checkpoints: kafka.StoreCheckpoints(store), saved: func(next uint64) { saved <- next }}
	relay, err := kafka.NewRelay(store, newProducer(t, reg, c.ListenAddrs()), &kafka.RelayOptions{
		Name: "r", Topic: "orders", Filter: eventbus.Filter{StreamPrefix: "order-"},
		Checkpoints: cp, CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	awaitSave(t, ctx, runErr, saved, first+1) // caught up
	last := appendAudit(t, ctx, store, 1000)
	awaitSave(t, ctx, runErr, saved, last+1)
	own, err := kafka.StoreCheckpoints(store).Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	var savedAt uint64 // the position of the relay's save of own
	for e, err := range store.ReadStream(ctx, "$checkpoint-kafka-relay:r", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		savedAt = e.Position
	}
	store.awaitPassed(t, ctx, savedAt+1)
	stop()
	if err := runReturned(t, ctx, runErr); !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want %v", err, context.Canceled)
	}
	if own != last+1 {
		t.Errorf("checkpoint %d, want %d, past the events not selected", own, last+1)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if want := []uint64{first + 1, last + 1}; !slices.Equal(cp.saves, want) {
		t.Errorf("saves %v, want %v: none for the relay's own save", cp.saves, want)
	}
}

// TestRelayPassesNoEventInFlight holds the record of a relay's one
// selected event unanswered, while 1,000 events that the relay does not
// select are appended after it and the store reports them passed: the
// checkpoint stays before the event in flight, at the stop too, so that
// the next Run produces it again. A checkpoint moved to the position
// passed would skip it, and the event would never reach Kafka.
func TestRelayPassesNoEventInFlight(t *testing.T) {
	c, reg, mem, ctx := relayCluster(t, nil)
	store := newPassedStore(mem)
	e := appendOrder(t, ctx, store, reg, "order-1", Order{Key: "o-1"})
	asked := silenceProduce(t, ctx, c, nil)
	cp := &savesLog{Checkpoints: kafka.StoreCheckpoints(store), saved: func(uint64) {}}
	relay, err := kafka.NewRelay(store, newProducer(t, reg, c.ListenAddrs()), &kafka.RelayOptions{
		Name: "r", Topic: "orders", Filter: eventbus.Filter{StreamPrefix: "order-"},
		Checkpoints: cp, CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	awaitRunning(t, ctx, runErr, asked, "the record sent")
	last := appendAudit(t, ctx, store, 1000)
	store.awaitPassed(t, ctx, last+1)
	stop()
	if err := runReturned(t, ctx, runErr); !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want %v", err, context.Canceled)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != e.Position {
		t.Errorf("Load() = %d, %v; want %d, the event in flight", next, err, e.Position)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.saves) != 0 {
		t.Errorf("saves %v, want none", cp.saves)
	}
}
