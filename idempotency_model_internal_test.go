package eventbus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// modelHashes are hashes of the keys "0", "1", ... for the model tests:
// a good one, one of 3 values (long clusters, so removal moves slots
// back), and one of 4 values whose home slots are the last of any table
// (clusters that wrap around its end).
func modelHashes() map[string]func(string) uint64 {
	hasher := newKeyHasher()
	return map[string]func(string) uint64{
		"good": hasher.string,
		"3 hashes": func(k string) uint64 {
			n, _ := strconv.Atoi(k)
			return nonZero(uint64(n%3) * 0x5555_5555_5555_5555)
		},
		"wrapping": func(k string) uint64 {
			n, _ := strconv.Atoi(k)
			return ^uint64(n % 4)
		},
	}
}

// TestRecordModel drives an Idempotency record through long random runs
// of deliveries, redeliveries of earlier events with their own publish
// times, and successful and failed releases, while publish times advance
// past the TTL and keys stay in flight across turnovers, against a model:
// a Go map of each key's last success (its publish time) and a list of the
// last Capacity keys that succeeded. A delivery is a duplicate if its key
// succeeded within TTL of the delivery's publish time and is one of the last
// Capacity; it is not one if its key never succeeded or only longer than TTL
// before; in between the record may have forgotten it. After every step
// checkRecord checks the record's tables, and that the record holds each of
// the last Capacity keys with the publish time of its last success.
func TestRecordModel(t *testing.T) {
	for _, store := range []bool{false, true} {
		for _, capacity := range []int{1, 2, 3, 5, 8, 200} { // 200: the count of done keys lags (dedup.every)
			for name, hash := range modelHashes() {
				for _, shards := range []int{1, 8} {
					for seed := range uint64(3) {
						t.Run(fmt.Sprintf("store=%v/capacity=%d/%s/shards=%d/seed=%d", store, capacity, name, shards, seed), func(t *testing.T) {
							runRecordModel(t, store, capacity, shards, hash, rand.New(rand.NewPCG(seed, 7)), 2000)
						})
					}
				}
			}
		}
	}
}

// FuzzRecordModel runs TestRecordModel's model from a fuzzed seed.
func FuzzRecordModel(f *testing.F) {
	f.Add(uint64(1), uint8(2), uint8(0), false)
	f.Add(uint64(2), uint8(1), uint8(1), true)
	f.Add(uint64(3), uint8(3), uint8(2), false)
	f.Fuzz(func(t *testing.T, seed uint64, capacity, hash uint8, store bool) {
		names := []string{"good", "3 hashes", "wrapping"}
		runRecordModel(t, store, 1+int(capacity%9), 1<<(capacity/9%4), modelHashes()[names[int(hash)%len(names)]], rand.New(rand.NewPCG(seed, 7)), 500)
	})
}

