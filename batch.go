package eventbus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// BatchHandler handles several events of a topic at once, for bulk work
// such as one database write per batch. It receives them in queue order, so
// events with the same key come in publish order, within a batch and across
// batches. It must not keep events after it returns, since the slice is
// reused, nor reorder them (sort a copy): a *BatchError's indexes, and the
// retries and counts that follow, refer to the order it was given. It may
// change them in place, for its bulk write: a retry or a dead letter gets
// an event as published, as a [Handler]'s does, though not what its payload
// points to.
//
// A nil error means every event was handled. A *BatchError names the
// events that failed, and only those are retried or dead-lettered (wrapped
// with [Permanent], it makes their errors permanent); any other error (or a
// panic) fails them all, and so does one beside a *BatchError, as
// errors.Join or a second %w in fmt.Errorf puts it (joined to the errors
// of the events the *BatchError names). Retries go through the handler one
// event at a time. An event that fails is retried after the later events of
// its key in the same batch were handled; a handler that wants their order
// kept through retries fails them too. Those later failures wait behind it
// (one not to be retried too, so that its dead letter comes after the
// earlier event's, and a Redrive keeps their order). A handler that calls
// runtime.Goexit (as t.FailNow does) loses the events it was given, where a
// [Handler] loses its one: in Async mode they are dead-lettered with a
// *PanicError matching [ErrGoexit], without retries, and the worker carries
// on with the events after them; in Sync mode it ends the publisher, as a
// Handler's does.
//
// Its context belongs to no one event of the batch: events published with
// it are linked to none of them (no causation ID, a correlation ID of their
// own) and carry no trace context, unless given one, from an event's
// metadata, with [WithTraceparent] or [WithCorrelationID]. A retry, which
// handles one event, and Sync mode, where a batch holds one event, pass that
// event's handler context instead.
type BatchHandler[T any] func(ctx context.Context, events []Event[T]) error

// BatchError reports which events of a batch failed; one that names none
// fails none, and so does a nil *BatchError (a handler's typed nil). An
// event named with a nil error failed too, for no reason given: it is
// retried or dead-lettered with an error wrapping [ErrInvalid]. errors.Is
// and errors.As see the events' errors through it (see
// [BatchError.Unwrap]); a [Permanent] mark on one of them marks that event
// only, while one around the BatchError marks every event it names. One
// that names an index outside the batch is a handler's bug: it fails every
// event of the batch with an error wrapping [ErrInvalid] that quotes it,
// permanent if a Permanent mark is around it.
type BatchError struct {
	// Failed maps the index of each failed event in the batch to its error.
	Failed map[int]error
}

// Error lists the failed events by index.
func (e *BatchError) Error() string {
	idx := e.indexes()
	var b strings.Builder
	fmt.Fprintf(&b, "eventbus: %s of the batch failed", eventCount(len(idx)))
	for _, i := range idx {
		fmt.Fprintf(&b, "; [%d]: %v", i, e.Failed[i])
	}
	return b.String()
}

