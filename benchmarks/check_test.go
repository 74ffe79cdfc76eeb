package benchmarks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"iter"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// TestKeyedOrder runs the keyed workload on every peer and fails if a peer
// listed as ordered delivered an event of a key after a later one, or
// twice. The others are only logged: they may keep order by chance on a
// quiet machine.
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

// TestKeyedOrderCatchesBrokenPeers runs the keyed workload on peers broken
// on purpose, through the emulation and as a peer's own keyed delivery, and
// wants every event they deliver out of order, or twice, counted, so that
// TestKeyedOrder can fail.
func TestKeyedOrderCatchesBrokenPeers(t *testing.T) {
	// A number of events per key that pairs and triples divide.
	const n = 60 * numKeys
	for _, tt := range []struct {
		name string
		open func(topics [][]func(msg), ordered bool) bus
		want int64
	}{
		// Each key's events 2 and 1, then 4 and 3, ...: half come late.
		{"swapped", openBroken(swapPairs), n / 2},
		// Each key's events 3, 1 and 2, then 6, 4 and 5, ...: 1 and 2
		// both come after 3, though 2 comes after 1.
		{"rotated", openBroken(rotateTriples), 2 * n / 3},
		// Every event twice: each second delivery is out of order.
		{"doubled", openBroken(doubled), n},
	} {
		emulated := peer{name: tt.name, open: tt.open}
		native := peer{name: tt.name, keyed: func(workers int, h func(msg)) bus {
			return tt.open([][]func(msg){{h}}, true)
		}}
		for _, p := range []peer{emulated, native} {
			if v := keyed(p, n, noClock{}); v != tt.want {
				t.Errorf("keyed(%s, own keys %v) = %d order violations in %d events, want %d",
					tt.name, p.keyed != nil, v, n, tt.want)
			}
		}
	}
}

// TestKeyedEmulationShards runs the keyed workload on a peer without keys
// of its own and wants the emulation that the README describes: every
// event of a key sent to one topic of the workers, and the keys spread
// over all of them. Events all routed to one topic keep order as well,
// and pass TestKeyedOrder, but time one worker where the table says 4.
func TestKeyedEmulationShards(t *testing.T) {
	const n = 8 * numKeys
	shards := map[int32]map[int]int{} // key -> topic -> events
	p := peer{name: "recording", open: func(topics [][]func(msg), _ bool) bus {
		if len(topics) != workers {
			t.Fatalf("keyed emulation opened %d topics, want %d", len(topics), workers)
		}
		return recording{topics: topics, shards: shards}
	}}
	if v := keyed(p, n, noClock{}); v != 0 {
		t.Fatalf("keyed(recording) = %d order violations, want 0", v)
	}
	used := map[int]bool{}
	for k := range int32(numKeys) {
		if len(shards[k]) != 1 {
			t.Errorf("key %s went to topics %v, want one", keys[k], shards[k])
		}
		for topic := range shards[k] {
			used[topic] = true
		}
	}
	if len(used) != workers {
		t.Errorf("the %d keys went to %d of the %d topics, want all", numKeys, len(used), workers)
	}
}

// TestKeyedNativeWorkers runs the first event of every key through each
// peer's own keyed delivery, with handlers that block, and wants exactly
// 4 of them to run at once: the README gives eventbus one
// subscription of 4 workers, and a harness leaving Workers at its default
// (GOMAXPROCS, 2 here) keeps order too and passes TestKeyedOrder, while
// the table's keyed figures time half the workers the peers without keys
// get. More workers than 4 would time more than the peers get, as under
// a GOMAXPROCS of 8: so exactly 4 must run, once every worker holds its
// first key's event, in a synctest bubble.
func TestKeyedNativeWorkers(t *testing.T) {
	for _, p := range peers {
		if p.keyed == nil {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var running atomic.Int32
				all := make(chan struct{})
				b := p.keyed(workers, func(msg) {
					running.Add(1)
					<-all
				})
				for k := range int32(numKeys) {
					b.Publish(0, msg{Key: keys[k], K: k, Seq: 1})
				}
				synctest.Wait() // each worker holds one key's first event; the rest queue behind
				if got := running.Load(); got != workers {
					t.Errorf("%s: %d handlers of distinct keys ran at once, want %d", p.name, got, workers)
				}
				close(all)
				b.Close()
			})
		})
	}
}

