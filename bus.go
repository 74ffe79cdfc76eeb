package eventbus

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on sizes given in options.
const (
	maxWorkers   = 1 << 12
	maxQueueSize = 1 << 24
)

// Mode says when handlers run relative to Publish.
type Mode uint8

const (
	// Inherit, the zero Mode, takes the mode of the enclosing level: a topic
	// takes the bus's, and a bus defaults to Async.
	Inherit Mode = iota
	// Async queues events to each subscription's workers; Publish returns
	// once the event is queued.
	Async
	// Sync runs every subscription's handler in the publishing goroutine,
	// one subscription after another, before Publish returns; their errors
	// come back to the publisher, joined. Keys order nothing here: the
	// handlers of concurrent publishers run at once, whatever their keys,
	// and a retry's wait holds up only its own publisher.
	Sync
)

// Options configures a [Bus]. The zero value is a working asynchronous bus.
type Options struct {
	// Mode is the default delivery mode of the bus's topics: Async (the
	// default) or Sync.
	Mode Mode
	// Workers is the default number of workers per subscription, at most
	// 4096; zero means GOMAXPROCS, capped at 4096. Events with the same key
	// always go to the same worker.
	Workers int
	// QueueSize is the default capacity of each worker's queue, at most
	// 1<<24; zero means 1024. Publish waits while the queue for its event
	// is full. Events that wait behind a retry of their key count toward
	// it, so memory stays bounded while a key fails.
	QueueSize int
	// Middleware wraps the handler of every subscription, outside the
	// subscription's own middleware; the first given is the outermost.
	// Batch subscriptions run none (see [Topic.SubscribeBatch]): a
	// deduplication or a deadline given here does not cover them.
	Middleware []Middleware
	// Retry is the default retry policy of subscriptions. The zero value
	// makes one attempt: a failing event goes to the dead-letter queue.
	Retry RetryPolicy
	// DeadLetterCapacity bounds the in-memory dead-letter queue; zero means
	// 10,000. The oldest entry is evicted (and counted) when it is full.
	DeadLetterCapacity int
	// DeadLetterSink, if set, receives every dead letter as it is made.
	// A nil DeadLetterFunc is invalid.
	DeadLetterSink DeadLetterSink
	// Metrics times every attempt, filling the latency histograms of
	// [Bus.Metrics], and counts Published per topic. It costs a clock read
	// per attempt and an atomic add per publish. Async subscriptions keep
	// their counters of handled, failed and dead-lettered events either way;
	// Sync ones, whose handlers run in concurrent publishers, only with
	// Metrics, since there counting costs a lock per publish.
	Metrics bool
	// Logger receives the bus's own reports: each event dead-lettered
	// after its attempts failed, at Error (with its ID, type, topic,
	// subscription, key, attempts, correlation ID and error; the events
	// abandoned by a stop, which never ran, are counted in one report
	// instead); a failing sink and events
	// undelivered at shutdown, at Warn; and of a [Durable] subscription a
	// failed save of its checkpoint, at Warn (which Durable.Err does not
	// report), and a failed read of the store, which stops it, at Error.
	// Nil means silent; one without a Handler (a zero slog.Logger, which
	// slog.New never makes) is invalid. A failing sink is reported with
	// the context the sink was given (see DeadLetterSink), so a log
	// handler that publishes with it never waits for room either. The
	// Handler runs on a goroutine of its own, which the reporting one (a
	// worker, say) waits for: a panic in it, or a call of runtime.Goexit,
	// loses that report only, as it would a handler's event. (The
	// [Logging] middleware's logger runs in the handler's chain instead.)
	Logger *slog.Logger
	// Clock, if set, replaces the clock that stamps the events of the bus's
	// topics and the failure times of dead letters, for tests with stable
	// output; latency metrics (publish to handled) are measured with it
	// too. It does not stamp the events of a Store, those of a StoreTopic
	// and those that a Durable subscription hands out included: their
	// Time is the store's commit time, by the wall clock (see
	// [RecordedEvent].Time). Retry delays and
	// RetryPolicy.MaxElapsed keep to the real clock, which their timers
	// wait on. It must be safe for concurrent use, and must not panic:
	// besides the publishers, whose Publish would panic, it runs in the
	// workers (the failure times of dead letters, and with Metrics each
	// attempt's latency), where nothing recovers a panic, which ends the
	// process, as it would in any goroutine of the program's.
	Clock func() time.Time
	// NewID, if set, replaces the source of event IDs, for tests with stable
	// output: of the events that Topic.Publish and StoreTopic.Publish make.
	// It must be safe for concurrent use and return unique IDs.
	NewID func() ID
}

