package eventbus

import (
	"context"
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
			tr.finish(pos, false)
			finished[pos] = true
			want := end
			if j := slices.IndexFunc(positions, func(p uint64) bool { return !finished[p] }); j >= 0 {
				want = positions[j]
			}
			if got := tr.position(); got != want {
				t.Fatalf("seed %d: after finishing %d, position() = %d, want %d", seed, pos, got, want)
			}
		}
		tr.finish(positions[0], false) // a redriven dead letter changes nothing
		if got := tr.position(); got != end || len(tr.inflight) != 0 {
			t.Fatalf("seed %d: position() = %d with %d in flight, want %d with none", seed, got, len(tr.inflight), end)
		}
	}
}

// A dead letter that the sink failed to keep holds the checkpoint back for
// the rest of the run, while the run goes on past it (next, which WaitFor
// follows, and the positions in flight), until its redrive is handled. One
// that the sink kept never holds it back, even if a redrive of it is lost.
func TestTrackerHeldDeadLetter(t *testing.T) {
	tr := newTracker(0)
	for pos := range uint64(6) {
		tr.handOut(pos)
	}
	steps := []struct {
		pos        uint64
		held       bool
		next, want uint64 // next and the checkpoint after the step
	}{
		{0, false, 1, 1},
		{2, true, 1, 1}, // lost at 2, 1 still running
		{1, false, 3, 2},
		{4, true, 3, 2},
		{3, false, 5, 2},
		{5, false, 6, 2},
		{4, false, 6, 2}, // 4's redrive is handled: 2 still holds
		{2, true, 6, 2},  // 2's redrive is lost again
		{2, false, 6, 6}, // and kept at last
		{1, true, 6, 6},  // a redrive of a finished event lost: 1 never held it
	}
	for _, s := range steps {
		tr.finish(s.pos, s.held)
		if tr.next != s.next || tr.position() != s.want {
			t.Fatalf("after finish(%d, %t): next %d, position() %d, want %d, %d", s.pos, s.held, tr.next, tr.position(), s.next, s.want)
		}
	}
	if len(tr.inflight) != 0 || len(tr.held) != 0 {
		t.Errorf("%d positions in flight and %d held at the end, want none", len(tr.inflight), len(tr.held))
	}
	tr.handOut(6)
	tr.finish(6, true)
	tr.reset(10) // a rebuild
	if got := tr.position(); got != 10 {
		t.Errorf("position() with 6 held, after reset(10) = %d, want 10", got)
	}
}

// Workers give up on events out of order: a dead letter lost after a later
// one was lost too holds the checkpoint back all the same, at its own
// position, not at the later one's.
func TestTrackerHeldOutOfOrder(t *testing.T) {
	tr := newTracker(0)
	for pos := range uint64(3) {
		tr.handOut(pos)
	}
	steps := []struct {
		pos  uint64
		held bool
		want uint64 // the checkpoint after the step
	}{
		{2, true, 0},  // lost at 2, by one worker
		{1, true, 0},  // then at 1, by another
		{0, false, 1}, // 1 holds the checkpoint
		{1, false, 2}, // 1's redrive is handled: 2 holds it
		{2, false, 3}, // and 2's
	}
	for _, s := range steps {
		tr.finish(s.pos, s.held)
		if got := tr.position(); got != s.want {
			t.Fatalf("after finish(%d, %t): position() %d, want %d", s.pos, s.held, got, s.want)
		}
	}
}

// An event that stays in flight, its handler stuck or its retries waiting
// for hours, holds the checkpoint back while the run goes on past it: the
// tracker keeps entries for the events still in flight, not for each of
// the many finished after the stuck one meanwhile, and the checkpoint is
// the same as ever once they finish.
func TestTrackerBehindStuckEvents(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tr := newTracker(0)
	var stuck []uint64
	const n = 100_000
	for pos := range uint64(n) {
		tr.handOut(pos)
		if pos%1000 == 0 {
			stuck = append(stuck, pos)
			continue
		}
		tr.finish(pos, false)
	}
	tr.caughtUp(n)
	if got := tr.position(); got != 0 {
		t.Fatalf("position() = %d, want 0: the first stuck event", got)
	}
	if most := 10*len(stuck) + 100; cap(tr.inflight) > most || cap(tr.done) > most {
		t.Errorf("tracker holds room for %d and %d events in flight, %d of %d handed out stuck; want at most %d", cap(tr.inflight), cap(tr.done), len(stuck), n, most)
	}
	for len(stuck) > 0 {
		i := rng.IntN(len(stuck))
		tr.finish(stuck[i], false)
		stuck = slices.Delete(stuck, i, i+1)
		want := uint64(n)
		if len(stuck) > 0 {
			want = slices.Min(stuck)
		}
		if got := tr.position(); got != want {
			t.Fatalf("position() = %d with %d stuck, want %d", got, len(stuck), want)
		}
	}
}

// Passing positions that the filter skipped (pass) lets WaitFor return for
// those with no event before them still running, and leaves the
// checkpoint where it is: the skipped events a caught-up subscription
// passes, its own checkpoint saves among them, make no save due at Stop.
func TestTrackerPass(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	returns := func(tr *tracker, pos uint64) bool { return tr.waitFor(done, pos) == nil }
	tr := newTracker(0)
	tr.handOut(1)
	tr.pass(5) // 0, 2, 3 and 4 skipped
	for pos, want := range []bool{true, false, false, false, false, false} {
		if got := returns(tr, uint64(pos)); got != want {
			t.Errorf("with 1 running, past 5: waitFor(%d) returns %t, want %t", pos, got, want)
		}
	}
	tr.finish(1, false)
	for pos, want := range []bool{true, true, true, true, true, false} {
		if got := returns(tr, uint64(pos)); got != want {
			t.Errorf("with 1 finished, past 5: waitFor(%d) returns %t, want %t", pos, got, want)
		}
	}
	if got := tr.position(); got != 2 {
		t.Errorf("position() = %d, want 2: pass moves no checkpoint", got)
	}
	tr.handOut(6)
	tr.pass(8)
	if returns(tr, 7) {
		t.Errorf("with 6 running, past 8: waitFor(7) returns, want it to wait for 6")
	}
	if !returns(tr, 5) {
		t.Errorf("with 6 running, past 8: waitFor(5) waits, want it to return")
	}
	tr.reset(0) // a rebuild
	if returns(tr, 0) {
		t.Errorf("waitFor(0) after reset(0) returns, want it to wait for the new run")
	}
}
