package eventbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// processedSet is a ProcessedStore in a map, for one goroutine.
type processedSet map[string]bool

func (s processedSet) Processed(_ context.Context, k IdempotencyKey) (bool, error) {
	return s[k.Key], nil
}

func (s processedSet) MarkProcessed(_ context.Context, k IdempotencyKey) error {
	s[k.Key] = true
	return nil
}

// TestDedupModel drives an Idempotency record through random claims,
// duplicate claims of keys in flight, and successful and failed releases,
// against a model of what it must do: a duplicate is a key done before and
// not forgotten, a key is forgotten only after Capacity other keys were
// done since, a key in flight makes a duplicate wait, and a Store's answer
// is final. After every step it checks the record's tables: every key is
// where its hash finds it, each key in flight has one running mark and
// other keys none, and the count of done keys is right. Small capacities
// and a hash of 3 values make turnovers, table growth, long clusters and
// removals frequent.
func TestDedupModel(t *testing.T) {
	hasher := newKeyHasher()
	hashes := map[string]func(string) uint64{
		"3 hashes": func(k string) uint64 {
			n, _ := strconv.Atoi(k)
			return nonZero(uint64(n%3) * 0x5555_5555_5555_5555)
		},
		"good": hasher.string,
	}
	for _, store := range []bool{false, true} {
		for _, capacity := range []int{1, 2, 3, 5, 8, 13} {
			for name, hash := range hashes {
				for _, shards := range []int{1, 4} {
					for seed := range uint64(10) {
						t.Run(fmt.Sprintf("store=%v/capacity=%d/%s/shards=%d/seed=%d", store, capacity, name, shards, seed), func(t *testing.T) {
							checkDedupModel(t, store, capacity, shards, hash, seed)
						})
					}
				}
			}
		}
	}
}

func checkDedupModel(t *testing.T, withStore bool, capacity, shards int, hash func(string) uint64, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	o := &IdempotencyOptions{Capacity: capacity, TTL: time.Hour}
	set := processedSet{}
	if withStore {
		o.Store = set
	}
	d := newShardedDedup(o, hash, shards)
	inFlight := map[string]flight{}
	var doneOrder []string       // keys in the order their handlers succeeded
	lastDone := map[string]int{} // index in doneOrder of each key's last success
	waits, cancel := context.WithCancel(context.Background())
	cancel() // a claim that would wait returns at once
	at := time.Unix(1_700_000_000, 0)
	for step := range 2000 {
		k := strconv.Itoa(rng.IntN(25))
		env := &Envelope{Header: Header{Time: at}}
		if f, busy := inFlight[k]; busy {
			if rng.IntN(3) == 0 {
				if _, _, err := d.claim(waits, env, k); err == nil {
					t.Fatalf("step %d: a duplicate of %s, in flight, did not wait", step, k)
				}
			} else {
				ok := rng.IntN(4) != 0
				if ok && withStore {
					set[k] = true
				}
				d.release(k, f.c, ok, f.env.Time)
				delete(inFlight, k)
				if ok {
					doneOrder = append(doneOrder, k)
					lastDone[k] = len(doneOrder) - 1
				}
			}
		} else {
			dup, c, err := d.claim(waits, env, k)
			if err != nil {
				t.Fatalf("step %d: %s, not in flight, waits: its mark was left behind", step, k)
			}
			last, wasDone := lastDone[k]
			since := map[string]bool{} // other keys done since k was
			if wasDone {
				for _, x := range doneOrder[last+1:] {
					since[x] = x != k
				}
			}
			switch {
			case dup && !wasDone:
				t.Fatalf("step %d: %s taken for a duplicate, never done", step, k)
			case !dup && wasDone && withStore:
				t.Fatalf("step %d: %s ran again though the Store has it", step, k)
			case !dup && wasDone && len(since) < capacity:
				t.Fatalf("step %d: %s forgotten after %d other keys were done, fewer than Capacity %d", step, k, len(since), capacity)
			}
			if !dup {
				inFlight[k] = flight{c, env}
			}
		}
		checkFlights(t, step, d, hash, inFlight)
	}
}

// TestRecordShards checks how many shards a record has: 4 per P, rounded
// up to a power of two, at most maxRecordShards, and at most one per 16
// units of Capacity, rounded down to a power of two.
func TestRecordShards(t *testing.T) {
	perP := 1
	for perP < min(4*runtime.GOMAXPROCS(0), maxRecordShards) {
		perP *= 2
	}
	for capacity, want := range map[int]int{1: 1, 31: 1, 32: min(2, perP), 100: min(4, perP), 10_000: perP, 1 << 20: perP} {
		if got := len(newDedup(&IdempotencyOptions{Capacity: capacity}, newKeyHasher().string).shards); got != want {
			t.Errorf("Capacity %d: %d shards, want %d", capacity, got, want)
		}
	}
}

