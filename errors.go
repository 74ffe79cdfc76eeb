package eventbus

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by calls on a bus that has been shut down or
	// closed, on a subscription after Unsubscribe, and on a closed store.
	ErrClosed = errors.New("eventbus: closed")

	// ErrInvalid is wrapped by every error about bad input: an empty or
	// malformed name, a nil handler, a size out of range. The message says
	// which argument and why.
	ErrInvalid = errors.New("eventbus: invalid argument")

	// ErrDuplicate is wrapped when a name is already taken: a subscription
	// name within a topic, a topic name already in use on the bus (whatever
	// its payload type: [NewTopic] makes each topic once), the
	// name of a durable subscription that runs, rebuilds or is stopping, or
	// whose topic ("durable." and the name) the application has made with
	// [NewTopic], or an event type name claimed by two Go types.
	ErrDuplicate = errors.New("eventbus: duplicate name")

	// ErrWrongExpectedVersion is matched (errors.Is) by every
	// [*WrongExpectedVersionError]: a stream was not in the state that an
	// append or delete expected. It is also wrapped when an [Aggregate]'s
	// load gives up on a stream that changed under each of its reads, and
	// when [SaveSnapshot] gives up on one that other saves changed before
	// each of its appends.
	ErrWrongExpectedVersion = errors.New("eventbus: wrong expected version")

	// ErrPartialDuplicate is wrapped when some events of an append are
	// already committed to the stream and others are not, or all are but
	// not right after the expected revision, so the append can be neither
	// done nor skipped as a retry.
	ErrPartialDuplicate = errors.New("eventbus: events partly committed already")

	// ErrStreamDeleted is wrapped when a tombstoned stream is read, written
	// or deleted.
	ErrStreamDeleted = errors.New("eventbus: stream deleted")

	// ErrTooLarge is wrapped when an event or a batch is larger than the
	// store's limit, and nothing of the batch is written; and when [Decode]
	// refuses a deflated payload that inflates to more than 64 MiB.
	ErrTooLarge = errors.New("eventbus: too large")

	// ErrUnknownEvent is wrapped when a [Registry] has no Go type, codec or
	// upcaster for an event's type name and schema version.
	ErrUnknownEvent = errors.New("eventbus: unknown event type or version")

	// ErrLocked is wrapped when [OpenFileStore] or [RepairFileStore] finds
	// its directory locked by another open store or a repair, in this
	// process or another one. Stores take such locks on Unix only, on the
	// directory itself and on its file LOCK, so that deleting LOCK lets
	// no second store open beside the first (see [FileStore]).
	ErrLocked = errors.New("eventbus: file store locked")

	// ErrReadOnly is returned by the writing methods of a [FileStore] opened
	// with ReadOnly.
	ErrReadOnly = errors.New("eventbus: file store opened read-only")

	// ErrTruncated is wrapped when an [Aggregate] cannot load a state
	// because events it needs are no longer read from their stream: hidden
	// by the stream's [StreamMetadata] (MaxCount, MaxAge) or deleted by a
	// [FileStore]'s retention. The message names their revisions. The
	// stream can still be read and written; a snapshot at the last of
	// them or later lets the aggregate load again, if it reads snapshots
	// (AggregateOptions.SnapshotEvery).
	ErrTruncated = errors.New("eventbus: stream truncated")

	// ErrGoexit is matched (errors.Is) by the error that a call of
	// runtime.Goexit, as t.FailNow and testify's require make, becomes: the
	// [*PanicError] of a handler's event in the dead-letter queue (see
	// [Handler]), which a [DeadLetterFilter] with this Err selects, and in
	// [Logging]'s report, and a [DeadLetterSink]'s error in the bus's log.
	ErrGoexit = errors.New("eventbus: runtime.Goexit called")
)

// goexitError is the panic value that a call of runtime.Goexit becomes: its
// message says whose call it was, and it matches ErrGoexit.
type goexitError string

func (e goexitError) Error() string { return string(e) }

// Is reports whether target is ErrGoexit.
func (goexitError) Is(target error) bool { return target == ErrGoexit }

// checkContext returns an error wrapping ErrInvalid for a nil context,
// which would otherwise panic deep inside the call.
func checkContext(ctx context.Context, call string) error {
	if ctx == nil {
		return nilContext(call) // out of line, so that checkContext is inlined
	}
	return nil
}

