package eventbus

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryStoreOptions configures a [MemoryStore]. The zero value (or nil)
// takes the defaults.
type MemoryStoreOptions struct {
	// MaxEventSize is the largest event accepted, in bytes of type,
	// encoding, metadata (keys and values) and data, as given: compressed
	// if a [Registry] compressed it; zero means 1 MiB.
	MaxEventSize int
	// MaxBatchSize is the largest append accepted, in the same bytes summed
	// over its events (over every stream of AppendMulti); zero means 16 MiB.
	MaxBatchSize int

	now func() time.Time // for tests; nil means time.Now
}

// MemoryStore is a [Store] that keeps every event in memory, for tests and
// for applications that need no durability. It remembers every event ID of
// every stream, so its idempotent appends cover whole streams.
//
// Reads and subscriptions take no lock while they yield: committed events
// are never modified, so a reader iterates over a view of them taken when
// its loop starts. Appends take one lock and, per event, copy its data and
// metadata. A MemoryStore is safe for concurrent use. The methods of a nil
// or zero MemoryStore, one not made by [NewMemoryStore], return an error
// wrapping [ErrInvalid], and its reads yield one.
type MemoryStore struct {
	maxEvent, maxBatch int
	closed             atomic.Bool

	mu      sync.RWMutex
	log     memLog
	streams map[string]*memStream
	waiting waiters
	clock   commitClock
}

var _ Store = (*MemoryStore)(nil)

// memLog holds recorded events by position in chunks that never move, so
// that appends copy no old events and a reader can keep a copy of the
// memLog to read the events committed until then without a lock.
type memLog struct {
	chunks []*[logChunk]RecordedEvent
	n      uint64
}

// logChunk is the number of events in a chunk of a memLog.
const logChunk = 512

// at returns the event at position pos, which must be below l.n. A value
// receiver lets a getter's closure hold its copy of l by value.
func (l memLog) at(pos uint64) *RecordedEvent { return &l.chunks[pos/logChunk][pos%logChunk] }

func (l *memLog) append(e *RecordedEvent) {
	if l.n%logChunk == 0 {
		l.chunks = append(l.chunks, new([logChunk]RecordedEvent))
	}
	*l.at(l.n) = *e
	l.n++
}

// memStream is the state of one stream of a MemoryStore.
type memStream struct {
	positions  []uint64      // position of each revision
	ids        map[ID]uint64 // revision of each event ID
	lives                    // where its lives begin
	deleted    bool
	tombstoned bool
	md         StreamMetadata
}

// actual returns the stream's state for expected-revision checks.
func (st *memStream) actual() ExpectedRevision {
	if st == nil || st.deleted || len(st.positions) == 0 {
		return NoStream
	}
	return Exact(uint64(len(st.positions) - 1))
}

// lookup returns the revision of event ID id in the stream.
func (st *memStream) lookup(id ID) (uint64, bool) {
	if st == nil {
		return 0, false
	}
	rev, ok := st.ids[id]
	return rev, ok
}

// NewMemoryStore returns an empty MemoryStore. It returns an error wrapping
// [ErrInvalid] for a negative option.
func NewMemoryStore(opts *MemoryStoreOptions) (*MemoryStore, error) {
	var o MemoryStoreOptions
	if opts != nil {
		o = *opts
	}
	maxEvent, maxBatch, err := storeLimits("MemoryStoreOptions", o.MaxEventSize, o.MaxBatchSize)
	if err != nil {
		return nil, err
	}
	return &MemoryStore{maxEvent: maxEvent, maxBatch: maxBatch, streams: make(map[string]*memStream), clock: commitClock{now: o.now}}, nil
}

// checkMade returns an error wrapping ErrInvalid for a nil MemoryStore, or
// one that NewMemoryStore did not make (a zero one has no size limit),
// given to call.
func (s *MemoryStore) checkMade(call string) error {
	if s == nil || s.maxEvent == 0 {
		return storeNotMade(call, "MemoryStore", "NewMemoryStore")
	}
	return nil
}

// Append implements [Store.Append].
func (s *MemoryStore) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	if err := s.checkMade("Append"); err != nil {
		return AppendResult{}, err
	}
	if err := liveContext(ctx, "Append"); err != nil {
		return AppendResult{}, err
	}
	size, err := checkEvents(stream, events, s.maxEvent, s.maxBatch)
	if err != nil {
		return AppendResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return AppendResult{}, ErrClosed
	}
	st := s.streams[stream]
	res, done, err := s.check(stream, st, expected, events)
	if done || err != nil {
		return res, err
	}
	res, _ = s.commit(stream, st, events, make([]byte, 0, size), s.clock.stamp())
	s.waiting.wake()
	return res, nil
}