func runRecordModel(t *testing.T, withStore bool, capacity, shards int, hash func(string) uint64, rng *rand.Rand, steps int) {
	const ttl = 10 * time.Minute
	o := &IdempotencyOptions{Capacity: capacity, TTL: ttl}
	set := processedSet{}
	if withStore {
		o.Store = set
	}
	d := newShardedDedup(o, hash, shards)
	inFlight := map[string]flight{}
	last := map[string]time.Time{} // the publish time of each key's last success
	var recent []string            // the last Capacity keys that succeeded, the latest last
	var sent []*Envelope           // the events delivered so far, to deliver again
	waits, cancel := context.WithCancel(context.Background())
	cancel() // a claim that would wait returns at once
	now := time.Unix(1_700_000_000, 0)
	keys := 3*capacity + 4
	for step := range steps {
		epochs, slots := make([]uint64, len(d.shards)), make([][]keySlot[string], len(d.shards))
		for i := range d.shards {
			epochs[i], slots[i] = d.shards[i].epoch, slices.Clone(d.shards[i].cur.slots)
		}
		var env *Envelope
		switch op := rng.IntN(10); {
		case op < 4 && len(inFlight) > 0: // a handler returns
			busy := slices.Sorted(maps.Keys(inFlight))
			k := busy[rng.IntN(len(busy))]
			f := inFlight[k]
			ok := rng.IntN(3) != 0
			if ok && withStore {
				set[k] = true
			}
			d.release(k, f.c, ok, f.env.Time)
			delete(inFlight, k)
			if ok {
				last[k] = f.env.Time
				recent = append(slices.DeleteFunc(recent, func(x string) bool { return x == k }), k)
				recent = recent[max(0, len(recent)-capacity):]
			}
		case op < 6 && len(sent) > 0: // an earlier event, delivered again
			env = sent[rng.IntN(len(sent))]
		default: // a new event
			if rng.IntN(4) == 0 {
				now = now.Add(time.Duration(rng.IntN(int(ttl/time.Second)))*time.Second/2 + 1)
			}
			env = &Envelope{Header: Header{Key: strconv.Itoa(rng.IntN(keys)), Time: now}}
			sent = append(sent, env)
		}
		if env != nil {
			k := env.Key
			dup, c, err := d.claim(waits, env, k)
			if _, busy := inFlight[k]; busy {
				if err == nil {
					t.Fatalf("step %d: a delivery of %s, in flight, did not wait", step, k)
				}
			} else {
				if err != nil {
					t.Fatalf("step %d: %s, not in flight, waits: its mark was left behind", step, k)
				}
				at, succeeded := last[k]
				within := succeeded && env.Time.Sub(at) <= ttl
				switch {
				case withStore && dup != succeeded:
					t.Fatalf("step %d: claim of %s = duplicate %v; the Store says %v", step, k, dup, succeeded)
				case withStore:
				case dup && !succeeded:
					t.Fatalf("step %d: %s taken for a duplicate, never handled", step, k)
				case dup && !within:
					t.Fatalf("step %d: %s at %v taken for a duplicate, handled at %v, longer than TTL before", step, k, env.Time, at)
				case !dup && within && slices.Contains(recent, k):
					t.Fatalf("step %d: %s forgotten, one of the last Capacity %d keys handled %v", step, k, capacity, recent)
				}
				if !dup {
					inFlight[k] = flight{c, env}
				}
			}
			// The claim turned cur over if the record's count, which lags
			// by less than every per shard, said it held Capacity.
			if done, most := d.doneKeys(), capacity+len(d.shards)*(d.every-1); done >= most {
				t.Fatalf("step %d: cur holds %d done keys after a claim, Capacity %d, at most %d", step, done, capacity, most-1)
			}
		}
		checkFlights(t, step, d, hash, inFlight)
		for j := range d.shards {
			sh := &d.shards[j]
			if sh.epoch != epochs[j] {
				continue
			}
			for i, s := range slots[j] {
				if s.hash != 0 && (i >= len(sh.cur.slots) || sh.cur.slots[i].hash != s.hash || sh.cur.slots[i].key != s.key) {
					t.Fatalf("step %d: %s left slot %d of cur in shard %d, and the epoch stayed %d", step, s.key, i, j, epochs[j])
				}
			}
		}
		for _, k := range recent {
			if _, busy := inFlight[k]; busy || withStore {
				continue
			}
			h := hash(k)
			sh := d.shard(h)
			published, ok := sh.cur.lookup(h, k)
			if !ok {
				published, ok = sh.prev.lookup(h, k)
			}
			if !ok || published != recordTime(last[k]) {
				t.Fatalf("step %d: the record has %s at %d, %v; it is one of the last Capacity %d keys handled %v, at %d", step, k, published, ok, capacity, recent, recordTime(last[k]))
			}
		}
		if held := d.held(); withStore && held != len(inFlight) {
			t.Fatalf("step %d: with a Store, the record holds %d keys, %d in flight", step, held, len(inFlight))
		}
	}
}

// flight is a key's delivery in flight in a model test: its claim, and its
// event.
type flight struct {
	c   claimed
	env *Envelope
}

// checkFlights checks that d runs the keys of inFlight, no more, and its
// tables (checkRecord).
func checkFlights(t *testing.T, step int, d *dedup[string], hash func(string) uint64, inFlight map[string]flight) {
	t.Helper()
	if d.running() != len(inFlight) {
		t.Fatalf("step %d: %d keys running, want %d", step, d.running(), len(inFlight))
	}
	claims := map[string]claimed{}
	for k, f := range inFlight {
		claims[k] = f.c
	}
	checkRecord(t, step, d, hash, claims)
}

