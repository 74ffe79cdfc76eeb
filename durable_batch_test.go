package eventbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// appendUndecodable appends to stream an event of Deposited's type whose
// data does not decode to a Deposited, and returns the append's result.
func appendUndecodable(t *testing.T, s eventbus.Store, reg *eventbus.Registry, stream string) eventbus.AppendResult {
	t.Helper()
	bad, err := reg.Encode(Deposited{})
	require.NoError(t, err)
	bad.Data = []byte(`{"Amount": "one"}`)
	res, err := s.Append(context.Background(), stream, eventbus.Any, bad)
	require.NoError(t, err)
	return res
}

// batchLog records the batches a batch handler gets.
type batchLog struct {
	mu      sync.Mutex
	batches [][]int                // the amounts of each batch
	streams map[string][]int       // the amounts of each stream, in the order handled
	headers []eventbus.Header      // every event's, in the order handled
	fail    func(amount int) error // the error of the event of that amount, if any
}

func (l *batchLog) handle(_ context.Context, events []eventbus.Event[Deposited]) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams = map[string][]int{}
	}
	amounts := []int{}
	failed := map[int]error{}
	for i, e := range events {
		if l.fail != nil {
			if err := l.fail(e.Payload.Amount); err != nil {
				failed[i] = err
				continue
			}
		}
		amounts = append(amounts, e.Payload.Amount)
		l.streams[e.Key] = append(l.streams[e.Key], e.Payload.Amount)
		l.headers = append(l.headers, e.Header)
	}
	l.batches = append(l.batches, amounts)
	if len(failed) > 0 {
		return &eventbus.BatchError{Failed: failed}
	}
	return nil
}

// TestSubscribeDurableBatch catches up with 250 events of three streams in
// batches of at most 100, each stream's in order, each event once and
// decoded, and saves the checkpoint past them. Resumed, the subscription
// hands over only the events appended since.
func TestSubscribeDurableBatch(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		want := map[string][]int{}
		var last eventbus.AppendResult
		for i := range 250 {
			stream := []string{"a", "b", "c"}[i%3]
			want[stream] = append(want[stream], i)
			last = appendAmounts(t, s, reg, stream, i)
		}
		bus := newBus(t, nil)
		var log batchLog
		// No save before the stop, whose checkpoint stream's events the
		// checkpoint would pass.
		opts := &eventbus.DurableOptions{CheckpointEvery: 1000, Subscription: eventbus.SubscriptionOptions{Workers: 2, BatchSize: 100, BatchWait: time.Second}}
		d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", log.handle, opts)
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))
		if got := savedCheckpoint(t, s, "ledger"); got != 250 {
			t.Errorf("saved checkpoint = %d, want 250", got)
		}
		log.mu.Lock()
		if diff := cmp.Diff(want, log.streams); diff != "" {
			t.Errorf("amounts handled per stream (-want +got):\n%s", diff)
		}
		for _, b := range log.batches {
			if len(b) == 0 || len(b) > 100 {
				t.Errorf("a batch of %d events, want 1 to 100", len(b))
			}
		}
		if len(log.batches) >= 250 {
			t.Errorf("%d batches for 250 events: one event at a time", len(log.batches))
		}
		for _, h := range log.headers {
			if h.ID.IsZero() || h.Type != "account.deposited" || h.SchemaVersion != 1 || h.Topic != "durable.ledger" {
				t.Errorf("handled header %+v, want the stored event's", h)
				break
			}
		}
		log.batches, log.streams, log.headers = nil, nil, nil
		log.mu.Unlock()

		last = appendAmounts(t, s, reg, "a", 1000, 1001)
		d, err = eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", log.handle, opts)
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))
		log.mu.Lock()
		defer log.mu.Unlock()
		if diff := cmp.Diff(map[string][]int{"a": {1000, 1001}}, log.streams); diff != "" {
			t.Errorf("amounts handled after the resume (-want +got):\n%s", diff)
		}
	})
}

