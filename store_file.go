package eventbus

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SyncPolicy says when a [FileStore] flushes appended events to stable
// storage with fsync.
type SyncPolicy uint8

const (
	// SyncAlways, the default, makes Append return only once its events
	// are on stable storage. Concurrent appends share one write and one
	// fsync (group commit), so throughput grows with concurrency.
	SyncAlways SyncPolicy = iota
	// SyncInterval makes Append return once its events are written to the
	// operating system, and flushes them every SyncInterval: a crash of
	// the process loses nothing, a crash of the machine loses at most the
	// last interval. The operating system may write the interval's pages
	// in any order, so such a crash can also leave a gap (zeros) before
	// later events that did reach the disk: opening then fails with a
	// [*CorruptionError], and [RepairFileStore] cuts the log at the gap.
	SyncInterval
	// SyncNever leaves flushing to the operating system, and to Close. A
	// crash of the machine can lose any events not yet flushed, and leave
	// gaps as with SyncInterval.
	SyncNever
)

// FileStoreOptions configures a [FileStore]. The zero value (or nil) takes
// the defaults.
type FileStoreOptions struct {
	// Sync is when appends reach stable storage; the zero value is
	// SyncAlways.
	Sync SyncPolicy
	// SyncInterval is the period of SyncInterval; zero means 100ms.
	SyncInterval time.Duration
	// MaxSegmentSize is the size past which appends go to a new segment
	// file, not counting the state of every stream that a segment starts
	// with under retention; zero means 64 MiB, and at most 1 GiB is
	// valid. Retention deletes whole segments.
	MaxSegmentSize int64
	// MaxEventSize and MaxBatchSize are the limits of [MemoryStoreOptions]:
	// zero means 1 MiB and 16 MiB, and a MaxBatchSize above 32 MiB is
	// invalid here. An append also fails with [ErrTooLarge] when its record
	// would take more than 64 MiB on disk, where each event takes about 90
	// bytes besides its size as the limits count it: a batch of 700,000
	// events of a few bytes, which a MemoryStore takes.
	MaxEventSize, MaxBatchSize int
	// RetainAge, if positive, deletes segments whose every event is older
	// than RetainAge, judged by the events' [RecordedEvent].Time and the
	// wall clock's reading when a new segment starts: a segment holding an
	// event whose Time is ahead of the wall clock (see RecordedEvent.Time)
	// is kept until RetainAge after that Time, and so is every later one.
	// RetainSize, if positive, deletes the oldest segments while the store
	// is larger than RetainSize bytes. The active segment is never
	// deleted, and the state of every stream (revisions, deletion,
	// metadata) survives the events it loses. Retention runs
	// when a new segment starts, and frees the memory the store kept for
	// the events it deletes: an event's ID makes a later append of it an
	// idempotent replay only while the event is kept. With a RetainSize
	// not many times MaxSegmentSize that can be moments: a retried append
	// (after a timeout, say) whose commit starts a segment may drop the
	// one its first try was written to, and be written again. A read or
	// subscription that retention overtakes skips the events it deletes
	// and has not read from their file yet (it reads a window of the file
	// at a time), as if they had been deleted before it reached them:
	// their positions are missing from what it yields.
	RetainAge  time.Duration
	RetainSize int64
	// ReadOnly opens the store for reading: it takes a shared lock, so
	// other read-only opens may share it, it changes no file and makes none
	// (an incomplete final record is ignored, not truncated; a missing LOCK
	// is not made), and appends fail with [ErrReadOnly]. It works on a
	// read-only file system too.
	ReadOnly bool
	// Progress, if not nil, is called while OpenFileStore reads the
	// segments, with the bytes read so far and in all.
	Progress func(done, total int64)

	fs     fileSystem       // for tests; nil means the operating system's
	locked bool             // the caller holds the lock of the directory
	now    func() time.Time // for tests; nil means time.Now
	window int              // for tests: the bytes an open reads at a time; zero means openWindow
}

// FileStore is a [Store] that keeps its events in append-only segment files
// in one directory, crash-safe: framed records with CRC-32C checksums, an
// atomic frame per append, fsync before acknowledging (see [SyncPolicy]),
// and recovery on open that cuts an incomplete final record but reports
// any other damage as a [*CorruptionError]. A final record is incomplete
// when cut short, and also when its checksum fails and a sector of it (512
// bytes, or its part of its last one) reads as zeros, as a write that a
// power loss left unwritten does: should those zeros be the event's own
// data, a flipped bit elsewhere in that record is cut as a crash would
// be, not reported. A record whose first sector reads as zeros from its
// start, its length among them (or, for a length that ends in the next
// sector, its part of it), is incomplete too when no complete record
// follows it: a power loss wrote later sectors of the write, not that one;
// and so is one whose length ends in a next sector that reads as zeros.
// Concurrent appends share one write (see [SyncAlways]), whose sectors a
// disk may write in any order: should a power loss leave zeros in one of
// its records but not in the last, opening fails with a
// [*CorruptionError] at that record, though nothing of that write was
// acknowledged, and [RepairFileStore] cuts it, losing nothing
// acknowledged. A store whose last segment files are gone (deleted by
// hand, left out of a restored copy) fails to open with a
// [*CorruptionError] for its file LAST, which names the last segment,
// rather than opening with their events lost and giving their positions
// to new appends; a store written by a version of this package without
// LAST gains it at its first open for writing. What no file records
// escapes: a last segment cut back at a record's end, or deleted with
// LAST, or the whole directory put back to an earlier state. One process
// at a time may open a directory: on Unix, a
// second open fails with [ErrLocked]; on other systems nothing stops it,
// and the application must not make one. The lock is on the directory and
// on its file LOCK (which versions of this package before the directory's
// lock lock alone: leave it there), which the operating system lets go of
// when the store is closed or its process ends, so a lock that a crash
// leaves is never stale. An open for writing makes LOCK if it is missing;
// a read-only one does not.
//
// The indexes (stream revisions, the position of each event, and its ID for
// idempotent appends) live in memory, rebuilt on open by reading every
// segment, so opening checks every checksum: about 44 bytes of heap per
// event (measured with a million events in 10,000 streams; 25 bytes for a
// ReadOnly store, which keeps no IDs). An open reads the segments 4 MiB at
// a time, whatever their size. Reads are lazy: they read events from
// the files as the loop advances. Appends go through one goroutine that
// writes and syncs the appends waiting at that moment together; Close stops
// it and lets go of the indexes.
//
// After a write or fsync fails, appends fail with an error wrapping the
// cause until the store is reopened: the appends of the failed write may
// be committed on disk or not, and reopening tells, after a failed write.
// After a failed fsync it may not: the operating system (Linux among
// them) can keep the pages it failed to write in its cache, where a
// reopened store reads them as committed, and report the failure to no
// later fsync, though a power loss, or the cache letting go of them, takes
// them back; reopen such a store once the machine has restarted. A
// FileStore is safe for concurrent use. The methods of a nil or zero
// FileStore, one not made by [OpenFileStore], return an error wrapping
// [ErrInvalid], its reads yield one, and its Stats are zero.
type FileStore struct {
	dir                string
	fs                 fileSystem
	opts               FileStoreOptions
	maxEvent, maxBatch int
	lock               *dirLock
	closed             atomic.Bool
	failed             atomic.Pointer[error]

	// Read side: what is committed, guarded by mu.
	mu      sync.RWMutex
	log     fileLog
	segs    []*segment
	streams map[string]*fileStream
	byID    []*fileStream
	// committed is how many streams of byID are committed: the committer
	// adds a stream as it decides the group that creates it, before the
	// group's write, which may fail.
	committed int
	waiting   waiters
	// retentionErr is the last failure to delete the files of dropped
	// segments (FileStoreStats.RetentionErr).
	retentionErr error

	w writer // write side: owned by the committer goroutine

	reqs      chan *request
	quit      chan struct{} // closed by Close
	done      chan struct{} // closed when the committer returns
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*FileStore)(nil)

