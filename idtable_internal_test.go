package eventbus

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIDTableModel puts random keys, many of them again, into an idTable
// that starts small and grows, and checks every lookup and the whole
// content against a map. Keys come from a small range too, so that most
// are put again, and from both sides of the lowest bit, which the table
// does not tell apart.
func TestIDTableModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, keys := range []func() uint32{
		r.Uint32,
		func() uint32 { return r.Uint32N(5000) },
	} {
		table, model := newIDTable(0), map[uint32]uint32{}
		for range 20_000 {
			k := keys()
			want, wantOK := model[k|1]
			if got, ok := table.get(k); got != want || ok != wantOK {
				t.Fatalf("get(%#x) = %d, %v, want %d, %v", k, got, ok, want, wantOK)
			}
			v := r.Uint32()
			table.put(k, v)
			model[k|1] = v
		}
		if table.len() != len(model) {
			t.Fatalf("len() = %d, want %d", table.len(), len(model))
		}
		seen := map[uint32]uint32{}
		for k, v := range table.all() {
			seen[k] = v
		}
		if len(seen) != len(model) {
			t.Fatalf("all() gave %d entries, want %d", len(seen), len(model))
		}
		for k, v := range model {
			if seen[k] != v {
				t.Fatalf("all() gave %#x: %d, want %d", k, seen[k], v)
			}
		}
		if 4*table.len() > 3*len(table.slots) {
			t.Fatalf("%d entries in %d slots: over 3/4 full", table.len(), len(table.slots))
		}
		// A shift too large for the slots after growing still finds
		// every key, but starts them all in a fraction of the table.
		if 1<<(64-table.shift) != len(table.slots) {
			t.Fatalf("shift %d for %d slots", table.shift, len(table.slots))
		}
	}
}

// TestIDTableSizes checks that newIDTable makes room for n entries before
// growing, and no more than it needs.
func TestIDTableSizes(t *testing.T) {
	for _, n := range []int{0, 1, 12, 13, 1000, 1 << 20} {
		table := newIDTable(n)
		size := len(table.slots)
		if size*3/4 < n || size > 16 && size*3/8 >= n {
			t.Errorf("newIDTable(%d) has %d slots", n, size)
		}
		if 1<<(64-table.shift) != size {
			t.Errorf("newIDTable(%d): shift %d for %d slots", n, table.shift, size)
		}
	}
}

// TestBuildIDTable builds tables of random entries, some of one key, and
// checks them against tables made by putting the same entries one at a
// time, as addID does: the first entry of a key stays, and the later ones
// are passed on.
func TestBuildIDTable(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 100, 50_000} {
		for _, keys := range []uint32{1 << 31, 2 * uint32(n+1)} { // few repeats; many, of both lowest bits
			entries := make([]uint64, n)
			for i := range entries {
				entries[i] = uint64(r.Uint32N(keys))<<32 | uint64(i)
			}
			put := newIDTable(0)
			var wantAgain []uint32
			for _, e := range entries {
				if _, ok := put.get(uint32(e >> 32)); ok {
					wantAgain = append(wantAgain, uint32(e))
					continue
				}
				put.put(uint32(e>>32), uint32(e))
			}
			var again []uint32
			built := buildIDTable(entries, func(v uint32) { again = append(again, v) })
			slices.Sort(again) // which comes in no order
			slices.Sort(wantAgain)
			if built.len() != put.len() {
				t.Fatalf("%d entries of %d keys: len() = %d, want %d", n, keys, built.len(), put.len())
			}
			if !slices.Equal(again, wantAgain) {
				t.Fatalf("%d entries of %d keys: again got %d values, want %d (%v, want %v)", n, keys, len(again), len(wantAgain), again[:min(len(again), 5)], wantAgain[:min(len(wantAgain), 5)])
			}
			for k, v := range put.all() {
				if got, ok := built.get(k); !ok || got != v {
					t.Fatalf("%d entries of %d keys: get(%#x) = %d, %v, want %d", n, keys, k, got, ok, v)
				}
			}
			if 4*built.len() > 3*len(built.slots) {
				t.Fatalf("%d entries in %d slots: over 3/4 full", built.len(), len(built.slots))
			}
		}
	}
}
