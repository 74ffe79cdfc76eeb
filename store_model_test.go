package eventbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestStoreModel applies random sequences of appends (every kind of expected
// revision, idempotent replays whole and in part, AppendMulti), deletes,
// tombstones, metadata changes, reads and subscriptions to a MemoryStore, a
// FileStore (closed and reopened at random points, in some runs with small
// segments and retention) and a reference model written from the docs of
// Store, and compares every result and error, and the FileStore's Stats
// after every step (with its segment files and Verify after some). Time is a
// synctest bubble's fake clock, which moves at random, for MaxAge and
// RetainAge. A failure names its seed and the operations that led to it.
func TestStoreModel(t *testing.T) {
	seeds := uint64(300)
	if testing.Short() {
		seeds = 60
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runStoreModel(t, seed, 90) })
		})
	}
}

// modelStore is the reference store: every event committed, by position,
// and the state of every stream, as the docs of Store describe them.
type modelStore struct {
	log     []eventbus.RecordedEvent
	streams map[string]*refStream
	// batches are the batches committed to each stream, to replay.
	batches map[string][][]eventbus.EventData
}

// newModelStore returns an empty model.
func newModelStore() *modelStore {
	return &modelStore{streams: map[string]*refStream{}, batches: map[string][][]eventbus.EventData{}}
}

// clone returns a copy of m that changes apart from it.
func (m *modelStore) clone() *modelStore {
	c := &modelStore{log: m.log, streams: make(map[string]*refStream, len(m.streams)), batches: maps.Clone(m.batches)}
	for name, st := range m.streams {
		cp := *st
		c.streams[name] = &cp
	}
	return c
}

// refStream is the state of a stream of the model.
type refStream struct {
	positions  []uint64 // of every revision, in every life
	start      uint64   // first revision of the current (or last) life
	lives      []uint64 // first revision of every life after the first
	deleted    bool
	tombstoned bool
	md         eventbus.StreamMetadata
}

// mexp is an ExpectedRevision that the model can read.
type mexp struct {
	kind string // "any", "no stream", "exists" or "exact"
	rev  uint64
}

// value returns the ExpectedRevision that e stands for.
func (e mexp) value() eventbus.ExpectedRevision {
	switch e.kind {
	case "no stream":
		return eventbus.NoStream
	case "exists":
		return eventbus.StreamExists
	case "exact":
		return eventbus.Exact(e.rev)
	}
	return eventbus.Any
}

// String returns the value's String, for traces.
func (e mexp) String() string { return e.value().String() }

// actual returns the state of st for expected revisions: NoStream, or
// Exact of its last revision.
func (st *refStream) actual() eventbus.ExpectedRevision {
	if st == nil || st.deleted || len(st.positions) == 0 {
		return eventbus.NoStream
	}
	return eventbus.Exact(uint64(len(st.positions) - 1))
}

// meets reports whether a stream in state actual meets e.
func (e mexp) meets(actual eventbus.ExpectedRevision) bool {
	switch e.kind {
	case "no stream":
		return actual == eventbus.NoStream
	case "exists":
		return actual != eventbus.NoStream
	case "exact":
		return actual == eventbus.Exact(e.rev)
	}
	return true
}

// checkStreamName checks a stream name as the Store docs say: a non-empty
// UTF-8 string of at most 1,024 bytes.
func checkStreamName(stream string) error {
	if stream == "" || len(stream) > 1024 || !utf8.ValidString(stream) {
		return fmt.Errorf("%w: stream name %.20q", eventbus.ErrInvalid, stream)
	}
	return nil
}

// checkType reports whether typ is a valid event type, as EventData's doc
// says: 1 to 249 letters, digits, '.', '_' and '-'.
func checkType(typ string) bool {
	if typ == "" || len(typ) > 249 {
		return false
	}
	for _, c := range typ {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validate checks a batch as the Store docs say: a valid stream name, at
// least one event, each with an ID, a valid type and schema version and
// within maxEvent bytes, and no ID twice.
func validate(stream string, events []eventbus.EventData, maxEvent int) error {
	if err := checkStreamName(stream); err != nil {
		return err
	}
	if len(events) == 0 {
		return fmt.Errorf("%w: no events", eventbus.ErrInvalid)
	}
	for _, e := range events {
		if e.ID.IsZero() || !checkType(e.Type) || e.SchemaVersion < 0 || int64(e.SchemaVersion) > 1<<31 {
			return fmt.Errorf("%w: bad event", eventbus.ErrInvalid)
		}
		size := len(e.Type) + len(e.Encoding) + len(e.Data)
		for k, v := range e.Metadata {
			size += len(k) + len(v)
		}
		if size > maxEvent {
			return fmt.Errorf("%w: event of %d bytes", eventbus.ErrTooLarge, size)
		}
	}
	for i := range events {
		for j := range i {
			if events[i].ID == events[j].ID {
				return fmt.Errorf("%w: ID twice", eventbus.ErrInvalid)
			}
		}
	}
	return nil
}

// decide returns the outcome of appending events to stream as expected
// says, without committing: the result and true for a replay of committed
// events, or an error. The IDs of events at positions below first are
// forgotten, as a FileStore's retention forgets them.
func (m *modelStore) decide(stream string, expected mexp, events []eventbus.EventData, first uint64) (eventbus.AppendResult, bool, error) {
	st := m.streams[stream]
	if st != nil && st.tombstoned {
		return eventbus.AppendResult{}, false, fmt.Errorf("%w: %s", eventbus.ErrStreamDeleted, stream)
	}
	actual := st.actual()
	committed := map[eventbus.ID]int{} // revision of each ID kept
	if st != nil {
		for rev, pos := range st.positions {
			if pos >= first {
				committed[m.log[pos].ID] = rev
			}
		}
	}
	revs := make([]int, len(events)) // -1: not committed to the stream
	found := 0
	for i, e := range events {
		rev, ok := committed[e.ID]
		revs[i] = -1
		if ok {
			revs[i] = rev
			found++
		}
	}
	if found == 0 {
		if !expected.meets(actual) {
			return eventbus.AppendResult{}, false, &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected.value(), Actual: actual}
		}
		return eventbus.AppendResult{}, false, nil
	}
	for i := range revs {
		if found < len(events) || revs[i] != revs[0]+i {
			return eventbus.AppendResult{}, false, fmt.Errorf("%w: not one batch", eventbus.ErrPartialDuplicate)
		}
	}
	start := uint64(revs[0])
	ok := true
	switch expected.kind {
	case "exact":
		ok = start > 0 && start-1 == expected.rev
	case "no stream":
		ok = start == 0 || slices.Contains(st.lives, start)
	}
	if !ok {
		if !expected.meets(actual) {
			return eventbus.AppendResult{}, false, &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected.value(), Actual: actual}
		}
		return eventbus.AppendResult{}, false, fmt.Errorf("%w: elsewhere", eventbus.ErrPartialDuplicate)
	}
	last := start + uint64(len(events)) - 1
	return eventbus.AppendResult{Revision: last, Position: st.positions[last]}, true, nil
}

