package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// crashingCheckpoints saves through to the store until the process
// "crashes": then saves are lost, as they would be when the process dies
// between producing and saving.
type crashingCheckpoints struct {
	kafka.Checkpoints
	crashed atomic.Bool
	saved   chan uint64
}

func (c *crashingCheckpoints) Save(ctx context.Context, name string, next uint64) error {
	if c.crashed.Load() {
		return nil
	}
	if err := c.Checkpoints.Save(ctx, name, next); err != nil {
		return err
	}
	select {
	case c.saved <- next:
	default:
	}
	return nil
}

// TestRelayCrashAndRestart appends events to a store while a relay, killed
// and restarted again and again, copies them to Kafka; its saves since the
// last checkpoint are lost at each kill, so it produces some events again.
// A consumer with the Idempotency middleware keyed by the event's ID handles
// every event exactly once, in order per stream.
func TestRelayCrashAndRestart(t *testing.T) {
	checkNoLeaks(t)
	const streams, perStream, kills = 50, 100, 6
	c := cluster(t, "orders")
	brokers := c.ListenAddrs()
	reg := registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store := newStore(t)

	// The consuming side, alive throughout.
	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	log := newOrderLog(t, streams*perStream)
	if _, err := orders.Subscribe("shipping", log.handle, &eventbus.SubscriptionOptions{
		Middleware: []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: kafka.EventID})},
	}); err != nil {
		t.Fatal(err)
	}
	stopCons, _ := consume(t, ctx, bus, orders, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "shipping", CommitInterval: 20 * time.Millisecond})

	// The application appends while the relay runs.
	perKey := make(map[string]int)
	var appends sync.WaitGroup
	defer appends.Wait() // also when run fails the test first
	appends.Go(func() {
		for seq := range perStream {
			for s := range streams {
				e, err := reg.Encode(Order{Key: fmt.Sprintf("order-%02d", s), Seq: seq})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := store.Append(ctx, fmt.Sprintf("order-%02d", s), eventbus.Any, e); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	for s := range streams {
		perKey[fmt.Sprintf("order-%02d", s)] = perStream
	}

	cp := &crashingCheckpoints{Checkpoints: kafka.StoreCheckpoints(store), saved: make(chan uint64, 1)}
	// lastEvent is the position of the last event appended. The last run
	// stops only once it has saved a checkpoint past it, every record
	// acknowledged: a stop waits for the records in flight
	// CheckpointInterval at most, here 2ms, which Kafka's answers may
	// outlast on a busy machine, and those not answered by then stay
	// after the checkpoint, as after a crash (see Relay.Run).
	var lastEvent uint64
	run := func(crash bool) {
		p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, Linger: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var cps kafka.Checkpoints = cp
		pastLast := make(chan struct{})
		if !crash {
			cps = &onceSaved{Checkpoints: cp, end: lastEvent + 1, do: func() { close(pastLast) }}
		}
		relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "orders", Topic: "orders", Checkpoints: cps, CheckpointInterval: 2 * time.Millisecond, MaxInFlight: 64})
		if err != nil {
			t.Fatal(err)
		}
		select { // a save of the last run is no news
		case <-cp.saved:
		default:
		}
		cp.crashed.Store(false)
		relayCtx, kill := context.WithCancel(ctx)
		var runErr error // Run's result, once done is closed
		done := make(chan struct{})
		go func() {
			defer close(done)
			runErr = relay.Run(relayCtx)
		}()
		// Stop the relay however run returns, even by t.Fatal, before
		// the producer closes.
		defer func() {
			kill()
			<-done
		}()
		if crash {
			select { // kill it after a checkpoint, with more acknowledged since
			case <-cp.saved:
			case <-done:
				t.Fatalf("Run() = %v before a checkpoint", runErr)
			}
			cp.crashed.Store(true)
		} else {
			log.wait(t, ctx)
			select {
			case <-pastLast:
			case <-done:
				t.Fatalf("Run() = %v before a checkpoint past the last event", runErr)
			}
		}
		kill()
		<-done
		if !errors.Is(runErr, context.Canceled) {
			t.Fatalf("Run() = %v, want %v", runErr, context.Canceled)
		}
	}
	for range kills {
		run(true)
	}
	appends.Wait()
	opts := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}
	last := func(read iter.Seq2[eventbus.RecordedEvent, error]) uint64 {
		t.Helper()
		var pos uint64
		for e, err := range read {
			if err != nil {
				t.Fatal(err)
			}
			pos = e.Position
		}
		return pos
	}
	lastEvent = last(store.ReadAll(ctx, opts))
	run(false)
	if err := stopCons(); err != nil {
		t.Fatalf("Consumer.Run() = %v, want nil", err)
	}
	log.checkExactlyOnce(t, perKey)
	var dups uint64
	for _, s := range bus.Metrics().Subscriptions {
		dups += s.Duplicates
	}
	t.Logf("%d kills; %d records produced again and skipped as duplicates", kills, dups)

	// The last run stopped cleanly, every record acknowledged: its
	// checkpoint is past every event. It may be past the checkpoints saved
	// after the last event too, up to the position of its own save: when
	// the run caught up with the store with nothing in flight, it passed
	// the positions it had read and not selected.
	next, err := kafka.StoreCheckpoints(store).Load(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	saved := last(store.ReadStream(ctx, "$checkpoint-kafka-relay:orders", opts))
	if next <= lastEvent || next > saved {
		t.Errorf("checkpoint after a clean stop = %d, want past the last event (%d) and at most the position of its save (%d)", next, lastEvent, saved)
	}
}

// TestStoreCheckpointsKeepLatest saves a relay's checkpoint again and again
// in a store: Load returns the latest, and the checkpoint stream shows only
// that one, as the bus's own checkpoint streams do, instead of one event
// per save for as long as the relay runs.
func TestStoreCheckpointsKeepLatest(t *testing.T) {
	ctx := t.Context()
	store := newStore(t)
	cp := kafka.StoreCheckpoints(store)
	for next := range uint64(5) {
		if err := cp.Save(ctx, "orders", next+1); err != nil {
			t.Fatalf("Save(%d) = %v", next+1, err)
		}
	}
	if next, err := cp.Load(ctx, "orders"); err != nil || next != 5 {
		t.Fatalf("Load() = %d, %v; want 5, nil", next, err)
	}
	var kept []string
	for e, err := range store.ReadStream(ctx, "$checkpoint-kafka-relay:orders", nil) {
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, string(e.Data))
	}
	if diff := cmp.Diff([]string{"5"}, kept); diff != "" {
		t.Errorf("checkpoint stream after 5 saves (-want +got):\n%s", diff)
	}
}