// writer is the state of the committer: the log and streams including
// what is written but not yet published.
type writer struct {
	log fileLog
	// ids and exact find the kept events by stream and ID, for idempotent
	// appends: see addID.
	ids     *idTable
	exact   map[idKey]uint64
	pending []uint64  // while recovering: the entries of ids, see pendID
	hash    keyHasher // of the kept events' stream numbers and IDs
	// earlier holds, by stream number, where the lives of a stream before
	// its current one began, after the first (see lives), for the few
	// streams soft-deleted and written again more than once: only the
	// committer's appends look at them, so the read side of every stream
	// (fileStream.r) need not carry them, nor the write side of the others.
	earlier map[uint32][]uint64
	dropped []*segment // by retention, their files not yet deleted
	// recorded is the segment that the start file names, or 0.
	recorded uint64
	// last is the segment that the file LAST names, or 0.
	last   uint64
	active *segment
	size   int64 // of the active segment
	dirty  bool  // written since the last sync
	buf    []byte
	gen    uint64 // of the group being committed, to mark touched streams
	clock  commitClock

	// lost is the error of a failed sync of appends already acknowledged
	// (under SyncInterval or SyncNever): Close reports it.
	lost error
}

// idKey is an event ID in a stream.
type idKey struct {
	stream uint32
	id     ID
}

// addID records that the event id of stream is at pos, the last one
// logged. To take a quarter of the memory that the stream and ID as key
// and the position as value would, w.ids maps 32 bits of a hash of the
// stream and ID to the low 32 bits of the position: lookupID tells the
// position from them (see posOf) and checks the event's entry, which
// holds its ID and revision. An event whose hash a kept event holds
// already (the odds are one in 2 billion for each event kept: the table
// tells 31 bits apart, see idTable) goes to w.exact instead, by stream and
// ID, as does one that the low bits of its position cannot tell, 4
// billion positions past the first one kept.
func (w *writer) addID(stream uint32, id ID, pos uint64) {
	k := idKey{stream, id}
	h := uint32(w.hash.streamID(stream, id))
	if p, ok := w.ids.get(h); ok && w.posOf(p) < w.log.n || pos-w.log.first >= 1<<32 {
		w.keepExact(k, pos)
		return
	}
	w.ids.put(h, uint32(pos))
}

// keepExact records in w.exact that the event k is at pos, unless it holds
// a later position for k.
func (w *writer) keepExact(k idKey, pos uint64) {
	if w.exact == nil {
		w.exact = make(map[idKey]uint64)
	}
	if old, ok := w.exact[k]; !ok || old < pos {
		w.exact[k] = pos
	}
}

// pendID is addID while the store recovers: it keeps the entry of the ID
// in w.pending, which indexIDs makes w.ids of once every event is read.
func (w *writer) pendID(stream uint32, id ID, pos uint64) {
	k := idKey{stream, id}
	if pos-w.log.first >= 1<<32 {
		w.keepExact(k, pos)
		return
	}
	w.pending = append(w.pending, w.hash.streamID(stream, id)<<32|pos&(1<<32-1))
}

// indexIDs makes w.ids of the entries that pendID kept, all at once, and
// w.exact of those whose hash an earlier event holds, as addID would have
// one at a time, reading their IDs back from the segments.
func (s *FileStore) indexIDs() error {
	w := &s.w
	var err error
	w.ids = buildIDTable(w.pending, func(p uint32) {
		if err != nil {
			return
		}
		pos := w.posOf(p)
		var id ID
		if id, _, err = s.idAt(pos); err == nil {
			// The latest position wins, though pendID kept those past 4
			// billion positions first.
			w.keepExact(idKey{w.log.at(pos).stream, id}, pos)
		}
	})
	w.pending = nil
	return err
}

// posOf returns the position whose low 32 bits are p in the 4 billion
// from the first one kept, where every kept event of w.ids is. For an ID
// whose event retention removed, it returns a later position, at or past
// w.log.n unless 4 billion events were appended since; lookupID's check
// of the entry catches that case.
func (w *writer) posOf(p uint32) uint64 {
	return w.log.first + uint64(p-uint32(w.log.first))
}

