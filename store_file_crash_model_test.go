package eventbus_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/seed-a6f1faae/eventbus"
)

// TestFileStoreCrashModel checks that a FileStore survives a power loss at
// any moment, during its recovery from one too. The model has four parts.
//
// Recording: a random workload (appends, replays of them, AppendMulti,
// deletes, tombstones, metadata, reopens) runs on a FileStore through
// recordingFS, which records every create, write, truncation, sync,
// directory sync, rename and removal the store makes, in order, each with
// the number of calls acknowledged when it was made; and on a MemoryStore,
// the reference, whose state is kept after each call.
//
// Power loss: powerLoss builds the disk that a power loss after a prefix of
// those operations leaves. Each file keeps what was synced; what was
// written since is lost, kept, cut at any byte or at a sector boundary,
// kept sector by sector (each new sector written or not), or the file
// grown with zeros in its place. Directory changes reach the disk in
// order, as a journaled file system writes them: those before the last
// sync of the directory they change, and a prefix of the rest.
//
// Check: checkImage opens each such image and requires the state after k
// calls, for some lo <= k <= acked+1, where acked is how many calls were
// acknowledged and the one in flight may have landed. Under SyncAlways lo
// is acked, and the image must open as it is. Under SyncNever lo counts the
// calls acknowledged before an open or Close returned (which flush
// everything), or before the first write or directory change not synced
// yet, whichever is more; and a *CorruptionError (a gap an unsynced write
// left) is allowed if RepairFileStore mends it. Under SyncInterval, whose
// runs go in a synctest bubble with the calls at random times, lo is as
// under SyncNever, and at least the calls acknowledged an interval before
// the crash: what the policy promises. The events must match the
// reference's exactly from the store's first position (nothing lost,
// nothing corrupted, nothing invented), as must NextPosition and every
// stream's info; then Verify must pass (in some images: it is slow), and
// an append must survive a reopen, which fails if recovery left a torn
// record in place.
//
// Crash during recovery: some images become the disk of a new phase, which
// reopens it through recordingFS, retries the call in flight, runs more
// calls, and is checked the same way: its images include every moment of
// that recovery.
//
// Besides, damage: a store closed cleanly, then a bit flipped or bytes
// overwritten, must fail to open with a *CorruptionError, or read as
// written; and RepairFileStore must keep a prefix of the events.
//
// Runs are seeded: a failure names the seed, the configuration, the crash
// point and the choices the image was built with, and the command that
// runs it again. -crashmodel.images sets how many images each
// configuration checks (over as many seeds as that takes, from
// -crashmodel.seed on).
func TestFileStoreCrashModel(t *testing.T) {
	for _, cfg := range crashConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			if cfg.sync == eventbus.SyncInterval {
				// The syncs come from the store's ticker, at times
				// that the bubble's clock makes the same in every run.
				synctest.Test(t, func(t *testing.T) { crashModel(t, cfg) })
				return
			}
			crashModel(t, cfg)
		})
	}
}

// crashModel checks the configuration cfg of TestFileStoreCrashModel.
func crashModel(t *testing.T, cfg crashConfig) {
	budget := cfg.images
	if *crashModelImages > 0 {
		budget = *crashModelImages
	} else if testing.Short() {
		budget /= 4
	}
	root := t.TempDir()
	checked, runs := 0, 0
	for seed := *crashModelSeed; checked < budget && !t.Failed(); seed++ {
		r := &crashRun{t: t, cfg: cfg, seed: seed, rng: rand.New(rand.NewPCG(seed, 0xc0ffee)), root: root}
		r.phase(nil, nil, nil, 0, cfg.crashes, "")
		checked += r.images
		runs++
	}
	t.Logf("%d runs from seed %d: %d images", runs, *crashModelSeed, checked)
}

var (
	crashModelSeed   = flag.Uint64("crashmodel.seed", 1, "TestFileStoreCrashModel: the seed of the first run")
	crashModelImages = flag.Int("crashmodel.images", 0, "TestFileStoreCrashModel: disk images to check per configuration (0: the default, a few seconds' worth)")
)

// crashConfig is a configuration of the store and of the runs.
type crashConfig struct {
	name    string
	sync    eventbus.SyncPolicy
	segSize int64
	retain  int64 // RetainSize
	// interval is the SyncInterval of sync SyncInterval; the calls
	// then come at random times, up to two intervals apart.
	interval time.Duration
	calls    int  // in a run's first phase
	zeros    bool // event data with runs of zeros, as unwritten sectors read
	crashes  int  // power-loss images of a run's first phase
	damages  int  // damaged images of a run
	images   int  // the default of -crashmodel.images
}

