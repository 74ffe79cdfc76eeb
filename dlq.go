package eventbus

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// DeadLetter is an event that a subscription gave up on: every attempt
// failed, the error was permanent, or the bus stopped before the event could
// be handled.
type DeadLetter struct {
	// Envelope is the event as the subscription saw it; Envelope.Attempt is
	// the number of attempts made, 0 for an event that never ran.
	Envelope
	// Err is the last attempt's error (a *PanicError for a panic), or why
	// the event never ran, such as ErrClosed.
	Err error
	// FirstFailure and LastFailure are the times of the first and last failed
	// attempts; for an event that never ran, both are when it was given up.
	// They come from Options.Clock when it is set.
	FirstFailure, LastFailure time.Time

	redrive func(ctx context.Context, env *Envelope) error
	release func() // lets a durable subscription's checkpoint pass it (Discard), if it holds it back
	seq     uint64 // names it in its queue: the count of dead letters added
}

// DeadLetterSink receives every new dead letter, for alerting or to keep
// it somewhere durable; the payload is dl.Payload(), which encoding dl
// itself (with encoding/json, say) leaves out, as it leaves out the error's
// message (most errors, those of errors.New and fmt.Errorf among them,
// encode as {}): keep dl.Err.Error() too. Put runs on a goroutine of
// its own, which the goroutine that gave up on the event (a worker, or a
// Sync-mode publisher) waits for, without any lock of the bus held: a slow
// sink holds that goroutine up, and should hand off. Every worker of every
// subscription, and every Sync-mode publisher, gives up on events on its
// own, so Put is called concurrently and must be safe for concurrent use
// (a sink that appends to a slice or writes to a file takes a lock). Its
// error is counted, never retried; so is a panic in Put (as a
// [*PanicError]) or a call of runtime.Goexit (t.FailNow or testify's
// require in a test's sink), which end only Put's goroutine. The dead
// letter is held in the queue all the same, once Put has returned: a
// Redrive that Put calls does not find it.
//
// A dead letter of a [Durable] subscription outlives a restart only in the
// sink. So when Put fails, the subscription's checkpoint stays before the
// event for the rest of the run, and the next run delivers it again, with
// the events after it (at-least-once), unless a redrive of the dead letter
// is handled (or fails again and Put keeps it) or
// [DeadLetterQueue.Discard] removes it first. Without a sink, or when Put
// succeeds, the checkpoint moves past the dead letter. The dead letters of
// a stop without grace ([Bus.Close], or a Shutdown or [Durable.Stop] whose
// context ends) are the exception: those of the events it abandoned, and
// of those whose handlers failed once it had cancelled their contexts,
// reach the sink too, but the checkpoint never passes them, and the next
// run delivers them again. So do those whose handlers failed with an
// error matching [ErrClosed] once any stop of the bus began, graceful
// too, which refuses what they publish to the bus. A sink's copy of one
// must not be handled as well (the abandoned ones have Attempt 0 and the
// stop's cause as Err), or its event is handled twice. But a stop that
// cuts short the redrive of a dead letter whose event the checkpoint
// passed already (one that the sink kept, say) leaves the checkpoint where
// it is: the next run does not deliver that event again, and the sink's
// new copy, or the one it kept, is all that is left of it.
//
// ctx is a handler's context for the dead letter's event, never cancelled,
// even when the bus stops without grace, so that the sink can still write
// somewhere. Events the sink publishes or redrives with ctx are linked to
// the dead letter's (its correlation ID, and its ID as causation ID) and
// never wait for room, which might have to come from the very worker that
// waits for the sink; for the same reason [Bus.Flush],
// [Subscription.Unsubscribe] and [Bus.Shutdown] called with ctx return an
// error wrapping [ErrInvalid]. This holds for every dead letter: failed,
// abandoned by a stop, or lost to a handler's runtime.Goexit. A sink must
// not call [Bus.Close], which takes no context to refuse: it waits for the
// worker that waits for the sink, so neither ever returns.
type DeadLetterSink interface {
	Put(ctx context.Context, dl DeadLetter) error
}

// DeadLetterFunc adapts a function to a [DeadLetterSink].
type DeadLetterFunc func(ctx context.Context, dl DeadLetter) error

// Put calls f(ctx, dl). A nil f returns an error wrapping [ErrInvalid].
func (f DeadLetterFunc) Put(ctx context.Context, dl DeadLetter) error {
	if f == nil {
		return fmt.Errorf("%w: Put on a nil DeadLetterFunc", ErrInvalid)
	}
	return f(ctx, dl)
}