// recording is a bus that calls every handler of a topic in the
// publishing goroutine and counts, per key, the events sent to each topic.
type recording struct {
	topics [][]func(msg)
	shards map[int32]map[int]int
}

func (r recording) Publish(topic int, m msg) {
	if r.shards[m.K] == nil {
		r.shards[m.K] = map[int]int{}
	}
	r.shards[m.K][topic]++
	for _, h := range r.topics[topic] {
		h(m)
	}
}

func (recording) Close() {}

// TestKeyedReportsViolationCount runs the keyed benchmark on a peer that
// delivers one event of a run twice and wants the count of violations
// reported, 1: go test prints violations/event to seven decimals, so one
// violation in the tens of millions of events of a fast peer's run reads 0
// there, and the table would say that order held.
func TestKeyedReportsViolationCount(t *testing.T) {
	p := peer{name: "one twice", open: openBroken(oneTwice)}
	r := testing.Benchmark(func(b *testing.B) { measure(b, workloads[2], p) })
	if got := r.Extra["violations"]; got != 1 {
		t.Errorf("keyed benchmark of a peer delivering one of %d events twice reports %v violations, want 1 (%v)", r.N, got, r)
	}
}

// TestFanOutCatchesDoubledPeer runs the fan-out workloads on a peer that
// delivers every event twice and wants each extra delivery counted: the
// tallies reach n halfway through, which would stop the timer early.
func TestFanOutCatchesDoubledPeer(t *testing.T) {
	const n = 1000
	p := peer{name: "doubled", open: openBroken(doubled)}
	for _, subs := range []int{1, fanout} {
		if v := fanOut(subs)(p, n, noClock{}); v != int64(subs*n) {
			t.Errorf("fanOut(%d)(doubled) = %d extra deliveries of %d events, want %d", subs, v, n, subs*n)
		}
	}
}

// TestIdleLatencyCatchesDoubledPeer runs the idle latency workload on a
// channel peer that calls every handler twice and wants each extra
// delivery counted: each lets the next publish's wait end at once.
func TestIdleLatencyCatchesDoubledPeer(t *testing.T) {
	const n = 1000
	if v := idleLatency(doubledChannel, n, noClock{}); v != n {
		t.Errorf("idleLatency(doubled channel) = %d extra deliveries of %d events, want %d", v, n, n)
	}
}

// doubledChannel is the channel peer calling every handler twice, from
// the subscriber's goroutine: the publisher never waits on itself.
var doubledChannel = peer{name: "doubled channel", open: func(topics [][]func(msg), ordered bool) bus {
	twice := make([][]func(msg), len(topics))
	for i, hs := range topics {
		for _, h := range hs {
			twice[i] = append(twice[i], func(m msg) { h(m); h(m) })
		}
	}
	return openChannel(twice, ordered)
}}

// TestDoubledPeerFailsBenchmark runs the fan-out and idle latency
// benchmarks on a peer that delivers every event twice and wants each to
// fail, as the README says they do: the workloads count the extra
// deliveries, whose timer stopped early, but only the benchmark keeps
// their figures out of the results.
func TestDoubledPeerFailsBenchmark(t *testing.T) {
	for _, w := range workloads {
		if w.keyed { // reports its violations instead
			continue
		}
		r := testing.Benchmark(func(b *testing.B) { measure(b, w, doubledChannel) })
		if r.N != 0 {
			t.Errorf("%s benchmark of a peer delivering every event twice = %v, want it failed", w.name, r)
		}
	}
}

// openBroken returns a peer's open whose buses call every handler of a
// topic in the publishing goroutine, as deliver has them.
func openBroken(deliver func(held map[int32][]msg, m msg, to func(msg))) func([][]func(msg), bool) bus {
	return func(topics [][]func(msg), _ bool) bus {
		return &broken{topics: topics, held: map[int32][]msg{}, deliver: deliver}
	}
}