var crashConfigs = []crashConfig{
	{name: "always", sync: eventbus.SyncAlways, segSize: 4 << 10, calls: 80, crashes: 30, damages: 10, images: 250},
	{name: "always-retain", sync: eventbus.SyncAlways, segSize: 1 << 10, retain: 4 << 10, calls: 80, crashes: 30, damages: 10, images: 250},
	{name: "always-zeros", sync: eventbus.SyncAlways, segSize: 2 << 10, retain: 6 << 10, calls: 80, zeros: true, crashes: 30, images: 250},
	{name: "never", sync: eventbus.SyncNever, segSize: 4 << 10, calls: 80, crashes: 30, images: 250},
	{name: "never-retain", sync: eventbus.SyncNever, segSize: 1 << 10, retain: 4 << 10, calls: 80, crashes: 30, images: 250},
	{name: "interval", sync: eventbus.SyncInterval, interval: 10 * time.Millisecond, segSize: 2 << 10, calls: 80, crashes: 30, images: 250},
	{name: "interval-retain", sync: eventbus.SyncInterval, interval: 10 * time.Millisecond, segSize: 1 << 10, retain: 4 << 10, calls: 80, crashes: 30, images: 250},
}

// crashRun is one seeded run: a first phase, and those it starts from its
// crash images.
type crashRun struct {
	t      *testing.T
	cfg    crashConfig
	seed   uint64
	rng    *rand.Rand
	root   string // holds the run's directories
	images int    // checked so far
}

// failf reports a failure with what it takes to run it again.
func (r *crashRun) failf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf("seed %d: %s\nrun again: go test -race -run '^TestFileStoreCrashModel$/^%s$' -crashmodel.seed=%d -crashmodel.images=1 .",
		r.seed, fmt.Sprintf(format, args...), r.cfg.name, r.seed)
}

// dir returns the empty directory name of the run, emptying it.
func (r *crashRun) dir(name string) string {
	dir := filepath.Join(r.root, name)
	if err := os.RemoveAll(dir); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	return dir
}

// phase starts a store from the disk init (nil: none), which holds the
// state after history, retries retry (the call in flight when the crash
// that left init came) unless it is nil, runs more calls, and checks
// crashes power-loss images of moments from the open on. trail says how
// init came about.
func (r *crashRun) phase(init map[string][]byte, history []crashCall, retry *crashCall, depth, crashes int, trail string) {
	ctx := context.Background()
	dir := r.dir(fmt.Sprint("phase", depth))
	writeFiles(r.t, dir, init)
	fs := newRecordingFS(dir, init, len(history))
	first := len(fs.ops) // the first of the store's own operations

	n, damages := r.cfg.calls, r.cfg.damages
	if depth > 0 {
		n, damages = n/4, 0
	}
	calls := slices.Clone(history)
	if retry != nil {
		calls = append(calls, *retry)
	}
	calls = append(calls, crashWorkload(r.rng, n, r.cfg)...)

	// The reference's state after each call from history on.
	ref, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, c := range history {
		c.apply(ctx, ref)
	}
	states := []crashState{r.state(ref, 0)}

	var tick atomic.Int64 // a clock of its own, so that runs write the same bytes
	now := func() time.Time { return time.Unix(1_700_000_000, tick.Add(1)*int64(time.Millisecond)) }
	opts := eventbus.WithNow(crashOptions(&eventbus.FileStoreOptions{Sync: r.cfg.sync, SyncInterval: r.cfg.interval, MaxSegmentSize: r.cfg.segSize, RetainSize: r.cfg.retain}, fs), now)
	ackedAt := make([]time.Time, len(history)+1) // when the first k calls were acknowledged
	s, err := eventbus.OpenFileStore(dir, opts)
	if err != nil {
		r.failf("%sopen: %v", trail, err)
		return
	}
	fs.flushed()
	defer func() { _ = s.Close() }() // on failure; Close again is a no-op
	for i, c := range calls[len(history):] {
		k := len(history) + i
		if r.cfg.interval > 0 {
			time.Sleep(time.Duration(r.rng.Int64N(int64(2 * r.cfg.interval))))
		}
		if c.reopen {
			err = s.Close()
			if err == nil {
				s, err = eventbus.OpenFileStore(dir, opts)
			}
			if err != nil {
				r.failf("%scall %d, reopen: %v", trail, k, err)
				return
			}
			fs.flushed()
		} else if errF, errM := c.do(ctx, s), c.do(ctx, ref); (errF == nil) != (errM == nil) {
			r.failf("%scall %d, %s: FileStore: %v, MemoryStore: %v", trail, k, c.desc, errF, errM)
			return
		}
		states = append(states, r.state(ref, 0))
		fs.ack(k + 1)
		ackedAt = append(ackedAt, time.Now())
	}
	live, err := readCrashState(ctx, s)
	if err != nil {
		r.failf("%slive store: %v", trail, err)
		return
	}
	if msg := live.differs(states[len(states)-1], true); msg != "" {
		r.failf("%sthe live store differs from the reference: %s", trail, msg)
		return
	}
	if err := s.Close(); err != nil {
		r.failf("%sclose: %v", trail, err)
		return
	}
	ops := fs.ops // the store is closed: no more are recorded

	strict := r.cfg.sync == eventbus.SyncAlways
	for range crashes {
		k := first + r.rng.IntN(len(ops)-first+1)
		acked := len(calls) // the calls acknowledged at the crash
		if k < len(ops) {
			acked = ops[k].acked
		}
		lo := acked
		if !strict {
			lo = max(flushedCalls(ops[:k]), durableCalls(ops[:k], acked))
		}
		if r.cfg.interval > 0 {
			// SyncInterval's promise: a crash loses at most the last
			// interval. The crash comes just before op k: any call
			// acknowledged an interval before then is on disk.
			at := ops[min(k, len(ops)-1)].at.Add(-r.cfg.interval)
			lo = max(lo, sort.Search(len(ackedAt), func(n int) bool { return !ackedAt[n].Before(at) })-1)
		}
		files, desc := powerLoss(ops[:k], r.rng)
		r.images++
		matched, repaired, msg := r.checkImage(files, states, len(history), lo, acked, strict)
		at := fmt.Sprintf("%scrash after op %d of %d (%d calls acknowledged, in flight: %s; %s)", trail, k, len(ops), acked, inFlight(calls, acked), desc)
		if msg != "" {
			r.failf("%s: %s", at, msg)
			return
		}
		if depth < 2 && !repaired && r.rng.IntN(5) == 0 {
			// Open that image in turn, and retry the call the crash cut
			// short, if it was: again if it landed, which replays it
			// (retention may forget IDs, which a replay needs: see
			// FileStoreOptions.RetainSize).
			var again *crashCall
			if acked < len(calls) && matched >= acked && !calls[acked].reopen && r.cfg.retain == 0 {
				again = &calls[acked]
			}
			r.phase(files, calls[:matched], again, depth+1, crashes/3, fmt.Sprintf("%s; reopened holding the state after %d calls, then:\n", at, matched))
			if r.t.Failed() {
				return
			}
		}
	}
	for range damages {
		r.images++
		if msg := r.checkDamage(diskFiles(ops), states[len(states)-1]); msg != "" {
			r.failf("%s", msg)
			return
		}
	}
}

