package eventbus

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
)

// keyTable is one generation of the Idempotency middleware's in-memory
// record: a hash table from keys to publish times (or running) with open
// addressing and linear probing, which Go's map does not offer. A lookup
// that misses ends at the empty slot where the key goes, so claiming a new
// key costs one probe sequence, not a lookup and an insert; and the slot's
// index lets the release of the key update it with no second probe, as
// long as the table has not changed shape since (see epoch). Its size is a
// power of two, at most three quarters full.
type keyTable[K comparable] struct {
	slots []keySlot[K]
	n     int // keys held
}

type keySlot[K comparable] struct {
	hash      uint64 // the key's hash, never 0; 0 marks an empty slot
	key       K
	published int64
}

// find returns the slot of k, whose hash is h, and true; or, if k is
// absent, the empty slot where it would go and false. The table must have
// slots.
func (t *keyTable[K]) find(h uint64, k K) (int, bool) {
	mask := len(t.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.hash == 0 {
			return i, false
		}
		if s.hash == h && s.key == k {
			return i, true
		}
	}
}

// lookup returns k's publish time, if the table holds k.
func (t *keyTable[K]) lookup(h uint64, k K) (int64, bool) {
	if t.n == 0 {
		return 0, false
	}
	i, ok := t.find(h, k)
	return t.slots[i].published, ok
}

// room makes sure one more key fits, growing the table if not. It reports
// whether it grew, which moves every slot.
func (t *keyTable[K]) room() bool {
	if (t.n+1)*4 <= len(t.slots)*3 {
		return false
	}
	old := t.slots
	t.slots = make([]keySlot[K], max(16, 2*len(old)))
	for i := range old {
		if s := &old[i]; s.hash != 0 {
			j, _ := t.find(s.hash, s.key)
			t.slots[j] = *s
		}
	}
	return true
}

// put sets slot i, found empty by find for k, to hold k.
func (t *keyTable[K]) put(i int, h uint64, k K, published int64) {
	t.slots[i] = keySlot[K]{hash: h, key: k, published: published}
	t.n++
}

// remove empties slot i, moving back the slots after it that would no
// longer be found past the hole (deletion in linear probing, with no
// tombstones); so it moves slots.
func (t *keyTable[K]) remove(i int) {
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].hash != 0; j = (j + 1) & mask {
		home := int(t.slots[j].hash) & mask
		// The slot at j stays if its home is cyclically in (i, j].
		if i <= j && (home <= i || home > j) || i > j && home <= i && home > j {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = keySlot[K]{}
	t.n--
}

// reset empties the table, keeping its room.
func (t *keyTable[K]) reset() {
	clear(t.slots)
	t.n = 0
}

// keyHasher hashes the keys of one record, with secret seeds of its own,
// so that keys chosen to collide in one process do not collide in another.
type keyHasher struct {
	seed   maphash.Seed
	s0, s1 uint64
}

func newKeyHasher() *keyHasher {
	seed := maphash.MakeSeed()
	return &keyHasher{seed: seed, s0: maphash.String(seed, "0"), s1: maphash.String(seed, "1")}
}

// id hashes an event ID by multiplying and folding its halves with the
// seeds, as wyhash mixes: about 2 ns, where maphash takes 8-10 for 16
// bytes. Never 0.
func (h *keyHasher) id(id ID) uint64 { return nonZero(h.streamID(0, id)) }

// streamID hashes an event ID in a stream, numbered as a FileStore numbers
// them: the stream folded in with the ID's halves before the last
// multiplication.
func (h *keyHasher) streamID(stream uint32, id ID) uint64 {
	a, b := bits.Mul64(binary.LittleEndian.Uint64(id[:8])^h.s0, binary.LittleEndian.Uint64(id[8:])^h.s1)
	x, y := bits.Mul64(a^b^h.s0^uint64(stream), 0x9E3779B97F4A7C15)
	return x ^ y
}

// string hashes a business key. Never 0.
func (h *keyHasher) string(s string) uint64 { return nonZero(maphash.String(h.seed, s)) }

func nonZero(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}