// TestSubscribeDurableBatchFailures fails events of a batch by index: one
// succeeds when retried alone, one keeps failing and is dead-lettered, and
// one is not even given to the handler, for it does not decode. The
// checkpoint passes them all.
func TestSubscribeDurableBatchFailures(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendAmounts(t, s, reg, "a", 0, 1)
		appendUndecodable(t, s, reg, "a")
		last := appendAmounts(t, s, reg, "a", 3, 4)

		errFlaky, errBroken := errors.New("flaky"), errors.New("broken")
		tries := 0
		log := batchLog{fail: func(amount int) error {
			switch amount {
			case 1:
				if tries++; tries == 1 {
					return errFlaky
				}
			case 3:
				return errBroken
			}
			return nil
		}}
		bus := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}})
		d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", log.handle,
			// BatchWait, so that the first batch holds every event,
			// however the store's reader and the worker interleave.
			&eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{BatchSize: 10, BatchWait: time.Second}})
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))

		log.mu.Lock()
		defer log.mu.Unlock()
		if diff := cmp.Diff([][]int{{0, 4}, {1}, {}}, log.batches); diff != "" {
			t.Errorf("amounts handled per batch (-want +got):\n%s", diff)
		}
		var dead []string
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			switch {
			case errors.Is(dl.Err, errBroken) && dl.Attempt == 2:
				dead = append(dead, "broken")
			case errors.As(dl.Err, new(*json.UnmarshalTypeError)):
				dead = append(dead, "undecoded")
			default:
				dead = append(dead, dl.Err.Error())
			}
		}
		slices.Sort(dead)
		if diff := cmp.Diff([]string{"broken", "undecoded"}, dead); diff != "" {
			t.Errorf("dead letters (-want +got):\n%s", diff)
		}
		if got := savedCheckpoint(t, s, "ledger"); got != 5 {
			t.Errorf("saved checkpoint = %d, want 5", got)
		}
	})
}

// TestSubscribeDurableBatchIndexes checks that the indexes of a handler's
// *BatchError name the events of the batch it got, which leaves out those
// that do not decode: the event it names is the one dead-lettered.
func TestSubscribeDurableBatchIndexes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := backends[0].open(t)
		reg := newBankRegistry(t)
		ctx := context.Background()
		appendAmounts(t, s, reg, "a", 0)
		appendUndecodable(t, s, reg, "a")
		last := appendAmounts(t, s, reg, "a", 2, 3)

		bus := newBus(t, nil)
		var got []int
		d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", func(_ context.Context, events []eventbus.Event[Deposited]) error {
			for _, e := range events {
				got = append(got, e.Payload.Amount)
			}
			return &eventbus.BatchError{Failed: map[int]error{1: errors.New("the second of the batch")}}
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{BatchWait: time.Second}}) // one batch
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))
		require.Equal(t, []int{0, 2, 3}, got, "amounts given to the handler")
		var dead []uint64
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl.Position)
		}
		slices.Sort(dead)
		// Position 1 did not decode; position 2, amount 2, is the second
		// event of the batch.
		require.Equal(t, []uint64{1, 2}, dead, "positions dead-lettered")
	})
}

// TestSubscribeDurableBatchInvalid refuses a batch subscription with
// middleware, a nil handler, and a nil registry for a typed handler; a
// handler of stored events needs no registry.
func TestSubscribeDurableBatchInvalid(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newBankRegistry(t)
	ctx := context.Background()
	bus := newBus(t, nil)
	var log batchLog
	noop := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { return next }
	_, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "mw", log.handle,
		&eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{noop}}})
	require.ErrorIs(t, err, eventbus.ErrInvalid, "middleware")
	_, err = eventbus.SubscribeDurableBatch[Deposited](ctx, bus, s, reg, "nil", nil, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil handler")
	_, err = eventbus.SubscribeDurableBatch(ctx, bus, s, nil, "noreg", log.handle, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil registry")

	last := appendAmounts(t, s, reg, "a", 7)
	raw := make(chan string, 1)
	d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, nil, "raw", func(_ context.Context, events []eventbus.Event[eventbus.RecordedEvent]) error {
		for _, e := range events {
			raw <- string(e.Payload.Data)
		}
		return nil
	}, nil)
	require.NoError(t, err)
	require.NoError(t, d.WaitFor(ctx, last.Position))
	require.NoError(t, d.Stop(ctx))
	require.JSONEq(t, `{"Amount": 7}`, <-raw)
}