// Unwrap returns the errors of the failed events in the order of their
// indexes, leaving out nil ones, so that errors.Is(err, ErrX) holds when
// any event failed with ErrX.
func (e *BatchError) Unwrap() []error {
	if e == nil {
		return nil
	}
	errs := make([]error, 0, len(e.Failed))
	for _, i := range e.indexes() {
		if err := e.Failed[i]; err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// indexes returns the indexes of Failed in increasing order.
func (e *BatchError) indexes() []int {
	if e == nil {
		return nil
	}
	idx := make([]int, 0, len(e.Failed))
	for i := range e.Failed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

// SubscribeBatch is Subscribe with a handler that takes up to
// SubscriptionOptions.BatchSize events at once: whatever is queued for its
// worker, after waiting up to BatchWait for more. With a BatchWait, the
// events left over when more than BatchSize were queued wait for more too,
// so batches fill up while events keep coming. Middleware works on single
// events, so a batch subscription runs none: the bus's is skipped, and
// SubscriptionOptions.Middleware must be empty. Counters and latencies count
// events, not batches. In Sync mode each batch holds one event.
func (t *Topic[T]) SubscribeBatch(name string, h BatchHandler[T], opts *SubscriptionOptions) (*Subscription, error) {
	if err := t.check("SubscribeBatch"); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: topic %q: subscription %q has a nil handler", ErrInvalid, t.name, name)
	}
	if opts != nil && len(opts.Middleware) > 0 {
		return nil, fmt.Errorf("%w: topic %q: batch subscription %q cannot have middleware", ErrInvalid, t.name, name)
	}
	return t.subscribe(name, nil, h, opts)
}

// batching is a batch subscription's handler and limits.
type batching[T any] struct {
	handler BatchHandler[T]
	size    int
	wait    time.Duration
	ctx     *linkedContext // a handler's context with no event to inherit from
}

func newBatching[T any](s *subscription[T], h BatchHandler[T], o SubscriptionOptions) batching[T] {
	ctx := &linkedContext{Context: s.ctx, parent: lineage{handler: true}}
	return batching[T]{handler: h, size: o.BatchSize, wait: o.BatchWait, ctx: ctx}
}

// single handles one event as a batch of one: retries and Sync mode.
func (b *batching[T]) single(ctx context.Context, e Event[T]) error {
	failed, err := failures(b.handler(ctx, []Event[T]{e}), 1)
	if err != nil {
		return err
	}
	return failed[0]
}

// outside is the error of every event of a batch of n whose handler
// returned err, with a *BatchError, be, that names an index outside it:
// it names one (the lowest if any is negative, else the highest), quotes
// err, and is as permanent as err says. err is quoted, not wrapped, so
// that the Permanent marks of the events be names do not make the whole
// batch's error permanent.
func outside(err error, be *BatchError, n int, permanent bool) error {
	idx := be.indexes()
	i := idx[0] // negative
	if i >= 0 {
		i = idx[len(idx)-1] // n or more
	}
	bad := fmt.Errorf("%w: batch handler reported index %d of %d events: %v", ErrInvalid, i, n, err)
	if permanent {
		return Permanent(bad)
	}
	return bad
}

// failures reads the error of a batch handler given n events: the errors
// of the events a *BatchError names, by index, or else one error for every
// event (nil when they were all handled). A *BatchError naming an index
// outside the batch fails every event (see outside); one naming an event
// with a nil error fails that event with [ErrInvalid]. One marked
// [Permanent] marks the error of every event it names. Errors beside it
// (see besides) fail every event, joined to a named event's own.
func failures(err error, n int) (map[int]error, error) {
	var be *BatchError
	if !errors.As(err, &be) {
		return nil, err
	}
	if be == nil {
		// A handler that makes its *BatchError on the first failure and
		// returns it whatever happened gives a typed nil when none did.
		return nil, besides(err, be)
	}
	permanent := permanentOutside(err)
	beside := besides(err, be)
	rewrite := permanent || beside != nil
	for i, e := range be.Failed {
		if i < 0 || i >= n {
			return nil, outside(err, be, n, permanent)
		}
		rewrite = rewrite || e == nil
	}
	if !rewrite {
		return be.Failed, nil
	}
	failed := make(map[int]error, len(be.Failed)) // the handler's map is its own
	if beside != nil {
		// An error beside the *BatchError, such as a failed commit, fails
		// the events it does not name too.
		for i := range n {
			failed[i] = beside
		}
	}
	for i, e := range be.Failed {
		if e == nil {
			e = fmt.Errorf("%w: batch handler reported index %d failed with a nil error", ErrInvalid, i)
		}
		if beside != nil {
			e = errors.Join(beside, e)
		}
		if permanent {
			e = Permanent(e)
		}
		failed[i] = e
	}
	return failed, nil
}

// besides returns the errors that err holds beside be, the *BatchError in
// it, such as the other errors of an errors.Join, or nil if it holds none:
// errors that wrap be alone (fmt.Errorf with one %w, [Permanent]) only add
// context to it.
func besides(err error, be *BatchError) error {
	if b, ok := err.(*BatchError); ok && b == be {
		return nil
	}
	var found *BatchError
	if !errors.As(err, &found) || found != be {
		return err // holds no be, so all of it is beside be
	}
	switch e := err.(type) {
	case interface{ Unwrap() error }:
		return besides(e.Unwrap(), be)
	case interface{ Unwrap() []error }:
		var errs []error
		for _, err := range e.Unwrap() {
			if err := besides(err, be); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	return nil // an As method gave be: nothing else to tell apart
}

// permanentOutside reports whether err carries a [Permanent] mark outside
// any *BatchError: marks inside one are its events' own, which errors.As,
// seeing through BatchError.Unwrap, would take for the whole batch's.
func permanentOutside(err error) bool {
	switch e := err.(type) {
	case *BatchError:
		return false
	case *permanentError:
		return true
	case interface{ Unwrap() error }:
		return permanentOutside(e.Unwrap())
	case interface{ Unwrap() []error }:
		for _, err := range e.Unwrap() {
			if permanentOutside(err) {
				return true
			}
		}
	}
	return false
}

// call runs the batch handler once, turning a panic into a *PanicError.
func (b *batching[T]) call(events []Event[T]) error { return callBatch(b.ctx, b.handler, events) }

// callBatch runs h once with events, turning a panic into a *PanicError,
// also one that reading h's error would raise.
func callBatch[T any](ctx context.Context, h BatchHandler[T], events []Event[T]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	err = h(ctx, events)
	if err != nil {
		// As the worker will, where a panic is recovered (see probe).
		failed, ferr := failures(err, len(events))
		probe(ferr)
		for _, e := range failed {
			probe(e)
		}
	}
	return err
}

// handleBatches hands a worker's events to the batch handler, BatchSize at
// a time. Events whose key waits for a retry join its lane instead.
func (w *worker[T]) handleBatches(batch []Event[T], base uint64, done <-chan struct{}) {
	chunk, seqs := w.chunk[:0], w.seqs[:0]
	// flush hands chunk to the handler, or abandons it and rest, the
	// events of batch after it, once the subscription is killed.
	flush := func(rest []Event[T]) bool {
		select {
		case <-done:
			w.abandon(chunk, rest)
			clear(chunk) // as below: the dead letters have their own copies
			return false
		default:
		}
		w.chunk, w.seqs = chunk, seqs // for salvage
		w.runChunk(chunk, seqs)
		clear(chunk)
		chunk, seqs = chunk[:0], seqs[:0]
		return true
	}
	for i := range batch {
		e := &batch[i]
		seq := base + uint64(i)
		w.next = i + 1 // batch[:i+1] is in a lane or the chunk
		if len(w.lanes) != 0 && e.Key != "" {
			if l := w.lanes[laneKey{key: e.Key}]; l != nil {
				l.items = append(l.items, pending[T]{e: *e, seq: seq})
				continue
			}
		}
		chunk, seqs = appendEvent(chunk, e), append(seqs, seq)
		if len(chunk) < w.sub.batch.size {
			continue
		}
		if !flush(batch[i+1:]) {
			return
		}
		if rest := batch[i+1:]; len(rest) < w.sub.batch.size && len(rest) > 0 && w.sub.batch.wait > 0 {
			// Too few left for a full batch: like a smaller batch, they
			// wait up to BatchWait for more, at the front of the queue.
			w.q.unshift(rest)
			w.taken = seq + 1
			break
		}
	}
	if len(chunk) > 0 {
		flush(nil)
	}
	w.chunk, w.seqs = chunk, seqs
}

// shareStart returns when the attempt at event i of a batch of n events,
// from start to end (readings of clock.elapsed), began for the histograms:
// each event takes an equal share of the batch's time, so that
// HandleTime.Sum is the time the handler ran, not n times that.
func shareStart(start, end time.Duration, i, n int) time.Duration {
	d := end - start
	took := d / time.Duration(n)
	if time.Duration(i) < d%time.Duration(n) {
		took++
	}
	return end - took
}

// runChunk makes one attempt at a batch and sorts out what failed.
func (w *worker[T]) runChunk(chunk []Event[T], seqs []uint64) {
	start := w.sub.clock()
	w.began = start
	err := w.sub.batch.call(chunk)
	var end time.Duration
	if start != 0 {
		end = w.sub.bus.clock.elapsed()
	}
	var failed map[int]error
	if _, panicked := err.(*PanicError); !panicked { // a panic fails them all, whatever its value
		failed, err = failures(err, len(chunk))
	}
	for i := range chunk {
		e := w.published(seqs[i])
		eerr := err
		if eerr == nil {
			eerr = failed[i]
		}
		w.stats.attempt(1, false, eerr, &e.Header, shareStart(start, end, i, len(chunk)), end)
		switch {
		case eerr != nil:
			w.failed(w.ctxs.get(w.sub.ctx, w.sub.base, &e.Header), e, seqs[i], eerr)
		case w.sub.finish != nil: // a durable subscription's
			w.sub.finish(e.Position, false)
		}
	}
}

// published returns the event of sequence number seq of the batch being
// handled as it was taken from the queue: the batch handler got a copy in
// the chunk, which it may have changed.
func (w *worker[T]) published(seq uint64) *Event[T] { return &w.batch[seq-w.base] }

// gather waits up to the subscription's BatchWait for more events to join a
// batch smaller than BatchSize, and no longer than until a retry is due:
// the worker, back in its loop, runs it once the batch is handled. While
// it waits the worker counts as free (see queue.free), so that keyless
// events join its batch; once the batch is to be handled, it is not.
func (w *worker[T]) gather(batch []Event[T], done <-chan struct{}) []Event[T] {
	if len(batch) >= w.sub.batch.size {
		return batch
	}
	wait := w.sub.batch.wait
	if due := w.nextDue(); !due.IsZero() {
		wait = min(wait, time.Until(due))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		// An empty take marks the worker parked, so publishers wake it.
		low, laned := w.held()
		more, _, stopped := w.q.take(low, laned, nil, &w.stats, true)
		batch = append(batch, more...)
		if stopped || len(batch) >= w.sub.batch.size {
			return batch
		}
		if len(more) > 0 {
			continue
		}
		select {
		case <-w.q.wake:
		case <-t.C:
			w.q.busy() // the last take found the queue empty: free no more
			return batch
		case <-done:
			return batch
		}
	}
}