func inFlight(calls []crashCall, acked int) string {
	if acked < len(calls) {
		return calls[acked].desc
	}
	return "none"
}

// checkImage opens the disk files that a power loss left, and checks that
// it holds states[k-base], the state after k calls, for some lo <= k <=
// hi+1. Unless strict it may need a repair first. It returns k, whether a
// repair was needed, and what is wrong, or "".
func (r *crashRun) checkImage(files map[string][]byte, states []crashState, base, lo, hi int, strict bool) (k int, repaired bool, msg string) {
	ctx := context.Background()
	dir := r.writeImage(files)
	opts := crashOptions(nil, unsyncedFS{eventbus.OSFS})
	s, err := eventbus.OpenFileStore(dir, opts)
	var ce *eventbus.CorruptionError
	if err != nil && !strict && errors.As(err, &ce) {
		repaired = true
		if _, err = eventbus.RepairFileStoreFS(dir, unsyncedFS{eventbus.OSFS}); err != nil {
			return 0, true, fmt.Sprintf("open: %v; repair: %v", ce, err)
		}
		s, err = eventbus.OpenFileStore(dir, opts)
	}
	after := ""
	if repaired {
		after = fmt.Sprintf(" (after RepairFileStore, for %v)", ce)
	}
	if err != nil {
		return 0, repaired, fmt.Sprintf("open%s: %v (files %s)", after, err, fileSizes(files))
	}
	defer func() { _ = s.Close() }()
	got, err := readCrashState(ctx, s)
	if err != nil {
		return 0, repaired, fmt.Sprintf("read%s: %v", after, err)
	}
	hi = min(hi+1, base+len(states)-1)
	// The latest state it holds: a call that changed nothing leaves the
	// state of the one before.
	for k = hi; k >= lo && got.differs(states[k-base], false) != ""; {
		k--
	}
	if k < lo {
		var msgs []string
		for k := hi; k >= lo; k-- {
			msgs = append(msgs, fmt.Sprintf("after %d calls: %s", k, got.differs(states[k-base], true)))
		}
		return 0, repaired, fmt.Sprintf("the store%s (files %s) holds the state after none of calls %d to %d:\n%s", after, fileSizes(files), lo, hi, strings.Join(msgs, "\n"))
	}
	if r.rng.IntN(8) == 0 { // it reads a MiB for each segment: too slow for every image
		if err := s.Verify(ctx); err != nil {
			return 0, repaired, fmt.Sprintf("Verify: %v", err)
		}
	}
	// What recovery left must take appends, and keep them.
	id := eventbus.NewID()
	if _, err := s.Append(ctx, "z", eventbus.Any, eventbus.EventData{ID: id, Type: "t"}); err != nil {
		return 0, repaired, fmt.Sprintf("append after open: %v", err)
	}
	if err := s.Close(); err != nil {
		return 0, repaired, fmt.Sprintf("close: %v", err)
	}
	if s, err = eventbus.OpenFileStore(dir, opts); err != nil {
		return 0, repaired, fmt.Sprintf("reopen after an append: %v", err)
	}
	again, err := readCrashState(ctx, s)
	switch {
	case err != nil:
		return 0, repaired, fmt.Sprintf("read after an append and a reopen: %v", err)
	case again.next != got.next+1 || len(again.events) != len(got.events)+1 || again.events[len(got.events)].ID != id:
		return 0, repaired, fmt.Sprintf("after an append and a reopen: next position %d, %d events, want %d and %d with the append last", again.next, len(again.events), got.next+1, len(got.events)+1)
	}
	again.events, again.next = again.events[:len(got.events)], got.next
	if msg := again.differs(got, true); msg != "" {
		return 0, repaired, "after an append and a reopen: " + msg
	}
	return k, repaired, ""
}