// TestStoreTopicSubscribeBatch hands a StoreTopic's events to a batch
// handler, and rebuilds it: the rebuild hands every event over again, in
// batches too.
func TestStoreTopicSubscribeBatch(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		orders := newOrderTopic(t, bus, s, reg)
		var mu sync.Mutex
		var sizes []int
		handled := map[string][]int{}
		d, err := orders.SubscribeBatch(ctx, "ledger", func(_ context.Context, events []eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(events))
			for _, e := range events {
				handled[e.Payload.Key] = append(handled[e.Payload.Key], e.Payload.N)
			}
			return nil
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Workers: 1, BatchSize: 4, BatchWait: time.Second}})
		require.NoError(t, err)
		synctest.Wait() // the worker waits for events
		res, err := orders.PublishBatch(ctx, []Order{{"x", 0}, {"y", 1}, {"x", 2}, {"y", 3}, {"x", 4}})
		require.NoError(t, err)
		var last uint64 // the highest position
		for _, r := range res {
			last = max(last, r.Position)
		}
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Rebuild(ctx, func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			handled = map[string][]int{}
			return nil
		}))
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff(map[string][]int{"x": {0, 2, 4}, "y": {1, 3}}, handled); diff != "" {
			t.Errorf("handled after the rebuild (-want +got):\n%s", diff)
		}
		// Each run: 4 events, BatchSize, then the last one, once
		// BatchWait has passed with no more.
		require.Equal(t, []int{4, 1, 4, 1}, sizes, "batch sizes")
	})
}

// TestSubscribeDurableBatchPanicLeavesOutUndecoded has a batch handler
// panic on a batch from which an event that does not decode was left out:
// the panic fails the events the handler got, not that one, which is
// dead-lettered with its own decoding error, for good, as when the handler
// returns. It was failed with the panic, which the handler never had a
// chance to raise for it: dead-lettered with the wrong error (a sink filing
// dead letters by error would take it for a handler's bug), and retried
// when the policy retries panics.
func TestSubscribeDurableBatchPanicLeavesOutUndecoded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := backends[0].open(t)
		reg := newBankRegistry(t)
		ctx := context.Background()
		appendAmounts(t, s, reg, "a", 0)
		appendUndecodable(t, s, reg, "b")
		last := appendAmounts(t, s, reg, "c", 2)

		bus := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
		var calls [][]int
		d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", func(_ context.Context, events []eventbus.Event[Deposited]) error {
			var amounts []int
			for _, e := range events {
				amounts = append(amounts, e.Payload.Amount)
			}
			calls = append(calls, amounts)
			if len(calls) == 1 {
				panic("boom")
			}
			return nil
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Workers: 1, BatchWait: time.Second}}) // one batch
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))

		// The panic's batch, then a retry of each event it failed, of two
		// streams, in either order.
		require.NotEmpty(t, calls)
		require.Equal(t, []int{0, 2}, calls[0], "amounts given to the handler in the first call")
		require.ElementsMatch(t, [][]int{{0}, {2}}, calls[1:], "amounts given to the handler in the retries")
		var dead []eventbus.DeadLetter
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl)
		}
		require.Len(t, dead, 1)
		require.Equal(t, uint64(1), dead[0].Position, "position dead-lettered")
		require.Equal(t, 1, dead[0].Attempt, "attempts at the event that does not decode")
		require.ErrorAs(t, dead[0].Err, new(*json.UnmarshalTypeError), "the dead letter's error")
		require.NotErrorAs(t, dead[0].Err, new(*eventbus.PanicError), "the dead letter's error")
		require.Equal(t, last.Position+1, d.Checkpoint())
	})
}