// appendMulti is AppendMulti on the model (Append is one StreamAppend),
// with the IDs below first forgotten; it commits only if commit is set.
func (m *modelStore) appendMulti(appends []mappend, maxEvent int, first uint64, commit bool) ([]eventbus.AppendResult, error) {
	if len(appends) == 0 {
		return nil, fmt.Errorf("%w: no appends", eventbus.ErrInvalid)
	}
	for i, a := range appends {
		if err := validate(a.stream, a.events, maxEvent); err != nil {
			return nil, err
		}
		for _, b := range appends[:i] {
			if a.stream == b.stream {
				return nil, fmt.Errorf("%w: stream twice", eventbus.ErrInvalid)
			}
		}
	}
	results := make([]eventbus.AppendResult, len(appends))
	replays := make([]bool, len(appends))
	pos := uint64(len(m.log))
	for i, a := range appends {
		var err error
		if results[i], replays[i], err = m.decide(a.stream, a.expected, a.events, first); err != nil {
			return nil, err
		}
		if !replays[i] {
			next := uint64(0)
			if st := m.streams[a.stream]; st != nil {
				next = uint64(len(st.positions))
			}
			pos += uint64(len(a.events))
			results[i] = eventbus.AppendResult{Revision: next + uint64(len(a.events)) - 1, Position: pos - 1}
		}
	}
	if !commit {
		return results, nil
	}
	now := time.Now()
	for i, a := range appends {
		if replays[i] {
			continue
		}
		st := m.streams[a.stream]
		if st == nil {
			st = &refStream{}
			m.streams[a.stream] = st
		}
		if st.deleted {
			st.deleted = false
			st.start = uint64(len(st.positions))
			st.lives = append(st.lives, st.start)
		}
		for _, e := range a.events {
			if e.SchemaVersion == 0 {
				e.SchemaVersion = 1
			}
			pos := uint64(len(m.log))
			m.log = append(m.log, eventbus.RecordedEvent{EventData: e, Stream: a.stream, Revision: uint64(len(st.positions)), Position: pos, Time: now})
			st.positions = append(st.positions, pos)
		}
		m.batches[a.stream] = append(m.batches[a.stream], a.events)
	}
	return results, nil
}

// remove is Delete, or Tombstone if tombstone is set, on the model.
func (m *modelStore) remove(stream string, expected mexp, tombstone bool) error {
	if err := checkStreamName(stream); err != nil {
		return err
	}
	st := m.streams[stream]
	if st != nil && st.tombstoned {
		return fmt.Errorf("%w: %s", eventbus.ErrStreamDeleted, stream)
	}
	if !expected.meets(st.actual()) {
		return &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected.value(), Actual: st.actual()}
	}
	if !tombstone && (st == nil || len(st.positions) == 0) {
		return nil // never written
	}
	if st == nil {
		st = &refStream{}
		m.streams[stream] = st
	}
	st.deleted, st.tombstoned = true, tombstone
	return nil
}

// setMetadata is SetStreamMetadata on the model.
func (m *modelStore) setMetadata(stream string, md eventbus.StreamMetadata) error {
	if checkStreamName(stream) != nil || md.MaxAge < 0 {
		return fmt.Errorf("%w: bad stream or metadata", eventbus.ErrInvalid)
	}
	st := m.streams[stream]
	if st != nil && st.tombstoned {
		return fmt.Errorf("%w: %s", eventbus.ErrStreamDeleted, stream)
	}
	if st == nil {
		st = &refStream{}
		m.streams[stream] = st
	}
	st.md = md
	return nil
}

// info is StreamInfo on the model.
func (m *modelStore) info(stream string) eventbus.StreamInfo {
	st := m.streams[stream]
	if st == nil {
		return eventbus.StreamInfo{}
	}
	n := uint64(len(st.positions))
	info := eventbus.StreamInfo{Deleted: st.deleted && !st.tombstoned, Tombstoned: st.tombstoned, Metadata: st.md, Start: st.start}
	if st.deleted {
		info.Start = n
	}
	if n > 0 {
		info.Exists = !st.deleted
		info.Revision = n - 1
	}
	return info
}

// checkRead validates ReadOptions' Limit and Direction.
func checkRead(o *eventbus.ReadOptions) error {
	if o.Limit < 0 || o.Direction > eventbus.Backwards {
		return fmt.Errorf("%w: bad options", eventbus.ErrInvalid)
	}
	return nil
}

// pick visits the indexes lo to n-1 (revisions or positions) as From and
// Direction say, and returns the events that get returns and keeps, up to
// Limit.
func pick(o *eventbus.ReadOptions, lo, n uint64, get func(uint64) (eventbus.RecordedEvent, bool)) []eventbus.RecordedEvent {
	var out []eventbus.RecordedEvent
	visit := func(i uint64) bool {
		if e, ok := get(i); ok {
			out = append(out, e)
		}
		return o.Limit == 0 || len(out) < o.Limit
	}
	if o.Direction == eventbus.Backwards {
		for i := int64(min(o.From, n-1)); n > 0 && i >= int64(lo); i-- {
			if !visit(uint64(i)) {
				break
			}
		}
		return out
	}
	for i := max(o.From, lo); i < n; i++ {
		if !visit(i) {
			break
		}
	}
	return out
}

// readStream is ReadStream on the model, for a store that kept the events
// from position first on.
func (m *modelStore) readStream(stream string, o *eventbus.ReadOptions, first uint64) ([]eventbus.RecordedEvent, error) {
	if err := checkStreamName(stream); err != nil {
		return nil, err
	}
	if err := checkRead(o); err != nil {
		return nil, err
	}
	st := m.streams[stream]
	switch {
	case st == nil:
		return nil, nil
	case st.tombstoned:
		return nil, fmt.Errorf("%w: %s", eventbus.ErrStreamDeleted, stream)
	case !strings.HasPrefix(stream, o.Filter.StreamPrefix):
		return nil, nil
	}
	n := uint64(len(st.positions))
	lo := st.start
	if st.deleted {
		lo = n
	}
	if st.md.MaxCount > 0 && n > st.md.MaxCount {
		lo = max(lo, n-st.md.MaxCount)
	}
	oldest := time.Now().Add(-st.md.MaxAge)
	return pick(o, lo, n, func(rev uint64) (eventbus.RecordedEvent, bool) {
		e := m.log[st.positions[rev]]
		return e, e.Position >= first && matchType(&o.Filter, e.Type) && (st.md.MaxAge == 0 || !e.Time.Before(oldest))
	}), nil
}

// matchType reports whether f selects events of type typ.
func matchType(f *eventbus.Filter, typ string) bool {
	return len(f.Types) == 0 || slices.Contains(f.Types, typ)
}

// matchAll reports whether f selects e in a read of every stream.
func matchAll(f *eventbus.Filter, e *eventbus.RecordedEvent) bool {
	if strings.HasPrefix(e.Stream, "$") && !strings.HasPrefix(f.StreamPrefix, "$") {
		return false
	}
	return strings.HasPrefix(e.Stream, f.StreamPrefix) && matchType(f, e.Type)
}