// checkDamage damages one file of a cleanly closed store (a bit flipped,
// or bytes overwritten), which must then fail to open with a
// *CorruptionError or read as want; and after RepairFileStore it must hold
// a prefix of want's events.
func (r *crashRun) checkDamage(files map[string][]byte, want crashState) string {
	ctx := context.Background()
	name := slices.Sorted(maps.Keys(files))[r.rng.IntN(len(files))]
	b := bytes.Clone(files[name])
	if len(b) == 0 {
		return ""
	}
	var what string
	if r.rng.IntN(3) > 0 {
		i := r.rng.IntN(len(b) * 8)
		b[i/8] ^= 1 << (i % 8)
		what = fmt.Sprintf("bit %d of byte %d of %s (%d bytes) flipped", i%8, i/8, name, len(b))
	} else {
		i := r.rng.IntN(len(b))
		n := 1 + r.rng.IntN(min(16, len(b)-i))
		for j := i; j < i+n; j++ {
			b[j] = byte(r.rng.IntN(256))
		}
		what = fmt.Sprintf("%d bytes at %d of %s (%d bytes) overwritten", n, i, name, len(b))
	}
	damaged := maps.Clone(files)
	damaged[name] = b
	dir := r.writeImage(damaged)
	s, err := eventbus.OpenFileStore(dir, crashOptions(&eventbus.FileStoreOptions{ReadOnly: true}, eventbus.OSFS))
	var ce *eventbus.CorruptionError
	if err == nil {
		defer func() { _ = s.Close() }()
		got, err := readCrashState(ctx, s)
		switch {
		case errors.As(err, &ce):
			return ""
		case err != nil:
			return fmt.Sprintf("%s: read: %v", what, err)
		}
		if msg := got.differs(want, true); msg != "" {
			return fmt.Sprintf("%s: it opens without a *CorruptionError, and differs from what was written: %s", what, msg)
		}
		return ""
	}
	if !errors.As(err, &ce) {
		return fmt.Sprintf("%s: open: %v, not a *CorruptionError", what, err)
	}
	if _, err := eventbus.RepairFileStoreFS(dir, unsyncedFS{eventbus.OSFS}); err != nil {
		return fmt.Sprintf("%s: repair: %v", what, err)
	}
	if s, err = eventbus.OpenFileStore(dir, crashOptions(nil, unsyncedFS{eventbus.OSFS})); err != nil {
		return fmt.Sprintf("%s: open after a repair: %v", what, err)
	}
	defer func() { _ = s.Close() }()
	got, err := readCrashState(ctx, s)
	if err != nil {
		return fmt.Sprintf("%s: read after a repair: %v", what, err)
	}
	kept := want.from(got.first)
	if len(got.events) > len(kept) || !slices.EqualFunc(kept[:len(got.events)], got.events, sameEvent) {
		return fmt.Sprintf("%s: after a repair, the events are no prefix of those written (-written +kept):\n%s", what,
			cmp.Diff(kept, got.events, cmpopts.EquateEmpty()))
	}
	return ""
}

// crashOptions returns opts with fs, and a window for opening the
// store's small segments: the default, 4 MiB, costs more than the rest of
// the open.
func crashOptions(opts *eventbus.FileStoreOptions, fs eventbus.FS) *eventbus.FileStoreOptions {
	return eventbus.WithWindow(eventbus.WithFS(opts, fs), 16<<10)
}

// writeImage writes files to the run's image directory, and returns it.
func (r *crashRun) writeImage(files map[string][]byte) string {
	dir := r.dir("image")
	writeFiles(r.t, dir, files)
	return dir
}

// writeFiles writes files, by path relative to dir, making the
// directories they need.
func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSizes(files map[string][]byte) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		parts = append(parts, fmt.Sprintf("%s:%d", name, len(files[name])))
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------------
// Recording what the store does to its files.

// opKind is the kind of a diskOp.
type opKind uint8

const (
	opCreate  opKind = iota // a new file, named name
	opWrite                 // data at off of file ino
	opTrunc                 // file ino cut or grown to size
	opSync                  // file ino synced
	opDirSync               // directory name synced
	opRename                // name renamed to to
	opRemove                // name removed
	opMkdir                 // directory name made
	opFlushed               // not the store's: an open or Close returned, which sync everything
)

// diskOp is an operation of the store on its directory. Names are paths
// relative to the directory: a repair makes a directory in it.
type diskOp struct {
	kind     opKind
	ino      int
	name, to string
	off      int64
	data     []byte
	size     int64
	acked    int       // calls acknowledged when it was made
	at       time.Time // when it was made
}

// recordingFS is the file system of the operating system, but for fsync,
// which the model decides; it records what the store does in its
// directory and the directories it makes there, whose files it tells
// apart by inode number: names move.
type recordingFS struct {
	unsyncedFS
	dir   string
	mu    sync.Mutex
	ops   []diskOp
	acked int
	names map[string]int // of the files under dir, as the store sees them
	sizes map[int]int64  // by inode, for the offsets of appends
}