// broken is a bus that delivers as its deliver function says.
type broken struct {
	topics  [][]func(msg)
	held    map[int32][]msg // each key's events held back
	deliver func(held map[int32][]msg, m msg, to func(msg))
}

func (b *broken) Publish(topic int, m msg) {
	b.deliver(b.held, m, func(m msg) {
		for _, h := range b.topics[topic] {
			h(m)
		}
	})
}

func (*broken) Close() {}

// swapPairs holds back each key's odd events and delivers each after the
// next one of its key.
func swapPairs(held map[int32][]msg, m msg, to func(msg)) {
	holdBack(held, m, 2, to)
}

// rotateTriples holds back each key's events 1 and 2 of every three and
// delivers them, in order, after the third.
func rotateTriples(held map[int32][]msg, m msg, to func(msg)) {
	holdBack(held, m, 3, to)
}

// holdBack holds back m unless its sequence number is a multiple of every,
// in which case it delivers m, then the events of its key held back.
func holdBack(held map[int32][]msg, m msg, every uint64, to func(msg)) {
	if m.Seq%every != 0 {
		held[m.K] = append(held[m.K], m)
		return
	}
	to(m)
	for _, h := range held[m.K] {
		to(h)
	}
	held[m.K] = held[m.K][:0]
}

// oneTwice delivers the first event twice, and every other event once:
// one violation in a run of any length, -benchtime=1x too.
func oneTwice(_ map[int32][]msg, m msg, to func(msg)) {
	to(m)
	if m.K == 0 && m.Seq == 1 {
		to(m)
	}
}

// doubled delivers every event twice.
func doubled(_ map[int32][]msg, m msg, to func(msg)) {
	to(m)
	to(m)
}

