package eventbus

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFileStoreIDCollisionOnOpen has the index of IDs that an open builds
// find two events under one hash, as a collision of the 32-bit hashes
// would: the later one goes to w.exact, read back from its segment, and
// appending either again replays it.
func TestFileStoreIDCollisionOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	ctx := t.Context()
	a := EventData{ID: NewID(), Type: "t"}
	b := EventData{ID: NewID(), Type: "t"}
	c := EventData{ID: NewID(), Type: "t"}
	_, err = s.Append(ctx, "s", Any, a)
	require.NoError(t, err)
	_, err = s.Append(ctx, "other", Any, b, c)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s, err = OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	defer s.Close()
	// The committer is idle until the first append: index again, as the
	// open did, with b's entry under a's hash.
	ha := s.w.hash.streamID(s.streams["s"].id, a.ID)
	hc := s.w.hash.streamID(s.streams["other"].id, c.ID)
	s.w.pending = []uint64{ha << 32, ha<<32 | 1, hc<<32 | 2} // positions 0, 1 and 2
	s.w.exact = nil
	require.NoError(t, s.indexIDs())
	require.Equal(t, map[idKey]uint64{{s.streams["other"].id, b.ID}: 1}, s.w.exact, "events indexed by stream and ID")
	for _, tc := range []struct {
		stream string
		e      EventData
		want   AppendResult
	}{
		{"s", a, AppendResult{Revision: 0, Position: 0}},
		{"other", b, AppendResult{Revision: 0, Position: 1}},
		{"other", c, AppendResult{Revision: 1, Position: 2}},
	} {
		res, err := s.Append(ctx, tc.stream, Any, tc.e)
		require.NoError(t, err)
		require.Equal(t, tc.want, res, "Append of the event at position %d again", tc.want.Position)
	}
	require.Equal(t, uint64(3), s.Stats().NextPosition, "events stored")
}

// TestFileStoreIDCollisionOnOpenRetention is TestFileStoreIDCollisionOnOpen
// on a store whose first kept position is not 0 (retention removed the
// older segments), with the colliding hashes differing in their lowest bit,
// which the table takes as one key.
func TestFileStoreIDCollisionOnOpenRetention(t *testing.T) {
	dir := t.TempDir()
	opts := &FileStoreOptions{Sync: SyncNever, MaxSegmentSize: 1 << 10, RetainSize: 4 << 10}
	s, err := OpenFileStore(dir, opts)
	require.NoError(t, err)
	ctx := t.Context()
	var events []EventData // by position, all in stream "s"
	for s.Stats().FirstPosition < 50 {
		e := EventData{ID: NewID(), Type: "t", Data: []byte(strings.Repeat("x", 40))}
		_, err := s.Append(ctx, "s", Any, e)
		require.NoError(t, err)
		events = append(events, e)
	}
	require.NoError(t, s.Close())

	s, err = OpenFileStore(dir, opts)
	require.NoError(t, err)
	defer s.Close()
	first := s.Stats().FirstPosition
	require.NotZero(t, first, "first position kept")
	id := s.streams["s"].id
	p0, p1, p2 := first, first+1, first+2
	h0 := s.w.hash.streamID(id, events[p0].ID)
	h2 := s.w.hash.streamID(id, events[p2].ID)
	// The committer is idle until the first append: index again, with
	// p1's entry under p0's hash (its other lowest bit: one key).
	s.w.pending = []uint64{h0<<32 | p0, (h0^1)<<32 | p1, h2<<32 | p2}
	s.w.exact = nil
	require.NoError(t, s.indexIDs())
	require.Equal(t, map[idKey]uint64{{id, events[p1].ID}: p1}, s.w.exact, "events indexed by stream and ID")
	for _, pos := range []uint64{p0, p1, p2} {
		res, err := s.Append(ctx, "s", Any, events[pos])
		require.NoError(t, err)
		require.Equal(t, AppendResult{Revision: pos, Position: pos}, res, "Append of the event at position %d again", pos)
	}
}

// TestWriterPendIDPositions is TestWriterIDPositions for pendID: an event
// 4 billion positions past the first one kept goes to w.exact at once, and
// one before keeps the low bits of its position.
func TestWriterPendIDPositions(t *testing.T) {
	w := writer{log: fileLog{first: 1<<32 - 2, n: 1<<33 - 1}}
	w.pendID(0, NewID(), 1<<33-2)
	require.Empty(t, w.pending, "entries kept for the index by hash")
	require.Len(t, w.exact, 1, "IDs indexed by stream and ID")
	w.pendID(0, NewID(), 1<<33-3)
	require.Len(t, w.pending, 1, "entries kept for the index by hash")
	require.Equal(t, uint64(1<<33-3)&(1<<32-1), w.pending[0]&(1<<32-1), "position kept")
	require.Equal(t, uint64(1<<33-3), w.posOf(uint32(w.pending[0])), "position told")
}

// TestFileStoreIndexIDsReadError checks that indexIDs reports an entry it
// cannot read back, rather than indexing a wrong ID.
func TestFileStoreIndexIDsReadError(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	a, b := EventData{ID: NewID(), Type: "t"}, EventData{ID: NewID(), Type: "t"}
	_, err = s.Append(t.Context(), "s", Any, a, b)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s, err = OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, os.Truncate(s.segs[0].path, segHeaderSize))
	h := s.w.hash.streamID(s.streams["s"].id, a.ID)
	s.w.pending = []uint64{h << 32, h<<32 | 1}
	s.w.exact = nil
	var ce *CorruptionError
	require.True(t, errors.As(s.indexIDs(), &ce), "indexIDs of an entry cut from its file returns a *CorruptionError")
	require.Empty(t, s.w.exact, "events indexed by stream and ID")
}