// readAll is ReadAll on the model, for a store that kept the events from
// position first on.
func (m *modelStore) readAll(o *eventbus.ReadOptions, first uint64) ([]eventbus.RecordedEvent, error) {
	if err := checkRead(o); err != nil {
		return nil, err
	}
	return pick(o, first, uint64(len(m.log)), func(pos uint64) (eventbus.RecordedEvent, bool) {
		return m.log[pos], matchAll(&o.Filter, &m.log[pos])
	}), nil
}

// mappend is a StreamAppend the model can read.
type mappend struct {
	stream   string
	expected mexp
	events   []eventbus.EventData
}

// mrec is what the test compares of a RecordedEvent.
type mrec struct {
	Stream             string
	Revision, Position uint64
	ID                 eventbus.ID
	Type, Encoding     string
	SchemaVersion      int
	Correlation        eventbus.ID
	Causation          eventbus.ID
	Metadata           string
	Data               string
	Time               int64
}

// toMrec returns what the test compares of e: its Metadata as a sorted
// list, its Data as a string (nil and empty alike) and its Time in
// nanoseconds.
func toMrec(e eventbus.RecordedEvent) mrec {
	var md []string
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		md = append(md, k+"="+e.Metadata[k])
	}
	return mrec{e.Stream, e.Revision, e.Position, e.ID, e.Type, e.Encoding, e.SchemaVersion, e.CorrelationID, e.CausationID, strings.Join(md, ","), string(e.Data), e.Time.UnixNano()}
}

// outcome is what the test compares of a call: its results and the kind
// of its error.
type outcome struct {
	Results []eventbus.AppendResult
	Events  []mrec
	Info    eventbus.StreamInfo
	Next    uint64
	Err     string
}

// equal reports whether o and p are the same outcome.
func (o outcome) equal(p outcome) bool {
	return o.Err == p.Err && o.Next == p.Next && o.Info == p.Info && slices.Equal(o.Results, p.Results) && slices.Equal(o.Events, p.Events)
}

// errKind names the sentinel that err matches, with the states of a
// WrongExpectedVersionError.
func errKind(err error) string {
	var wev *eventbus.WrongExpectedVersionError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &wev):
		return fmt.Sprintf("wrong expected version: stream %q expected %v actual %v", wev.Stream, wev.Expected, wev.Actual)
	}
	for _, s := range []error{eventbus.ErrInvalid, eventbus.ErrPartialDuplicate, eventbus.ErrStreamDeleted, eventbus.ErrTooLarge, eventbus.ErrClosed, context.Canceled} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "unmatched: " + err.Error()
}

// collectRead drains a read into an outcome.
func collectRead(seq func(func(eventbus.RecordedEvent, error) bool)) outcome {
	var o outcome
	for e, err := range seq {
		if err != nil {
			o.Err = errKind(err)
			break
		}
		o.Events = append(o.Events, toMrec(e))
	}
	return o
}

// readOutcome is the outcome of a model's read.
func readOutcome(events []eventbus.RecordedEvent, err error) outcome {
	o := outcome{Err: errKind(err)}
	for _, e := range events {
		o.Events = append(o.Events, toMrec(e))
	}
	return o
}

// modelRun is one random sequence: the stores, the model and the source
// of random operations.
type modelRun struct {
	t        *testing.T
	rng      *rand.Rand
	mem      *eventbus.MemoryStore
	file     *eventbus.FileStore
	dir      string
	opts     *eventbus.FileStoreOptions
	maxEvent int
	// mm and fm are the models of the MemoryStore and the FileStore,
	// which differ once the FileStore's retention forgets the IDs of
	// events that an append replays.
	mm, fm *modelStore
	ids    uint64
	trace  []string
	// mode is "" normally, "closed" while the calls go to closedMem and
	// to the FileStore closed, and "cancelled" while they get a cancelled
	// context.
	mode      string
	closedMem *eventbus.MemoryStore
	// bulk lets appends of hundreds of events in.
	bulk bool
}

// modelStreams are the streams of a run: names that prefixes select in
// part, a system stream, one of the greatest length and one not ASCII.
var modelStreams = []string{"a", "b", "ab", "c-1", "$sys", strings.Repeat("z", 1024), "c-ström"}

// runStoreModel runs the random sequence of seed, of steps operations,
// each followed by a comparison of every stream's StreamInfo, and at the
// end reads everything again after reopening the FileStore.
func runStoreModel(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 0x5707e))
	r := &modelRun{t: t, rng: rng, dir: t.TempDir(), maxEvent: 1 << 20, mm: newModelStore(), fm: newModelStore()}
	// A SyncInterval of minutes: the fake clock jumps by minutes, and a
	// short one would tick thousands of times in each jump.
	// SyncAlways in a few runs only: its fsyncs take most of the time.
	r.opts = &eventbus.FileStoreOptions{Sync: eventbus.SyncPolicy(1 + rng.IntN(2)), SyncInterval: 7 * time.Minute}
	if rng.IntN(8) == 0 {
		r.opts.Sync = eventbus.SyncAlways
	}
	mopts := &eventbus.MemoryStoreOptions{}
	switch rng.IntN(4) {
	case 0:
		r.opts.MaxSegmentSize = 512 + rng.Int64N(2<<10)
	case 1:
		r.opts.MaxSegmentSize = 256 + rng.Int64N(1<<10)
		if rng.IntN(2) == 0 {
			r.opts.RetainSize = 512 + rng.Int64N(2<<10)
		} else {
			r.opts.RetainAge = time.Hour
		}
	}
	r.bulk = rng.IntN(5) == 0
	if rng.IntN(4) == 0 {
		r.maxEvent = 300
		r.opts.MaxEventSize, mopts.MaxEventSize = r.maxEvent, r.maxEvent
	}
	r.trace = append(r.trace, fmt.Sprintf("options %+v, max event %d", *r.opts, r.maxEvent))
	var err error
	r.mem, err = eventbus.NewMemoryStore(mopts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.mem.Close()
	r.closedMem, err = eventbus.NewMemoryStore(mopts)
	if err != nil {
		t.Fatal(err)
	}
	r.closedMem.Close()
	r.open()
	defer func() { r.file.Close() }()
	for step := range steps {
		r.step(step, 0, 100)
		if t.Failed() {
			return
		}
		for _, s := range modelStreams {
			r.compareInfo(s)
			if t.Failed() {
				return
			}
		}
		r.compareStats(step)
		if t.Failed() {
			return
		}
	}
	// At the end, every stream and the whole log, after a reopen.
	r.reopen()
	for _, s := range append(modelStreams, "") {
		r.readAll(&eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: s}})
		if s != "" {
			r.readStream(s, &eventbus.ReadOptions{})
		}
	}
}

