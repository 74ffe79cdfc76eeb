package eventbus

import (
	"context"
	"fmt"
	"math"
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
	// business key such as an order number. An event for which it returns
	// "" is not deduplicated.
	Key func(env *Envelope) string
	// Store, if set, records processed events instead of the in-memory
	// record.
	Store ProcessedStore
	// Capacity bounds the in-memory record of each subscription; zero
	// means 10,000 keys. The record always remembers the last Capacity
	// keys, and at most twice as many: once it holds 2×Capacity, it
	// forgets the older half at once.
	//
	// The record lives as long as the process, so it catches the
	// duplicates that come soon after the first delivery: redeliveries,
	// redrives, a producer's retries. With ID keys it takes about 90 bytes
	// per unit of Capacity (two generations of about 45 bytes a key), and
	// each event costs about 100 ns at 10,000 keys, 20 ns more at 100,000
	// (BenchmarkMiddleware, Sync mode). Forgetting a generation clears its
	// map under the record's lock, once every Capacity events, in time
	// that grows with Capacity. Deduplicate across restarts, or over longer
	// spans, with a Store.
	Capacity int
	// TTL is how long the in-memory record remembers a key, counted from
	// the event's publish time against the publish time of the events that
	// follow; zero means 24 hours.
	TTL time.Duration
}

// Idempotency makes handling effectively-once: an event whose key was
// handled successfully before in the same subscription is skipped (and
// counted as a duplicate in [Bus.Metrics]). A key is recorded only after the
// handler succeeds, so a failed attempt is retried, never mistaken for a
// duplicate; and while one delivery of a key runs, another waits for it, so
// two concurrent deliveries run the handler once.
//
// Each subscription the middleware wraps keeps its own record. The
// in-memory record forgets keys older than the TTL or than the last
// Capacity (see [IdempotencyOptions]); a key forgotten and delivered again
// runs again. With a Store, a failing MarkProcessed fails the
// attempt: the handler's effect happened, and it will run again on the retry
// (at-least-once).
func Idempotency(opts *IdempotencyOptions) Middleware {
	var o IdempotencyOptions
	if opts != nil {
		o = *opts
	}
	if o.Capacity <= 0 {
		o.Capacity = 10_000
	}
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	return func(next EnvelopeHandler) EnvelopeHandler {
		if o.Key != nil {
			d := newDedup[string](&o)
			return func(ctx context.Context, env *Envelope) error {
				k := o.Key(env)
				if k == "" {
					return next(ctx, env)
				}
				return d.handle(ctx, env, k, next)
			}
		}
		d := newDedup[ID](&o)
		return func(ctx context.Context, env *Envelope) error {
			return d.handle(ctx, env, env.ID, next)
		}
	}
}

// dedup is the record of one subscription, keyed by event ID or business
// key: the keys in flight (a handler runs for them), and the done ones.
//
// Both live in two generations of maps from key to the event's publish time
// (Unix nanoseconds), or to running for a key in flight. New keys go into
// cur; when it holds Capacity keys, prev is forgotten and cur becomes prev.
// So the record always holds the last Capacity keys, forgetting costs no map
// operation per key (deleting the oldest key of a large record one by one
// missed the cache for every event), and a new event costs two lookups, an
// insert and an update in place. Neither map holds a pointer for ID keys, so
// the garbage collector need not scan them. With a Store, the maps hold only
// the keys in flight.
type dedup[K comparable] struct {
	opts      *IdempotencyOptions
	mu        sync.Mutex
	cur, prev map[K]int64
	running   int           // keys in flight
	changed   chan struct{} // closed when a key leaves flight; nil without waiters
}

// running marks a key in flight in the record's maps: a publish time of
// year 1677, which no event has.
const running = math.MinInt64

func newDedup[K comparable](o *IdempotencyOptions) *dedup[K] {
	return &dedup[K]{opts: o, cur: make(map[K]int64), prev: make(map[K]int64)}
}

func (d *dedup[K]) handle(ctx context.Context, env *Envelope, k K, next EnvelopeHandler) (err error) {
	done, err := d.claim(ctx, env, k)
	if err != nil || done {
		env.duplicate = done
		return err
	}
	// Deferred, so that a handler's panic, which the worker turns into a
	// failed attempt, takes k out of flight too: the retry would otherwise
	// wait for itself.
	handled := false
	defer func() { d.release(k, handled, env.Time) }()
	err = next(ctx, env)
	if err == nil && d.opts.Store != nil {
		if merr := d.opts.Store.MarkProcessed(ctx, d.storeKey(env, k)); merr != nil {
			err = fmt.Errorf("eventbus: handled, but recording it failed: %w", merr)
		}
	}
	handled = err == nil
	return err
}

func (d *dedup[K]) storeKey(env *Envelope, k K) IdempotencyKey {
	sk := IdempotencyKey{Subscription: env.Subscription}
	switch k := any(k).(type) {
	case ID:
		sk.ID = k
	case string:
		sk.Key = k
	}
	return sk
}

// claim waits until no other delivery of k is in flight, then reports
// whether k was processed; if not, k is now in flight and must be released.
func (d *dedup[K]) claim(ctx context.Context, env *Envelope, k K) (bool, error) {
	now := env.Time.UnixNano()
	d.mu.Lock()
	for {
		published, ok := d.cur[k]
		if !ok {
			published, ok = d.prev[k]
		}
		if !ok {
			break
		}
		if published != running {
			if d.opts.Store == nil && time.Duration(now-published) <= d.opts.TTL {
				d.mu.Unlock()
				return true, nil
			}
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
	if len(d.cur) >= d.opts.Capacity {
		d.rotate()
	}
	d.cur[k] = running
	d.running++
	d.mu.Unlock()
	if d.opts.Store == nil {
		return false, nil
	}
	done, err := d.opts.Store.Processed(ctx, d.storeKey(env, k))
	if err != nil || done {
		d.release(k, false, time.Time{})
	}
	return done, err
}

// rotate forgets prev and makes cur the older generation. Keys in flight
// in prev move to the new cur, so that a slow handler's key stays in
// flight however many events pass meanwhile; a mark in prev shadowed by
// cur is stale (see release). Callers hold mu.
func (d *dedup[K]) rotate() {
	var moved []K
	if d.running > 0 {
		for k, published := range d.prev {
			if _, shadowed := d.cur[k]; published == running && !shadowed {
				moved = append(moved, k)
			}
		}
	}
	clear(d.prev) // keeps its room for the next generation
	d.prev, d.cur = d.cur, d.prev
	for _, k := range moved {
		d.cur[k] = running
	}
}

// release takes k out of flight, recording it as done, published at
// published, if it succeeded and there is no Store.
func (d *dedup[K]) release(k K, ok bool, published time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running--
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	if ok && d.opts.Store == nil {
		// An update in place, unless cur has turned over since the claim;
		// either way k is found in cur first, so a mark left in prev is
		// shadowed.
		d.cur[k] = published.UnixNano()
		return
	}
	delete(d.cur, k)
	if d.prev[k] == running { // cur turned over since the claim
		delete(d.prev, k)
	}
}