// TestSubscribeDurableBatchUndecodedAndErrors gives a batch handler a batch
// from which an event that does not decode was left out, and has it
// return each kind of error: whatever it returns, that event is
// dead-lettered with its decoding error, and the handler's error fails the
// events it names, by their indexes in the batch it got, or all of those
// it got; a Permanent mark around a *BatchError marks the events it
// names. A batch of events none of which decodes never reaches the
// handler.
func TestSubscribeDurableBatchUndecodedAndErrors(t *testing.T) {
	errX := errors.New("x")
	// Positions 0, 2 and 3 decode, to amounts 0, 2 and 3; 1 does not.
	for _, tc := range []struct {
		name  string
		err   error            // the handler's error, the first time
		retry int              // the bus's RetryPolicy.MaxAttempts
		want  map[uint64]error // the error of each position dead-lettered
	}{
		{"nil", nil, 0, map[uint64]error{}},
		{"a typed nil *BatchError", (*eventbus.BatchError)(nil), 0, map[uint64]error{}},
		{"an error for all", errX, 0, map[uint64]error{0: errX, 2: errX, 3: errX}},
		{"a *BatchError", &eventbus.BatchError{Failed: map[int]error{1: errX}}, 0, map[uint64]error{2: errX}},
		{"a *BatchError marked Permanent", eventbus.Permanent(&eventbus.BatchError{Failed: map[int]error{1: errX}}), 2,
			map[uint64]error{2: errX}}, // not retried
		{"a *BatchError beside an error", errors.Join(errX, &eventbus.BatchError{Failed: map[int]error{2: io.EOF}}), 0,
			map[uint64]error{0: errX, 2: errX, 3: io.EOF}},
		{"a *BatchError naming an index outside the batch", &eventbus.BatchError{Failed: map[int]error{3: errX}}, 0,
			map[uint64]error{0: eventbus.ErrInvalid, 2: eventbus.ErrInvalid, 3: eventbus.ErrInvalid}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, _ := backends[0].open(t)
				reg := newBankRegistry(t)
				ctx := context.Background()
				appendAmounts(t, s, reg, "a", 0)
				appendUndecodable(t, s, reg, "a")
				last := appendAmounts(t, s, reg, "a", 2, 3)

				bus := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: tc.retry}})
				var got [][]int
				d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", func(_ context.Context, events []eventbus.Event[Deposited]) error {
					var amounts []int
					for _, e := range events {
						amounts = append(amounts, e.Payload.Amount)
					}
					if got = append(got, amounts); len(got) > 1 {
						return nil // a retry
					}
					return tc.err
				}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{BatchWait: time.Second}}) // one batch
				require.NoError(t, err)
				require.NoError(t, d.WaitFor(ctx, last.Position))
				require.NoError(t, d.Stop(ctx))
				require.Equal(t, [][]int{{0, 2, 3}}, got, "amounts given to the handler")

				dead := map[uint64]error{}
				for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
					dead[dl.Position] = dl.Err
				}
				require.ErrorAs(t, dead[1], new(*json.UnmarshalTypeError), "the dead letter of the event that does not decode")
				delete(dead, 1)
				require.Len(t, dead, len(tc.want), "positions dead-lettered but 1: %v", dead)
				for pos, want := range tc.want {
					require.ErrorIs(t, dead[pos], want, "the dead letter of position %d", pos)
				}
				require.Equal(t, last.Position+1, d.Checkpoint())
			})
		})
	}

	t.Run("none decodes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, _ := backends[0].open(t)
			reg := newBankRegistry(t)
			ctx := context.Background()
			var last eventbus.AppendResult
			for range 2 {
				last = appendUndecodable(t, s, reg, "a")
			}
			bus := newBus(t, nil)
			calls := 0
			d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", func(context.Context, []eventbus.Event[Deposited]) error {
				calls++
				return nil
			}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{BatchWait: time.Second}})
			require.NoError(t, err)
			require.NoError(t, d.WaitFor(ctx, last.Position))
			require.NoError(t, d.Stop(ctx))
			require.Zero(t, calls, "calls of the handler")
			require.Equal(t, 2, bus.DeadLetters().Len(), "dead letters")
		})
	})
}

