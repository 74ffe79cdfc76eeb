package eventbus

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFileStoreRetentionForgets checks that retention drops from memory
// what it deletes from disk, the removed events' stream positions, IDs and
// locations (not even a slot per chunk of them is left, as it was, which
// grew with every event ever appended), and the lives of a stream
// soft-deleted before each append, so that a long-running store keeps
// its memory bounded; and that the store
// then answers reads and idempotent appends as it does once reopened, which
// rebuilds its memory from the kept segments alone.
func TestFileStoreRetentionForgets(t *testing.T) {
	dir := t.TempDir()
	opts := &FileStoreOptions{Sync: SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10}
	s, err := OpenFileStore(dir, opts)
	require.NoError(t, err)
	ctx := t.Context()
	streams := []string{"a", "b", "c"}
	var ids []ID // of every append, by position
	for i := range 3000 {
		ids = append(ids, NewID())
		if i%3 == 2 {
			require.NoError(t, s.Delete(ctx, "c", Any))
		}
		_, err := s.Append(ctx, streams[i%3], Any, EventData{ID: ids[i], Type: "t", Data: []byte(strings.Repeat("x", i%50))})
		require.NoError(t, err)
	}
	// Append has returned: the committer is idle and its state visible.
	remembers := func(s *FileStore) {
		t.Helper()
		first, kept := s.w.log.first, s.w.log.n-s.w.log.first
		require.Positive(t, first, "retention removed segments")
		require.LessOrEqual(t, uint64(s.w.ids.len()+len(s.w.exact)), 2*kept, "IDs remembered, against events kept")
		require.LessOrEqual(t, uint64(len(s.w.log.chunks)), kept/logChunk+2, "chunks of event locations, against events kept")
		require.Equal(t, s.w.log.chunks, s.log.chunks, "chunks of the read and write sides")
		var positions uint64
		for _, st := range s.byID {
			require.Equal(t, st.w.base, st.r.base, "stream %s: read and write sides", st.name)
			if len(st.w.positions) > 0 {
				require.GreaterOrEqual(t, st.w.positions[0], first, "stream %s remembers a removed position", st.name)
			}
			positions += uint64(len(st.w.positions))
			require.LessOrEqual(t, len(s.w.earlier[st.id]), len(st.w.positions), "stream %s: lives remembered, against events kept", st.name)
		}
		require.Equal(t, kept, positions, "stream positions remembered, against events kept")
	}
	remembers(s)

	// The events kept, per stream, and the answers to idempotent appends of
	// a kept event and of a removed one, before and after reopening.
	type answers struct {
		streams       map[string][]RecordedEvent
		keptReplay    AppendResult
		lifeReplay    AppendResult
		removedAppend AppendResult
	}
	ask := func(s *FileStore) answers {
		t.Helper()
		a := answers{streams: map[string][]RecordedEvent{}}
		for _, name := range streams {
			for e, err := range s.ReadStream(ctx, name, nil) {
				require.NoError(t, err)
				a.streams[name] = append(a.streams[name], e)
			}
		}
		last := len(ids) - 1
		a.keptReplay, err = s.Append(ctx, streams[last%3], Any, EventData{ID: ids[last], Type: "t", Data: []byte(strings.Repeat("x", last%50))})
		require.NoError(t, err)
		// The append before the last to "c", which began a life.
		a.lifeReplay, err = s.Append(ctx, "c", NoStream, EventData{ID: ids[last-3], Type: "t"})
		require.NoError(t, err)
		a.removedAppend, err = s.Append(ctx, streams[0], Any, EventData{ID: ids[0], Type: "t"})
		require.NoError(t, err)
		return a
	}
	// Reopen a copy of the segments, since s holds the directory's lock.
	copied := t.TempDir()
	segments, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	require.NotEmpty(t, segments)
	for _, path := range segments {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(copied, filepath.Base(path)), b, 0o644))
	}
	reopened, err := OpenFileStore(copied, opts)
	require.NoError(t, err)
	defer reopened.Close()
	remembers(reopened)

	want := ask(reopened)
	got := ask(s)
	require.Equal(t, want, got, "the store answers as it does once reopened")
	require.Equal(t, uint64(len(ids)-1), got.keptReplay.Position, "a kept event's ID is recognised")
	require.Equal(t, uint64(len(ids)-4), got.lifeReplay.Position, "a kept earlier life's first event is recognised")
	require.Equal(t, uint64(len(ids)), got.removedAppend.Position, "a removed event's ID is not")
	require.NoError(t, s.Close())
}

