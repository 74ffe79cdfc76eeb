package eventbus

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
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
	// Capacity bounds the in-memory record of each subscription; zero means
	// 10,000 keys, and Subscribe refuses a negative one (see
	// [Idempotency]). The record always remembers the last Capacity keys
	// handled, and at most about twice as many (plus the keys in flight):
	// once its newer half holds Capacity (up to an eighth more, which it
	// counts in batches), it forgets the older half at once. With a Store,
	// it bounds the keys whose handler succeeded but whose MarkProcessed
	// failed (see [Idempotency]).
	//
	// The record lives as long as the process, so it catches the
	// duplicates that come soon after the first delivery: redeliveries,
	// redrives, a producer's retries. With ID keys it takes 85 to 170
	// bytes per unit of Capacity (two generations of hash tables of 32-byte
	// slots, at most three-quarters full, sized in powers of two), about
	// 1 MB at the default; each event costs about 120 ns at 10,000 keys
	// (BenchmarkMiddleware/idempotency, over a Sync-mode publish with no
	// middleware, on the machine of the README's figures), and more once
	// the record outgrows the CPU's caches. Forgetting a generation
	// clears its tables under all the record's locks, once every Capacity
	// events, in time that grows with Capacity. Deduplicate across restarts, or over
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
// duplicate. Only successes are skipped: a handler that fails or panics
// after its effect (a charge, say) has that effect again at the retry or
// the redrive, as does one whose success a middleware between it and
// Idempotency turns into a failure. Such an effect must come last, after
// all that can fail, or be idempotent itself (the event's ID makes a
// payment provider's idempotency key). While one delivery of a key runs,
// another waits for it, so two concurrent deliveries run the handler once
// (if the waiting one's context ends first, its attempt fails with an
// error that says so, wrapping the context's). The wait is the
// subscription's own, in its bus: buses that share a Store (replicas of a
// service, say, one of which Kafka hands a record that the other still
// handles, after a rebalance) only ask it whether a key was recorded, so
// deliveries of one key that run in two of them at once both find it not
// yet recorded, and each runs the handler. An effect that must happen once
// then must be idempotent itself.
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
// A negative Capacity or TTL, which it has no error return to report, makes
// Subscribe refuse the subscription, with an error wrapping [ErrInvalid]
// that names the option and the Middleware. (Called by hand, outside
// Subscribe, the Middleware panics with that error.)
func Idempotency(opts *IdempotencyOptions) Middleware {
	var o IdempotencyOptions
	if opts != nil {
		o = *opts
	}
	if why := o.resolve(); why != "" {
		return refuse(why)
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

// resolve sets o's defaults, or says what is invalid: a negative option.
func (o *IdempotencyOptions) resolve() (invalid string) {
	switch {
	case o.Capacity < 0:
		return fmt.Sprintf("IdempotencyOptions.Capacity %d is negative", o.Capacity)
	case o.TTL < 0:
		return fmt.Sprintf("IdempotencyOptions.TTL %v is negative", o.TTL)
	}
	if o.Capacity == 0 {
		o.Capacity = 10_000
	}
	if o.TTL == 0 {
		o.TTL = 24 * time.Hour
	}
	return ""
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
// The tables are split into shards by the keys' hashes, each under a lock
// of its own, which the claim and the release of a key take: with one lock
// for the record, the workers of a subscription waited for each other at
// every event, and a keyed subscription of 4 workers spent two fifths of
// its time there. The generations turn over together, all shards at once,
// when cur holds Capacity done keys in all: the record remembers what one
// table would.
//
// A key in flight has its running mark in exactly one generation: cur, or
// prev if cur turned over since its claim; a turnover moves the marks of
// the generation it forgets into the new cur.
type dedup[K comparable] struct {
	opts   *IdempotencyOptions
	hash   func(K) uint64
	shards []recordShard[K]
	shift  uint // a hash's top bits choose its shard: hash >> shift
	// done counts the done keys in the shards' cur, but for at most every-1
	// per shard, which a shard adds in one go, to spare most events an
	// atomic operation: never more than they hold, so that the record never
	// turns over before cur holds Capacity.
	done  atomic.Int64
	every int
	// handled holds, with a Store, the keys whose handler succeeded but
	// whose MarkProcessed failed, up to Capacity of them: their next
	// delivery only records them. Guarded by hmu.
	hmu     sync.Mutex
	handled map[K]struct{}
}

// recordShard is the part of a record that holds the keys of some hashes.
type recordShard[K comparable] struct {
	mu        sync.Mutex
	cur, prev keyTable[K]
	done      int             // done keys in cur
	unsaid    int             // of done, not yet added to dedup.done
	epoch     uint64          // counts the times cur's slots moved or cur turned over
	turned    [2]uint64       // epoch after the last turnover, and after the one before
	inFlight  int             // keys in flight
	changed   broadcast       // when a key leaves flight
	_         [cacheLine]byte // a cache line of its own for mu
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

// maxRecordShards bounds the shards of a record, of which it has 4 per P,
// rounded up to a power of two, but no more than one per 16 units of
// Capacity, the keys of a shard's smallest table, so that a small record
// stays small.
const maxRecordShards = 64

func newDedup[K comparable](o *IdempotencyOptions, hash func(K) uint64) *dedup[K] {
	perP := bits.Len(uint(min(4*runtime.GOMAXPROCS(0), maxRecordShards) - 1)) // log2, rounded up
	bySize := bits.Len(uint(max(o.Capacity/16, 1))) - 1                       // log2, rounded down
	return newShardedDedup(o, hash, 1<<min(perP, bySize))
}

// newShardedDedup returns a record of shards shards, a power of two.
func newShardedDedup[K comparable](o *IdempotencyOptions, hash func(K) uint64, shards int) *dedup[K] {
	n := uint(bits.Len(uint(shards - 1)))
	// An eighth of Capacity at most goes unsaid, over all shards.
	every := max(1, o.Capacity>>(n+3))
	return &dedup[K]{opts: o, hash: hash, shards: make([]recordShard[K], shards), shift: 64 - n, every: every}
}

// count adds n, 1 or -1, to the done keys of shard s, whose lock the caller
// holds, and to the record's count once every of them have come; at once
// for -1, so that the record's count never runs ahead.
func (d *dedup[K]) count(s *recordShard[K], n int) {
	s.done += n
	s.unsaid += n
	if n < 0 || s.unsaid >= d.every {
		d.done.Add(int64(s.unsaid))
		s.unsaid = 0
	}
}

// shard returns the shard of the keys of hash h.
func (d *dedup[K]) shard(h uint64) *recordShard[K] {
	return &d.shards[h>>d.shift] // 0 for one shard, whose shift is 64
}

// turnOver turns every shard's generations over at once, if cur holds
// Capacity done keys in all; the claim that would turn them over holds no
// shard's lock.
func (d *dedup[K]) turnOver() {
	done := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		done += s.done
		s.unsaid = 0
	}
	if done >= d.opts.Capacity {
		for i := range d.shards {
			d.shards[i].rotate()
		}
		done = 0
	}
	d.done.Store(int64(done))
	for i := range d.shards {
		d.shards[i].mu.Unlock()
	}
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
	d.hmu.Lock()
	defer d.hmu.Unlock()
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
	s := d.shard(c.hash)
	s.mu.Lock()
	for {
		if d.done.Load() >= int64(d.opts.Capacity) {
			s.mu.Unlock()
			d.turnOver()
			s.mu.Lock()
			continue
		}
		s.room()
		i, ok := s.cur.find(c.hash, k)
		published := s.cur.slots[i].published
		if !ok {
			published, ok = s.prev.lookup(c.hash, k)
		}
		if published == running {
			ch := s.changed.wait()
			s.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				// Said, so that the attempt's error does not read as the
				// handler's, which never ran.
				return false, claimed{}, fmt.Errorf("eventbus: waited for another delivery of its idempotency key, in flight: %w", ctx.Err())
			}
			s.mu.Lock()
			continue
		}
		if ok && d.opts.Store == nil && time.Duration(now-published) <= d.opts.TTL {
			s.mu.Unlock()
			return true, claimed{}, nil
		}
		// New, or expired: k goes in flight in cur.
		if slot := &s.cur.slots[i]; slot.hash == 0 {
			s.cur.put(i, c.hash, k, running)
		} else {
			c.prior = slot.published
			slot.published = running
			d.count(s, -1)
		}
		c.slot, c.epoch = i, s.epoch
		break
	}
	s.inFlight++
	s.mu.Unlock()
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
	if err != nil {
		// No answer, whatever done says: not a duplicate, and the record
		// of a handler that succeeded stays for the retry. Said, so that
		// the attempt's error does not read as the handler's, which
		// never ran.
		return false, fmt.Errorf("eventbus: ProcessedStore.Processed failed, so the handler did not run: %w", err)
	}
	keep = !done
	return done, nil
}

// rotate forgets prev and makes cur the older generation. Keys in flight
// in prev move to the new cur, so that a slow handler's key stays in
// flight however many events pass meanwhile. Callers hold mu, and turn
// every shard over at once (see dedup.turnOver).
func (s *recordShard[K]) rotate() {
	var moved []keySlot[K]
	if s.inFlight > 0 {
		for _, slot := range s.prev.slots {
			if slot.hash != 0 && slot.published == running {
				moved = append(moved, slot)
			}
		}
	}
	s.prev.reset() // keeps its room for the next generation
	s.prev, s.cur = s.cur, s.prev
	s.done = 0
	s.epoch++
	s.turned = [2]uint64{s.epoch, s.turned[0]}
	for _, slot := range moved {
		s.room()
		i, _ := s.cur.find(slot.hash, slot.key)
		s.cur.put(i, slot.hash, slot.key, running)
	}
}

// release takes k, claimed as c, out of flight, recording it as done,
// published at published, if it succeeded and there is no Store.
func (d *dedup[K]) release(k K, c claimed, ok bool, published time.Time) {
	s := d.shard(c.hash)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight--
	s.changed.notify()
	done := ok && d.opts.Store == nil
	if c.prior != running && s.turned[1] > c.epoch { // two turnovers since the claim
		// The generation that held the earlier delivery's record was
		// forgotten since the claim: putting the record back would count
		// it among the last Capacity keys handled, and turn cur over early.
		c.prior = running
	}
	i, inCur := c.slot, c.epoch == s.epoch // k is still where its claim put it
	if !inCur && s.cur.n > 0 {
		i, inCur = s.cur.find(c.hash, k)
	}
	if !inCur && s.prev.n > 0 {
		// cur turned over since the claim: k's mark is in prev, which
		// holds no done key for it.
		if j, found := s.prev.find(c.hash, k); found {
			if done || c.prior == running {
				s.prev.remove(j)
			} else {
				s.prev.slots[j].published = c.prior
			}
		}
	}
	switch {
	case done:
		d.count(s, 1)
		if inCur {
			s.cur.slots[i].published = recordTime(published)
			return
		}
		s.room()
		i, _ = s.cur.find(c.hash, k)
		s.cur.put(i, c.hash, k, recordTime(published))
	case !inCur:
	case c.prior != running:
		// The earlier, expired delivery stays on record, for
		// redeliveries of it that are within TTL of their own time.
		s.cur.slots[i].published = c.prior
		d.count(s, 1)
	default:
		s.cur.remove(i)
		s.epoch++
	}
}

// room makes sure cur has room for one more key, noting in epoch that its
// slots moved if it grew. Callers hold mu.
func (s *recordShard[K]) room() {
	if s.cur.room() {
		s.epoch++
	}
}
