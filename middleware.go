package eventbus

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Envelope is the untyped view of an event that middleware works on, so that
// one chain serves topics of every payload type.
//
// The envelope a middleware receives, and any copy of it, is valid only
// until the middleware returns: the bus reuses the space behind its payload
// for the next event, so that a chain costs no allocation. To keep the
// payload, call Payload during the call. A [DeadLetter]'s envelope is its
// own, valid for good.
type Envelope struct {
	Header
	// Subscription is the name of the subscription handling the event.
	Subscription string
	// Attempt counts attempts at handling the event in this subscription,
	// starting at 1. In a [DeadLetter] it is the number of attempts made.
	Attempt int

	event payloader // the typed payload, a *boxed[T]
}

// Payload returns the event's payload, for inspection; nil for an envelope
// the bus did not make. It is boxed in an interface only when asked for, so
// a chain that never looks at payloads costs no allocation. Middleware
// cannot replace the payload.
func (e Envelope) Payload() any {
	if e.event == nil {
		return nil
	}
	return e.event.payload()
}

// payloader is the typed payload behind an Envelope: a *boxed[T].
type payloader interface {
	payload() any
	skipped()
	wasSkipped() bool
}

// boxed holds a payload of type T for an Envelope, and whether Idempotency
// skipped the handler for it. The mark lives here, behind the pointer that
// copies of the envelope share, so that it reaches the bus through a
// middleware that passed a copy on.
type boxed[T any] struct {
	v         T
	duplicate bool
}

func (b *boxed[T]) payload() any     { return b.v }
func (b *boxed[T]) skipped()         { b.duplicate = true }
func (b *boxed[T]) wasSkipped() bool { return b.duplicate }

// skipped marks env's event as skipped by Idempotency: a duplicate.
func (e *Envelope) skipped() {
	if e.event != nil {
		e.event.skipped()
	}
}

// wasSkipped reports whether Idempotency skipped env's event.
func (e *Envelope) wasSkipped() bool { return e.event != nil && e.event.wasSkipped() }

// envelope is an Envelope with room for its typed payload, which the
// Envelope points to: filling one copies the payload instead of boxing it,
// which would cost an allocation per attempt.
type envelope[T any] struct {
	Envelope
	typed boxed[T]
}

// fill makes env the envelope of attempt attempt at e in subscription sub,
// and returns its untyped view.
func (env *envelope[T]) fill(e *Event[T], sub string, attempt int) *Envelope {
	env.typed.v, env.typed.duplicate = e.Payload, false
	env.Header = e.Header
	env.Subscription = sub
	env.Attempt = attempt
	env.event = &env.typed
	return &env.Envelope
}

// EnvelopeHandler handles one event in its untyped form; the innermost one
// calls the subscription's typed [Handler].
type EnvelopeHandler func(ctx context.Context, env *Envelope) error

// Middleware wraps an EnvelopeHandler with behaviour of its own: metrics,
// deduplication, a deadline, logging. It runs in the handler's goroutine (a
// worker's in Async mode, the publisher's in Sync mode), once per attempt,
// and must not use env, or a copy of it, after it returns (see [Envelope]).
//
// A subscription's chain is the bus's middleware followed by its own; the
// first given is the outermost, so it sees every attempt first and every
// result last. Subscribe builds it, and refuses a Middleware that returns a
// nil handler, or a built-in one given invalid options. It runs the
// constructors holding none of the bus's locks, so one may subscribe too,
// and before it checks that the name is free: a refused subscription may
// have run them.
type Middleware func(next EnvelopeHandler) EnvelopeHandler

// wrap applies mws, where.Middleware, around h, the first outermost. It
// returns an error wrapping ErrInvalid if one returns a nil handler, which
// the chain would call, or, were it the outermost, take for no chain at all;
// or if one is a built-in Middleware given invalid options (see refuse).
func wrap(h EnvelopeHandler, mws []Middleware, where string) (_ EnvelopeHandler, err error) {
	i := len(mws) - 1
	defer func() {
		if r := recover(); r != nil {
			m, ok := r.(misconfigured)
			if !ok {
				// A constructor's own panic goes on to Subscribe's caller.
				// Repanicked before this deferred call returns, it keeps
				// the constructor's frames in its stack trace.
				panic(r)
			}
			err = fmt.Errorf("%w: %s.Middleware[%d]: %s", ErrInvalid, where, i, m.why)
		}
	}()
	for ; i >= 0; i-- {
		if h = mws[i](h); h == nil {
			return nil, fmt.Errorf("%w: %s.Middleware[%d] returned a nil EnvelopeHandler", ErrInvalid, where, i)
		}
	}
	return h, nil
}

// misconfigured is the panic of the constructor of a built-in Middleware
// given invalid options, which it had no error return to report: wrap
// makes it Subscribe's error, before any event runs into it.
type misconfigured struct{ why string }

func (m misconfigured) Error() string { return ErrInvalid.Error() + ": " + m.why }

