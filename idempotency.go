package eventbus

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// IdempotencyKey identifies an event for deduplication within one
// subscription: the same event handled by two subscriptions has two keys.
type IdempotencyKey struct {
	Subscription string
	// ID is the event's ID, unless IdempotencyOptions.Key is set.
	ID ID
	// Key is what IdempotencyOptions.Key returned, if it is set.
	Key string
}

// ProcessedStore records which events were handled successfully, so that
// the Idempotency middleware can skip them when they come again. Implement
// it over a durable store (a database table, the event store) to
// deduplicate across restarts. Its methods may be called concurrently, for
// different keys.
type ProcessedStore interface {
	// Processed reports whether MarkProcessed was called for k.
	Processed(ctx context.Context, k IdempotencyKey) (bool, error)
	// MarkProcessed records that k's event was handled successfully.
	MarkProcessed(ctx context.Context, k IdempotencyKey) error
}

// IdempotencyOptions configures [Idempotency]. The zero value deduplicates
// by event ID, in memory.
type IdempotencyOptions struct {
	// Key, if set, names the event for deduplication instead of its ID: a
	// business key such as an order number.
	Key func(env *Envelope) string
	// Store, if set, records processed events instead of the in-memory
	// record.
	Store ProcessedStore
	// Capacity bounds the in-memory record; zero means 100,000 keys. When
	// it is full, the oldest key is forgotten.
	Capacity int
	// TTL is how long the in-memory record remembers a key, counted from
	// the event's publish time against the publish time of the events that
	// follow; zero means 24 hours.
	TTL time.Duration
}

// Idempotency makes handling effectively-once: an event whose key was
// handled successfully before is skipped (and counted as a duplicate in
// [Bus.Metrics]). A key is recorded only after the handler succeeds, so a
// failed attempt is retried, never mistaken for a duplicate; and while one
// delivery of a key runs, another waits for it, so two concurrent deliveries
// run the handler once.
//
// With a Store, a failing MarkProcessed fails the attempt: the handler's
// effect happened, but it will run again on the retry (at-least-once). The
// in-memory record forgets the oldest keys beyond Capacity or TTL; a key
// forgotten and delivered again runs again. Use one Idempotency middleware
// per bus or subscription: it keeps its own record.
func Idempotency(opts *IdempotencyOptions) Middleware {
	var o IdempotencyOptions
	if opts != nil {
		o = *opts
	}
	if o.Capacity <= 0 {
		o.Capacity = 100_000
	}
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	d := &dedup{opts: o, inflight: make(map[IdempotencyKey]struct{})}
	if o.Store == nil {
		d.seen = make(map[IdempotencyKey]time.Time)
	}
	return func(next EnvelopeHandler) EnvelopeHandler {
		return func(ctx context.Context, env *Envelope) error { return d.handle(ctx, env, next) }
	}
}

// dedup is the state of one Idempotency middleware.
type dedup struct {
	opts     IdempotencyOptions
	mu       sync.Mutex
	inflight map[IdempotencyKey]struct{}
	changed  chan struct{} // closed when a key leaves inflight; nil without waiters

	// The in-memory record, when there is no Store: when each key was
	// published, and the keys oldest first in a ring.
	seen  map[IdempotencyKey]time.Time
	order []IdempotencyKey
	head  int
}

func (d *dedup) handle(ctx context.Context, env *Envelope, next EnvelopeHandler) error {
	k := IdempotencyKey{Subscription: env.Subscription}
	if d.opts.Key != nil {
		k.Key = d.opts.Key(env)
	} else {
		k.ID = env.ID
	}
	if done, err := d.claim(ctx, k); err != nil || done {
		env.duplicate = done
		return err
	}
	err := next(ctx, env)
	if err == nil && d.opts.Store != nil {
		if merr := d.opts.Store.MarkProcessed(ctx, k); merr != nil {
			err = fmt.Errorf("eventbus: handled, but recording it failed: %w", merr)
		}
	}
	d.release(k, err == nil, env.Time)
	return err
}

// claim waits until no other delivery of k runs, then reports whether k was
// processed; if not, k is in flight and must be released.
func (d *dedup) claim(ctx context.Context, k IdempotencyKey) (bool, error) {
	d.mu.Lock()
	for {
		if _, busy := d.inflight[k]; !busy {
			break
		}
		if d.changed == nil {
			d.changed = make(chan struct{})
		}
		ch := d.changed
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		d.mu.Lock()
	}
	if d.seen != nil {
		_, done := d.seen[k]
		if !done {
			d.inflight[k] = struct{}{}
		}
		d.mu.Unlock()
		return done, nil
	}
	d.inflight[k] = struct{}{}
	d.mu.Unlock()
	done, err := d.opts.Store.Processed(ctx, k)
	if err != nil || done {
		d.release(k, false, time.Time{})
	}
	return done, err
}

// release takes k out of flight, recording it in memory if it succeeded.
func (d *dedup) release(k IdempotencyKey, ok bool, published time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.inflight, k)
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	if ok && d.seen != nil {
		d.remember(k, published)
	}
}

// remember adds k to the in-memory record, forgetting keys beyond the
// capacity or older than the TTL. Callers hold mu.
func (d *dedup) remember(k IdempotencyKey, published time.Time) {
	for len(d.seen) > 0 {
		oldest := d.order[d.head]
		if len(d.seen) < d.opts.Capacity && published.Sub(d.seen[oldest]) <= d.opts.TTL {
			break
		}
		delete(d.seen, oldest)
		d.order[d.head] = IdempotencyKey{}
		d.head = (d.head + 1) % len(d.order)
	}
	d.seen[k] = published
	if len(d.order) < d.opts.Capacity {
		d.order = append(d.order, k)
		return
	}
	d.order[(d.head+len(d.seen)-1)%len(d.order)] = k
}
