package eventbus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFileStoreRetentionForgets checks that retention drops from memory
// what it deletes from disk, the removed events' stream positions and IDs,
// so that a long-running store keeps its memory bounded; and that the store
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
		_, err := s.Append(ctx, streams[i%3], Any, EventData{ID: ids[i], Type: "t", Data: []byte(strings.Repeat("x", i%50))})
		require.NoError(t, err)
	}
	// Append has returned: the committer is idle and its state visible.
	remembers := func(s *FileStore) {
		t.Helper()
		first, kept := s.w.log.first, s.w.log.n-s.w.log.first
		require.Positive(t, first, "retention removed segments")
		require.LessOrEqual(t, uint64(len(s.w.ids)), 2*kept, "IDs remembered, against events kept")
		var positions uint64
		for _, st := range s.byID {
			require.Equal(t, st.w.base, st.r.base, "stream %s: read and write sides", st.name)
			if len(st.w.positions) > 0 {
				require.GreaterOrEqual(t, st.w.positions[0], first, "stream %s remembers a removed position", st.name)
			}
			positions += uint64(len(st.w.positions))
		}
		require.Equal(t, kept, positions, "stream positions remembered, against events kept")
	}
	remembers(s)

	// The events kept, per stream, and the answers to idempotent appends of
	// a kept event and of a removed one, before and after reopening.
	type answers struct {
		streams       map[string][]RecordedEvent
		keptReplay    AppendResult
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
	require.Equal(t, uint64(len(ids)), got.removedAppend.Position, "a removed event's ID is not")
	require.NoError(t, s.Close())
}