func (m misconfigured) Unwrap() error { return ErrInvalid }

// refuse returns a Middleware whose constructor panics with why (see
// misconfigured).
func refuse(why string) Middleware {
	return func(EnvelopeHandler) EnvelopeHandler { panic(misconfigured{why}) }
}

// Timeout gives each attempt its own deadline d: the handler's context is
// done d after the attempt starts, and a handler that honours it returns
// context.DeadlineExceeded, which fails the attempt. A handler that ignores
// its context runs on. d <= 0 means no deadline.
//
// The context ends with the attempt, cancelled when the chain returns,
// unlike a handler's own, which outlives it (see [Handler]): for work that
// the handler hands on, pass context.WithoutCancel(ctx), which keeps its
// links to the event.
//
// Each attempt then costs a context, a timer and 4 allocations: about
// 680 ns more than a Sync-mode publish with no middleware, which takes 62,
// on the 2-core Intel Xeon VM of the README's figures
// (BenchmarkMiddleware/timeout).
func Timeout(d time.Duration) Middleware {
	return func(next EnvelopeHandler) EnvelopeHandler {
		if d <= 0 {
			return next
		}
		return func(ctx context.Context, env *Envelope) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, env)
		}
	}
}

// Logging logs every failed attempt at level Warn and every success at
// Debug, with the event's ID ("id"), type, topic, subscription, key and
// attempt, and the IDs that link it to the events before it in its flow
// ("correlation_id", and "causation_id" if it has a cause), and its W3C
// trace context ("traceparent") if it has a valid one (see
// [TraceparentKey]), so that the log lines of one flow can be found
// together. It never logs payloads or other metadata. A success that an
// [Idempotency] after it skipped as a duplicate is logged as such,
// "eventbus: skipped duplicate", not as handled.
// An attempt that panics is logged with the *PanicError it becomes, and the
// panic goes on to the bus, which recovers it in the handler's goroutine (a
// worker's in Async mode, the publisher's in Sync mode). l's Handler runs
// in the chain, as the handler does: a panic in it, or a call of
// runtime.Goexit, is the attempt's, and fails it even after the handler
// succeeded, so that the retry policy may run the handler again. A nil
// logger logs nothing and costs nothing.
//
// A logger without a Handler (a zero slog.Logger, which slog.New never
// makes) would panic at its first report, after the handler ran. Logging
// has no error return to report it: Subscribe refuses the subscription,
// with an error wrapping [ErrInvalid] that names the Middleware. (Called
// by hand, outside Subscribe, the Middleware panics with that error.)
func Logging(l *slog.Logger) Middleware {
	if l != nil && l.Handler() == nil {
		return refuse("Logging's logger has no Handler; make it with slog.New")
	}
	return func(next EnvelopeHandler) EnvelopeHandler {
		if l == nil {
			return next
		}
		return func(ctx context.Context, env *Envelope) error {
			returned := false
			defer func() {
				if returned {
					return
				}
				// A panic: log it, then panic on, still above the
				// panicking frames, so that the worker's *PanicError
				// keeps their stack. recover is nil for runtime.Goexit,
				// which goes on by itself.
				r := recover()
				if r == nil {
					logAttempt(ctx, l, env, &PanicError{Value: errGoexit})
					return
				}
				logAttempt(ctx, l, env, &PanicError{Value: r})
				panic(r)
			}()
			err := next(ctx, env)
			returned = true
			logAttempt(ctx, l, env, err)
			return err
		}
	}
}

// logAttempt logs the outcome err of an attempt at env for Logging; with
// no env to name (a middleware passed on nil, which the handler side
// fails for good), only err.
func logAttempt(ctx context.Context, l *slog.Logger, env *Envelope, err error) {
	level := slog.LevelDebug
	if err != nil {
		level = slog.LevelWarn
	}
	if l.Enabled(ctx, level) {
		var attrs []slog.Attr
		if env != nil {
			attrs = append(make([]slog.Attr, 0, 10), // room for all, the error too
				slog.String("id", env.ID.String()),
				slog.String("type", env.Type),
				slog.String("topic", env.Topic),
				slog.String("subscription", env.Subscription),
				slog.String("key", env.Key),
				slog.Int("attempt", env.Attempt),
				slog.String("correlation_id", env.CorrelationID.String()),
			)
			if !env.CausationID.IsZero() {
				attrs = append(attrs, slog.String("causation_id", env.CausationID.String()))
			}
			if tp := traceparentOf(env.Metadata); tp != "" {
				attrs = append(attrs, slog.String(TraceparentKey, tp))
			}
		}
		msg := "eventbus: handled"
		if env != nil && env.wasSkipped() {
			msg = "eventbus: skipped duplicate"
		}
		if err != nil {
			msg = "eventbus: attempt failed"
			attrs = append(attrs, slog.Any("error", err))
		}
		l.LogAttrs(ctx, level, msg, attrs...)
	}
}
