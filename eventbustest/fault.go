package eventbustest

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// Fault describes what goes wrong in a handler wrapped by [Inject], to test
// retries, timeouts and dead letters. Key and Attempts select the faulty
// attempts; a faulty attempt waits Delay, then panics with Panic if it is
// set, else fails with Err if it is set, else runs the handler. Attempts
// that are not faulty run the handler at once. The zero Fault changes
// nothing.
type Fault struct {
	// Key, if set, makes only the events with this key faulty: those whose
	// Key, as the handler gets it, is Key. The Key of a durable
	// subscription's event (a StoreTopic's too) is its stream, such as
	// "orders:o1" for the key "o1" of StoreTopic "orders"; there Key also
	// matches the part of the stream after its first ':', the key that
	// the StoreTopic published the event with and that [RecordStoreTopic]
	// records, so that both "orders:o1" and "o1" select that event. A
	// durable subscription over the streams of several StoreTopics (by
	// [eventbus.SubscribeDurable]) finds "o1" in each of them: give it
	// the whole stream to select one.
	Key string
	// Attempts, if positive, makes only the first Attempts attempts at each
	// event faulty (counted by event ID), so that a retry policy with more
	// attempts gets the event through. Zero means every attempt. The count
	// is the handler's: two subscriptions of one topic given the same
	// handler that Inject returned share it, so give each an Inject of its
	// own. The handler keeps the count of every event it saw for as long
	// as it lives, about 35 bytes each: it is made for tests, not for a
	// process that runs for months.
	Attempts int
	// Delay is how long a faulty attempt takes before it fails or runs the
	// handler. It ends early, failing with the context's error, if the
	// handler's context is done, as with the Timeout middleware. The delay
	// is a timer: inside a testing/synctest bubble it takes no real time.
	Delay time.Duration
	// Err is the error of a faulty attempt. Wrap it with eventbus.Permanent
	// to make the event skip its retries.
	Err error
	// Panic, if not nil, is the value a faulty attempt panics with, which the
	// bus turns into an *eventbus.PanicError.
	Panic any
}

// Inject returns a handler that runs h with the faults f describes. It is
// safe for concurrent use if h is. To inject several faults, wrap the result
// again: Inject(Inject(h, slowKey), failingKey). If h is nil, Inject
// returns nil, which Subscribe refuses as it refuses any nil handler.
//
// Inject wraps a Handler only. To inject faults into an
// eventbus.BatchHandler, have it call a Handler that Inject returned for
// each event of its batch and name those that fail in an
// *eventbus.BatchError: their retries, one event at a time, go through that
// Handler too, so Attempts counts them.
func Inject[T any](h eventbus.Handler[T], f Fault) eventbus.Handler[T] {
	if h == nil {
		return nil
	}
	var (
		mu       sync.Mutex
		attempts = make(map[eventbus.ID]int)
	)
	faulty := func(e eventbus.Event[T]) bool {
		if f.Key != "" && !keyed(e.Header, f.Key) {
			return false
		}
		if f.Attempts <= 0 {
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		attempts[e.ID]++
		return attempts[e.ID] <= f.Attempts
	}
	return func(ctx context.Context, e eventbus.Event[T]) error {
		if !faulty(e) {
			return h(ctx, e)
		}
		if f.Delay > 0 {
			timer := time.NewTimer(f.Delay)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		switch {
		case f.Panic != nil:
			panic(f.Panic)
		case f.Err != nil:
			return f.Err
		}
		return h(ctx, e)
	}
}

// durableTopicPrefix starts the Topic of a durable subscription's events,
// "durable." and the subscription's name (see eventbus.Durable).
const durableTopicPrefix = "durable."

// keyed reports whether the event of h has key: as its Key, or, for a
// durable subscription's event, whose Key is its stream, as the part of
// the stream after the first ':', which a StoreTopic's name never has.
func keyed(h eventbus.Header, key string) bool {
	if h.Key == key {
		return true
	}
	if !strings.HasPrefix(h.Topic, durableTopicPrefix) {
		return false
	}
	_, published, ok := strings.Cut(h.Key, ":")
	return ok && published == key
}
