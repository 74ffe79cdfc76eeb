package eventbus_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

func newEvents(n int, typ, prefix string) []eventbus.EventData {
	evs := make([]eventbus.EventData, n)
	for i := range evs {
		evs[i] = eventbus.EventData{ID: eventbus.NewID(), Type: typ, Data: fmt.Appendf(nil, "%s%d", prefix, i)}
	}
	return evs
}

// appendEach appends n events of 40 bytes of data to the stream "s" of s,
// one append each, as retention tests do to fill segments.
func appendEach(t *testing.T, s *eventbus.FileStore, n int) {
	t.Helper()
	for range n {
		_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 40))...)
		require.NoError(t, err, "Append")
	}
}

func readAll(t *testing.T, s eventbus.Store) []eventbus.RecordedEvent {
	t.Helper()
	var out []eventbus.RecordedEvent
	for e, err := range s.ReadAll(t.Context(), &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: ""}}) {
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

// segments returns the segment files of dir, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	return files
}

// TestFileStoreReopen runs a mixed workload against a FileStore and a
// MemoryStore, and checks that the FileStore reads the same as the model
// after every reopen.
func TestFileStoreReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	model, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	opts := &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 2 << 10}
	rng := rand.New(rand.NewPCG(1, 2))
	streams := []string{"a", "b", "c", "$sys", "d"}
	for round := range 5 {
		s := openFile(t, dir, opts)
		for range 60 {
			stream := streams[rng.IntN(len(streams))]
			var errF, errM error
			switch op := rng.IntN(20); {
			case op < 12:
				evs := newEvents(1+rng.IntN(3), "t"+strconv.Itoa(rng.IntN(3)), stream)
				evs[0].Metadata = eventbus.Metadata{"k": stream}
				_, errF = s.Append(ctx, stream, eventbus.Any, evs...)
				_, errM = model.Append(ctx, stream, eventbus.Any, evs...)
			case op < 15:
				parts := []eventbus.StreamAppend{{Stream: stream, Events: newEvents(2, "m", "x")}, {Stream: "multi", Events: newEvents(1, "m", "y")}}
				_, errF = s.AppendMulti(ctx, parts...)
				_, errM = model.AppendMulti(ctx, parts...)
			case op < 17:
				errF, errM = s.Delete(ctx, stream, eventbus.Any), model.Delete(ctx, stream, eventbus.Any)
			case op < 18 && round > 2:
				errF, errM = s.Tombstone(ctx, stream, eventbus.Any), model.Tombstone(ctx, stream, eventbus.Any)
			default:
				md := eventbus.StreamMetadata{MaxCount: uint64(rng.IntN(4))}
				errF, errM = s.SetStreamMetadata(ctx, stream, md), model.SetStreamMetadata(ctx, stream, md)
			}
			require.Equal(t, errM == nil, errF == nil, "FileStore: %v, MemoryStore: %v", errF, errM)
		}
		require.NoError(t, s.Close())
		s = openFile(t, dir, opts)
		ignore := cmpopts.IgnoreFields(eventbus.RecordedEvent{}, "Time")
		if diff := cmp.Diff(readAll(t, model), readAll(t, s), ignore, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round %d: ReadAll after reopen (-memory +file):\n%s", round, diff)
		}
		for _, stream := range append(streams, "multi") {
			want, err := model.StreamInfo(ctx, stream)
			require.NoError(t, err)
			got, err := s.StreamInfo(ctx, stream)
			require.NoError(t, err)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("round %d: StreamInfo(%q) after reopen (-memory +file):\n%s", round, stream, diff)
			}
			var wantEvs, gotEvs []eventbus.RecordedEvent
			var wantErr, gotErr error
			for e, err := range model.ReadStream(ctx, stream, nil) {
				wantEvs, wantErr = append(wantEvs, e), err
			}
			for e, err := range s.ReadStream(ctx, stream, nil) {
				gotEvs, gotErr = append(gotEvs, e), err
			}
			if diff := cmp.Diff(wantEvs, gotEvs, ignore, cmpopts.EquateEmpty()); diff != "" || (wantErr == nil) != (gotErr == nil) {
				t.Errorf("round %d: ReadStream(%q) after reopen (-memory +file):\n%s\nerrors %v, %v", round, stream, diff, wantErr, gotErr)
			}
		}
		require.NoError(t, s.Close())
	}
	if n := len(segments(t, dir)); n < 3 {
		t.Errorf("the workload made %d segments, want several", n)
	}
}

func TestFileStoreLocked(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	if _, err := eventbus.OpenFileStore(dir, nil); !errors.Is(err, eventbus.ErrLocked) {
		t.Fatalf("second OpenFileStore = %v, want ErrLocked", err)
	}
	require.NoError(t, s.Close())
	s = openFile(t, dir, nil)
	require.NoError(t, s.Close())
}

// TestFileStoreLockedSaysByWhom checks that the error of a second open of a
// store that this process holds open does not send its user looking for
// another process: ErrLocked said "locked by another process", whoever
// held the lock, where a test that forgot to close a store holds it.
func TestFileStoreLockedSaysByWhom(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	for _, readOnly := range []bool{false, true} {
		_, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
		require.ErrorIs(t, err, eventbus.ErrLocked)
		if msg := err.Error(); strings.Contains(msg, "by another process") || !strings.Contains(msg, "in this process or another") {
			t.Errorf("OpenFileStore(ReadOnly %t) of a store this process holds = %q, want an error that does not blame another process", readOnly, msg)
		}
	}
	require.NoError(t, s.Close())
}

// TestFileStoreLockFileError opens a store whose LOCK file cannot be
// opened, a directory: the error says it comes from eventbus and wraps the
// file system's, as the other errors of OpenFileStore do.
func TestFileStoreLockFileError(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "LOCK"), 0o755))
	_, err := eventbus.OpenFileStore(dir, nil)
	var pe *os.PathError
	if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "eventbus: ") || errors.Is(err, eventbus.ErrLocked) {
		t.Fatalf("OpenFileStore with a LOCK directory = %v, want an eventbus error wrapping a *os.PathError", err)
	}
}

// TestFileStoreCloseStopsGoroutines relies on synctest, which fails when a
// goroutine of the bubble outlives it.
func TestFileStoreCloseStopsGoroutines(t *testing.T) {
	for _, policy := range []eventbus.SyncPolicy{eventbus.SyncAlways, eventbus.SyncInterval, eventbus.SyncNever} {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{Sync: policy})
			require.NoError(t, err)
			_, err = s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", "")...)
			require.NoError(t, err)
			require.NoError(t, s.Close())
		})
	}
}

// TestFileStoreTornTail cuts the store at every byte offset inside its
// last record, as a crash in the middle of the write would, and checks
// that it reopens with exactly the complete records.
func TestFileStoreTornTail(t *testing.T) {
	src := t.TempDir()
	s := openFile(t, src, nil)
	ctx := t.Context()
	for i := range 3 {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1+i, "t", "complete")...)
		require.NoError(t, err)
	}
	seg := segments(t, src)[0]
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	before := fi.Size()
	_, err = s.Append(ctx, "s", eventbus.Any, newEvents(3, "t", "last")...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	whole, err := os.ReadFile(seg)
	require.NoError(t, err)

	for cut := before; cut < int64(len(whole)); cut++ {
		dir := t.TempDir()
		path := filepath.Join(dir, filepath.Base(seg))
		require.NoError(t, os.WriteFile(path, whole[:cut], 0o644))
		s, err := eventbus.OpenFileStore(dir, nil)
		if err != nil {
			t.Fatalf("OpenFileStore of the store cut at %d = %v, want success", cut, err)
		}
		got := readAll(t, s)
		if len(got) != 6 || string(got[5].Data) != "complete2" {
			t.Fatalf("cut at %d: read %d events, want the 6 complete ones", cut, len(got))
		}
		// The cut record is gone for good: appends go on from it.
		res, err := s.Append(ctx, "s", eventbus.Exact(5), newEvents(1, "t", "after")...)
		require.NoError(t, err)
		require.Equal(t, uint64(6), res.Position)
		require.NoError(t, s.Close())
		s = openFile(t, dir, nil)
		require.Len(t, readAll(t, s), 7, "cut at %d, after an append and a reopen", cut)
		require.NoError(t, s.Close())
	}
}

// TestFileStoreTornAppendMulti cuts the store at every byte offset of an
// AppendMulti to three streams, the last thing written, as a crash in the
// middle of its write would: every reopen must hold the events of all
// three streams or of none, as AppendMulti's doc promises (all are
// committed or none is), and the format's doc (one frame per append). A
// FileStore that wrote each stream's part as a record of its own, so that
// a crash kept the first parts without the rest, passed every test.
func TestFileStoreTornAppendMulti(t *testing.T) {
	ctx := t.Context()
	src := t.TempDir()
	s := openFile(t, src, nil)
	_, err := s.Append(ctx, "a", eventbus.NoStream, newEvents(1, "t", "before")...)
	require.NoError(t, err)
	seg := segments(t, src)[0]
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	before := fi.Size()
	_, err = s.AppendMulti(ctx,
		eventbus.StreamAppend{Stream: "a", Expected: eventbus.Exact(0), Events: newEvents(2, "t", "a")},
		eventbus.StreamAppend{Stream: "b", Expected: eventbus.NoStream, Events: newEvents(1, "t", "b")},
		eventbus.StreamAppend{Stream: "c", Expected: eventbus.NoStream, Events: newEvents(2, "t", "c")})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	whole, err := os.ReadFile(seg)
	require.NoError(t, err)

	for cut := before; cut <= int64(len(whole)); cut++ {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), whole[:cut], 0o644))
		s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
		if err != nil {
			t.Fatalf("OpenFileStore of the store cut at %d = %v, want success", cut, err)
		}
		var got []string
		for _, e := range readAll(t, s) {
			got = append(got, e.Stream+"@"+strconv.FormatUint(e.Revision, 10))
		}
		require.NoError(t, s.Close())
		want := []string{"a@0"}
		if cut == int64(len(whole)) {
			want = append(want, "a@1", "a@2", "b@0", "c@0", "c@1")
		}
		if !slices.Equal(got, want) {
			t.Fatalf("cut at %d of %d bytes: read %q, want %q: every stream of the AppendMulti or none", cut, len(whole), got, want)
		}
	}
}

// flip flips one bit of the file at off.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[off] ^= 0x10
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// TestFileStoreBitFlip damages an older record and checks that open and
// Verify report it with the file and offset, never cutting it silently,
// and that RepairFileStore cuts it and keeps a copy of what it cut.
func TestFileStoreBitFlip(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	var frames []int64 // offsets of the records
	seg := segments(t, dir)[0]
	for i := range 3 {
		fi, err := os.Stat(seg)
		require.NoError(t, err)
		frames = append(frames, fi.Size())
		_, err = s.Append(ctx, "s", eventbus.Any, newEvents(2, "t", strconv.Itoa(i))...)
		require.NoError(t, err)
	}

	flip(t, seg, frames[1]+20) // inside the second record, which is not the last
	var ce *eventbus.CorruptionError
	if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != seg || ce.Offset != frames[1] {
		t.Fatalf("Verify = %v, want a *CorruptionError for %s at %d", err, seg, frames[1])
	}
	require.NoError(t, s.Close())
	_, err := eventbus.OpenFileStore(dir, nil)
	if !errors.As(err, &ce) || ce.Path != seg || ce.Offset != frames[1] {
		t.Fatalf("OpenFileStore = %v, want a *CorruptionError for %s at %d", err, seg, frames[1])
	}
	whole, err := os.ReadFile(seg)
	require.NoError(t, err)

	kept, err := eventbus.RepairFileStore(dir)
	require.NoError(t, err)
	cut, err := os.ReadFile(filepath.Join(kept, filepath.Base(seg)+".from-"+strconv.FormatInt(frames[1], 10)))
	require.NoError(t, err, "the copy of what repair cut")
	if string(cut) != string(whole[frames[1]:]) {
		t.Errorf("repair kept %d bytes, want the %d it cut", len(cut), len(whole)-int(frames[1]))
	}
	s = openFile(t, dir, nil)
	if got := readAll(t, s); len(got) != 2 {
		t.Errorf("after repair, read %d events, want the 2 before the damage", len(got))
	}
}

// TestFileStoreVerifyTruncated cuts committed records off the segment
// files of an open store, at a record's end or inside the last one, in the
// active segment and in an older one: Verify must report each, as reads of
// the events cut fail, at the record cut, where OpenFileStore reports it
// too. It found only the cut inside an older segment, and placed it at the
// end of the file: the others left whole records, or a torn last one in
// the last segment, which a crash leaves; but these records were
// committed, so the store had read them whole.
func TestFileStoreVerifyTruncated(t *testing.T) {
	for _, tt := range []struct {
		name string
		seg  int   // the segment to cut, of 3
		cut  int64 // how far into its record, which starts after its header
	}{
		{"active segment, at its record's start", 2, 0},
		{"active segment, inside its record", 2, 5},
		{"older segment, at its record's start", 0, 0},
		{"older segment, inside its record", 0, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 64}) // a segment per append
			for i := range 3 {
				_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strconv.Itoa(i))...)
				require.NoError(t, err)
			}
			segs := segments(t, dir)
			require.Len(t, segs, 3)
			require.NoError(t, s.Verify(ctx), "before the cut")
			const record = 32 // after the segment's header
			require.NoError(t, os.Truncate(segs[tt.seg], record+tt.cut))
			var ce *eventbus.CorruptionError
			if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != segs[tt.seg] || ce.Offset != record {
				t.Errorf("Verify after cutting %s at %d = %v, want a *CorruptionError for it at %d", segs[tt.seg], record+tt.cut, err, record)
			}
		})
	}
}

// TestFileStoreReadTruncated cuts the last record off the segment file of
// an open store: reading its event fails with a *CorruptionError for the
// file, as Verify reports, so that callers (and the command's hint to
// repair) can tell damage from a failing disk. It failed with the EOF of
// the file's read.
func TestFileStoreReadTruncated(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	var end int64
	for i := range 3 {
		end = s.Stats().Bytes
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strconv.Itoa(i))...)
		require.NoError(t, err)
	}
	seg := segments(t, dir)[0]
	require.NoError(t, os.Truncate(seg, end+20))
	var read int
	var err error
	for _, err = range s.ReadAll(ctx, nil) {
		if err != nil {
			break
		}
		read++
	}
	var ce *eventbus.CorruptionError
	if read != 2 || !errors.As(err, &ce) || ce.Path != seg {
		t.Errorf("ReadAll of a store whose last record was cut read %d events, then %v; want 2, then a *CorruptionError for %s", read, err, seg)
	}
}

// TestFileStoreReplayTruncated cuts the last record off the segment file
// of an open store, then appends that record's event again, as a retry
// does: the idempotent append, which reads the event's entry to check its
// ID, fails with a *CorruptionError for the file, as a read of the event
// does, so that callers can tell damage from a failing disk. It failed
// with the EOF of the file's read.
func TestFileStoreReplayTruncated(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	var end int64
	var last []eventbus.EventData
	for i := range 3 {
		end = s.Stats().Bytes
		last = newEvents(1, "t", strconv.Itoa(i))
		_, err := s.Append(ctx, "s", eventbus.Any, last...)
		require.NoError(t, err)
	}
	seg := segments(t, dir)[0]
	require.NoError(t, os.Truncate(seg, end+20))
	_, err := s.Append(ctx, "s", eventbus.Any, last...)
	var ce *eventbus.CorruptionError
	if !errors.As(err, &ce) || ce.Path != seg {
		t.Errorf("Append again of the event whose record was cut = %v; want a *CorruptionError for %s", err, seg)
	}
}

// TestFileStoreSyncsNewDirectory opens a store in a directory that does
// not exist, two levels deep, and appends under SyncAlways: before Append
// returns, the parent of each directory that OpenFileStore made must be
// synced, since until then a power loss can take the new directory, and
// with it the store and the events acknowledged as on stable storage.
// OpenFileStore made them with os.MkdirAll and synced only the store's
// own directory.
func TestFileStoreSyncsNewDirectory(t *testing.T) {
	root := t.TempDir()
	fs := &opsFS{FS: eventbus.OSFS, dir: root}
	s := openFile(t, filepath.Join(root, "new", "store"), eventbus.WithFS(nil, fs))
	_, err := s.Append(t.Context(), "s", eventbus.NoStream, newEvents(1, "t", "")...)
	require.NoError(t, err)
	fs.mu.Lock()
	ops := slices.Clone(fs.ops)
	fs.mu.Unlock()
	for _, made := range []string{"new", filepath.Join("new", "store")} {
		at := max(slices.Index(ops, "mkdir "+made), 0)
		if !slices.Contains(ops[at:], "sync "+filepath.Dir(made)) {
			t.Errorf("the parent of %s, which OpenFileStore made, was not synced after it: %q", made, ops[at:])
		}
	}
}

// TestFileStoreRetainAge fills segments, lets time pass on the bubble's
// clock, and appends until a new segment starts, under a RetainAge of an
// hour: after half an hour every segment stays; after two hours those
// whose every event is older than an hour go, and the one where the new
// events start stays, with its older events, as RetainAge's doc says. No
// test proved that RetainAge deletes anything, nor what it keeps: a
// retention that never judged a segment old, or judged one by its oldest
// event, passed every test, since the store model takes whatever the
// store keeps. It runs on the store that wrote the segments, and on one
// opened again before the wait, which judges them by the times that
// opening reads.
func TestFileStoreRetainAge(t *testing.T) {
	for _, tt := range []struct {
		wait   time.Duration
		gone   bool // the segments before the one where the new events start
		reopen bool
	}{
		{30 * time.Minute, false, false},
		{2 * time.Hour, true, false},
		{30 * time.Minute, false, true},
		{2 * time.Hour, true, true},
	} {
		name := tt.wait.String()
		if tt.reopen {
			name += "/reopened"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				opts := &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 1 << 10, RetainAge: time.Hour}
				s := openFile(t, dir, opts)
				last := func() string {
					segs := segments(t, dir)
					return segs[len(segs)-1]
				}
				// untilNewSegment appends until a new segment starts.
				untilNewSegment := func() {
					for prev := last(); last() == prev; {
						appendEach(t, s, 1)
					}
				}
				appendEach(t, s, 20)
				untilNewSegment()
				before := segments(t, dir)
				require.Greater(t, len(before), 2, "segments before the wait")
				active := before[len(before)-1]     // where the new events start
				start := s.Stats().NextPosition - 1 // its first event
				if tt.reopen {
					require.NoError(t, s.Close())
					s = openFile(t, dir, opts)
				}
				time.Sleep(tt.wait) // on the bubble's clock
				untilNewSegment()
				want := append(before, last())
				wantFirst := uint64(0)
				if tt.gone {
					want, wantFirst = []string{active, last()}, start
				}
				require.Equal(t, want, segments(t, dir), "segments after %v and a new segment", tt.wait)
				st := s.Stats()
				got := readAll(t, s)
				if st.FirstPosition != wantFirst || uint64(len(got)) != st.NextPosition-wantFirst || got[0].Position != wantFirst {
					t.Errorf("after %v: first position %d, read %d events from %d, want every event from %d to %d", tt.wait, st.FirstPosition, len(got), got[0].Position, wantFirst, st.NextPosition-1)
				}
				require.NoError(t, s.Close())
			})
		})
	}
}

