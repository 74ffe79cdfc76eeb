package eventbus

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// IdempotencyKey identifies an event for deduplication within one
// subscription: the same event handled by two subscriptions of different
// names has two keys. It names the subscription but not its topic, and
// names are unique only within a topic: subscriptions that share a
// [ProcessedStore] must have names unique across the bus's topics, or one
// skips the events that another of its name handled.
type IdempotencyKey struct {
	// Subscription is the name of the subscription handling the event.
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
// different keys; for one key too, by the middleware of subscriptions of
// one name in other buses or processes that share the store (see
// [Idempotency]).
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
	// means 10,000 keys, and a negative one is invalid (see [Idempotency]).
	// The record always remembers the last Capacity
	// keys handled, and at most about twice as many (plus the keys in
	// flight): once its newer half holds Capacity, it forgets the older
	// half at once. With a Store, it bounds the keys whose handler
	// succeeded but whose MarkProcessed failed (see [Idempotency]).
	//
	// The record lives as long as the process, so it catches the
	// duplicates that come soon after the first delivery: redeliveries,
	// redrives, a producer's retries. With ID keys it takes 85 to 170
	// bytes per unit of Capacity (two generations of hash tables of 32-byte
	// slots, at most three-quarters full, sized in powers of two), about
	// 1 MB at the default; each event costs about 70 ns at 10,000 keys
	// (BenchmarkMiddleware, Sync mode, beside a no-op layer), and more once
	// the record outgrows the CPU's caches. Forgetting a generation clears
	// its table under the record's lock, once every Capacity events, in
	// time that grows with Capacity. Deduplicate across restarts, or over
	// longer spans, with a Store.
	Capacity int
	// TTL is how long the in-memory record remembers a key, counted from
	// the event's publish time against the publish time of the events that
	// follow; zero means 24 hours, and a negative one is invalid (see
	// [Idempotency]).
	TTL time.Duration
}

// Idempotency makes handling effectively-once: an event whose key was
// handled successfully before in the same subscription is skipped (and
// counted as a duplicate in [Bus.Metrics]). A key is recorded only after the
// handler succeeds, so a failed attempt is retried, never mistaken for a
// duplicate; and while one delivery of a key runs, another waits for it, so
// two concurrent deliveries run the handler once (if the waiting one's
// context ends first, its attempt fails with an error that says so,
// wrapping the context's). The wait is the subscription's own, in its
// bus: buses that share a Store (replicas of a service, say, one of which
// Kafka hands a record that the other still handles, after a rebalance)
// only ask it whether a key was recorded, so deliveries of one key that
// run in two of them at once both find it not yet recorded, and each runs
// the handler. An effect that must happen once then must be idempotent
// itself.
//
// That wait has one trap, in Sync mode, where a handler's publish runs the
// next handlers in its own goroutine: a handler that publishes (directly,
// or through other Sync-mode handlers) an event with its own key to the
// subscription it runs in waits for itself, for good. Keys that name an
// operation, such as the event ID (the default) or a request ID, never do
// that; a key that names an aggregate (the event's Key, say) can, when a
// handler publishes a follow-up event of the same aggregate on its own
// topic. In Async mode the follow-up is queued and, once the first event
// is handled, skipped as a duplicate.
//
// Each subscription the middleware wraps keeps its own record. The
// in-memory record forgets keys older than the TTL or than the last
// Capacity (see [IdempotencyOptions]); a key forgotten and delivered again
// runs again. With a Store, a failing MarkProcessed (an error or a panic)
// fails the attempt, but the handler's effect happened: the record
// remembers that (for up to Capacity such keys, while the subscription
// lasts), so that the retry, or a redrive of the dead letter, only calls
// MarkProcessed again. After a restart, or past Capacity, the handler runs
// again (at-least-once).
//
// With a negative Capacity or TTL, which it has no error return to report,
// every attempt fails without running the handler, with a [Permanent]
// error wrapping [ErrInvalid] that names the option: each event goes to the
// dead-letter queue, and in Sync mode Publish returns that error.
func Idempotency(opts *IdempotencyOptions) Middleware {
	var o IdempotencyOptions
	if opts != nil {
		o = *opts
	}
	if err := o.resolve(); err != nil {
		err = Permanent(err)
		return func(EnvelopeHandler) EnvelopeHandler {
			return func(context.Context, *Envelope) error { return err }
		}
	}
	return func(next EnvelopeHandler) EnvelopeHandler {
		h := newKeyHasher()
		if o.Key != nil {
			d := newDedup(&o, h.string)
			return func(ctx context.Context, env *Envelope) error {
				if env == nil {
					// A middleware's bug, which the handler side
					// fails for good; there is no key to take.
					return next(ctx, env)
				}
				k := o.Key(env)
				if k == "" {
					return next(ctx, env)
				}
				return d.handle(ctx, env, k, next)
			}
		}
		d := newDedup(&o, h.id)
		return func(ctx context.Context, env *Envelope) error {
			if env == nil {
				// A middleware's bug, which the handler side fails
				// for good; there is no key to take.
				return next(ctx, env)
			}
			return d.handle(ctx, env, env.ID, next)
		}
	}
}

