package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestBatchRetryModel runs random sequences of Publish, Flush, Redrive,
// Unsubscribe (draining or cut short), new subscriptions (batch or
// single-event, with random BatchSize and BatchWait, some single-event ones
// with Idempotency) and waits, against handlers whose every attempt fails,
// panics, calls runtime.Goexit, outlasts a stop or succeeds at random, a
// batch handler answering with every kind of *BatchError (out of range
// indexes, nil errors, Permanent inside and around it, a typed nil, one
// naming none, one joined with another error) and changing its events in
// place, a dead-letter sink that misbehaves, and now and then an event with
// the ID of an earlier one. It
// checks, against a model: per key, events are handled in publish order (a
// batch handler fails the events after a failed one of their key, as the
// BatchHandler doc advises); every event queued for a subscription ends
// exactly once, handled, dead-lettered (with the attempts it had) or
// skipped as a duplicate of an event handled; and Metrics agree with the
// handlers' own counts at every Flush and at the end (Shutdown, Close or a
// Shutdown cut short).
func TestBatchRetryModel(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runBatchRetryModel(t, seed) })
		})
	}
}

// batchModelSub is the model of one subscription.
type batchModelSub struct {
	sub    *eventbus.Subscription
	batch  bool
	gone   bool             // unsubscribed: no longer in Metrics
	queued []int            // N of every event queued for it
	keys   map[int]string   // N -> key
	byKey  map[string][]int // key -> N queued, in order

	// Under the model's mutex, written by handlers.
	attempts map[int]int      // N -> attempts so far
	handled  map[int]int      // N -> times handled
	order    map[string][]int // key -> N handled, in order
	failed   uint64           // failed attempts
	last     map[int]string   // N -> how its last attempt failed
	retried  uint64           // attempts after the first of a delivery
	// N -> attempts before its last redrive; redriven events may be
	// handled after later events of their key.
	redriven map[int]int
	redrives uint64
	// idempotent subscriptions skip events whose ID was handled: they end
	// as duplicates, neither handled nor dead-lettered.
	idempotent bool
}

func runBatchRetryModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	maxAttempts := 1 + rng.IntN(4)
	metrics := rng.IntN(2) == 0
	// Now and then an event gets the ID of an earlier one, which the
	// Idempotency middleware of some subscriptions skips.
	var ids []eventbus.ID
	idOf := map[int]eventbus.ID{} // N -> ID
	b := newBus(t, &eventbus.Options{
		NewID: func() eventbus.ID {
			if len(ids) > 0 && rng.IntN(8) == 0 {
				return ids[rng.IntN(len(ids))]
			}
			ids = append(ids, eventbus.NewID())
			return ids[len(ids)-1]
		},
		Workers:   1 + rng.IntN(3),
		QueueSize: 1 + rng.IntN(6),
		Retry:     eventbus.RetryPolicy{MaxAttempts: maxAttempts, InitialDelay: time.Second},
		Metrics:   metrics,
		DeadLetterSink: eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
			switch dl.Payload().(Order).N % 7 {
			case 1:
				time.Sleep(300 * time.Millisecond)
			case 2:
				return errFlaky
			case 3:
				panic("sink")
			case 4:
				runtime.Goexit()
			}
			return nil
		}),
	})
	topic := newTopic[Order](t, b, "orders", nil)
	var mu sync.Mutex
	subs := map[string]*batchModelSub{}
	// pick draws from a source of its own for each call, so that the
	// handlers' choices do not depend on the order workers run in.
	pick := func(n int, vals ...int) int {
		var s uint64
		for _, v := range vals {
			s = s*1_000_003 + uint64(v)
		}
		return rand.New(rand.NewPCG(seed, s)).IntN(n)
	}
	errBatch := errors.New("batch failed")
	// work takes some time now and then, with mu released, and reports
	// whether ctx was still live at its end: a stop cuts it short.
	work := func(ctx context.Context, vals ...int) bool {
		if pick(5, append(vals, 3)...) == 0 {
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(700 * time.Millisecond):
			}
			mu.Lock()
		}
		return ctx.Err() == nil
	}
	newSub := func() {
		name := fmt.Sprint("s", len(subs))
		idx := len(subs)
		m := &batchModelSub{
			batch: rng.IntN(3) > 0, keys: map[int]string{}, byKey: map[string][]int{},
			attempts: map[int]int{}, handled: map[int]int{}, order: map[string][]int{}, last: map[int]string{},
			redriven: map[int]int{},
		}
		subs[name] = m
		opts := &eventbus.SubscriptionOptions{Workers: 1 + rng.IntN(3)}
		// ok records that the bus will take event e as handled; fail that
		// it will take the attempt as failed, and how.
		ok := func(e eventbus.Event[Order]) {
			m.handled[e.Payload.N]++
			if _, again := m.redriven[e.Payload.N]; !again {
				m.order[e.Key] = append(m.order[e.Key], e.Payload.N)
			}
		}
		fail := func(e eventbus.Event[Order], how string) {
			m.failed++
			m.last[e.Payload.N] = how
		}
		if !m.batch {
			if rng.IntN(2) == 0 {
				m.idempotent = true
				opts.Middleware = []eventbus.Middleware{eventbus.Idempotency(nil)}
			}
			m.sub = subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				n := e.Payload.N
				m.attempts[n]++
				if m.attempts[n]-m.redriven[n] > 1 {
					m.retried++
				}
				if !work(ctx, idx, n, m.attempts[n]) {
					fail(e, "error")
					return ctx.Err()
				}
				switch pick(10, idx, n, m.attempts[n]) {
				case 0:
					fail(e, "error")
					return errFlaky
				case 1:
					fail(e, "panic")
					mu.Unlock()
					defer mu.Lock()
					panic("boom")
				case 2:
					fail(e, "goexit")
					mu.Unlock()
					defer mu.Lock()
					runtime.Goexit()
				case 3:
					fail(e, "permanent")
					return eventbus.Permanent(errFlaky)
				}
				ok(e)
				return nil
			}, opts)
			return
		}
		opts.BatchSize = 1 + rng.IntN(5)
		if rng.IntN(2) == 0 {
			opts.BatchWait = time.Duration(rng.IntN(3000)) * time.Millisecond
		}
		var err error
		m.sub, err = topic.SubscribeBatch(name, func(ctx context.Context, events []eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			defer func() {
				// Changed in place, however the handler ends: retries and
				// dead letters get the events as published all the same.
				for i := range events {
					events[i].Key, events[i].ID, events[i].Payload.N = "changed", eventbus.ID{}, -1
				}
			}()
			if len(events) == 0 || len(events) > opts.BatchSize {
				t.Errorf("%s: a batch of %d events, want 1 to %d", name, len(events), opts.BatchSize)
				return nil
			}
			for _, e := range events {
				n := e.Payload.N
				m.attempts[n]++
				if m.attempts[n]-m.redriven[n] > 1 {
					m.retried++
				}
			}
			first := events[0].Payload.N
			all := func(how string) {
				for _, e := range events {
					fail(e, how)
				}
			}
			if !work(ctx, idx, first, m.attempts[first]) {
				all("error")
				return ctx.Err()
			}
			switch pick(16, idx, first, m.attempts[first], len(events)) {
			case 0:
				all("error")
				return errBatch
			case 1:
				all("panic")
				mu.Unlock()
				defer mu.Lock()
				panic("batch boom")
			case 2:
				all("goexit")
				mu.Unlock()
				defer mu.Lock()
				runtime.Goexit()
			case 3:
				all("permanent")
				return eventbus.Permanent(errBatch)
			case 4:
				all("invalid")
				return &eventbus.BatchError{Failed: map[int]error{len(events): errFlaky}}
			case 5:
				for _, e := range events {
					ok(e)
				}
				return (*eventbus.BatchError)(nil)
			case 6:
				for _, e := range events {
					ok(e)
				}
				return &eventbus.BatchError{}
			}
			// Event by event; one that fails fails the later events of its
			// key in the batch too, so that their order holds.
			// wrap: 0 Permanent around, 1 wrapped, 2 and 3 bare, 4 joined
			// with another error, which fails every event.
			wrap := pick(5, idx, first, m.attempts[first], len(events), 1)
			failed := map[int]error{}
			hows := map[int]string{}
			down := map[string]bool{}
			for i, e := range events {
				n := e.Payload.N
				how := ""
				switch pick(8, idx, n, m.attempts[n], 2) {
				case 0, 1:
					how = "error"
				case 2:
					how = "permanent"
				case 3:
					how = "invalid"
				}
				if how == "" && e.Key != "" && down[e.Key] {
					how = "error"
				}
				if how == "" {
					continue
				}
				down[e.Key] = true
				hows[i] = how
				switch how {
				case "error":
					failed[i] = errFlaky
				case "permanent":
					failed[i] = eventbus.Permanent(errFlaky)
				case "invalid":
					failed[i] = nil
				}
			}
			for i, e := range events {
				how, bad := hows[i]
				switch {
				case !bad && wrap == 4:
					fail(e, "error")
				case !bad:
					ok(e)
				case wrap == 0:
					fail(e, "permanent")
				default:
					fail(e, how)
				}
			}
			var err error = &eventbus.BatchError{Failed: failed}
			switch {
			case len(failed) == 0 && wrap < 2:
				return nil
			case wrap == 0:
				err = eventbus.Permanent(err)
			case wrap == 1:
				err = fmt.Errorf("saving: %w", err)
			case wrap == 4:
				err = errors.Join(err, errBatch)
			}
			return err
		}, opts)
		require.NoError(t, err)
	}
	live := func() []*batchModelSub {
		var out []*batchModelSub
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for name := range subs {
				if !yield(name) {
					return
				}
			}
		}) {
			if s := subs[name]; !s.gone {
				out = append(out, s)
			}
		}
		return out
	}
	// dead returns the dead letters of each subscription by N.
	dead := func() map[string]map[int][]eventbus.DeadLetter {
		out := map[string]map[int][]eventbus.DeadLetter{}
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if out[dl.Subscription] == nil {
				out[dl.Subscription] = map[int][]eventbus.DeadLetter{}
			}
			n := dl.Payload().(Order).N
			out[dl.Subscription][n] = append(out[dl.Subscription][n], dl)
		}
		return out
	}
	// check checks order and that no event ended twice; finished says that
	// every event of the subscriptions named ended, and abandoned that
	// some may have been dead-lettered by a stop.
	check := func(finished map[string]bool, abandoned bool) {
		t.Helper()
		dls := dead()
		mu.Lock()
		defer mu.Unlock()
		for name, s := range subs {
			for key, got := range s.order {
				if key == "" {
					continue
				}
				require.True(t, slices.IsSorted(got), "%s: key %s handled out of order: %v", name, key, got)
			}
			for _, n := range s.queued {
				ends := s.handled[n] + len(dls[name][n])
				if !finished[name] {
					require.LessOrEqual(t, ends, 1, "%s: event %d ended %d times", name, n, ends)
					continue
				}
				if ends == 0 && s.idempotent {
					require.True(t, slices.ContainsFunc(s.queued, func(o int) bool { return o != n && idOf[o] == idOf[n] && s.handled[o] > 0 }),
						"%s: event %d neither handled nor dead-lettered, and no event with its ID was handled", name, n)
					continue
				}
				require.Equal(t, 1, ends, "%s: event %d (key %q, attempts %d) ended %d times", name, n, s.keys[n], s.attempts[n], ends)
				if s.handled[n] == 1 {
					continue
				}
				dl := dls[name][n][0]
				if s.idempotent {
					// An attempt waiting in Idempotency for a delivery of
					// the same ID fails without reaching the handler when
					// a stop cuts it short.
					require.GreaterOrEqual(t, dl.Attempt, s.attempts[n]-s.redriven[n], "%s: event %d: dead letter's attempts: %v", name, n, dl.Err)
				} else {
					require.Equal(t, s.attempts[n]-s.redriven[n], dl.Attempt, "%s: event %d: dead letter's attempts: %v", name, n, dl.Err)
				}
				if errors.Is(dl.Err, eventbus.ErrClosed) || errors.Is(dl.Err, context.DeadlineExceeded) {
					require.True(t, abandoned, "%s: event %d abandoned: %v", name, n, dl.Err)
					continue
				}
				how := s.last[n]
				switch how {
				case "error":
					require.Equal(t, maxAttempts, dl.Attempt, "%s: event %d given up after %v", name, n, dl.Err)
				case "invalid":
					require.ErrorIs(t, dl.Err, eventbus.ErrInvalid)
					require.Equal(t, maxAttempts, dl.Attempt, "%s: event %d given up after %v", name, n, dl.Err)
				case "panic", "goexit":
					var pe *eventbus.PanicError
					require.ErrorAs(t, dl.Err, &pe, "%s: event %d", name, n)
				case "permanent":
				default:
					t.Fatalf("%s: event %d dead-lettered (%v) without failing", name, n, dl.Err)
				}
			}
		}
	}
	// checkMetrics compares each live subscription's metrics with the
	// model; settled says that no event is pending.
	checkMetrics := func(settled bool) {
		t.Helper()
		dls := dead()
		m := b.Metrics()
		mu.Lock()
		defer mu.Unlock()
		for _, sm := range m.Subscriptions {
			s := subs[sm.Subscription]
			require.False(t, s.gone)
			require.LessOrEqual(t, sm.Pending, sm.Queued, "%+v", sm)
			require.Equal(t, sm.Queued, sm.Handled+sm.DeadLettered+sm.Duplicates+sm.Pending, "%+v", sm)
			require.LessOrEqual(t, sm.Depth, sm.Pending, "%+v", sm)
			require.EqualValues(t, uint64(len(s.queued))+s.redrives, sm.Queued, "%+v", sm)
			if !settled {
				continue
			}
			var handled uint64
			for _, n := range s.queued {
				handled += uint64(s.handled[n])
			}
			deadLettered := s.redrives
			for _, d := range dls[sm.Subscription] {
				deadLettered += uint64(len(d))
			}
			// Every delivery ended once: those neither handled nor
			// dead-lettered (check saw that their ID was handled) are
			// duplicates.
			duplicates := uint64(len(s.queued)) + s.redrives - handled - deadLettered
			require.Zero(t, sm.Pending, "%+v", sm)
			require.Zero(t, sm.Depth, "%+v", sm)
			require.Equal(t, handled, sm.Handled, "%s: Handled", sm.Subscription)
			require.Equal(t, deadLettered, sm.DeadLettered, "%s: DeadLettered", sm.Subscription)
			require.Equal(t, duplicates, sm.Duplicates, "%s: Duplicates", sm.Subscription)
			if s.idempotent {
				require.GreaterOrEqual(t, sm.Failed, s.failed, "%s: Failed", sm.Subscription)
				// A retry that Idempotency skips, the event's ID handled
				// meanwhile under another key, does not reach the handler.
				require.GreaterOrEqual(t, sm.Retried, s.retried, "%s: Retried", sm.Subscription)
			} else {
				require.Equal(t, s.failed, sm.Failed, "%s: Failed", sm.Subscription)
				require.Equal(t, s.retried, sm.Retried, "%s: Retried", sm.Subscription)
			}
			if metrics {
				require.Equal(t, sm.Handled+sm.Failed+sm.Duplicates, sm.HandleTime.Count, "%s: one timing per attempt", sm.Subscription)
				require.Equal(t, sm.Handled+sm.DeadLettered+sm.Duplicates, sm.Latency.Count, "%s: one latency per finished event", sm.Subscription)
			}
		}
	}
	ctx := context.Background()
	keys := []string{"a", "b", "c", ""}
	newSub()
	n := 0
	for range 80 {
		switch op := rng.IntN(40); {
		case op < 24:
			n++
			key := keys[rng.IntN(len(keys))]
			var id eventbus.ID
			require.NoError(t, topic.Publish(ctx, Order{Key: key, N: n}, func(h *eventbus.Header) { id = h.ID }))
			idOf[n] = id
			for _, s := range live() {
				s.queued = append(s.queued, n)
				s.keys[n] = key
				s.byKey[key] = append(s.byKey[key], n)
			}
		case op < 30:
			time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond)
		case op < 33:
			require.NoError(t, b.Flush(ctx))
			finished := map[string]bool{}
			for name := range subs {
				finished[name] = true
			}
			check(finished, true)
			checkMetrics(true)
			if rng.IntN(2) == 0 {
				// Everything settled: redrive one subscription's dead
				// letters, which nothing else changes meanwhile.
				l := live()
				s := l[rng.IntN(len(l))]
				name := s.sub.Name()
				want := 0
				mu.Lock()
				for _, d := range dead()[name] {
					for _, dl := range d {
						n := dl.Payload().(Order).N
						s.redriven[n] = s.attempts[n]
						s.redrives++
						want++
					}
				}
				mu.Unlock()
				sent, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{Subscription: name})
				require.NoError(t, err)
				require.Equal(t, want, sent)
			}
		case op < 35:
			checkMetrics(false)
		case op < 37:
			newSub()
		default:
			l := live()
			if len(l) < 2 {
				continue
			}
			s := l[rng.IntN(len(l))]
			s.gone = true
			if rng.IntN(2) == 0 {
				require.NoError(t, s.sub.Unsubscribe(ctx))
				continue
			}
			short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(1500))*time.Millisecond)
			err := s.sub.Unsubscribe(short)
			cancel()
			lost := 0
			if err != nil {
				var ue *eventbus.UndeliveredError
				require.ErrorAs(t, err, &ue)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				lost = ue.Count
			}
			abandoned := 0
			for _, d := range dead()[s.sub.Name()] {
				for _, dl := range d {
					if errors.Is(dl.Err, context.DeadlineExceeded) {
						abandoned++
					}
				}
			}
			require.Equal(t, lost, abandoned, "events Unsubscribe reported undelivered")
		}
		check(nil, true)
	}
	switch rng.IntN(3) {
	case 0:
		require.NoError(t, b.Flush(ctx))
		checkMetrics(true)
		require.NoError(t, b.Shutdown(ctx))
	case 1:
		_ = b.Close()
	case 2:
		short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(1500))*time.Millisecond)
		_ = b.Shutdown(short)
		cancel()
	}
	finished := map[string]bool{}
	for name := range subs {
		finished[name] = true
	}
	check(finished, true)
	checkMetrics(true)
}