// newRecordingFS returns a recordingFS for dir, which holds the files
// init, on disk for good, and the state after acked calls.
func newRecordingFS(dir string, init map[string][]byte, acked int) *recordingFS {
	f := &recordingFS{unsyncedFS: unsyncedFS{eventbus.OSFS}, dir: filepath.Clean(dir), acked: acked, names: map[string]int{}, sizes: map[int]int64{}}
	dirs := map[string]bool{".": true}
	for _, name := range slices.Sorted(maps.Keys(init)) {
		for d := filepath.Dir(name); !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) { // parents first
		if d != "." {
			f.record(diskOp{kind: opMkdir, name: d})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(init)) {
		ino := len(f.sizes) + 1
		f.names[name], f.sizes[ino] = ino, int64(len(init[name]))
		f.record(diskOp{kind: opCreate, ino: ino, name: name})
		f.record(diskOp{kind: opWrite, ino: ino, data: bytes.Clone(init[name])})
		f.record(diskOp{kind: opSync, ino: ino})
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		f.record(diskOp{kind: opDirSync, name: d})
	}
	f.record(diskOp{kind: opFlushed})
	return f
}

// dirIno is the inode number of the directory.
const dirIno = -1

// record records op, made with f.mu held.
func (f *recordingFS) record(op diskOp) {
	op.acked, op.at = f.acked, time.Now()
	f.ops = append(f.ops, op)
}

// ack records that the first n calls were acknowledged.
func (f *recordingFS) ack(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked = n
}

// flushed records that an open or Close of the store returned.
func (f *recordingFS) flushed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(diskOp{kind: opFlushed})
}

// rel returns name as a path relative to f.dir, or an error if it is
// outside.
func (f *recordingFS) rel(name string) (string, error) {
	rel, err := filepath.Rel(f.dir, name)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("recordingFS: %s is outside the store's directory", name)
	}
	return rel, nil
}

func (f *recordingFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	file, err := f.unsyncedFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fi.IsDir() {
		return &recordedFile{File: file, fs: f, ino: dirIno, name: rel}, nil
	}
	ino, ok := f.names[rel]
	if !ok {
		if flag&os.O_CREATE == 0 {
			file.Close()
			return nil, fmt.Errorf("recordingFS: %s opened, which the store never made", name)
		}
		ino = len(f.sizes) + 1
		f.names[rel], f.sizes[ino] = ino, 0
		f.record(diskOp{kind: opCreate, ino: ino, name: rel})
	}
	if flag&os.O_TRUNC != 0 && f.sizes[ino] != 0 {
		f.sizes[ino] = 0
		f.record(diskOp{kind: opTrunc, ino: ino})
	}
	return &recordedFile{File: file, fs: f, ino: ino, append: flag&os.O_APPEND != 0}, nil
}

func (f *recordingFS) Rename(from, to string) error {
	a, err := f.rel(from)
	if err != nil {
		return err
	}
	b, err := f.rel(to)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.unsyncedFS.Rename(from, to); err != nil {
		return err
	}
	f.names[b] = f.names[a]
	delete(f.names, a)
	f.record(diskOp{kind: opRename, name: a, to: b})
	return nil
}

func (f *recordingFS) Remove(name string) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.unsyncedFS.Remove(name); err != nil {
		return err
	}
	delete(f.names, rel)
	f.record(diskOp{kind: opRemove, name: rel})
	return nil
}

func (f *recordingFS) Mkdir(name string, perm os.FileMode) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.unsyncedFS.Mkdir(name, perm); err != nil {
		return err
	}
	f.record(diskOp{kind: opMkdir, name: rel})
	return nil
}

// recordedFile is a file of a recordingFS, or a directory (ino dirIno,
// and its name).
type recordedFile struct {
	eventbus.File
	fs     *recordingFS
	ino    int
	name   string
	append bool  // opened with O_APPEND
	off    int64 // where the next write goes, if not append
}

func (f *recordedFile) Write(b []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n, err := f.File.Write(b)
	if n > 0 {
		// A File has no Seek nor Read: a file opened without
		// O_APPEND is written from its start on.
		off := f.off
		if f.append {
			off = f.fs.sizes[f.ino]
		}
		f.fs.record(diskOp{kind: opWrite, ino: f.ino, off: off, data: bytes.Clone(b[:n])})
		f.fs.sizes[f.ino] = max(f.fs.sizes[f.ino], off+int64(n))
		f.off = off + int64(n)
	}
	return n, err
}

func (f *recordedFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.ino == dirIno {
		f.fs.record(diskOp{kind: opDirSync, name: f.name})
	} else {
		f.fs.record(diskOp{kind: opSync, ino: f.ino})
	}
	return nil
}

func (f *recordedFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	f.fs.sizes[f.ino] = size
	f.fs.record(diskOp{kind: opTrunc, ino: f.ino, size: size})
	return nil
}