// TestFileStoreRetainAgeIgnoresStreamChanges changes a stream (a soft
// delete, a tombstone, metadata) two hours after the events of its
// segment, under a RetainAge of an hour: when a new segment starts, that
// segment goes, as RetainAge's doc says (it judges segments by their
// events, as a reopened store does), and the change survives it. The
// running store took the time of any record for its segment's newest, so
// a Delete meant to erase a stream kept the segment holding its events
// for another RetainAge.
func TestFileStoreRetainAgeIgnoresStreamChanges(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(context.Context, *eventbus.FileStore, string) error
		want   func(eventbus.StreamInfo) bool
	}{
		{"Delete", func(ctx context.Context, s *eventbus.FileStore, stream string) error {
			return s.Delete(ctx, stream, eventbus.Any)
		}, func(info eventbus.StreamInfo) bool { return info.Deleted }},
		{"Tombstone", func(ctx context.Context, s *eventbus.FileStore, stream string) error {
			return s.Tombstone(ctx, stream, eventbus.Any)
		}, func(info eventbus.StreamInfo) bool { return info.Tombstoned }},
		{"SetStreamMetadata", func(ctx context.Context, s *eventbus.FileStore, stream string) error {
			return s.SetStreamMetadata(ctx, stream, eventbus.StreamMetadata{MaxCount: 1})
		}, func(info eventbus.StreamInfo) bool { return info.Metadata.MaxCount == 1 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				dir := t.TempDir()
				s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 1 << 10, RetainAge: time.Hour})
				// Records of about 450 bytes: two events leave the first
				// segment short of 1 KiB, the change fills it.
				user := "user-" + strings.Repeat("x", 440)
				for _, stream := range []string{"order-1", user} {
					_, err := s.Append(ctx, stream, eventbus.NoStream, newEvents(1, "t", "")...)
					require.NoError(t, err)
				}
				time.Sleep(2 * time.Hour) // on the bubble's clock
				require.NoError(t, tt.change(ctx, s, user))
				require.Len(t, segments(t, dir), 1, "segments after the change")
				_, err := s.Append(ctx, "order-2", eventbus.NoStream, newEvents(1, "t", "")...)
				require.NoError(t, err)
				require.Len(t, segments(t, dir), 1, "segments once a new one started: the first, of events two hours old, deleted")

				if st := s.Stats(); st.FirstPosition != 2 {
					t.Errorf("Stats().FirstPosition = %d, want 2: the segment of events two hours old not deleted", st.FirstPosition)
				}
				info, err := s.StreamInfo(ctx, user)
				require.NoError(t, err)
				if !tt.want(info) {
					t.Errorf("StreamInfo after retention = %+v, want the %s kept", info, tt.name)
				}
				require.NoError(t, s.Close())
			})
		})
	}
}

// TestFileStoreRetentionBytes runs retention over segments written with
// it on, then off (they do not start with the state of every stream, so
// retention may not start the store at one of them), then on: the store's
// size is that of its files.
func TestFileStoreRetentionBytes(t *testing.T) {
	dir := t.TempDir()
	for _, retain := range []int64{1 << 40, 0, 24 << 10} {
		s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: retain})
		appendEach(t, s, 200)
		st := s.Stats()
		var size int64
		paths, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
		require.NoError(t, err)
		for _, path := range paths {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			size += fi.Size()
		}
		require.Equal(t, size, st.Bytes, "RetainSize %d: Stats().Bytes against the files", retain)
		require.Len(t, paths, st.Segments)
		require.NoError(t, s.Close())
	}
}

// TestFileStoreRetentionManyStreams keeps more streams than the state
// frame that starts each segment under retention can hold in
// MaxSegmentSize: appends still fill each segment with MaxSegmentSize
// bytes of events, rather than starting a new segment, with the state of
// every stream, for each group; also once the store is reopened.
func TestFileStoreRetentionManyStreams(t *testing.T) {
	const size = 4 << 10
	dir := t.TempDir()
	opts := &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: size, RetainSize: 1 << 40}
	s := openFile(t, dir, opts)
	ctx := t.Context()
	for i := range 500 { // a state of 10 bytes or more per stream
		_, err := s.Append(ctx, fmt.Sprintf("stream-%03d", i), eventbus.Any, newEvents(1, "t", "")...)
		require.NoError(t, err)
	}
	appends := func(n int) (segments int) {
		before := s.Stats().Segments
		for range n {
			_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 100))...)
			require.NoError(t, err)
		}
		return s.Stats().Segments - before
	}
	if n := appends(100); n > 5 {
		t.Errorf("100 appends of 100 bytes or so started %d segments, want 4 or so of %d bytes of events", n, size)
	}
	// Reopen just after an append started a segment: the next one joins it.
	for before, i := s.Stats().Segments, 0; s.Stats().Segments == before; i++ {
		require.Less(t, i, 100, "appends that started no segment")
		appends(1)
	}
	require.NoError(t, s.Close())
	s = openFile(t, dir, opts)
	if n := appends(1); n != 0 {
		t.Errorf("after reopening, an append to a segment of one event started %d segments, want none", n)
	}
}

// TestFileStoreBadStart damages the file in which retention records the
// segment the store starts at: opening reports it, and RepairFileStore
// moves it aside, after which the store starts at its oldest segment.
func TestFileStoreBadStart(t *testing.T) {
	for _, content := range []string{"x\n", "0\n", "99\n"} { // no number, no segment, a missing one
		dir := t.TempDir()
		s := openFile(t, dir, nil)
		_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(2, "t", "")...)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		start := filepath.Join(dir, "START")
		require.NoError(t, os.WriteFile(start, []byte(content), 0o644))

		var ce *eventbus.CorruptionError
		_, err = eventbus.OpenFileStore(dir, nil)
		require.ErrorAs(t, err, &ce, "START %q", content)
		require.Equal(t, start, ce.Path)
		kept, err := eventbus.RepairFileStore(dir)
		require.NoError(t, err)
		require.FileExists(t, filepath.Join(kept, "START"))
		require.Len(t, readAll(t, openFile(t, dir, nil)), 2)
	}
}

// TestFileStoreVerifyDamagedStart damages, while the store is open, the
// file in which retention records the segment the store starts at: Verify
// must report it as opening does, a *CorruptionError for START. It read
// the segments alone and returned nil, so a health check calling Verify
// passed a store that the next open (a restart) refused.
func TestFileStoreVerifyDamagedStart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10})
	for s.Stats().FirstPosition == 0 {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 200))...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Verify(ctx), "Verify before the damage")
	start := filepath.Join(dir, "START")
	flip(t, start, 0) // in the number, which its checksum covers

	var ce *eventbus.CorruptionError
	if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != start {
		t.Errorf("Verify with START damaged = %v, want a *CorruptionError for %s", err, start)
	}
	require.NoError(t, s.Close())
	_, err := eventbus.OpenFileStore(dir, nil)
	require.ErrorAs(t, err, &ce, "OpenFileStore with START damaged")
	require.Equal(t, start, ce.Path)
}

// TestFileStoreVerifyLaterStart writes, while the store is open, a sound
// START that names a later segment of the store than its first, as a
// backup restored over it might: the next open would start there and
// delete the segments before it, acknowledged events and all, so Verify
// must report it as a *CorruptionError for START. It checked START's
// checksum alone and returned nil.
func TestFileStoreVerifyLaterStart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10})
	for st := s.Stats(); st.FirstPosition == 0 || st.Segments < 3; st = s.Stats() {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 200))...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Verify(ctx), "Verify before the damage")
	segs := segments(t, dir)
	seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(segs[1]), "seg-"), ".log"), 16, 64)
	require.NoError(t, err)
	n := strconv.FormatUint(seq, 10)
	start := filepath.Join(dir, "START")
	content := fmt.Sprintf("%s %08x\n", n, crc32.Checksum([]byte(n), crc32.MakeTable(crc32.Castagnoli)))
	require.NoError(t, os.WriteFile(start, []byte(content), 0o644))

	var ce *eventbus.CorruptionError
	if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != start {
		t.Errorf("Verify with START naming %s = %v, want a *CorruptionError for %s", filepath.Base(segs[1]), err, start)
	}
}

// TestFileStoreVerifyStraySegment writes, while the store is open, a
// segment file past its last one, a copy of its first (a backup restored
// to the wrong name, say): the next open reads it as the store's and
// fails, so Verify must report it as a *CorruptionError for that file. It
// read only the segments the store knows and returned nil.
func TestFileStoreVerifyStraySegment(t *testing.T) {
	for _, past := range []int{1, 2} {
		ctx := t.Context()
		dir := t.TempDir()
		s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10})
		for s.Stats().Segments < 3 {
			appendEach(t, s, 1)
		}
		require.NoError(t, s.Verify(ctx), "Verify before the damage")
		segs := segments(t, dir)
		b, err := os.ReadFile(segs[0])
		require.NoError(t, err)
		stray := filepath.Join(dir, fmt.Sprintf("seg-%016x.log", len(segs)+past))
		require.NoError(t, os.WriteFile(stray, b, 0o644))

		var ce *eventbus.CorruptionError
		if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != stray {
			t.Errorf("Verify with %s = %v, want a *CorruptionError for it", filepath.Base(stray), err)
		}
		require.NoError(t, s.Close())
		_, err = eventbus.OpenFileStore(dir, nil)
		require.ErrorAs(t, err, &ce, "OpenFileStore with %s", filepath.Base(stray))
	}
}

// TestFileStoreVerifyWhileRolling verifies a store again and again while
// appends start new segments: a segment that a roll has made, but not yet
// added to the store, is no stray file, and Verify must pass.
func TestFileStoreVerifyWhileRolling(t *testing.T) {
	ctx := t.Context()
	s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 1 << 10})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s.Stats().Segments < 50 {
			if _, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 400))...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if err := s.Verify(ctx); err != nil {
			t.Errorf("Verify while appends start segments = %v, want nil", err)
			break
		}
	}
	<-done
}

// TestFileStoreStartBitFlip flips, in turn, each bit of the file in which
// retention records the segment that the store starts at, in a store whose
// later segments follow that one: opening must report every flip as a
// *CorruptionError for the file, whatever segment the damaged file names,
// and leave every segment in place. A flip that named a later segment
// (the lowest bit of an even number) passed for the store's start, and
// opening deleted the segments before it: acknowledged events gone
// without a word.
func TestFileStoreStartBitFlip(t *testing.T) {
	ctx := t.Context()
	src := t.TempDir()
	s := openFile(t, src, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10})
	// Until the store starts at an even segment that a later one follows.
	for i := 0; ; i++ {
		require.Less(t, i, 10000, "appends that made no START naming an even segment")
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 200))...)
		require.NoError(t, err)
		if st := s.Stats(); st.FirstPosition > 0 && st.Segments > 1 {
			b, err := os.ReadFile(filepath.Join(src, "START"))
			require.NoError(t, err)
			if n, err := strconv.ParseUint(strings.Fields(string(b))[0], 10, 64); err == nil && n%2 == 0 {
				break
			}
		}
	}
	// Compared by reflect.DeepEqual, their Times zeroed: cmp.Diff after
	// each repair took most of the test's time under the race detector.
	want := untimed(readAll(t, s))
	require.NoError(t, s.Close())
	files := map[string][]byte{}
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != "LOCK" {
			files[e.Name()], err = os.ReadFile(filepath.Join(src, e.Name()))
			require.NoError(t, err)
		}
	}
	start := files["START"]
	for i := range len(start) * 8 {
		for _, readOnly := range []bool{true, false} {
			dir := t.TempDir()
			for name, b := range files {
				if name == "START" {
					b = slices.Clone(b)
					b[i/8] ^= 1 << (i % 8)
				}
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
			}
			s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
			var ce *eventbus.CorruptionError
			if !errors.As(err, &ce) || ce.Path != filepath.Join(dir, "START") {
				if err == nil {
					got := readAll(t, s)
					s.Close()
					t.Fatalf("START %q with bit %d flipped: OpenFileStore(ReadOnly %v) read %d events from position %d, want a *CorruptionError for START", start, i, readOnly, len(got), got[0].Position)
				}
				t.Fatalf("START %q with bit %d flipped: OpenFileStore(ReadOnly %v) = %v, want a *CorruptionError for START", start, i, readOnly, err)
			}
			for name := range files {
				require.FileExists(t, filepath.Join(dir, name), "after OpenFileStore(ReadOnly %v) failed", readOnly)
			}
			if readOnly {
				continue
			}
			_, err = eventbus.RepairFileStore(dir)
			require.NoError(t, err)
			if got := untimed(readAll(t, openFile(t, dir, nil))); !reflect.DeepEqual(want, got) {
				t.Fatalf("START with bit %d flipped, then repaired: ReadAll (-before +after):\n%s", i, cmp.Diff(want, got))
			}
		}
	}
}

// untimed returns evs with their Time zeroed.
func untimed(evs []eventbus.RecordedEvent) []eventbus.RecordedEvent {
	for i := range evs {
		evs[i].Time = time.Time{}
	}
	return evs
}

// TestRepairFileStoreMissingDir repairs a directory that does not exist,
// a mistyped path say: RepairFileStore reports it, rather than creating an
// empty store there and reporting nothing to repair.
func TestRepairFileStoreMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	kept, err := eventbus.RepairFileStore(dir)
	if !errors.Is(err, fs.ErrNotExist) || kept != "" {
		t.Errorf("RepairFileStore(%s) = %q, %v, want an error wrapping fs.ErrNotExist", dir, kept, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after RepairFileStore, stat %s = %v, want fs.ErrNotExist: it made a store", dir, err)
	}
}

// TestRepairFileStoreNotAStore repairs a directory that exists but holds
// no store, the parent of the store's directory say: RepairFileStore
// reports it, as for a missing directory, rather than making a store
// there (a LOCK and a segment file among the caller's files) and
// reporting nothing to repair while the store it was meant for stays
// damaged.
func TestRepairFileStoreNotAStore(t *testing.T) {
	parent := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(parent, "notes.txt"), []byte("x"), 0o644))
	s := openFile(t, filepath.Join(parent, "events"), nil)
	_, err := s.Append(t.Context(), "s", eventbus.NoStream, newEvents(1, "t", "")...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	names := func() []string {
		t.Helper()
		entries, err := os.ReadDir(parent)
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	before := names()

	kept, err := eventbus.RepairFileStore(parent)
	if !errors.Is(err, fs.ErrNotExist) || kept != "" {
		t.Errorf("RepairFileStore(%s) = %q, %v, want an error wrapping fs.ErrNotExist", parent, kept, err)
	}
	if diff := cmp.Diff(before, names()); diff != "" {
		t.Errorf("RepairFileStore of a directory holding no store changed it (-before +after):\n%s", diff)
	}
}

// TestFileStoreEmptyDir checks that OpenFileStore, read-only or not, and
// RepairFileStore refuse an empty directory name (an unset setting, say)
// with an error wrapping ErrInvalid that names the call: they failed with
// "open file store: mkdir : no such file or directory" or "repair: stat :
// no such file or directory", wrapping fs.ErrNotExist, as if a directory
// were missing, which OpenFileStore would have made.
func TestFileStoreEmptyDir(t *testing.T) {
	for name, call := range map[string]func() error{
		"OpenFileStore": func() error {
			s, err := eventbus.OpenFileStore("", nil)
			if s != nil {
				s.Close()
			}
			return err
		},
		"OpenFileStore read-only": func() error {
			s, err := eventbus.OpenFileStore("", &eventbus.FileStoreOptions{ReadOnly: true})
			if s != nil {
				s.Close()
			}
			return err
		},
		"RepairFileStore": func() error { _, err := eventbus.RepairFileStore(""); return err },
	} {
		err := call()
		call, _, _ := strings.Cut(name, " ")
		if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), call) {
			t.Errorf("%s(\"\") = %v, want ErrInvalid naming %s", name, err, call)
		}
	}
}

// TestFileStoreNewerFormat opens a store whose segment says, with a
// sound checksum, that it is of a format version this package does not
// read, as one written by a later version of it would: that is no
// damage, and opening, read-only or not, must say which version it is
// with an error wrapping ErrInvalid, not a *CorruptionError, for which
// the eventbus command advises a repair, and RepairFileStore must leave
// the store as it is. It moved the segment, and every later one, into
// its repair subdirectory, leaving an empty store in their place.
func TestFileStoreNewerFormat(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	_, err := s.Append(t.Context(), "s", eventbus.NoStream, newEvents(2, "t", "")...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	seg := segments(t, dir)[0]
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	// The header: magic, version u16, reserved u16, CRC-32C u32 of the
	// header with the CRC zeroed, seq, first position.
	binary.LittleEndian.PutUint16(b[8:], 2)
	clear(b[12:16])
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[:32], crc32.MakeTable(crc32.Castagnoli)))
	require.NoError(t, os.WriteFile(seg, b, 0o644))

	for _, readOnly := range []bool{false, true} {
		s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
		if s != nil {
			s.Close()
		}
		var ce *eventbus.CorruptionError
		if errors.As(err, &ce) || !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "version 2") {
			t.Errorf("OpenFileStore(ReadOnly %v) of a segment of format version 2 = %v, want an error wrapping ErrInvalid naming version 2, not a *CorruptionError", readOnly, err)
		}
	}
	kept, err := eventbus.RepairFileStore(dir)
	if kept != "" || !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("RepairFileStore of a segment of format version 2 = %q, %v, want an error wrapping ErrInvalid and nothing kept", kept, err)
	}
	after, err := os.ReadFile(seg)
	require.NoError(t, err, "the segment is where it was")
	require.Equal(t, b, after, "the segment is as it was")
}

func TestFileStoreForeignFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "seg-0000000000000001.log"), []byte("not a segment, but long enough for a header"), 0o644))
	var ce *eventbus.CorruptionError
	if _, err := eventbus.OpenFileStore(dir, nil); !errors.As(err, &ce) || ce.Offset != 0 {
		t.Fatalf("OpenFileStore of a foreign segment = %v, want a *CorruptionError at offset 0", err)
	}
}

// faultFS fails writes or syncs of segment files, or the removal of one,
// once armed, and counts the syncs, which take syncTime each if it is set.
type faultFS struct {
	eventbus.FS
	failWrite, failSync atomic.Pointer[error]
	failRemove          atomic.Pointer[string] // the path whose removal fails
	short               bool                   // a failing write writes half its bytes first
	syncTime            time.Duration
	syncs               atomic.Int64
	open                atomic.Int64 // files opened and not closed
}

func (f *faultFS) Remove(name string) error {
	if p := f.failRemove.Load(); p != nil && *p == name {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.EACCES}
	}
	return f.FS.Remove(name)
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	f.open.Add(1)
	return &faultFile{File: file, fs: f}, nil
}

type faultFile struct {
	eventbus.File
	fs     *faultFS
	closed atomic.Bool
}

func (f *faultFile) Close() error {
	if !f.closed.Swap(true) {
		f.fs.open.Add(-1)
	}
	return f.File.Close()
}

func (f *faultFile) Write(b []byte) (int, error) {
	if err := f.fs.failWrite.Load(); err != nil {
		n := 0
		if f.fs.short {
			n, _ = f.File.Write(b[:len(b)/2])
		}
		return n, *err
	}
	return f.File.Write(b)
}

