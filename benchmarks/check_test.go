package benchmarks

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// TestKeyedOrder runs the keyed workload on every peer and fails if a peer
// listed as ordered delivered an event of a key after a later one. The
// others are only logged: they may keep order by chance on a quiet machine.
func TestKeyedOrder(t *testing.T) {
	const n = 20_000
	for _, p := range peers {
		t.Run(p.name, func(t *testing.T) {
			v := keyed(p, n, noClock{})
			switch {
			case p.ordered && v > 0:
				t.Errorf("keyed(%s) = %d order violations in %d events, want 0", p.name, v, n)
			case !p.ordered:
				t.Logf("keyed(%s) = %d order violations in %d events (no order promised)", p.name, v, n)
			}
		})
	}
}

// TestNoGoroutineLeft runs every workload on every peer and checks that
// the goroutines it started are gone afterwards.
func TestNoGoroutineLeft(t *testing.T) {
	for _, w := range workloads {
		for _, p := range peers {
			t.Run(w.name+"/"+p.name, func(t *testing.T) {
				before := runtime.NumGoroutine()
				w.run(p, 1000, noClock{})
				waitGoroutines(t, before)
			})
		}
	}
}

// waitGoroutines fails t unless the number of goroutines falls back to
// want within a few seconds. Some peers (vardius, cskr, kelindar, watermill)
// only tell their goroutines to stop and offer nothing to wait on, so this
// looks again until the deadline, like go.uber.org/goleak does.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			must(pprof.Lookup("goroutine").WriteTo(&buf, 1))
			t.Fatalf("%d goroutines left running, want %d:\n%s", runtime.NumGoroutine(), want, buf.String())
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