// TestFileStoreIDCollision makes one event's ID hash to the position of
// another, as a collision of the 32-bit hashes that index the IDs would:
// appending it must append it, not take it for the other (the index holds
// no IDs, and a lookup checks the entry it finds), and appending it or the
// other again must replay each one.
func TestFileStoreIDCollision(t *testing.T) {
	s, err := OpenFileStore(t.TempDir(), &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	defer s.Close()
	ctx := t.Context()
	a := EventData{ID: NewID(), Type: "t"}
	b := EventData{ID: NewID(), Type: "t"}
	res, err := s.Append(ctx, "s", Any, a)
	require.NoError(t, err)
	// Append has returned: the committer is idle.
	stream := s.streams["s"].id
	s.w.ids.put(uint32(s.w.hash.streamID(stream, b.ID)), uint32(res.Position))

	res, err = s.Append(ctx, "s", Any, b)
	require.NoError(t, err)
	require.Equal(t, AppendResult{Revision: 1, Position: 1}, res, "Append of an event whose hash another one holds")
	require.Len(t, s.w.exact, 1, "events indexed by stream and ID")
	res, err = s.Append(ctx, "s", Any, b)
	require.NoError(t, err)
	require.Equal(t, AppendResult{Revision: 1, Position: 1}, res, "Append of it again")
	res, err = s.Append(ctx, "s", Any, a)
	require.NoError(t, err)
	require.Equal(t, AppendResult{Revision: 0, Position: 0}, res, "Append of the other one again")
	// In another stream, an event whose hash the other one holds, its own
	// ID and stream among them, is no replay of it either.
	res, err = s.Append(ctx, "other", Any, EventData{ID: NewID(), Type: "t"})
	require.NoError(t, err)
	require.Equal(t, AppendResult{Revision: 0, Position: 2}, res, "Append to another stream")
	s.w.ids.put(uint32(s.w.hash.streamID(s.streams["other"].id, a.ID)), 0)
	res, err = s.Append(ctx, "other", Any, a)
	require.NoError(t, err)
	require.Equal(t, AppendResult{Revision: 1, Position: 3}, res, "Append of the other one to another stream")
}

// TestFileStoreIDCollisionRetention checks the IDs that w.exact holds, of
// events whose hash another one held (with a million events kept, one
// append in 2,000), under retention: the ID of an event that retention
// removed is no replay, and that of every kept one is, the first kept
// among them.
func TestFileStoreIDCollisionRetention(t *testing.T) {
	ctx := t.Context()
	open := func(t *testing.T) *FileStore {
		s, err := OpenFileStore(t.TempDir(), &FileStoreOptions{Sync: SyncNever, MaxSegmentSize: 1 << 10, RetainSize: 8 << 10})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	// add appends an event to stream "s" and returns it. If collide is
	// set, the event's hash holds the position of the one before, so that
	// it goes to w.exact; Append has returned, so the committer is idle.
	add := func(t *testing.T, s *FileStore, collide bool) EventData {
		e := EventData{ID: NewID(), Type: "t", Data: []byte(strings.Repeat("x", 40))}
		if collide {
			s.w.ids.put(uint32(s.w.hash.streamID(s.streams["s"].id, e.ID)), uint32(s.w.log.n-1))
		}
		_, err := s.Append(ctx, "s", Any, e)
		require.NoError(t, err)
		return e
	}
	t.Run("removed", func(t *testing.T) {
		s := open(t)
		add(t, s, false)
		removed := add(t, s, true)
		require.Len(t, s.w.exact, 1, "events indexed by stream and ID")
		for s.Stats().FirstPosition < 2 {
			add(t, s, false)
		}
		require.Len(t, s.w.exact, 1, "events indexed by stream and ID, before they are forgotten")
		next := s.Stats().NextPosition
		res, err := s.Append(ctx, "s", Any, removed)
		require.NoError(t, err)
		require.Equal(t, next, res.Position, "position of an event appended again after retention removed it")
	})
	t.Run("kept", func(t *testing.T) {
		s := open(t)
		events := []EventData{add(t, s, false)}
		for s.Stats().FirstPosition < 100 {
			events = append(events, add(t, s, true))
		}
		st := s.Stats()
		for pos := st.FirstPosition; pos < st.NextPosition; pos++ {
			res, err := s.Append(ctx, "s", Any, events[pos])
			require.NoError(t, err)
			require.Equal(t, AppendResult{Revision: pos, Position: pos}, res, "Append of the kept event at %d again", pos)
		}
		require.Equal(t, st.NextPosition, s.Stats().NextPosition, "next position after the replays")
	})
}

// TestWriterIDPositions checks that the index of IDs tells the positions
// from their low 32 bits within 4 billion positions of the first one kept,
// and keeps by stream and ID an event past those.
func TestWriterIDPositions(t *testing.T) {
	w := writer{ids: newIDTable(0), log: fileLog{first: 1<<32 - 2, n: 1<<33 - 2}}
	for _, pos := range []uint64{1<<32 - 2, 1<<32 - 1, 1 << 32, 1<<32 + 5, 1<<33 - 3} {
		require.Equal(t, pos, w.posOf(uint32(pos)), "posOf(%#x)", uint32(pos))
	}
	w.log.n = 1<<33 - 1
	w.addID(0, NewID(), 1<<33-2)
	require.Zero(t, w.ids.len(), "IDs indexed by hash")
	require.Len(t, w.exact, 1, "IDs indexed by stream and ID")
}

// TestFileStoreReadOnlyKeepsNoIDs checks that a read-only store, which
// appends nothing, does not index the IDs of its events.
func TestFileStoreReadOnlyKeepsNoIDs(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	_, err = s.Append(t.Context(), "s", Any, EventData{ID: NewID(), Type: "t"}, EventData{ID: NewID(), Type: "t"})
	require.NoError(t, err)
	require.Equal(t, 2, s.w.ids.len(), "IDs indexed by a read-write store")
	require.NoError(t, s.Close())
	s, err = OpenFileStore(dir, &FileStoreOptions{ReadOnly: true})
	require.NoError(t, err)
	defer s.Close()
	require.Zero(t, s.w.ids.len(), "IDs indexed by a read-only store")
}

// TestFileStoreNegativeMaxAge opens stores whose segment gives a stream a
// negative MaxAge, which SetStreamMetadata refuses: in a metadata frame or
// in a state frame, it is corruption.
func TestFileStoreNegativeMaxAge(t *testing.T) {
	d := -time.Second
	negative := uint64(d)
	for name, payload := range map[string][]byte{
		"metadata": binary.AppendUvarint([]byte{kindMetadata, 1, 's', 0}, negative),
		"state":    binary.AppendUvarint([]byte{kindState, 1, 1, 's', 3, 1, 0, 0}, negative),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b, frame := beginFrame(segHeader{seq: 1}.encode(), payload[0])
			b = append(b, payload[1:]...)
			endFrame(b, frame)
			require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o644))
			s, err := OpenFileStore(dir, nil)
			if err == nil {
				info, _ := s.StreamInfo(t.Context(), "s")
				s.Close()
				t.Fatalf("OpenFileStore opened a store whose %s frame gives a MaxAge of %v", name, info.Metadata.MaxAge)
			}
			var ce *CorruptionError
			require.ErrorAs(t, err, &ce, "OpenFileStore")
			require.Equal(t, int64(segHeaderSize), ce.Offset, "offset of the bad frame")
		})
	}
}