// unsyncedFS is the operating system's file system without fsync: for
// the model, what a sync does is bookkeeping, and skipping the disk's
// flushes makes it fast.
type unsyncedFS struct{ eventbus.FS }

func (f unsyncedFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return unsyncedFile{file}, nil
}

type unsyncedFile struct{ eventbus.File }

func (unsyncedFile) Sync() error { return nil }

// ---------------------------------------------------------------------
// The disk after a power loss.

// disk is what ops did: each file's bytes as synced and as written, and
// the directory tree as it is, with the changes made to it in order, of
// which the first synced must survive a power loss: those before a sync of
// the directory they change (a rename changes the one it moves to).
type disk struct {
	durable, written map[int][]byte
	dir              map[string]int // path -> inode, or dirIno
	changes          []diskOp
	synced           int
}

func replay(ops []diskOp) *disk {
	d := &disk{durable: map[int][]byte{}, written: map[int][]byte{}, dir: map[string]int{}}
	for _, op := range ops {
		b := d.written[op.ino]
		switch op.kind {
		case opWrite:
			end := op.off + int64(len(op.data))
			if int64(len(b)) < end {
				b = append(b, make([]byte, end-int64(len(b)))...)
			}
			copy(b[op.off:], op.data)
			d.written[op.ino] = b
		case opTrunc:
			if int64(len(b)) >= op.size {
				d.written[op.ino] = b[:op.size]
			} else {
				d.written[op.ino] = append(b, make([]byte, op.size-int64(len(b)))...)
			}
		case opSync:
			d.durable[op.ino] = bytes.Clone(b)
		case opDirSync:
			for i, c := range d.changes {
				if changedDir(c) == op.name {
					d.synced = max(d.synced, i+1)
				}
			}
		case opCreate, opRename, opRemove, opMkdir:
			applyChange(d.dir, op)
			d.changes = append(d.changes, op)
		}
	}
	return d
}

// changedDir returns the directory that change c, a create, rename,
// removal or mkdir, changes.
func changedDir(c diskOp) string {
	if c.kind == opRename {
		return filepath.Dir(c.to)
	}
	return filepath.Dir(c.name)
}

// applyChange applies c to dir, a tree of paths.
func applyChange(dir map[string]int, c diskOp) {
	switch c.kind {
	case opCreate:
		dir[c.name] = c.ino
	case opMkdir:
		dir[c.name] = dirIno
	case opRename:
		dir[c.to] = dir[c.name]
		delete(dir, c.name)
	case opRemove:
		delete(dir, c.name)
	}
}

// diskFiles returns the files after ops, every byte written.
func diskFiles(ops []diskOp) map[string][]byte {
	d := replay(ops)
	files := map[string][]byte{}
	for name, ino := range d.dir {
		if ino != dirIno {
			files[name] = bytes.Clone(d.written[ino])
		}
	}
	return files
}

// How a power loss leaves what was written to a file since its last sync.
const (
	tearLost       = iota // none of it
	tearAll               // all of it
	tearByte              // a prefix, cut at any byte
	tearSector            // a prefix, cut at a sector boundary
	tearSectors           // the file at its new size, each new sector written or not
	tearZeros             // the file at its new size, zeros in place of what was written
	tearSectorsCut        // tearSectors, the file cut at any byte past what was synced
	tearModes
)

var tearNames = [tearModes]string{"lost", "all", "byte", "sector", "sectors", "zeros", "sectors-cut"}

// powerLoss returns the files (by name) that a power loss after ops
// leaves, and the choices it made.
func powerLoss(ops []diskOp, rng *rand.Rand) (map[string][]byte, string) {
	d := replay(ops)
	// A journaled file system writes the directory changes in order:
	// a prefix of those not synced reaches the disk.
	k := rng.IntN(len(d.changes) - d.synced + 1)
	dir := map[string]int{}
	for _, c := range d.changes[:d.synced+k] {
		applyChange(dir, c)
	}
	desc := fmt.Sprintf("unsynced directory changes %d of %d", k, len(d.changes)-d.synced)
	files := map[string][]byte{}
	for _, name := range slices.Sorted(maps.Keys(dir)) {
		if dir[name] == dirIno {
			continue
		}
		durable, written := d.durable[dir[name]], d.written[dir[name]]
		if bytes.Equal(durable, written) {
			files[name] = bytes.Clone(written)
			continue
		}
		mode := rng.IntN(tearModes)
		files[name] = tear(durable, written, mode, rng)
		desc += fmt.Sprintf("; %s: %s, synced %d, written %d, left %d", name, tearNames[mode], len(durable), len(written), len(files[name]))
	}
	return files, desc
}

