package eventbus

import "iter"

// idTable maps 32-bit hashes to 32-bit positions, as a map[uint32]uint32
// would, in one flat array with linear probing: a FileStore's table of
// event IDs (see writer.addID) holds an entry per event kept, and filling
// it was most of the time an open took. Each entry is one uint64, the key
// in the high half and the value in the low one; a slot of 0 is empty, so
// keys are stored with their lowest bit set, and two hashes that differ in
// that bit alone are one key, which the caller, which checks every hit,
// takes as a collision. A key's probe sequence starts at a slot chosen from
// the key as stored, so equal keys always meet.
type idTable struct {
	slots []uint64 // a power of two of them, at most 3/4 full
	shift uint     // 64 minus log2(len(slots))
	n     int
}

// newIDTable returns a table with room for n entries before it grows.
func newIDTable(n int) *idTable {
	size, shift := 16, uint(60)
	for size*3/4 < n {
		size, shift = size*2, shift-1
	}
	return &idTable{slots: make([]uint64, size), shift: shift}
}

// len returns the number of entries.
func (t *idTable) len() int { return t.n }

// start returns the slot where the probe sequence of key k (stored, its
// lowest bit set) starts.
func (t *idTable) start(k uint64) int { return int(k * 0x9e3779b97f4a7c15 >> t.shift) }

// slot returns the index of h's slot, or of the empty slot where it goes,
// and h as stored.
func (t *idTable) slot(h uint32) (int, uint64) {
	k := uint64(h | 1)
	mask := len(t.slots) - 1
	for i := t.start(k); ; i = (i + 1) & mask {
		if s := t.slots[i]; s == 0 || s>>32 == k {
			return i, k
		}
	}
}

// get returns the value of h, and whether it has one.
func (t *idTable) get(h uint32) (uint32, bool) {
	i, _ := t.slot(h)
	s := t.slots[i]
	return uint32(s), s != 0
}

// put sets the value of h to v.
func (t *idTable) put(h, v uint32) {
	i, k := t.slot(h)
	if t.slots[i] == 0 {
		if (t.n+1)*4 > len(t.slots)*3 {
			t.grow()
			i, k = t.slot(h)
		}
		t.n++
	}
	t.slots[i] = k<<32 | uint64(v)
}

func (t *idTable) grow() {
	old := t.slots
	t.slots, t.shift = make([]uint64, 2*len(old)), t.shift-1
	mask := len(t.slots) - 1
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := t.start(s >> 32)
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}

// all returns the entries, keys with their lowest bit set, in no order.
func (t *idTable) all() iter.Seq2[uint32, uint32] {
	return func(yield func(uint32, uint32) bool) {
		for _, s := range t.slots {
			if s != 0 && !yield(uint32(s>>32), uint32(s)) {
				return
			}
		}
	}
}

// buildIDTable returns a table of entries, each uint64(h)<<32 | v, that
// answers lookups as putting them in order into an empty table would make
// it (its slots may be laid out otherwise), but that leaves out an entry
// whose key an earlier one has, and passes its value to again instead
// (those values come in no particular order). It puts them by the region
// of the table their probes start in, so that it writes the table from one
// end to the other instead of at random: filling a table of a million
// entries one random slot after another, each a cache and TLB miss, was
// most of the time a FileStore took to open. A stable counting sort by
// region keeps the entries of one key, which start in one slot, in order.
func buildIDTable(entries []uint64, again func(v uint32)) *idTable {
	t := newIDTable(len(entries))
	bits := 64 - t.shift
	shift := bits - min(bits, 12) // regions of len(slots)/4096 slots, a few KiB
	region := func(e uint64) int { return t.start(e>>32|1) >> shift }
	count := make([]int, 1<<(bits-shift)+1)
	for _, e := range entries {
		count[region(e)+1]++
	}
	for r := 1; r < len(count); r++ {
		count[r] += count[r-1]
	}
	sorted := make([]uint64, len(entries))
	for _, e := range entries {
		r := region(e)
		sorted[count[r]] = e
		count[r]++
	}
	for _, e := range sorted {
		i, k := t.slot(uint32(e >> 32))
		if t.slots[i] != 0 {
			again(uint32(e))
			continue
		}
		t.slots[i] = k<<32 | e&(1<<32-1)
		t.n++
	}
	return t
}