// compareInfo compares the StreamInfo of stream.
func (r *modelRun) compareInfo(stream string) {
	want := func(m *modelStore) outcome {
		if err := checkStreamName(stream); err != nil {
			return outcome{Err: errKind(err)}
		}
		return outcome{Info: m.info(stream)}
	}
	ctx := r.t.Context()
	if r.mode == "cancelled" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		cancel()
	}
	r.compare(fmt.Sprintf("StreamInfo(%.20q)", stream), want(r.mm), fixed(want(r.fm)), func(s eventbus.Store) outcome {
		info, err := s.StreamInfo(ctx, stream)
		return outcome{Info: info, Err: errKind(err)}
	})
}

// compareStats checks the FileStore's Stats against its model: the next
// position and the streams written, deleted or given metadata; and, after
// one step in eight, the segment files it reads and their bytes, and that
// Verify finds them whole.
func (r *modelRun) compareStats(step int) {
	st := r.file.Stats()
	want := st
	want.NextPosition, want.Streams = uint64(len(r.fm.log)), len(r.fm.streams)
	want.FirstPosition = min(st.FirstPosition, want.NextPosition)
	if step%8 == 7 {
		paths, err := filepath.Glob(filepath.Join(r.dir, "seg-*.log"))
		if err != nil {
			r.t.Fatal(err)
		}
		want.Segments, want.Bytes = len(paths), 0
		for _, p := range paths {
			fi, err := os.Stat(p)
			if err != nil {
				r.t.Fatal(err)
			}
			want.Bytes += fi.Size()
		}
		if err := r.file.Verify(r.t.Context()); err != nil {
			r.fail("FileStore: Verify() = %v", err)
		}
	}
	if diff := cmp.Diff(want, st); diff != "" {
		r.fail("FileStore: Stats differ from the model and the files (-want +got):\n%s", diff)
	}
}

// first returns the first position that the FileStore keeps.
func (r *modelRun) first() uint64 { return r.file.Stats().FirstPosition }

// open opens the FileStore with r.opts.
func (r *modelRun) open() {
	s, err := eventbus.OpenFileStore(r.dir, r.opts)
	if err != nil {
		r.t.Fatalf("OpenFileStore: %v\n%s", err, strings.Join(r.trace, "\n"))
	}
	r.file = s
}

// reopen closes the FileStore and opens it again.
func (r *modelRun) reopen() {
	r.trace = append(r.trace, "reopen")
	if err := r.file.Close(); err != nil {
		r.t.Fatalf("Close: %v", err)
	}
	r.open()
}

// compare runs call on both stores and checks its outcome against the
// MemoryStore's model, wantMem, and the FileStore's, which wantFile
// returns given the FileStore's outcome.
func (r *modelRun) compare(what string, wantMem outcome, wantFile func(got outcome) outcome, call func(eventbus.Store) outcome) {
	r.t.Helper()
	if r.mode != "" {
		wantMem = r.unlike(wantMem)
		wf := wantFile
		wantFile = func(got outcome) outcome { return r.unlike(wf(got)) }
		what = r.mode + " " + what
	}
	if got := call(r.mem); !wantMem.equal(got) {
		r.fail("MemoryStore: %s differs from the model (-model +store):\n%s", what, cmp.Diff(wantMem, got))
		return
	}
	got := call(r.file)
	if want := wantFile(got); !want.equal(got) {
		r.fail("FileStore: %s differs from the model (-model +store):\n%s", what, cmp.Diff(want, got))
	}
}

// unlike returns what a call whose outcome on a live store with a live
// context is want returns in r.mode: on a closed store, ErrClosed unless
// its arguments are invalid; with a cancelled context, its error.
func (r *modelRun) unlike(want outcome) outcome {
	if r.mode == "cancelled" {
		return outcome{Err: context.Canceled.Error()}
	}
	if want.Err == eventbus.ErrInvalid.Error() || want.Err == eventbus.ErrTooLarge.Error() {
		return outcome{Err: want.Err}
	}
	return outcome{Err: eventbus.ErrClosed.Error()}
}

// fixed returns a wantFile for compare that does not depend on the
// outcome.
func fixed(want outcome) func(outcome) outcome { return func(outcome) outcome { return want } }

// fail reports a difference, with the run's options and last operations.
func (r *modelRun) fail(format string, args ...any) {
	r.t.Helper()
	tail := r.trace[max(1, len(r.trace)-25):]
	r.t.Errorf(format+"\nafter:\n%s\n...\n%s", append(args, r.trace[0], strings.Join(tail, "\n"))...)
}

// event returns a new event, with a unique ID from the run's random
// source, and at random the optional fields, a large payload, or a bad
// type or zero ID.
func (r *modelRun) event() eventbus.EventData {
	r.ids++
	var id eventbus.ID
	binary.BigEndian.PutUint64(id[:8], r.rng.Uint64())
	binary.BigEndian.PutUint64(id[8:], r.ids)
	e := eventbus.EventData{ID: id, Type: []string{"t1", "t2", "t.3"}[r.rng.IntN(3)], Data: fmt.Appendf(nil, "data %d", r.ids)}
	switch r.rng.IntN(12) {
	case 0:
		e.SchemaVersion = 1 + r.rng.IntN(3)
		e.Encoding = "deflate"
	case 1:
		e.CorrelationID, e.CausationID = id, eventbus.ID{1}
		e.Metadata = eventbus.Metadata{"k": "v", "trace": fmt.Sprint(r.ids), "": "", "ü": "\x00\xff"}
		e.Encoding = "x\x00ü"
		e.Type = strings.Repeat("T", 249)
	case 2:
		e.Data = nil
	case 3:
		e.Data = []byte{}
		e.Metadata = eventbus.Metadata{}
	case 4:
		if r.rng.IntN(4) == 0 {
			e.Data = make([]byte, 400) // too large in runs with MaxEventSize 300
		}
	case 5:
		switch r.rng.IntN(16) {
		case 0:
			e.Type = "bad type"
		case 1:
			e.Type = strings.Repeat("T", 250)
		case 2:
			e.SchemaVersion = -1
		case 3:
			e.SchemaVersion = int(min(math.MaxInt, 1<<31+1)) // past the limit where int has room
		case 4:
			e.SchemaVersion = int(min(math.MaxInt, 1<<31))
		}
	case 6:
		if r.rng.IntN(8) == 0 {
			e.ID = eventbus.ID{}
		}
	}
	return e
}

