package eventbus

import (
	"math/rand/v2"
	"testing"
)

// TestKeyTable runs random inserts, updates, removals and lookups on a
// keyTable against a map, with a hash of 7 values (long clusters that wrap
// around the table's end, so removal must move slots back) and with a
// good one.
func TestKeyTable(t *testing.T) {
	hasher := newKeyHasher()
	for name, hash := range map[string]func(int) uint64{
		"7 hashes": func(k int) uint64 { return nonZero(uint64(k%7) * 0x5555_5555_5555_5555) },
		"good":     func(k int) uint64 { return hasher.string(string(rune(k))) },
	} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var tab keyTable[int]
			model := map[int]int64{}
			check := func(step int) {
				if tab.n != len(model) {
					t.Fatalf("step %d: %d keys, want %d", step, tab.n, len(model))
				}
				for k, v := range model {
					if got, ok := tab.lookup(hash(k), k); !ok || got != v {
						t.Fatalf("step %d: lookup(%d) = %d, %v; want %d, true", step, k, got, ok, v)
					}
				}
			}
			for step := range 20_000 {
				k := rng.IntN(300)
				switch op := rng.IntN(8); {
				case op < 4: // insert or update
					tab.room()
					i, ok := tab.find(hash(k), k)
					if ok {
						tab.slots[i].published = int64(step)
					} else {
						tab.put(i, hash(k), k, int64(step))
					}
					model[k] = int64(step)
				case op < 7:
					_, want := model[k]
					if tab.n == 0 {
						if want {
							t.Fatalf("step %d: empty table, but %d is in the model", step, k)
						}
						continue
					}
					i, ok := tab.find(hash(k), k)
					if ok != want {
						t.Fatalf("step %d: find(%d) = %v, want %v", step, k, ok, want)
					}
					if ok {
						tab.remove(i)
						delete(model, k)
					}
				default:
					if rng.IntN(100) == 0 {
						tab.reset()
						clear(model)
					}
				}
				if step%97 == 0 {
					check(step)
				}
			}
			check(-1)
		})
	}
}

func TestKeyHasherSpreadsIDs(t *testing.T) {
	h := newKeyHasher()
	// Sequential IDs differ in a few low bytes: their hashes must still
	// fill the slots of a table evenly.
	const slots = 1 << 10
	var count [slots]int
	var id ID
	for i := range 8 * slots {
		id[14], id[15] = byte(i>>8), byte(i)
		count[h.id(id)&(slots-1)]++
	}
	for i, n := range count {
		if n > 30 {
			t.Fatalf("slot %d holds %d of %d sequential IDs; want about 8", i, n, 8*slots)
		}
	}
}

// TestKeyHasherSpreadsStreams checks that one event ID in many streams, as
// a FileStore's ID index hashes it, fills the slots of a table evenly: the
// stream number is in the hash.
func TestKeyHasherSpreadsStreams(t *testing.T) {
	h := newKeyHasher()
	const slots = 1 << 10
	var count [slots]int
	id := NewID()
	for stream := range uint32(8 * slots) {
		count[uint32(h.streamID(stream, id))&(slots-1)]++
	}
	for i, n := range count {
		if n > 30 {
			t.Fatalf("slot %d holds %d of %d streams' events of one ID; want about 8", i, n, 8*slots)
		}
	}
}