// TestDedupExpiry checks the TTL: a key is a duplicate only within TTL of
// its last success, and a failed run of an expired key leaves the earlier
// success on record, also when the record moved or turned over during the
// run.
func TestDedupExpiry(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	hasher := newKeyHasher()
	for name, meanwhile := range map[string]func(claim func(k string) claimed, release func(k string, c claimed, ok bool)){
		"quiet": func(func(string) claimed, func(string, claimed, bool)) {},
		"a key removed": func(claim func(string) claimed, release func(string, claimed, bool)) {
			release("j", claim("j"), false)
		},
		"a turnover": func(claim func(string) claimed, release func(string, claimed, bool)) {
			for _, k := range []string{"x", "y", "z", "w"} { // Capacity 3: w's claim turns the record over
				release(k, claim(k), true)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := &IdempotencyOptions{Capacity: 100, TTL: time.Minute}
			if name == "a turnover" {
				o.Capacity = 3
			}
			d := newDedup(o, hasher.string)
			claim := func(k string, at time.Time) (bool, claimed) {
				t.Helper()
				waits, cancel := context.WithCancel(context.Background())
				cancel() // a claim that would wait fails at once
				dup, c, err := d.claim(waits, &Envelope{Header: Header{Time: at}}, k)
				if err != nil {
					t.Fatalf("claim of %s at %v waits", k, at)
				}
				return dup, c
			}
			run := func(k string, at time.Time, ok bool) (dup bool) {
				t.Helper()
				dup, c := claim(k, at)
				if !dup {
					d.release(k, c, ok, at)
				}
				return dup
			}
			if run("k", t0, true) {
				t.Fatal("first delivery taken for a duplicate")
			}
			if !run("k", t0.Add(time.Minute), true) {
				t.Fatal("a delivery within TTL ran")
			}
			dup, c := claim("k", t0.Add(2*time.Minute))
			if dup {
				t.Fatal("a delivery after TTL was skipped")
			}
			meanwhile(func(k string) claimed {
				_, c := claim(k, t0.Add(2*time.Minute))
				return c
			}, func(k string, c claimed, ok bool) { d.release(k, c, ok, t0.Add(2*time.Minute)) })
			d.release("k", c, false, t0.Add(2*time.Minute))
			if !run("k", t0.Add(30*time.Second), true) {
				t.Fatal("after a failed run of the expired key, a redelivery within TTL of the first success ran")
			}
			// An event stamped with the time that marks keys in flight.
			old := time.Unix(0, running)
			if run("old", old, true) || !run("old", old, true) {
				t.Fatal("an event of 1677 ran twice, or not at all")
			}
		})
	}
}

// TestDedupForgetsPriorOfForgottenGeneration runs an expired key while the
// record turns over twice, so that its running mark moves to the new cur,
// and fails it: the earlier success it replaced was in a generation the
// record has forgotten since, so it must not come back and count as one
// of the last Capacity keys, which would make the next turnover forget a
// key handled only one key ago.
func TestDedupForgetsPriorOfForgottenGeneration(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	d := newDedup(&IdempotencyOptions{Capacity: 2, TTL: time.Minute}, newKeyHasher().string)
	waits, cancel := context.WithCancel(context.Background())
	cancel() // a claim that would wait fails at once
	claim := func(k string, at time.Time) (bool, claimed) {
		t.Helper()
		dup, c, err := d.claim(waits, &Envelope{Header: Header{Time: at}}, k)
		if err != nil {
			t.Fatalf("claim of %s at %v waits", k, at)
		}
		return dup, c
	}
	run := func(k string, at time.Time) {
		t.Helper()
		if dup, c := claim(k, at); !dup {
			d.release(k, c, true, at)
		}
	}
	t1 := t0.Add(2 * time.Minute)
	run("a", t0)
	dup, a := claim("a", t1) // expired: a runs, in place of its record
	if dup {
		t.Fatal("a delivery after TTL was skipped")
	}
	for _, k := range []string{"b", "c", "d", "e", "f"} { // d's and f's claims turn the record over
		run(k, t1)
	}
	d.release("a", a, false, t1)
	if dup, _ := claim("g", t1); dup { // turns the record over
		t.Fatal("g, never handled, taken for a duplicate")
	}
	if dup, _ := claim("e", t1); !dup {
		t.Fatal("e, one of the last 2 keys handled, ran again with Capacity 2")
	}
}
