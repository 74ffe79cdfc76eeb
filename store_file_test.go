package eventbus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
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

// TestFileStoreFollowBytes follows appends made one at a time with a
// subscription, as a projection of a live application does, and holds the
// bytes allocated per event, append and read together, to a budget: each
// wake reads one small event, and must not read (and allocate) a window
// meant for catching up over many. It counts bytes, not time, so the load
// of the machine does not matter, and the margin (a 64 KiB window against
// a budget of 16 KiB) absorbs what the race detector and the runtime add.
func TestFileStoreFollowBytes(t *testing.T) {
	s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan uint64)
	ended := make(chan error, 1)
	go func() {
		for e, err := range s.Subscribe(ctx, nil) {
			if err != nil {
				ended <- err
				return
			}
			select {
			case got <- e.Position:
			case <-ctx.Done():
			}
		}
	}()
	data := []byte(strings.Repeat("x", 200))
	follow := func(n int) {
		for range n {
			res, err := s.Append(ctx, "followed", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: data})
			require.NoError(t, err)
			select {
			case pos := <-got:
				if pos != res.Position {
					t.Fatalf("subscription read position %d, want %d", pos, res.Position)
				}
			case err := <-ended:
				t.Fatalf("subscription ended: %v", err)
			}
		}
	}
	follow(50) // the stream, the subscription and the indexes settle
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	follow(n)
	runtime.ReadMemStats(&after)
	cancel()
	require.ErrorIs(t, <-ended, context.Canceled)
	perEvent := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per event appended and followed", perEvent)
	if perEvent > 16<<10 {
		t.Errorf("%d bytes allocated per event appended and followed, want at most %d", perEvent, 16<<10)
	}
}

// TestFileStoreLongReadWindows reads many events, from the start, and
// counts the reads of the files: long reads read in windows of many events
// each (64 KiB for a subscription catching up), whatever keeps a
// subscription that follows appends to small ones.
func TestFileStoreLongReadWindows(t *testing.T) {
	fs := &readCountFS{FS: eventbus.OSFS}
	s := openFile(t, t.TempDir(), eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever}, fs))
	ctx := t.Context()
	data := []byte(strings.Repeat("x", 200))
	events := make([]eventbus.EventData, 100)
	for range 20 {
		for i := range events {
			events[i] = eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: data}
		}
		_, err := s.Append(ctx, "long", eventbus.Any, events...)
		require.NoError(t, err)
	}
	st := s.Stats()
	last := st.NextPosition - 1
	for _, tt := range []struct {
		name   string
		read   iter.Seq2[eventbus.RecordedEvent, error]
		window int64
	}{
		{"ReadAll", s.ReadAll(ctx, nil), 64 << 10},
		{"ReadStream", s.ReadStream(ctx, "long", nil), 8 << 10},
		{"Subscribe", s.Subscribe(ctx, nil), 64 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs.reads.Store(0)
			for e, err := range tt.read {
				require.NoError(t, err)
				if e.Position == last {
					break
				}
			}
			// Each window but the last reads at least half of one.
			if got, most := fs.reads.Load(), st.Bytes/(tt.window/2)+1; got > most {
				t.Errorf("%d reads of the files for %d bytes, want at most %d", got, st.Bytes, most)
			}
		})
	}
}

// readCountFS counts the reads of its files.
type readCountFS struct {
	eventbus.FS
	reads atomic.Int64
}

func (f *readCountFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &readCountFile{File: file, fs: f}, nil
}

type readCountFile struct {
	eventbus.File
	fs *readCountFS
}