// batch returns events to append to stream: new ones, or at random a
// replay of a batch committed before, whole, in part, with new events,
// out of order, or from another stream.
func (r *modelRun) batch(stream string) []eventbus.EventData {
	fresh := func(n int) []eventbus.EventData {
		out := make([]eventbus.EventData, n)
		for i := range out {
			out[i] = r.event()
		}
		return out
	}
	past := r.mm.batches[stream]
	k := r.rng.IntN(12)
	if len(past) == 0 && k < 10 || k < 5 {
		if r.bulk && r.rng.IntN(20) == 0 { // past a chunk of the stores' indexes
			return fresh(200 + r.rng.IntN(500))
		}
		return fresh(1 + r.rng.IntN(3))
	}
	if k >= 10 { // another stream's batch
		other := r.mm.batches[modelStreams[r.rng.IntN(len(modelStreams))]]
		if len(other) == 0 {
			return fresh(1)
		}
		return slices.Clone(other[r.rng.IntN(len(other))])
	}
	b := slices.Clone(past[r.rng.IntN(len(past))])
	if r.rng.IntN(3) == 0 { // the latest batch, the likeliest retry
		b = slices.Clone(past[len(past)-1])
	}
	switch k {
	case 6: // part of it, in order
		i := r.rng.IntN(len(b))
		b = b[i : i+1+r.rng.IntN(len(b)-i)]
	case 7: // with a new event
		if r.rng.IntN(2) == 0 {
			b = append(b, r.event())
		} else {
			b = append(fresh(1), b...)
		}
	case 8:
		slices.Reverse(b)
	case 9: // two batches of the stream at once
		if i := r.rng.IntN(len(past)); b[0].ID != past[i][0].ID {
			b = append(b, past[i]...)
		}
	}
	return b
}

// expected returns an expected revision for an append of events to
// stream, often one that fits.
func (r *modelRun) expected(stream string, events []eventbus.EventData) mexp {
	st := r.mm.streams[stream]
	n := uint64(0)
	if st != nil {
		n = uint64(len(st.positions))
	}
	switch r.rng.IntN(8) {
	case 0:
		return mexp{kind: "any"}
	case 1:
		return mexp{kind: "no stream"}
	case 2:
		return mexp{kind: "exists"}
	case 3: // right before the events, if they were committed
		if st != nil && len(events) > 0 {
			for rev, pos := range st.positions {
				if r.mm.log[pos].ID == events[0].ID && rev > 0 {
					return mexp{kind: "exact", rev: uint64(rev - 1)}
				}
			}
		}
		return mexp{kind: "exact", rev: uint64(r.rng.IntN(3))}
	case 4:
		return mexp{kind: "exact", rev: n + uint64(r.rng.IntN(2))}
	case 5:
		if r.rng.IntN(8) == 0 {
			return mexp{kind: "exact", rev: math.MaxUint64}
		}
	}
	if n == 0 {
		return mexp{kind: "no stream"}
	}
	return mexp{kind: "exact", rev: n - 1}
}

// stream returns a stream of the run or, seldom, an invalid name.
func (r *modelRun) stream() string {
	if r.rng.IntN(60) == 0 { // invalid
		return []string{"", strings.Repeat("z", 1025), "c-\xff"}[r.rng.IntN(3)]
	}
	return modelStreams[r.rng.IntN(len(modelStreams))]
}

// appendOutcome runs the appends on model m, for a store that keeps the
// events from first on, and commits them if commit is set.
func (r *modelRun) appendOutcome(m *modelStore, appends []mappend, first uint64, commit bool) outcome {
	res, err := m.appendMulti(appends, r.maxEvent, first, commit)
	return outcome{Results: res, Err: errKind(err)}
}

// step runs an operation, picked at random among those from lo to hi-1:
// the changes below 60, then the reads below 86, then the changes of time,
// the reopens, and the calls to closed stores or with a cancelled context.
func (r *modelRun) step(step, lo, hi int) {
	ctx := r.t.Context()
	mm, fm := r.mm, r.fm
	if r.mode != "" { // the call changes nothing
		mm, fm = mm.clone(), fm.clone()
	}
	if r.mode == "cancelled" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		cancel()
	}
	rng := r.rng
	switch k := lo + rng.IntN(hi-lo); {
	case k < 45: // Append, AppendMulti
		n := 1
		single := k < 35
		if !single {
			n = 1 + rng.IntN(3)
		}
		var appends []mappend
		for i := range n {
			s := r.stream()
			if i > 0 && s == appends[0].stream && rng.IntN(8) != 0 {
				continue // naming a stream twice is invalid: seldom
			}
			events := r.batch(s)
			if rng.IntN(50) == 0 {
				events = nil
			}
			appends = append(appends, mappend{stream: s, expected: r.expected(s, events), events: events})
		}
		var desc []string
		for _, a := range appends {
			var ids []string
			for _, e := range a.events {
				ids = append(ids, fmt.Sprint(binary.BigEndian.Uint64(e.ID[8:])))
			}
			desc = append(desc, fmt.Sprintf("%q %v [%s]", a.stream, a.expected, strings.Join(ids, " ")))
		}
		name := "AppendMulti"
		if single {
			name = "Append"
		}
		what := fmt.Sprintf("%d: %s(%s)", step, name, strings.Join(desc, "; "))
		want := r.appendOutcome(mm, appends, 0, true)
		r.trace = append(r.trace, what+" -> "+fmt.Sprint(want.Results, want.Err))
		// The FileStore forgets the IDs of the events that retention
		// removed, as its docs say, and retention may run as the append
		// starts a segment: its model decides with the first position
		// kept before the append, or after it if that is what the store
		// did.
		before := r.first()
		first := before
		r.compare(what, want, func(got outcome) outcome {
			w := r.appendOutcome(fm, appends, before, false)
			if after := r.first(); after != before && !w.equal(got) {
				first = after
				w = r.appendOutcome(fm, appends, after, false)
			}
			return w
		}, func(s eventbus.Store) outcome {
			if single {
				res, err := s.Append(ctx, appends[0].stream, appends[0].expected.value(), appends[0].events...)
				if err != nil {
					return outcome{Err: errKind(err)}
				}
				return outcome{Results: []eventbus.AppendResult{res}}
			}
			var sa []eventbus.StreamAppend
			for _, a := range appends {
				sa = append(sa, eventbus.StreamAppend{Stream: a.stream, Expected: a.expected.value(), Events: a.events})
			}
			res, err := s.AppendMulti(ctx, sa...)
			return outcome{Results: res, Err: errKind(err)}
		})
		r.appendOutcome(fm, appends, first, true)
	case k < 54: // Delete, Tombstone
		s := r.stream()
		exp := r.expected(s, nil)
		tomb := k == 53
		what := fmt.Sprintf("%d: Delete(%q, %v, tombstone %v)", step, s, exp, tomb)
		want := outcome{Err: errKind(mm.remove(s, exp, tomb))}
		r.trace = append(r.trace, what+" -> "+want.Err)
		r.compare(what, want, fixed(outcome{Err: errKind(fm.remove(s, exp, tomb))}), func(st eventbus.Store) outcome {
			if tomb {
				return outcome{Err: errKind(st.Tombstone(ctx, s, exp.value()))}
			}
			return outcome{Err: errKind(st.Delete(ctx, s, exp.value()))}
		})
	case k < 60: // SetStreamMetadata
		s := r.stream()
		md := eventbus.StreamMetadata{MaxCount: uint64(rng.IntN(4)), MaxAge: []time.Duration{0, 0, 10 * time.Minute, time.Hour, -1}[rng.IntN(5)]}
		if rng.IntN(3) == 0 {
			md.MaxCount = 0
		}
		what := fmt.Sprintf("%d: SetStreamMetadata(%q, %+v)", step, s, md)
		want := outcome{Err: errKind(mm.setMetadata(s, md))}
		r.trace = append(r.trace, what+" -> "+want.Err)
		r.compare(what, want, fixed(outcome{Err: errKind(fm.setMetadata(s, md))}), func(st eventbus.Store) outcome {
			return outcome{Err: errKind(st.SetStreamMetadata(ctx, s, md))}
		})
	case k < 72:
		o := r.readOptions()
		if rng.IntN(4) == 0 {
			o.Filter.StreamPrefix = []string{"a", "c", "$", "x"}[rng.IntN(4)]
		}
		r.readStream(r.stream(), o)
	case k < 82:
		o := r.readOptions()
		o.Filter.StreamPrefix = []string{"", "", "a", "c", "$", "$s", "x"}[rng.IntN(7)]
		r.readAll(o)
	case k < 86:
		r.subscribe()
	case k < 93:
		d := time.Duration(rng.IntN(30)) * time.Minute
		r.trace = append(r.trace, fmt.Sprintf("%d: sleep %v", step, d))
		time.Sleep(d) // the bubble's fake clock
	case k < 96:
		if rng.IntN(3) == 0 {
			r.readOnly(step)
		}
		r.reopen()
	case k < 98: // the same calls to closed stores
		mem := r.mem
		if err := r.file.Close(); err != nil {
			r.t.Fatalf("Close: %v", err)
		}
		r.mem, r.mode = r.closedMem, "closed"
		r.step(step, 0, 86)
		for _, s := range modelStreams[:2] {
			r.compareInfo(s)
		}
		r.mem, r.mode = mem, ""
		r.open()
	default:
		r.mode = "cancelled"
		r.step(step, 0, 60)
		r.compareInfo(r.stream())
		r.mode = ""
	}
}

