package eventbus

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The tracker's checkpoint is always the lowest position handed out and not
// finished, whatever order events finish in.
func TestTrackerContiguousPrefix(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		tr := newTracker(10)
		var positions []uint64
		for pos := uint64(10); pos < 60; pos += 1 + rng.Uint64N(3) { // gaps: filtered events
			tr.handOut(pos)
			positions = append(positions, pos)
		}
		// With all handed out finished, the checkpoint is past the last
		// one: no caughtUp reports positions after it.
		end := positions[len(positions)-1] + 1
		finished := map[uint64]bool{}
		for _, i := range rng.Perm(len(positions)) {
			pos := positions[i]
			tr.finish(pos)
			finished[pos] = true
			want := end
			if j := slices.IndexFunc(positions, func(p uint64) bool { return !finished[p] }); j >= 0 {
				want = positions[j]
			}
			if got := tr.position(); got != want {
				t.Fatalf("seed %d: after finishing %d, position() = %d, want %d", seed, pos, got, want)
			}
		}
		tr.finish(positions[0]) // a redriven dead letter changes nothing
		if got := tr.position(); got != end || len(tr.inflight) != 0 {
			t.Fatalf("seed %d: position() = %d with %d in flight, want %d with none", seed, got, len(tr.inflight), end)
		}
	}
}