// AppendMulti implements [Store.AppendMulti].
func (s *MemoryStore) AppendMulti(ctx context.Context, appends ...StreamAppend) ([]AppendResult, error) {
	if err := s.checkMade("AppendMulti"); err != nil {
		return nil, err
	}
	if err := liveContext(ctx, "AppendMulti"); err != nil {
		return nil, err
	}
	total, err := checkAppends(appends, s.maxEvent, s.maxBatch)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	results := make([]AppendResult, len(appends))
	done := make([]bool, len(appends))
	for i, a := range appends {
		var err error
		if results[i], done[i], err = s.check(a.Stream, s.streams[a.Stream], a.Expected, a.Events); err != nil {
			return nil, err
		}
	}
	arena, now := make([]byte, 0, total), s.clock.stamp()
	for i, a := range appends {
		if !done[i] {
			results[i], arena = s.commit(a.Stream, s.streams[a.Stream], a.Events, arena, now)
		}
	}
	s.waiting.wake()
	return results, nil
}

// check decides an append to stream, whose state is st (nil if new): it
// returns done and the original result for a replay of a committed batch,
// or an error. s.mu must be held.
func (s *MemoryStore) check(stream string, st *memStream, expected ExpectedRevision, events []EventData) (AppendResult, bool, error) {
	var l lives
	tombstoned := false
	if st != nil {
		l, tombstoned = st.lives, st.tombstoned
	}
	first, replay, err := decide(stream, tombstoned, expected, st.actual(), &l, events, st.lookup)
	if !replay || err != nil {
		return AppendResult{}, false, err
	}
	last := first + uint64(len(events)) - 1
	return AppendResult{Revision: last, Position: st.positions[last]}, true, nil
}

// commit appends events to stream, copying their data into arena, which
// has room for all of it, and returns the rest of arena. s.mu must be held.
func (s *MemoryStore) commit(stream string, st *memStream, events []EventData, arena []byte, now time.Time) (AppendResult, []byte) {
	if st == nil {
		st = &memStream{ids: make(map[ID]uint64, len(events))}
		s.streams[stream] = st
	}
	if st.deleted {
		st.deleted = false
		st.restart(uint64(len(st.positions)))
	}
	for i := range events {
		rev, pos := uint64(len(st.positions)), s.log.n
		e := events[i]
		if e.SchemaVersion == 0 {
			e.SchemaVersion = 1
		}
		if len(e.Metadata) > 0 {
			e.Metadata = maps.Clone(e.Metadata)
		} else {
			e.Metadata = nil
		}
		if len(e.Data) > 0 {
			n := len(arena)
			arena = append(arena, e.Data...)
			e.Data = arena[n:len(arena):len(arena)]
		} else {
			e.Data = nil // as a FileStore, which keeps no difference, reads it
		}
		s.log.append(&RecordedEvent{EventData: e, Stream: stream, Revision: rev, Position: pos, Time: now})
		st.positions = append(st.positions, pos)
		st.ids[e.ID] = rev
	}
	return AppendResult{Revision: uint64(len(st.positions) - 1), Position: s.log.n - 1}, arena[len(arena):]
}

// ReadStream implements [Store.ReadStream].
func (s *MemoryStore) ReadStream(ctx context.Context, stream string, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("ReadStream"); err != nil {
		return failed(err)
	}
	return readStream(ctx, s, &s.closed, stream, opts)
}

// streamView implements snapshotter.streamView.
func (s *MemoryStore) streamView(stream string, keep *streamKeep) streamView {
	s.mu.RLock()
	st, log := s.streams[stream], s.log
	var v streamView
	var positions []uint64
	if st != nil {
		positions = st.positions
		v = streamView{n: uint64(len(positions)), tombstoned: st.tombstoned, md: st.md}
		v.lo = lifeStart(st.start, v.n, st.deleted)
	}
	s.mu.RUnlock()
	v.get = func(rev uint64) (RecordedEvent, bool, error) {
		e := log.at(positions[rev])
		return *e, keep.keep(e), nil
	}
	return v
}

// ReadAll implements [Store.ReadAll].
func (s *MemoryStore) ReadAll(ctx context.Context, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("ReadAll"); err != nil {
		return failed(err)
	}
	return readAll(ctx, s, &s.closed, opts)
}