func (o *Options) resolve() error {
	if o.Mode == Inherit {
		o.Mode = Async
	}
	if o.Mode != Async && o.Mode != Sync {
		return fmt.Errorf("%w: Options.Mode %d is not Async or Sync", ErrInvalid, o.Mode)
	}
	if o.Workers == 0 {
		o.Workers = min(runtime.GOMAXPROCS(0), maxWorkers)
	}
	if o.QueueSize == 0 {
		o.QueueSize = 1024
	}
	if o.DeadLetterCapacity == 0 {
		o.DeadLetterCapacity = 10_000
	}
	if err := checkSizes("Options", o.Workers, o.QueueSize); err != nil {
		return err
	}
	if o.DeadLetterCapacity < 0 {
		return fmt.Errorf("%w: Options.DeadLetterCapacity %d is negative", ErrInvalid, o.DeadLetterCapacity)
	}
	if err := checkMiddleware("Options", o.Middleware); err != nil {
		return err
	}
	// Put on a nil DeadLetterFunc fails every dead letter, and each failure
	// holds back the checkpoint of a durable subscription for good.
	if f, ok := o.DeadLetterSink.(DeadLetterFunc); ok && f == nil {
		return fmt.Errorf("%w: Options.DeadLetterSink is a nil DeadLetterFunc", ErrInvalid)
	}
	// Its first report would panic, in a worker or a durable
	// subscription's goroutine, where nothing recovers it.
	if o.Logger != nil && o.Logger.Handler() == nil {
		return fmt.Errorf("%w: Options.Logger has no Handler; make it with slog.New", ErrInvalid)
	}
	return o.Retry.validate()
}

func checkSizes(where string, workers, queueSize int) error {
	if workers < 1 || workers > maxWorkers {
		return fmt.Errorf("%w: %s.Workers %d is outside [1, %d]", ErrInvalid, where, workers, maxWorkers)
	}
	if queueSize < 1 || queueSize > maxQueueSize {
		return fmt.Errorf("%w: %s.QueueSize %d is outside [1, %d]", ErrInvalid, where, queueSize, maxQueueSize)
	}
	return nil
}

func checkMiddleware(where string, mws []Middleware) error {
	for i, m := range mws {
		if m == nil {
			return fmt.Errorf("%w: %s.Middleware[%d] is nil", ErrInvalid, where, i)
		}
	}
	return nil
}

// Bus carries the events of many typed topics to their subscriptions. Create
// one with [New], add topics with [NewTopic], and stop it with
// [Bus.Shutdown] or [Bus.Close]. A Bus is safe for concurrent use.
//
// A nil or zero Bus, one not made by New, never runs: its methods that
// return an error return one wrapping [ErrInvalid], and the others return
// what a bus that has stopped with nothing in it would.
type Bus struct {
	opts  Options
	ids   *idSource
	clock *clock
	seed  maphash.Seed
	dlq   *DeadLetterQueue

	ctx  context.Context // parent of every subscription's context
	kill context.CancelCauseFunc
	// done is closed once the bus has stopped (see Done); the bus's own
	// goroutines, such as the clock's, exit after.
	done chan struct{}

	closed atomic.Bool

	mu     sync.Mutex
	topics map[string]any          // name -> *Topic[T]
	types  map[string]reflect.Type // event type name -> payload type
	subs   map[*Subscription]struct{}
	// atClose holds the subscriptions registered when the bus closed,
	// which the first Shutdown or Close stops and reports on, even those
	// whose Unsubscribe has removed them from subs since.
	atClose []*Subscription
	// stopRan is set by the call that runs the stop, the first to come to
	// it; stopped is closed once it has finished, and result is set.
	stopRan atomic.Bool
	stopped chan struct{}
	result  error // of the first Shutdown or Close, returned by every call
	// saveErrs holds, under mu, the errors of the final checkpoint saves
	// of the Durable runs that the stop ended, for its result.
	saveErrs []error
	// durables holds the internal topics of durable subscriptions, by
	// name, and whether one runs or stops on each (see durableTopic).
	durables map[string]*durableClaim

	goroutines sync.WaitGroup
}

