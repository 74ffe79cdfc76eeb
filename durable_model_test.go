package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestDurableModel runs a durable subscription over a store through random
// runs, each on a bus of its own: events appended before and while it runs
// to a few streams, handlers that fail, panic or call Goexit, a sink that
// loses some dead letters, Idempotency over the store or not, a Rebuild now
// and then, and a run that ends by Stop, Close, or a Stop or Shutdown past
// its deadline. It checks that each run resumes from the checkpoint its
// predecessor saved: it hands out every event from there on and none
// before it, the events before it having finished (handled or
// dead-lettered and kept, not abandoned) in an earlier run; that each run
// handles the events of a stream in store order; that with Idempotency no
// event is handled twice; and that the last run, stopped once it has
// caught up, leaves every event finished but the dead letters it lost, the
// first of which holds the checkpoint.
func TestDurableModel(t *testing.T) {
	for seed := range uint64(100) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runDurableModel(t, seed, false) })
		})
	}
}

// TestDurableBatchModel is TestDurableModel with a batch handler
// (SubscribeDurableBatch), which fails the events of a batch by index and
// panics or calls Goexit for the whole batch, and with Redrives of the
// dead letters while it runs, but without Idempotency, which a batch
// subscription cannot have. As BatchHandler's doc says, an event that
// fails is retried after the later events of its stream in its batch: the
// store order it checks is that of the events handled at their first
// attempt.
func TestDurableBatchModel(t *testing.T) {
	for seed := range uint64(100) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runDurableModel(t, seed, true) })
		})
	}
}

