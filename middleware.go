package eventbus

import "context"

// Envelope is the untyped view of an event that middleware works on, so that
// one chain serves topics of every payload type.
type Envelope struct {
	Header
	// Subscription is the name of the subscription handling the event.
	Subscription string
	// Attempt counts attempts at handling the event in this subscription,
	// starting at 1. In a [DeadLetter] it is the number of attempts made.
	Attempt int
	// Payload is the event's payload, for inspection. Middleware must not
	// replace it with a value of another type.
	Payload any

	duplicate bool // set by Idempotency when it skips the handler
}

// EnvelopeHandler handles one event in its untyped form; the innermost one
// calls the subscription's typed [Handler].
type EnvelopeHandler func(ctx context.Context, env *Envelope) error

// Middleware wraps an EnvelopeHandler with behaviour of its own: metrics,
// deduplication, a deadline, logging. It runs in the worker's goroutine, once
// per attempt, and must not use env after it returns.
//
// A subscription's chain is the bus's middleware followed by its own; the
// first given is the outermost, so it sees every attempt first and every
// result last.
type Middleware func(next EnvelopeHandler) EnvelopeHandler

// wrap applies mws around h, the first outermost.
func wrap(h EnvelopeHandler, mws []Middleware) EnvelopeHandler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}
