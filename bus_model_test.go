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

// fate says what a model subscription's handler does with event n on its
// attempts: fail some times, panic, call runtime.Goexit, or fail for good.
// handled reports whether the event ends handled (with 3 attempts).
func fate(sub string, n int) (failures int, how string, handled bool) {
	switch (n*7 + len(sub)) % 9 {
	case 1:
		return 1, "error", true
	case 2:
		return 2, "error", true
	case 3:
		return 3, "error", false
	case 4:
		return 1, "panic", true
	case 5:
		return 1, "goexit", false
	}
	return 0, "", true
}

// TestBusModel runs random sequences of Publish, PublishBatch and
// TryPublish on an Async topic and Publish on a Sync one, Subscribe (single-event or batch
// subscriptions, some re-using the name of one unsubscribed before),
// Unsubscribe (draining, or cut short by its deadline; the subscription's
// dead letters are then discarded or kept), Flush and Redrive, with handlers
// that fail, panic, call Goexit and publish to both topics, and checks the
// bus against a model: per key, each subscription handles the events it was
// subscribed for in publish order (a batch handler fails the events after a
// failed one of their key, as BatchHandler's doc advises), those it gives up
// on are dead-lettered and handled once redriven (those that a stop
// abandoned before any attempt, whose fate may fail them again, end once
// either way), a Sync Publish reports each subscription that gave up, a
// Redrive sends the dead letters of a subscription gone to the one that
// took its name, Metrics agree, and the end
// (Shutdown, Close, or a Shutdown past its deadline) accounts for every
// event once, each stop counting what it abandoned.
func TestBusModel(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runBusModel(t, seed) })
		})
	}
}

// modelSub is the model of one subscription: of an Async topic, or of the
// Sync one; a name re-used after Unsubscribe gets a new one.
type modelSub struct {
	name      string
	sub       *eventbus.Subscription
	batch     bool
	sync      bool
	gone      bool
	discarded bool             // gone, and its dead letters discarded
	cut       bool             // unsubscribed with a deadline that passed
	expected  map[string][]int // key -> N of keyed events queued for it, in order
	queued    []int            // N of every event queued for it
	redrives  uint64           // dead letters redriven

	// Under the model's mutex, written by handlers.
	attempts map[int]int      // N -> attempts so far
	handled  map[string][]int // key -> N handled before any redrive, in order
	done     map[int]int      // N -> times handled
	redriven map[int]bool     // N redriven: handled after later events of its key
	orphans  map[int]bool     // N whose child Close refused: dead-lettered
}

// handles reports whether m ends up handling event n before any redrive,
// with 3 attempts: fate's, except that a batch handler and a Sync topic's
// handler fail with an error where fate says to call Goexit, and a batch
// handler where it says to panic.
func (m *modelSub) handles(n int) bool {
	failures, _, handled := fate(m.name, n)
	if m.batch || m.sync {
		return failures < 3
	}
	return handled
}

func runBusModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := newBus(t, &eventbus.Options{
		Workers:   1 + rng.IntN(3),
		QueueSize: 1 + rng.IntN(3),
		Retry:     eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
		Metrics:   rng.IntN(2) == 0,
	})
	topic := newTopic[Order](t, b, "orders", nil)
	children := newTopic[Order](t, b, "children", nil)
	audit := newTopic[Order](t, b, "audit", &eventbus.TopicOptions[Order]{Mode: eventbus.Sync})
	var (
		mu      sync.Mutex
		kids    = map[eventbus.ID]eventbus.ID{} // child causation -> parent correlation
		parents = map[eventbus.ID]eventbus.ID{} // event ID -> correlation ID
		// Audit events, published by the test and by handlers: N -> the
		// error of their Publish.
		audited = map[int]error{}
		nextN   = 1_000_000 // N of the next audit event
	)
	// locked runs f with mu held. A require in f that fails ends the test
	// goroutine with runtime.Goexit, which runs the deferred Unlock: a
	// handler waiting for mu then returns, so that the Close of newBus's
	// cleanup ends and the failure is reported rather than the test
	// hanging until its timeout.
	locked := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
	}
	subscribe(t, children, "kids", func(_ context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		kids[e.CausationID] = e.CorrelationID
		return nil
	}, nil)
	// record notes that m handled e; callers hold mu.
	record := func(m *modelSub, e eventbus.Event[Order]) {
		n := e.Payload.N
		m.done[n]++
		if !m.redriven[n] {
			m.handled[e.Key] = append(m.handled[e.Key], n)
		}
	}
	// attempt counts an attempt of m at event n and returns its number.
	attempt := func(m *modelSub, n int) int {
		mu.Lock()
		defer mu.Unlock()
		m.attempts[n]++
		return m.attempts[n]
	}
	newModel := func(name string) *modelSub {
		return &modelSub{
			name: name, expected: map[string][]int{},
			attempts: map[int]int{}, handled: map[string][]int{}, done: map[int]int{}, redriven: map[int]bool{},
			orphans: map[int]bool{},
		}
	}
	var audits []*modelSub
	for _, batch := range []bool{false, true} {
		name := "audit"
		if batch {
			name += "-batch"
		}
		m := newModel(name)
		m.batch, m.sync = batch, true
		audits = append(audits, m)
		// In Sync mode a batch holds one event: both handlers do the same.
		handle := func(_ context.Context, e eventbus.Event[Order]) error {
			n := e.Payload.N
			a := attempt(m, n)
			if failures, how, _ := fate(m.name, n); a <= failures {
				if how == "panic" && !batch {
					panic("boom")
				}
				return errFlaky
			}
			mu.Lock()
			record(m, e)
			mu.Unlock()
			return nil
		}
		var err error
		if batch {
			m.sub, err = audit.SubscribeBatch(m.name, func(ctx context.Context, events []eventbus.Event[Order]) error {
				if len(events) != 1 {
					t.Errorf("%s: a Sync batch of %d events", m.name, len(events))
				}
				return handle(ctx, events[0])
			}, nil)
		} else {
			m.sub, err = audit.Subscribe(m.name, handle, nil)
		}
		require.NoError(t, err)
	}
	// publishAudit publishes a new event on the Sync topic and notes the
	// result. A handler calls it with its context.
	publishAudit := func(ctx context.Context, key string) {
		mu.Lock()
		n := nextN
		nextN++
		mu.Unlock()
		err := audit.Publish(ctx, Order{Key: key, N: n})
		mu.Lock()
		audited[n] = err
		mu.Unlock()
	}
	// checkAudit checks the result of the Publish of audit event n: a
	// *HandlerError for each subscription that gave up on it, and after a
	// stop (cut) one for each whose retry the stop cut short too.
	checkAudit := func(n int, err error, cut bool) {
		t.Helper()
		if errors.Is(err, eventbus.ErrClosed) {
			return // refused: no handler ran
		}
		failed := map[string]error{} // subscription -> its error
		if errs, ok := err.(interface{ Unwrap() []error }); ok {
			for _, err := range errs.Unwrap() {
				var he *eventbus.HandlerError
				require.ErrorAs(t, err, &he)
				failed[he.Subscription] = he.Err
			}
		} else {
			require.NoError(t, err, "Publish of audit event %d", n)
		}
		for _, m := range audits {
			err, ok := failed[m.name]
			switch {
			case !m.handles(n):
				require.True(t, ok, "Publish of audit event %d: no error of %s", n, m.name)
			case cut:
				// A handler's publish, its context cancelled by Close
				// while the event waited for a retry.
				require.True(t, !ok || errors.Is(err, context.Canceled), "Publish of audit event %d: %v", n, err)
			default:
				require.False(t, ok, "Publish of audit event %d: %v", n, err)
			}
		}
		for _, m := range audits {
			m.queued = append(m.queued, n)
		}
	}
	var gens []*modelSub           // every subscription of orders, in order made
	subs := map[string]*modelSub{} // name -> its latest subscription
	newSub := func(name string) {
		m := newModel(name)
		m.batch = rng.IntN(3) == 0
		gens = append(gens, m)
		subs[name] = m
		opts := &eventbus.SubscriptionOptions{Workers: 1 + rng.IntN(3)}
		// spawn publishes what a handler publishes on its first attempt
		// at event n, with its context.
		spawn := func(ctx context.Context, e eventbus.Event[Order]) error {
			n := e.Payload.N
			if n%4 == 0 {
				// A handler publishing to its own topic's sibling with a
				// full queue never waits; the child is linked to e.
				if err := children.Publish(ctx, Order{Key: "c", N: n}); err != nil {
					mu.Lock()
					m.orphans[n] = true
					mu.Unlock()
					return eventbus.Permanent(errors.New("child not published")) // not matching ErrClosed
				}
			}
			if n%5 == 0 {
				publishAudit(ctx, e.Key)
			}
			return nil
		}
		if m.batch {
			opts.BatchSize = 1 + rng.IntN(4)
			if rng.IntN(2) == 0 {
				opts.BatchWait = time.Duration(1+rng.IntN(2000)) * time.Millisecond
			}
			var err error
			m.sub, err = topic.SubscribeBatch(name, func(ctx context.Context, events []eventbus.Event[Order]) error {
				if len(events) == 0 || len(events) > opts.BatchSize {
					t.Errorf("%s: a batch of %d events, want 1 to %d", name, len(events), opts.BatchSize)
				}
				failed := map[int]error{}
				down := map[string]bool{} // keys with an event failed
				for i, e := range events {
					n := e.Payload.N
					a := attempt(m, n)
					if a == 1 {
						if err := spawn(ctx, e); err != nil {
							failed[i] = err
							continue
						}
					}
					if failures, _, _ := fate(name, n); a <= failures || e.Key != "" && down[e.Key] {
						// A later event of a failed one's key fails too,
						// so that their order holds through the retry.
						failed[i] = errFlaky
						down[e.Key] = true
						continue
					}
					mu.Lock()
					record(m, e)
					mu.Unlock()
				}
				if len(failed) == 0 {
					return nil
				}
				return &eventbus.BatchError{Failed: failed}
			}, opts)
			require.NoError(t, err)
			return
		}
		m.sub = subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
			n := e.Payload.N
			a := attempt(m, n)
			if a == 1 {
				if err := spawn(ctx, e); err != nil {
					return err
				}
			}
			failures, how, _ := fate(name, n)
			if a <= failures {
				switch how {
				case "panic":
					panic("boom")
				case "goexit":
					runtime.Goexit()
				}
				return errors.New("flaky")
			}
			mu.Lock()
			record(m, e)
			parents[e.ID] = e.CorrelationID
			mu.Unlock()
			return nil
		}, opts)
	}
	live := func() []*modelSub {
		var out []*modelSub
		for _, m := range gens {
			if !m.gone {
				out = append(out, m)
			}
		}
		return out
	}
	// dead returns the dead letters held for each subscription name, by N.
	dead := func() map[string]map[int]int {
		out := map[string]map[int]int{}
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if out[dl.Subscription] == nil {
				out[dl.Subscription] = map[int]int{}
			}
			out[dl.Subscription][dl.Payload().(Order).N]++
		}
		return out
	}
	// check compares what each subscription handled with the model; ended
	// says that every event is finished, handled or dead-lettered (and not
	// discarded), and handled that none was abandoned by a stop, so that
	// each handled what the model says. Subscriptions of a name never share
	// an event, so dead letters are told apart by N.
	check := func(ended, handled bool) {
		t.Helper()
		dls := dead()
		mu.Lock()
		defer mu.Unlock()
		for n, err := range audited {
			checkAudit(n, err, !handled)
		}
		clear(audited)
		for _, m := range append(slices.Clone(gens), audits...) {
			for key, want := range m.expected {
				ok := []int{}
				for _, n := range want {
					if m.handles(n) && !m.orphans[n] {
						ok = append(ok, n)
					}
				}
				got := append([]int{}, m.handled[key]...)
				if !handled || m.cut {
					require.LessOrEqual(t, len(got), len(ok), "subscription %s, key %s", m.name, key)
					ok = ok[:len(got)]
				}
				require.Equal(t, ok, got, "subscription %s, key %s", m.name, key)
			}
			for _, n := range m.queued {
				ends := m.done[n] + dls[m.name][n]
				switch {
				case m.discarded:
					require.LessOrEqual(t, m.done[n], 1, "%s: event %d handled %d times", m.name, n, m.done[n])
				case ended:
					require.Equal(t, 1, ends, "%s: event %d: handled %d times, dead-lettered %d", m.name, n, m.done[n], dls[m.name][n])
				default:
					require.LessOrEqual(t, ends, 1, "%s: event %d: handled %d times, dead-lettered %d", m.name, n, m.done[n], dls[m.name][n])
				}
			}
		}
	}
	// checkMetrics compares the metrics of the live subscriptions of orders
	// with the model, when every event is finished.
	checkMetrics := func() {
		t.Helper()
		dls := dead()
		mu.Lock()
		defer mu.Unlock()
		for _, sm := range b.Metrics().Subscriptions {
			require.Equal(t, sm.Queued, sm.Handled+sm.DeadLettered+sm.Duplicates+sm.Pending, "%+v", sm)
			if sm.Topic != "orders" { // children published meanwhile are not waited for
				continue
			}
			require.Zero(t, sm.Pending, "%+v", sm)
			m := subs[sm.Subscription]
			require.False(t, m.gone, "%+v", sm)
			var handled, held uint64
			for _, n := range m.queued {
				handled += uint64(m.done[n])
				held += uint64(dls[m.name][n])
			}
			require.EqualValues(t, uint64(len(m.queued))+m.redrives, sm.Queued, "%+v", sm)
			require.Equal(t, handled, sm.Handled, "%+v", sm)
			require.Equal(t, held+m.redrives, sm.DeadLettered, "%+v", sm)
		}
	}
	// stale reports whether dead letters of a gone subscription of the
	// name are held.
	stale := func(name string) bool {
		for _, m := range gens {
			if m.name == name && m.gone && !m.discarded && len(m.queued) > 0 {
				dls := dead()[name]
				for _, n := range m.queued {
					if dls[n] > 0 {
						return true
					}
				}
			}
		}
		return false
	}
	ctx := context.Background()
	n := 0
	keys := []string{"a", "b", "c", ""}
	newSub("s0")
	for range 80 {
		switch op := rng.IntN(24); {
		case op < 12:
			size := 1 // of TryPublish; PublishBatch for more
			if op >= 3 {
				size += rng.IntN(3) * rng.IntN(3)
			}
			var batch []Order
			for range size {
				n++
				batch = append(batch, Order{Key: keys[rng.IntN(len(keys))], N: n})
			}
			switch {
			case op < 3:
				ok, err := topic.TryPublish(ctx, batch[0])
				require.NoError(t, err)
				if !ok {
					batch = nil
				}
			case len(batch) > 1:
				sent, err := topic.PublishBatch(ctx, batch)
				require.NoError(t, err)
				require.Equal(t, len(batch), sent)
			default:
				require.NoError(t, topic.Publish(ctx, batch[0]))
			}
			for _, o := range batch {
				for _, m := range live() {
					m.queued = append(m.queued, o.N)
					if o.Key != "" {
						m.expected[o.Key] = append(m.expected[o.Key], o.N)
					}
				}
			}
		case op < 14:
			publishAudit(ctx, keys[rng.IntN(len(keys))])
		case op < 16:
			// A new name, or one whose subscription is gone.
			name := fmt.Sprint("s", len(subs))
			if rng.IntN(2) == 0 {
				for _, m := range gens {
					if m.gone && subs[m.name] == m {
						name = m.name
						break
					}
				}
			}
			newSub(name)
		case op < 17:
			if l := live(); len(l) > 1 {
				m := l[rng.IntN(len(l))]
				m.gone = true
				if rng.IntN(2) == 0 {
					short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
					err := m.sub.Unsubscribe(short)
					cancel()
					lost := 0
					if err != nil {
						m.cut = true
						var ue *eventbus.UndeliveredError
						require.ErrorAs(t, err, &ue)
						require.ErrorIs(t, err, context.DeadlineExceeded)
						lost = ue.Count
					}
					abandoned := 0
					for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Subscription: m.name}) {
						if errors.Is(dl.Err, context.DeadlineExceeded) && slices.Contains(m.queued, dl.Payload().(Order).N) {
							abandoned++
						}
					}
					require.Equal(t, lost, abandoned)
				} else {
					require.NoError(t, m.sub.Unsubscribe(ctx))
				}
				if rng.IntN(2) == 0 {
					// Its dead letters, and any kept of earlier
					// subscriptions of its name.
					want := 0
					dls := dead()[m.name]
					for _, g := range gens {
						if g.name == m.name && !g.discarded {
							g.discarded = true
							for _, n := range g.queued {
								want += dls[n]
							}
						}
					}
					require.Equal(t, want, b.DeadLetters().Discard(eventbus.DeadLetterFilter{Subscription: m.name}))
				}
			}
		case op < 20:
			require.NoError(t, b.Flush(ctx))
			check(true, true)
			checkMetrics()
		default:
			// Everything settled: redrive one subscription's dead letters,
			// which nothing else changes meanwhile.
			require.NoError(t, b.Flush(ctx))
			check(true, true)
			l := append(live(), audits...)
			m := l[rng.IntN(len(l))]
			want := 0
			dls := dead()[m.name]
			adopted := map[int]bool{}
			// Adopted events that no attempt reached before a stop cut
			// their subscription short: their fate may fail them again.
			fresh := map[int]bool{}
			isStale := stale(m.name)
			mu.Lock()
			if isStale {
				// Dead letters of gone subscriptions of its name go to
				// it: their events become its own, with their attempts
				// so far, redriven but never dead-lettered by it.
				for _, g := range gens {
					if g == m || g.name != m.name || !g.gone || g.discarded {
						continue
					}
					g.queued = slices.DeleteFunc(g.queued, func(n int) bool {
						if dls[n] == 0 {
							return false
						}
						m.queued = append(m.queued, n)
						m.attempts[n] = g.attempts[n]
						adopted[n] = true
						fresh[n] = g.attempts[n] == 0
						return true
					})
				}
			}
			for _, n := range m.queued {
				if dls[n] > 0 {
					m.redriven[n] = true
					if !adopted[n] {
						m.redrives++
					}
					want++
				}
			}
			mu.Unlock()
			sent, err := b.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{Subscription: m.name})
			require.NoError(t, err)
			require.Equal(t, want, sent)
			require.NoError(t, b.Flush(ctx))
			again := dead()[m.name]
			locked(func() {
				for n := range m.redriven {
					if fresh[n] {
						require.Equal(t, 1, m.done[n]+again[n], "%s: redriven event %d: handled %d times, dead-lettered %d", m.name, n, m.done[n], again[n])
						continue
					}
					require.Equal(t, 1, m.done[n], "%s: redriven event %d handled %d times", m.name, n, m.done[n])
				}
			})
		}
		check(false, false)
	}
	var final error
	switch rng.IntN(3) {
	case 0:
		require.NoError(t, b.Flush(ctx))
		check(true, true)
		checkMetrics()
		require.NoError(t, b.Shutdown(ctx))
		check(true, true)
	default:
		// Close, or a Shutdown whose deadline passes, abandons what is
		// queued or waiting for a retry: counted, dead-lettered with the
		// cause (ErrClosed or DeadlineExceeded), and nothing else.
		cause := eventbus.ErrClosed
		if rng.IntN(2) == 0 {
			final = b.Close()
		} else {
			cause = context.DeadlineExceeded
			short, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Millisecond)
			final = b.Shutdown(short)
			cancel()
		}
		undelivered := 0
		if final != nil {
			var ue *eventbus.UndeliveredError
			require.ErrorAs(t, final, &ue)
			require.ErrorIs(t, final, cause)
			undelivered = ue.Count
		}
		abandoned := 0
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{Err: cause}) {
			// Not those of an Unsubscribe cut short, which it reported,
			// nor those of a Sync subscription, whose publisher (an async
			// handler, its context cancelled by the stop) reported them.
			if !slices.ContainsFunc(append(slices.Clone(gens), audits...), func(m *modelSub) bool {
				return m.name == dl.Subscription && (m.sync || m.cut && slices.Contains(m.queued, dl.Payload().(Order).N))
			}) {
				abandoned++
			}
		}
		require.Equal(t, undelivered, abandoned)
		check(true, false)
	}
	require.Equal(t, final, b.Close(), "the first call's result")
	for _, sm := range b.Metrics().Subscriptions {
		require.Zero(t, sm.Pending, "%+v", sm)
		require.Equal(t, sm.Queued, sm.Handled+sm.DeadLettered+sm.Duplicates, "%+v", sm)
	}
	mu.Lock()
	defer mu.Unlock()
	for cause, corr := range kids {
		if want, ok := parents[cause]; ok { // the parent may have been dead-lettered
			require.Equal(t, want, corr, "child of %v", cause)
		}
	}
}