// runDurableModel runs TestDurableModel, or TestDurableBatchModel if batch.
func runDurableModel(t *testing.T, seed uint64, batch bool) {
	rng := rand.New(rand.NewPCG(seed, 2))
	ctx := context.Background()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	streams := []string{"a", "b", "c"}
	data := map[uint64]string{} // position of each event appended -> stream
	var last uint64
	appendOne := func() {
		stream := streams[rng.IntN(len(streams))]
		e, err := reg.Encode(Deposited{Amount: 1})
		require.NoError(t, err)
		res, err := s.Append(ctx, stream, eventbus.Any, e)
		require.NoError(t, err)
		data[res.Position] = stream
		last = res.Position
	}
	// failures says how many attempts at the event at pos fail in run; 3
	// or more make it a dead letter.
	failures := func(run int, pos uint64) int { return int((pos*7 + uint64(run)*3) % 5) }
	finished := map[uint64]bool{} // positions finished in some run
	checkpoint := uint64(0)
	runs := 2 + rng.IntN(4)
	useSink := rng.IntN(2) == 0
	// With Idempotency over the store, no event is handled twice: every
	// handler returns long before a stop, and its record is kept.
	idempotent := !batch && rng.IntN(2) == 0
	total := map[uint64]int{} // position -> times handled, over every run
	for run := range runs {
		final := run == runs-1
		for range rng.IntN(6) {
			appendOne()
		}
		var mu sync.Mutex
		attempts := map[uint64]int{}
		handled := map[uint64]int{}
		order := map[string][]uint64{} // stream -> positions handled, in order
		// The sink fails to keep the dead letters of some positions,
		// which the checkpoint must then not pass.
		sinkFails := func(pos uint64) bool { return useSink && pos%3 == 0 }
		b := newBus(t, &eventbus.Options{
			Workers:   1 + rng.IntN(3),
			QueueSize: 1 + rng.IntN(3),
			DeadLetterSink: eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
				if sinkFails(dl.Payload().(eventbus.RecordedEvent).Position) {
					return errors.New("sink down")
				}
				return nil
			}),
		})
		// attempt counts an attempt at e, with mu held, and returns
		// whether it fails, and if so whether the handler then panics
		// (even positions) or calls Goexit (see blow).
		attempt := func(e eventbus.Event[eventbus.RecordedEvent]) (fails, blows bool) {
			pos := e.Payload.Position
			attempts[pos]++
			if attempts[pos] <= failures(run, pos) {
				return true, pos%11 == 5
			}
			return false, false
		}
		blow := func(pos uint64) {
			mu.Unlock()
			defer mu.Lock()
			if pos%2 == 0 {
				panic("boom")
			}
			runtime.Goexit()
		}
		// handle records e as handled, with mu held. A batch handler's
		// event that failed is retried after the later events of its
		// stream in its batch: the order recorded is then that of the
		// events handled at their first attempt.
		handle := func(e eventbus.Event[eventbus.RecordedEvent]) {
			pos := e.Payload.Position
			handled[pos]++
			if !batch || attempts[pos] == 1 {
				order[e.Payload.Stream] = append(order[e.Payload.Stream], pos)
			}
		}
		h := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			mu.Lock()
			defer mu.Unlock()
			fails, blows := attempt(e)
			switch {
			case blows:
				blow(e.Payload.Position)
			case fails:
				return errFlaky
			}
			handle(e)
			return nil
		}
		// hb fails the events of a batch that fail by index, or all of
		// them with a panic or Goexit if one of them blows.
		hb := func(_ context.Context, events []eventbus.Event[eventbus.RecordedEvent]) error {
			mu.Lock()
			defer mu.Unlock()
			failed := map[int]error{}
			blows := -1
			for i, e := range events {
				fails, b := attempt(e)
				if b && blows < 0 {
					blows = i
				}
				if fails {
					failed[i] = errFlaky
				}
			}
			if blows >= 0 {
				blow(events[blows].Payload.Position)
			}
			for i, e := range events {
				if failed[i] == nil {
					handle(e)
				}
			}
			if len(failed) > 0 {
				return &eventbus.BatchError{Failed: failed}
			}
			return nil
		}
		var mws []eventbus.Middleware
		if idempotent {
			mws = append(mws, eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(s)}))
		}
		opts := &eventbus.DurableOptions{
			CheckpointEvery: 1 + rng.IntN(4),
			Subscription: eventbus.SubscriptionOptions{
				Middleware: mws,
				Workers:    1 + rng.IntN(3),
				Retry:      &eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Duration(1+rng.IntN(3)) * time.Second},
			},
		}
		var d *eventbus.Durable
		if batch {
			opts.Subscription.BatchSize = 1 + rng.IntN(4)
			opts.Subscription.BatchWait = time.Duration(rng.IntN(3)) * time.Second
			d, err = eventbus.SubscribeDurableBatch(ctx, b, s, reg, "model", hb, opts)
		} else {
			d, err = eventbus.SubscribeDurable(ctx, b, s, reg, "model", h, opts)
		}
		require.NoError(t, err)
		for range rng.IntN(6) {
			appendOne()
			if rng.IntN(2) == 0 {
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			}
		}
		if !idempotent && rng.IntN(4) == 0 {
			// Rebuild: every event from the first, in order again.
			require.NoError(t, d.Rebuild(ctx, func(context.Context) error {
				require.Zero(t, savedCheckpoint(t, s, "model"), "run %d: checkpoint at Rebuild's reset", run)
				mu.Lock()
				defer mu.Unlock()
				clear(order)
				// The dead letters so far are the old run's: the new one
				// hands out their events again.
				b.DeadLetters().Discard(eventbus.DeadLetterFilter{})
				return nil
			}))
			checkpoint = 0
		}
		caught := len(data) > 0 && (final || rng.IntN(3) == 0)
		if caught {
			require.NoError(t, d.WaitFor(ctx, last), "run %d: WaitFor(%d)", run, last)
			// Under a deferred Unlock: a failing require ends this
			// goroutine with Goexit, and a handler still running must
			// not wait for mu forever, or Close in newBus's cleanup
			// would, and the failure would never be reported.
			func() {
				mu.Lock()
				defer mu.Unlock()
				for pos := range data {
					// Idempotency skips the events handled before.
					if pos >= checkpoint && !(idempotent && total[pos] > 0) {
						require.NotZero(t, attempts[pos], "run %d: event %d from checkpoint %d on never handed out", run, pos, checkpoint)
					}
				}
			}()
		} else if rng.IntN(2) == 0 {
			synctest.Wait()
		}
		if batch && rng.IntN(2) == 0 {
			// Redrive the dead letters once the run has settled, or while it
			// goes on. Those kept by the sink were finished; those it lost
			// are finished once their redrive is handled, until then they
			// hold the checkpoint, as a dead letter again does if lost again.
			synctest.Wait()
			mu.Lock()
			for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				if pos := dl.Payload().(eventbus.RecordedEvent).Position; dl.Attempt > 0 && !sinkFails(pos) {
					finished[pos] = true
				}
			}
			mu.Unlock()
			_, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
			require.NoError(t, err, "run %d: Redrive", run)
			if rng.IntN(2) == 0 {
				synctest.Wait()
			}
		}
		end := "Stop"
		switch {
		case final:
			require.NoError(t, d.Stop(ctx))
			require.NoError(t, b.Shutdown(ctx))
		default:
			switch rng.IntN(4) {
			case 0:
				require.NoError(t, d.Stop(ctx))
			case 1:
				end = "Close"
				_ = b.Close()
			case 2:
				end = "Stop with a deadline"
				short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
				_ = d.Stop(short)
				cancel()
			case 3:
				end = "Shutdown with a deadline"
				short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
				_ = b.Shutdown(short)
				cancel()
			}
			_ = b.Close()
		}
		mu.Lock()
		// Finished in this run: handled, or dead-lettered after its
		// attempts (not abandoned by the stop, which a dead letter's
		// error says).
		for pos, n := range handled {
			require.Less(t, pos, last+1, "run %d handled a position never appended", run)
			finished[pos] = true
			total[pos] += n
			if idempotent {
				require.Equal(t, 1, total[pos], "run %d (ended by %s): event %d handled again", run, end, pos)
			}
		}
		held := map[uint64]bool{} // dead letters the sink failed to keep
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			pos := dl.Payload().(eventbus.RecordedEvent).Position
			if dl.Attempt > 0 && !errors.Is(dl.Err, eventbus.ErrClosed) && !errors.Is(dl.Err, context.DeadlineExceeded) {
				if sinkFails(pos) {
					held[pos] = true
				} else {
					finished[pos] = true
				}
			}
		}
		// Resumed from the last checkpoint: every event from there on
		// handed out (if the run got to it), none before.
		for pos := range attempts {
			require.GreaterOrEqual(t, pos, checkpoint, "run %d (ended by %s) attempted %d, before its checkpoint", run, end, pos)
		}
		for stream, got := range order {
			for i := 1; i < len(got); i++ {
				require.Less(t, got[i-1], got[i], "run %d, stream %s: handled out of order: %v", run, stream, got)
			}
		}
		mu.Unlock()
		saved := savedCheckpoint(t, s, "model")
		if saved < 0 {
			saved = 0
		}
		require.GreaterOrEqual(t, uint64(saved), checkpoint, "run %d (ended by %s): checkpoint went back", run, end)
		for pos := range data {
			if pos < uint64(saved) {
				require.True(t, finished[pos], "run %d (ended by %s): checkpoint %d passed event %d, never finished", run, end, saved, pos)
				require.False(t, held[pos], "run %d (ended by %s): checkpoint %d passed event %d, a dead letter the sink lost", run, end, saved, pos)
			}
		}
		checkpoint = uint64(saved)
		if final && len(data) > 0 {
			// Every event finished, but for dead letters that the sink
			// failed to keep, the first of which holds the checkpoint.
			want := last + 1
			for pos := range data {
				if held[pos] {
					want = min(want, pos)
				} else {
					require.True(t, finished[pos], "event %d never finished", pos)
				}
			}
			if len(held) > 0 {
				require.Equal(t, want, checkpoint, "last checkpoint")
			} else {
				require.Greater(t, checkpoint, last, "last checkpoint")
			}
		}
	}
}