// forgetIDs drops the IDs of the events that retention removed, those
// below the log's first position, as reopening the store would, once they
// are as many as the rest: a long-running store with retention keeps its
// memory bounded, and the committer rebuilds the table (which never
// shrinks) only after as many events as it keeps, not at every segment.
// Until then lookups skip the IDs below the first position.
func (w *writer) forgetIDs() {
	kept := w.log.n - w.log.first
	if uint64(w.ids.len()+len(w.exact)) < 2*kept {
		return
	}
	ids := newIDTable(int(kept))
	for h, p := range w.ids.all() {
		if w.posOf(p) < w.log.n {
			ids.put(h, p)
		}
	}
	w.ids = ids
	for k, pos := range w.exact {
		if pos < w.log.first {
			delete(w.exact, k)
		}
	}
}

// lookupID returns the revision of the event id in stream st, committed
// or in the group being committed, if the store keeps it. Only the
// committer calls it.
func (s *FileStore) lookupID(st *fileStream, id ID) (rev uint64, ok bool, err error) {
	w := &s.w
	k := idKey{st.id, id}
	pos, ok := w.exact[k]
	if !ok || pos < w.log.first {
		var p uint32
		p, ok = w.ids.get(uint32(w.hash.streamID(st.id, id)))
		pos = w.posOf(p)
		ok = ok && pos < w.log.n
	}
	if !ok || w.log.at(pos).stream != st.id {
		return 0, false, nil
	}
	got, rev, err := s.idAt(pos)
	if err != nil || got != id { // another event with the same hash
		return 0, false, err
	}
	return rev, true, nil
}

// idAt returns the ID and revision of the event at pos, reading the start
// of its entry from the group's buffer or from its segment. Only the
// committer calls it.
func (s *FileStore) idAt(pos uint64) (ID, uint64, error) {
	w := &s.w
	l := w.log.at(pos)
	seg := s.segs[int(l.seg)-int(s.segs[0].seq)] // only the committer changes s.segs
	off := int64(l.off)
	var b []byte
	if seg == w.active && off >= w.size {
		b = w.buf[off-w.size:]
	} else {
		// The length, position and revision, the time and the ID.
		b = make([]byte, 3*binary.MaxVarintLen64+8+16)
		if n, err := seg.f.ReadAt(b, off); n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				// Every entry is longer: the file was cut since, as
				// view.load reports it.
				return ID{}, 0, &CorruptionError{Path: seg.path, Offset: off, Reason: "the file ends inside a committed record"}
			}
			return ID{}, 0, fmt.Errorf("eventbus: read %s at %d: %w", seg.path, off, err)
		}
	}
	d := decoder{b: b}
	d.uvarint()
	p, rev, fixed := d.uvarint(), d.uvarint(), d.bytes(8+16)
	if d.bad || p != pos {
		return ID{}, 0, &CorruptionError{Path: seg.path, Offset: off, Reason: "bad entry"}
	}
	return ID(fixed[8:]), rev, nil
}

// fileLog locates events by position, in chunks that never move, like a
// memLog: the committer fills entries past n while readers read below.
// Retention drops the chunks before the one of first, skip of them, so
// that the log's memory follows the events kept, not every event ever
// appended.
type fileLog struct {
	chunks   []*[logChunk]loc // chunks[i] holds positions from (skip+i)*logChunk
	skip     uint64
	first, n uint64 // positions below first were removed by retention
	bytes    int64  // of every segment
}

// loc is where the entry of an event is.
type loc struct {
	seg, off, stream uint32
}

func (l *fileLog) at(pos uint64) loc { return l.chunks[pos/logChunk-l.skip][pos%logChunk] }

func (l *fileLog) append(x loc) {
	for l.skip+uint64(len(l.chunks)) <= l.n/logChunk {
		l.chunks = append(l.chunks, new([logChunk]loc))
	}
	l.chunks[l.n/logChunk-l.skip][l.n%logChunk] = x
	l.n++
}

// segment is one segment file.
type segment struct {
	seq, firstPos uint64
	path          string
	f             storeFile
	// Known to the committer only: the size once full (which Verify reads
	// too, of the segments before the last one it sees), the time of the
	// newest event, and the bytes of the state frames it starts with (zero
	// if it starts with none).
	size   int64
	newest int64
	states int64
	// removed is set by retention before it closes the file, for the
	// readers still using it.
	removed atomic.Bool
}

// fileStream is one stream of a FileStore, with its committed state r,
// read under FileStore.mu, and the committer's state w.
type fileStream struct {
	id      uint32
	name    string
	r, w    streamState
	touched uint64 // generation of the last group that changed w
}

// streamState is the state of a stream. Revisions before base were removed
// by retention; positions holds the position of every later one.
type streamState struct {
	positions  []uint64
	base       uint64
	start      uint64 // first revision of the current life: see StreamInfo.Start
	deleted    bool
	tombstoned bool
	md         StreamMetadata
}

func (st *streamState) next() uint64 { return st.base + uint64(len(st.positions)) }

// forget drops the positions below first, removed by retention, and
// reports whether there were any. Once the dropped ones are at least as
// many as the rest, the rest move to a new array (the old one goes once
// the readers still using it are done), so copying costs no more than the
// positions appended since.
func (st *streamState) forget(first uint64) bool {
	k, _ := slices.BinarySearch(st.positions, first)
	if k == 0 {
		return false
	}
	st.base += uint64(k)
	st.positions = st.positions[k:]
	if cap(st.positions) >= 2*len(st.positions) {
		st.positions = slices.Clone(st.positions)
	}
	return true
}

func (st *streamState) actual() ExpectedRevision {
	if st.deleted || st.next() == 0 {
		return NoStream
	}
	return Exact(st.next() - 1)
}

// request is an append, delete or metadata change for the committer.
type request struct {
	kind byte
	// kindEvents: the appends, their encoded bodies (ends[i] ends the
	// body of the i-th event of all appends) and an upper bound of the
	// frame's size.
	appends []StreamAppend
	bodies  []byte
	ends    []int
	size    int
	// kindDelete and kindMetadata
	stream    string
	expected  ExpectedRevision
	tombstone bool
	md        StreamMetadata

	results []AppendResult
	err     error
	done    chan struct{}
}

