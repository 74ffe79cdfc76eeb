package eventbus_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

func openFile(t *testing.T, dir string, opts *eventbus.FileStoreOptions) *eventbus.FileStore {
	t.Helper()
	s, err := eventbus.OpenFileStore(dir, opts)
	require.NoError(t, err, "OpenFileStore")
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFileStoreConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts *eventbus.FileStoreOptions
	}{
		{"SyncAlways", nil},
		{"SyncNever", &eventbus.FileStoreOptions{Sync: eventbus.SyncNever}},
		{"SmallSegments", &eventbus.FileStoreOptions{Sync: eventbus.SyncInterval, MaxSegmentSize: 4 << 10, RetainSize: 1 << 40}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eventbustest.TestStore(t, func(t *testing.T) eventbus.Store {
				s, err := eventbus.OpenFileStore(t.TempDir(), tt.opts)
				require.NoError(t, err)
				return s
			})
		})
	}
}

// TestFileStoreScatteredReads reads a stream whose events lie between
// another stream's, some larger than the window a scattered read starts
// with, and some adjacent, after reopening (so every read comes from disk).
func TestFileStoreScatteredReads(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	ctx := t.Context()
	sizes := []int{10, 9000, 3000, 200, 50, 50, 1500}
	var want [][]byte
	for i, n := range sizes {
		data := []byte(strings.Repeat(string(rune('a'+i)), n))
		want = append(want, data)
		_, err := s.Append(ctx, "scattered", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: data})
		require.NoError(t, err)
		if i != 4 { // events 4 and 5 are adjacent
			_, err = s.Append(ctx, "other", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(strings.Repeat("x", 700))})
			require.NoError(t, err)
		}
	}
	require.NoError(t, s.Close())
	s = openFile(t, dir, nil)
	for _, opts := range []eventbus.ReadOptions{{}, {Direction: eventbus.Backwards, From: eventbus.End}} {
		var got [][]byte
		for e, err := range s.ReadStream(ctx, "scattered", &opts) {
			require.NoError(t, err)
			got = append(got, e.Data)
		}
		if opts.Direction == eventbus.Backwards {
			slices.Reverse(got)
		}
		if !slices.EqualFunc(want, got, bytes.Equal) {
			t.Fatalf("direction %v: read %d events, not the %d appended, or not the same", opts.Direction, len(got), len(want))
		}
	}
}

// TestFileStoreReadStreamAfterRetention reads a stream appended after
// retention dropped the segments of another, long one: revisions and
// positions differ, and every event of the new stream is read.
func TestFileStoreReadStreamAfterRetention(t *testing.T) {
	s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10})
	ctx := t.Context()
	for i := range 2000 {
		_, err := s.Append(ctx, "a", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(strings.Repeat("x", i%50))})
		require.NoError(t, err)
	}
	for range 5 {
		_, err := s.Append(ctx, "b", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t"})
		require.NoError(t, err)
	}
	n := 0
	for e, err := range s.ReadStream(ctx, "b", nil) {
		require.NoError(t, err)
		require.EqualValues(t, n, e.Revision)
		n++
	}
	require.Equal(t, 5, n)
	var first uint64
	for e, err := range s.ReadStream(ctx, "a", &eventbus.ReadOptions{Limit: 1}) {
		require.NoError(t, err)
		first = e.Revision
	}
	require.Greater(t, first, uint64(0), "retention dropped the first events of a")
}