func (f *faultFile) Sync() error {
	f.fs.syncs.Add(1)
	if err := f.fs.failSync.Load(); err != nil {
		return *err
	}
	time.Sleep(f.fs.syncTime) // the device's latency, not a wait for another goroutine
	return f.File.Sync()
}

// TestFileStoreFaults injects write and sync errors and checks that the
// append fails, that nothing unacknowledged is read, that the store
// refuses appends until it is reopened, and that reopening recovers.
func TestFileStoreFaults(t *testing.T) {
	for _, tt := range []struct {
		name  string
		err   error
		sync  bool
		short bool
	}{
		{"disk full", syscall.ENOSPC, false, false},
		{"disk full after half the write", syscall.ENOSPC, false, true},
		{"I/O error on write", syscall.EIO, false, false},
		{"I/O error on fsync", syscall.EIO, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			fs := &faultFS{FS: eventbus.OSFS, short: tt.short}
			s := openFile(t, dir, eventbus.WithFS(nil, fs))
			_, err := s.Append(ctx, "s", eventbus.NoStream, newEvents(2, "t", "ok")...)
			require.NoError(t, err)

			if tt.sync {
				fs.failSync.Store(&tt.err)
			} else {
				fs.failWrite.Store(&tt.err)
			}
			if _, err := s.Append(ctx, "s", eventbus.Exact(1), newEvents(1, "t", "failed")...); !errors.Is(err, tt.err) {
				t.Fatalf("Append with a failing disk = %v, want %v", err, tt.err)
			}
			if got := readAll(t, s); len(got) != 2 {
				t.Errorf("after a failed append, read %d events, want the 2 acknowledged", len(got))
			}
			if info, err := s.StreamInfo(ctx, "s"); err != nil || info.Revision != 1 {
				t.Errorf("StreamInfo after a failed append = %+v, %v; want revision 1", info, err)
			}
			fs.failSync.Store(nil)
			fs.failWrite.Store(nil)
			if _, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "refused")...); !errors.Is(err, tt.err) {
				t.Errorf("Append after a failure = %v, want it refused with %v", err, tt.err)
			}
			if err := s.Delete(ctx, "s", eventbus.Any); err == nil {
				t.Errorf("Delete after a failure succeeded, want it refused")
			}
			s.Close()

			s = openFile(t, dir, nil)
			got := readAll(t, s)
			if len(got) < 2 || len(got) > 3 || string(got[0].Data) != "ok0" || string(got[1].Data) != "ok1" {
				t.Fatalf("after reopening, read %d events, want the 2 acknowledged and maybe the failed one", len(got))
			}
			res, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "again")...)
			require.NoError(t, err)
			require.Equal(t, uint64(len(got)), res.Position)
		})
	}
}

// TestFileStoreStatsAfterFailedWrite checks that Stats counts only the
// streams committed: after the write of the first append to a new stream
// failed, Streams counted that stream, which is not on disk, until the
// store was reopened.
func TestFileStoreStatsAfterFailedWrite(t *testing.T) {
	ctx := t.Context()
	fs := &faultFS{FS: eventbus.OSFS}
	s := openFile(t, t.TempDir(), eventbus.WithFS(nil, fs))
	_, err := s.Append(ctx, "a", eventbus.Any, newEvents(1, "t", "")...)
	require.NoError(t, err)
	want := s.Stats()
	eio := error(syscall.EIO)
	fs.failWrite.Store(&eio)
	_, err = s.Append(ctx, "b", eventbus.Any, newEvents(1, "t", "")...)
	require.ErrorIs(t, err, syscall.EIO)
	require.ErrorIs(t, s.SetStreamMetadata(ctx, "c", eventbus.StreamMetadata{MaxCount: 1}), syscall.EIO)
	if got := s.Stats(); got != want {
		t.Errorf("Stats after failed writes = %+v, want %+v as before them", got, want)
	}
}

// headerOnlyFS, once armed, fails with ENOSPC every write to a file opened
// since but its first, the header of a new segment (or the content of
// LAST): a disk that fills up as a segment starts.
type headerOnlyFS struct {
	eventbus.FS
	armed atomic.Bool
}

func (f *headerOnlyFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !f.armed.Load() {
		return file, err
	}
	return &headerOnlyFile{File: file}, nil
}

type headerOnlyFile struct {
	eventbus.File
	writes int // only the committer writes
}

func (f *headerOnlyFile) Write(b []byte) (int, error) {
	if f.writes++; f.writes > 1 {
		return 0, syscall.ENOSPC
	}
	return f.File.Write(b)
}

// TestFileStoreStatsAfterFailedRoll fills the disk as a new segment
// starts: its header is written, then the state frame that retention
// starts it with, or the append, fails. Stats must count the new segment
// with its bytes, as its file holds them: it counted the segment but not
// its header (nor its state frame), so Bytes fell short of the files
// until the store was reopened.
func TestFileStoreStatsAfterFailedRoll(t *testing.T) {
	for _, retain := range []int64{0, 1 << 40} {
		t.Run(fmt.Sprintf("RetainSize=%d", retain), func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			fs := &headerOnlyFS{FS: eventbus.OSFS}
			const size = 1 << 10
			s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{MaxSegmentSize: size, RetainSize: retain}, fs))
			for s.Stats().Bytes < size {
				appendEach(t, s, 1)
			}
			fs.armed.Store(true)
			_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "")...)
			require.ErrorIs(t, err, syscall.ENOSPC, "Append as the disk fills up")
			st := s.Stats()
			var bytes int64
			for _, path := range segments(t, dir) {
				fi, err := os.Stat(path)
				require.NoError(t, err)
				bytes += fi.Size()
			}
			if n := len(segments(t, dir)); st.Segments != n || st.Bytes != bytes {
				t.Errorf("Stats() = %d segments of %d bytes, want %d of %d as the files hold", st.Segments, st.Bytes, n, bytes)
			}
		})
	}
}

// gatedFS holds the first write to a segment, once armed, until gate is
// closed, and fails every later one if fail is set.
type gatedFS struct {
	eventbus.FS
	gate   chan struct{}
	fail   bool
	armed  atomic.Bool
	writes atomic.Int64
}

func (f *gatedFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &gatedFile{File: file, fs: f}, nil
}

type gatedFile struct {
	eventbus.File
	fs *gatedFS
}

func (f *gatedFile) Write(b []byte) (int, error) {
	if !f.fs.armed.Load() {
		return f.File.Write(b)
	}
	if f.fs.writes.Add(1) == 1 {
		<-f.fs.gate
	} else if f.fs.fail {
		return 0, syscall.EIO
	}
	return f.File.Write(b)
}

// TestFileStoreFailedGroupFailsReplays appends the same event twice in one
// group whose write fails: the second append, a replay of the first, must
// fail too, since the event is not on disk.
func TestFileStoreFailedGroupFailsReplays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		fs := &gatedFS{FS: eventbus.OSFS, gate: make(chan struct{}), fail: true}
		s, err := eventbus.OpenFileStore(dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever}, fs))
		require.NoError(t, err)
		fs.armed.Store(true)
		go func() { _, _ = s.Append(ctx, "blocker", eventbus.Any, newEvents(1, "t", "")...) }()
		synctest.Wait() // the committer waits in the blocker's write
		e := newEvents(1, "t", "twice")
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := s.Append(ctx, "s", eventbus.Any, e...)
				errs <- err
			}()
		}
		synctest.Wait() // both wait for the next group
		close(fs.gate)
		for range 2 {
			require.ErrorIs(t, <-errs, syscall.EIO, "an append acknowledged though its event is not on disk")
		}
		require.NoError(t, s.Close())
		s = openFile(t, dir, nil)
		for _, e := range readAll(t, s) {
			require.NotEqual(t, "s", e.Stream)
		}
	})
}

// TestFileStoreFailedGroupFailsDecisions makes two appends to a new stream
// with NoStream in one group whose write fails: the second must fail with
// the write's error, as the first does. It failed with a
// *WrongExpectedVersionError that said the stream existed, at the first
// append's revision, though that append is not on disk: a caller told so
// takes the stream for written by another.
func TestFileStoreFailedGroupFailsDecisions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		fs := &gatedFS{FS: eventbus.OSFS, gate: make(chan struct{}), fail: true}
		s, err := eventbus.OpenFileStore(dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever}, fs))
		require.NoError(t, err)
		fs.armed.Store(true)
		go func() { _, _ = s.Append(ctx, "blocker", eventbus.Any, newEvents(1, "t", "")...) }()
		synctest.Wait() // the committer waits in the blocker's write
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := s.Append(ctx, "s", eventbus.NoStream, newEvents(1, "t", "")...)
				errs <- err
			}()
		}
		synctest.Wait() // both wait for the next group
		close(fs.gate)
		for range 2 {
			require.ErrorIs(t, <-errs, syscall.EIO, "an append failed for an append that is not on disk")
		}
		require.NoError(t, s.Close())
	})
}

// TestFileStoreReplayInGroup appends the same events several times in one
// group, and again once it is written and once the store is reopened: each
// later append is a replay of the first, found among the events of the
// group's buffer, then in the segment, with the first one's result.
func TestFileStoreReplayInGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		fs := &gatedFS{FS: eventbus.OSFS, gate: make(chan struct{})}
		s, err := eventbus.OpenFileStore(dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever}, fs))
		require.NoError(t, err)
		_, err = s.Append(ctx, "s", eventbus.Any, newEvents(3, "t", "before")...)
		require.NoError(t, err)
		fs.armed.Store(true)
		go func() { _, _ = s.Append(ctx, "blocker", eventbus.Any, newEvents(1, "t", "")...) }()
		synctest.Wait() // the committer waits in the blocker's write
		e := newEvents(2, "t", "replayed")
		type outcome struct {
			res eventbus.AppendResult
			err error
		}
		outcomes := make(chan outcome, 3)
		for range cap(outcomes) {
			go func() {
				res, err := s.Append(ctx, "s", eventbus.Any, e...)
				outcomes <- outcome{res, err}
			}()
		}
		synctest.Wait() // all wait for the next group
		close(fs.gate)
		want := eventbus.AppendResult{Revision: 4, Position: 5}
		for range cap(outcomes) {
			o := <-outcomes
			require.NoError(t, o.err)
			require.Equal(t, want, o.res, "Append of the same events in one group")
		}
		res, err := s.Append(ctx, "s", eventbus.Any, e...)
		require.NoError(t, err)
		require.Equal(t, want, res, "Append of the same events after the group")
		require.NoError(t, s.Close())

		s = openFile(t, dir, nil)
		res, err = s.Append(ctx, "s", eventbus.Any, e...)
		require.NoError(t, err)
		require.Equal(t, want, res, "Append of the same events after reopening")
		res, err = s.Append(ctx, "s", eventbus.Exact(2), e[:1]...)
		require.NoError(t, err)
		require.Equal(t, eventbus.AppendResult{Revision: 3, Position: 4}, res, "Append of the first of the same events")
		require.Len(t, readAll(t, s), 6)
	})
}

// TestFileStoreGroupSize queues many appends while the committer is busy:
// they are committed in groups of at most MaxSegmentSize bytes, so no
// segment grows past twice that plus an append (segment offsets have 32
// bits, and a group is written from one buffer). Appends to long stream
// names count the names.
func TestFileStoreGroupSize(t *testing.T) {
	long := func(i int) string { return strings.Repeat("s", 1000) + strconv.Itoa(i) }
	for name, tt := range map[string]struct {
		size   int64 // of one request on disk, at most
		append func(s *eventbus.FileStore) error
	}{
		"events": {1200, func(s *eventbus.FileStore) error {
			_, err := s.Append(context.Background(), "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 1000))...)
			return err
		}},
		"stream names": {4 * 1200, func(s *eventbus.FileStore) error {
			var as []eventbus.StreamAppend
			for i := range 4 {
				as = append(as, eventbus.StreamAppend{Stream: long(i), Expected: eventbus.Any, Events: newEvents(1, "t", "")})
			}
			_, err := s.AppendMulti(context.Background(), as...)
			return err
		}},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				const max = 4 << 10
				fs := &gatedFS{FS: eventbus.OSFS, gate: make(chan struct{})}
				s, err := eventbus.OpenFileStore(dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: max}, fs))
				require.NoError(t, err)
				fs.armed.Store(true)
				go func() { _, _ = s.Append(context.Background(), "blocker", eventbus.Any, newEvents(1, "t", "")...) }()
				synctest.Wait() // the committer waits in the blocker's write
				errs := make(chan error, 100)
				for range 100 {
					go func() { errs <- tt.append(s) }()
				}
				synctest.Wait() // all wait for the next group
				close(fs.gate)
				for range 100 {
					require.NoError(t, <-errs)
				}
				require.NoError(t, s.Close())
				for _, path := range segments(t, dir) {
					fi, err := os.Stat(path)
					require.NoError(t, err)
					require.LessOrEqual(t, fi.Size(), 2*max+tt.size, "%s", path)
				}
			})
		})
	}
}

// syncedFS records how many bytes of each file were synced, so that
// crashCopy can copy a directory as a power loss would leave it.
type syncedFS struct {
	eventbus.FS
	mu      sync.Mutex
	synced  map[string]int64  // path -> bytes on disk for good
	renamed map[string]string // the new path of a renamed file
}

func (f *syncedFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if flag&os.O_CREATE != 0 {
		// A new file of a name renamed before (START.tmp, made again at
		// each retention), which its syncs must not take for the old.
		f.mu.Lock()
		delete(f.renamed, name)
		f.mu.Unlock()
	}
	return &syncedFile{File: file, fs: f, name: name}, nil
}

func (f *syncedFS) Rename(from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.synced[from]; ok {
		f.synced[to] = n
		delete(f.synced, from)
	}
	f.renamed[from] = to
	return f.FS.Rename(from, to)
}

type syncedFile struct {
	eventbus.File
	fs   *syncedFS
	name string
}

func (f *syncedFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	name := f.name
	if to, ok := f.fs.renamed[name]; ok {
		name = to
	}
	if fi, err := os.Stat(name); err == nil && !fi.IsDir() {
		f.fs.synced[name] = fi.Size()
	}
	return nil
}

// crashCopy copies the store files of dir to a new directory, each cut
// to the bytes that were synced, as a power loss would leave them.
func (f *syncedFS) crashCopy(t *testing.T, dir string) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	copied := t.TempDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		n, ok := f.synced[path]
		if e.Name() == "LOCK" || !ok {
			continue
		}
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(copied, e.Name()), b[:n], 0o644))
	}
	return copied
}

// killCopy copies the store files of dir whole to a new directory, as a
// crash of the process leaves them (the operating system has every byte
// written), and carries over how many bytes of each were synced, so that
// a store opened there through f can be crash-copied in turn.
func (f *syncedFS) killCopy(t *testing.T, dir string) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	copied := t.TempDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(copied, e.Name()), b, 0o644))
		if n, ok := f.synced[filepath.Join(dir, e.Name())]; ok {
			f.synced[filepath.Join(copied, e.Name())] = n
		}
	}
	return copied
}

// TestFileStoreRetentionCrash loses power, with SyncNever, just after
// retention dropped every segment before the active one: the streams'
// revisions and tombstones survive, since the active segment's state frame
// is synced before the store's start moves to it.
func TestFileStoreRetentionCrash(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
	s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 1}, fs))
	_, err := s.Append(ctx, "a", eventbus.NoStream, newEvents(5, "t", "")...)
	require.NoError(t, err)
	_, err = s.Append(ctx, "gone", eventbus.NoStream, newEvents(1, "t", "")...)
	require.NoError(t, err)
	require.NoError(t, s.Tombstone(ctx, "gone", eventbus.Any))
	for s.Stats().FirstPosition == 0 {
		_, err := s.Append(ctx, "filler", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 500))...)
		require.NoError(t, err)
	}

	crashed := openFile(t, fs.crashCopy(t, dir), nil)
	info, err := crashed.StreamInfo(ctx, "a")
	require.NoError(t, err)
	require.True(t, info.Exists)
	require.EqualValues(t, 4, info.Revision, "a's revision survives its events")
	_, err = crashed.Append(ctx, "gone", eventbus.Any, newEvents(1, "t", "")...)
	require.ErrorIs(t, err, eventbus.ErrStreamDeleted, "the tombstone survives")
}

// TestFileStoreRetentionFaults fails the deletion of a segment file that
// retention dropped, in a store whose older segments were written without
// retention (so they do not start with the state of every stream): the
// store works on and reports the error; the directory as it is then (as a
// crash would leave it) opens, without the dropped segments; and the
// store deletes the file when it next can. No file is left open.
func TestFileStoreRetentionFaults(t *testing.T) {
	dir := t.TempDir()
	files := func(dir string) []string {
		t.Helper()
		names, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
		require.NoError(t, err)
		return names
	}
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10})
	appendEach(t, s, 300)
	require.NoError(t, s.Close())
	old := files(dir)
	require.Greater(t, len(old), 4)

	fs := &faultFS{FS: eventbus.OSFS}
	fs.failRemove.Store(&old[1])
	s = openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10}, fs))
	appendEach(t, s, 300)
	st := s.Stats()
	require.Positive(t, st.FirstPosition, "retention dropped segments")
	require.ErrorIs(t, st.RetentionErr, syscall.EACCES)
	require.FileExists(t, old[1])
	require.NoFileExists(t, old[0])
	got := readAll(t, s)
	require.Equal(t, st.NextPosition-st.FirstPosition, uint64(len(got)), "reads skip the dropped segments")
	require.Equal(t, st.FirstPosition, got[0].Position)

	// A copy of the directory opens, without the file left behind.
	copied := copyStore(t, dir)
	reopened := openFile(t, copied, nil)
	require.Equal(t, st.FirstPosition, reopened.Stats().FirstPosition)
	require.Equal(t, st.NextPosition, reopened.Stats().NextPosition)
	require.Equal(t, len(got), len(readAll(t, reopened)))
	require.Len(t, files(copied), reopened.Stats().Segments, "opening deleted the file left behind")

	fs.failRemove.Store(nil)
	appendEach(t, s, 100)
	st = s.Stats()
	require.NoError(t, st.RetentionErr)
	require.Len(t, files(dir), st.Segments, "the next segment's retention deleted the file left behind")
	require.NoError(t, s.Close())
	require.Zero(t, fs.open.Load(), "files left open after Close")
}

// crashFS calls at before each write, sync, rename and removal of a file,
// as the point where a crash may stop the store.
type crashFS struct {
	eventbus.FS
	at func()
}

func (f *crashFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &crashFile{File: file, fs: f}, nil
}

func (f *crashFS) Rename(from, to string) error {
	f.at()
	return f.FS.Rename(from, to)
}

func (f *crashFS) Remove(name string) error {
	f.at()
	return f.FS.Remove(name)
}

type crashFile struct {
	eventbus.File
	fs *crashFS
}

func (f *crashFile) Write(b []byte) (int, error) {
	f.fs.at()
	return f.File.Write(b)
}

func (f *crashFile) Sync() error {
	f.fs.at()
	return f.File.Sync()
}

// crashImage is a copy of a store's directory as a crash left it.
type crashImage struct {
	dir   string
	acked int // calls acknowledged when it was taken
}