// OpenFileStore opens the store in directory dir, creating dir and the
// store if needed, and recovers it: it reads every segment, checks every
// checksum, cuts an incomplete final record left by a crash, syncs what a
// crashed process may have left unsynced, and rebuilds the indexes. It
// fails with a [*CorruptionError] for any other damage, segment files
// missing at the end or at the start among it, which [RepairFileStore] can
// cut away (for those at the start, by making the store start at the first
// segment left, as retention does), with an error wrapping [ErrLocked] if
// another FileStore has dir open, and with an error wrapping [ErrInvalid]
// for an empty dir, bad options, or a segment of a format version that it
// does not read (one written by a later version of this package, say),
// which is no damage for RepairFileStore to cut.
func OpenFileStore(dir string, opts *FileStoreOptions) (*FileStore, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: OpenFileStore: empty directory name", ErrInvalid)
	}
	var o FileStoreOptions
	if opts != nil {
		o = *opts
	}
	maxEvent, maxBatch, err := storeLimits("FileStoreOptions", o.MaxEventSize, o.MaxBatchSize)
	if err != nil {
		return nil, err
	}
	switch {
	case o.Sync > SyncNever:
		return nil, fmt.Errorf("%w: FileStoreOptions: Sync %d is not SyncAlways, SyncInterval or SyncNever", ErrInvalid, o.Sync)
	case o.SyncInterval < 0:
		return nil, fmt.Errorf("%w: FileStoreOptions: SyncInterval %v is negative", ErrInvalid, o.SyncInterval)
	case o.MaxSegmentSize < 0:
		return nil, fmt.Errorf("%w: FileStoreOptions: MaxSegmentSize %d is negative", ErrInvalid, o.MaxSegmentSize)
	case o.RetainAge < 0:
		return nil, fmt.Errorf("%w: FileStoreOptions: RetainAge %v is negative", ErrInvalid, o.RetainAge)
	case o.RetainSize < 0:
		return nil, fmt.Errorf("%w: FileStoreOptions: RetainSize %d is negative", ErrInvalid, o.RetainSize)
	case maxBatch > maxRecord/2:
		return nil, fmt.Errorf("%w: FileStoreOptions: MaxBatchSize %d is more than %d", ErrInvalid, maxBatch, maxRecord/2)
	case o.MaxSegmentSize > 1<<30:
		return nil, fmt.Errorf("%w: FileStoreOptions: MaxSegmentSize %d is more than 1 GiB", ErrInvalid, o.MaxSegmentSize)
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.MaxSegmentSize == 0 {
		o.MaxSegmentSize = 64 << 20
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
	if o.window == 0 {
		o.window = openWindow
	}
	if !o.ReadOnly {
		if err := makeDir(o.fs, dir); err != nil {
			return nil, fmt.Errorf("eventbus: open file store: %w", err)
		}
	} else if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("eventbus: open file store: %w", &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOTDIR})
	}
	var lock *dirLock
	if !o.locked {
		if lock, err = lockDir(dir, o.ReadOnly); err != nil {
			return nil, err
		}
	}
	s := &FileStore{
		dir: dir, fs: o.fs, opts: o, maxEvent: maxEvent, maxBatch: maxBatch, lock: lock,
		streams: make(map[string]*fileStream),
		w:       writer{ids: newIDTable(0), hash: *newKeyHasher()},
		reqs:    make(chan *request), quit: make(chan struct{}), done: make(chan struct{}),
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if o.ReadOnly {
		close(s.done)
	} else {
		go s.run()
	}
	return s, nil
}

// FileStoreStats describes a [FileStore].
type FileStoreStats struct {
	// Segments is the number of segment files the store reads, Bytes
	// the size of the records they hold: their total size but for an
	// incomplete final record, which a ReadOnly open leaves in its file
	// (and a failed write may leave there until the store is reopened).
	Segments int
	Bytes    int64
	// FirstPosition is the position of the oldest event kept (retention
	// deletes older ones); NextPosition the position of the next event.
	FirstPosition, NextPosition uint64
	// Streams is the number of streams ever written, deleted or given
	// metadata.
	Streams int
	// RetentionErr is the error that kept retention from deleting the
	// files of the segments it dropped, nil once it succeeds; it tries
	// again whenever a new segment starts, and opening the store (not
	// ReadOnly) does too. Meanwhile the store works on without those
	// segments: only their disk space is not freed.
	RetentionErr error
}

// checkMade returns an error wrapping ErrInvalid for a nil FileStore, or
// one that OpenFileStore did not make (a zero one has no committer to
// wait for), given to call.
func (s *FileStore) checkMade(call string) error {
	if s == nil || s.done == nil {
		return storeNotMade(call, "FileStore", "OpenFileStore")
	}
	return nil
}

