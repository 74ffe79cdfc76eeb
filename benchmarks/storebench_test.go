package benchmarks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

const (
	// storeAppenders is the number of goroutines of the concurrent append
	// workload, each appending to a stream of its own.
	storeAppenders = 8
	// fixtureStreams is the number of streams of the store the read
	// workloads read, which holds fixtureEvents events (fixture_test.go),
	// round robin: each stream holds 1,000 (a hundredth), spread over it.
	fixtureStreams = 100
	// fillBatch is how many events each (untimed) append of the fixture
	// commits at once.
	fillBatch = 100
)

// payload is the data of every stored event: 256 bytes.
var payload = bytes.Repeat([]byte("0123456789abcdef"), 16)

// streamNames are the stream names, made once so that no workload pays for
// formatting them.
var streamNames = func() []string {
	ns := make([]string, fixtureStreams)
	for i := range ns {
		ns[i] = "order-" + strconv.Itoa(i)
	}
	return ns
}()

// newEvent returns the ith event of a workload, with an ID of its own,
// since every peer may treat a known ID as a retry.
func newEvent(stream string, i int) storeEvent {
	e := storeEvent{Stream: stream, Type: "order.placed", Data: payload}
	binary.BigEndian.PutUint64(e.ID[8:], uint64(i)+1)
	return e
}

// A storeWorkload runs n operations, each on one event, on an open store
// that holds fill events made by fillStore, and times them with c; or,
// with reopen, closes and opens that store n times (see reopenStore).
type storeWorkload struct {
	name   string
	fill   int
	run    func(s store, fill, n int, c clock) error
	reopen bool
}

var storeWorkloads = []storeWorkload{
	{name: "Append", run: appendEvents(1)},
	{name: "Append8", run: appendEvents(storeAppenders)},
	{name: "ReadStream", fill: fixtureEvents, run: readEvents(streamNames[7])},
	{name: "ReadAll", fill: fixtureEvents, run: readEvents("")},
	{name: "Open", fill: openFixtureEvents, reopen: true},
}

// BenchmarkStore runs every store workload over every store peer, as
// Store/<workload>/<peer>. go test's -count runs each of these that many
// times in a row, on one read fixture; run.sh runs rounds of -count 1, so
// that a burst of other work spreads over the peers.
func BenchmarkStore(b *testing.B) {
	for _, w := range storeWorkloads {
		b.Run(w.name, func(b *testing.B) { storeBenchmark(b, w) })
	}
}

// storeBenchmark runs w over every store peer, each in a directory of its
// own. ns/op and allocs/op are per event, and events/s is reported too;
// for Open, they are per open.
func storeBenchmark(b *testing.B, w storeWorkload) {
	if testing.Short() {
		// CI runs every benchmark once, with -short, to prove that it
		// runs; filling a million events in three stores proves no more
		// than filling a few.
		w.fill = min(w.fill, shortFixtureEvents)
	}
	for _, p := range storePeers {
		if w.fill > 0 && p.appendOnly {
			continue
		}
		// A filled store serves every run of b.N, and every -count, since
		// filling it takes longer than reading it, and lives in a
		// directory of the parent benchmark, which outlives the runs; an
		// empty one is made in a new directory for each run.
		var filled store
		fixtureDir := b.TempDir()
		b.Run(p.name, func(b *testing.B) {
			s := filled
			if s == nil {
				dir := fixtureDir
				if w.fill == 0 {
					dir = b.TempDir()
				}
				var err error
				if s, err = openStore(p, dir, w.fill); err != nil {
					b.Fatal(err)
				}
				if w.fill > 0 {
					filled = s
				} else {
					defer closeStore(b, s)
				}
			}
			b.ReportAllocs()
			var err error
			if w.reopen {
				s, err = reopenStore(p, fixtureDir, s, w.fill, b.N, b)
				filled = s
			} else {
				err = w.run(s, w.fill, b.N, b)
			}
			if err != nil {
				b.Fatal(err)
			}
			if !w.reopen {
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			}
		})
		if filled != nil {
			closeStore(b, filled)
		}
	}
}

func closeStore(tb testing.TB, s store) {
	if err := s.Close(); err != nil {
		tb.Error(err)
	}
}

// openStore opens p in dir and appends fill events to it, fillBatch at a
// time, round robin over fixtureStreams streams.
func openStore(p storePeer, dir string, fill int) (store, error) {
	s, err := p.open(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	batch := make([]storeEvent, 0, fillBatch)
	for i := range fill {
		batch = append(batch, newEvent(streamNames[i%fixtureStreams], i))
		if len(batch) == fillBatch || i == fill-1 {
			if err := s.Append(batch); err != nil {
				return nil, errors.Join(fmt.Errorf("%s: fill: %w", p.name, err), s.Close())
			}
			batch = batch[:0]
		}
	}
	return s, nil
}

// reopenStore closes s, the store of fill events that p keeps in dir, and
// opens it again, n times: ns/op is the time an open takes. Closing is not
// timed. It returns the store open at the end, after checking that it
// holds one stream's events.
func reopenStore(p storePeer, dir string, s store, fill, n int, c clock) (store, error) {
	c.ResetTimer()
	c.StopTimer()
	for range n {
		if err := s.Close(); err != nil {
			return nil, err
		}
		c.StartTimer()
		var err error
		s, err = p.open(dir)
		c.StopTimer()
		if err != nil {
			return nil, err
		}
	}
	got := 0
	for _, err := range s.Read(streamNames[7]) {
		if err != nil {
			return s, err
		}
		got++
	}
	if want := fill / fixtureStreams; got != want {
		return s, fmt.Errorf("reopened: %d events in %q, want %d", got, streamNames[7], want)
	}
	return s, nil
}

// appendEvents returns a workload that appends n events, one per append,
// from appenders goroutines, each to a stream of its own.
func appendEvents(appenders int) func(store, int, int, clock) error {
	return func(s store, _, n int, c clock) error {
		var next atomic.Int64
		errs := make([]error, appenders)
		var wg sync.WaitGroup
		c.ResetTimer()
		for a := range appenders {
			wg.Go(func() {
				evs := make([]storeEvent, 1)
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					evs[0] = newEvent(streamNames[a], i)
					if errs[a] = s.Append(evs); errs[a] != nil {
						return
					}
				}
			})
		}
		wg.Wait()
		c.StopTimer()
		return errors.Join(errs...)
	}
}

// readEvents returns a workload that reads n events from stream, or from
// the whole store for "", starting again at the first event after the
// last. It checks the order and the number of the events it reads.
func readEvents(stream string) func(store, int, int, clock) error {
	return func(s store, fill, n int, c clock) error {
		want := fill
		if stream != "" {
			want = fill / fixtureStreams
		}
		c.ResetTimer()
		for read := 0; read < n; {
			got := 0
			for e, err := range s.Read(stream) {
				if err != nil {
					return err
				}
				place := e.Position
				if stream != "" {
					place = e.Revision
				}
				if place != uint64(got) || stream != "" && e.Stream != stream {
					return fmt.Errorf("read %q: event %d is %q at revision %d, position %d", stream, got, e.Stream, e.Revision, e.Position)
				}
				got++
				if read++; read == n {
					break
				}
			}
			if read < n && got != want {
				return fmt.Errorf("read %q: %d events, want %d", stream, got, want)
			}
		}
		c.StopTimer()
		return nil
	}
}