// checkRecord checks the invariants of d's tables, given the keys in
// flight and their claims: every key is in its shard and where its hash
// finds it, the counts are right, each key in flight has exactly one
// running mark (and other keys none), no key running in prev is also in
// cur, and a claim whose epoch is its shard's points at its key's running
// mark.
func checkRecord[K comparable](t *testing.T, step int, d *dedup[K], hash func(K) uint64, inFlight map[K]claimed) {
	t.Helper()
	marks := map[K]int{}
	inCur := map[K]bool{}
	done := 0
	for j := range d.shards {
		sh := &d.shards[j]
		shardDone := 0
		for gen, tab := range map[string]*keyTable[K]{"cur": &sh.cur, "prev": &sh.prev} {
			checkKeyTable(t, step, gen, tab, hash)
			for _, s := range tab.slots {
				if s.hash == 0 {
					continue
				}
				if d.shard(s.hash) != sh {
					t.Fatalf("step %d: %v is in shard %d, not its own", step, s.key, j)
				}
				if s.published == running {
					marks[s.key]++
				}
				if gen == "cur" {
					inCur[s.key] = true
					if s.published != running {
						shardDone++
					}
				}
			}
		}
		if shardDone != sh.done {
			t.Fatalf("step %d: cur of shard %d holds %d done keys, counts %d", step, j, shardDone, sh.done)
		}
		if sh.unsaid < 0 || sh.unsaid >= d.every {
			t.Fatalf("step %d: shard %d has %d done keys unsaid, every %d", step, j, sh.unsaid, d.every)
		}
		done += shardDone - sh.unsaid
	}
	if int64(done) != d.done.Load() {
		t.Fatalf("step %d: cur holds %d done keys said, counts %d", step, done, d.done.Load())
	}
	for k, c := range inFlight {
		if marks[k] != 1 {
			t.Fatalf("step %d: %v in flight has %d running marks, want 1", step, k, marks[k])
		}
		sh := d.shard(c.hash)
		if i, ok := sh.prev.lookupSlot(c.hash, k); ok && sh.prev.slots[i].published == running && inCur[k] {
			t.Fatalf("step %d: %v runs in prev but is in cur too", step, k)
		}
		if c.epoch == sh.epoch {
			if s := sh.cur.slots[c.slot]; s.hash != c.hash || s.key != k || s.published != running {
				t.Fatalf("step %d: the claim of %v, at its shard's epoch, points at slot %d, which holds %v", step, k, c.slot, s.key)
			}
		}
	}
	if len(marks) != len(inFlight) {
		t.Fatalf("step %d: running marks %v for keys in flight %v", step, marks, inFlight)
	}
}

// running returns the number of keys in flight in d's shards.
func (d *dedup[K]) running() int {
	n := 0
	for i := range d.shards {
		n += d.shards[i].inFlight
	}
	return n
}

// doneKeys returns the number of done keys in the cur tables of d's
// shards.
func (d *dedup[K]) doneKeys() int {
	n := 0
	for i := range d.shards {
		n += d.shards[i].done
	}
	return n
}

// held returns the number of keys in d's tables.
func (d *dedup[K]) held() int {
	n := 0
	for i := range d.shards {
		n += d.shards[i].cur.n + d.shards[i].prev.n
	}
	return n
}

// lookupSlot returns the slot of k, if the table holds it.
func (t *keyTable[K]) lookupSlot(h uint64, k K) (int, bool) {
	if t.n == 0 {
		return 0, false
	}
	return t.find(h, k)
}

// checkKeyTable checks that tab counts its keys right, that each is where
// its hash finds it, and that it has room to end every probe.
func checkKeyTable[K comparable](t *testing.T, step int, name string, tab *keyTable[K], hash func(K) uint64) {
	t.Helper()
	n := 0
	for i, s := range tab.slots {
		if s.hash == 0 {
			if s != (keySlot[K]{}) {
				t.Fatalf("step %d: empty slot %d of %s holds %v", step, i, name, s)
			}
			continue
		}
		n++
		if j, ok := tab.find(hash(s.key), s.key); !ok || j != i || s.hash != hash(s.key) {
			t.Fatalf("step %d: %v in slot %d of %s is not where its hash finds it", step, s.key, i, name)
		}
	}
	if n != tab.n {
		t.Fatalf("step %d: %s holds %d keys, counts %d", step, name, n, tab.n)
	}
	if n*4 > len(tab.slots)*3 {
		t.Fatalf("step %d: %s holds %d keys in %d slots, more than three quarters", step, name, n, len(tab.slots))
	}
}

