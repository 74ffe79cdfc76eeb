package benchmarks

import (
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

const (
	// fanout is the number of subscribers in the fan-out workload.
	fanout = 10
	// workers is the number of ordered workers in the keyed workload.
	workers = 4
	// numKeys is the number of distinct keys in the keyed workload.
	numKeys = 256
)

// keys are the ordering keys of the keyed workload, made once so that no
// workload pays for formatting them.
var keys = func() []string {
	ks := make([]string, numKeys)
	for i := range ks {
		ks[i] = "order-" + strconv.Itoa(i)
	}
	return ks
}()

// A clock times a workload; *testing.B is one, and tests pass noClock.
type clock interface {
	ResetTimer()
	StartTimer()
	StopTimer()
}

type noClock struct{}

func (noClock) ResetTimer() {}
func (noClock) StartTimer() {}
func (noClock) StopTimer()  {}

// A workload runs n events through a fresh instance of a peer, timing from
// just before the first publish to just after the last event was handled,
// and stops the instance untimed. It returns the per-key order violations
// it saw (keyed) or the deliveries beyond n per subscriber (the others);
// the benchmark fails on the latter, whose timer stopped too early.
type workload struct {
	name string
	// deliveries is how many handler calls each event makes.
	deliveries int
	// keyed marks the workload that checks per-key order.
	keyed bool
	run   func(p peer, n int, c clock) (violations int64)
}

var workloads = []workload{
	{name: "OneSubscriber", deliveries: 1, run: fanOut(1)},
	{name: "TenSubscribers", deliveries: fanout, run: fanOut(fanout)},
	{name: "Keyed", deliveries: 1, keyed: true, run: keyed},
	{name: "IdleLatency", deliveries: 1, run: idleLatency},
}

func BenchmarkOneSubscriber(b *testing.B)  { benchmark(b, workloads[0]) }
func BenchmarkTenSubscribers(b *testing.B) { benchmark(b, workloads[1]) }
func BenchmarkKeyed(b *testing.B)          { benchmark(b, workloads[2]) }
func BenchmarkIdleLatency(b *testing.B)    { benchmark(b, workloads[3]) }

// benchmark runs w over every peer.
func benchmark(b *testing.B, w workload) {
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) { measure(b, w, p) })
	}
}

// measure runs w on p. ns/op is per event; fan-out adds ns/delivery, and
// the keyed workload reports violations/event and their count,
// violations: go test prints a metric below 1 to seven decimals, so a few
// violations in the tens of millions of events of a fast peer's run read
// 0 violations/event, as if order held.
func measure(b *testing.B, w workload, p peer) {
	b.ReportAllocs()
	v := w.run(p, b.N, b)
	if !w.keyed && v != 0 {
		b.Fatalf("%s handled %d events more than once", p.name, v)
	}
	if w.deliveries > 1 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*w.deliveries), "ns/delivery")
	}
	if w.keyed {
		b.ReportMetric(float64(v)/float64(b.N), "violations/event")
		b.ReportMetric(float64(v), "violations")
	}
}

// tally counts the events one subscriber (or one group of workers) has
// handled and calls wg.Done when the count reaches target.
type tally struct {
	n      atomic.Int64
	target int64
	wg     *sync.WaitGroup
	_      [40]byte // 64 bytes in all: subscribers run in parallel
}

func (t *tally) handle(msg) {
	if t.n.Add(1) == t.target {
		t.wg.Done()
	}
}

// fanOut publishes n unkeyed events on one topic with subs subscribers,
// waits until every subscriber has handled n, and returns how many more
// than n they had handled once the peer was closed: events handled twice.
func fanOut(subs int) func(peer, int, clock) int64 {
	return func(p peer, n int, c clock) int64 {
		var wg sync.WaitGroup
		wg.Add(subs)
		tallies := make([]tally, subs)
		hs := make([]func(msg), subs)
		for i := range tallies {
			tallies[i].target, tallies[i].wg = int64(n), &wg
			hs[i] = tallies[i].handle
		}
		bus := p.open([][]func(msg){hs}, false)
		c.ResetTimer()
		for i := range n {
			bus.Publish(0, msg{Seq: uint64(i + 1)})
		}
		wg.Wait()
		c.StopTimer()
		bus.Close()
		var extra int64
		for i := range tallies {
			extra += tallies[i].n.Load() - int64(n)
		}
		return extra
	}
}

// keyed publishes n events over numKeys keys, round robin, to a peer's
// keyed delivery with workers ordered workers, and counts the events that
// a worker saw after a later event of the same key, or a second time: a
// peer that delivers an event twice would otherwise pass, and stop the
// timer before its last event.
func keyed(p peer, n int, c clock) int64 {
	var wg sync.WaitGroup
	wg.Add(1)
	t := tally{target: int64(n), wg: &wg}
	// The highest sequence number seen of each key: an event at or below
	// it came after a later one (or is seen again), even when events in
	// between went down further.
	var highest [numKeys]atomic.Uint64
	var violations atomic.Int64
	h := func(m msg) {
		if !raise(&highest[m.K], m.Seq) {
			violations.Add(1)
		}
		t.handle(m)
	}
	bus := openKeyed(p, h)
	var seq [numKeys]uint64
	c.ResetTimer()
	for i := range n {
		k := i % numKeys
		seq[k]++
		bus.Publish(0, msg{Key: keys[k], K: int32(k), Seq: seq[k]})
	}
	wg.Wait()
	c.StopTimer()
	bus.Close()
	return violations.Load()
}

// raise sets a to v if v is above it, and reports whether it was. Workers
// of a peer that loses order may handle one key at once.
func raise(a *atomic.Uint64, v uint64) bool {
	for {
		old := a.Load()
		if v <= old {
			return false
		}
		if a.CompareAndSwap(old, v) {
			return true
		}
	}
}

// openKeyed starts p's own keyed delivery, or emulates it: one topic per
// worker, each with one subscriber asked for in-order delivery, and the
// publisher routing each event by the hash of its key, as eventbus does.
func openKeyed(p peer, h func(msg)) bus {
	if p.keyed != nil {
		return p.keyed(workers, h)
	}
	topics := make([][]func(msg), workers)
	for i := range topics {
		topics[i] = []func(msg){h}
	}
	return sharded{bus: p.open(topics, true), seed: maphash.MakeSeed()}
}

// sharded routes every event to topic hash(key) % workers.
type sharded struct {
	bus
	seed maphash.Seed
}

func (s sharded) Publish(_ int, m msg) {
	s.bus.Publish(int(maphash.String(s.seed, m.Key)%workers), m)
}

// idleLatency publishes one event at a time to one subscriber and waits
// until it is handled before publishing the next. It returns the
// deliveries beyond n, each of which let a wait end early.
func idleLatency(p peer, n int, c clock) int64 {
	handled := make(chan struct{}, 1)
	bus := p.open([][]func(msg){{func(msg) { handled <- struct{}{} }}}, false)
	c.ResetTimer()
	for i := range n {
		bus.Publish(0, msg{Seq: uint64(i + 1)})
		<-handled
	}
	c.StopTimer()
	// Extra deliveries are taken while the peer closes, since one may be
	// waiting to send, and Close for its goroutine.
	var extra int64
	closed, counted := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(counted)
		for {
			select {
			case <-handled:
				extra++
			case <-closed:
				extra += int64(len(handled))
				return
			}
		}
	}()
	bus.Close()
	close(closed)
	<-counted
	return extra
}