func (f *readCountFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.reads.Add(1)
	return f.File.ReadAt(p, off)
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

// TestFileStoreReadDuringRetention reads while retention deletes segments
// the read has yet to reach: every read goes on as if those events had been
// deleted before it started, instead of failing on a closed file. A read
// takes the store as it is when the iteration starts, so it yields the
// events of the first segment (which it has in memory), then every event
// kept, up to the last one there was when it started (a subscription goes
// on to the events appended since).
func TestFileStoreReadDuringRetention(t *testing.T) {
	ctx := t.Context()
	for _, tt := range []struct {
		name      string
		read      func(s *eventbus.FileStore) iter.Seq2[eventbus.RecordedEvent, error]
		backwards bool
		live      bool
	}{
		{name: "ReadAll", read: func(s *eventbus.FileStore) iter.Seq2[eventbus.RecordedEvent, error] { return s.ReadAll(ctx, nil) }},
		{name: "ReadStream", read: func(s *eventbus.FileStore) iter.Seq2[eventbus.RecordedEvent, error] {
			return s.ReadStream(ctx, "a", nil)
		}},
		{name: "ReadAll backwards", backwards: true, read: func(s *eventbus.FileStore) iter.Seq2[eventbus.RecordedEvent, error] {
			return s.ReadAll(ctx, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End})
		}},
		{name: "Subscribe", live: true, read: func(s *eventbus.FileStore) iter.Seq2[eventbus.RecordedEvent, error] { return s.Subscribe(ctx, nil) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 48 << 10})
			appendN := func(n int) {
				for range n {
					_, err := s.Append(ctx, "a", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(strings.Repeat("x", 40))})
					require.NoError(t, err)
				}
			}
			appendN(400)
			require.Zero(t, s.Stats().FirstPosition, "nothing deleted yet")
			end := s.Stats().NextPosition
			next, stop := iter.Pull2(tt.read(s))
			defer stop()
			e, err, ok := next()
			require.True(t, ok)
			require.NoError(t, err)
			got := []uint64{e.Position}

			appendN(200)
			st := s.Stats()
			first, last := st.FirstPosition, end-1
			require.Greater(t, first, uint64(100), "retention deleted segments the read has yet to reach")
			require.Less(t, first, last, "and kept the last event there was when the read started")
			if tt.live {
				last = st.NextPosition - 1
			}
			for got[len(got)-1] != last || tt.backwards {
				e, err, ok := next()
				if !ok {
					break
				}
				require.NoError(t, err, "after %d events", len(got))
				got = append(got, e.Position)
			}

			if tt.backwards {
				// From the last event down to the first kept.
				require.Equal(t, end-1, got[0])
				for i := 1; i < len(got); i++ {
					require.Equal(t, got[i-1]-1, got[i], "event %d", i)
				}
				require.Equal(t, first, got[len(got)-1])
				return
			}
			// The first segment, then from the first event kept to the last.
			i := 0
			for i+1 < len(got) && got[i+1] == got[i]+1 {
				i++
			}
			require.Less(t, i, len(got)-1, "a gap, where the deleted events were")
			require.Less(t, got[i], first)
			require.Equal(t, uint64(0), got[0])
			require.Equal(t, first, got[i+1])
			for j := i + 2; j < len(got); j++ {
				require.Equal(t, got[j-1]+1, got[j], "event %d", j)
			}
			require.Equal(t, last, got[len(got)-1])
		})
	}
}

// TestFileStoreReadOnlyClosed checks that a read-only store, once closed,
// fails every writing call with ErrClosed, as Store's doc says of every
// method after Close: they failed with ErrReadOnly, so a caller that
// checks for ErrClosed to stop took a closed store for a live one.
func TestFileStoreReadOnlyClosed(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, openFile(t, dir, nil).Close())
	s := openFile(t, dir, &eventbus.FileStoreOptions{ReadOnly: true})
	require.NoError(t, s.Close())
	ctx := t.Context()
	e := eventbus.EventData{ID: eventbus.NewID(), Type: "t"}
	_, err := s.Append(ctx, "a", eventbus.Any, e)
	require.ErrorIs(t, err, eventbus.ErrClosed, "Append")
	_, err = s.AppendMulti(ctx, eventbus.StreamAppend{Stream: "a", Events: []eventbus.EventData{e}})
	require.ErrorIs(t, err, eventbus.ErrClosed, "AppendMulti")
	require.ErrorIs(t, s.Delete(ctx, "a", eventbus.Any), eventbus.ErrClosed, "Delete")
	require.ErrorIs(t, s.Tombstone(ctx, "a", eventbus.Any), eventbus.ErrClosed, "Tombstone")
	require.ErrorIs(t, s.SetStreamMetadata(ctx, "a", eventbus.StreamMetadata{MaxCount: 1}), eventbus.ErrClosed, "SetStreamMetadata")
}

// TestFileStoreVerifyNilContext checks that Verify with a nil context
// fails with ErrInvalid, as every other call of a store does: it panicked,
// asking the nil context for its error.
func TestFileStoreVerifyNilContext(t *testing.T) {
	s := openFile(t, t.TempDir(), nil)
	var nilCtx context.Context
	require.ErrorIs(t, s.Verify(nilCtx), eventbus.ErrInvalid)
}

// TestFileStoreOpenNotDirectory opens a store in a path that is a file:
// both opens fail with an error matching syscall.ENOTDIR and holding the
// path, as an *fs.PathError. A read-only open failed with a message only,
// which no errors.Is or errors.As matched, while a writing open failed
// with mkdir's *fs.PathError.
func TestFileStoreOpenNotDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(path, []byte("not a store"), 0o644))
	for _, readOnly := range []bool{false, true} {
		_, err := eventbus.OpenFileStore(path, &eventbus.FileStoreOptions{ReadOnly: readOnly})
		var pe *fs.PathError
		if !errors.Is(err, syscall.ENOTDIR) || !errors.As(err, &pe) || pe.Path != path {
			t.Errorf("OpenFileStore(a file, ReadOnly %v) = %v, want an *fs.PathError for it matching syscall.ENOTDIR", readOnly, err)
		}
	}
}

