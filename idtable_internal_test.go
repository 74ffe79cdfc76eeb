package eventbus

import (
	"math/rand/v2"
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