// tear returns a file whose bytes synced are durable, and written since,
// as a power loss leaves it, as mode says.
func tear(durable, written []byte, mode int, rng *rand.Rand) []byte {
	if len(written) < len(durable) || !bytes.HasPrefix(written, durable) {
		// A truncation since the sync (an incomplete record cut): one
		// side or the other, as the journal has it.
		if rng.IntN(2) == 0 {
			return bytes.Clone(durable)
		}
		return bytes.Clone(written)
	}
	p := len(durable) // what was written since starts there
	switch mode {
	case tearLost:
		return bytes.Clone(durable)
	case tearAll:
		return bytes.Clone(written)
	case tearByte:
		return bytes.Clone(written[:p+rng.IntN(len(written)-p+1)])
	case tearSector:
		cuts := []int{p, len(written)}
		for x := (p + sectorSize - 1) / sectorSize * sectorSize; x < len(written); x += sectorSize {
			cuts = append(cuts, x)
		}
		return bytes.Clone(written[:cuts[rng.IntN(len(cuts))]])
	case tearZeros:
		b := bytes.Clone(written)
		clear(b[p:])
		return b
	default: // tearSectors, tearSectorsCut
		b := bytes.Clone(written)
		if mode == tearSectorsCut {
			b = b[:p+rng.IntN(len(written)-p+1)]
		}
		for s := p / sectorSize * sectorSize; s < len(b); s += sectorSize {
			if rng.IntN(2) == 0 {
				// Not written: it holds what was synced, and zeros.
				clear(b[max(s, p):min(s+sectorSize, len(b))])
			}
		}
		return b
	}
}

// flushedCalls returns how many calls the store promised were on disk
// for good after ops, under SyncNever: those acknowledged before an open or
// Close returned.
func flushedCalls(ops []diskOp) int {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].kind == opFlushed {
			return ops[i].acked
		}
	}
	return 0
}

// durableCalls returns how many calls the disk after ops holds whatever a
// power loss does: those before the first whose writes, truncations or
// directory changes were not all synced by the end of ops (acked at most).
func durableCalls(ops []diskOp, acked int) int {
	first := map[int]int{} // inode -> acked of its first unsynced change
	dir := -1              // acked of the first unsynced directory change
	for _, op := range ops {
		switch op.kind {
		case opWrite, opTrunc:
			if _, ok := first[op.ino]; !ok {
				first[op.ino] = op.acked
			}
		case opSync:
			delete(first, op.ino)
		case opCreate, opRename, opRemove, opMkdir:
			if dir < 0 {
				dir = op.acked
			}
		case opDirSync:
			dir = -1
		}
	}
	for _, a := range first {
		acked = min(acked, a)
	}
	if dir >= 0 {
		acked = min(acked, dir)
	}
	return acked
}

// ---------------------------------------------------------------------
// The workload, and the state it leaves.

// crashCall is a call of the workload, to apply to a FileStore and to the
// reference alike; or a reopen of the FileStore, which the reference
// skips.
type crashCall struct {
	desc   string
	do     func(ctx context.Context, s eventbus.Store) error
	reopen bool
}

func (c crashCall) apply(ctx context.Context, s eventbus.Store) {
	if !c.reopen {
		_ = c.do(ctx, s) // what it does, error or not, the reference does too
	}
}

var crashStreams = []string{"a", "b", "c", "d", "e"}

func crashWorkload(rng *rand.Rand, n int, cfg crashConfig) []crashCall {
	var calls []crashCall
	var last []eventbus.EventData // to replay
	var lastStream string
	for range n {
		stream := crashStreams[rng.IntN(len(crashStreams))]
		switch op := rng.IntN(100); {
		case op < 55:
			evs := crashEvents(rng, 1+rng.IntN(4), cfg.zeros)
			exp := eventbus.Any
			if rng.IntN(5) == 0 {
				exp = eventbus.Exact(uint64(rng.IntN(6)))
			}
			last, lastStream = evs, stream
			calls = append(calls, crashCall{desc: fmt.Sprintf("Append(%s, %v, %d events)", stream, exp, len(evs)), do: func(ctx context.Context, s eventbus.Store) error {
				_, err := s.Append(ctx, stream, exp, evs...)
				return err
			}})
		case op < 66:
			other := crashStreams[rng.IntN(len(crashStreams))]
			parts := []eventbus.StreamAppend{{Stream: stream, Events: crashEvents(rng, 1+rng.IntN(3), cfg.zeros)}}
			if other != stream {
				parts = append(parts, eventbus.StreamAppend{Stream: other, Events: crashEvents(rng, 1+rng.IntN(3), cfg.zeros)})
			}
			calls = append(calls, crashCall{desc: fmt.Sprintf("AppendMulti(%s, %s)", stream, other), do: func(ctx context.Context, s eventbus.Store) error {
				_, err := s.AppendMulti(ctx, parts...)
				return err
			}})
		case op < 70 && last != nil && cfg.retain == 0: // retention forgets IDs
			evs, st := last, lastStream
			calls = append(calls, crashCall{desc: "replay of the last Append to " + st, do: func(ctx context.Context, s eventbus.Store) error {
				_, err := s.Append(ctx, st, eventbus.Any, evs...)
				return err
			}})
		case op < 78:
			calls = append(calls, crashCall{desc: "Delete(" + stream + ")", do: func(ctx context.Context, s eventbus.Store) error {
				return s.Delete(ctx, stream, eventbus.Any)
			}})
		case op < 81:
			calls = append(calls, crashCall{desc: "Tombstone(" + stream + ")", do: func(ctx context.Context, s eventbus.Store) error {
				return s.Tombstone(ctx, stream, eventbus.Any)
			}})
		case op < 94:
			md := eventbus.StreamMetadata{MaxCount: uint64(rng.IntN(5))}
			calls = append(calls, crashCall{desc: fmt.Sprintf("SetStreamMetadata(%s, MaxCount %d)", stream, md.MaxCount), do: func(ctx context.Context, s eventbus.Store) error {
				return s.SetStreamMetadata(ctx, stream, md)
			}})
		default:
			calls = append(calls, crashCall{desc: "reopen", reopen: true})
		}
	}
	return calls
}