// Stats returns the size of the store, as committed when it is called.
func (s *FileStore) Stats() FileStoreStats {
	if s.checkMade("Stats") != nil {
		return FileStoreStats{}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return FileStoreStats{Segments: len(s.segs), Bytes: s.log.bytes, FirstPosition: s.log.first, NextPosition: s.log.n, Streams: s.committed, RetentionErr: s.retentionErr}
}

// Append implements [Store.Append]. Under SyncAlways it returns once the
// events are on stable storage, or with the error that stopped them.
func (s *FileStore) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	if err := s.checkMade("Append"); err != nil {
		return AppendResult{}, err
	}
	if err := checkContext(ctx, "Append"); err != nil {
		return AppendResult{}, err
	}
	res, err := s.AppendMulti(ctx, StreamAppend{Stream: stream, Expected: expected, Events: events})
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

// AppendMulti implements [Store.AppendMulti].
func (s *FileStore) AppendMulti(ctx context.Context, appends ...StreamAppend) ([]AppendResult, error) {
	if err := s.checkMade("AppendMulti"); err != nil {
		return nil, err
	}
	if err := liveContext(ctx, "AppendMulti"); err != nil {
		return nil, err
	}
	if _, err := checkAppends(appends, s.maxEvent, s.maxBatch); err != nil {
		return nil, err
	}
	r := &request{kind: kindEvents, appends: appends}
	n := 0
	for _, a := range appends {
		n += len(a.Events)
	}
	r.ends = make([]int, 0, n)
	for _, a := range appends {
		for i := range a.Events {
			r.bodies = appendBody(r.bodies, &a.Events[i])
			r.ends = append(r.ends, len(r.bodies))
		}
	}
	// Each entry adds at most its length, position, revision and time;
	// each append its stream's name and two counts.
	r.size = len(r.bodies) + n*(3*binary.MaxVarintLen64+8) + 16
	for _, a := range appends {
		r.size += len(a.Stream) + 2*binary.MaxVarintLen64
	}
	if r.size > maxRecord {
		return nil, fmt.Errorf("%w: AppendMulti: %d events take %d bytes on disk, more than %d", ErrTooLarge, n, r.size, maxRecord)
	}
	if err := s.submit(ctx, r); err != nil {
		return nil, err
	}
	return r.results, nil
}

// submit hands r to the committer and waits for its outcome. Once handed
// over, r is committed or fails whatever ctx does.
func (s *FileStore) submit(ctx context.Context, r *request) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.opts.ReadOnly {
		return ErrReadOnly
	}
	if err := s.failure(); err != nil {
		return err
	}
	r.done = make(chan struct{})
	select {
	case s.reqs <- r:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-r.done
	return r.err
}

// failure returns the error that stopped appends, or nil.
func (s *FileStore) failure() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// run is the committer goroutine: it takes the requests waiting, commits
// them as one group, and does the syncs of SyncInterval. It returns when
// Close closes s.quit, answering the requests still waiting with
// ErrClosed.
func (s *FileStore) run() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.opts.Sync == SyncInterval {
		t := time.NewTicker(s.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	var group []*request
	var bytes int          // an upper bound of the group's frames
	var last int           // size of the last group
	var took time.Duration // how long the last commit took
	for {
		group, bytes = group[:0], 0
		select {
		case r := <-s.reqs:
			group, bytes = append(group, r), r.size
		case <-tick:
			// Also once the store has failed: the appends acknowledged
			// before the failure are written but maybe not synced.
			if s.w.dirty {
				s.w.dirty = false
				if err := s.w.active.f.Sync(); err != nil {
					s.w.lost = fmt.Errorf("sync %s: %w", s.w.active.path, err)
					s.fail(s.w.lost)
				}
			}
			continue
		case <-s.quit:
			return
		}
	more:
		for !s.full(group, bytes) {
			select {
			case r := <-s.reqs:
				group, bytes = append(group, r), bytes+r.size
			default:
				break more
			}
		}
		if s.opts.Sync == SyncAlways && last > 1 {
			group = s.gather(group, bytes, took)
		}
		start := time.Now()
		s.commit(group)
		last, took = len(group), time.Since(start)
		clear(group) // the requests answered, and the events they hold, go
	}
}

// gather lets the group grow while requests keep coming: until none has
// come for an eighth of took, the time the last commit took, and for half of
// it at most (within gatherQuiet and gatherMax). With concurrent appenders,
// those answered by the last commit come straight back, and waiting for them
// lets every appender share each sync instead of alternating between two
// part groups (PostgreSQL's commit_delay does the same). It yields rather
// than sleeps, since a timer shorter than a millisecond waits far longer on
// some machines; and it stops if the clock stands still, as it does in a
// testing/synctest bubble.
func (s *FileStore) gather(group []*request, bytes int, took time.Duration) []*request {
	quiet, most := min(took/8, gatherQuiet), min(took/2, gatherMax)
	start := time.Now()
	last := start // when the last request came
	for yielded := false; !s.full(group, bytes); yielded = true {
		select {
		case r := <-s.reqs:
			group, bytes = append(group, r), bytes+r.size
			last = time.Now()
			continue
		default:
		}
		now := time.Now()
		if now.Sub(last) >= quiet || now.Sub(start) >= most || yielded && now.Equal(start) {
			break
		}
		runtime.Gosched()
	}
	return group
}

// full reports whether group, whose events take bytes, is full: at 4,096
// requests, or at MaxSegmentSize bytes, so that a segment, which a group
// joins if it is not full yet, stays below twice MaxSegmentSize plus one
// request past the state frames it starts with, and its offsets fit in 32
// bits unless those take gigabytes.
func (s *FileStore) full(group []*request, bytes int) bool {
	return len(group) >= 4096 || int64(bytes) >= s.opts.MaxSegmentSize
}

// The bounds of gather's wait: the appenders of a group come back within
// microseconds, so waiting longer than this only burns CPU.
const (
	gatherQuiet = 200 * time.Microsecond
	gatherMax   = 2 * time.Millisecond
)

// fail stops appends after err, the failure of a write or sync.
func (s *FileStore) fail(err error) {
	err = fmt.Errorf("eventbus: file store failed, reopen it: %w", err)
	s.failed.CompareAndSwap(nil, &err)
}

// commit decides, writes and publishes a group of requests, then answers
// them.
func (s *FileStore) commit(group []*request) {
	defer func() {
		for _, r := range group {
			close(r.done)
		}
	}()
	w := &s.w
	if err := s.failure(); err != nil {
		for _, r := range group {
			r.err = err
		}
		return
	}
	if w.size-w.active.states >= s.opts.MaxSegmentSize {
		if err := s.roll(); err != nil {
			s.fail(err)
			for _, r := range group {
				r.err = s.failure()
			}
			return
		}
	}
	w.gen++
	w.buf = w.buf[:0]
	now := w.clock.stamp().UnixNano()
	n := w.log.n
	var touched []*fileStream
	for _, r := range group {
		switch r.kind {
		case kindEvents:
			r.err = s.commitEvents(r, now, &touched)
		default:
			r.err = s.commitStream(r, &touched)
		}
	}
	if w.log.n > n {
		// Retention judges a segment by its events alone (see
		// RetainAge), as recovery does: a delete or a metadata change
		// must not keep it.
		w.active.newest = now
	}
	if len(w.buf) > 0 {
		if err := s.write(w.buf); err != nil {
			s.fail(err)
			// Every request fails, whatever was decided for it: a replay
			// may replay events of this group, and a refusal (a wrong
			// expected revision, a deleted stream) may be due to its
			// appends and deletes, which may not be on disk.
			for _, r := range group {
				r.err, r.results = s.failure(), nil
			}
			return
		}
	}
	s.mu.Lock()
	for _, st := range touched {
		st.r = st.w
	}
	s.log = w.log
	s.committed = len(s.byID)
	s.waiting.wake()
	s.mu.Unlock()
	if cap(w.buf) > keptBuffer {
		w.buf = nil // grown by a burst of large appends: not kept for the next
	}
}

// keptBuffer is the largest buffer that the committer keeps for the next
// group: room for many small appends, while a larger group costs an
// allocation beside a write of over a megabyte.
const keptBuffer = 1 << 20

// write writes b to the active segment and syncs it as the policy says.
func (s *FileStore) write(b []byte) error {
	w := &s.w
	n, err := w.active.f.Write(b)
	w.size += int64(n)
	w.log.bytes += int64(n)
	if err != nil {
		return fmt.Errorf("write %s: %w", w.active.path, err)
	}
	w.dirty = true
	if s.opts.Sync == SyncAlways {
		w.dirty = false
		if err := w.active.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", w.active.path, err)
		}
	}
	return nil
}

// stream returns the stream named name, creating it if create is set.
// Only the committer and recovery call it.
func (s *FileStore) stream(name string, create bool) *fileStream {
	s.mu.RLock()
	st := s.streams[name]
	s.mu.RUnlock()
	if st != nil || !create {
		return st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st = &fileStream{id: uint32(len(s.byID)), name: name}
	s.streams[name] = st
	s.byID = append(s.byID, st)
	return st
}

// livesOf returns where the lives of st begin, by its write side.
func (w *writer) livesOf(st *fileStream) lives {
	return lives{start: st.w.start, earlier: w.earlier[st.id]}
}

// restart begins a new life of st, soft-deleted, at its next revision, as
// an append to it does.
func (w *writer) restart(st *fileStream) {
	l := w.livesOf(st)
	l.restart(st.w.next())
	st.w.deleted, st.w.start = false, l.start
	if len(l.earlier) > 0 {
		if w.earlier == nil {
			w.earlier = make(map[uint32][]uint64)
		}
		w.earlier[st.id] = l.earlier
	}
}

// trimLives drops the earlier lives of st that began before its first
// revision kept, once retention has removed those before it.
func (w *writer) trimLives(st *fileStream) {
	if _, ok := w.earlier[st.id]; !ok {
		return
	}
	l := w.livesOf(st)
	l.trim(st.w.base)
	if len(l.earlier) == 0 {
		delete(w.earlier, st.id)
	} else {
		w.earlier[st.id] = l.earlier
	}
}

func (st *fileStream) touch(gen uint64, touched *[]*fileStream) {
	if st.touched != gen {
		st.touched = gen
		*touched = append(*touched, st)
	}
}

// commitEvents decides the appends of r and, unless they are all replays,
// adds their frame to the group's buffer.
func (s *FileStore) commitEvents(r *request, now int64, touched *[]*fileStream) error {
	w := &s.w
	r.results = make([]AppendResult, len(r.appends))
	replay := make([]bool, len(r.appends))
	all := true
	for i, a := range r.appends {
		st := s.stream(a.Stream, false)
		var state streamState
		var l lives
		var lookup func(ID) (uint64, bool)
		var readErr error // of the lookups, which read the entries they find
		if st != nil {
			state = st.w
			l = w.livesOf(st)
			lookup = func(id ID) (uint64, bool) {
				rev, ok, err := s.lookupID(st, id)
				readErr = cmp.Or(readErr, err)
				return rev, ok
			}
		} else {
			lookup = func(ID) (uint64, bool) { return 0, false }
		}
		first, ok, err := decide(a.Stream, state.tombstoned, a.Expected, state.actual(), &l, a.Events, lookup)
		if err = cmp.Or(readErr, err); err != nil {
			r.results = nil
			return err
		}
		if ok {
			last := first + uint64(len(a.Events)) - 1
			r.results[i] = AppendResult{Revision: last, Position: st.w.positions[last-st.w.base]}
		}
		replay[i] = ok
		all = all && ok
	}
	if all {
		return nil
	}
	b, frame := beginFrame(w.buf, kindEvents)
	parts := 0
	for i := range r.appends {
		if !replay[i] {
			parts++
		}
	}
	b = binary.AppendUvarint(b, uint64(parts))
	body := 0
	for i, a := range r.appends {
		if replay[i] {
			body += len(a.Events)
			continue
		}
		st := s.stream(a.Stream, true)
		st.touch(w.gen, touched)
		if st.w.deleted {
			w.restart(st)
		}
		b = appendString(b, a.Stream)
		b = binary.AppendUvarint(b, uint64(len(a.Events)))
		for j := range a.Events {
			pos, rev := w.log.n, st.w.next()
			from := 0
			if body > 0 {
				from = r.ends[body-1]
			}
			off := w.size + int64(len(b))
			b = appendEntry(b, pos, rev, now, r.bodies[from:r.ends[body]])
			body++
			w.log.append(loc{seg: uint32(w.active.seq), off: uint32(off), stream: st.id})
			st.w.positions = append(st.w.positions, pos)
			w.addID(st.id, a.Events[j].ID, pos)
		}
		r.results[i] = AppendResult{Revision: st.w.next() - 1, Position: w.log.n - 1}
	}
	endFrame(b, frame)
	w.buf = b
	return nil
}

// commitStream decides a delete or a metadata change and adds its frame
// to the group's buffer, unless it changes nothing.
func (s *FileStore) commitStream(r *request, touched *[]*fileStream) error {
	w := &s.w
	st := s.stream(r.stream, false)
	var state streamState
	if st != nil {
		state = st.w
	}
	if state.tombstoned { // no delete, nor metadata, changes it any more
		return fmt.Errorf("%w: stream %q", ErrStreamDeleted, r.stream)
	}
	if r.kind == kindDelete {
		if err := r.expected.check(r.stream, state.actual()); err != nil {
			return err
		}
		if !r.tombstone && state.next() == 0 {
			return nil // never written, so nothing to delete
		}
	}
	st = s.stream(r.stream, true)
	st.touch(w.gen, touched)
	b, frame := beginFrame(w.buf, r.kind)
	b = appendString(b, r.stream)
	if r.kind == kindDelete {
		tomb := byte(0)
		if r.tombstone {
			tomb = 1
		}
		b = append(b, tomb)
		st.w.tombstoned = r.tombstone
		st.w.deleted = true
	} else {
		b = binary.AppendUvarint(b, r.md.MaxCount)
		b = binary.AppendUvarint(b, uint64(r.md.MaxAge))
		st.w.md = r.md
	}
	endFrame(b, frame)
	w.buf = b
	return nil
}

// view is what a read sees of the store: a snapshot of the read side.
type view struct {
	log   fileLog
	segs  []*segment
	byID  []*fileStream
	win   []byte // the bytes of the file of segment winSeg from winOff
	wseg  uint32
	woff  int64
	wsize int
	hits  int // loads the window served
	last  int // size of the last record read
	names map[string]string
	e     entry
}

// scatteredWindow is the least window of a view whose last one served a
// single event: room for a typical record, not for its neighbours.
const scatteredWindow = 1 << 10

func (s *FileStore) view(window int) *view {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &view{log: s.log, segs: s.segs, byID: s.byID, wsize: window, names: make(map[string]string)}
}

// load makes v.win hold need bytes at off in segment seg. A new window
// holds v.wsize bytes, or fewer where v reads fewer: reads end at the last
// event of v.log, so a window stops at that segment's last event plus
// room for a typical record (a larger one takes a second, exact load).
// A subscription that follows appends reads a few bytes per wake, not a
// whole window.
func (v *view) load(seg uint32, off int64, need int) ([]byte, error) {
	if seg == v.wseg && off >= v.woff && off+int64(need) <= v.woff+int64(len(v.win)) {
		v.hits++
		return v.win[off-v.woff:], nil
	}
	i := int(seg) - int(v.segs[0].seq)
	if i < 0 || i >= len(v.segs) {
		return nil, fmt.Errorf("eventbus: segment %d is not in the store", seg)
	}
	if v.segs[i].removed.Load() {
		return nil, fmt.Errorf("%w: segment %d", errRetained, seg)
	}
	// A window that served one event at most (whose two loads are a miss
	// and a hit), followed by a read elsewhere, not across its end, means
	// scattered reads, such as a stream among others: the next window holds
	// about one record.
	size := v.wsize
	away := seg != v.wseg || off < v.woff || off > v.woff+int64(len(v.win))
	if v.win != nil && v.hits < 2 && away {
		size = min(size, max(scatteredWindow, v.last))
	}
	last := v.log.n - 1 // the last event of segment i that v may read
	if i+1 < len(v.segs) {
		last = min(last, v.segs[i+1].firstPos-1)
	}
	if l := v.log.at(last); l.seg == seg && int64(l.off) >= off {
		size = min(size, int(int64(l.off)-off)+scatteredWindow)
	}
	v.hits = 0
	// A new buffer each time: events read earlier share the old one.
	buf := make([]byte, max(need, size))
	n, err := v.segs[i].f.ReadAt(buf, off)
	if n < need {
		if v.segs[i].removed.Load() { // dropped meanwhile
			return nil, fmt.Errorf("%w: segment %d", errRetained, seg)
		}
		if err == nil || errors.Is(err, io.EOF) {
			// The store read the record whole: the file was cut since.
			return nil, &CorruptionError{Path: v.segs[i].path, Offset: off, Reason: "the file ends inside a committed record"}
		}
		return nil, fmt.Errorf("eventbus: read %s at %d: %w", v.segs[i].path, off, err)
	}
	v.win, v.wseg, v.woff = buf[:n], seg, off
	return v.win, nil
}

// event reads the event at pos.
func (v *view) event(pos uint64) (RecordedEvent, error) {
	l := v.log.at(pos)
	b, err := v.load(l.seg, int64(l.off), binary.MaxVarintLen64)
	if err != nil {
		return RecordedEvent{}, err
	}
	size, n := binary.Uvarint(b[:binary.MaxVarintLen64])
	if n <= 0 || size > maxRecord {
		return RecordedEvent{}, v.corrupt(l, "bad entry length")
	}
	v.last = n + int(size)
	if b, err = v.load(l.seg, int64(l.off), v.last); err != nil {
		return RecordedEvent{}, err
	}
	if err := decodeEntry(b[n:n+int(size)], &v.e); err != nil || v.e.pos != pos {
		return RecordedEvent{}, v.corrupt(l, "bad entry")
	}
	return v.e.recorded(v.byID[l.stream].name, v.names), nil
}

func (v *view) corrupt(l loc, reason string) error {
	return &CorruptionError{Path: v.segs[int(l.seg)-int(v.segs[0].seq)].path, Offset: int64(l.off), Reason: reason}
}

// matching returns a getter of the events that f selects.
func (v *view) matching(f *Filter) getter {
	return func(pos uint64) (RecordedEvent, bool, error) {
		if !f.matchStream(v.byID[v.log.at(pos).stream].name) {
			return RecordedEvent{}, false, nil
		}
		e, err := v.event(pos)
		if err != nil {
			return e, false, err
		}
		return e, f.match(e.Stream, e.Type), nil
	}
}

// ReadStream implements [Store.ReadStream].
func (s *FileStore) ReadStream(ctx context.Context, stream string, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("ReadStream"); err != nil {
		return failed(err)
	}
	return readStream(ctx, s, &s.closed, stream, opts)
}

// streamView implements snapshotter.streamView.
func (s *FileStore) streamView(stream string, keep *streamKeep) streamView {
	s.mu.RLock()
	var state streamState
	if st := s.streams[stream]; st != nil {
		state = st.r
	}
	s.mu.RUnlock()
	v := s.view(8 << 10)
	// After retention the stream starts at its first event kept.
	kept, _ := slices.BinarySearch(state.positions, v.log.first)
	return streamView{
		lo:         max(lifeStart(state.start, state.next(), state.deleted), state.base+uint64(kept)),
		n:          state.next(),
		tombstoned: state.tombstoned,
		md:         state.md,
		get: func(rev uint64) (RecordedEvent, bool, error) {
			e, err := v.event(state.positions[rev-state.base])
			return e, err == nil && keep.keep(&e), err
		},
	}
}

// ReadAll implements [Store.ReadAll]. After retention, it starts at the
// first event kept.
func (s *FileStore) ReadAll(ctx context.Context, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("ReadAll"); err != nil {
		return failed(err)
	}
	return readAll(ctx, s, &s.closed, opts)
}

// logView implements snapshotter.logView.
func (s *FileStore) logView(f *Filter) (first, n uint64, get getter) {
	v := s.view(256 << 10)
	return v.log.first, v.log.n, v.matching(f)
}

// Subscribe implements [Store.Subscribe]. It starts no goroutine: the
// subscription runs in the goroutine iterating it.
func (s *FileStore) Subscribe(ctx context.Context, opts *SubscribeOptions) iter.Seq2[RecordedEvent, error] {
	if err := s.checkMade("Subscribe"); err != nil {
		return failed(err)
	}
	return catchUp{mu: &s.mu, closed: &s.closed, n: &s.log.n, waiting: &s.waiting, read: s.readFrom}.subscribe(ctx, opts)
}

// readFrom is catchUp.read.
func (s *FileStore) readFrom(ctx context.Context, f *Filter, next, n uint64, yield func(RecordedEvent, error) bool) bool {
	v := s.view(64 << 10)
	// The read ends at n, which may be below the end of the snapshot: its
	// windows need not reach past it.
	v.log.n = n
	return yieldEach(ctx, &s.closed, 0, span(Forwards, next, v.log.first, n), v.matching(f), yield)
}

// Delete implements [Store.Delete].
func (s *FileStore) Delete(ctx context.Context, stream string, expected ExpectedRevision) error {
	return s.changeStream(ctx, "Delete", &request{kind: kindDelete, stream: stream, expected: expected})
}

// Tombstone implements [Store.Tombstone].
func (s *FileStore) Tombstone(ctx context.Context, stream string, expected ExpectedRevision) error {
	return s.changeStream(ctx, "Tombstone", &request{kind: kindDelete, stream: stream, expected: expected, tombstone: true})
}

// SetStreamMetadata implements [Store.SetStreamMetadata].
func (s *FileStore) SetStreamMetadata(ctx context.Context, stream string, md StreamMetadata) error {
	return s.changeStream(ctx, "SetStreamMetadata", &request{kind: kindMetadata, stream: stream, md: md})
}

func (s *FileStore) changeStream(ctx context.Context, call string, r *request) error {
	if err := s.checkMade(call); err != nil {
		return err
	}
	if err := liveContext(ctx, call); err != nil {
		return err
	}
	if err := checkStream(r.stream); err != nil {
		return err
	}
	if r.md.MaxAge < 0 {
		return fmt.Errorf("%w: stream %q: MaxAge %v is negative", ErrInvalid, r.stream, r.md.MaxAge)
	}
	return s.submit(ctx, r)
}

// StreamInfo implements [Store.StreamInfo].
func (s *FileStore) StreamInfo(ctx context.Context, stream string) (StreamInfo, error) {
	if err := s.checkMade("StreamInfo"); err != nil {
		return StreamInfo{}, err
	}
	return stateOf(ctx, s, &s.mu, &s.closed, stream)
}

// info implements snapshotter.info.
func (s *FileStore) info(stream string) StreamInfo {
	st := s.streams[stream]
	if st == nil {
		return StreamInfo{}
	}
	r := &st.r
	return streamInfo(r.next(), r.start, r.deleted, r.tombstoned, r.md)
}

// Close implements [Store.Close]: it stops the committer, syncs what it
// wrote, and closes the files. Running iterators end with ErrClosed. It
// returns an error if that sync fails, or if an earlier sync of appends
// it had acknowledged (under SyncInterval or SyncNever) failed: those
// appends may not be on stable storage.
func (s *FileStore) Close() error {
	if err := s.checkMade("Close"); err != nil {
		return err
	}
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		s.waiting.wake()
		s.mu.Unlock()
		close(s.quit)
		<-s.done
		// A failed store syncs too, for the appends it acknowledged
		// before the failure. If a sync of such appends failed already,
		// they may not be on stable storage, and the application may
		// have appended nothing since to learn it.
		if s.w.lost != nil {
			s.closeErr = fmt.Errorf("eventbus: close file store: appends acknowledged before the failure may be lost: %w", s.w.lost)
		} else if s.w.active != nil && s.w.dirty {
			if err := s.w.active.f.Sync(); err != nil {
				s.closeErr = fmt.Errorf("eventbus: close file store: sync %s: %w", s.w.active.path, err)
			}
		}
		s.closeErr = errors.Join(s.closeErr, s.closeFiles())
		// The indexes go, as a MemoryStore's events do: reads from now on
		// end with ErrClosed before they look at them, and those already
		// running read views of their own. Stats keeps its counts.
		s.mu.Lock()
		s.log.chunks, s.streams = nil, nil
		for _, st := range s.byID {
			st.r.positions, st.w.positions = nil, nil
		}
		s.mu.Unlock()
		s.w = writer{}
	})
	return s.closeErr
}

// closeFiles closes the segments and releases the lock.
func (s *FileStore) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		if err := seg.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	// nil for a store that RepairFileStore opens under its own lock
	if s.lock != nil {
		if err := s.lock.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