// resolve sets o's defaults, or returns an error wrapping ErrInvalid for a
// negative option.
func (o *IdempotencyOptions) resolve() error {
	switch {
	case o.Capacity < 0:
		return fmt.Errorf("%w: IdempotencyOptions.Capacity %d is negative", ErrInvalid, o.Capacity)
	case o.TTL < 0:
		return fmt.Errorf("%w: IdempotencyOptions.TTL %v is negative", ErrInvalid, o.TTL)
	}
	if o.Capacity == 0 {
		o.Capacity = 10_000
	}
	if o.TTL == 0 {
		o.TTL = 24 * time.Hour
	}
	return nil
}

// dedup is the record of one subscription, keyed by event ID or business
// key: the keys in flight (a handler runs for them), and the done ones.
//
// Both live in two generations of tables from key to the event's publish
// time (Unix nanoseconds), or to running for a key in flight. Keys go into
// cur; once it holds Capacity done keys, the next claim forgets prev and
// cur becomes prev. So the record always holds the last Capacity done keys,
// and forgetting costs nothing per key (deleting the oldest key of a large
// record one by one missed the cache for every event). A new event costs a
// probe sequence in each generation and an update in place. The tables
// hold no pointer for ID keys, so the garbage collector need not scan them.
// With a Store, they hold only the keys in flight.
//
// A key in flight has its running mark in exactly one generation: cur, or
// prev if cur turned over since its claim; a turnover moves the marks of
// the generation it forgets into the new cur.
type dedup[K comparable] struct {
	opts      *IdempotencyOptions
	hash      func(K) uint64
	mu        sync.Mutex
	cur, prev keyTable[K]
	done      int       // done keys in cur
	epoch     uint64    // counts the times cur's slots moved or cur turned over
	turned    [2]uint64 // epoch after the last turnover, and after the one before
	inFlight  int       // keys in flight
	changed   broadcast // when a key leaves flight
	// handled holds, with a Store, the keys whose handler succeeded but
	// whose MarkProcessed failed, up to Capacity of them: their next
	// delivery only records them.
	handled map[K]struct{}
}

// running marks a key in flight in the record's tables: a publish time of
// 1677 (see recordTime).
const running = math.MinInt64

// recordTime is t as the record keeps it, in Unix nanoseconds: never
// running.
func recordTime(t time.Time) int64 {
	if ns := t.UnixNano(); ns != running {
		return ns
	}
	return running + 1
}

// claimed is where a claim put its key in cur, for its release: its slot as
// of epoch, and the publish time it replaced if the key was done there but
// expired (else running).
type claimed struct {
	hash  uint64
	slot  int
	epoch uint64
	prior int64
}

func newDedup[K comparable](o *IdempotencyOptions, hash func(K) uint64) *dedup[K] {
	return &dedup[K]{opts: o, hash: hash}
}

func (d *dedup[K]) handle(ctx context.Context, env *Envelope, k K, next EnvelopeHandler) (err error) {
	done, c, err := d.claim(ctx, env, k)
	if done {
		env.skipped()
		if d.opts.Store != nil {
			d.unrecorded(k, false) // recorded after all
		}
	}
	if err != nil || done {
		return err
	}
	// Deferred, so that a handler's panic, which the worker turns into a
	// failed attempt, takes k out of flight too: the retry would otherwise
	// wait for itself.
	handled := false
	defer func() { d.release(k, c, handled, env.Time) }()
	if d.opts.Store == nil {
		err = next(ctx, env)
		handled = err == nil
		return err
	}
	if !d.unrecorded(k, false) {
		if err = next(ctx, env); err != nil {
			return err
		}
	}
	// The handler's effect has happened: deferred, so that a panic in
	// MarkProcessed, which fails the attempt as its error does, leaves
	// that remembered too.
	defer func() {
		if !handled {
			d.unrecorded(k, true)
		}
	}()
	if err = d.opts.Store.MarkProcessed(ctx, d.storeKey(env, k)); err != nil {
		return fmt.Errorf("eventbus: handled, but recording it failed: %w", err)
	}
	handled = true
	return nil
}