// TestDurableCrash crashes a process that runs a durable subscription over
// a FileStore at a random moment: events appended to a few streams, some
// of which fail and wait for their retries, handled by several workers,
// with the checkpoint saved every few events. The crash leaves the store's
// files as they are (copyStore), with no final save; a new process opens
// them and runs the subscription again. The checkpoint the crash left must
// pass only events handled before it, and the new run must hand out every
// event from there on, each stream's in store order.
func TestDurableCrash(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 3))
				ctx := context.Background()
				reg := newBankRegistry(t)
				dir := t.TempDir()
				s := openFile(t, dir, nil)
				streams := []string{"a", "b", "c"}
				var last uint64
				for range 10 + rng.IntN(20) {
					last = appendDeposits(t, s, reg, streams[rng.IntN(len(streams))], 1).Position
				}
				var mu sync.Mutex
				handled := map[uint64]bool{}
				attempts := map[uint64]int{}
				opts := &eventbus.DurableOptions{
					CheckpointEvery: 1 + rng.IntN(3),
					Subscription: eventbus.SubscriptionOptions{
						Workers: 1 + rng.IntN(3),
						Retry:   &eventbus.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Second},
					},
				}
				bus1 := newBus(t, nil)
				subscribeDurable(t, bus1, s, nil, "ledger", func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
					mu.Lock()
					defer mu.Unlock()
					pos := e.Payload.Position
					attempts[pos]++
					if (pos*7+seed)%4 == 0 && attempts[pos] < 3 {
						return errFlaky
					}
					handled[pos] = true
					return nil
				}, opts)
				time.Sleep(time.Duration(rng.IntN(4000)) * time.Millisecond)
				synctest.Wait() // the moment of the crash: every goroutine waits
				mu.Lock()
				image := copyStore(t, dir)
				before := maps.Clone(handled)
				mu.Unlock()

				s2 := openFile(t, image, nil)
				saved := max(savedCheckpoint(t, s2, "ledger"), 0)
				for pos := range uint64(saved) {
					require.True(t, before[pos], "the crash left checkpoint %d, past event %d, not handled before it", saved, pos)
				}
				order := map[string][]uint64{}
				bus2 := newBus(t, nil)
				d := subscribeDurable(t, bus2, s2, nil, "ledger", func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
					mu.Lock()
					defer mu.Unlock()
					order[e.Payload.Stream] = append(order[e.Payload.Stream], e.Payload.Position)
					return nil
				}, opts)
				require.NoError(t, d.WaitFor(ctx, last))
				require.NoError(t, d.Stop(ctx))
				mu.Lock()
				defer mu.Unlock()
				want := map[string][]uint64{}
				for e, err := range s2.ReadAll(ctx, &eventbus.ReadOptions{From: uint64(saved)}) {
					require.NoError(t, err)
					want[e.Stream] = append(want[e.Stream], e.Position)
				}
				if diff := cmp.Diff(want, order, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("events handled after the restart from checkpoint %d (-want +got):\n%s", saved, diff)
				}
			})
		})
	}
}