// stopOnLoad is Checkpoints whose Load, once it has loaded, stops the
// relay's context with cause: the relay is then stopped by its context
// after Run has started, deterministically.
type stopOnLoad struct {
	kafka.Checkpoints
	stop  context.CancelCauseFunc
	cause error
}

func (c *stopOnLoad) Load(ctx context.Context, name string) (uint64, error) {
	next, err := c.Checkpoints.Load(ctx, name)
	c.stop(c.cause)
	return next, err
}

// TestRelayStoppedByContext stops a running relay through its context, with
// and without a cause of the caller's own: Run returns ctx's error, as
// documented, so that errors.Is(err, context.Canceled) tells a stop from a
// failure; a cause given stays in the chain.
func TestRelayStoppedByContext(t *testing.T) {
	brokers, reg, ctx := setup(t, "orders")
	errShutdown := errors.New("shutting down")
	for name, cause := range map[string]error{"no cause": nil, "a cause": errShutdown} {
		t.Run(name, func(t *testing.T) {
			store := newStore(t)
			p := newProducer(t, reg, brokers)
			runCtx, stop := context.WithCancelCause(ctx)
			defer stop(nil)
			cp := &stopOnLoad{Checkpoints: kafka.StoreCheckpoints(store), stop: stop, cause: cause}
			relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "orders", Topic: "orders", Checkpoints: cp})
			if err != nil {
				t.Fatal(err)
			}
			err = relay.Run(runCtx)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want an error matching %v", err, context.Canceled)
			}
			if cause != nil && !errors.Is(err, cause) {
				t.Errorf("Run() = %v, want an error matching the cause %v too", err, cause)
			}
		})
	}
}

// TestRelayResumesFromOldCheckpoint runs a relay of system streams
// (StreamPrefix "$") over a store whose checkpoint of it an earlier version
// saved, in the stream "$kafka-relay-" followed by its name: it resumes
// from there, producing only the events after it and not the old
// checkpoints, and then saves in its new stream, from which it loads next.
func TestRelayResumesFromOldCheckpoint(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	before := appendOrder(t, ctx, store, reg, "$order-a", Order{Key: "a"})
	// Saved the old way: MaxCount 1, then one event per save.
	if err := store.SetStreamMetadata(ctx, "$kafka-relay-orders", eventbus.StreamMetadata{MaxCount: 1}); err != nil {
		t.Fatal(err)
	}
	for _, next := range []uint64{before.Position, before.Position + 1} {
		if _, err := store.Append(ctx, "$kafka-relay-orders", eventbus.Any, eventbus.EventData{
			ID: eventbus.NewID(), Type: "kafka.relay.checkpoint", Data: strconv.AppendUint(nil, next, 10),
		}); err != nil {
			t.Fatal(err)
		}
	}
	after := appendOrder(t, ctx, store, reg, "$order-a", Order{Key: "a", Seq: 1})

	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cp := checkpointsHook{Checkpoints: kafka.StoreCheckpoints(store), saved: func(next uint64) {
		if next > after.Position {
			stop()
		}
	}}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "orders", Topic: "orders", Filter: eventbus.Filter{StreamPrefix: "$"},
		Checkpoints: cp, CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v", err, context.Canceled)
	}
	if diff := cmp.Diff(idsOf(after), eventIDs(t, ctx, c.ListenAddrs(), "orders")); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "orders"); err != nil || next != after.Position+1 {
		t.Errorf("Load() after the run = %d, %v; want %d, nil", next, err, after.Position+1)
	}
	if info, err := store.StreamInfo(ctx, "$checkpoint-kafka-relay:orders"); err != nil || !info.Exists {
		t.Errorf("StreamInfo() of the new checkpoint stream = %+v, %v; want it to exist", info, err)
	}
}
