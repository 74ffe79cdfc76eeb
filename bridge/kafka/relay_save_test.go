package kafka_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// failingSaves is Checkpoints whose Save fails with err, and tells saving
// the position of its first call, if saving has room.
type failingSaves struct {
	kafka.Checkpoints
	err    error
	saving chan uint64
}

func (c failingSaves) Save(_ context.Context, _ string, next uint64) error {
	select {
	case c.saving <- next:
	default:
	}
	return c.err
}

// TestRelayStopsAtFailedSave runs a relay whose checkpoint store fails
// every save: Run stops at the first periodic save that fails, and returns
// an error wrapping the store's, as its doc says (the checkpoint store
// failing ends it), not the stop of its context. A relay that went on past
// a failed save, relaying with a checkpoint that no longer moved, ran
// until its context ended (here the test's, 30 seconds).
func TestRelayStopsAtFailedSave(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	errSave := errors.New("checkpoint store down")
	p := newProducer(t, reg, c.ListenAddrs())
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r", Topic: "orders", CheckpointInterval: time.Millisecond,
		Checkpoints: failingSaves{Checkpoints: kafka.StoreCheckpoints(store), err: errSave},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	if !errors.Is(err, errSave) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run() = %v, want the failed save's error, before its context ended", err)
	}
}

// TestRelayReportsFailedFinalSave stops a relay, whose CheckpointInterval
// is an hour, once its record is written: the save that Run makes before
// it returns fails, and Run returns the stop's error joined with the
// save's, so that the caller knows that the next Run will produce the
// record again. A Run that dropped the final save's error returned the
// stop's alone, as after a save that worked.
func TestRelayReportsFailedFinalSave(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	e := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	hook := produced{buffered: make(chan struct{}, 1), written: make(chan struct{}, 1)}
	p := newProducer(t, reg, c.ListenAddrs(), kgo.WithHooks(hook))
	errSave := errors.New("checkpoint store down")
	saving := make(chan uint64, 1)
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r", Topic: "orders", CheckpointInterval: time.Hour,
		Checkpoints: failingSaves{Checkpoints: kafka.StoreCheckpoints(store), err: errSave, saving: saving},
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, relay)
	defer stop()
	awaitRunning(t, ctx, runErr, hook.written, "the record written")
	stop()
	err = <-runErr
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errSave) {
		t.Errorf("Run() = %v, want the stop's %v joined with the failed save's %v", err, context.Canceled, errSave)
	}
	if next := <-saving; next != e.Position+1 {
		t.Errorf("the final save was of %d, want %d, past the record written", next, e.Position+1)
	}
}

// savesLog is Checkpoints that logs the positions saved.
type savesLog struct {
	kafka.Checkpoints
	mu    sync.Mutex
	saves []uint64
	saved func(next uint64)
}

func (c *savesLog) Save(ctx context.Context, name string, next uint64) error {
	err := c.Checkpoints.Save(ctx, name, next)
	if err == nil {
		c.mu.Lock()
		c.saves = append(c.saves, next)
		c.mu.Unlock()
		c.saved(next)
	}
	return err
}

// TestRelaySavesOnlyProgress stops a relay from within its first save,
// past its one event: the save that Run makes before it returns has
// nothing new to save, and saves nothing. Checkpoints' doc promises
// positions that only grow, and StoreCheckpoints appends an event per
// save: a relay that saved its position again at its stop (or at every
// CheckpointInterval while idle) kept appending events that said nothing
// new, and a FileStore's retention keeps a checkpoint only while saves
// come (see Relay).
func TestRelaySavesOnlyProgress(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	e := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	p := newProducer(t, reg, c.ListenAddrs())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cp := &savesLog{Checkpoints: kafka.StoreCheckpoints(store), saved: func(uint64) { stop() }}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r", Topic: "orders", CheckpointInterval: time.Millisecond, Checkpoints: cp,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v", err, context.Canceled)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.saves) != 1 || cp.saves[0] != e.Position+1 {
		t.Errorf("saves %v, want one, of %d", cp.saves, e.Position+1)
	}
}

// TestRelayRefusesCorruptCheckpoint runs a relay whose checkpoint in the
// store is not a number (written by hand, or by another program): Load
// returns an error wrapping eventbus.ErrInvalid, and Run returns it at
// once, producing nothing. A Load that took such a checkpoint for none
// returned 0, and the relay produced the whole store again from its first
// event, without a word.
func TestRelayRefusesCorruptCheckpoint(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	if _, err := store.Append(ctx, "$checkpoint-kafka-relay:r", eventbus.Any, eventbus.EventData{
		ID: eventbus.NewID(), Type: "kafka.relay.checkpoint", Data: []byte("seven"),
	}); err != nil {
		t.Fatal(err)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("Load() = %d, %v; want an error wrapping %v", next, err, eventbus.ErrInvalid)
	}
	relay, err := kafka.NewRelay(store, newProducer(t, reg, c.ListenAddrs()), &kafka.RelayOptions{Name: "r", Topic: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(ctx); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("Run() = %v, want an error wrapping %v", err, eventbus.ErrInvalid)
	}
	if n := countRecords(t, ctx, c.ListenAddrs(), "orders"); n != 0 {
		t.Errorf("Kafka holds %d records, want none", n)
	}
}

// TestRelayPassesUnselected runs a relay over a store that holds only
// events its filter does not select: once it has caught up with the
// store, with nothing in flight, its checkpoint moves past them and is
// saved, so that the next Run does not read them again. A relay that
// moved its checkpoint only over events it acknowledged stayed at 0 for
// as long as nothing was selected, and each Run read the store from its
// first event.
func TestRelayPassesUnselected(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	appendOrder(t, ctx, store, reg, "audit", Order{Key: "not selected"})
	last := appendOrder(t, ctx, store, reg, "audit", Order{Key: "not selected", Seq: 1})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	relay, err := kafka.NewRelay(store, newProducer(t, reg, c.ListenAddrs()), &kafka.RelayOptions{
		Name: "r", Topic: "orders", Filter: eventbus.Filter{StreamPrefix: "order-"},
		Checkpoints:        &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: last.Position + 1, do: stop},
		CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) || ctx.Err() != nil {
		t.Errorf("Run() = %v, want the stop's %v once its checkpoint passed the events", err, context.Canceled)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != last.Position+1 {
		t.Errorf("Load() = %d, %v; want %d, past the events not selected", next, err, last.Position+1)
	}
}