// DeadLetterFilter selects dead letters. Its zero value selects all; each
// set field narrows the selection.
type DeadLetterFilter struct {
	// Topic and Subscription match names exactly.
	Topic, Subscription string
	// ID, if not zero, matches the dead letters of that event: one for
	// each subscription that gave it up, or fewer, with Subscription.
	ID ID
	// Err matches dead letters whose error is or wraps Err (errors.Is).
	// A dead letter whose error panics when walked (a handler panicked
	// with an error whose Unwrap or Is method panics) matches no Err.
	Err error
}

// names reports whether dl matches f's names. It runs no user code, unlike
// matching Err, so callers may hold a lock.
func (f DeadLetterFilter) names(dl *DeadLetter) bool {
	return (f.Topic == "" || f.Topic == dl.Topic) &&
		(f.Subscription == "" || f.Subscription == dl.Subscription) &&
		(f.ID.IsZero() || f.ID == dl.ID)
}

// DeadLetterQueue holds a bus's dead letters in memory, oldest first. It is
// bounded: when full, the oldest entry is evicted to make room and counted
// (see Evicted); a configured sink has already received it. Its methods are
// safe for concurrent use and never call user code with its lock held.
//
// A nil DeadLetterQueue, which [Bus.DeadLetters] returns for a Bus not made
// by [New], holds nothing: its methods return zero values, and Redrive an
// error wrapping [ErrInvalid].
type DeadLetterQueue struct {
	mu       sync.Mutex
	entries  []DeadLetter
	capacity int
	evicted  uint64
	sink     DeadLetterSink
	sinkErrs uint64
	logger   *slog.Logger
	added    uint64 // dead letters ever added, which numbers them (seq)
}

func newDeadLetterQueue(capacity int, sink DeadLetterSink, logger *slog.Logger) *DeadLetterQueue {
	return &DeadLetterQueue{capacity: capacity, sink: sink, logger: logger}
}