// TestFanOutAllOrNothingUnderStress publishes from several goroutines with
// short deadlines, one event or a batch at a time, and TryPublish into full
// queues of three subscriptions, while one subscription unsubscribes and
// the bus shuts down with a deadline. Every event Publish or PublishBatch
// accepted reaches each remaining subscription once (handled or
// dead-lettered); no refused event reaches any.
func TestFanOutAllOrNothingUnderStress(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runFanOutStress(t, seed) })
		})
	}
}

func runFanOutStress(t *testing.T, seed uint64) {
	const publishers, each = 4, 40
	b := newBus(t, &eventbus.Options{Workers: 2, QueueSize: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	var mu sync.Mutex
	seen := map[string]map[int]int{} // sub -> N -> times handled
	var subs []*eventbus.Subscription
	for i := range 3 {
		name := fmt.Sprint("s", i)
		seen[name] = map[int]int{}
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		var rmu sync.Mutex
		subs = append(subs, subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
			rmu.Lock()
			d := time.Duration(rng.IntN(3)) * time.Millisecond
			rmu.Unlock()
			time.Sleep(d) // work that takes time
			mu.Lock()
			seen[name][e.Payload.N]++
			mu.Unlock()
			return nil
		}, nil))
	}
	accepted := make([][]int, publishers)
	refused := make([][]int, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(100+p)))
			for i := 0; i < each; {
				var batch []Order
				for range min(1+rng.IntN(4), each-i) {
					batch = append(batch, Order{Key: fmt.Sprint("k", rng.IntN(3)), N: p*each + i})
					i++
				}
				sent := 0
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(30))*time.Millisecond)
				switch {
				case len(batch) > 1:
					var err error
					sent, err = topic.PublishBatch(ctx, batch)
					if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, eventbus.ErrClosed) {
						t.Errorf("PublishBatch() = %v, want nil, DeadlineExceeded or ErrClosed", err)
					}
				case rng.IntN(2) == 0:
					ok, err := topic.TryPublish(context.Background(), batch[0])
					if err != nil && !errors.Is(err, eventbus.ErrClosed) {
						t.Errorf("TryPublish() = %v, want nil or ErrClosed", err)
					}
					if ok {
						sent = 1
					}
				default:
					err := topic.Publish(ctx, batch[0])
					if err == nil {
						sent = 1
					} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, eventbus.ErrClosed) {
						t.Errorf("Publish() = %v, want nil, DeadlineExceeded or ErrClosed", err)
					}
				}
				cancel()
				for j, o := range batch {
					if j < sent {
						accepted[p] = append(accepted[p], o.N)
					} else {
						refused[p] = append(refused[p], o.N)
					}
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	unsubErr := subs[2].Unsubscribe(short)
	cancel()
	if unsubErr != nil {
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, unsubErr, &ue)
	}
	time.Sleep(20 * time.Millisecond)
	short, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	_ = b.Shutdown(short) // may leave events undelivered: they are dead letters
	cancel()
	wg.Wait()

	dead := map[string]map[int]int{}
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		if dead[dl.Subscription] == nil {
			dead[dl.Subscription] = map[int]int{}
		}
		dead[dl.Subscription][dl.Payload().(Order).N]++
	}
	mu.Lock()
	defer mu.Unlock()
	for p := range publishers {
		for _, n := range refused[p] {
			for name := range seen {
				require.Zero(t, seen[name][n]+dead[name][n], "refused event %d reached %s", n, name)
			}
		}
		for _, n := range accepted[p] {
			for _, name := range []string{"s0", "s1"} {
				require.Equal(t, 1, seen[name][n]+dead[name][n], "accepted event %d in %s", n, name)
			}
			require.LessOrEqual(t, seen["s2"][n]+dead["s2"][n], 1, "accepted event %d in s2", n)
		}
	}
}