// crashImages returns a crashFS that, at each write, sync, rename and
// removal, copies the store files of dir as a power loss leaves them (the
// bytes synced), as a crash of the process does (every byte written), and
// torn between the two (half of what was not synced), into images, each
// image once, with the calls acknowledged then, which the test counts in
// acked.
func crashImages(t *testing.T, dir string, acked *int, images *[]crashImage) *crashFS {
	synced := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
	seen := map[string]bool{}
	crash := &crashFS{FS: synced}
	crash.at = func() {
		synced.mu.Lock()
		defer synced.mu.Unlock()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Error(err)
			return
		}
		var files [3]map[string][]byte
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if e.Name() == "LOCK" || e.IsDir() {
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			n, ok := synced.synced[path]
			for i, keep := range []int64{n, int64(len(b)), n + (int64(len(b))-n)/2} {
				if ok || i == 1 {
					if files[i] == nil {
						files[i] = map[string][]byte{}
					}
					files[i][e.Name()] = b[:keep]
				}
			}
		}
		for _, f := range files {
			// Each image once: most points leave one of another.
			key := fmt.Sprint(*acked, f)
			if seen[key] {
				continue
			}
			seen[key] = true
			c := t.TempDir()
			for name, b := range f {
				if err := os.WriteFile(filepath.Join(c, name), b, 0o644); err != nil {
					t.Error(err)
				}
			}
			*images = append(*images, crashImage{c, *acked})
		}
	}
	return crash
}

// TestFileStoreCrashPoints crashes a store under SyncAlways at every write,
// sync, rename and removal it makes, while it appends (replays too),
// deletes, tombstones, starts segments and applies retention: at each
// point it copies the directory as a power loss leaves it (the bytes
// synced), as a crash of the process does (every byte written), and torn
// between the two (half of what was not synced). Every copy must open,
// hold every event acknowledged before the crash that retention kept,
// unchanged and at its position, and know every stream's revision and
// tombstone as acknowledged: SyncAlways's promise that an acknowledged
// append is on stable storage, at every step of the store's work.
func TestFileStoreCrashPoints(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	var images []crashImage
	acked := 0
	crash := crashImages(t, dir, &acked, &images)
	opts := &eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10, RetainSize: 3 << 10}
	s := openFile(t, dir, eventbus.WithFS(opts, crash))

	// The model: every acknowledged event by position, and each
	// stream's revision and tombstone after each acknowledged call.
	var events []eventbus.RecordedEvent
	type state struct {
		revision   map[string]uint64
		tombstoned map[string]bool
	}
	states := []state{{map[string]uint64{}, map[string]bool{}}}
	rng := rand.New(rand.NewPCG(3, 4))
	streams := []string{"a", "b", "c", "d"}
	var last []eventbus.EventData
	for i := range 50 {
		st := states[len(states)-1]
		next := state{maps.Clone(st.revision), maps.Clone(st.tombstoned)}
		stream := streams[rng.IntN(len(streams))]
		switch op := rng.IntN(10); {
		case op == 0 && !st.tombstoned[stream] && i > 25:
			require.NoError(t, s.Tombstone(ctx, stream, eventbus.Any))
			next.tombstoned[stream] = true
		case op == 1 && last != nil && !st.tombstoned[events[len(events)-1].Stream]:
			_, err := s.Append(ctx, events[len(events)-1].Stream, eventbus.Any, last...)
			require.NoError(t, err, "replay")
		default:
			if st.tombstoned[stream] {
				continue
			}
			evs := newEvents(1+rng.IntN(3), "t", strings.Repeat("x", rng.IntN(150)))
			res, err := s.Append(ctx, stream, eventbus.Any, evs...)
			require.NoError(t, err)
			for k, e := range evs {
				events = append(events, eventbus.RecordedEvent{EventData: e, Stream: stream,
					Revision: res.Revision - uint64(len(evs)-1-k), Position: res.Position - uint64(len(evs)-1-k)})
			}
			next.revision[stream] = res.Revision
			last = evs
		}
		states = append(states, next)
		acked = len(states) - 1
	}
	require.NoError(t, s.Close())
	require.Greater(t, s.Stats().FirstPosition, uint64(0), "retention removed segments")
	t.Logf("%d crash images", len(images))

	ignore := cmpopts.IgnoreFields(eventbus.RecordedEvent{}, "Time", "SchemaVersion")
	for _, im := range images {
		// Read-only, which reads as a writing open does but syncs nothing.
		s, err := eventbus.OpenFileStore(im.dir, &eventbus.FileStoreOptions{ReadOnly: true})
		require.NoError(t, err, "OpenFileStore of a crash image after %d acknowledged calls", im.acked)
		got := readAll(t, s)
		first := s.Stats().FirstPosition
		// The events acknowledged before the crash: the model's events up
		// to the last acknowledged append's.
		var want []eventbus.RecordedEvent
		st := states[im.acked]
		for _, e := range events {
			if e.Revision <= st.revision[e.Stream] && e.Position >= first {
				if _, ok := st.revision[e.Stream]; ok {
					want = append(want, e)
				}
			}
		}
		if len(got) < len(want) {
			t.Fatalf("crash after %d acknowledged calls: read %d events from position %d, want at least %d", im.acked, len(got), first, len(want))
		}
		if diff := cmp.Diff(want, got[:len(want)], ignore, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("crash after %d acknowledged calls: events (-acknowledged +read):\n%s", im.acked, diff)
		}
		for stream, rev := range st.revision {
			info, err := s.StreamInfo(ctx, stream)
			require.NoError(t, err)
			if info.Revision < rev || st.tombstoned[stream] && !info.Tombstoned {
				t.Fatalf("crash after %d acknowledged calls: StreamInfo(%q) = %+v, want revision %d or later, tombstoned %v", im.acked, stream, info, rev, st.tombstoned[stream])
			}
		}
		require.NoError(t, s.Close())
	}
}

// TestFileStoreCrash runs a child process (this test binary) that appends
// from several goroutines and prints every acknowledged append, kills it
// with SIGKILL at a random moment, and checks after each reopen that every
// acknowledged event is there, with contiguous revisions and positions.
// EVENTBUS_CRASH_ITERATIONS sets the number of kills (default 25).
func TestFileStoreCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	iterations := 25
	if n, err := strconv.Atoi(os.Getenv("EVENTBUS_CRASH_ITERATIONS")); err == nil {
		iterations = n
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	type ack struct {
		stream        string
		rev, pos, num uint64
	}
	var acked []ack
	for i := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreCrashChild$")
		cmd.Env = append(os.Environ(), "EVENTBUS_CRASH_DIR="+dir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		killAfter := 1 + rng.IntN(150)
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			var a ack
			if _, err := fmt.Sscanf(sc.Text(), "ack %s %d %d %d", &a.stream, &a.rev, &a.pos, &a.num); err != nil {
				continue
			}
			acked = append(acked, a)
			if n++; n == killAfter {
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			}
		}
		_ = cmd.Wait()
		if n < killAfter {
			t.Fatalf("iteration %d: the child exited after %d acknowledged appends", i, n)
		}

		s, err := eventbus.OpenFileStore(dir, nil)
		if err != nil {
			t.Fatalf("iteration %d: OpenFileStore after SIGKILL = %v", i, err)
		}
		all := readAll(t, s)
		revs := map[string]uint64{}
		for p, e := range all {
			if e.Position != uint64(p) || e.Revision != revs[e.Stream] {
				t.Fatalf("iteration %d: event %d is %s@%d position %d, want revision %d position %d", i, p, e.Stream, e.Revision, e.Position, revs[e.Stream], p)
			}
			revs[e.Stream]++
		}
		for _, a := range acked {
			for k := range a.num {
				pos := a.pos - k
				if pos >= uint64(len(all)) || all[pos].Stream != a.stream || all[pos].Revision != a.rev-k {
					t.Fatalf("iteration %d: acknowledged event %s@%d at position %d is missing", i, a.stream, a.rev-k, pos)
				}
			}
		}
		require.NoError(t, s.Close())
	}
	t.Logf("%d kills, %d acknowledged appends, all present", iterations, len(acked))
}

// TestFileStoreCrashChild is the child process of TestFileStoreCrash.
func TestFileStoreCrashChild(t *testing.T) {
	dir := os.Getenv("EVENTBUS_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestFileStoreCrash")
	}
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{MaxSegmentSize: 16 << 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				stream := fmt.Sprintf("s%d", (w+i)%5)
				evs := newEvents(1+i%3, "t", strings.Repeat("x", i%200))
				res, err := s.Append(t.Context(), stream, eventbus.Any, evs...)
				if err != nil {
					fmt.Println("append:", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Printf("ack %s %d %d %d\n", stream, res.Revision, res.Position, len(evs))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestFileStoreGroupCommit appends from 8 goroutines at once under
// SyncAlways: they share syncs, close to all 8 in each, rather than
// alternating between two half groups.
func TestFileStoreGroupCommit(t *testing.T) {
	const appenders, each = 8, 25
	// A spinning disk's sync takes milliseconds.
	fs := &faultFS{FS: eventbus.OSFS, syncTime: 2 * time.Millisecond}
	s := openFile(t, t.TempDir(), eventbus.WithFS(nil, fs))
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Go(func() {
			for i := range each {
				_, err := s.Append(t.Context(), fmt.Sprint("s-", a), eventbus.Any, newEvents(1, "t", fmt.Sprint(i))...)
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, readAll(t, s), appenders*each)
	syncs := fs.syncs.Load()
	t.Logf("%d appends took %d syncs", appenders*each, syncs)
	// All 8 in each group would take 25 syncs; alternating halves, 50.
	require.LessOrEqual(t, syncs, int64(40), "appenders do not share syncs")
}

// TestFileStoreSyncsAfterFailedWrite fails a write under SyncInterval and
// SyncNever: the appends acknowledged before it, written but not yet
// synced, must still reach the disk, at the next interval or at Close, so
// that a power loss then loses none of them.
func TestFileStoreSyncsAfterFailedWrite(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy eventbus.SyncPolicy
	}{
		{"SyncInterval", eventbus.SyncInterval},
		{"SyncNever", eventbus.SyncNever},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				dir := t.TempDir()
				synced := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
				fs := &faultFS{FS: synced}
				s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: tt.policy, SyncInterval: time.Second}, fs))
				_, err := s.Append(ctx, "s", eventbus.NoStream, newEvents(2, "t", "acked")...)
				require.NoError(t, err)
				full := error(syscall.ENOSPC)
				fs.failWrite.Store(&full)
				_, err = s.Append(ctx, "s", eventbus.Exact(1), newEvents(1, "t", "failed")...)
				require.ErrorIs(t, err, syscall.ENOSPC)
				if tt.policy == eventbus.SyncInterval {
					time.Sleep(3 * time.Second) // a few intervals, on the bubble's clock
				} else {
					require.NoError(t, s.Close())
				}
				crashed := openFile(t, synced.crashCopy(t, dir), nil)
				got := readAll(t, crashed)
				require.Len(t, got, 2, "acknowledged events after a power loss")
			})
		})
	}
}

// TestFileStoreSyncIntervalPowerLoss appends under SyncInterval, across
// new segments and retention, and loses power (copies the directory as
// it leaves it: the bytes synced) once an interval has passed since the
// last append, and again just after an append: every event acknowledged
// an interval before the power loss must be there, as SyncInterval
// promises that such a crash loses at most the last interval.
func TestFileStoreSyncIntervalPowerLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		dir := t.TempDir()
		fs := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
		opts := &eventbus.FileStoreOptions{Sync: eventbus.SyncInterval, SyncInterval: time.Second, MaxSegmentSize: 1 << 10, RetainSize: 4 << 10}
		s := openFile(t, dir, eventbus.WithFS(opts, fs))
		var acked []eventbus.AppendResult // an interval before the crash
		check := func(what string) {
			t.Helper()
			crashed, err := eventbus.OpenFileStore(fs.crashCopy(t, dir), &eventbus.FileStoreOptions{ReadOnly: true})
			require.NoError(t, err, "OpenFileStore after a power loss %s", what)
			defer crashed.Close()
			got := readAll(t, crashed)
			first := crashed.Stats().FirstPosition
			for _, res := range acked {
				if res.Position < first {
					continue // removed by retention
				}
				if i := res.Position - first; i >= uint64(len(got)) || got[i].Position != res.Position || got[i].Revision != res.Revision {
					t.Fatalf("after a power loss %s: the event acknowledged at position %d is missing; read %d events from %d", what, res.Position, len(got), first)
				}
			}
		}
		for range 20 {
			var round []eventbus.AppendResult
			for range 3 {
				res, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 100))...)
				require.NoError(t, err)
				round = append(round, res)
			}
			check(fmt.Sprintf("just after the appends of round %d", len(acked)/3))
			time.Sleep(1500 * time.Millisecond) // past an interval, on the bubble's clock
			acked = append(acked, round...)
			check(fmt.Sprintf("an interval after the appends of round %d", len(acked)/3-1))
		}
		require.Positive(t, s.Stats().FirstPosition, "retention removed segments")
	})
}

// TestFileStoreSyncIntervalGap loses power under SyncInterval with a page
// of the last interval's appends unwritten, reading as zeros, before later
// pages that reached the disk, as SyncInterval's doc says the operating
// system may leave them: opening, read-only or not, must fail with a
// *CorruptionError at the record the gap starts in, changing nothing, and
// RepairFileStore must cut the log there, keeping a copy of what it cuts
// and every event of the intervals before. An open that took a gap from
// a record's start, whose length reads 0, for the zeros of a file that the
// crash extended but never wrote, and cut it and every later record
// (acknowledged events) without a word, passed every other test.
func TestFileStoreSyncIntervalGap(t *testing.T) {
	const page = 4096
	var whole []byte // the segment, every byte written
	var synced int64 // of it, before the last interval
	var records []int64
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		dir := t.TempDir()
		fs := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
		s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncInterval, SyncInterval: time.Second}, fs))
		appendData := func(n int) {
			records = append(records, s.Stats().Bytes)
			evs := newEvents(1, "t", "")
			evs[0].Data = bytes.Repeat([]byte{'x'}, n)
			_, err := s.Append(ctx, "s", eventbus.Any, evs...)
			require.NoError(t, err)
		}
		for range 3 {
			appendData(100)
		}
		time.Sleep(1500 * time.Millisecond) // past an interval, on the bubble's clock
		seg := segments(t, dir)[0]
		fs.mu.Lock()
		synced = fs.synced[seg]
		fs.mu.Unlock()
		require.Equal(t, s.Stats().Bytes, synced, "the interval's sync")
		// The last interval: the second record padded so that the third
		// starts a page.
		appendData(1000)
		size := s.Stats().Bytes - records[len(records)-1] // of a record of 1,000 bytes
		appendData(1000 + int((page-(s.Stats().Bytes+size)%page)%page))
		for range 12 {
			appendData(1000)
		}
		var err error
		whole, err = os.ReadFile(seg)
		require.NoError(t, err)
		require.NoError(t, s.Close())
	})
	started := records[5]
	require.Zero(t, started%page, "the record that starts a page")
	require.GreaterOrEqual(t, started, synced, "a gap in the last interval")
	require.NotContains(t, records, started+page, "a page that starts inside a record")
	// inside returns the offset of the record that holds off.
	inside := func(off int64) int64 {
		i, found := slices.BinarySearch(records, off)
		if !found {
			i--
		}
		return records[i]
	}
	for _, tt := range []struct {
		name string
		gap  int64 // where the page of zeros starts
	}{
		{"from a record's start", started},
		{"inside a record", started + page},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Less(t, tt.gap+page, int64(len(whole)), "records after the gap")
			image := slices.Clone(whole)
			clear(image[tt.gap : tt.gap+page])
			at := inside(tt.gap)
			dir := t.TempDir()
			path := filepath.Join(dir, "seg-0000000000000001.log")
			require.NoError(t, os.WriteFile(path, image, 0o644))
			for _, readOnly := range []bool{true, false} {
				s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
				var ce *eventbus.CorruptionError
				if !errors.As(err, &ce) || ce.Path != path || ce.Offset != at {
					if err == nil {
						s.Close()
					}
					t.Fatalf("OpenFileStore(ReadOnly %v) of a store with a gap at %d = %v, want a *CorruptionError for %s at %d", readOnly, tt.gap, err, path, at)
				}
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, len(image), len(b), "the segment after a failed open")
			}
			kept, err := eventbus.RepairFileStore(dir)
			require.NoError(t, err)
			cut, err := os.ReadFile(filepath.Join(kept, filepath.Base(path)+".from-"+strconv.FormatInt(at, 10)))
			require.NoError(t, err, "the copy of what repair cut")
			require.Equal(t, image[at:], cut, "the copy of what repair cut")
			s := openFile(t, dir, nil)
			got := readAll(t, s)
			want := slices.Index(records, at) // the events before the gap's record
			if len(got) != want {
				t.Errorf("after repair, read %d events, want the %d before the gap's record", len(got), want)
			}
			require.NoError(t, s.Close())
		})
	}
}

// TestFileStoreCloseReportsLostSync fails the sync of acknowledged appends
// under SyncInterval (the periodic one) and SyncNever (the one before a
// new segment starts): Close must report it, since those appends may not
// be on stable storage, and an application that appends nothing more
// learns it from Close only. Close returned nil, having nothing left to
// sync.
func TestFileStoreCloseReportsLostSync(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy eventbus.SyncPolicy
	}{
		{"SyncInterval", eventbus.SyncInterval},
		{"SyncNever at a new segment", eventbus.SyncNever},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				fs := &faultFS{FS: eventbus.OSFS}
				s, err := eventbus.OpenFileStore(t.TempDir(), eventbus.WithFS(&eventbus.FileStoreOptions{Sync: tt.policy, SyncInterval: time.Second, MaxSegmentSize: 1 << 10}, fs))
				require.NoError(t, err)
				evs := newEvents(2, "t", strings.Repeat("x", 600))
				_, err = s.Append(ctx, "s", eventbus.NoStream, evs...)
				require.NoError(t, err)
				eio := error(syscall.EIO)
				fs.failSync.Store(&eio)
				if tt.policy == eventbus.SyncInterval {
					time.Sleep(3 * time.Second) // a few intervals, on the bubble's clock
				} else {
					_, err = s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "")...)
					require.ErrorIs(t, err, syscall.EIO, "Append that starts a new segment")
				}
				if err := s.Close(); !errors.Is(err, syscall.EIO) {
					t.Errorf("Close after a failed sync of acknowledged appends = %v, want %v", err, syscall.EIO)
				}
			})
		})
	}
}

// TestFileStoreCloseReportsFailedSync fails the sync that Close makes of
// the appends acknowledged since the last one (under SyncNever, and under
// SyncInterval within an interval): Close must return its error, as its
// doc says, since those appends may not be on stable storage and Close is
// the application's last chance to learn it. No test proved it: a Close
// that ignored the error of its own sync passed every test.
func TestFileStoreCloseReportsFailedSync(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy eventbus.SyncPolicy
	}{
		{"SyncInterval", eventbus.SyncInterval},
		{"SyncNever", eventbus.SyncNever},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := &faultFS{FS: eventbus.OSFS}
				s, err := eventbus.OpenFileStore(t.TempDir(), eventbus.WithFS(&eventbus.FileStoreOptions{Sync: tt.policy, SyncInterval: time.Hour}, fs))
				require.NoError(t, err)
				_, err = s.Append(t.Context(), "s", eventbus.NoStream, newEvents(2, "t", "")...)
				require.NoError(t, err)
				eio := error(syscall.EIO)
				fs.failSync.Store(&eio)
				if err := s.Close(); !errors.Is(err, syscall.EIO) {
					t.Errorf("Close whose sync of acknowledged appends fails = %v, want %v", err, syscall.EIO)
				}
				if err := s.Close(); !errors.Is(err, syscall.EIO) {
					t.Errorf("Close again = %v, want %v as the first returned", err, syscall.EIO)
				}
			})
		})
	}
}