// New returns a running bus configured by opts; nil means the defaults. It
// returns an error wrapping [ErrInvalid] for out-of-range options, a nil
// middleware or a nil [DeadLetterFunc] as the sink. The bus keeps a copy of
// opts, and of its Middleware slice, so the caller may change or reuse them
// afterwards.
func New(opts *Options) (*Bus, error) {
	var o Options
	if opts != nil {
		o = *opts
		// Read again at every Subscribe: the caller's array must not
		// change this bus's chain, nor put a nil in it after the check.
		o.Middleware = slices.Clone(o.Middleware)
	}
	if err := o.resolve(); err != nil {
		return nil, err
	}
	ctx, kill := context.WithCancelCause(context.Background())
	b := &Bus{
		opts:     o,
		ids:      newIDSource(),
		seed:     maphash.MakeSeed(),
		dlq:      newDeadLetterQueue(o.DeadLetterCapacity, o.DeadLetterSink, o.Logger),
		ctx:      ctx,
		kill:     kill,
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
		topics:   make(map[string]any),
		durables: make(map[string]*durableClaim),
		types:    make(map[string]reflect.Type),
		subs:     make(map[*Subscription]struct{}),
	}
	b.clock = newClock(o.Clock, b.done)
	if o.Clock == nil {
		b.goroutines.Go(b.clock.refresh)
	}
	return b, nil
}

// made reports whether New made b: a nil or zero Bus has no done channel.
func (b *Bus) made() bool { return b != nil && b.done != nil }

// check returns an error wrapping ErrInvalid for a nil Bus, or one that New
// did not make, given to call.
func (b *Bus) check(call string) error {
	if !b.made() {
		return fmt.Errorf("%w: %s on a Bus not made by New", ErrInvalid, call)
	}
	return nil
}

// Done returns a channel that is closed once the bus has stopped: Shutdown
// or Close has handled or abandoned every subscription's events, and every
// handler of an Async subscription has returned. Goroutines that publish on
// their own can select on it to stop with the bus. For a Bus not made by
// [New], which never runs, the channel is closed already.
func (b *Bus) Done() <-chan struct{} {
	if !b.made() {
		done := make(chan struct{})
		close(done)
		return done
	}
	return b.done
}

// DeadLetters returns the bus's dead-letter queue, or nil, which holds
// nothing, for a Bus not made by [New].
func (b *Bus) DeadLetters() *DeadLetterQueue {
	if !b.made() {
		return nil
	}
	return b.dlq
}

// Flush waits until every event published before the call has been handled
// or dead-lettered by every subscription, or until ctx is done (it then
// returns ctx's error). Events published meanwhile, by handlers too, are not
// waited for. A [Durable] subscription publishes each event as it reads it
// from the store: Flush does not wait for the events appended to the store
// that it has not read yet ([Durable.WaitFor] does). Called with a
// handler's context, which would make it wait for that handler, or on a Bus
// not made by [New], it returns an error wrapping [ErrInvalid]. An Async
// handler that calls it with another context waits until that context ends
// (for good with context.Background()): its own event is not handled
// before it returns.
//
// Events abandoned by a stop without grace ([Bus.Close], or a Shutdown or
// Unsubscribe whose context ended) go to the dead-letter queue without
// being handled, as [UndeliveredError] counts them; so does the event of
// a running handler that such a stop cancelled and that then failed,
// which UndeliveredError leaves out, and one whose handler failed with an
// error matching ErrClosed once the bus had begun to stop (see
// [Bus.Shutdown]). Once every subscription has settled, Flush then
// returns an error wrapping [ErrClosed] if one it waited for
// dead-lettered any such event, at any time before: nil means that none
// of the events it waited for was lost to a stop so, which is what a
// caller that acknowledges its input after Flush needs to know.
func (b *Bus) Flush(ctx context.Context) error {
	if err := b.check("Bus.Flush"); err != nil {
		return err
	}
	if err := checkWaitContext(ctx, "Flush"); err != nil {
		return err
	}
	// Every queue's place is read before waiting on any: read as each is
	// come to, it would take in the events published meanwhile, which
	// may wait for the caller's next step, after this Flush.
	subs := b.subscriptions()
	marks := make([][]uint64, len(subs))
	for i, s := range subs {
		marks[i] = s.impl.mark()
	}
	var abandoned error
	for i, s := range subs {
		if err := s.impl.settle(ctx, marks[i]); err != nil {
			return err
		}
		// Counted before the events are finished, so settle saw to it
		// that a count of the events waited for is in.
		if n := s.lostToStop.Load(); n > 0 && abandoned == nil {
			abandoned = fmt.Errorf("%w: Bus.Flush: subscription %q of topic %q dead-lettered %d events unhandled at a stop of the bus, or of an Unsubscribe whose context ended (abandoned, cut short, or failed with ErrClosed, a follow-up publish refused, say)", ErrClosed, s.name, s.topic, n)
		}
	}
	return abandoned
}