// TestRecordConcurrent delivers a few keys from many goroutines at once,
// through handlers that fail or panic at times: two deliveries of a key
// never run at once, a key is skipped only once it succeeded, a key that
// succeeded never runs again while the record can hold every key, and at
// the end no key is left in flight.
func TestRecordConcurrent(t *testing.T) {
	for _, capacity := range []int{2, 100} {
		for name, hash := range modelHashes() {
			t.Run(fmt.Sprintf("capacity=%d/%s", capacity, name), func(t *testing.T) {
				const keys, goroutines, deliveries = 12, 8, 300
				d := newShardedDedup(&IdempotencyOptions{Capacity: capacity, TTL: time.Hour}, hash, 4)
				var running, succeeded [keys]atomic.Int32
				at := time.Unix(1_700_000_000, 0)
				var wg sync.WaitGroup
				for g := range goroutines {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(g), 3))
						for range deliveries {
							n := rng.IntN(keys)
							fate := rng.IntN(6)
							ran := false
							handler := func(context.Context, *Envelope) error {
								ran = true
								if running[n].Add(1) != 1 {
									t.Errorf("two deliveries of %d run at once", n)
								}
								defer running[n].Add(-1)
								runtime.Gosched()
								switch fate {
								case 0:
									return errors.New("failed")
								case 1:
									panic("failed")
								}
								if succeeded[n].Add(1) > 1 && capacity >= keys {
									t.Errorf("%d ran again after it succeeded", n)
								}
								return nil
							}
							var err error
							func() {
								defer func() { _ = recover() }() // as the worker does
								err = d.handle(context.Background(), &Envelope{Header: Header{Time: at}}, strconv.Itoa(n), handler)
							}()
							if err == nil && !ran && succeeded[n].Load() == 0 {
								t.Errorf("%d skipped as a duplicate, never handled", n)
							}
						}
					})
				}
				wg.Wait()
				if d.running() != 0 {
					t.Fatalf("%d keys left in flight", d.running())
				}
				checkRecord(t, -1, d, hash, nil)
			})
		}
	}
}

// flakyProcessed is a ProcessedStore for many goroutines whose calls fail
// at random.
type flakyProcessed struct {
	mu   sync.Mutex
	done map[string]bool
	rng  *rand.Rand
}

func (s *flakyProcessed) Processed(_ context.Context, k IdempotencyKey) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rng.IntN(5) == 0 {
		return false, errors.New("lookup failed")
	}
	return s.done[k.Key], nil
}

func (s *flakyProcessed) MarkProcessed(_ context.Context, k IdempotencyKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rng.IntN(3) == 0 {
		return errors.New("record failed")
	}
	s.done[k.Key] = true
	return nil
}

// TestRecordConcurrentFlakyStore delivers a few keys from many goroutines
// at once through handle, over a Store whose lookups and records fail at
// random, with handlers that fail or panic at times: two deliveries of a
// key never run at once, a handler that succeeded never runs again for its
// key (a failed record is retried alone), every key ends recorded once its
// handler succeeded and a delivery after that returned nil, and no key is
// left in flight.
func TestRecordConcurrentFlakyStore(t *testing.T) {
	for name, hash := range modelHashes() {
		t.Run(name, func(t *testing.T) {
			const keys, goroutines, deliveries = 12, 8, 300
			store := &flakyProcessed{done: map[string]bool{}, rng: rand.New(rand.NewPCG(1, 2))}
			d := newShardedDedup(&IdempotencyOptions{Capacity: keys, TTL: time.Hour, Store: store}, hash, 4)
			var running, succeeded [keys]atomic.Int32
			var recorded [keys]atomic.Bool // a delivery after a success returned nil
			at := time.Unix(1_700_000_000, 0)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 5))
					for range deliveries {
						n := rng.IntN(keys)
						fate := rng.IntN(6)
						handler := func(context.Context, *Envelope) error {
							if running[n].Add(1) != 1 {
								t.Errorf("two deliveries of %d run at once", n)
							}
							defer running[n].Add(-1)
							runtime.Gosched()
							switch fate {
							case 0:
								return errors.New("failed")
							case 1:
								panic("failed")
							}
							if succeeded[n].Add(1) > 1 {
								t.Errorf("%d ran again after it succeeded", n)
							}
							return nil
						}
						var err error
						func() {
							defer func() { _ = recover() }() // as the worker does
							err = d.handle(context.Background(), &Envelope{Header: Header{Time: at}}, strconv.Itoa(n), handler)
						}()
						if err == nil && succeeded[n].Load() > 0 {
							recorded[n].Store(true)
						}
					}
				})
			}
			wg.Wait()
			if d.running() != 0 {
				t.Fatalf("%d keys left in flight", d.running())
			}
			for n := range keys {
				if recorded[n].Load() && !store.done[strconv.Itoa(n)] {
					t.Errorf("%d: a delivery after its success returned nil, and it is not recorded", n)
				}
			}
			checkRecord(t, -1, d, hash, nil)
		})
	}
}