func crashEvents(rng *rand.Rand, n int, zeros bool) []eventbus.EventData {
	evs := make([]eventbus.EventData, n)
	for i := range evs {
		var id eventbus.ID
		for j := range id {
			id[j] = byte(rng.IntN(256))
		}
		id[0] |= 1 // not the zero ID
		evs[i] = eventbus.EventData{ID: id, Type: "t" + strconv.Itoa(rng.IntN(3)), Data: crashData(rng, zeros)}
		if rng.IntN(4) == 0 {
			evs[i].Metadata = eventbus.Metadata{"k": strconv.Itoa(rng.IntN(100))}
		}
		if rng.IntN(4) == 0 {
			evs[i].Encoding = "deflate"
		}
	}
	return evs
}

// crashData returns event data: mostly short, sometimes spanning sectors,
// and with zeros runs of up to two sectors if zeros is set.
func crashData(rng *rand.Rand, zeros bool) []byte {
	var n int
	switch rng.IntN(10) {
	case 0:
	case 1, 2:
		n = 500 + rng.IntN(2500)
	default:
		n = rng.IntN(300)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(1 + rng.IntN(255))
	}
	if zeros && n > 0 && rng.IntN(4) == 0 {
		i := rng.IntN(n)
		clear(b[i:min(n, i+rng.IntN(1200))])
	}
	return b
}

// crashState is what a store holds: its events from first on (their
// Time cleared), where the next one goes, and the info of every stream of
// the workload.
type crashState struct {
	events      []eventbus.RecordedEvent
	first, next uint64
	infos       map[string]eventbus.StreamInfo
}

// state returns the state of the reference s, failing the test if it
// cannot be read.
func (r *crashRun) state(s eventbus.Store, first uint64) crashState {
	st, err := readState(context.Background(), s, first)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// readCrashState returns the state of a FileStore.
func readCrashState(ctx context.Context, s *eventbus.FileStore) (crashState, error) {
	st, err := readState(ctx, s, s.Stats().FirstPosition)
	st.next = s.Stats().NextPosition
	return st, err
}

func readState(ctx context.Context, s eventbus.Store, first uint64) (crashState, error) {
	st := crashState{first: first, next: first, infos: map[string]eventbus.StreamInfo{}}
	for e, err := range s.ReadAll(ctx, nil) {
		if err != nil {
			return st, err
		}
		e.Time = time.Time{} // for cmp.Diff: sameEvent ignores it
		st.events = append(st.events, e)
		st.next = e.Position + 1
	}
	for _, name := range crashStreams {
		info, err := s.StreamInfo(ctx, name)
		if err != nil {
			return st, err
		}
		st.infos[name] = info
	}
	return st, nil
}

// from returns the events of st from position first on.
func (st crashState) from(first uint64) []eventbus.RecordedEvent {
	i := slices.IndexFunc(st.events, func(e eventbus.RecordedEvent) bool { return e.Position >= first })
	if i < 0 {
		return nil
	}
	return st.events[i:]
}

// sameEvent reports whether a and b are the same event: every field but
// Time. It compares many times faster than reflect.DeepEqual, which
// matters with thousands of images of hundreds of events each.
func sameEvent(a, b eventbus.RecordedEvent) bool {
	return a.ID == b.ID && a.Type == b.Type && a.SchemaVersion == b.SchemaVersion && a.Encoding == b.Encoding &&
		a.CorrelationID == b.CorrelationID && a.CausationID == b.CausationID &&
		maps.Equal(a.Metadata, b.Metadata) && bytes.Equal(a.Data, b.Data) &&
		a.Stream == b.Stream && a.Revision == b.Revision && a.Position == b.Position
}

// differs says how got, a FileStore's state, differs from want, the
// reference's, from got's first position on, in detail if diff is set;
// "" if it does not.
func (got crashState) differs(want crashState, diff bool) string {
	if got.next != want.next {
		return fmt.Sprintf("next position %d, want %d", got.next, want.next)
	}
	for i, e := range got.events {
		if e.Position != got.first+uint64(i) {
			return fmt.Sprintf("event %d from position %d is at %d: a gap", i, got.first, e.Position)
		}
	}
	if events := want.from(got.first); !slices.EqualFunc(events, got.events, sameEvent) {
		if !diff {
			return "events"
		}
		return fmt.Sprintf("events from position %d (-want +got):\n%s", got.first, cmp.Diff(events, got.events, cmpopts.EquateEmpty()))
	}
	if !maps.Equal(want.infos, got.infos) {
		if !diff {
			return "stream infos"
		}
		return "stream infos (-want +got):\n" + cmp.Diff(want.infos, got.infos)
	}
	return ""
}
