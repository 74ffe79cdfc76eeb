package eventbus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Handler handles one event of a topic with payload type T. An error (or a
// panic) fails the attempt: the subscription's retry policy decides whether
// the event is tried again or goes to the dead-letter queue.
//
// In Async mode, a running handler sees ctx cancelled only when its
// subscription stops without grace: on the bus's Close, or when the context
// given to Shutdown, [Subscription.Unsubscribe] or [Durable.Stop] ends
// first (a middleware such as [Timeout] may add a deadline of its own).
// In Sync mode ctx is made from the publisher's (see
// [Topic.Publish]), cancelled when that is, and a stop of the bus does not
// cancel it. A handler that publishes with ctx links the new event to this
// one (correlation and causation IDs). ctx stays valid after the handler
// returns, links included, for work the handler hands on; in Async mode it
// is cancelled (with the cause ErrClosed) once the subscription has ended.
//
// A handler that calls runtime.Goexit, as t.FailNow and testify's require
// do, loses only its own event: it is dead-lettered with a *PanicError
// that matches [ErrGoexit], and the worker carries on with a new
// goroutine. In Sync mode it ends the publishing goroutine, which it runs
// in: Publish does not return, and the event is neither dead-lettered nor
// handed to the subscriptions after it.
// In a test, report from a handler with t.Error or by returning an error.
type Handler[T any] func(ctx context.Context, e Event[T]) error

// SubscriptionOptions configures one subscription. The zero value takes the
// bus's defaults.
type SubscriptionOptions struct {
	// Workers is the number of goroutines handling events, each with its own
	// queue, at most 4096; zero means the bus's Workers. Events with the
	// same key always go to the same worker; one without a key, published
	// alone, to one with nothing to do, if one of the first 64 has nothing.
	// An idle worker costs no CPU and about 9 KB: its stack, its chunks of
	// handler contexts, and its queue's two slices, which hold up to
	// 2×QueueSize events after a burst.
	Workers int
	// QueueSize is the capacity of each worker's queue, at most 1<<24; zero
	// means the bus's.
	QueueSize int
	// Middleware wraps this subscription's handler, inside the bus's
	// middleware; the first given is the outermost.
	Middleware []Middleware
	// Retry, if not nil, replaces the bus's retry policy.
	Retry *RetryPolicy
	// BatchSize is the most events a BatchHandler receives at once; zero
	// means 100. Only the batch subscriptions use it, and BatchWait:
	// [Topic.SubscribeBatch], [SubscribeDurableBatch] and
	// [StoreTopic.SubscribeBatch].
	BatchSize int
	// BatchWait is how long a worker with fewer than BatchSize events waits
	// for more before handling them; zero means no wait. [Bus.Flush] and
	// [Durable.WaitFor] wait for it too: an event left in a batch that
	// does not fill is handled, and they return, only once BatchWait has
	// passed.
	BatchWait time.Duration

	// finished, if set, is called in the worker when an event is done with:
	// handled, skipped as a duplicate, or dead-lettered while the
	// subscription runs (not abandoned by a stop). Durable subscriptions
	// use it to advance their checkpoints; held is true for a dead letter
	// that the sink failed to keep, which the checkpoint must not pass. It
	// takes the store position by value, so that the event does not escape
	// to the heap.
	finished func(position uint64, held bool)
	// released, if set with finished, is called when a dead letter that
	// was held back (see finished) is discarded, which lets the checkpoint
	// pass it.
	released func(position uint64)
}

// Subscription is a named consumer of one topic. It receives every event
// published on the topic after it was made; its workers share the events out
// by key. Use [Subscription.Unsubscribe] to remove it. A nil or zero
// Subscription, one not made by Subscribe, has no names, and its
// Unsubscribe returns an error wrapping [ErrInvalid].
type Subscription struct {
	bus   *Bus
	topic string
	name  string
	impl  subscriber

	ctx         context.Context // cancelled to stop the workers without grace
	kill        context.CancelCauseFunc
	base        handle        // names ctx for handler contexts, once started
	exited      chan struct{} // closed when every worker has exited
	undelivered atomic.Int64  // events abandoned when killed
	// lostToStop counts the events dead-lettered because of a stop:
	// abandoned or cut short by a stop without grace (Async), or failed
	// with ErrClosed once the bus began to stop. Flush reports them.
	lostToStop atomic.Int64
	stopped    atomic.Bool // Unsubscribe was called
	cut        sync.Once   // the first stop without grace
	cutByOwn   atomic.Bool // that stop was Unsubscribe's, not the bus's
}

// subscriber is the typed side of a Subscription.
type subscriber interface {
	stopIntake()
	wake()
	collect(c *counters) (depth, pending uint64)
	uncounted() bool // Sync mode without Options.Metrics: collect counts nothing
	// mark returns where each worker's queue stands, which settle then
	// waits for: the events queued before the call.
	mark() []uint64
	settle(ctx context.Context, marks []uint64) error
	detach() // remove from the topic
}

// Name returns the subscription's name, or "" for a nil Subscription.
func (s *Subscription) Name() string {
	if s == nil {
		return ""
	}
	return s.name
}

// Topic returns the name of the subscription's topic, or "" for a nil
// Subscription.
func (s *Subscription) Topic() string {
	if s == nil {
		return ""
	}
	return s.topic
}

// Unsubscribe removes the subscription: it receives no more events, handles
// those already queued (with their retries), and returns once its workers
// have exited; handler contexts kept past their handlers are then
// cancelled. If ctx ends first, or the bus stops without grace meanwhile,
// running handlers see their context cancelled and the events not yet
// handled go to the dead-letter queue; the error is then an
// *UndeliveredError with their count, wrapping ctx's cause, or the bus's:
// ErrClosed for Close, the context's cause for a Shutdown past its
// deadline. A stop without grace that came before the call reports the
// events it abandoned itself: Unsubscribe then returns nil, also while the
// workers are still abandoning them. Calling it again returns ErrClosed;
// calling it with a handler's context, which would make it wait for that
// handler, or on a Subscription not made by Subscribe, returns an error
// wrapping [ErrInvalid]. A handler of an Async subscription must not call
// the subscription's Unsubscribe with another context either, such as
// context.Background() or one with a deadline: once ctx ends it still
// waits for the running handlers, the caller among them, so neither ever
// returns, nor does the bus's Shutdown. To stop a subscription from its
// own handler, call Unsubscribe in a goroutine of its own.
//
// In Sync mode, whose handlers run in their publishers' goroutines, it
// waits for none of them, as Shutdown does not: a Publish already running
// may still call the handler, through its middleware and with retries,
// after Unsubscribe has returned. The middleware's state, such as an
// Idempotency record, goes once those have returned, as in Async mode once
// the workers have exited.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	if s == nil || s.impl == nil {
		return fmt.Errorf("%w: Unsubscribe on a Subscription not made by Subscribe", ErrInvalid)
	}
	if err := checkWaitContext(ctx, "Unsubscribe"); err != nil {
		return err
	}
	if s.stopped.Swap(true) {
		return ErrClosed
	}
	// Once a stop of the bus has cut the subscription short, the events
	// abandoned are the stop's to report, all of them: also those of
	// workers that are still abandoning theirs, whose count comes later.
	cutBefore := s.ctx.Err() != nil
	s.impl.detach()
	s.impl.stopIntake()
	lost := s.wait(ctx, true)
	// Why the workers stopped short: ctx's end, or a Close (or a Shutdown
	// past its deadline) that came first, while ctx is still live.
	cause := context.Cause(s.ctx)
	s.kill(ErrClosed) // for handler contexts kept past their handler
	handles.release(s.base)
	s.bus.unregister(s)
	if lost > 0 && !cutBefore {
		return &UndeliveredError{Count: int(lost), Err: cause}
	}
	return nil
}