func (b *Bus) subscriptions() []*Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		out = append(out, s)
	}
	return out
}

// Shutdown stops the bus gracefully: Publish and Subscribe fail with
// [ErrClosed] from now on, every event already queued is handled (with its
// retries), and Shutdown returns once every handler has returned and every
// goroutine of the bus has exited.
//
// Handlers are refused too: a handler that publishes to a topic of the bus
// while the queues drain gets ErrClosed, so its follow-up events are
// neither queued nor handled; returning that error fails its own event,
// which is dead-lettered without retries (any error matching ErrClosed
// once the bus has begun to stop is: a retry would be refused again, and
// would only hold up the stop). A [Durable]
// subscription's next run handles such an event again, and [Bus.Flush]
// fails with ErrClosed, as after a stop without grace; a follow-up that
// must outlive the stop goes to a [StoreTopic], whose Publish appends to
// the store whether or not the bus runs.
//
// Sync-mode handlers run in their publishers' goroutines, which Shutdown does
// not wait for: a Publish already running completes.
//
// If ctx ends first, Shutdown proceeds as [Bus.Close]: handler contexts are
// cancelled, and events not yet handled go to the dead-letter queue. The
// error is then an *UndeliveredError with their count, wrapping ctx's error,
// or nil if there were none: so nil does not tell that no handler was cut
// short, since a running handler's event is counted only if its attempt
// fails with retries left (see [UndeliveredError]).
// The error also holds, joined, those of the final checkpoint saves of
// [Durable] subscriptions that failed (a store closed before the bus, say):
// their next runs start from an earlier checkpoint, and handle again the
// events after it.
// Later calls wait for the first one and return its result; if a later
// call's ctx ends first, it cuts the first one short in the same way.
// When two stops cut it short (its ctx, and a Close or a later call's
// ctx), the error counts the events of both and wraps the cause of the
// first of them to abandon events.
// Called with a handler's context (a [DeadLetterSink] gets one), which
// would make it wait for that handler, or on a Bus not made by [New], it
// returns an error wrapping [ErrInvalid] and stops nothing. An Async
// handler must not call it with another context either, such as
// context.Background() or one with a deadline: once ctx ends Shutdown
// still waits for the running handlers, the caller among them, so neither
// ever returns. A handler that decides to stop the bus calls Shutdown in a
// goroutine of its own.
func (b *Bus) Shutdown(ctx context.Context) error {
	if err := b.check("Bus.Shutdown"); err != nil {
		return err
	}
	if err := checkWaitContext(ctx, "Shutdown"); err != nil {
		return err
	}
	stopping := b.closeIntake()
	if stopping {
		// Another call stops the bus: wait for it, on ctx's terms.
		select {
		case <-b.done:
		case <-ctx.Done():
			for _, s := range b.subscriptions() {
				s.stopNow(stopCause(ctx), false)
			}
		}
	}
	if !b.stopRan.CompareAndSwap(false, true) {
		// Another call runs the stop: wait for it on a channel, which a
		// synctest bubble counts as blocked (a sync.Once's lock it does
		// not, and its fake time would stand still while a handler that
		// the stop waits for sleeps in it).
		<-b.stopped
		return b.result
	}
	// Closed however the stop ends, so that no other call waits for good.
	defer close(b.stopped)
	b.mu.Lock()
	subs := b.atClose
	b.atClose = nil // kept no longer than the stop
	b.mu.Unlock()

	var lost int64
	// The cause of the first stop without grace that lost events: this
	// loop cuts the subscriptions short in its order, and a stop from
	// elsewhere (Close, a later call) all those it has not come to, so
	// the first in its order that lost events was cut first.
	var cause error
	for _, s := range subs {
		s.impl.stopIntake()
	}
	for _, s := range subs {
		// Events that an Unsubscribe's own context abandoned are
		// that Unsubscribe's to report.
		if n := s.wait(ctx, false); n > 0 && !s.cutByOwn.Load() {
			lost += n
			if cause == nil {
				cause = context.Cause(s.ctx)
			}
		}
	}
	b.kill(ErrClosed)
	for _, s := range subs {
		handles.release(s.base)
	}
	close(b.done)
	b.goroutines.Wait()
	if lost > 0 {
		b.result = &UndeliveredError{Count: int(lost), Err: cause}
		report(context.Background(), b.opts.Logger, slog.LevelWarn, "eventbus: events undelivered at shutdown", "count", lost, "cause", cause)
	}
	b.mu.Lock()
	if len(b.saveErrs) > 0 {
		b.result = errors.Join(append([]error{b.result}, b.saveErrs...)...)
	}
	b.mu.Unlock()
	return b.result
}

