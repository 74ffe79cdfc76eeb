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
	// business key such as an order number. An event for which it returns
	// "" is not deduplicated.
	Key func(env *Envelope) string
	// Store, if set, records processed events instead of the in-memory
	// record.
	Store ProcessedStore
	// Capacity bounds the in-memory record of each subscription; zero
	// means 10,000 keys. When it is full, the oldest key is forgotten.
	//
	// The record lives as long as the process, so it catches the
	// duplicates that come soon after the first delivery: redeliveries,
	// redrives, a producer's retries. Each key costs about 45 bytes (ID
	// keys); 10,000 of them stay in a core's cache, and a record much larger
	// than the cache costs a cache miss or two per event (measured: about
	// 130 ns per event at 10,000 keys, about 230 ns at 100,000). Deduplicate
	// across restarts, or over longer spans, with a Store.
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
// Each subscription the middleware wraps keeps its own record. The in-memory
// record forgets the oldest keys beyond Capacity or TTL; a key forgotten and
// delivered again runs again. With a Store, a failing MarkProcessed fails the
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
type dedup[K comparable] struct {
	opts    *IdempotencyOptions
	mu      sync.Mutex
	keys    map[K]bool    // true: done, false: in flight
	changed chan struct{} // closed when a key leaves flight; nil without waiters

	// The in-memory record, when there is no Store: the done keys of keys,
	// oldest first in a ring of up to Capacity with their publish times,
	// for forgetting. Neither holds a pointer for ID keys, so the garbage
	// collector need not scan them.
	done int // done keys in keys, and in the ring from head
	ring []doneKey[K]
	head int
}

type doneKey[K comparable] struct {
	key       K
	published int64 // Unix nanoseconds
}

func newDedup[K comparable](o *IdempotencyOptions) *dedup[K] {
	return &dedup[K]{opts: o, keys: make(map[K]bool)}
}

func (d *dedup[K]) handle(ctx context.Context, env *Envelope, k K, next EnvelopeHandler) error {
	done, err := d.claim(ctx, env, k)
	if err != nil || done {
		env.duplicate = done
		return err
	}
	err = next(ctx, env)
	if err == nil && d.opts.Store != nil {
		if merr := d.opts.Store.MarkProcessed(ctx, d.storeKey(env, k)); merr != nil {
			err = fmt.Errorf("eventbus: handled, but recording it failed: %w", merr)
		}
	}
	d.release(k, err == nil, env.Time)
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
	d.mu.Lock()
	for {
		done, seen := d.keys[k]
		if done {
			d.mu.Unlock()
			return true, nil
		}
		if !seen {
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
	d.keys[k] = false
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

// release takes k out of flight, recording it as done in memory if it
// succeeded and there is no Store.
func (d *dedup[K]) release(k K, ok bool, published time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	if !ok || d.opts.Store != nil {
		delete(d.keys, k)
		return
	}
	now := published.UnixNano()
	d.forget(now)
	d.keys[k] = true
	d.done++
	entry := doneKey[K]{key: k, published: now}
	if len(d.ring) < d.opts.Capacity {
		d.ring = append(d.ring, entry)
	} else {
		d.ring[(d.head+d.done-1)%len(d.ring)] = entry
	}
}

// forget drops the oldest done keys while the record is full or they are
// older than the TTL at now, in Unix nanoseconds. Callers hold mu.
func (d *dedup[K]) forget(now int64) {
	for d.done > 0 {
		oldest := d.ring[d.head]
		if d.done < d.opts.Capacity && time.Duration(now-oldest.published) <= d.opts.TTL {
			return
		}
		delete(d.keys, oldest.key)
		d.done--
		d.ring[d.head] = doneKey[K]{}
		d.head = (d.head + 1) % len(d.ring)
		if d.done == 0 {
			// Start over: while the ring is still growing, head must not
			// wrap to its empty first slots.
			d.head, d.ring = 0, d.ring[:0]
		}
	}
}