// TestNoGoroutineLeft runs every workload on every peer and checks that
// the goroutines it started are gone afterwards, and that the unkeyed
// workloads handled no event twice.
func TestNoGoroutineLeft(t *testing.T) {
	for _, w := range workloads {
		for _, p := range peers {
			t.Run(w.name+"/"+p.name, func(t *testing.T) {
				before := runtime.NumGoroutine()
				if v := w.run(p, 1000, noClock{}); !w.keyed && v != 0 {
					t.Errorf("%s on %s = %d extra deliveries, want 0", w.name, p.name, v)
				}
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

// TestStorePeers runs every store workload on every store peer, small, and
// checks what the append workloads leave in the store: every event once,
// with consecutive positions and, per stream, consecutive revisions, and
// the payload as written. The read workloads check order and counts
// themselves. Every goroutine the peer started must be gone after Close.
func TestStorePeers(t *testing.T) {
	const appends = 40
	for _, w := range storeWorkloads {
		for _, p := range storePeers {
			if w.fill > 0 && p.appendOnly {
				continue
			}
			t.Run(w.name+"/"+p.name, func(t *testing.T) {
				before := runtime.NumGoroutine()
				fill := min(w.fill, 20*fixtureStreams)
				dir := t.TempDir()
				s, err := openStore(p, dir, fill)
				if err != nil {
					t.Fatal(err)
				}
				n := appends
				if fill > 0 {
					n = 2*fill + 1
				}
				if w.reopen {
					s, err = reopenStore(p, dir, s, fill, 3, noClock{})
				} else {
					err = w.run(s, fill, n, noClock{})
				}
				if err != nil {
					t.Errorf("%s on %s: %v", w.name, p.name, err)
				}
				if s != nil { // nil when a reopen failed
					if fill == 0 {
						checkAppended(t, s, appends)
					}
					closeStore(t, s)
				}
				waitGoroutines(t, before)
			})
		}
	}
}

// checkAppended checks that s holds the n events of an append workload.
func checkAppended(t *testing.T, s store, n int) {
	t.Helper()
	revisions := map[string]uint64{}
	ids := map[[16]byte]bool{}
	got := 0
	for e, err := range s.Read("") {
		if err != nil {
			t.Fatalf("Read(\"\") after %d events: %v", got, err)
		}
		if e.Position != uint64(got) || e.Revision != revisions[e.Stream] {
			t.Errorf("event %d of %q at position %d, revision %d; want %d, %d", got, e.Stream, e.Position, e.Revision, got, revisions[e.Stream])
		}
		if ids[e.ID] || e.Type != "order.placed" || !bytes.Equal(e.Data, payload) || e.Time == 0 {
			t.Errorf("event %d = %x %q %q at time %d, want a new ID, order.placed, the payload, a time", got, e.ID, e.Type, e.Data, e.Time)
		}
		revisions[e.Stream]++
		ids[e.ID] = true
		got++
	}
	if got != n {
		t.Errorf("Read(\"\") = %d events, want %d", got, n)
	}
}

// TestStorePeersDurable checks that the store peers run with the
// durability the README gives them: every commit synced (bbolt without
// NoSync and SQLite's WAL with synchronous=FULL, as the stores report it;
// the file store with SyncAlways, as the harness opened it, since the store
// does not tell) unless the peer's name ends in -nosync. A misspelt DSN
// pragma is ignored or taken as NORMAL by SQLite, without an error.
func TestStorePeersDurable(t *testing.T) {
	for _, p := range storePeers {
		t.Run(p.name, func(t *testing.T) {
			s, err := p.open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer closeStore(t, s)
			durable := !strings.HasSuffix(p.name, "-nosync")
			switch s := s.(type) {
			case fileStore:
				if (s.sync == eventbus.SyncAlways) != durable {
					t.Errorf("%s: Sync = %v, want SyncAlways: %v", p.name, s.sync, durable)
				}
			case *boltStore:
				if s.db.NoSync == durable {
					t.Errorf("%s: NoSync = %v, want %v", p.name, s.db.NoSync, !durable)
				}
			case *sqliteStore:
				var mode string
				var level int
				if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
					t.Fatal(err)
				}
				if err := s.db.QueryRow("PRAGMA synchronous").Scan(&level); err != nil {
					t.Fatal(err)
				}
				want := 0 // OFF
				if durable {
					want = 2 // FULL
				}
				if mode != "wal" || level != want {
					t.Errorf("%s: journal_mode %s, synchronous %d; want wal, %d", p.name, mode, level, want)
				}
			default:
				t.Errorf("%s: a store of type %T, which this test does not know", p.name, s)
			}
		})
	}
}

// TestStorePeersReadsKept reads every event of each store peer, and one
// stream, keeps what Read yields and checks it once the read is over: the
// store interface lets the caller keep the events, and a peer that reused
// a buffer for later events' data would hand out changed events and look
// faster than it is. The file store's events share read windows, which
// must never be reused.
func TestStorePeersReadsKept(t *testing.T) {
	const n = 30 * fixtureStreams // about 800 KiB, several read windows
	data := func(i int) []byte { return strconv.AppendInt(bytes.Clone(payload), int64(i), 10) }
	for _, p := range storePeers {
		if p.appendOnly {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			s, err := p.open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer closeStore(t, s)
			batch := make([]storeEvent, 0, fillBatch)
			for i := range n {
				// Data of its own, so that a buffer reused shows.
				e := newEvent(streamNames[i%fixtureStreams], i)
				e.Data = data(i)
				if batch = append(batch, e); len(batch) == fillBatch {
					if err := s.Append(batch); err != nil {
						t.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			for _, stream := range []string{"", streamNames[7]} {
				var kept []storeEvent
				for e, err := range s.Read(stream) {
					if err != nil {
						t.Fatalf("Read(%q): %v", stream, err)
					}
					kept = append(kept, e)
				}
				if want := n / fixtureStreams; stream != "" && len(kept) != want || stream == "" && len(kept) != n {
					t.Fatalf("Read(%q) = %d events", stream, len(kept))
				}
				for _, e := range kept {
					i := int(binary.BigEndian.Uint64(e.ID[8:])) - 1
					if want := data(i); !bytes.Equal(e.Data, want) {
						t.Fatalf("Read(%q): event %d kept has data ending %q, want %q",
							stream, i, e.Data[max(0, len(e.Data)-8):], want[len(want)-8:])
					}
				}
			}
		})
	}
}

// TestReadWorkloadsCatchBrokenStores runs the read workloads on stores
// broken on purpose and wants each run failed: the README says that they
// check the order and the number of the events they read, and a read that
// came back short, out of order or with another stream's events would
// otherwise be timed as if it had read them all. A store read as written
// passes.
func TestReadWorkloadsCatchBrokenStores(t *testing.T) {
	const fill = 20 * fixtureStreams
	evs := storedFixture(fill)
	for _, tt := range []struct {
		name      string
		breakRead func([]storeEvent) []storeEvent
		// streamOnly marks a break that only a stream's read can tell:
		// reading everything checks positions, not streams.
		streamOnly bool
	}{
		{name: "as written"},
		{name: "short", breakRead: func(evs []storeEvent) []storeEvent { return evs[:len(evs)-1] }},
		{name: "swapped", breakRead: func(evs []storeEvent) []storeEvent {
			evs[3], evs[4] = evs[4], evs[3]
			return evs
		}},
		{name: "doubled", breakRead: func(evs []storeEvent) []storeEvent {
			return append([]storeEvent{evs[0]}, evs...)
		}},
		{name: "another stream's", streamOnly: true, breakRead: func(evs []storeEvent) []storeEvent {
			other := evs[1]
			other.Stream = "other"
			return append(evs[:1:1], append([]storeEvent{other}, evs[2:]...)...)
		}},
	} {
		s := sliceStore{evs: evs, broken: tt.breakRead}
		for _, stream := range []string{"", streamNames[7]} {
			if tt.streamOnly && stream == "" {
				continue
			}
			err := readEvents(stream)(s, fill, 2*fill+1, noClock{})
			if (err == nil) != (tt.breakRead == nil) {
				t.Errorf("readEvents(%q) of a store read %s = %v, want an error: %v",
					stream, tt.name, err, tt.breakRead != nil)
			}
		}
	}
}

// storedFixture is the read fixture of fill events as a store keeps
// them, each with its position and its revision in its stream.
func storedFixture(fill int) []storeEvent {
	evs := make([]storeEvent, fill)
	revisions := map[string]uint64{}
	for i := range evs {
		e := newEvent(streamNames[i%fixtureStreams], i)
		e.Position, e.Revision = uint64(i), revisions[e.Stream]
		revisions[e.Stream]++
		evs[i] = e
	}
	return evs
}

// sliceStore is a store of events in memory whose reads broken, if set,
// changes before they are yielded.
type sliceStore struct {
	evs    []storeEvent
	broken func([]storeEvent) []storeEvent
}

func (sliceStore) Append([]storeEvent) error { return errors.New("read only") }

func (s sliceStore) Read(stream string) iter.Seq2[storeEvent, error] {
	return func(yield func(storeEvent, error) bool) {
		var read []storeEvent
		for _, e := range s.evs {
			if stream == "" || e.Stream == stream {
				read = append(read, e)
			}
		}
		if s.broken != nil {
			read = s.broken(read)
		}
		for _, e := range read {
			if !yield(e, nil) {
				return
			}
		}
	}
}

func (sliceStore) Close() error { return nil }

// TestOpenWorkloadCatchesEmptyOpen runs the Open workload on a peer whose
// open finds none of the store's events, as one opening a new file would,
// and wants the run failed: the README says that after the last open one
// stream is read back to check it, and an open that read nothing would
// otherwise be timed as the open of the whole store. A peer that finds
// them passes.
func TestOpenWorkloadCatchesEmptyOpen(t *testing.T) {
	const fill = 20 * fixtureStreams
	evs := storedFixture(fill)
	for _, tt := range []struct {
		name  string
		found []storeEvent
	}{{"finding the events", evs}, {"finding none", nil}} {
		p := storePeer{name: tt.name, open: func(string) (store, error) {
			return sliceStore{evs: tt.found}, nil
		}}
		s, err := reopenStore(p, t.TempDir(), sliceStore{evs: evs}, fill, 3, noClock{})
		if (err == nil) != (tt.found != nil) || s == nil {
			t.Errorf("reopenStore(peer %s) = %v, %v; want an error: %v", tt.name, s, err, tt.found == nil)
		}
	}
}