// report logs a report of the bus's own, msg with args at level, to l
// unless it is nil. It calls l's Handler on a goroutine of its own, which
// it waits for: the Handler is user code, and a panic in it, or a call of
// runtime.Goexit, ends only that goroutine and loses only the report,
// which has nowhere else to go. The caller (a worker, which would lose
// its place among the events it holds, a durable subscription's goroutine
// or Shutdown's) goes on. The record's source is report's caller, as it
// would be had the caller logged to l itself, not that goroutine.
func report(ctx context.Context, l *slog.Logger, level slog.Level, msg string, args ...any) {
	if l == nil {
		return
	}
	var pc [1]uintptr
	runtime.Callers(2, pc[:]) // skip runtime.Callers and report
	done := make(chan struct{})
	go func() {
		defer func() {
			_ = recover()
			close(done)
		}()
		h := l.Handler()
		if !h.Enabled(ctx, level) {
			return
		}
		r := slog.NewRecord(time.Now(), level, msg, pc[0])
		r.Add(args...)
		_ = h.Handle(ctx, r)
	}()
	<-done
}

// saveFailed records err, the failure of a Durable run's final checkpoint
// save at a stop of the bus, for the stop to return.
func (b *Bus) saveFailed(err error) {
	b.mu.Lock()
	b.saveErrs = append(b.saveErrs, err)
	b.mu.Unlock()
}

// Close stops the bus at once: it is Shutdown with a context that is already
// done. Like Shutdown, it waits for running handlers, so a handler must not
// call it, nor a [DeadLetterSink], which the worker of the dead letter
// waits for. Running handlers see their context cancelled and are waited
// for; queued events go to the dead-letter queue and are counted in the
// *UndeliveredError returned. On a Bus not made by [New] it returns an error
// wrapping [ErrInvalid].
func (b *Bus) Close() error {
	if err := b.check("Bus.Close"); err != nil {
		return err
	}
	b.closeIntake()
	for _, s := range b.subscriptions() { // also cuts short a Shutdown in progress
		s.stopNow(ErrClosed, false)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrClosed)
	return b.Shutdown(ctx)
}

// closeIntake closes the bus to Publish and Subscribe, and reports whether
// it was closed already. The first call records the subscriptions of the
// moment in atClose: an Unsubscribe running meanwhile must not take its
// subscription, and the events a Close abandons there, out of the stop's
// sight.
func (b *Bus) closeIntake() (closed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Swap(true) { // under mu: no subscription registers after this
		return true
	}
	b.atClose = make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		b.atClose = append(b.atClose, s)
	}
	return false
}

// register adds s to the bus unless it is closed.
func (b *Bus) register(s *Subscription) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	b.subs[s] = struct{}{}
	return nil
}

// unregister removes s, whose workers have exited, from the bus. The final
// counts of a durable subscription's run go to its topic's claim in the
// same step, so that Metrics counts them once: with the run or after it.
func (b *Bus) unregister(s *Subscription) {
	b.mu.Lock()
	claim := b.durables[s.topic] // never removed once its topic is made
	b.mu.Unlock()
	var final counters
	if claim != nil {
		// Collected outside mu, as Metrics collects. The workers of a
		// durable subscription (an Async one) have exited: the counts
		// are final.
		final.times = new(timings)
		s.impl.collect(&final)
		if !b.opts.Metrics {
			final.times = nil // all zeros: only Options.Metrics times attempts
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
	if claim != nil {
		if final.times != nil && claim.ended.times == nil {
			claim.ended.times = new(timings)
		}
		claim.ended.add(&final)
	}
}