// unrecorded reports whether k's handler succeeded in an earlier attempt
// whose MarkProcessed failed, and forgets it; if add, it remembers that of
// k instead, while it remembers fewer than Capacity keys.
func (d *dedup[K]) unrecorded(k K, add bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if add {
		if d.handled == nil {
			d.handled = make(map[K]struct{})
		}
		if len(d.handled) < d.opts.Capacity {
			d.handled[k] = struct{}{}
		}
		return true
	}
	_, ok := d.handled[k]
	delete(d.handled, k)
	return ok
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
func (d *dedup[K]) claim(ctx context.Context, env *Envelope, k K) (bool, claimed, error) {
	now := env.Time.UnixNano()
	c := claimed{hash: d.hash(k), prior: running}
	d.mu.Lock()
	for {
		if d.done >= d.opts.Capacity {
			d.rotate()
		}
		d.room()
		i, ok := d.cur.find(c.hash, k)
		published := d.cur.slots[i].published
		if !ok {
			published, ok = d.prev.lookup(c.hash, k)
		}
		if published == running {
			ch := d.changed.wait()
			d.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				// Said, so that the attempt's error does not read as the
				// handler's, which never ran.
				return false, claimed{}, fmt.Errorf("eventbus: waited for another delivery of its idempotency key, in flight: %w", ctx.Err())
			}
			d.mu.Lock()
			continue
		}
		if ok && d.opts.Store == nil && time.Duration(now-published) <= d.opts.TTL {
			d.mu.Unlock()
			return true, claimed{}, nil
		}
		// New, or expired: k goes in flight in cur.
		if s := &d.cur.slots[i]; s.hash == 0 {
			d.cur.put(i, c.hash, k, running)
		} else {
			c.prior = s.published
			s.published = running
			d.done--
		}
		c.slot, c.epoch = i, d.epoch
		break
	}
	d.inFlight++
	d.mu.Unlock()
	if d.opts.Store == nil {
		return false, c, nil
	}
	done, err := d.processed(ctx, env, k, c)
	return done, c, err
}

// processed asks the Store whether k, claimed as c, was processed, and
// takes k out of flight if so, or if the Store fails. Deferred, so that a
// panic in the Store, which the worker turns into a failed attempt, takes
// k out of flight too, as a handler's does.
func (d *dedup[K]) processed(ctx context.Context, env *Envelope, k K, c claimed) (bool, error) {
	keep := false
	defer func() {
		if !keep {
			d.release(k, c, false, time.Time{})
		}
	}()
	done, err := d.opts.Store.Processed(ctx, d.storeKey(env, k))
	keep = err == nil && !done
	if err != nil {
		// Said, so that the attempt's error does not read as the
		// handler's, which never ran.
		err = fmt.Errorf("eventbus: ProcessedStore.Processed failed, so the handler did not run: %w", err)
	}
	return done, err
}

// rotate forgets prev and makes cur the older generation. Keys in flight
// in prev move to the new cur, so that a slow handler's key stays in
// flight however many events pass meanwhile. Callers hold mu.
func (d *dedup[K]) rotate() {
	var moved []keySlot[K]
	if d.inFlight > 0 {
		for _, s := range d.prev.slots {
			if s.hash != 0 && s.published == running {
				moved = append(moved, s)
			}
		}
	}
	d.prev.reset() // keeps its room for the next generation
	d.prev, d.cur = d.cur, d.prev
	d.done = 0
	d.epoch++
	d.turned = [2]uint64{d.epoch, d.turned[0]}
	for _, s := range moved {
		d.room()
		i, _ := d.cur.find(s.hash, s.key)
		d.cur.put(i, s.hash, s.key, running)
	}
}

// release takes k, claimed as c, out of flight, recording it as done,
// published at published, if it succeeded and there is no Store.
func (d *dedup[K]) release(k K, c claimed, ok bool, published time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
	d.changed.notify()
	done := ok && d.opts.Store == nil
	if c.prior != running && d.turned[1] > c.epoch { // two turnovers since the claim
		// The generation that held the earlier delivery's record was
		// forgotten since the claim: putting the record back would count
		// it among the last Capacity keys handled, and turn cur over early.
		c.prior = running
	}
	i, inCur := c.slot, c.epoch == d.epoch // k is still where its claim put it
	if !inCur && d.cur.n > 0 {
		i, inCur = d.cur.find(c.hash, k)
	}
	if !inCur && d.prev.n > 0 {
		// cur turned over since the claim: k's mark is in prev, which
		// holds no done key for it.
		if j, found := d.prev.find(c.hash, k); found {
			if done || c.prior == running {
				d.prev.remove(j)
			} else {
				d.prev.slots[j].published = c.prior
			}
		}
	}
	switch {
	case done:
		d.done++
		if inCur {
			d.cur.slots[i].published = recordTime(published)
			return
		}
		d.room()
		i, _ = d.cur.find(c.hash, k)
		d.cur.put(i, c.hash, k, recordTime(published))
	case !inCur:
	case c.prior != running:
		// The earlier, expired delivery stays on record, for
		// redeliveries of it that are within TTL of their own time.
		d.cur.slots[i].published = c.prior
		d.done++
	default:
		d.cur.remove(i)
		d.epoch++
	}
}

// room makes sure cur has room for one more key, noting in epoch that its
// slots moved if it grew. Callers hold mu.
func (d *dedup[K]) room() {
	if d.cur.room() {
		d.epoch++
	}
}