// readOnly reopens the FileStore read-only, compares reads, checks that it
// refuses an append with ErrReadOnly, and closes it.
func (r *modelRun) readOnly(step int) {
	r.trace = append(r.trace, "reopen read-only")
	if err := r.file.Close(); err != nil {
		r.t.Fatalf("Close: %v", err)
	}
	opts := *r.opts
	r.opts = &opts
	r.opts.ReadOnly = true
	r.open()
	for range 1 + r.rng.IntN(3) {
		r.step(step, 60, 86)
	}
	r.compareInfo(r.stream())
	e := eventbus.EventData{ID: eventbus.ID{0xfe}, Type: "t1"}
	if _, err := r.file.Append(r.t.Context(), "a", eventbus.Any, e); !errors.Is(err, eventbus.ErrReadOnly) {
		r.fail("Append to a read-only FileStore = %v, want ErrReadOnly", err)
	}
	r.opts.ReadOnly = false
}

// readOptions returns random ReadOptions, seldom invalid ones.
func (r *modelRun) readOptions() *eventbus.ReadOptions {
	rng := r.rng
	o := &eventbus.ReadOptions{Limit: rng.IntN(4)}
	if rng.IntN(2) == 0 {
		o.Direction = eventbus.Backwards
	}
	switch rng.IntN(4) {
	case 0:
		o.From = uint64(rng.IntN(len(r.mm.log) + 2))
	case 1:
		o.From = eventbus.End
	case 2:
		o.From = uint64(rng.IntN(6))
	}
	if rng.IntN(3) == 0 {
		o.Filter.Types = []string{[]string{"t1", "t2", "t.3"}[rng.IntN(3)]}
	}
	if rng.IntN(40) == 0 {
		o.Limit = -1
	}
	if rng.IntN(40) == 0 {
		o.Direction = 2
	}
	return o
}

// readStream compares a ReadStream.
func (r *modelRun) readStream(stream string, o *eventbus.ReadOptions) {
	r.read(fmt.Sprintf("ReadStream(%q, %+v)", stream, *o), func(s eventbus.Store) iter.Seq2[eventbus.RecordedEvent, error] {
		return s.ReadStream(r.t.Context(), stream, o)
	}, func(m *modelStore, first uint64) outcome {
		return readOutcome(m.readStream(stream, o, first))
	})
}

// readAll compares a ReadAll.
func (r *modelRun) readAll(o *eventbus.ReadOptions) {
	r.read(fmt.Sprintf("ReadAll(%+v)", *o), func(s eventbus.Store) iter.Seq2[eventbus.RecordedEvent, error] {
		return s.ReadAll(r.t.Context(), o)
	}, func(m *modelStore, first uint64) outcome {
		return readOutcome(m.readAll(o, first))
	})
}

// read compares a read, which the stores start with read and the models
// with want. At random the iterators are made before a change and run
// after it, which they must see, since they see what is committed when
// their loop starts; or they yield a few events before a change and the
// rest after it, which they must not see; and they run twice.
func (r *modelRun) read(what string, read func(eventbus.Store) iter.Seq2[eventbus.RecordedEvent, error], want func(m *modelStore, first uint64) outcome) {
	seqs := map[eventbus.Store]iter.Seq2[eventbus.RecordedEvent, error]{r.mem: read(r.mem), r.file: read(r.file)}
	change := r.mode == "" && !r.opts.ReadOnly
	switch k := r.rng.IntN(8); {
	case change && k < 2:
		what = "iterator made before the change, " + what
		r.step(-1, 0, 60)
	case change && k < 4:
		r.readAcross(what, seqs, want)
		return
	}
	r.trace = append(r.trace, what)
	for range 1 + r.rng.IntN(2) {
		r.compare(what, want(r.mm, 0), fixed(want(r.fm, r.first())), func(s eventbus.Store) outcome {
			return collectRead(seqs[s])
		})
	}
}

// readAcross compares reads that yield 1 to 3 events, then wait for a
// change, then yield the rest: they read what was committed when they
// started.
func (r *modelRun) readAcross(what string, seqs map[eventbus.Store]iter.Seq2[eventbus.RecordedEvent, error], want func(m *modelStore, first uint64) outcome) {
	what = "read across a change, " + what
	r.trace = append(r.trace, what)
	before := r.first()
	wantMem := want(r.mm, 0)
	fm := r.fm.clone()
	k := 1 + r.rng.IntN(3) // the first starts the loop
	type pulled struct {
		next func() (eventbus.RecordedEvent, error, bool)
		stop func()
		o    outcome
		done bool
	}
	pulls := map[eventbus.Store]*pulled{}
	for _, s := range []eventbus.Store{r.mem, r.file} {
		next, stop := iter.Pull2(seqs[s])
		p := &pulled{next: next, stop: stop}
		pulls[s] = p
		defer stop()
		for len(p.o.Events) < k && !p.done && p.o.Err == "" {
			e, err, ok := p.next()
			switch {
			case !ok:
				p.done = true
			case err != nil:
				p.o.Err = errKind(err)
			default:
				p.o.Events = append(p.o.Events, toMrec(e))
			}
		}
	}
	r.step(-1, 0, 60)
	wantFile := fixed(want(fm, before))
	if r.first() != before {
		// The FileStore's read skips the events that retention deleted
		// meanwhile, but not those of the window of a file it had read
		// already (see TestFileStoreReadDuringRetention): what it yields
		// depends on the size of its windows, which the model ignores.
		wantFile = func(got outcome) outcome { return got }
	}
	r.compare(what, wantMem, wantFile, func(s eventbus.Store) outcome {
		p := pulls[s]
		for !p.done && p.o.Err == "" {
			e, err, ok := p.next()
			switch {
			case !ok:
				p.done = true
			case err != nil:
				p.o.Err = errKind(err)
			default:
				p.o.Events = append(p.o.Events, toMrec(e))
			}
		}
		return p.o
	})
}