// add records dl, hands it to the sink and evicts the oldest entry if full.
// hold, if not nil, is told whether the sink kept dl before dl enters the
// queue, so that no Discard comes first: a durable subscription keeps its
// checkpoint before an event that only this queue holds, and hold returns
// the function that lets it pass, for Discard.
func (q *DeadLetterQueue) add(ctx context.Context, dl DeadLetter, hold func(kept bool) (release func())) {
	if dl.Attempt > 0 && q.logger != nil {
		// An event that never ran, abandoned by a stop, is in the stop's
		// own report, with the others: a line each would flood the log.
		// Without a Logger, its arguments are not even built: they would
		// double a dead letter's allocations.
		report(context.WithoutCancel(ctx), q.logger, slog.LevelError, "eventbus: event dead-lettered",
			"id", dl.ID.String(), "type", dl.Type, "topic", dl.Topic, "subscription", dl.Subscription, "key", dl.Key,
			"attempts", dl.Attempt, "correlation_id", dl.CorrelationID.String(), "error", dl.Err)
	}
	var sinkErr error
	if q.sink != nil {
		// The handler's context may be cancelled already: the bus is
		// stopping without grace, and these are the events it abandons.
		ctx := context.WithoutCancel(ctx)
		if err := q.put(ctx, dl); err != nil {
			sinkErr = err
			q.mu.Lock()
			q.sinkErrs++
			q.mu.Unlock()
			// With the handler's context, as for the sink: a log handler
			// that publishes with it must not wait for room that only
			// this worker could make.
			report(ctx, q.logger, slog.LevelWarn, "eventbus: dead-letter sink failed", "id", dl.ID.String(), "topic", dl.Topic, "subscription", dl.Subscription, "error", err)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if hold != nil {
		dl.release = hold(sinkErr == nil)
	}
	q.evict(1)
	q.added++
	dl.seq = q.added
	q.entries = append(q.entries, dl)
}

// put calls the sink on a goroutine of its own and returns its error. A
// sink that panics or calls runtime.Goexit ends only that goroutine, not
// the worker that waits for it, which would lose its place among the events
// it holds: both become the sink's error.
func (q *DeadLetterQueue) put(ctx context.Context, dl DeadLetter) (err error) {
	done := make(chan struct{})
	go func() {
		returned := false
		defer func() {
			if !returned {
				r := recover() // nil after runtime.Goexit
				if r == nil {
					r = errSinkGoexit
				}
				err = &PanicError{Value: r, Stack: debug.Stack()}
			}
			close(done)
		}()
		err = q.sink.Put(ctx, dl)
		returned = true
	}()
	<-done
	return err
}

// errSinkGoexit is the panic value recorded for a dead-letter sink that
// called runtime.Goexit.
var errSinkGoexit error = goexitError("eventbus: dead-letter sink called runtime.Goexit (t.FailNow or testify's require in a sink?)")

// evict drops the oldest entries, counting them, until room more fit.
// Callers hold mu.
func (q *DeadLetterQueue) evict(room int) {
	if n := len(q.entries) + room - q.capacity; n > 0 {
		clear(q.entries[:n])
		q.entries = q.entries[n:]
		q.evicted += uint64(n)
	}
}

// Len returns the number of dead letters held.
func (q *DeadLetterQueue) Len() int {
	if q == nil {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Evicted returns how many dead letters were dropped to make room, and how
// many times the sink returned an error.
func (q *DeadLetterQueue) Evicted() (evicted, sinkErrors uint64) {
	if q == nil {
		return 0, 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.evicted, q.sinkErrs
}

// All returns the dead letters that match f, oldest first, as of the call.
func (q *DeadLetterQueue) All(f DeadLetterFilter) iter.Seq[DeadLetter] {
	out := q.matching(f)
	return func(yield func(DeadLetter) bool) {
		for _, dl := range out {
			if !yield(dl) {
				return
			}
		}
	}
}

// Get returns the dead letter of event id in the named subscription.
func (q *DeadLetterQueue) Get(subscription string, id ID) (DeadLetter, bool) {
	if q == nil {
		return DeadLetter{}, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, dl := range q.entries {
		if dl.ID == id && dl.Subscription == subscription {
			return dl, true
		}
	}
	return DeadLetter{}, false
}

// matching returns the entries that match f, oldest first, as of the
// call. It matches f.Err with the lock released: errors.Is runs the methods
// of the handlers' errors, and an error whose method panics matches
// nothing (see safely). A nil q holds nothing.
func (q *DeadLetterQueue) matching(f DeadLetterFilter) []DeadLetter {
	if q == nil {
		return nil
	}
	q.mu.Lock()
	var out []DeadLetter
	for i := range q.entries {
		if f.names(&q.entries[i]) {
			out = append(out, q.entries[i])
		}
	}
	q.mu.Unlock()
	if f.Err != nil {
		out = slices.DeleteFunc(out, func(dl DeadLetter) bool {
			return !safely(func() bool { return errors.Is(dl.Err, f.Err) })
		})
	}
	return out
}

// take removes and returns the entries matching f, those of them that are
// still there once matched: another take, or an eviction, may have removed
// some meanwhile.
func (q *DeadLetterQueue) take(f DeadLetterFilter) []DeadLetter {
	chosen := make(map[uint64]bool)
	for _, dl := range q.matching(f) {
		chosen[dl.seq] = true
	}
	if len(chosen) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var taken []DeadLetter
	kept := q.entries[:0]
	for _, dl := range q.entries {
		if chosen[dl.seq] {
			taken = append(taken, dl)
		} else {
			kept = append(kept, dl)
		}
	}
	clear(q.entries[len(kept):])
	q.entries = kept
	return taken
}

// putBack returns dead letters that take removed, oldest first, to their
// places among the entries, which are oldest first too, by the order they
// were added in (seq): entries that stayed, not matching the filter, may be
// older. It copies them, so that the caller's slice is not shared. Callers
// hold mu.
func (q *DeadLetterQueue) putBack(back []DeadLetter) {
	merged := make([]DeadLetter, 0, len(q.entries)+len(back))
	rest := q.entries
	for len(back) > 0 && len(rest) > 0 {
		if back[0].seq < rest[0].seq {
			merged, back = append(merged, back[0]), back[1:]
		} else {
			merged, rest = append(merged, rest[0]), rest[1:]
		}
	}
	q.entries = append(append(merged, back...), rest...)
}

// Discard removes the dead letters that match f and returns how many; the
// zero filter removes them all. A dead letter of a [Durable] subscription
// that the [DeadLetterSink] failed to keep holds the subscription's
// checkpoint back until a redrive of it is handled, or fails again and the
// sink keeps it, or until Discard removes it: the checkpoint may then pass
// its event, given up for good. One evicted instead holds the checkpoint
// back for the rest of the run, and the next run delivers its event again,
// with the events after it. A dead letter of a run that has stopped since
// holds nothing back: the next run delivers its event again in any case.
func (q *DeadLetterQueue) Discard(f DeadLetterFilter) int {
	taken := q.take(f)
	for _, dl := range taken {
		if dl.release != nil {
			dl.release()
		}
	}
	return len(taken)
}

// Redrive sends the dead letters that match f back to their subscriptions,
// oldest first, to go through the whole chain again with fresh attempts; each
// one queues behind events already waiting with its key. A dead letter of a
// subscription that was unsubscribed goes to the one that has taken its
// name on its topic since, if any: for a [Durable] subscription, its next
// run on the bus. That run delivers again, from its checkpoint, the events
// whose dead letters the checkpoint never passed (those the sink failed to
// keep, those of a stop without grace, and those failed with ErrClosed by a
// stop; see [DeadLetterSink]): redriven as well, each of them is handled
// twice. They all leave the queue as Redrive
// begins, so that a concurrent Redrive sends none of them again: while it
// sends them, waiting for room say, Len, All, Get and Discard do not see
// those not sent yet. In Sync mode they are handled before Redrive returns,
// and one that fails again is a new dead letter, as in Async mode. A dead
// letter that cannot be sent (ErrClosed when its subscription is gone and
// none has its name, or the bus has stopped) stays, with every later one of
// its subscription, which would overtake it, and the others go on; the
// context's end stops Redrive, and its error then matches the context's
// (errors.Is) whatever the dead letter in hand failed with. Those not
// sent go back to their places, oldest first among the others, where the
// oldest go first when dead letters that came meanwhile leave no room, as
// in a full queue. It
// returns the number sent, and the errors, each naming its dead letter,
// joined.
//
// In Async mode it waits for room in a full queue, as Publish does; with a
// handler's context (a [DeadLetterSink] gets one), which might be waiting
// for its own worker, it never waits and queues past the bound.
//
// A Sync-mode handler that calls runtime.Goexit (see [Handler]) ends the
// goroutine that called Redrive, as it ends a publisher: Redrive does not
// return, and the dead letter it was redriving stays in the queue as it
// was, with those not sent yet, in their places.
func (q *DeadLetterQueue) Redrive(ctx context.Context, f DeadLetterFilter) (int, error) {
	if q == nil {
		return 0, fmt.Errorf("%w: Redrive on a nil DeadLetterQueue", ErrInvalid)
	}
	if err := checkContext(ctx, "Redrive"); err != nil {
		return 0, err
	}
	taken := q.take(f)
	var (
		kept     []DeadLetter // not sent, older than taken[i:]
		failed   map[redriveTarget]bool
		errs     []error
		i, sent  int
		returned bool
	)
	defer func() {
		if !returned {
			// A Sync-mode handler called runtime.Goexit, which ends this
			// goroutine as it ends a publisher's: the dead letter it ran
			// for and those not sent yet are not lost with it.
			q.restore(append(kept, taken[i:]...))
		}
	}()
	for ; i < len(taken); i++ {
		dl := &taken[i]
		to := redriveTarget{dl.Topic, dl.Subscription}
		if failed[to] {
			kept = append(kept, *dl) // behind one of its subscription that failed
			continue
		}
		err := dl.redrive(ctx, &dl.Envelope)
		if err == nil {
			sent++
			continue
		}
		errs = append(errs, fmt.Errorf("eventbus: redrive of %s in %s: %w", dl.ID, dl.Subscription, err))
		if ctx.Err() != nil {
			if !errors.Is(err, ctx.Err()) {
				// A gone subscription's, say: the caller must still learn
				// that the context stopped Redrive, before the rest.
				errs = append(errs, fmt.Errorf("eventbus: redrive stopped: %w", ctx.Err()))
			}
			break
		}
		if failed == nil {
			failed = make(map[redriveTarget]bool)
		}
		failed[to] = true
		kept = append(kept, *dl)
	}
	returned = true
	if len(errs) > 0 {
		q.restore(append(kept, taken[i:]...))
	}
	return sent, errors.Join(errs...)
}

// redriveTarget is a dead letter's subscription, by its topic and name.
type redriveTarget struct{ topic, subscription string }

// restore puts back dead letters that Redrive took and did not send.
func (q *DeadLetterQueue) restore(unsent []DeadLetter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.putBack(unsent)
	// Dead letters that came meanwhile may leave no room for them all: the
	// oldest go, as when the queue is full.
	q.evict(0)
}