// TestSubscribeDurableBatchStops stops a batch subscription without grace
// while its handler holds a batch, by the bus's Close, and gracefully while
// a dead letter of a batch that the sink lost holds the checkpoint: the
// events that the stop failed or abandoned are not finished, nor is the
// lost dead letter, so the saved checkpoint stays before them and the next
// run delivers them again; a redrive of the dead letter, handled, lets the
// checkpoint pass it.
func TestSubscribeDurableBatchStops(t *testing.T) {
	errPoison := eventbus.Permanent(errors.New("poison"))
	lost := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("disk full") })
	for _, how := range []string{"Close", "lost dead letter", "lost dead letter, redriven"} {
		t.Run(how, func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				last := appendAmounts(t, s, reg, "a", 0, 1, 2, 3).Position
				var mu sync.Mutex
				var fixed bool
				var handled []uint64
				bus := newBus(t, &eventbus.Options{DeadLetterSink: lost})
				entered := make(chan struct{})
				var once sync.Once
				d, err := eventbus.SubscribeDurableBatch(ctx, bus, s, reg, "ledger", func(ctx context.Context, events []eventbus.Event[Deposited]) error {
					if how == "Close" {
						once.Do(func() { close(entered) })
						<-ctx.Done()
						return ctx.Err()
					}
					mu.Lock()
					defer mu.Unlock()
					for i, e := range events {
						if e.Position == 1 && !fixed {
							return &eventbus.BatchError{Failed: map[int]error{i: errPoison}}
						}
					}
					return nil
				}, &eventbus.DurableOptions{CheckpointEvery: 1, Subscription: eventbus.SubscriptionOptions{Workers: 1, BatchSize: 2, BatchWait: time.Second}})
				require.NoError(t, err)
				want := uint64(1) // the saved checkpoint
				switch how {
				case "Close":
					<-entered
					synctest.Wait() // the store's reader has queued the second batch
					require.Error(t, bus.Close(), "Close abandons the second batch")
					want = 0
				default:
					require.NoError(t, d.WaitFor(ctx, last), "the run goes on past the dead letter")
					require.Equal(t, uint64(1), d.Checkpoint(), "held by the dead letter the sink lost")
					if how == "lost dead letter, redriven" {
						mu.Lock()
						fixed = true
						mu.Unlock()
						n, err := bus.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
						require.NoError(t, err)
						require.Equal(t, 1, n)
						require.NoError(t, bus.Flush(ctx))
						want = last + 1
					}
					require.NoError(t, d.Stop(ctx))
				}
				got := savedCheckpoint(t, s, "ledger")
				switch {
				case want > last:
					// Past every event: past the checkpoint's own saves too,
					// as many as were read by then (they are bookkeeping).
					if got < int(want) {
						t.Errorf("saved checkpoint = %d, want at least %d", got, want)
					}
				case got != int(want) && !(want == 0 && got == -1):
					t.Errorf("saved checkpoint = %d, want %d", got, want)
				}

				s = reopen()
				d, err = eventbus.SubscribeDurableBatch(ctx, newBus(t, nil), s, reg, "ledger", func(_ context.Context, events []eventbus.Event[Deposited]) error {
					mu.Lock()
					defer mu.Unlock()
					for _, e := range events {
						handled = append(handled, e.Position)
					}
					return nil
				}, nil)
				require.NoError(t, err)
				require.NoError(t, d.WaitFor(ctx, last))
				require.NoError(t, d.Stop(ctx))
				mu.Lock()
				defer mu.Unlock()
				var again []uint64
				for pos := want; pos <= last; pos++ {
					again = append(again, pos)
				}
				require.Equal(t, again, handled, "positions delivered by the next run")
			})
		})
	}
}

// TestSubscribeDurableBatchNamesItself checks that SubscribeDurableBatch's
// errors for bad input name it, not SubscribeDurable, whose code it shares.
func TestSubscribeDurableBatchNamesItself(t *testing.T) {
	s, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := eventbus.NewRegistry(nil)
	type ev struct{ N int }
	if err := eventbus.Register[ev](r, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := eventbus.New(nil)
	defer b.Close()
	h := func(context.Context, []eventbus.Event[ev]) error { return nil }
	var nilCtx context.Context
	for name, f := range map[string]func() error{
		"nil context": func() error { _, err := eventbus.SubscribeDurableBatch(nilCtx, b, s, r, "d", h, nil); return err },
		"nil bus": func() error {
			_, err := eventbus.SubscribeDurableBatch(context.Background(), nil, s, r, "d", h, nil)
			return err
		},
	} {
		err := f()
		if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "SubscribeDurableBatch") {
			t.Errorf("%s: SubscribeDurableBatch = %v, want an ErrInvalid naming SubscribeDurableBatch", name, err)
		}
	}
}
