package eventbus

import (
	"context"
	"fmt"
	"math/bits"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// subscription is the typed side of a Subscription: its handler and its
// workers.
type subscription[T any] struct {
	*Subscription
	topic   *Topic[T]
	handler Handler[T]
	batch   batching[T] // handler is nil when batch.handler is set
	// chain is the Async mode's middleware chain, which the workers run:
	// nil without middleware, and once they have exited. A Sync
	// subscription's is its topic's (see member).
	chain   EnvelopeHandler
	retry   RetryPolicy
	workers []*worker[T]
	// idle has bit i set while worker i, of the first 64, has nothing to
	// do (see queue.free). Workers set their bits when they run dry, and
	// publishers, which read it, clear them as they queue events: it has
	// cache lines of its own.
	_       [cacheLine]byte
	idle    atomic.Uint64
	_       [cacheLine]byte
	running atomic.Int32 // workers not yet exited
	sync    syncCounters // Sync mode's counters
	envs    sync.Pool    // of *envelope[T], for Sync mode's middleware
	finish  func(position uint64, held bool)
	release func(position uint64) // SubscriptionOptions.released
	// plain is set when an attempt that succeeds needs only counting: no
	// middleware (which may mark a duplicate), no timing, no finish.
	plain bool
}

// newSubscription returns the subscription name of t as t is to list it,
// not started. It builds the middleware chain, running the middleware's
// constructors, which are user code: callers hold no lock. It returns an
// error wrapping ErrInvalid if a middleware returns a nil handler.
func newSubscription[T any](t *Topic[T], name string, h Handler[T], batch BatchHandler[T], o SubscriptionOptions, retry RetryPolicy) (member[T], error) {
	b := t.bus
	s := &subscription[T]{
		Subscription: &Subscription{bus: b, topic: t.name, name: name, exited: make(chan struct{})},
		topic:        t,
		handler:      h,
		retry:        retry,
		finish:       o.finished,
		release:      o.released,
	}
	s.impl = s
	var chain EnvelopeHandler
	if len(b.opts.Middleware)+len(o.Middleware) > 0 && batch == nil {
		var err error
		chain, err = wrap(s.inner, o.Middleware, "SubscriptionOptions")
		if err == nil {
			chain, err = wrap(chain, b.opts.Middleware, "Options")
		}
		if err != nil {
			return member[T]{}, fmt.Errorf("topic %q: subscription %q: %w", t.name, name, err)
		}
	}
	// Made once the constructors have run, so that one that fails or
	// panics leaves no context linked to the bus's.
	s.ctx, s.kill = context.WithCancelCause(b.ctx)
	if batch != nil {
		s.batch = newBatching(s, batch, o)
		s.handler = s.batch.single
	}
	s.plain = chain == nil && !b.opts.Metrics && s.finish == nil
	if t.mode == Sync {
		close(s.exited)
		return member[T]{subscription: s, chain: chain}, nil
	}
	s.chain = chain
	s.workers = make([]*worker[T], o.Workers)
	for i := range s.workers {
		w := &worker[T]{sub: s, lanes: make(map[laneKey]*lane[T])}
		if b.opts.Metrics {
			// Only a durable subscription reports finished positions: its
			// events were stamped by the store.
			w.stats.times, w.stats.clock, w.stats.stored = new(timings), b.clock, s.finish != nil
		}
		var idle *atomic.Uint64
		if o.Workers > 1 && i < 64 {
			idle = &s.idle
		}
		w.q.init(o.QueueSize, b.ids.source(), idle, 1<<(i%64))
		s.workers[i] = w
	}
	return member[T]{subscription: s}, nil
}

// start launches the workers.
func (s *subscription[T]) start() {
	if len(s.workers) > 0 {
		s.base = handles.register(s.ctx)
	}
	s.running.Store(int32(len(s.workers)))
	for _, w := range s.workers {
		s.bus.goroutines.Go(w.run)
	}
}

// wake signals every worker, so that parked ones notice a kill.
func (s *subscription[T]) wake() {
	for _, w := range s.workers {
		w.q.signal()
	}
}

// queueFor maps a hash to a worker's queue: the high 32 bits scaled to the
// number of workers, which spares a division.
func (s *subscription[T]) queueFor(h uint64) *queue[T] {
	return &s.workers[(h>>32*uint64(len(s.workers)))>>32].q
}

// queueOf returns the queue of an event that hashed to h: a free worker's,
// if the event is keyless (it promises no order) and s has one, so that
// it does not wait behind another event while a worker idles; otherwise
// the worker's that h picks.
func (s *subscription[T]) queueOf(h uint64, keyless bool) *queue[T] {
	if keyless {
		if free := s.idle.Load(); free != 0 {
			return &s.workers[bits.TrailingZeros64(free)].q
		}
	}
	return s.queueFor(h)
}

// stopIntake closes the subscription to new events: the workers' queues,
// or in Sync mode its place in its topic's list, with which its chain
// goes once the publishes that loaded the list before have returned.
func (s *subscription[T]) stopIntake() {
	if s.topic.mode == Sync {
		s.detach()
		return
	}
	for _, w := range s.workers {
		w.q.stop()
	}
}

func (s *subscription[T]) mark() []uint64 {
	marks := make([]uint64, len(s.workers))
	for i, w := range s.workers {
		marks[i] = w.q.mark()
	}
	return marks
}

func (s *subscription[T]) settle(ctx context.Context, marks []uint64) error {
	for i, w := range s.workers {
		if err := w.q.settle(ctx, marks[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *subscription[T]) detach() { s.topic.remove(s) }

// collect adds the subscription's counters to c and returns the number of
// events queued and not yet finished.
func (s *subscription[T]) collect(c *counters) (depth, pending uint64) {
	s.sync.collect(c)
	for _, w := range s.workers {
		depth += w.q.collect(c)
	}
	return depth, c.queued - c.handled - c.deadLettered - c.duplicates
}

// uncounted reports whether the subscription keeps no counters: Sync mode
// without Options.Metrics (see SubscriptionMetrics.Uncounted).
func (s *subscription[T]) uncounted() bool { return s.topic.mode == Sync && !s.bus.opts.Metrics }

// inner is the innermost EnvelopeHandler of a chain: it calls the typed
// handler. An envelope the bus did not make for this subscription, or
// none, is a middleware's bug that no retry mends: a permanent error.
func (s *subscription[T]) inner(ctx context.Context, env *Envelope) error {
	if env == nil {
		return Permanent(fmt.Errorf("%w: middleware passed on a nil envelope (want %v)", ErrInvalid, reflect.TypeFor[T]()))
	}
	p, ok := env.event.(*boxed[T])
	if !ok {
		return Permanent(fmt.Errorf("%w: middleware passed on an envelope of event %s that the bus did not make for this subscription (payload %T, want %v)", ErrInvalid, env.ID, env.Payload(), reflect.TypeFor[T]()))
	}
	return s.handler(ctx, Event[T]{Header: env.Header, Payload: p.v})
}

// call makes one attempt at handling e through chain, the subscription's
// middleware chain or nil, turning a panic into a *PanicError, and counts
// it in c. env is scratch space for the chain. When start is not zero the
// attempt is timed from start, a reading of clock.elapsed, and call
// returns when it ended; otherwise it returns 0.
func (s *subscription[T]) call(ctx context.Context, chain EnvelopeHandler, e *Event[T], env *envelope[T], attempt int, c *counters, start time.Duration) (time.Duration, error) {
	err := s.attempt(ctx, chain, e, env, attempt)
	return s.account(e, env, attempt, c, start, err), err
}

// attempt runs chain, or the handler if chain is nil, once, turning a
// panic into a *PanicError.
func (s *subscription[T]) attempt(ctx context.Context, chain EnvelopeHandler, e *Event[T], env *envelope[T], attempt int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return s.invoke(ctx, chain, e, env, attempt)
}

// invoke runs chain, or the handler if chain is nil, once. Its caller
// recovers panics, which probe may raise too: a handler's error is walked
// where they are.
func (s *subscription[T]) invoke(ctx context.Context, chain EnvelopeHandler, e *Event[T], env *envelope[T], attempt int) (err error) {
	if chain == nil {
		err = s.handler(ctx, *e)
	} else {
		err = chain(ctx, env.fill(e, s.name, attempt))
	}
	if err != nil {
		probe(err)
	}
	return err
}

// account counts in c an attempt at e that began at start (see call) and
// ended with err, and returns when it ended.
func (s *subscription[T]) account(e *Event[T], env *envelope[T], attempt int, c *counters, start time.Duration, err error) (end time.Duration) {
	if start != 0 {
		end = s.bus.clock.elapsed()
	}
	c.attempt(attempt, env != nil && env.typed.duplicate, err, &e.Header, start, end)
	if err == nil && s.finish != nil {
		s.finish(e.Position, false)
	}
	return end
}

// clock returns the time to start timing an attempt from (see
// clock.elapsed), or 0 when the bus does not time attempts.
func (s *subscription[T]) clock() time.Duration {
	if !s.bus.opts.Metrics {
		return 0
	}
	return s.bus.clock.elapsed()
}

// runSync handles e through chain, the middleware chain that the topic
// lists s with, in the calling goroutine with the retry policy, waiting
// between attempts unless ctx ends.
func (s *subscription[T]) runSync(ctx context.Context, chain EnvelopeHandler, e *Event[T]) error {
	var env *envelope[T]
	if chain != nil {
		// Middleware must not keep env, so envelopes can be reused.
		env, _ = s.envs.Get().(*envelope[T])
		if env == nil {
			env = new(envelope[T])
		}
		defer func() {
			// Let go of the payload and metadata: the pool keeps env.
			*env = envelope[T]{}
			s.envs.Put(env)
		}()
	}
	// Publishers run concurrently, so counting costs a lock: Sync mode
	// counts only with Options.Metrics.
	if !s.bus.opts.Metrics && s.finish == nil {
		// Nothing to count or finish: a success is one attempt and nothing
		// more, which took a tenth off a Sync publish.
		err := s.attempt(ctx, chain, e, env, 1)
		if err == nil {
			return nil
		}
		c := s.sync.start(nil) // whose counts go nowhere
		return s.retrySync(ctx, chain, e, env, &c, err)
	}
	var timed *clock
	if s.bus.opts.Metrics {
		timed = s.bus.clock
	}
	c := s.sync.start(timed)
	if timed != nil {
		defer func() {
			if c.handled+c.deadLettered+c.duplicates == 0 {
				// A handler called runtime.Goexit, which ends this
				// goroutine: the event never finishes (see Handler), so
				// it is not counted as run either, which would leave it
				// pending for good.
				c.queued = 0
			}
			s.sync.add(&c)
		}()
	}
	_, err := s.call(ctx, chain, e, env, 1, &c, s.clock())
	if err == nil {
		return nil
	}
	return s.retrySync(ctx, chain, e, env, &c, err)
}

// retrySync goes on with e, counted in c, after its first attempt through
// chain failed with err: it retries as the policy says, and hands e to the
// dead-letter queue if it gives up, returning the last attempt's error.
func (s *subscription[T]) retrySync(ctx context.Context, chain EnvelopeHandler, e *Event[T], env *envelope[T], c *counters, err error) error {
	first := time.Now()
	firstAt := s.bus.clock.stamp(first) // first's stamp (clock.stamp)
	now, at := first, firstAt
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if _, err = s.call(ctx, chain, e, env, attempt, c, s.clock()); err == nil {
				return nil
			}
			now = time.Now()
			at = s.bus.clock.stamp(now)
		}
		delay, ok := s.next(attempt, err, first, now)
		if ok {
			if c.held.set {
				// Counted before the wait, not after the next attempt,
				// which may come MaxDelay later.
				c.shared.flush(c)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				err = fmt.Errorf("%w (retry abandoned: %w)", err, stopCause(ctx))
			}
		}
		s.deadLetter(ctx, e, attempt, err, firstAt, at, c)
		return err
	}
}

// next is the retry policy's next, except that an attempt failed with an
// error matching ErrClosed once the bus has begun to stop is not retried:
// the stopped bus refuses what the handler publishes at every later
// attempt too, and retries would only hold up the Shutdown.
func (s *subscription[T]) next(attempt int, err error, first, now time.Time) (time.Duration, bool) {
	if s.refused(err) {
		return 0, false
	}
	return s.retry.next(attempt, err, first, now)
}

// refused reports whether err, a failed attempt's, is the stop's: an error
// matching ErrClosed once the bus has begun to stop, which refuses what
// the handler publishes to it.
func (s *subscription[T]) refused(err error) bool {
	return s.bus.closed.Load() && isClosed(err)
}

// deadLetter hands e to the bus's dead-letter queue after attempts attempts,
// and counts it in c. first and last are the failure times to show, from
// clock.stamp.
func (s *subscription[T]) deadLetter(ctx context.Context, e *Event[T], attempts int, err error, first, last time.Time, c *counters) {
	s.deadLetterCut(ctx, e, attempts, err, first, last, c, len(s.workers) > 0 && s.ctx.Err() != nil)
}

// deadLetterCut is deadLetter for an event whose attempts a stop without
// grace cut (abandoned, or cut short), if cut. An event that failed for
// good while it waited behind an earlier event of its key, and is
// dead-lettered at that stop only to keep their order, is not.
func (s *subscription[T]) deadLetterCut(ctx context.Context, e *Event[T], attempts int, err error, first, last time.Time, c *counters, cut bool) {
	c.deadLetter(&e.Header)
	// A graceful stop refuses what the handler publishes to the bus
	// (ErrClosed): the stop failed the event, not the event itself.
	// Asked here, not in hold, which runs under the queue's lock.
	lost := s.refused(err) || cut
	if lost {
		// Lost to a stop: refused, or abandoned or cut short by a stop
		// without grace. Counted before the worker finishes e, for Flush.
		s.lostToStop.Add(1)
	}
	var hold func(kept bool) func()
	if s.finish != nil {
		pos := e.Position
		hold = func(kept bool) func() {
			// Decided before the sink ran: a stop that came while it ran
			// makes no event lost that failed before it.
			if lost {
				return nil // abandoned or failed by a stop: not finished
			}
			// Kept only in memory, the dead letter holds the checkpoint
			// back, until it is discarded.
			s.finish(pos, !kept)
			if kept || s.release == nil {
				return nil
			}
			return func() {
				if s.ctx.Err() == nil { // not a run that has stopped
					s.release(pos)
				}
			}
		}
	}
	s.bus.dlq.add(ctx, DeadLetter{
		Envelope:     Envelope{Header: e.Header, Subscription: s.name, Attempt: attempts, event: &boxed[T]{v: e.Payload}},
		Err:          err,
		FirstFailure: first,
		LastFailure:  last,
		redrive:      s.redrive,
	}, hold)
}

// redrive sends a dead letter's event back through this subscription alone,
// or, once it has been unsubscribed, through the one that took its name on
// its topic since, if any: its dead letters are that name's now.
func (s *subscription[T]) redrive(ctx context.Context, env *Envelope) error {
	if s.stopped.Load() {
		if next := s.topic.named(s.name); next != nil && next != s {
			return next.redrive(ctx, env)
		}
		return ErrClosed
	}
	p, ok := env.event.(*boxed[T])
	if !ok {
		return fmt.Errorf("%w: dead letter %s has no %v payload", ErrInvalid, env.ID, reflect.TypeFor[T]())
	}
	e := &Event[T]{Header: env.Header, Payload: p.v}
	if s.topic.mode == Sync {
		// Looked up before the checks, as Publish loads the list: s leaves
		// it, and its chain with it, only once stopped or closed is set.
		m, listed := s.topic.listed(s)
		if !listed || s.stopped.Load() || s.bus.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err // not sent: its attempts would be spent on a done context
		}
		// Sent and handled: an event that fails again is a dead letter
		// again, as in Async mode, not one left in the queue.
		_ = s.runSync(s.topic.syncContext(ctx, ctx == context.Background(), e), m.chain, e)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err // not sent, as in Sync mode: Redrive stops at its context's end
	}
	q := s.queueOf(s.topic.hash(e.Key), e.Key == "")
	// A handler redriving (or a dead-letter sink, which its worker waits
	// for) never waits for room, as Publish does not: it might wait for itself.
	lin, _ := parent(ctx)
	for {
		ok, stopped := q.offer(e, lin.handler)
		switch {
		case ok:
			return nil
		case stopped:
			return ErrClosed
		}
		q.mu.Lock()
		var room <-chan struct{}
		if q.full() && !q.stopped {
			room = q.room.wait()
		}
		q.mu.Unlock()
		if room == nil {
			continue // room, or a stop, came meanwhile
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// worker handles the events of one queue. Events whose key waits for a retry
// are parked in that key's lane, so other keys keep flowing.
type worker[T any] struct {
	// The queue is shared with publishers, which run on other cores: the
	// padding keeps other data (another worker's, this one's per-event
	// fields) off its cache lines. Measured keyed at GOMAXPROCS=1 and 2 on a
	// busy machine: 135 → 98 ns/event; unchanged when the machine is quiet.
	_     [cacheLine]byte
	q     queue[T]
	_     [cacheLine]byte
	sub   *subscription[T]
	ctxs  contextSlab
	env   envelope[T] // scratch for the middleware chain
	stats counters    // copied to the queue at each take
	spare []Event[T]  // the slice the next batch will come in
	chunk []Event[T]  // a batch handler's events, with their sequence numbers
	seqs  []uint64
	taken uint64 // sequence number after the last event taken
	lanes map[laneKey]*lane[T]
	timer *time.Timer // due time of the earliest lane; nil until needed
	armed bool

	// What the handler holds, for salvage: the batch being handled from
	// sequence number base, of which batch[next:] is not handed out yet,
	// or the lane whose first event is being retried.
	batch  []Event[T]
	base   uint64
	next   int
	lane   laneKey
	inLane bool
	// yielded is set when the worker, finding its queue empty, has let
	// other goroutines run once before it parks (see loop).
	yielded bool
	// began is when the attempt being made began (clock.elapsed), or 0
	// when attempts are not timed: salvage times one that ends in
	// runtime.Goexit.
	began time.Duration
}

// cacheLine is at least the size of a cache line: 64 bytes on amd64, 128 on
// some arm64 chips (Go's runtime pads 128 there).
const cacheLine = 128

// laneKey names a lane: a key, or for a keyless event its sequence number,
// since keyless events promise no order and so never wait for each other.
type laneKey struct {
	key string
	seq uint64
}

// lane holds a key's events while its first one waits for a retry.
type lane[T any] struct {
	due   time.Time
	items []pending[T]
}

// pending is an event in a lane. ctx is nil until its first attempt.
type pending[T any] struct {
	e        Event[T]
	ctx      context.Context
	seq      uint64
	attempts int
	first    time.Time // of the first failure, for RetryPolicy.MaxElapsed
	// firstAt and lastAt stamp the first and last failures (clock.stamp)
	// for the dead letter.
	firstAt, lastAt time.Time
	err             error
	// final is set for an event not to be retried, which waits behind an
	// earlier one of its key only to be dead-lettered after it.
	final bool
}

// run is the worker's goroutine. It exits when intake has stopped and every
// event is finished, or when the subscription is killed.
func (w *worker[T]) run() {
	returned := false
	defer func() {
		if !returned { // a handler called runtime.Goexit
			w.salvage()
			w.sub.bus.goroutines.Go(w.run)
			return
		}
		w.free()
		if w.sub.running.Add(-1) == 0 {
			// No event runs the chain any more: its middleware's state,
			// such as an Idempotency record, goes with the queues.
			w.sub.chain = nil
			close(w.sub.exited)
		}
	}()
	w.loop()
	returned = true
}

// free lets go of what the worker kept for the events to come, once it has
// exited for good: the Subscription, which its owner may keep after
// Unsubscribe (and a stopped Bus and its dead letters too), holds on to no
// queue, context or envelope of its events.
func (w *worker[T]) free() {
	w.q.mu.Lock()
	w.q.items = nil // empty: intake has stopped, and the worker took or drained every event
	w.q.mu.Unlock()
	w.spare, w.chunk, w.seqs, w.lanes = nil, nil, nil, nil
	w.ctxs = contextSlab{}
	w.env = envelope[T]{}
}

func (w *worker[T]) loop() {
	done := w.sub.ctx.Done()
	for {
		if w.sub.ctx.Err() != nil { // killed: an atomic load, cheaper than a receive from done
			w.abandon(nil)
			return
		}
		if w.armed {
			// Retries come due under load too, not only when the queue
			// runs dry.
			select {
			case <-w.timer.C:
				w.armed = false
				w.retryDue(done)
				continue // a kill meanwhile is seen at the top
			default:
			}
		}
		low, laned := w.held()
		batch, base, stopped := w.q.take(low, laned, w.spare, &w.stats, w.yielded)
		if batch != nil && w.sub.batch.wait > 0 && !stopped {
			batch = w.gather(batch, done)
		}
		w.number(batch, base)
		if batch != nil {
			w.yielded = false
			w.spare = nil
			w.batch, w.base, w.next = batch, base, 0
			w.handle(batch, base, done)
			w.batch = nil
			// A bounded queue never hands over more events than this: a
			// larger batch holds events that handlers queued past the
			// bound, and its slice, sized for that burst, is let go
			// rather than kept for good.
			if len(batch) <= w.q.limit+w.sub.batch.size {
				clear(batch) // drop references to payloads
				w.spare = batch[:0]
			}
			continue
		}
		if w.sub.chain != nil {
			// Idle: let go of the last event the middleware saw, which the
			// scratch envelope holds, as the batch's slice lets go of its
			// events, so that it is not kept alive until the next one, or
			// for good once the worker exits.
			w.env = envelope[T]{}
		}
		if stopped && len(w.lanes) == 0 {
			return
		}
		if !w.yielded {
			// Before parking, let the goroutines waiting to run go first,
			// once: a publisher waiting for this event's outcome (the
			// handler just woke it) publishes its next event meanwhile,
			// and the worker takes it without a wake-up. Cheaper than
			// parking, being woken and running again; an idle worker
			// then parks, and costs nothing more.
			w.yielded = true
			runtime.Gosched()
			continue
		}
		w.yielded = false
		if !w.armed {
			<-w.q.wake // a plain receive wakes fastest; a kill signals it too
			continue
		}
		select {
		case <-w.q.wake:
		case <-w.timer.C:
			w.armed = false
			w.retryDue(done)
		}
	}
}

// number gives the events of the queue from sequence number base their IDs,
// for events the publisher left unnumbered (see Topic.enqueue). Events
// published within one reading of the bus's clock share a time, and the
// first half of their IDs, stamped once for them.
func (w *worker[T]) number(events []Event[T], base uint64) {
	var at time.Time
	var hi uint64
	for i := range events {
		e := &events[i]
		if i == 0 || e.Time != at { // the same reading, not only the same instant
			at, hi = e.Time, w.sub.bus.ids.stamp(e.Time)
		}
		w.sub.topic.number(e, hi, w.q.source, base+uint64(i))
	}
}

// held returns the lowest sequence number not yet finished, and the number
// of events waiting in lanes, which count toward the queue's bound.
func (w *worker[T]) held() (low uint64, laned int) {
	low = w.taken
	if len(w.lanes) == 0 { // the common case: no map iteration
		return low, 0
	}
	for _, l := range w.lanes {
		low = min(low, l.items[0].seq)
		laned += len(l.items)
	}
	return low, laned
}

func (w *worker[T]) handle(batch []Event[T], base uint64, done <-chan struct{}) {
	w.taken = base + uint64(len(batch))
	if w.sub.batch.handler != nil {
		w.handleBatches(batch, base, done)
		return
	}
	for i := 0; i < len(batch); i++ {
		var ctx context.Context
		var err error
		if i, ctx, err = w.handleFrom(batch, base, i); err == nil {
			return
		}
		w.failed(ctx, &batch[i], base+uint64(i), err)
	}
}

// handleFrom handles batch[from:], the events of the queue from sequence
// number base+from, until one fails: it returns that event's index, handler
// context and error, or a nil error once every event is handled, or
// abandoned after a kill. It counts every attempt, as call does. One
// deferred recover serves the whole run, which costs less than one per
// event.
func (w *worker[T]) handleFrom(batch []Event[T], base uint64, from int) (at int, ctx context.Context, err error) {
	start := w.sub.clock() // each attempt's end is the next one's start
	defer func() {
		// Deferred calls run on runtime.Goexit too, before salvage, which
		// times the attempt from here: one store per run, not per event.
		w.began = start
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
		if err != nil {
			w.sub.account(&batch[at], &w.env, 1, &w.stats, start, err)
		}
	}()
	for at = from; at < len(batch); at++ {
		if w.sub.ctx.Err() != nil { // killed: an atomic load, where a receive from done costs a call
			w.abandon(batch[at:])
			return at, nil, nil
		}
		e := &batch[at]
		if len(w.lanes) != 0 && e.Key != "" {
			if l := w.lanes[laneKey{key: e.Key}]; l != nil {
				l.items = append(l.items, pending[T]{e: *e, seq: base + uint64(at)})
				continue
			}
		}
		ctx = w.ctxs.get(w.sub.ctx, w.sub.base, &e.Header)
		w.next = at + 1
		if err = w.sub.invoke(ctx, w.sub.chain, e, &w.env, 1); err != nil {
			return at, ctx, err
		}
		if w.sub.plain {
			w.stats.handled++ // all that account would do
		} else {
			start = w.sub.account(e, &w.env, 1, &w.stats, start, nil)
		}
	}
	return at, nil, nil
}

// failed deals with the first failed attempt at e: a new lane waiting for
// the retry, or a dead letter. ctx is e's handler context.
func (w *worker[T]) failed(ctx context.Context, e *Event[T], seq uint64, err error) {
	now := time.Now()
	at := w.sub.bus.clock.stamp(now)
	delay, ok := w.sub.next(1, err, now, now)
	k := laneKey{key: e.Key}
	if e.Key == "" {
		k.seq = seq + 1
	}
	p := pending[T]{e: *e, ctx: ctx, seq: seq, attempts: 1, first: now, firstAt: at, lastAt: at, err: err, final: !ok}
	if l := w.lanes[k]; l != nil {
		// An earlier event of its key failed in the same batch: this one
		// waits behind it, also when it is not to be retried, so that its
		// dead letter comes after that event's, and a Redrive, oldest
		// first, keeps their order.
		l.items = append(l.items, p)
		return
	}
	if !ok {
		w.sub.deadLetter(ctx, e, 1, err, at, at, &w.stats)
		return
	}
	w.lanes[k] = &lane[T]{due: now.Add(delay), items: []pending[T]{p}}
	w.arm()
}

// retryDue runs every lane whose retry is due. The worker is not free
// meanwhile (see queue.free): a keyless event would wait for the retries.
func (w *worker[T]) retryDue(done <-chan struct{}) {
	w.q.busy()
	now := time.Now()
	for k, l := range w.lanes {
		if l.due.After(now) {
			continue
		}
		w.lane, w.inLane = k, true
		ok := w.runLane(l, done)
		w.inLane = false
		if !ok {
			return // killed: abandon takes over
		}
		if len(l.items) == 0 {
			delete(w.lanes, k)
		}
	}
	w.arm()
}

// runLane handles l's events in order until one has to wait for a retry or
// none is left. It returns false if the subscription was killed meanwhile.
func (w *worker[T]) runLane(l *lane[T], done <-chan struct{}) bool {
	for len(l.items) > 0 {
		select {
		case <-done:
			return false
		default:
		}
		p := &l.items[0]
		if p.final {
			w.sub.deadLetter(p.ctx, &p.e, p.attempts, p.err, p.firstAt, p.lastAt, &w.stats)
		} else if !w.retry(l, p) {
			return true // p waits for its next attempt
		}
		l.items[0] = pending[T]{}
		l.items = l.items[1:]
	}
	return true
}

// retry makes another attempt at p, the first event of lane l, and
// reports whether it is done with: handled, or dead-lettered once its
// attempts are spent. Else l is due at its next attempt.
func (w *worker[T]) retry(l *lane[T], p *pending[T]) bool {
	if p.ctx == nil {
		p.ctx = w.ctxs.get(w.sub.ctx, w.sub.base, &p.e.Header)
	}
	p.attempts++
	w.began = w.sub.clock()
	_, err := w.sub.call(p.ctx, w.sub.chain, &p.e, &w.env, p.attempts, &w.stats, w.began)
	if err == nil {
		return true
	}
	now := time.Now()
	at := w.sub.bus.clock.stamp(now)
	if p.attempts == 1 {
		p.first, p.firstAt = now, at
	}
	p.lastAt, p.err = at, err
	if delay, ok := w.sub.next(p.attempts, err, p.first, now); ok {
		l.due = now.Add(delay)
		return false
	}
	w.sub.deadLetter(p.ctx, &p.e, p.attempts, err, p.firstAt, at, &w.stats)
	return true
}

// nextDue returns when the earliest lane is due, or the zero time without
// lanes.
func (w *worker[T]) nextDue() time.Time {
	var next time.Time
	for _, l := range w.lanes {
		if next.IsZero() || l.due.Before(next) {
			next = l.due
		}
	}
	return next
}

// arm sets the timer to the earliest due lane, if any is left. With none,
// the timer is not armed: arm runs then only after the timer fired (in
// retryDue, or salvaging a lane's retry there), which disarmed it.
func (w *worker[T]) arm() {
	next := w.nextDue()
	if next.IsZero() {
		return
	}
	d := time.Until(next)
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	w.armed = true
}

// errGoexit is the panic value recorded for a handler that called
// runtime.Goexit.
var errGoexit error = goexitError("eventbus: handler called runtime.Goexit (t.FailNow or testify's require in a handler?)")

// salvage runs when a handler called runtime.Goexit, which ends the
// worker's goroutine and cannot be stopped: it dead-letters what the handler
// held and puts the rest of the batch back at the front of the queue, so
// that a new goroutine carries on in order.
func (w *worker[T]) salvage() {
	now := time.Now()
	at := w.sub.bus.clock.stamp(now)
	err := &PanicError{Value: errGoexit, Stack: debug.Stack()}
	var end time.Duration // timed as call would have
	if w.began != 0 {
		end = w.sub.bus.clock.elapsed()
	}
	switch {
	case w.inLane:
		l := w.lanes[w.lane]
		p := &l.items[0]
		first := at
		if p.err != nil { // an earlier attempt failed
			first = p.firstAt
		}
		w.stats.attempt(p.attempts, false, err, &p.e.Header, w.began, end)
		w.deadLetter(&p.e, p.attempts, err, first, at)
		l.items = l.items[1:]
		if len(l.items) == 0 {
			delete(w.lanes, w.lane)
		} else {
			l.due = now
		}
		w.inLane = false
		w.arm()
	case w.batch != nil:
		if w.sub.batch.handler != nil {
			for i, seq := range w.seqs {
				e := w.published(seq)
				w.stats.attempt(1, false, err, &e.Header, shareStart(w.began, end, i, len(w.seqs)), end)
				w.deadLetter(e, 1, err, at, at)
			}
			clear(w.chunk) // drop references to payloads, as flush does
			w.chunk, w.seqs = w.chunk[:0], w.seqs[:0]
		} else {
			e := &w.batch[w.next-1]
			w.stats.attempt(1, false, err, &e.Header, w.began, end)
			w.deadLetter(e, 1, err, at, at)
		}
		w.q.unshift(w.batch[w.next:])
		w.taken = w.base + uint64(w.next)
		w.batch = nil
	}
}

// abandon dead-letters everything the worker still holds (its lanes, the
// rest of a batch, given in publish order, and its queue) after the
// subscription was killed, and counts it as undelivered, but for the
// events in lanes that failed for good already (see pending.final). The
// dead letters keep each key's order, which a Redrive, oldest first,
// follows.
func (w *worker[T]) abandon(rest ...[]Event[T]) {
	cause := context.Cause(w.sub.ctx)
	now := w.sub.bus.clock.stamp(time.Now())
	w.q.stop()
	queued, qbase := w.q.drain()
	w.number(queued, qbase)
	n := 0
	for _, l := range w.lanes {
		for _, p := range l.items {
			if p.final {
				// It failed for good before the stop, and waited behind an
				// earlier event of its key only to be dead-lettered after
				// it: as it failed, not abandoned.
				w.sub.deadLetterCut(p.ctx, &p.e, p.attempts, p.err, p.firstAt, p.lastAt, &w.stats, false)
				continue
			}
			if p.err != nil {
				w.deadLetter(&p.e, p.attempts, fmt.Errorf("%w (retry abandoned: %w)", p.err, cause), p.firstAt, p.lastAt)
			} else {
				w.deadLetter(&p.e, 0, cause, now, now)
			}
			n++
		}
	}
	clear(w.lanes)
	for _, batch := range append(rest, queued) {
		for i := range batch {
			w.deadLetter(&batch[i], 0, cause, now, now)
			n++
		}
	}
	if w.armed {
		w.timer.Stop()
	}
	w.sub.undelivered.Add(int64(n))
	w.q.finishAll(&w.stats)
}

// deadLetter dead-letters e outside its handler (after a Goexit, or when
// the worker abandons it) with a fresh handler context for e, the context
// the sink gets for an event that failed: what the sink publishes is linked
// to e, and since the worker waits for the sink, its Publish must not wait
// for room, nor its Flush for the worker, which a handler's context sees to.
func (w *worker[T]) deadLetter(e *Event[T], attempts int, err error, first, last time.Time) {
	ctx := w.ctxs.get(w.sub.ctx, w.sub.base, &e.Header)
	w.sub.deadLetter(ctx, e, attempts, err, first, last, &w.stats)
}
