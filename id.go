package eventbus

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// ID identifies an event. It has the layout of a ULID: a 48-bit Unix
// millisecond timestamp followed by 80 bits that make it unique, so IDs sort
// by creation time (to the millisecond) and [ID.String] is a valid ULID.
// A time before 1970 is stamped as 1970, the earliest a ULID holds.
// The zero ID means "no ID".
type ID [16]byte

// crockford is the base32 alphabet of ULIDs: no I, L, O or U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new random ID stamped with the current time. It needs no
// state and is safe for concurrent use; a [Bus] uses a cheaper generator of
// its own for published events.
func NewID() ID {
	var id ID
	putMillis(&id, time.Now())
	_, _ = rand.Read(id[6:]) // crypto/rand.Read never fails on supported platforms
	return id
}

// ParseID parses the 26-character ULID form produced by [ID.String],
// ignoring case. It returns an error wrapping [ErrInvalid] for anything else.
func ParseID(s string) (ID, error) {
	var id ID
	if err := id.UnmarshalText([]byte(s)); err != nil {
		return ID{}, err
	}
	return id, nil
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Time returns the millisecond timestamp encoded in id.
func (id ID) Time() time.Time {
	ms := int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5])
	return time.UnixMilli(ms)
}

// String returns id as 26 characters of Crockford base32 (a ULID).
func (id ID) String() string {
	b, _ := id.MarshalText()
	return string(b)
}

// MarshalText implements [encoding.TextMarshaler]; it never fails.
func (id ID) MarshalText() ([]byte, error) {
	dst := make([]byte, 26)
	// 128 bits in 26 groups of 5 bits, the first group holding 3 bits.
	hi := binary.BigEndian.Uint64(id[:8])
	lo := binary.BigEndian.Uint64(id[8:])
	for i := 25; i >= 0; i-- {
		dst[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return dst, nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] for the form written
// by [ID.MarshalText]. Bad text, or a nil id, gets an error wrapping
// [ErrInvalid], and id is left as it was.
func (id *ID) UnmarshalText(b []byte) error {
	if id == nil {
		return fmt.Errorf("%w: UnmarshalText on a nil *ID", ErrInvalid)
	}
	if len(b) != 26 {
		// A character that is not ASCII takes more than one byte: name
		// it rather than count bytes as characters.
		for i, c := range b {
			if c >= utf8.RuneSelf {
				return fmt.Errorf("%w: event ID %.32q: bad character %s at byte %d", ErrInvalid, b, charAt(b, i), i)
			}
		}
		return fmt.Errorf("%w: event ID %.32q: want 26 characters, got %d", ErrInvalid, b, len(b)) // the start of a long b is enough
	}
	var hi, lo uint64
	for i, c := range b {
		v := decodeCrockford(c)
		if v < 0 || (i == 0 && v > 7) {
			return fmt.Errorf("%w: event ID %q: bad character %s at %d", ErrInvalid, b, charAt(b, i), i)
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	binary.BigEndian.PutUint64(id[:8], hi)
	binary.BigEndian.PutUint64(id[8:], lo)
	return nil
}

func decodeCrockford(c byte) int {
	if c >= 'a' && c <= 'z' {
		c -= 'a' - 'A'
	}
	for i := range len(crockford) {
		if crockford[i] == c {
			return i
		}
	}
	return -1
}

// putMillis stamps id with t to the millisecond. A t the 48 bits cannot
// hold, before 1970 or after the year 10889, is stamped as the nearest time
// they can, so that IDs still sort by time.
func putMillis(id *ID, t time.Time) {
	ms := millis(t)
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
}

// millis returns t's Unix milliseconds as the 48 bits of an ID hold them.
func millis(t time.Time) uint64 { return uint64(min(max(t.UnixMilli(), 0), 1<<48-1)) }

// idSource makes the IDs of one bus without an atomic operation per event:
// after the millisecond time, 16 random bits chosen when the bus starts, then
// a 24-bit source number and a 40-bit count of that source's events. A source
// is a worker queue, whose count is its sequence number, kept under its lock,
// or a chunk of Sync-mode contexts, counted by its index. Source numbers start
// at a random value, so two buses' IDs collide only if 40 random bits do and
// the two publish in the same millisecond.
type idSource struct {
	node    [2]byte
	sources atomic.Uint32
}

func newIDSource() *idSource {
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	s := &idSource{node: [2]byte{seed[0], seed[1]}}
	s.sources.Store(binary.BigEndian.Uint32(seed[2:]))
	return s
}

// source returns a new source number.
func (s *idSource) source() uint32 { return s.sources.Add(1) }

// stamp returns the first half of the IDs of the events published at t,
// as a big-endian number: the millisecond time and the bus's 16 random
// bits.
func (s *idSource) stamp(t time.Time) uint64 {
	return millis(t)<<16 | uint64(s.node[0])<<8 | uint64(s.node[1])
}

// putID stamps *id as the ID of the n-th event of source src, whose
// stamp is hi, with two 8-byte stores. Built a byte at a time and copied
// out, an ID waits for its bytes to reach the cache when it is read back
// (at once, in a Sync publish), which cost about 10 ns per publish.
func putID(id *ID, hi uint64, src uint32, n uint64) {
	putHalves(id, hi, uint64(src)<<40|n&(1<<40-1))
}

// putHalves stores the halves of an ID, big-endian numbers, in *id.
func putHalves(id *ID, hi, lo uint64) {
	binary.BigEndian.PutUint64(id[:8], hi)
	binary.BigEndian.PutUint64(id[8:], lo)
}