// TestFileStoreCloseLetsGoOfIndexes appends 200,000 events to a FileStore
// and closes it, which releases the store (Store.Close), as a MemoryStore's
// does: its in-memory indexes go, though its owner keeps the *FileStore,
// whose Stats stay as they were.
func TestFileStoreCloseLetsGoOfIndexes(t *testing.T) {
	ctx := context.Background()
	before := liveHeap()
	s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	events := make([]eventbus.EventData, 1000)
	for i := range 200 {
		for j := range events {
			events[j] = eventbus.EventData{ID: eventbus.NewID(), Type: "t"}
		}
		_, err := s.Append(ctx, fmt.Sprint("s", i), eventbus.Any, events...)
		require.NoError(t, err)
	}
	stats := s.Stats()
	require.NoError(t, s.Close())
	if grown := int64(liveHeap()) - int64(before); grown > 1<<20 {
		t.Errorf("heap grew by %d bytes over a FileStore of 200,000 events, closed; want at most %d", grown, 1<<20)
	}
	if diff := cmp.Diff(stats, s.Stats()); diff != "" {
		t.Errorf("Stats after Close (-before +after):\n%s", diff)
	}
	for _, err := range s.ReadAll(ctx, nil) {
		require.ErrorIs(t, err, eventbus.ErrClosed)
	}
	for _, err := range s.Subscribe(ctx, nil) {
		require.ErrorIs(t, err, eventbus.ErrClosed)
	}
	_, err := s.StreamInfo(ctx, "s0")
	require.ErrorIs(t, err, eventbus.ErrClosed)
}

// TestFileStoreLetsGoOfLargeWrites appends a batch of 15 MB to a FileStore,
// which the store writes from a buffer of its own: the buffer goes once
// written, rather than stay as large for the life of the store.
func TestFileStoreLetsGoOfLargeWrites(t *testing.T) {
	s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), 1_000_000)
	events := make([]eventbus.EventData, 15)
	before := liveHeap()
	for i := range events {
		events[i] = eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: data}
	}
	_, err := s.Append(ctx, "large", eventbus.Any, events...)
	require.NoError(t, err)
	if grown := int64(liveHeap()) - int64(before); grown > 2<<20 {
		t.Errorf("heap grew by %d bytes after an append of 15 MB; want at most %d", grown, 2<<20)
	}
	for e, err := range s.ReadStream(ctx, "large", nil) {
		require.NoError(t, err)
		require.Equal(t, data, e.Data)
	}
}

// TestFileStoreSyncIntervalDefault checks the default period of
// SyncInterval, 100ms as its doc says: an append is synced 100ms after the
// store opens, not before.
func TestFileStoreSyncIntervalDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		fs := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
		s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncInterval}, fs))
		_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", "x")...)
		require.NoError(t, err)
		seg := segments(t, dir)[0]
		fi, err := os.Stat(seg)
		require.NoError(t, err)
		synced := func() int64 {
			fs.mu.Lock()
			defer fs.mu.Unlock()
			return fs.synced[seg]
		}
		time.Sleep(100*time.Millisecond - 1) // on the bubble's clock
		synctest.Wait()
		require.Less(t, synced(), fi.Size(), "bytes synced just before 100ms")
		time.Sleep(time.Nanosecond) // the last nanosecond to 100ms
		synctest.Wait()
		require.Equal(t, fi.Size(), synced(), "bytes synced at 100ms")
	})
}

// TestFileStoreFailsAfterFailedPeriodicSync fails the periodic sync of
// SyncInterval: as after any failed sync, appends must then fail with its
// error until the store is reopened, as FileStore's doc says, rather than
// be acknowledged by a store whose last interval may never reach the disk.
func TestFileStoreFailsAfterFailedPeriodicSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fs := &faultFS{FS: eventbus.OSFS}
		s, err := eventbus.OpenFileStore(t.TempDir(), eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncInterval, SyncInterval: time.Second}, fs))
		require.NoError(t, err)
		_, err = s.Append(ctx, "s", eventbus.NoStream, newEvents(1, "t", "")...)
		require.NoError(t, err)
		eio := error(syscall.EIO)
		fs.failSync.Store(&eio)
		time.Sleep(time.Second) // an interval, on the bubble's clock
		synctest.Wait()
		_, err = s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "")...)
		require.ErrorIs(t, err, syscall.EIO, "Append after a failed periodic sync")
		require.ErrorIs(t, s.Close(), syscall.EIO, "Close after a failed periodic sync")
	})
}