// bigWriteFS, once armed, writes half of any write of more than 64 KiB
// and fails it, as a full disk would: the header of a new segment is
// written, the state frames that follow it are cut.
type bigWriteFS struct {
	eventbus.FS
	armed atomic.Bool
}

func (f *bigWriteFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &bigWriteFile{File: file, fs: f}, nil
}

type bigWriteFile struct {
	eventbus.File
	fs *bigWriteFS
}

func (f *bigWriteFile) Write(b []byte) (int, error) {
	if f.fs.armed.Load() && len(b) > 64<<10 {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(b)
}

// TestFileStorePartialStateFrames cuts the state frames that start a new
// segment under retention, in a store of more streams than one state
// frame holds (16,384): the write fails after the first frame. Reopened,
// the store appends to a stream of the second frame in that segment, and
// retention later makes it the store's start: it does not start with the
// state of every stream, so the store must not start there. It did, and
// then failed to open with a *CorruptionError (an event at revision 1 of
// a stream it had no state of), which repair would have cut with every
// later event.
func TestFileStorePartialStateFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		dir := t.TempDir()
		retain := &eventbus.FileStoreOptions{MaxSegmentSize: 64 << 10, RetainAge: time.Hour}

		// Without retention, no state frames: 16,384 streams of short
		// names, the first state frame's, then 400 of long names.
		s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 64 << 10})
		short := make([]eventbus.StreamAppend, 1<<14)
		for i := range short {
			short[i] = eventbus.StreamAppend{Stream: fmt.Sprintf("s%05d", i), Events: newEvents(1, "t", "")}
		}
		_, err := s.AppendMulti(ctx, short...)
		require.NoError(t, err)
		long := make([]eventbus.StreamAppend, 400)
		for i := range long {
			long[i] = eventbus.StreamAppend{Stream: fmt.Sprintf("%01000d", i), Events: newEvents(1, "t", "")}
		}
		_, err = s.AppendMulti(ctx, long...)
		require.NoError(t, err)
		require.NoError(t, s.Close())

		// A new segment starts; the write of its state frames fails.
		fs := &bigWriteFS{FS: eventbus.OSFS}
		s = openFile(t, dir, eventbus.WithFS(retain, fs))
		fs.armed.Store(true)
		_, err = s.Append(ctx, "x", eventbus.Any, newEvents(1, "t", "")...)
		require.ErrorIs(t, err, syscall.ENOSPC, "Append whose new segment's state frames fail")
		require.NoError(t, s.Close())

		time.Sleep(2 * time.Hour) // on the bubble's clock: older segments expire
		s = openFile(t, dir, retain)
		evs := newEvents(1, "t", "")
		evs[0].Data = make([]byte, 70<<10) // fills the segment
		_, err = s.Append(ctx, long[0].Stream, eventbus.Exact(0), evs...)
		require.NoError(t, err)
		// A new segment, and retention.
		_, err = s.Append(ctx, "x", eventbus.Any, newEvents(1, "t", "")...)
		require.NoError(t, err)
		require.NoError(t, s.Close())

		s, err = eventbus.OpenFileStore(dir, nil)
		if err != nil {
			t.Fatalf("OpenFileStore after retention = %v, want the store", err)
		}
		defer s.Close()
		info, err := s.StreamInfo(ctx, long[0].Stream)
		require.NoError(t, err)
		require.True(t, info.Exists)
		require.EqualValues(t, 1, info.Revision, "revision of the stream appended to")
	})
}

// TestFileStoreOpenSyncsTail kills a process (copies its directory as it
// leaves it) that appended with SyncInterval or SyncNever and had synced
// nothing yet, and opens the store again: the events it then reads and
// builds on must be on stable storage, so that a later power loss keeps
// them, whatever the policy and whether or not anything is appended.
func TestFileStoreOpenSyncsTail(t *testing.T) {
	for name, policy := range map[string]eventbus.SyncPolicy{"SyncAlways": eventbus.SyncAlways, "SyncInterval": eventbus.SyncInterval, "SyncNever": eventbus.SyncNever} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				fs := &syncedFS{FS: eventbus.OSFS, synced: map[string]int64{}, renamed: map[string]string{}}
				dir := t.TempDir()
				first := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever}, fs))
				_, err := first.Append(ctx, "s", eventbus.NoStream, newEvents(2, "t", "")...)
				require.NoError(t, err)

				killed := fs.killCopy(t, dir)
				s := openFile(t, killed, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: policy, SyncInterval: time.Second}, fs))
				require.Len(t, readAll(t, s), 2, "events after the process died")
				time.Sleep(3 * time.Second) // a few intervals, on the bubble's clock
				crashed := openFile(t, fs.crashCopy(t, killed), nil)
				require.Len(t, readAll(t, crashed), 2, "events read, then a power loss")
			})
		})
	}
}

// readGatedFS holds the first ReadAt of a segment, once armed, until gate
// is closed.
type readGatedFS struct {
	eventbus.FS
	gate  chan struct{}
	armed atomic.Bool
	once  sync.Once
}

func (f *readGatedFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &readGatedFile{File: file, fs: f}, nil
}

type readGatedFile struct {
	eventbus.File
	fs *readGatedFS
}

func (f *readGatedFile) ReadAt(b []byte, off int64) (int, error) {
	if f.fs.armed.Load() {
		f.fs.once.Do(func() { <-f.fs.gate })
	}
	return f.File.ReadAt(b, off)
}

// TestFileStoreVerifyClosed calls Verify while Close closes the files it
// reads, and after Close: it returns ErrClosed, as reads do, not the
// error of reading a closed file.
func TestFileStoreVerifyClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fs := &readGatedFS{FS: eventbus.OSFS, gate: make(chan struct{})}
		s, err := eventbus.OpenFileStore(t.TempDir(), eventbus.WithFS(nil, fs))
		require.NoError(t, err)
		_, err = s.Append(ctx, "s", eventbus.Any, newEvents(3, "t", "")...)
		require.NoError(t, err)
		fs.armed.Store(true)
		verified := make(chan error, 1)
		go func() { verified <- s.Verify(ctx) }()
		synctest.Wait() // Verify waits in its first read
		require.NoError(t, s.Close())
		close(fs.gate)
		require.ErrorIs(t, <-verified, eventbus.ErrClosed, "Verify while the store closes")
		require.ErrorIs(t, s.Verify(ctx), eventbus.ErrClosed, "Verify after Close")
	})
}

// TestFileStoreLengthDamage damages the length field of a record so that
// it reaches past the end of the file, as it would if a crash had cut the
// record short: a complete record was damaged, and opening must report it,
// not cut it and every later record away. One bit flipped in any record's
// length is told by clearing each bit in turn (see lengthFlipped); damage
// to more bits of a record but the last, by the complete record after it
// (see recordAfter).
func TestFileStoreLengthDamage(t *testing.T) {
	seg, whole, frames := threeRecords(t)
	type damage struct {
		name   string
		length func(old uint32) uint32
	}
	var damages []damage
	for _, bit := range []int{14, 20, 25} { // 16 KiB, 1 MiB, 32 MiB more
		damages = append(damages, damage{fmt.Sprintf("bit %d flipped", bit), func(old uint32) uint32 { return old ^ 1<<bit }})
	}
	several := []damage{
		{"two bits set", func(old uint32) uint32 { return old | 1<<14 | 1<<20 }},
		{"high byte set", func(old uint32) uint32 { return old | 0x03<<24 }},
		{"overwritten", func(uint32) uint32 { return 0x00abcdef }},
		{"the file's length", func(uint32) uint32 { return uint32(len(whole)) }},
	}
	for i, frame := range frames {
		ds := damages
		if i < len(frames)-1 {
			ds = append(ds, several...)
		}
		for _, d := range ds {
			b := slices.Clone(whole)
			length := d.length(binary.LittleEndian.Uint32(b[frame:]))
			require.Greater(t, int64(length), int64(len(b))-frame, "record %d, %s: the length must reach past the end", i, d.name)
			binary.LittleEndian.PutUint32(b[frame:], length)
			dir := t.TempDir()
			path := filepath.Join(dir, filepath.Base(seg))
			require.NoError(t, os.WriteFile(path, b, 0o644))
			for _, readOnly := range []bool{true, false} {
				s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
				if err == nil {
					n := len(readAll(t, s))
					s.Close()
					t.Fatalf("record %d, %s in its length: OpenFileStore(ReadOnly %v) read %d events, want a *CorruptionError", i, d.name, readOnly, n)
				}
				var ce *eventbus.CorruptionError
				if !errors.As(err, &ce) || ce.Path != path || ce.Offset != frame {
					t.Fatalf("record %d, %s in its length: OpenFileStore(ReadOnly %v) = %v, want a *CorruptionError for %s at %d", i, d.name, readOnly, err, path, frame)
				}
			}
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, b, after, "record %d, %s in its length: the damaged segment must be left as it was", i, d.name)
		}
	}
}

// TestFileStoreTornFalseStarts cuts short the last record, as a crash in
// the middle of its append does, when its data is crafted to look like
// frame headers, every 16 bytes, of frames of half a megabyte: the check
// for a complete record after it (see TestFileStoreLengthDamage) gives up
// once it has checksummed a budget of bytes, and must then take the record
// for the crash's, not for damage, which only a repair would let the
// store open past.
func TestFileStoreTornFalseStarts(t *testing.T) {
	block := make([]byte, 16)
	binary.LittleEndian.PutUint32(block, 500_000)
	copy(block[4:], "\xaa\xaa\xaa\xaa\x01xxxxxxx")
	data := bytes.Repeat(block, 1_000_000/16)
	whole, last := afterPad(t, 1000, data)
	openTorn(t, "seg-0000000000000001.log", whole[:len(whole)-100], -1, 1, last)
}

// threeRecords makes a store of three records of two events each, the
// second of 3,000 bytes, and returns its segment's path, its bytes and the
// records' offsets.
func threeRecords(t *testing.T) (seg string, whole []byte, frames []int64) {
	t.Helper()
	src := t.TempDir()
	s := openFile(t, src, nil)
	seg = segments(t, src)[0]
	for i := range 3 {
		fi, err := os.Stat(seg)
		require.NoError(t, err)
		frames = append(frames, fi.Size())
		evs := newEvents(2, "t", strconv.Itoa(i))
		evs[1].Data = []byte(strings.Repeat("x", 3000))
		_, err = s.Append(t.Context(), "s", eventbus.Any, evs...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	whole, err := os.ReadFile(seg)
	require.NoError(t, err)
	return seg, whole, frames
}

// afterPad makes a store of a record of an event of pad zero bytes, then
// one of an event of data, and returns its segment's bytes and the last
// record's offset.
func afterPad(t *testing.T, pad int, data []byte) ([]byte, int64) {
	t.Helper()
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	evs := newEvents(1, "t", "")
	evs[0].Data = make([]byte, pad)
	_, err := s.Append(t.Context(), "s", eventbus.Any, evs...)
	require.NoError(t, err)
	seg := segments(t, dir)[0]
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	evs = newEvents(1, "t", "")
	evs[0].Data = data
	_, err = s.Append(t.Context(), "s", eventbus.Any, evs...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	return b, fi.Size()
}

// openTorn writes b as the segment name of a store of its own and opens
// it, read-only and for writing. With corrupt at 0 or more, each open must
// fail with a *CorruptionError at that offset; else each must cut the
// torn last record and read want events, which Verify passes, and the
// open for writing must leave the segment size bytes long.
func openTorn(t *testing.T, name string, b []byte, corrupt int64, want int, size int64) {
	t.Helper()
	for _, readOnly := range []bool{true, false} {
		dir := t.TempDir()
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, b, 0o644))
		s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
		if corrupt >= 0 {
			var ce *eventbus.CorruptionError
			if !errors.As(err, &ce) || ce.Path != path || ce.Offset != corrupt {
				if err == nil {
					s.Close()
				}
				t.Fatalf("OpenFileStore(ReadOnly %v) = %v, want a *CorruptionError for %s at %d", readOnly, err, path, corrupt)
			}
			continue
		}
		if err != nil {
			t.Fatalf("OpenFileStore(ReadOnly %v) = %v, want the torn record cut", readOnly, err)
		}
		if got := readAll(t, s); len(got) != want {
			t.Errorf("OpenFileStore(ReadOnly %v) read %d events, want the %d before the torn record", readOnly, len(got), want)
		}
		require.NoError(t, s.Verify(t.Context()))
		require.NoError(t, s.Close())
		if readOnly {
			continue
		}
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, size, fi.Size(), "the segment's size after the cut")
	}
}

// TestFileStoreTornSectors leaves sectors of the last record unwritten, as
// a power loss does once the file has grown but before every sector of
// the write reached the disk: they read as zeros, its length is intact and
// its checksum fails. That record was never acknowledged, so opening cuts
// it as it cuts a record cut short; a bit flipped in it instead, or zeros
// in a record before it, stay a *CorruptionError.
func TestFileStoreTornSectors(t *testing.T) {
	seg, whole, frames := threeRecords(t)
	last, end := frames[2], int64(len(whole))
	sector := (last+8+511)/512*512 + 512 // a whole sector inside the last record's payload

	// zero returns the segment with b[from:to] zeroed and, if grow, 1 KiB of
	// zeros after it, as a file extended by the crash.
	zero := func(b []byte, from, to int64, grow bool) []byte {
		b = slices.Clone(b)
		clear(b[from:to])
		if grow {
			b = append(b, make([]byte, 1<<10)...)
		}
		return b
	}
	flipped := slices.Clone(whole)
	flipped[last+100] ^= 0x10
	for _, tt := range []struct {
		name    string
		b       []byte
		corrupt int64 // offset of the *CorruptionError, or -1 for a cut
	}{
		{"one sector", zero(whole, sector, sector+512, false), -1},
		{"one sector, grown", zero(whole, sector, sector+512, true), -1},
		{"from a sector to the end", zero(whole, sector, end, false), -1},
		{"from a sector to the end, grown", zero(whole, sector, end, true), -1},
		{"a bit flipped", flipped, last},
		{"a sector of an older record", zero(whole, (frames[1]+8+511)/512*512, (frames[1]+8+511)/512*512+512, false), frames[1]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			openTorn(t, filepath.Base(seg), tt.b, tt.corrupt, 4, last)
		})
	}
}

// TestFileStoreTornFirstSector leaves unwritten the first sector of the
// last record, its length and checksum with it, while later sectors of
// the write reach the disk, as a power loss may: that record was never
// acknowledged, so opening cuts it, as it cuts a record whose later sector
// is unwritten (TestFileStoreTornSectors); zeros at the start of a record
// that a complete record follows stay a *CorruptionError.
func TestFileStoreTornFirstSector(t *testing.T) {
	seg, whole, frames := threeRecords(t)
	// unwritten returns the segment with the sectors from the one that
	// holds record i's start to the one before the n-th after it zeroed
	// and, if grow, 1 KiB of zeros after it, as a file extended by the
	// crash.
	unwritten := func(i int, n int64, grow bool) []byte {
		b := slices.Clone(whole)
		from := frames[i]
		clear(b[from : (from/512+n)*512])
		if grow {
			b = append(b, make([]byte, 1<<10)...)
		}
		return b
	}
	for _, tt := range []struct {
		name    string
		b       []byte
		corrupt int64 // offset of the *CorruptionError, or -1 for a cut
	}{
		{"first sector", unwritten(2, 1, false), -1},
		{"first sector, grown", unwritten(2, 1, true), -1},
		{"first two sectors", unwritten(2, 2, false), -1},
		{"first sector of an older record", unwritten(1, 1, false), frames[1]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			openTorn(t, filepath.Base(seg), tt.b, tt.corrupt, 4, frames[2])
		})
	}
}

// TestFileStoreTornFirstSectorStraddles leaves unwritten the sector that
// holds the start of the last record when that record starts in its last
// bytes, so that its length straddles two sectors: the zeros end within
// the length, whose bytes from the next sector, written, give it a wrong
// value but not zero. The record was never acknowledged, so opening cuts
// it, as TestFileStoreTornFirstSector does for a length that is all zeros.
// A last record whose length is whole, though its byte in that sector is
// zero, is not torn there: a bit flipped in it stays a *CorruptionError.
func TestFileStoreTornFirstSectorStraddles(t *testing.T) {
	// build makes a store of a record of pad bytes of data then one of
	// size bytes, and returns its segment's bytes and the last record's
	// offset.
	build := func(pad, size int) ([]byte, int64) {
		return afterPad(t, pad, bytes.Repeat([]byte("x"), size))
	}
	for _, tt := range []struct {
		at   int64 // the last record's offset in its sector
		size int   // its data's size
		flip bool  // flip a bit of its data instead
	}{
		{at: 511, size: 3001},     // one byte of the length unwritten
		{at: 510, size: 70 << 10}, // two bytes
		{at: 509, size: 3001},     // three: the length reads as zero
		// The record's length is 3,072 bytes, 0x0c00: its first byte,
		// alone in the sector, is zero.
		{at: 511, size: 3000, flip: true},
	} {
		t.Run(fmt.Sprintf("at %d of its sector, %d bytes, flip %v", tt.at, tt.size, tt.flip), func(t *testing.T) {
			_, off := build(1000, tt.size)
			whole, last := build(1000+int((tt.at-off%512+512)%512), tt.size)
			require.Equal(t, tt.at, last%512, "the last record's offset in its sector")
			b := slices.Clone(whole)
			if tt.flip {
				require.Zero(t, b[last], "the length's byte in the sector")
				b[last+100] ^= 0x10
			} else {
				clear(b[last : last/512*512+512])
				require.NotEqual(t, whole, b, "the bytes left unwritten")
				require.Equal(t, tt.at == 509, binary.LittleEndian.Uint32(b[last:]) == 0, "the length reads as zero")
			}
			corrupt := int64(-1)
			if tt.flip {
				corrupt = last
			}
			openTorn(t, "seg-0000000000000001.log", b, corrupt, 1, last)
		})
	}
}