// wait waits for the workers to drain and exit; when ctx ends first, it
// stops them without grace, for its Unsubscribe if own. It returns the
// number of events abandoned.
func (s *Subscription) wait(ctx context.Context, own bool) int64 {
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.stopNow(stopCause(ctx), own)
		<-s.exited
	}
	return s.undelivered.Load()
}

// stopNow cancels the handlers' context and makes the workers abandon
// what they hold. The first call's cause and own stick: they say why the
// events were abandoned and, own for the subscription's Unsubscribe, whose
// they are to report.
func (s *Subscription) stopNow(cause error, own bool) {
	s.cut.Do(func() {
		s.cutByOwn.Store(own)
		s.kill(cause)
	})
	s.impl.wake()
}

// resolveSubscription merges opts with the bus's defaults and validates the
// result.
func (b *Bus) resolveSubscription(topic, name string, opts *SubscriptionOptions) (SubscriptionOptions, RetryPolicy, error) {
	var o SubscriptionOptions
	if opts != nil {
		o = *opts
	}
	where := fmt.Sprintf("subscription %q of topic %q: SubscriptionOptions", name, topic)
	if o.Workers == 0 {
		o.Workers = b.opts.Workers
	}
	if o.QueueSize == 0 {
		o.QueueSize = b.opts.QueueSize
	}
	if err := checkSizes(where, o.Workers, o.QueueSize); err != nil {
		return o, RetryPolicy{}, err
	}
	if err := checkMiddleware(where, o.Middleware); err != nil {
		return o, RetryPolicy{}, err
	}
	if o.BatchSize == 0 {
		o.BatchSize = 100
	}
	if o.BatchSize < 0 || o.BatchSize > maxQueueSize {
		return o, RetryPolicy{}, fmt.Errorf("%w: %s.BatchSize %d is outside [0, %d]", ErrInvalid, where, o.BatchSize, maxQueueSize)
	}
	if o.BatchWait < 0 {
		return o, RetryPolicy{}, fmt.Errorf("%w: %s.BatchWait %v is negative", ErrInvalid, where, o.BatchWait)
	}
	retry := b.opts.Retry
	if o.Retry != nil {
		retry = *o.Retry
	}
	if err := retry.validate(); err != nil {
		return o, RetryPolicy{}, fmt.Errorf("%s: %w", where, err)
	}
	return o, retry, nil
}
