package eventbus

import (
	"testing"
	"time"
)

// TestIDLayout makes the IDs of a run of events, some sharing a time and
// some not, as the bus does (putID with idSource.stamp), and checks their
// bytes against the layout, built here byte by byte: 48 bits of Unix
// milliseconds, big-endian, the bus's 2 random node bytes, then the 24-bit
// source number and the 40-bit count of its events.
func TestIDLayout(t *testing.T) {
	ids := newIDSource()
	t0 := time.UnixMilli(0x0123456789ab).Add(999 * time.Microsecond)
	for i, c := range []struct {
		t   time.Time
		src uint32
		n   uint64
	}{
		{t0, 0x00c0ffee, 0},
		{t0, 0x00c0ffee, 0x12_3456_789a},
		{t0.Add(time.Millisecond), 0xffc0ffee, 1<<40 - 1}, // a source past 24 bits keeps its low 24
		{t0.Add(time.Millisecond), 2, 1 << 40},            // and a count its low 40
		{t0, 3, 256},
		{time.UnixMilli(-1), 4, 5}, // stamped as 1970
	} {
		var got ID
		putID(&got, ids.stamp(c.t), c.src, c.n)
		var want ID
		ms := max(c.t.UnixMilli(), 0)
		for b := range 6 {
			want[b] = byte(ms >> (8 * (5 - b)))
		}
		want[6], want[7] = ids.node[0], ids.node[1]
		for b := range 3 {
			want[8+b] = byte(c.src >> (8 * (2 - b)))
		}
		for b := range 5 {
			want[11+b] = byte(c.n >> (8 * (4 - b)))
		}
		if got != want {
			t.Errorf("ID %d: got % x, want % x", i, got, want)
		}
	}
}