// TestFileStoreTornLengthNextSector leaves unwritten the sector after the
// one that holds the start of the last record, which starts in that
// sector's last bytes: its length straddles the two, so its first bytes
// are written and the rest reads as zeros, a length too short, while later
// sectors of the write reach the disk. The record was never acknowledged,
// so opening cuts it, as it does when the first sector is the one
// unwritten (TestFileStoreTornFirstSectorStraddles). Found by
// TestFileStoreCrashModel (seed 1, always).
func TestFileStoreTornLengthNextSector(t *testing.T) {
	for _, tt := range []struct {
		at   int64 // the last record's offset in its sector
		size int   // its data's size
	}{
		{at: 511, size: 3001},     // one byte of the length written
		{at: 510, size: 70 << 10}, // two
	} {
		t.Run(fmt.Sprintf("at %d of its sector, %d bytes", tt.at, tt.size), func(t *testing.T) {
			build := func(pad int) ([]byte, int64) { return afterPad(t, pad, bytes.Repeat([]byte("x"), tt.size)) }
			_, off := build(1000)
			whole, last := build(1000 + int((tt.at-off%512+512)%512))
			require.Equal(t, tt.at, last%512, "the last record's offset in its sector")
			b := slices.Clone(whole)
			next := last/512*512 + 512
			clear(b[next : next+512])
			require.NotZero(t, binary.LittleEndian.Uint32(b[last:]), "the length reads as zero, not short")
			require.Less(t, binary.LittleEndian.Uint32(b[last:]), binary.LittleEndian.Uint32(whole[last:]), "the length reads short")
			openTorn(t, "seg-0000000000000001.log", b, -1, 1, last)
		})
	}
}

// TestFileStoreTornLastSector puts the last 1 to 3 bytes of the last record in a
// sector of their own. Left unwritten by a crash, those bytes read as zeros
// and the record, never acknowledged, is cut on open. But the format ends
// many records with zeros itself (an event without data, encoding or
// metadata ends in three): a bit flipped elsewhere in such a record, which
// was acknowledged, must stay a *CorruptionError, not pass for torn
// because its last sector holds nothing but zeros.
func TestFileStoreTornLastSector(t *testing.T) {
	for n := 1; n <= 3; n++ {
		for _, tt := range []struct {
			name string
			data []byte
			flip bool // flip a bit instead of zeroing the last n bytes
		}{
			{"data's tail unwritten", []byte("data"), false},
			{"no data, a bit flipped", nil, true},
			{"data, a bit flipped", []byte("data\x00\x00\x00"), true},
		} {
			t.Run(fmt.Sprintf("%d bytes in the sector, %s", n, tt.name), func(t *testing.T) {
				b, _ := afterPad(t, 1000, tt.data)
				whole, last := afterPad(t, 1000+(n-len(b)%sectorSize+sectorSize)%sectorSize, tt.data)
				require.Equal(t, n, len(whole)%sectorSize, "the last record's bytes in its last sector")
				b = slices.Clone(whole)
				corrupt := int64(-1)
				if tt.flip {
					require.True(t, allZeros(b[len(b)-n:]), "the record's last bytes are zeros")
					b[last+20] ^= 0x10
					corrupt = last
				} else {
					require.False(t, allZeros(b[len(b)-n:]), "the record's last bytes are zeros")
					clear(b[len(b)-n:])
				}
				openTorn(t, "seg-0000000000000001.log", b, corrupt, 1, last)
			})
		}
	}
}

// sectorSize is the unit of a disk's writes, as the file store takes it.
const sectorSize = 512

func allZeros(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// TestFileStoreTornChecksumSector leaves unwritten the sector that holds
// the checksum and all of a small last record, whose length ends the
// sector before: the record is cut on open, as in TestFileStoreTornSectors.
func TestFileStoreTornChecksumSector(t *testing.T) {
	// build makes a store of a record of pad bytes of data then a small
	// one, and returns its segment's bytes and the small record's offset.
	small := newEvents(1, "t", "small")[0].Data
	build := func(pad int) ([]byte, int64) { return afterPad(t, pad, small) }
	_, off := build(1000)
	whole, last := build(1000 + int((508-off%512+512)%512))
	require.Equal(t, int64(508), last%512, "the small record's offset in its sector")
	require.Less(t, int64(len(whole)), last+4+512, "the small record ends in the next sector")
	b := slices.Clone(whole)
	clear(b[last+4:])

	openTorn(t, "seg-0000000000000001.log", b, -1, 1, last)
}

// opsFS records, in order, what a repair does to the files of dir, as
// "op path", paths relative to dir with every repair directory named
// repair-*, and fails the operation numbered fail (from 1), if set, with
// EIO: a failed write writes half its bytes first.
type opsFS struct {
	eventbus.FS
	dir  string
	fail int
	hook func() // if set, called at each operation, before it is done
	mu   sync.Mutex
	ops  []string
}

func (f *opsFS) do(op string, paths ...string) error {
	if f.hook != nil {
		f.hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range paths {
		rel, err := filepath.Rel(f.dir, p)
		if err != nil {
			rel = p
		}
		parts := strings.Split(rel, string(filepath.Separator))
		for i, part := range parts {
			if strings.HasPrefix(part, "repair-") {
				parts[i] = "repair-*"
			}
		}
		op += " " + filepath.Join(parts...)
	}
	f.ops = append(f.ops, op)
	if len(f.ops) == f.fail {
		return &os.PathError{Op: op, Path: paths[0], Err: syscall.EIO}
	}
	return nil
}

func (f *opsFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	if err := f.do("open", name); err != nil {
		return nil, err
	}
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &opsFile{File: file, fs: f, name: name}, nil
}

func (f *opsFS) Rename(from, to string) error {
	if err := f.do("rename", from, to); err != nil {
		return err
	}
	return f.FS.Rename(from, to)
}

func (f *opsFS) Remove(name string) error {
	if err := f.do("remove", name); err != nil {
		return err
	}
	return f.FS.Remove(name)
}

func (f *opsFS) Mkdir(name string, perm os.FileMode) error {
	if err := f.do("mkdir", name); err != nil {
		return err
	}
	return f.FS.Mkdir(name, perm)
}

type opsFile struct {
	eventbus.File
	fs   *opsFS
	name string
}

func (f *opsFile) Write(b []byte) (int, error) {
	if err := f.fs.do("write", f.name); err != nil {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, err
	}
	return f.File.Write(b)
}

func (f *opsFile) Sync() error {
	if err := f.fs.do("sync", f.name); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *opsFile) Truncate(size int64) error {
	if err := f.fs.do("truncate", f.name); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

// damagedStore makes in dir a store of three segments whose first one has
// a bit flipped in its second record, and if badStart a START file that
// names no segment, and returns the files' contents by name (LAST among
// them) and the offset of that record.
func damagedStore(t *testing.T, dir string, badStart bool) (map[string][]byte, int64) {
	t.Helper()
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10})
	var frames []int64 // offsets of the records of the first segment
	for i := 0; len(segments(t, dir)) < 3; i++ {
		if len(segments(t, dir)) == 1 {
			fi, err := os.Stat(segments(t, dir)[0])
			require.NoError(t, err)
			frames = append(frames, fi.Size())
		}
		_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 400)+strconv.Itoa(i))...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	require.Greater(t, len(frames), 2)
	flip(t, segments(t, dir)[0], frames[1]+20)
	files := map[string][]byte{}
	for _, path := range append(segments(t, dir), filepath.Join(dir, "LAST")) {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		files[filepath.Base(path)] = b
	}
	if badStart {
		files["START"] = []byte("x\n")
		require.NoError(t, os.WriteFile(filepath.Join(dir, "START"), files["START"], 0o644))
	}
	return files, frames[1]
}

// firstSegment returns the name of the first segment of files.
func firstSegment(files map[string][]byte) string {
	return slices.Sorted(maps.Keys(files))[len(files)-3]
}

// checkKept checks that no byte of the files of a store damaged by
// damagedStore is lost: each is whole in dir, or in a repair directory of
// dir, or, the first, cut at off in dir and whole from off in a repair
// directory. No file in a repair directory holds less than it is named
// for. It returns the number of the files in repair directories.
func checkKept(t *testing.T, dir string, files map[string][]byte, off int64) int {
	t.Helper()
	first := firstSegment(files)
	kept := map[string][][]byte{}
	copies, err := filepath.Glob(filepath.Join(dir, "repair-*", "*"))
	require.NoError(t, err)
	for _, path := range copies {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		name := filepath.Base(path)
		kept[name] = append(kept[name], b)
		if strings.HasSuffix(name, ".tmp") {
			continue
		}
		want, ok := files[name]
		if name == first+".from-"+strconv.FormatInt(off, 10) {
			want, ok = files[first][off:], true
		}
		if !ok || string(b) != string(want) {
			t.Errorf("%s holds %d bytes, not the %d it is named for", path, len(b), len(want))
		}
	}
	has := func(name string, want []byte) bool {
		return slices.ContainsFunc(kept[name], func(b []byte) bool { return string(b) == string(want) })
	}
	for name, want := range files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err == nil && string(b) == string(want):
		case err != nil && errors.Is(err, fs.ErrNotExist) && has(name, want):
		case name == "LAST" && has(name, want):
			// Moved aside with the segments it names, the store
			// writes its own.
		case err == nil && name == first && string(b) == string(want[:off]) && has(name+".from-"+strconv.FormatInt(off, 10), want[off:]):
		default:
			t.Errorf("%s (%d bytes, %v) lost bytes of the %d it held", name, len(b), err, len(want))
		}
	}
	return len(copies)
}

// TestRepairFileStoreSyncsCopy checks that RepairFileStore has the copy
// of the bytes it cuts on disk, and found there, before it cuts them: the
// copy synced, then the repair directory that names it, then the store's
// directory that names the repair directory. It synced the copy alone, so
// a power loss just after the cut could lose the only copy of the events
// cut.
func TestRepairFileStoreSyncsCopy(t *testing.T) {
	dir := t.TempDir()
	files, off := damagedStore(t, dir, false)
	first := firstSegment(files)
	fs := &opsFS{FS: eventbus.OSFS, dir: dir}
	_, err := eventbus.RepairFileStoreFS(dir, fs)
	require.NoError(t, err)
	ops := fs.ops
	cut := slices.Index(ops, "truncate "+first)
	if cut < 0 {
		t.Fatalf("RepairFileStore did not truncate %s through the store's file system: %q", first, ops)
	}
	// last returns the index of the last operation before the cut that
	// matches, or -1.
	last := func(match func(op string) bool) int {
		for i := cut - 1; i >= 0; i-- {
			if match(ops[i]) {
				return i
			}
		}
		return -1
	}
	copied := fmt.Sprintf("repair-*/%s.from-%d", first, off)
	written := last(func(op string) bool { return strings.HasPrefix(op, "write repair-*/") })
	named := last(func(op string) bool { return strings.HasSuffix(op, " "+copied) && !strings.HasPrefix(op, "sync ") })
	made := last(func(op string) bool { return op == "mkdir repair-*" })
	steps := []struct {
		what  string
		after int
		sync  string
	}{
		{"the copy's bytes", written, "sync repair-*/"},
		{"the copy's name", named, "sync repair-*"},
		{"the repair directory's name", made, "sync ."},
	}
	for _, step := range steps {
		if step.after < 0 {
			t.Errorf("no operation made %s before the cut: %q", step.what, ops[:cut])
			continue
		}
		if !slices.ContainsFunc(ops[step.after:cut], func(op string) bool {
			return op == step.sync || strings.HasPrefix(step.sync, "sync repair-*/") && strings.HasPrefix(op, step.sync)
		}) {
			t.Errorf("%s (%q) not synced before the cut: %q", step.what, ops[step.after], ops[step.after:cut+1])
		}
	}
	checkKept(t, dir, files, off)
}

// TestRepairFileStoreFaults fails, in turn, each operation on files that
// RepairFileStore does, as a full disk, an I/O error or a crash there
// would: RepairFileStore must report an error that wraps the cause; no
// byte of the store may be lost, nor a partial copy kept under the name
// of a whole one; before it first changes them, the store's files must
// be as they were; and RepairFileStore again must repair the store. It
// does so for a damaged record, and for one with a damaged START file
// too, which RepairFileStore moves aside.
func TestRepairFileStoreFaults(t *testing.T) {
	for _, badStart := range []bool{false, true} {
		t.Run(fmt.Sprintf("bad START %v", badStart), func(t *testing.T) {
			testRepairFaults(t, badStart)
		})
	}
}

// testRepairFaults is TestRepairFileStoreFaults for a store made by
// damagedStore(badStart).
func testRepairFaults(t *testing.T, badStart bool) {
	clean := &opsFS{FS: eventbus.OSFS, dir: t.TempDir()}
	files, _ := damagedStore(t, clean.dir, badStart)
	first := firstSegment(files)
	_, err := eventbus.RepairFileStoreFS(clean.dir, clean)
	require.NoError(t, err)
	cut := slices.Index(clean.ops, "truncate "+first)
	require.Positive(t, cut, "operations: %q", clean.ops)
	touched := cut // the first operation that changes the store's files
	if badStart {
		touched = slices.Index(clean.ops, "rename START repair-*/START")
		require.Positive(t, touched, "operations: %q", clean.ops)
	}
	for i, op := range clean.ops {
		t.Run(fmt.Sprintf("%d %s", i+1, op), func(t *testing.T) {
			dir := t.TempDir()
			files, off := damagedStore(t, dir, badStart)
			fs := &opsFS{FS: eventbus.OSFS, dir: dir, fail: i + 1}
			kept, err := eventbus.RepairFileStoreFS(dir, fs)
			if !errors.Is(err, syscall.EIO) || !strings.HasPrefix(err.Error(), "eventbus: ") {
				t.Fatalf("RepairFileStore failing %q = %q, %v; want an error wrapping EIO", op, kept, err)
			}
			require.Equal(t, op, fs.ops[i], "the operation failed")
			if made := slices.Index(fs.ops, "mkdir repair-*"); made >= 0 && made < i {
				require.DirExists(t, kept, "the repair directory returned with the error")
			}
			checkKept(t, dir, files, off)
			if i < touched {
				for name, want := range files {
					b, err := os.ReadFile(filepath.Join(dir, name))
					if err != nil || string(b) != string(want) {
						t.Errorf("after RepairFileStore failed before changing the store, %s holds %d bytes (%v), want the %d it held", name, len(b), err, len(want))
					}
				}
			}

			_, err = eventbus.RepairFileStore(dir)
			require.NoError(t, err, "RepairFileStore again")
			require.Positive(t, checkKept(t, dir, files, off), "files kept")
			require.Len(t, readAll(t, openFile(t, dir, nil)), 1, "events before the damage")
		})
	}
}

// TestRepairFileStoreHoldsLock opens the store, as another process would,
// at each operation on files that RepairFileStore does: every open must
// fail with ErrLocked. RepairFileStore held the lock only while it opened
// the store, so that another process could open it, and append to it,
// while the repair cut it, moved its segments and synced them.
func TestRepairFileStoreHoldsLock(t *testing.T) {
	dir := t.TempDir()
	files, off := damagedStore(t, dir, false)
	fs := &opsFS{FS: eventbus.OSFS, dir: dir}
	var opened []string // the operations at which another open succeeded
	fs.hook = func() {
		s, err := eventbus.OpenFileStore(dir, nil)
		if err == nil {
			s.Close()
			fs.mu.Lock()
			opened = append(opened, fmt.Sprint(len(fs.ops)))
			fs.mu.Unlock()
			return
		}
		if !errors.Is(err, eventbus.ErrLocked) {
			t.Errorf("OpenFileStore during a repair = %v, want ErrLocked", err)
		}
	}
	_, err := eventbus.RepairFileStoreFS(dir, fs)
	require.NoError(t, err)
	if len(opened) > 0 {
		t.Errorf("another OpenFileStore succeeded during a repair, after operations %v of %q", opened, fs.ops)
	}
	fs.hook = nil
	checkKept(t, dir, files, off)
	s := openFile(t, dir, nil)
	require.Len(t, readAll(t, s), 1, "events before the damage")
	_, err = eventbus.RepairFileStore(dir)
	require.ErrorIs(t, err, eventbus.ErrLocked, "RepairFileStore of an open store")
}

// TestFileStoreStraySegmentNames checks that files whose names only look
// like a segment's (hex digits in upper case, which the store never
// writes) are ignored, as other foreign files are: opening took one for
// the segment of the same number in lower case and failed, as if a file
// were missing, and RepairFileStore could not mend it.
func TestFileStoreStraySegmentNames(t *testing.T) {
	for _, name := range []string{"seg-000000000000000A.log", "seg-0000000000000001.LOG"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openFile(t, dir, nil)
			_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(2, "t", "e")...)
			require.NoError(t, err)
			require.NoError(t, s.Close())
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("a copy, say"), 0o644))
			for _, ro := range []bool{false, true} {
				s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: ro})
				if err != nil {
					t.Fatalf("OpenFileStore(ReadOnly: %v) with a stray %s = %v, want nil", ro, name, err)
				}
				if got := len(readAll(t, s)); got != 2 {
					t.Errorf("ReadAll(ReadOnly: %v) = %d events, want 2", ro, got)
				}
				require.NoError(t, s.Close())
			}
		})
	}
}

// TestFileStoreFirstSegmentMissing checks that a store whose oldest
// segments are gone (removed by hand, lost with a disk) fails to open with
// a *CorruptionError for the first segment left that names the one
// missing, as a segment missing in the middle does: it opened without a
// word, with the events and stream states of the missing segments gone
// (appends started their streams again at revision 0), or failed the
// revision check of a later event with a reason that did not say why
// ("event at position 3, revision 3 of "s", want 3, 0"), which was all it
// said for a stream written in both segments. Retention, which deletes
// segments too, always leaves a first segment that starts with the state
// of every stream.
func TestFileStoreFirstSegmentMissing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, s *eventbus.FileStore, i int) error
	}{
		{"events", func(ctx context.Context, s *eventbus.FileStore, i int) error {
			// A stream of its own in each segment.
			_, err := s.Append(ctx, fmt.Sprint("s", i), eventbus.NoStream, newEvents(3, "t", "e")...)
			return err
		}},
		{"one stream", func(ctx context.Context, s *eventbus.FileStore, _ int) error {
			_, err := s.Append(ctx, "s", eventbus.Any, newEvents(3, "t", "e")...)
			return err
		}},
		{"metadata", func(ctx context.Context, s *eventbus.FileStore, i int) error {
			// No event in the first segment: the next starts at 0.
			return s.SetStreamMetadata(ctx, fmt.Sprint("s", i), eventbus.StreamMetadata{MaxCount: 1})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200})
			for i := 0; s.Stats().Segments < 3; i++ {
				require.NoError(t, tc.write(t.Context(), s, i))
			}
			require.NoError(t, s.Close())
			segs := segments(t, dir)
			require.NoError(t, os.Remove(segs[0]))
			for _, ro := range []bool{false, true} {
				s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: ro})
				var ce *eventbus.CorruptionError
				if !errors.As(err, &ce) || ce.Path != segs[1] || ce.Offset != 0 || !strings.Contains(ce.Reason, filepath.Base(segs[0])+" is missing") {
					if err == nil {
						t.Logf("it opened with %d events, %d streams", len(readAll(t, s)), s.Stats().Streams)
						s.Close()
					}
					t.Fatalf("OpenFileStore(ReadOnly: %v) without %s = %v, want a *CorruptionError for %s at 0 saying that it is missing", ro, filepath.Base(segs[0]), err, segs[1])
				}
			}
		})
	}
}