// liveAppend is the append of e that a subscription's CaughtUp makes.
func liveAppend(e *eventbus.EventData) []mappend {
	return []mappend{{stream: "a", expected: mexp{kind: "any"}, events: []eventbus.EventData{*e}}}
}

// subscribe subscribes from a random position until the subscription has
// caught up, and checks it delivered what ReadAll forwards would. At
// random, CaughtUp appends an event, which the subscription must deliver
// live before it is cancelled.
func (r *modelRun) subscribe() {
	n := uint64(len(r.mm.log))
	from := uint64(r.rng.IntN(len(r.mm.log) + 2))
	if r.rng.IntN(5) == 0 {
		from = eventbus.End
	}
	f := eventbus.Filter{StreamPrefix: []string{"", "a", "$"}[r.rng.IntN(3)]}
	var live *eventbus.EventData // appended to stream "a" by CaughtUp
	// The FileStore's log may be shorter than the MemoryStore's, once
	// retention made their appends differ.
	if r.mode == "" && !r.opts.ReadOnly && (from <= min(n, uint64(len(r.fm.log))) || from == eventbus.End) && f.StreamPrefix != "$" && r.rng.IntN(2) == 0 {
		r.ids++
		live = &eventbus.EventData{ID: eventbus.ID{0xff, byte(r.ids >> 8), byte(r.ids)}, Type: "t1", Data: []byte("live")}
		for _, m := range []*modelStore{r.mm, r.fm} {
			if st := m.streams["a"]; st != nil && st.tombstoned {
				live = nil
			}
		}
	}
	what := fmt.Sprintf("Subscribe(from %d, %+v, live %v)", from, f, live != nil)
	r.trace = append(r.trace, what)
	want := func(m *modelStore, first uint64) outcome {
		if live != nil {
			m = m.clone()
			if _, err := m.appendMulti(liveAppend(live), r.maxEvent, 0, true); err != nil {
				r.fail("model append: %v", err)
			}
		}
		n := uint64(len(m.log))
		if live != nil {
			n--
		}
		o := &eventbus.ReadOptions{From: from, Filter: f}
		next := max(from, n)
		if from == eventbus.End {
			o.From, next = n, n
		}
		w := readOutcome(m.readAll(o, first))
		w.Next, w.Err = next, context.Canceled.Error()
		if r.mode == "closed" {
			w.Next = 0
		}
		return w
	}
	// What the subscription delivered before the live append is what the
	// FileStore kept before it, whatever retention deleted as it started
	// a segment.
	r.compare(what, want(r.mm, 0), fixed(want(r.fm, r.first())), func(s eventbus.Store) outcome {
		ctx, cancel := context.WithCancel(r.t.Context())
		defer cancel()
		var next uint64
		var o outcome
		opts := &eventbus.SubscribeOptions{From: from, Filter: f, CaughtUp: func(n uint64) {
			next = n
			if live == nil {
				cancel()
			} else if _, err := s.Append(ctx, "a", eventbus.Any, *live); err != nil {
				o.Err = "live append: " + err.Error()
				cancel()
			}
		}}
		for e, err := range s.Subscribe(ctx, opts) {
			if err != nil {
				if o.Err == "" {
					o.Err = errKind(err)
				}
				break
			}
			o.Events = append(o.Events, toMrec(e))
			if live != nil && e.ID == live.ID {
				cancel()
			}
		}
		o.Next = next
		return o
	})
	if live != nil {
		r.appendOutcome(r.mm, liveAppend(live), 0, true)
		r.appendOutcome(r.fm, liveAppend(live), r.first(), true)
	}
}

// TestStoreDoneContext checks that both stores check the context of a call
// before its arguments: a call with a done context and bad arguments fails
// with the context's error, as every call with a done context does.
func TestStoreDoneContext(t *testing.T) {
	mem, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	file := openFile(t, t.TempDir(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, s := range map[string]eventbus.Store{"MemoryStore": mem, "FileStore": file} {
		calls := map[string]error{
			"SetStreamMetadata(MaxAge -1s)": s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxAge: -time.Second}),
			`SetStreamMetadata("")`:         s.SetStreamMetadata(ctx, "", eventbus.StreamMetadata{}),
			`Delete("")`:                    s.Delete(ctx, "", eventbus.Any),
			`Tombstone("")`:                 s.Tombstone(ctx, "", eventbus.Any),
		}
		_, calls["Append(no events)"] = s.Append(ctx, "s", eventbus.Any)
		_, calls["AppendMulti()"] = s.AppendMulti(ctx)
		_, calls[`StreamInfo("")`] = s.StreamInfo(ctx, "")
		for call, err := range calls {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %s with a cancelled context = %v, want context.Canceled", name, call, err)
			}
		}
	}
}

// bothStores returns a new MemoryStore and a new FileStore, closed when
// the test ends, by name.
func bothStores(t *testing.T) map[string]eventbus.Store {
	mem, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return map[string]eventbus.Store{"MemoryStore": mem, "FileStore": openFile(t, t.TempDir(), nil)}
}

// appendBothWays appends an event of type t1 with data to stream a of s
// with Append, and one to stream b with AppendMulti.
func appendBothWays(t *testing.T, s eventbus.Store, data []byte) {
	t.Helper()
	e := eventbus.EventData{ID: eventbus.NewID(), Type: "t1", Data: data}
	if _, err := s.Append(t.Context(), "a", eventbus.NoStream, e); err != nil {
		t.Fatal(err)
	}
	e.ID = eventbus.NewID()
	if _, err := s.AppendMulti(t.Context(), eventbus.StreamAppend{Stream: "b", Events: []eventbus.EventData{e}}); err != nil {
		t.Fatal(err)
	}
}

// TestStoreReadsKeepTheirTypes checks that a read or subscription keeps
// the filter's types as they were when it was made: a caller reusing its
// options, and their Types slice, for another read changes neither the
// first read's selection nor, for a subscription read in another
// goroutine, races with it.
func TestStoreReadsKeepTheirTypes(t *testing.T) {
	for name, s := range bothStores(t) {
		e := eventbus.EventData{ID: eventbus.NewID(), Type: "t1", Data: []byte("x")}
		if _, err := s.Append(t.Context(), "s", eventbus.NoStream, e); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		ro := &eventbus.ReadOptions{Filter: eventbus.Filter{Types: []string{"t1"}}}
		so := &eventbus.SubscribeOptions{Filter: eventbus.Filter{Types: []string{"t1"}}, CaughtUp: func(uint64) { cancel() }}
		reads := map[string]iter.Seq2[eventbus.RecordedEvent, error]{
			"ReadStream": s.ReadStream(t.Context(), "s", ro),
			"ReadAll":    s.ReadAll(t.Context(), ro),
			"Subscribe":  s.Subscribe(ctx, so),
		}
		ro.Filter.Types[0], so.Filter.Types[0] = "t2", "t2" // for the next reads
		for call, seq := range reads {
			n := 0
			for _, err := range seq {
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("%s: %s: %v", name, call, err)
					}
					break
				}
				n++
			}
			if n != 1 {
				t.Errorf("%s: %s of type t1, its options' Types changed after the call: %d events, want 1", name, call, n)
			}
		}
		cancel()
	}
}