// logView implements snapshotter.logView.
func (s *MemoryStore) logView(f *Filter) (first, n uint64, get getter) {
	s.mu.RLock()
	log := s.log
	s.mu.RUnlock()
	return 0, log.n, log.matching(f)
}

// matching returns a getter of the events of l that f selects.
func (l memLog) matching(f *Filter) getter {
	return func(pos uint64) (RecordedEvent, bool, error) {
		e := l.at(pos)
		return *e, f.match(e.Stream, e.Type), nil
	}
}

// Subscribe implements [Store.Subscribe]. It starts no goroutine: the
// subscription runs in the goroutine iterating it.
func (s *MemoryStore) Subscribe(ctx context.Context, opts *SubscribeOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("Subscribe"); err != nil {
		return failed(err)
	}
	return catchUp{mu: &s.mu, closed: &s.closed, n: &s.log.n, waiting: &s.waiting, read: s.readFrom}.subscribe(ctx, opts)
}

// readFrom is catchUp.read.
func (s *MemoryStore) readFrom(ctx context.Context, f *Filter, next, n uint64, yield func(RecordedEvent, error) bool) bool {
	s.mu.RLock()
	log := s.log
	s.mu.RUnlock()
	return yieldEach(ctx, &s.closed, 0, span(Forwards, next, 0, n), log.matching(f), yield)
}

// Delete implements [Store.Delete].
func (s *MemoryStore) Delete(ctx context.Context, stream string, expected ExpectedRevision) error {
	return s.delete(ctx, "Delete", stream, expected, false)
}

// Tombstone implements [Store.Tombstone].
func (s *MemoryStore) Tombstone(ctx context.Context, stream string, expected ExpectedRevision) error {
	return s.delete(ctx, "Tombstone", stream, expected, true)
}

func (s *MemoryStore) delete(ctx context.Context, call, stream string, expected ExpectedRevision, tombstone bool) error {
	if err := s.checkMade(call); err != nil {
		return err
	}
	if err := liveContext(ctx, call); err != nil {
		return err
	}
	if err := checkStream(stream); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	st := s.streams[stream]
	if st != nil && st.tombstoned {
		return fmt.Errorf("%w: stream %q", ErrStreamDeleted, stream)
	}
	if err := expected.check(stream, st.actual()); err != nil {
		return err
	}
	if !tombstone && (st == nil || len(st.positions) == 0) {
		return nil // never written, so nothing to delete
	}
	if st == nil {
		st = &memStream{ids: make(map[ID]uint64)}
		s.streams[stream] = st
	}
	st.tombstoned = tombstone
	st.deleted = true
	return nil
}

// SetStreamMetadata implements [Store.SetStreamMetadata].
func (s *MemoryStore) SetStreamMetadata(ctx context.Context, stream string, md StreamMetadata) error {
	if err := s.checkMade("SetStreamMetadata"); err != nil {
		return err
	}
	if err := liveContext(ctx, "SetStreamMetadata"); err != nil {
		return err
	}
	if err := checkStream(stream); err != nil {
		return err
	}
	if md.MaxAge < 0 {
		return fmt.Errorf("%w: stream %q: MaxAge %v is negative", ErrInvalid, stream, md.MaxAge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	st := s.streams[stream]
	if st != nil && st.tombstoned {
		return fmt.Errorf("%w: stream %q", ErrStreamDeleted, stream)
	}
	if st == nil {
		st = &memStream{ids: make(map[ID]uint64)}
		s.streams[stream] = st
	}
	st.md = md
	return nil
}

// StreamInfo implements [Store.StreamInfo].
func (s *MemoryStore) StreamInfo(ctx context.Context, stream string) (StreamInfo, error) {
	if err := s.checkMade("StreamInfo"); err != nil {
		return StreamInfo{}, err
	}
	return stateOf(ctx, s, &s.mu, &s.closed, stream)
}

// info implements snapshotter.info.
func (s *MemoryStore) info(stream string) StreamInfo {
	st := s.streams[stream]
	if st == nil {
		return StreamInfo{}
	}
	return streamInfo(uint64(len(st.positions)), st.start, st.deleted, st.tombstoned, st.md)
}

// Close implements [Store.Close]. The events stay readable by iterators
// that are already past their start, until their next check.
func (s *MemoryStore) Close() error {
	if err := s.checkMade("Close"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed.Swap(true) {
		s.waiting.wake()
		s.log, s.streams = memLog{}, nil
	}
	return nil
}