// startingStore returns the directory of a store of four segments, and
// its events: stream "a" is written in each segment, "gone" in the first
// alone, and "m" in the first and, its metadata set there first, in the
// third.
func startingStore(t *testing.T) (string, []eventbus.RecordedEvent) {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 300})
	for _, stream := range []string{"gone", "m"} {
		_, err := s.Append(ctx, stream, eventbus.NoStream, newEvents(1, "t", stream)...)
		require.NoError(t, err)
	}
	for set := false; s.Stats().Segments < 4; {
		if s.Stats().Segments == 3 && !set {
			require.NoError(t, s.SetStreamMetadata(ctx, "m", eventbus.StreamMetadata{MaxCount: 100}))
			_, err := s.Append(ctx, "m", eventbus.Exact(0), newEvents(1, "t", "m")...)
			require.NoError(t, err)
			set = true
		}
		_, err := s.Append(ctx, "a", eventbus.Any, newEvents(1, "t", "a")...)
		require.NoError(t, err)
	}
	events := readAll(t, s)
	require.NoError(t, s.Close())
	return dir, events
}

// firstPosition returns the position that the segment file path starts
// at, as its header says.
func firstPosition(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), 32, "%s holds no header", path)
	return binary.LittleEndian.Uint64(b[24:])
}

// TestRepairFileStoreFirstSegmentMissing repairs a store whose first
// segments are gone (deleted by hand, with no START of retention saying
// that the store starts later), emptied or cut to their header: the
// store must keep every event of the segments after them, at their
// positions, start there as retention would (naming the segment in
// START), and go on with the revisions of its streams and the metadata
// set since; the repair directory must hold a copy of each file it
// changed or moved. RepairFileStore moved every segment into its repair
// directory, cutting the store from its first segment on, and left it
// empty: a repair of one missing file lost every event. It still did so
// for a first segment cut short in its first record, as a copy cut short
// leaves it, though one cut to its header lost only its own events.
func TestRepairFileStoreFirstSegmentMissing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(segs []string) error
		lost     int    // segments whose events are lost
		maxCount uint64 // of stream "m" once repaired
	}{
		{"first missing", func(segs []string) error { return os.Remove(segs[0]) }, 1, 100},
		{"first two missing", func(segs []string) error { return errors.Join(os.Remove(segs[0]), os.Remove(segs[1])) }, 2, 100},
		{"all but the last missing", func(segs []string) error {
			return errors.Join(os.Remove(segs[0]), os.Remove(segs[1]), os.Remove(segs[2]))
		}, 3, 0},
		{"first emptied", func(segs []string) error { return os.WriteFile(segs[0], nil, 0o644) }, 1, 100},
		{"first cut to its header", func(segs []string) error { return os.Truncate(segs[0], 32) }, 1, 100},
		{"first cut in its first record", func(segs []string) error { return os.Truncate(segs[0], 40) }, 1, 100},
		{"first missing, second cut in its first record", func(segs []string) error {
			return errors.Join(os.Remove(segs[0]), os.Truncate(segs[1], 40))
		}, 2, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir, events := startingStore(t)
			segs := segments(t, dir)
			files := map[string][]byte{}
			for _, path := range segs {
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				files[filepath.Base(path)] = b
			}
			first := firstPosition(t, segs[tc.lost])
			require.NoError(t, tc.damage(segs))

			kept, err := eventbus.RepairFileStore(dir)
			require.NoError(t, err, "RepairFileStore")
			require.NotEmpty(t, kept, "the repair directory")
			s := openFile(t, dir, nil)
			require.NoError(t, s.Verify(ctx), "Verify once repaired")
			var want []eventbus.RecordedEvent
			for _, e := range events {
				if e.Position >= first {
					want = append(want, e)
				}
			}
			if diff := cmp.Diff(want, readAll(t, s)); diff != "" {
				t.Fatalf("events once repaired (-want +got):\n%s", diff)
			}
			require.Equal(t, first, s.Stats().FirstPosition, "FirstPosition once repaired")
			start, err := os.ReadFile(filepath.Join(dir, "START"))
			require.NoError(t, err, "START once repaired")
			require.True(t, strings.HasPrefix(string(start), fmt.Sprint(tc.lost+1, " ")), "START names %q, want segment %d", start, tc.lost+1)

			info, err := s.StreamInfo(ctx, "m")
			require.NoError(t, err)
			require.Equal(t, tc.maxCount, info.Metadata.MaxCount, "the metadata of stream m, set in the third segment")
			a := want[len(want)-1].Revision
			res, err := s.Append(ctx, "a", eventbus.Exact(a), newEvents(1, "t", "next")...)
			require.NoError(t, err, "Append at the revision that stream a went on from")
			require.Equal(t, eventbus.AppendResult{Revision: a + 1, Position: want[len(want)-1].Position + 1}, res)

			// A copy of each file changed or moved, as it was.
			copies, err := filepath.Glob(filepath.Join(kept, "*"))
			require.NoError(t, err)
			for _, path := range copies {
				name := filepath.Base(path)
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				if !bytes.Equal(b, files[name]) && !bytes.HasPrefix(files[name], b) {
					t.Errorf("the repair directory holds %s of %d bytes, not as it was", name, len(b))
				}
			}
			require.FileExists(t, filepath.Join(kept, filepath.Base(segs[tc.lost])), "a copy of the segment the store starts at, as it was")
		})
	}
}

// TestRepairFileStoreFirstEventDamaged damages the first event of a store
// whose segments start with the state of the streams, as under retention:
// only that state comes before it, so the repair must cost the events of
// that segment alone, starting the store at the next one, as it does for
// a first segment whose header is damaged. It cut the segment after its
// state and moved every later one into the repair directory, leaving the
// store without an event.
func TestRepairFileStoreFirstEventDamaged(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 300, RetainSize: 1 << 40})
	for s.Stats().Segments < 4 {
		_, err := s.Append(ctx, "a", eventbus.Any, newEvents(1, "t", "a")...)
		require.NoError(t, err)
	}
	events := readAll(t, s)
	require.NoError(t, s.Close())
	segs := segments(t, dir)
	// Without the first segment, the store starts at the second, whose
	// state frame comes first: a bit flipped in the record after it.
	require.NoError(t, os.Remove(segs[0]))
	b, err := os.ReadFile(segs[1])
	require.NoError(t, err)
	b[32+8+binary.LittleEndian.Uint32(b[32:])+12] ^= 1
	require.NoError(t, os.WriteFile(segs[1], b, 0o644))
	first := firstPosition(t, segs[2])

	_, err = eventbus.RepairFileStore(dir)
	require.NoError(t, err, "RepairFileStore")
	if diff := cmp.Diff(events[first:], readAll(t, openFile(t, dir, nil))); diff != "" {
		t.Fatalf("events once repaired, from position %d (-want +got):\n%s", first, diff)
	}
}

// TestRepairFileStoreStartFaults fails, in turn, each operation on files
// that RepairFileStore does to make a store whose first segment is
// missing start at the next one: it must report an error wrapping the
// cause, lose no byte of the segment it writes again (whole in the store
// or in a repair directory), and RepairFileStore again must leave the
// store with the events of the segments left.
func TestRepairFileStoreStartFaults(t *testing.T) {
	clean := &opsFS{FS: eventbus.OSFS}
	clean.dir, _ = startingStore(t)
	require.NoError(t, os.Remove(segments(t, clean.dir)[0]))
	_, err := eventbus.RepairFileStoreFS(clean.dir, clean)
	require.NoError(t, err)
	for i, op := range clean.ops {
		t.Run(fmt.Sprintf("%d %s", i+1, op), func(t *testing.T) {
			dir, events := startingStore(t)
			segs := segments(t, dir)
			second, err := os.ReadFile(segs[1])
			require.NoError(t, err)
			require.NoError(t, os.Remove(segs[0]))
			fs := &opsFS{FS: eventbus.OSFS, dir: dir, fail: i + 1}
			kept, err := eventbus.RepairFileStoreFS(dir, fs)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("RepairFileStore failing %q = %q, %v; want an error wrapping EIO", op, kept, err)
			}
			copies, err := filepath.Glob(filepath.Join(dir, "repair-*", filepath.Base(segs[1])))
			require.NoError(t, err)
			whole := slices.ContainsFunc(copies, func(path string) bool {
				b, err := os.ReadFile(path)
				return err == nil && bytes.Equal(b, second)
			})
			if b, err := os.ReadFile(segs[1]); !whole && (err != nil || !bytes.Equal(b, second)) {
				t.Fatalf("after RepairFileStore failed at %q, %s is neither as it was nor kept whole", op, filepath.Base(segs[1]))
			}

			_, err = eventbus.RepairFileStore(dir)
			require.NoError(t, err, "RepairFileStore again")
			first := firstPosition(t, segs[1])
			got := readAll(t, openFile(t, dir, nil))
			require.NotEmpty(t, got)
			require.Equal(t, first, got[0].Position, "the first event kept")
			require.Len(t, got, len(events)-int(first), "events kept")
		})
	}
}

// TestFileStoreMiddleSegmentMissing removes a segment between others, one
// that holds stream changes but no event, so that the next segment starts
// at the position where the one before it ends: opening must still fail
// with a *CorruptionError saying that a segment is missing, as
// CorruptionError's doc says, not open without the changes it held (here
// the metadata of its streams). No test proved it: an open that did not
// look for a gap in the segments' numbers passed every test, and opened
// such a store without a word.
func TestFileStoreMiddleSegmentMissing(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200})
	for i := 0; s.Stats().Segments < 4; i++ {
		require.NoError(t, s.SetStreamMetadata(t.Context(), fmt.Sprint("s", i), eventbus.StreamMetadata{MaxCount: 1}))
	}
	require.NoError(t, s.Close())
	segs := segments(t, dir)
	require.NoError(t, os.Remove(segs[1]))
	for _, ro := range []bool{false, true} {
		s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: ro})
		var ce *eventbus.CorruptionError
		if !errors.As(err, &ce) || ce.Path != segs[2] || ce.Offset != 0 || !strings.Contains(ce.Reason, filepath.Base(segs[1])+" is missing") {
			if err == nil {
				t.Logf("it opened with %d streams", s.Stats().Streams)
				s.Close()
			}
			t.Fatalf("OpenFileStore(ReadOnly: %v) without %s = %v, want a *CorruptionError for %s at 0 saying that it is missing", ro, filepath.Base(segs[1]), err, segs[2])
		}
	}
}

// TestFileStoreRetentionErrAfterReopen checks that a store reopened while
// it still cannot delete a segment file that retention dropped reports it
// in Stats().RetentionErr and deletes the file at the next segment, as
// RetentionErr's doc says and as the store did before the reopen: opening
// tried once, ignored the failure and forgot the file, so RetentionErr
// was nil while the disk space stayed taken, until another reopen.
func TestFileStoreRetentionErrAfterReopen(t *testing.T) {
	dir := t.TempDir()
	fs := &faultFS{FS: eventbus.OSFS}
	opts := eventbus.WithFS(&eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10, RetainSize: 4 << 10}, fs)
	s := openFile(t, dir, opts)
	first := segments(t, dir)[0]
	fs.failRemove.Store(&first)
	appendEach(t, s, 200)
	require.ErrorIs(t, s.Stats().RetentionErr, syscall.EACCES)
	require.NoError(t, s.Close())
	require.FileExists(t, first)

	s = openFile(t, dir, opts)
	if err := s.Stats().RetentionErr; !errors.Is(err, syscall.EACCES) {
		t.Errorf("Stats().RetentionErr once reopened = %v, want the failed removal of %s", err, first)
	}
	fs.failRemove.Store(nil)
	last := func() string { segs := segments(t, dir); return segs[len(segs)-1] }
	for active := last(); last() == active; {
		appendEach(t, s, 1) // until the next segment, and its retention
	}
	if err := s.Stats().RetentionErr; err != nil {
		t.Errorf("Stats().RetentionErr after the next segment = %v, want nil", err)
	}
	require.NoFileExists(t, first, "the next segment's retention deleted the file left behind")
	require.NoError(t, s.Close())
}

// TestFileStoreKeepsForeignTempFiles checks that opening a store for
// writing deletes only the temporary files that the store itself writes
// (a segment's name or START, with ".tmp"), which a crash leaves: it
// deleted every file whose name starts with "seg-" and ends in ".tmp",
// though the store ignores, and keeps, other files it does not write,
// names in upper case included.
func TestFileStoreKeepsForeignTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(2, "t", "e")...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	foreign := []string{"seg-notes.tmp", "seg-000000000000000A.log.tmp", "seg-0000000000000002.tmp"}
	for _, name := range foreign {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("a user's"), 0o644))
	}
	// What a crash leaves, which opening deletes.
	crashed := []string{"seg-0000000000000002.log.tmp", "START.tmp", "LAST.tmp"}
	for _, name := range crashed {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
	}
	s = openFile(t, dir, nil)
	require.NoError(t, s.Close())
	for _, name := range foreign {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("OpenFileStore deleted %s, which the store does not write: %v", name, err)
		}
	}
	for _, name := range crashed {
		require.NoFileExists(t, filepath.Join(dir, name), "left by a crash")
	}
}

// TestFileStoreSyncOrder records what a store does to its files while it
// appends across new segments, with retention, under each SyncPolicy, and
// checks the order of the syncs that make it crash-safe, which the crash
// images of the other tests cannot see (they take a file renamed for
// there, and leave out one never synced): a file it creates (a segment,
// START) is synced whole before it is renamed to its name, and the
// directory is synced after the rename, before the store writes to it or
// removes anything, so that the name is on disk before any event in the
// file is acknowledged or any segment it replaces is deleted; and before
// it creates a file, every segment written is synced, so that under
// SyncInterval and SyncNever the segments before the active one are on
// disk whole, as opening assumes and SyncInterval's promise (a power loss
// loses at most the last interval) needs. A store that skipped any of
// these syncs passed every other test.
func TestFileStoreSyncOrder(t *testing.T) {
	for _, policy := range []eventbus.SyncPolicy{eventbus.SyncAlways, eventbus.SyncInterval, eventbus.SyncNever} {
		t.Run(map[eventbus.SyncPolicy]string{eventbus.SyncAlways: "SyncAlways", eventbus.SyncInterval: "SyncInterval", eventbus.SyncNever: "SyncNever"}[policy], func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			fs := &opsFS{FS: eventbus.OSFS, dir: dir}
			s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: policy, SyncInterval: time.Hour, MaxSegmentSize: 1 << 10, RetainSize: 3 << 10}, fs))
			for s.Stats().FirstPosition == 0 || s.Stats().Segments < 3 {
				_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 150))...)
				require.NoError(t, err)
			}
			require.NoError(t, s.Close())

			// Files by name, the name they are created under included
			// (the store writes on through the handle it made).
			name := func(path string) string { return strings.TrimSuffix(path, ".tmp") }
			renamed := map[string]bool{}
			dirty := map[string]bool{} // segments written since their last sync
			// around returns the operations near the i-th, to show.
			around := func(i int) []string { return fs.ops[max(i-4, 0):min(i+5, len(fs.ops))] }
			for i, op := range fs.ops {
				verb, path, _ := strings.Cut(op, " ")
				switch verb {
				case "write":
					dirty[name(path)] = true
				case "sync":
					delete(dirty, name(path))
				case "open":
					if strings.HasSuffix(path, ".tmp") && len(dirty) > 0 {
						t.Errorf("%s created with %v written but not synced: %q", path, slices.Sorted(maps.Keys(dirty)), around(i))
					}
				case "rename":
					from, to, _ := strings.Cut(path, " ")
					renamed[to] = true
					if dirty[name(from)] {
						t.Errorf("%s renamed to %s before it was synced: %q", from, to, around(i))
					}
					next := slices.IndexFunc(fs.ops[i+1:], func(op string) bool {
						return op == "sync ." || strings.HasPrefix(op, "write ") || strings.HasPrefix(op, "remove ")
					})
					if next < 0 || fs.ops[i+1+next] != "sync ." {
						t.Errorf("%s renamed to %s, then not synced before the next write or removal: %q", from, to, around(i))
					}
				}
			}
			if !renamed["START"] || len(renamed) < 3 {
				t.Fatalf("the store created %v: want segments and START, to check", slices.Sorted(maps.Keys(renamed)))
			}
		})
	}
}

// createFailFS fails the creation of the file named file (START, LAST),
// once armed.
type createFailFS struct {
	eventbus.FS
	file  string
	armed atomic.Bool
}

func (f *createFailFS) OpenFile(name string, flag int, perm os.FileMode) (eventbus.File, error) {
	if f.armed.Load() && filepath.Base(name) == f.file+".tmp" {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EACCES}
	}
	return f.FS.OpenFile(name, flag, perm)
}

// TestFileStoreRetentionStartFails fails the START file that retention
// writes before it deletes the segments it dropped, and the deletion of
// the second of them, in a store whose older segments were written
// without retention (they do not start with the state of every stream):
// the store must delete no file until START is recorded, as
// removeDropped's doc says, so that the directory, as a crash would leave
// it then, opens. Deleting the first file anyway left a store that
// started at the second, without the state of the streams, which opening
// refused with a *CorruptionError; no test failed.
func TestFileStoreRetentionStartFails(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10})
	appendEach(t, s, 300)
	require.NoError(t, s.Close())
	old := segments(t, dir)
	require.Greater(t, len(old), 4)

	faults := &faultFS{FS: eventbus.OSFS}
	faults.failRemove.Store(&old[1])
	fs := &createFailFS{FS: faults, file: "START"}
	fs.armed.Store(true)
	s = openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10}, fs))
	for s.Stats().FirstPosition == 0 {
		appendEach(t, s, 1)
	}
	st := s.Stats()
	require.ErrorIs(t, st.RetentionErr, syscall.EACCES)

	// A copy of the directory, as a crash would leave it now, opens.
	copied := copyStore(t, dir)
	reopened, err := eventbus.OpenFileStore(copied, &eventbus.FileStoreOptions{ReadOnly: true})
	require.NoError(t, err, "OpenFileStore of the store as retention left it without START")
	require.Equal(t, st.NextPosition, reopened.Stats().NextPosition)
	require.NoError(t, reopened.Close())

	// Once START can be written, the next segment deletes the files.
	fs.armed.Store(false)
	faults.failRemove.Store(nil)
	for s.Stats().FirstPosition == st.FirstPosition {
		appendEach(t, s, 1) // until retention runs again
	}
	require.NoError(t, s.Stats().RetentionErr)
	require.Len(t, segments(t, dir), s.Stats().Segments, "files left behind")
	require.NoError(t, s.Close())
}

// TestFileStoreTornBeforeLastSegment cuts short the last record of a
// segment before the last one, a metadata change: only a crash in the
// middle of a write leaves an incomplete record, and only in the last
// segment, so this is damage (a file cut since), and opening, read-only
// or not, must report it as a *CorruptionError at that record, not cut it
// as a crash's and lose the change without a word. No test failed for a
// store that cut it: the check of the next segment's first position
// catches a cut record of events only.
func TestFileStoreTornBeforeLastSegment(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10})
	_, err := s.Append(ctx, "s", eventbus.NoStream, newEvents(1, "t", strings.Repeat("x", 800))...)
	require.NoError(t, err)
	var last int64 // offset of the last record of the first segment
	for n := uint64(1); s.Stats().Bytes < 1<<10; n++ {
		last = s.Stats().Bytes
		require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: n}))
	}
	_, err = s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "")...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	segs := segments(t, dir)
	require.Len(t, segs, 2)
	fi, err := os.Stat(segs[0])
	require.NoError(t, err)
	require.NoError(t, os.Truncate(segs[0], fi.Size()-2))

	for _, readOnly := range []bool{true, false} {
		s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly})
		var ce *eventbus.CorruptionError
		if !errors.As(err, &ce) || ce.Path != segs[0] || ce.Offset != last {
			if err == nil {
				s.Close()
			}
			t.Fatalf("OpenFileStore(ReadOnly %v) with the last record of %s cut = %v, want a *CorruptionError for it at %d", readOnly, segs[0], err, last)
		}
	}
}

