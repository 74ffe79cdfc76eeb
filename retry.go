package eventbus

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and how soon a subscription tries a failed
// event again. The zero value makes one attempt and no retry: a failing
// event goes straight to the dead-letter queue, never round a hot loop.
//
// While an event waits for its next attempt, later events with the same key
// wait behind it, so per-key order holds; events with other keys, on the same
// worker too, go on being handled. In Sync mode the wait holds up only the
// event's publisher: others' events of its key go ahead.
//
// Once the bus has begun to stop, an attempt that fails with an error
// matching [ErrClosed] is not retried, whatever the policy: the stopping
// bus refuses what a handler publishes at every later attempt too (see
// [Bus.Shutdown]).
type RetryPolicy struct {
	// MaxAttempts is the number of attempts in all, the first included.
	// Zero or one means no retry.
	MaxAttempts int
	// InitialDelay is the wait before the second attempt. Zero means 100ms.
	InitialDelay time.Duration
	// MaxDelay caps the wait between attempts. Zero means 30s, or
	// InitialDelay if that is longer, so that a long InitialDelay given
	// alone is waited in full (and the wait no longer grows).
	MaxDelay time.Duration
	// Multiplier grows the wait after each failed attempt. Zero means 2.
	Multiplier float64
	// Jitter, from 0 to 1, shortens each wait by a random fraction of up to
	// Jitter, so that many failing events do not retry in step. Zero means
	// the exact schedule.
	Jitter float64
	// MaxElapsed stops retrying when the next attempt would start more than
	// this long after the first failure (the end of the first attempt: a
	// worker reads the clock when an attempt fails, not before each one).
	// Zero means no limit.
	MaxElapsed time.Duration
}

func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 0:
		return fmt.Errorf("%w: RetryPolicy.MaxAttempts %d is negative", ErrInvalid, p.MaxAttempts)
	case p.InitialDelay < 0:
		return fmt.Errorf("%w: RetryPolicy.InitialDelay %v is negative", ErrInvalid, p.InitialDelay)
	case p.MaxDelay < 0:
		return fmt.Errorf("%w: RetryPolicy.MaxDelay %v is negative", ErrInvalid, p.MaxDelay)
	case p.MaxElapsed < 0:
		return fmt.Errorf("%w: RetryPolicy.MaxElapsed %v is negative", ErrInvalid, p.MaxElapsed)
	case p.Multiplier != 0 && !(p.Multiplier >= 1 && p.Multiplier <= math.MaxFloat64): // NaN too
		return fmt.Errorf("%w: RetryPolicy.Multiplier %v is not a number from 1 on", ErrInvalid, p.Multiplier)
	case !(p.Jitter >= 0 && p.Jitter <= 1):
		return fmt.Errorf("%w: RetryPolicy.Jitter %v is outside [0, 1]", ErrInvalid, p.Jitter)
	}
	return nil
}

// Delay returns the wait after the given failed attempt (1 for the first)
// before the next one, ignoring jitter: InitialDelay times Multiplier to the
// power attempt-1, to the nearest nanosecond, capped at MaxDelay. It is
// never negative: a negative InitialDelay, MaxDelay or Multiplier, which
// Subscribe refuses, counts as zero.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d, maxDelay, mult := max(p.InitialDelay, 0), max(p.MaxDelay, 0), p.Multiplier
	if d == 0 {
		d = 100 * time.Millisecond
	}
	if maxDelay == 0 {
		maxDelay = max(30*time.Second, d)
	}
	if mult <= 0 {
		mult = 2
	}
	if attempt > 1 {
		// One power, not a product per attempt, which took time in
		// proportion to attempt and truncated every step to the nanosecond.
		next := float64(d) * math.Pow(mult, float64(attempt-1))
		if !(next < float64(maxDelay)) { // NaN and +Inf too: Delay takes any policy
			return maxDelay
		}
		// Rounded, not truncated: 100ms × 1.7² is 288999999.99999994 in
		// floating point, and the wait 289ms, not 288.999999ms.
		d = time.Duration(math.Round(next))
	}
	return min(d, maxDelay)
}

// next returns the wait before attempt+1, or false when the event should be
// given up: attempts spent, a permanent error, or MaxElapsed reached.
func (p RetryPolicy) next(attempt int, err error, first, now time.Time) (time.Duration, bool) {
	if attempt >= p.MaxAttempts || isPermanent(err) {
		return 0, false
	}
	d := p.Delay(attempt)
	if p.Jitter > 0 {
		d -= time.Duration(p.Jitter * rand.Float64() * float64(d))
	}
	if p.MaxElapsed > 0 && now.Add(d).Sub(first) > p.MaxElapsed {
		return 0, false
	}
	return d, true
}

// Permanent marks err as not worth retrying: the event goes to the
// dead-letter queue after this attempt whatever the retry policy says.
// errors.Is and errors.As see through the mark. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// probe walks the Unwrap and As methods of a handler's error once, as the
// retry policy does, where the handler's panics are recovered: an error
// whose method panics then fails its attempt with a *PanicError, instead
// of ending the worker's goroutine, and with it the process, later.
func probe(err error) { _ = permanent(err) }

// isPermanent reports whether err carries a Permanent mark. It never
// panics (see safely): such an error is not permanent, and the event is
// retried as for any panic.
func isPermanent(err error) bool {
	return safely(func() bool { return permanent(err) })
}

// permanent reports whether err carries a Permanent mark, walking err's
// methods unguarded.
func permanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// isClosed is errors.Is(err, ErrClosed) that never panics (see safely).
func isClosed(err error) bool {
	return safely(func() bool { return errors.Is(err, ErrClosed) })
}

// safely returns what match reports, or false if it panics. The worker
// walks handlers' errors where nothing recovers, and a handler that panics
// with an error whose Unwrap, Is or As method panics gives a *PanicError
// of it, which no probe walked.
func safely(match func() bool) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return match()
}