// TestStoreEmptyData checks that both stores return an event appended with
// empty, non-nil Data as they return one appended with nil Data: with nil
// Data, as a FileStore, which cannot tell them apart on disk, always did.
func TestStoreEmptyData(t *testing.T) {
	for name, s := range bothStores(t) {
		appendBothWays(t, s, []byte{})
		for rec, err := range s.ReadAll(t.Context(), nil) {
			if err != nil {
				t.Fatal(err)
			}
			if rec.Data != nil {
				t.Errorf("%s: ReadAll: %s's Data = %#v, want nil", name, rec.Stream, rec.Data)
			}
		}
	}
}

// TestStoreEmptyMetadata checks that both stores return an event appended
// with empty, non-nil Metadata with nil Metadata, as one appended with nil
// Metadata, as EventData.Metadata says: a FileStore cannot tell them apart
// on disk, and a MemoryStore that kept the empty map read differently.
func TestStoreEmptyMetadata(t *testing.T) {
	for name, s := range bothStores(t) {
		e := eventbus.EventData{ID: eventbus.NewID(), Type: "t1", Metadata: eventbus.Metadata{}}
		if _, err := s.Append(t.Context(), "a", eventbus.NoStream, e); err != nil {
			t.Fatal(err)
		}
		e.ID = eventbus.NewID()
		if _, err := s.AppendMulti(t.Context(), eventbus.StreamAppend{Stream: "b", Events: []eventbus.EventData{e}}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for rec, err := range s.ReadAll(t.Context(), nil) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if rec.Metadata != nil {
				t.Errorf("%s: ReadAll: %s's Metadata = %#v, want nil", name, rec.Stream, rec.Metadata)
			}
		}
		if n != 2 {
			t.Errorf("%s: ReadAll: %d events, want 2", name, n)
		}
	}
}

// TestStoreCommitTimesNeverGoBack checks that commit times never go back
// when the wall clock does (an NTP step, a restart on a host whose clock is
// behind). Before, the later event of a stream got the earlier time, so
// MaxAge hid it and kept the event before it: a gap that readers, and
// Aggregate.Load, took for the stream. A FileStore opened again goes on
// from the latest time on disk.
func TestStoreCommitTimesNeverGoBack(t *testing.T) {
	base := time.Now().Round(0)
	var at atomic.Int64 // the FileStore's committer reads it
	now := func() time.Time { return time.Unix(0, at.Load()) }
	mem, err := eventbus.NewMemoryStoreNow(now)
	require.NoError(t, err)
	defer mem.Close()
	dir := t.TempDir()
	file, err := eventbus.OpenFileStore(dir, eventbus.WithNow(nil, now))
	require.NoError(t, err)
	appendAt := func(s eventbus.Store, clock time.Time) {
		t.Helper()
		at.Store(clock.UnixNano())
		_, err := s.Append(t.Context(), "s", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t"})
		require.NoError(t, err)
	}
	check := func(name string, s eventbus.Store, n int) {
		t.Helper()
		var times []time.Time
		for rec, err := range s.ReadStream(t.Context(), "s", nil) {
			require.NoError(t, err)
			times = append(times, rec.Time)
		}
		if len(times) != n {
			t.Fatalf("%s: ReadStream with MaxAge 1h: %d events, want all %d (times %v)", name, len(times), n, times)
		}
		for i, tm := range times {
			if !tm.Equal(base) {
				t.Errorf("%s: event %d committed at %v, want %v, the latest commit time", name, i, tm, base)
			}
		}
	}
	for name, s := range map[string]eventbus.Store{"MemoryStore": mem, "FileStore": file} {
		appendAt(s, base)
		appendAt(s, base.Add(-2*time.Hour))
		require.NoError(t, s.SetStreamMetadata(t.Context(), "s", eventbus.StreamMetadata{MaxAge: time.Hour}))
		check(name, s, 2)
	}
	require.NoError(t, file.Close())
	file, err = eventbus.OpenFileStore(dir, eventbus.WithNow(nil, now))
	require.NoError(t, err)
	defer file.Close()
	appendAt(file, base.Add(-3*time.Hour))
	check("FileStore opened again", file, 3)
}

// TestStreamMetadataBounds reads a stream at the bounds of its metadata,
// in both stores: MaxCount hides all but the last MaxCount events, so a
// stream of exactly MaxCount events shows them all and one more hides
// the first; MaxAge hides events committed longer ago than MaxAge, so an
// event exactly MaxAge old shows and one a nanosecond older does not. The
// bubble's fake clock, which both stores stamp and judge by, puts the
// reads at those instants.
func TestStreamMetadataBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		mem, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		defer mem.Close()
		file, err := eventbus.OpenFileStore(t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
		require.NoError(t, err)
		defer file.Close()
		stores := []struct {
			name string
			s    eventbus.Store
		}{{"MemoryStore", mem}, {"FileStore", file}}
		read := func(s eventbus.Store) []uint64 {
			t.Helper()
			var revs []uint64
			for e, err := range s.ReadStream(ctx, "s", nil) {
				require.NoError(t, err)
				revs = append(revs, e.Revision)
			}
			return revs
		}
		for _, st := range stores {
			_, err := st.s.Append(ctx, "s", eventbus.NoStream, newEvents(3, "t", "")...)
			require.NoError(t, err)
			for _, tc := range []struct {
				max  uint64
				want []uint64
			}{{3, []uint64{0, 1, 2}}, {2, []uint64{1, 2}}} {
				require.NoError(t, st.s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: tc.max}))
				if got := read(st.s); !slices.Equal(got, tc.want) {
					t.Errorf("%s: ReadStream with MaxCount %d of 3 events = revisions %v, want %v", st.name, tc.max, got, tc.want)
				}
			}
			require.NoError(t, st.s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxAge: time.Hour}))
		}
		time.Sleep(time.Hour)
		for _, st := range stores {
			if got := read(st.s); !slices.Equal(got, []uint64{0, 1, 2}) {
				t.Errorf("%s: ReadStream with MaxAge 1h of events exactly 1h old = revisions %v, want all 3", st.name, got)
			}
		}
		time.Sleep(time.Nanosecond)
		for _, st := range stores {
			if got := read(st.s); len(got) > 0 {
				t.Errorf("%s: ReadStream with MaxAge 1h of events 1h and 1ns old = revisions %v, want none", st.name, got)
			}
		}
	})
}