// TestFileStoreVerifyGrownSegment appends bytes to a segment before the
// last one while the store is open, the start of a record that no crash
// leaves there: Verify must report it, as opening would, and no test
// failed for a Verify that took it for a crash's incomplete record.
func TestFileStoreVerifyGrownSegment(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10})
	for len(segments(t, dir)) < 2 {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 300))...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Verify(ctx))
	first := segments(t, dir)[0]
	fi, err := os.Stat(first)
	require.NoError(t, err)
	f, err := os.OpenFile(first, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{1, 2, 3})
	require.NoError(t, errors.Join(err, f.Close()))

	var ce *eventbus.CorruptionError
	if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != first || ce.Offset != fi.Size() {
		t.Errorf("Verify with 3 bytes after the records of %s = %v, want a *CorruptionError for it at %d", first, err, fi.Size())
	}
}

// TestFileStoreVerifyWrongSegment puts in place of a segment, while the
// store is open, a copy of the next one (a backup restored to the wrong
// name), whose records are sound and at least as long: Verify must report
// its header, which names the other segment, as opening does. It checked
// the header's checksum alone and returned nil, so a health check passed
// a store that the next open refused.
func TestFileStoreVerifyWrongSegment(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10})
	for len(segments(t, dir)) < 3 {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 300))...)
		require.NoError(t, err)
	}
	require.NoError(t, s.Verify(ctx))
	segs := segments(t, dir)
	first, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	second, err := os.ReadFile(segs[1])
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(second), len(first), "the copy holds as many bytes")
	require.NoError(t, os.WriteFile(segs[0], second, 0o644))

	var ce *eventbus.CorruptionError
	if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != segs[0] || ce.Offset != 0 {
		t.Errorf("Verify with %s a copy of %s = %v, want a *CorruptionError for its header", segs[0], segs[1], err)
	}
	require.NoError(t, s.Close())
	_, err = eventbus.OpenFileStore(dir, nil)
	require.ErrorAs(t, err, &ce, "OpenFileStore")
	require.Equal(t, segs[0], ce.Path)
}

// TestFileStoreVerifyReplacedSegment deletes a segment file of an open
// store, or puts a copy of it in its place (as a restore from a backup, or
// a tool that writes a file under a temporary name and renames it, does):
// Verify must report the file, since the next open reads what the name
// holds, or misses it, and the appends that follow a replaced last segment
// go to the file the store has open, which no name holds, and are lost.
// Verify read the files through the store's handles, which still read
// what the store wrote, and returned nil; the next open of the deleted
// case failed with a *CorruptionError.
func TestFileStoreVerifyReplacedSegment(t *testing.T) {
	for _, tt := range []struct {
		name    string
		seg     func(segs []string) string
		replace func(t *testing.T, path string)
	}{
		{"first deleted", func(segs []string) string { return segs[0] }, func(t *testing.T, path string) {
			require.NoError(t, os.Remove(path))
		}},
		{"last replaced", func(segs []string) string { return segs[len(segs)-1] }, func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path+".copy", b, 0o644))
			require.NoError(t, os.Rename(path+".copy", path))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10})
			for len(segments(t, dir)) < 3 {
				_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 300))...)
				require.NoError(t, err)
			}
			require.NoError(t, s.Verify(ctx))
			path := tt.seg(segments(t, dir))
			tt.replace(t, path)

			var ce *eventbus.CorruptionError
			if err := s.Verify(ctx); !errors.As(err, &ce) || ce.Path != path || ce.Offset != 0 {
				t.Errorf("Verify with %s %s = %v, want a *CorruptionError for it at 0", path, tt.name, err)
			}
		})
	}
}

// copyStore copies the files of the store in dir, but its LOCK, to a new
// directory, as a crash would leave them, and returns that directory.
func copyStore(t *testing.T, dir string) string {
	t.Helper()
	copied := t.TempDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != "LOCK" {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(copied, e.Name()), b, 0o644))
		}
	}
	return copied
}

// TestFileStoreReadOnlyChangesNothing opens read-only, as eventbus verify
// and inspect do, a store left as a crash leaves it: a last record cut
// short, a segment and a START file half made (.tmp), and segments that
// retention dropped but failed to delete. ReadOnly's doc promises that
// such an open changes no file, so that a store can be looked at before
// anything is cut, on a read-only file system too; a read-only open that
// deleted the half-made files, or the dropped segments, as an open for
// writing does, passed every test.
func TestFileStoreReadOnlyChangesNothing(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs := &faultFS{FS: eventbus.OSFS}
	first := filepath.Join(dir, "seg-0000000000000001.log")
	fs.failRemove.Store(&first)
	s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10}, fs))
	for s.Stats().FirstPosition == 0 {
		_, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", strings.Repeat("x", 200))...)
		require.NoError(t, err)
	}
	require.Error(t, s.Stats().RetentionErr, "retention left the segments it dropped")
	require.NoError(t, s.Close())
	segs := segments(t, dir)
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, fi.Size()-5))
	seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(last), "seg-"), ".log"), 16, 64)
	require.NoError(t, err)
	for _, name := range []string{fmt.Sprintf("seg-%016x.log.tmp", seq+1), "START.tmp"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("half"), 0o644))
	}
	files := func() map[string]string {
		t.Helper()
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		files := map[string]string{}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			files[e.Name()] = string(b)
		}
		return files
	}
	before := files()
	require.FileExists(t, first, "a dropped segment left behind")

	r, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
	require.NoError(t, err)
	require.NotEmpty(t, readAll(t, r))
	require.NoError(t, r.Verify(ctx))
	require.NoError(t, r.Close())
	after := files()
	for name := range before {
		if _, ok := after[name]; !ok {
			t.Errorf("OpenFileStore(ReadOnly) deleted %s", name)
		} else if after[name] != before[name] {
			t.Errorf("OpenFileStore(ReadOnly) changed %s: %d bytes, were %d", name, len(after[name]), len(before[name]))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("OpenFileStore(ReadOnly) made %s", name)
		}
	}
}

// TestFileStoreGainsRetention opens with RetainSize a store written
// without retention, whose segments do not start with the state of every
// stream, so that retention can start the store at none of them: opened
// so, and again before any new segment starts, it must keep every event;
// once new segments start (each with the state of every stream), the
// first one retention deletes down to must be one of those, so that the
// store, opened again, starts there with the revisions of its stream
// going on.
func TestFileStoreGainsRetention(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10})
	appendEach(t, s, 300)
	require.NoError(t, s.Close())
	old := len(segments(t, dir))
	require.Greater(t, old, 4, "segments written without retention")

	opts := &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10}
	for i := range 2 { // opened, then opened again having written no state frame
		s = openFile(t, dir, opts)
		require.Len(t, readAll(t, s), 300, "events of the store opened with retention, time %d", i+1)
		require.NoError(t, s.Close())
	}

	s = openFile(t, dir, opts)
	// Until new segments hold RetainSize, retention can delete no older
	// segment: the store would start at one without the state of the
	// streams.
	for s.Stats().Segments == old {
		appendEach(t, s, 1)
	}
	require.Zero(t, s.Stats().FirstPosition, "FirstPosition once a segment with the state of the streams starts")
	for s.Stats().FirstPosition == 0 {
		appendEach(t, s, 1)
	}
	st := s.Stats()
	require.NoError(t, s.Close())
	s = openFile(t, dir, opts)
	require.Equal(t, st.FirstPosition, s.Stats().FirstPosition, "FirstPosition opened again")
	res, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", "")...)
	require.NoError(t, err)
	require.Equal(t, eventbus.AppendResult{Revision: st.NextPosition, Position: st.NextPosition}, res, "Append after retention, opened again")
}

// TestFileStoreLastSegmentMissing removes the last segment files of a
// store (one, two, or its only one), as a careless cleanup or a bad
// restore might: opening, read-only or not, must fail with a
// *CorruptionError that names the first one missing, and change no file;
// RepairFileStore must then accept the loss explicitly, keeping the file
// LAST that named them in its repair directory, and leave a store that
// opens with the events of the segments left. Opening read the segments
// left as the whole store, without a word: the events of the missing
// ones were gone, and the next appends took their positions again, which
// readers and checkpoints had already seen.
func TestFileStoreLastSegmentMissing(t *testing.T) {
	for _, tc := range []struct {
		name          string
		segs, removed int
	}{
		{"last", 3, 1},
		{"last two", 4, 2},
		{"only", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200})
			var kept int // the events of the segments that stay
			for i := 0; ; i++ {
				_, err := s.Append(t.Context(), "s", eventbus.Any, newEvents(1, "t", fmt.Sprint("e", i))...)
				require.NoError(t, err)
				if n := s.Stats().Segments; n == tc.segs-tc.removed {
					kept = i + 1
				} else if n == tc.segs {
					break
				}
			}
			require.NoError(t, s.Close())
			segs := segments(t, dir)
			require.Len(t, segs, tc.segs)
			gone := segs[tc.segs-tc.removed:]
			for _, path := range gone {
				require.NoError(t, os.Remove(path))
			}
			before := dirFiles(t, dir)
			for _, ro := range []bool{false, true} {
				s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: ro})
				var ce *eventbus.CorruptionError
				if !errors.As(err, &ce) || !strings.Contains(ce.Reason, filepath.Base(gone[0])) {
					if err == nil {
						t.Logf("it opened with %d events", len(readAll(t, s)))
						s.Close()
					}
					t.Fatalf("OpenFileStore(ReadOnly: %v) without %s = %v, want a *CorruptionError naming it", ro, filepath.Base(gone[0]), err)
				}
				if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
					t.Fatalf("OpenFileStore(ReadOnly: %v) that failed changed the files (-before +after):\n%s", ro, diff)
				}
			}

			repaired, err := eventbus.RepairFileStore(dir)
			require.NoError(t, err, "RepairFileStore")
			require.FileExists(t, filepath.Join(repaired, "LAST"), "the record of the missing segments, kept")
			got := readAll(t, openFile(t, dir, nil))
			if tc.removed == tc.segs {
				kept = 0
			}
			require.Len(t, got, kept, "the events of the segments left")
		})
	}
}

// dirFiles returns the contents of the files of dir by name, but for LOCK.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	files := map[string]string{}
	for _, e := range entries {
		if e.Name() == "LOCK" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		files[e.Name()] = string(b)
	}
	return files
}

// TestFileStoreVerifyLastSegment damages, while the store is open, the
// end of the store: it deletes the last segment file, or writes a sound
// LAST that names a later segment than the store's last, as a backup
// restored over it might. Either way the next open fails, finding that
// segment missing, so Verify must report it as a *CorruptionError naming
// it. It checked no LAST, and returned nil for the second.
func TestFileStoreVerifyLastSegment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string, segs []string) (missing string)
	}{
		{"deleted", func(t *testing.T, dir string, segs []string) string {
			require.NoError(t, os.Remove(segs[len(segs)-1]))
			return segs[len(segs)-1]
		}},
		{"LAST names a later one", func(t *testing.T, dir string, segs []string) string {
			n := strconv.Itoa(len(segs) + 1)
			content := fmt.Sprintf("%s %08x\n", n, crc32.Checksum([]byte(n), crc32.MakeTable(crc32.Castagnoli)))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "LAST"), []byte(content), 0o644))
			return fmt.Sprintf("seg-%016x.log", len(segs)+1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s := openFile(t, dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200})
			for s.Stats().Segments < 3 {
				appendEach(t, s, 1)
			}
			require.NoError(t, s.Verify(ctx), "Verify before the damage")
			missing := filepath.Base(tc.damage(t, dir, segments(t, dir)))

			var ce *eventbus.CorruptionError
			if err := s.Verify(ctx); !errors.As(err, &ce) || !strings.Contains(ce.Error(), missing) {
				t.Errorf("Verify with %s missing = %v, want a *CorruptionError naming it", missing, err)
			}
			require.NoError(t, s.Close())
			_, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
			if !errors.As(err, &ce) || !strings.Contains(ce.Error(), missing) {
				t.Errorf("OpenFileStore with %s missing = %v, want a *CorruptionError naming it", missing, err)
			}
		})
	}
}

// TestFileStoreCrashWhileRolling crashes a store under SyncAlways at every
// write, sync, rename and removal while its appends start new segments,
// which each name the new segment in LAST: every crash image must open
// for writing with every acknowledged event, at its position, whether
// the crash came before the new segment's file, between it and LAST, or
// while LAST was written; and once opened, it must guard its last segment
// again, failing the next open without it. The images must include those
// between the new segment and LAST, where LAST names an earlier segment
// than the last, and those with LAST half written, or the test proves
// nothing about them.
func TestFileStoreCrashWhileRolling(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	var images []crashImage
	acked := 0
	s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{MaxSegmentSize: 1 << 10}, crashImages(t, dir, &acked, &images)))
	var want [][]byte // the data of the event at each position
	for s.Stats().Segments < 4 {
		evs := newEvents(1, "t", strings.Repeat("x", 300))
		res, err := s.Append(ctx, "s", eventbus.Any, evs...)
		require.NoError(t, err)
		require.Equal(t, uint64(len(want)), res.Position)
		want = append(want, evs[0].Data)
		acked++
	}
	require.NoError(t, s.Close())

	behind, torn := 0, 0 // images with LAST behind the last segment, with LAST.tmp
	for _, im := range images {
		// Images of the store's creation may have no segment, or no LAST.
		segs := segments(t, im.dir)
		if b, err := os.ReadFile(filepath.Join(im.dir, "LAST")); err == nil && len(segs) > 0 {
			if n, err := strconv.ParseUint(strings.Fields(string(b))[0], 10, 64); err == nil && fmt.Sprintf("seg-%016x.log", n) < filepath.Base(segs[len(segs)-1]) {
				behind++
			}
		}
		if _, err := os.Stat(filepath.Join(im.dir, "LAST.tmp")); err == nil {
			torn++
		}

		s, err := eventbus.OpenFileStore(im.dir, nil)
		require.NoError(t, err, "OpenFileStore of a crash image after %d acknowledged appends", im.acked)
		got := readAll(t, s)
		require.NoError(t, s.Close())
		if len(got) < im.acked {
			t.Fatalf("crash after %d acknowledged appends: read %d events", im.acked, len(got))
		}
		for pos, e := range got[:im.acked] {
			if e.Position != uint64(pos) || !bytes.Equal(e.Data, want[pos]) {
				t.Fatalf("crash after %d acknowledged appends: event %d is at position %d with %q, want %q", im.acked, pos, e.Position, e.Data, want[pos])
			}
		}
		segs = segments(t, im.dir)
		require.NoError(t, os.Remove(segs[len(segs)-1]))
		var ce *eventbus.CorruptionError
		if _, err := eventbus.OpenFileStore(im.dir, &eventbus.FileStoreOptions{ReadOnly: true}); !errors.As(err, &ce) {
			t.Fatalf("crash after %d acknowledged appends, reopened, then %s removed: OpenFileStore = %v, want a *CorruptionError", im.acked, filepath.Base(segs[len(segs)-1]), err)
		}
	}
	t.Logf("%d crash images, %d with LAST behind the last segment, %d with LAST.tmp", len(images), behind, torn)
	if behind == 0 || torn == 0 {
		t.Errorf("%d crash images with LAST behind the last segment, %d with LAST.tmp: want some of each", behind, torn)
	}
}

// TestFileStoreWithoutLast opens a store written by the version of this
// package before the file LAST (testdata/filestore-before-last: events
// "e0" to "e7" at positions 0 to 7, alternately in streams "a" and "b",
// in three segments): it must open read-only as it is, writing nothing,
// and for writing, where it gains a LAST that names its last segment, so
// that from then on a store without that segment fails to open.
func TestFileStoreWithoutLast(t *testing.T) {
	dir := copyStore(t, filepath.Join("testdata", "filestore-before-last"))
	segs := segments(t, dir)
	require.Len(t, segs, 3)
	check := func(s *eventbus.FileStore) {
		t.Helper()
		got := readAll(t, s)
		require.Len(t, got, 8)
		for i, e := range got {
			if want := fmt.Sprint("e", i); e.Position != uint64(i) || string(e.Data) != want || e.Stream != []string{"a", "b"}[i%2] {
				t.Errorf("event %d = %s@%d at position %d holding %q, want %q in %q", i, e.Stream, e.Revision, e.Position, e.Data, want, []string{"a", "b"}[i%2])
			}
		}
	}
	s := openFile(t, dir, &eventbus.FileStoreOptions{ReadOnly: true})
	check(s)
	require.NoError(t, s.Close())
	require.NoFileExists(t, filepath.Join(dir, "LAST"), "after a read-only open")

	s = openFile(t, dir, nil)
	check(s)
	res, err := s.Append(t.Context(), "a", eventbus.Exact(3), newEvents(1, "t", "")...)
	require.NoError(t, err)
	require.Equal(t, eventbus.AppendResult{Revision: 4, Position: 8}, res)
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(segs[2]))
	var ce *eventbus.CorruptionError
	if _, err := eventbus.OpenFileStore(dir, nil); !errors.As(err, &ce) || !strings.Contains(ce.Reason, filepath.Base(segs[2])) {
		t.Errorf("OpenFileStore once opened for writing, then without %s = %v, want a *CorruptionError naming it", filepath.Base(segs[2]), err)
	}
}

// TestFileStoreLastFails fails the file LAST that a new segment is named
// in: the append that started the segment must fail, and every later one,
// so that no event is acknowledged in a segment that LAST does not name
// (its loss would go unnoticed); reopened, the store holds every event
// acknowledged before, names its last segment, and fails to open without
// it.
func TestFileStoreLastFails(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs := &createFailFS{FS: eventbus.OSFS, file: "LAST"}
	s := openFile(t, dir, eventbus.WithFS(&eventbus.FileStoreOptions{MaxSegmentSize: 200}, fs))
	fs.armed.Store(true)
	acked := 0
	var err error
	for ; acked < 100; acked++ {
		if _, err = s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "e")...); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Append that starts a segment, LAST failing = %v, want an error wrapping EACCES", err)
	}
	if _, err := s.Append(ctx, "s", eventbus.Any, newEvents(1, "t", "e")...); err == nil {
		t.Fatal("Append after LAST failed = nil, want the store failed")
	}
	require.NoError(t, s.Close())

	s = openFile(t, dir, nil)
	require.Len(t, readAll(t, s), acked, "the events acknowledged")
	require.NoError(t, s.Close())
	segs := segments(t, dir)
	require.NoError(t, os.Remove(segs[len(segs)-1]))
	var ce *eventbus.CorruptionError
	if _, err := eventbus.OpenFileStore(dir, nil); !errors.As(err, &ce) {
		t.Errorf("OpenFileStore without %s = %v, want a *CorruptionError", filepath.Base(segs[len(segs)-1]), err)
	}
}