// TestFileStoreMaxSegmentSizeDefault checks that a MaxSegmentSize of zero,
// or no options at all, means 64 MiB, as FileStoreOptions says, and that
// a size given is kept: what commit compares a segment's size against
// when it decides to start a new one.
func TestFileStoreMaxSegmentSizeDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *FileStoreOptions
		want int64
	}{
		{"nil", nil, 64 << 20},
		{"zero", &FileStoreOptions{}, 64 << 20},
		{"given", &FileStoreOptions{MaxSegmentSize: 1 << 10}, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenFileStore(t.TempDir(), tc.opts)
			require.NoError(t, err)
			defer s.Close()
			if got := s.opts.MaxSegmentSize; got != tc.want {
				t.Errorf("OpenFileStore with %s options: MaxSegmentSize = %d, want %d", tc.name, got, tc.want)
			}
		})
	}
}

// TestMissingStartReason checks the reason given for a store whose first
// segments are missing: it names them, and the events lost with them only
// when there were any.
func TestMissingStartReason(t *testing.T) {
	for _, tc := range []struct {
		seq, first uint64
		want       string
	}{
		{2, 5, "segment seg-0000000000000001.log is missing, with the events before position 5: the store starts at this segment, without the state of the streams"},
		{4, 9, "segments seg-0000000000000001.log to seg-0000000000000003.log are missing, with the events before position 9: the store starts at this segment, without the state of the streams"},
		{2, 0, "segment seg-0000000000000001.log is missing: the store starts at this segment, without the state of the streams"},
	} {
		var ce *CorruptionError
		require.ErrorAs(t, missingStart("seg", tc.seq, tc.first), &ce)
		require.Equal(t, tc.want, ce.Reason)
	}
}