func nilContext(call string) error { return fmt.Errorf("%w: %s: nil context", ErrInvalid, call) }

// liveContext is checkContext for a store's calls, which also return at
// once with the error of a context that is done.
func liveContext(ctx context.Context, call string) error {
	if err := checkContext(ctx, call); err != nil {
		return err
	}
	return ctx.Err()
}

// checkWaitContext is checkContext for calls that wait for handlers to
// finish, which a handler's context would make wait for its own handler.
func checkWaitContext(ctx context.Context, call string) error {
	if err := checkContext(ctx, call); err != nil {
		return err
	}
	if p, ok := parent(ctx); ok && p.handler {
		return fmt.Errorf("%w: %s called with a handler's context would wait for that handler", ErrInvalid, call)
	}
	return nil
}

// stopCause returns why ctx, which is done, stops a subscription without
// grace: its cause, which also matches ctx's error (errors.Is with
// context.DeadlineExceeded or context.Canceled) when the cause is one of
// its own, given with context.WithTimeoutCause or WithCancelCause.
func stopCause(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// PanicError is the error a handler's panic becomes, or a panic in a
// method (Unwrap, As) of the error a handler returned, which the retry
// policy calls. The handler's goroutine (a worker's in Async mode, the
// publisher's in Sync mode) survives the panic and treats the event like
// any other failure (retries, dead letter). A panic in a [Codec] or an
// upcaster becomes one too, in the error of [Registry.Encode] or [Decode],
// as does one in an [Aggregate]'s evolve, in the error of its Load or
// Execute.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

// Error reports the panic value. A nil *PanicError (a handler's typed
// nil) reads as the zero one, as a nil pointer of each error type of the
// package does in each of its methods.
func (e *PanicError) Error() string {
	if e == nil {
		e = &PanicError{}
	}
	return fmt.Sprintf("eventbus: panic: %v", e.Value)
}

// Unwrap returns Value when it is an error, so errors.Is sees through a
// panic(err).
func (e *PanicError) Unwrap() error {
	if e == nil {
		return nil
	}
	err, _ := e.Value.(error)
	return err
}

// HandlerError is a subscription's failure to handle an event in Sync mode,
// after its retries; the event has been handed to the bus's dead-letter
// queue. A Sync-mode Publish returns one for each subscription that failed,
// joined: an error without one means that Publish refused the event and
// no handler ran.
type HandlerError struct {
	// Topic is the name of the topic of the event.
	Topic string
	// Subscription is the name of the subscription that failed.
	Subscription string
	// Err is the handler's last error, noting the retry abandoned if the
	// publisher's context ended while the event waited for one.
	Err error
}

// Error names the subscription, its topic and its error. A nil
// *HandlerError reads as the zero one.
func (e *HandlerError) Error() string {
	if e == nil {
		e = &HandlerError{}
	}
	return fmt.Sprintf("subscription %q of topic %q: %v", e.Subscription, e.Topic, e.Err)
}

// Unwrap returns the handler's error, so errors.Is sees through it.
func (e *HandlerError) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// UndeliveredError reports events that a forced shutdown or an
// Unsubscribe left unhandled. Each of them is also handed to the bus's
// dead-letter queue, so none is lost without a trace.
type UndeliveredError struct {
	// Count is the number of events that were queued or waiting for a retry
	// and never finished. An event whose handler ran when its context was
	// cancelled is counted only if that attempt failed with retries left:
	// otherwise it finished, handled or dead-lettered with its own error.
	Count int
	// Err is why delivery stopped: the context's error, which matches
	// its cause too when it has one of its own (context.WithTimeoutCause),
	// or [ErrClosed] for Close.
	Err error
}

// Error reports the count and the cause. A nil *UndeliveredError reads
// as the zero one.
func (e *UndeliveredError) Error() string {
	if e == nil {
		e = &UndeliveredError{}
	}
	return fmt.Sprintf("eventbus: %s undelivered: %v", eventCount(e.Count), e.Err)
}

// eventCount returns "1 event" or "n events", for error messages.
func eventCount(n int) string {
	if n == 1 {
		return "1 event"
	}
	return fmt.Sprintf("%d events", n)
}

// Unwrap returns the cause, so errors.Is(err, context.DeadlineExceeded)
// works on the result of Shutdown.
func (e *UndeliveredError) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}