// TestOpenFileStoreBadOptionsSayWhich checks that OpenFileStore's error for
// a bad option wraps ErrInvalid and names that option and its value: it
// said "bad Sync, SyncInterval, MaxSegmentSize, RetainAge or RetainSize",
// leaving the caller to guess which of five and why.
func TestOpenFileStoreBadOptionsSayWhich(t *testing.T) {
	tests := []struct {
		opts eventbus.FileStoreOptions
		want string
	}{
		{eventbus.FileStoreOptions{Sync: 7}, "Sync 7"},
		{eventbus.FileStoreOptions{SyncInterval: -time.Second}, "SyncInterval -1s"},
		{eventbus.FileStoreOptions{MaxSegmentSize: -5}, "MaxSegmentSize -5"},
		{eventbus.FileStoreOptions{RetainAge: -time.Hour}, "RetainAge -1h0m0s"},
		{eventbus.FileStoreOptions{RetainSize: -9}, "RetainSize -9"},
		{eventbus.FileStoreOptions{Sync: eventbus.SyncNever + 1}, "Sync 3"},
		{eventbus.FileStoreOptions{MaxBatchSize: 32<<20 + 1}, "MaxBatchSize 33554433"},
		{eventbus.FileStoreOptions{MaxSegmentSize: 1<<30 + 1}, "MaxSegmentSize 1073741825"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			s, err := eventbus.OpenFileStore(t.TempDir(), &tt.opts)
			if s != nil {
				s.Close()
			}
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), tt.want) {
				t.Errorf("OpenFileStore with %s = %v, want ErrInvalid naming it", tt.want, err)
			}
		})
	}
	// The largest values the docs allow are valid.
	s, err := eventbus.OpenFileStore(t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxBatchSize: 32 << 20, MaxSegmentSize: 1 << 30})
	require.NoError(t, err, "OpenFileStore with SyncNever, MaxBatchSize 32 MiB and MaxSegmentSize 1 GiB")
	require.NoError(t, s.Close())
}

// TestFileStoreRetainAgeBound checks RetainAge at its bound: it deletes a
// segment whose every event is older than RetainAge, so one whose newest
// event is exactly RetainAge old when a new segment starts is kept, and
// one a nanosecond older is deleted. A segment of one byte is full with
// its header alone, so each append starts a new segment, which is when
// retention runs; the bubble's fake clock, which the store stamps and
// judges by, puts those starts at the bound.
func TestFileStoreRetainAgeBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 1, RetainAge: time.Hour})
		appendEach(t, s, 1) // in segment 2, at the start of the bubble
		time.Sleep(time.Hour)
		appendEach(t, s, 1) // segment 3 starts: segment 2 is exactly 1h old
		if first := s.Stats().FirstPosition; first != 0 {
			t.Errorf("FirstPosition with the only event of a segment exactly RetainAge old = %d, want 0: the segment is kept", first)
		}
		time.Sleep(time.Nanosecond)
		appendEach(t, s, 1) // segment 4 starts: segment 2 is 1h and 1ns old
		if first := s.Stats().FirstPosition; first != 1 {
			t.Errorf("FirstPosition with the only event of a segment RetainAge and 1ns old = %d, want 1: the segment is deleted", first)
		}
	})
}

// TestFileStoreReplaysEarlierLives retries, once the store is opened
// again, the appends with NoStream that began each life of a stream
// soft-deleted and written again: each succeeds with its first result and
// writes nothing, as before the store closed, also when its lives lie in
// segments of their own, which start with the state of every stream.
func TestFileStoreReplaysEarlierLives(t *testing.T) {
	for name, opts := range map[string]*eventbus.FileStoreOptions{
		"one segment":    nil,
		"small segments": {Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 1 << 40},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s := openFile(t, dir, opts)
			var batches [][]eventbus.EventData
			var results []eventbus.AppendResult
			for life := range 3 {
				batch := newEvents(2, "t", fmt.Sprintf("life %d, ", life))
				res, err := s.Append(ctx, "s", eventbus.NoStream, batch...)
				require.NoError(t, err)
				batches, results = append(batches, batch), append(results, res)
				for range 40 { // about a segment of another stream
					_, err := s.Append(ctx, "other", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 100))...)
					require.NoError(t, err)
				}
				require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
			}
			require.NoError(t, s.Close())
			s = openFile(t, dir, opts)
			for i, batch := range batches {
				again, err := s.Append(ctx, "s", eventbus.NoStream, batch...)
				if err != nil || again != results[i] {
					t.Errorf("retried Append(no stream) of life %d after reopening = %+v, %v; want %+v, nil", i, again, err, results[i])
				}
			}
			info, err := s.StreamInfo(ctx, "s")
			require.NoError(t, err)
			if want := (eventbus.StreamInfo{Revision: 5, Deleted: true, Start: 6}); info != want {
				t.Errorf("StreamInfo after the retries = %+v, want %+v: a retry wrote its events again", info, want)
			}
		})
	}
}
