package eventbus

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// windowDamage is a way to damage a copy of a store: do changes the bytes
// of its segment file seg.
type windowDamage struct {
	name, seg string
	do        func(b []byte) []byte
}

// damagedStores makes a store of three segments or more, with events of
// many sizes, metadata, a delete and a tombstone, and returns its
// directory and damages to do to copies of it: none; its last segment cut
// at many lengths; a bit flipped here and there in its first and last
// segments; a sector of its last one zeroed.
func damagedStores(t *testing.T) (string, []windowDamage) {
	src := t.TempDir()
	s, err := OpenFileStore(src, &FileStoreOptions{Sync: SyncNever, MaxSegmentSize: 2 << 10})
	require.NoError(t, err)
	ctx := t.Context()
	appendTo := func(stream string, i int) {
		t.Helper()
		_, err := s.Append(ctx, stream, Any, EventData{ID: NewID(), Type: "t", Data: bytes.Repeat([]byte{byte(i)}, i*7%300)})
		require.NoError(t, err)
	}
	for i := range 40 {
		appendTo(fmt.Sprint("s", i%4), i)
	}
	require.NoError(t, s.SetStreamMetadata(ctx, "s1", StreamMetadata{MaxCount: 5}))
	require.NoError(t, s.Delete(ctx, "s2", Any))
	require.NoError(t, s.Tombstone(ctx, "s3", Any))
	for i := range 20 {
		appendTo(fmt.Sprint("s", i%3), 40+i)
	}
	require.NoError(t, s.Close())
	segs, err := filepath.Glob(filepath.Join(src, "seg-*.log"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(segs), 3, "segments")
	first, last := filepath.Base(segs[0]), filepath.Base(segs[len(segs)-1])
	sizeOf := func(name string) int {
		fi, err := os.Stat(filepath.Join(src, name))
		require.NoError(t, err)
		return int(fi.Size())
	}
	damages := []windowDamage{{"none", last, func(b []byte) []byte { return b }}}
	for n := segHeaderSize; n < sizeOf(last); n += 37 {
		damages = append(damages, windowDamage{fmt.Sprintf("%s cut to %d", last, n), last, func(b []byte) []byte { return b[:n] }})
	}
	for _, seg := range []string{first, last} {
		for at := 0; at < sizeOf(seg); at += 53 {
			damages = append(damages, windowDamage{fmt.Sprintf("%s bit flipped at %d", seg, at), seg, func(b []byte) []byte {
				b[at] ^= 1 << (at % 8)
				return b
			}})
		}
	}
	for at := 0; at < sizeOf(last); at += sectorSize {
		damages = append(damages, windowDamage{fmt.Sprintf("%s sector zeroed at %d", last, at), last, func(b []byte) []byte {
			clear(b[at:min(at+sectorSize, len(b))])
			return b
		}})
	}
	return src, damages
}

// TestScanFileAgrees scans each damaged segment (see damagedStores) as an
// open does, in windows of a few sizes, some smaller than any frame (so
// that every frame spans windows and grows one, and the damage is met
// after the window has moved), and as Verify does, the whole file at once:
// both must replay the same frames, at the same offsets, and end alike.
func TestScanFileAgrees(t *testing.T) {
	src, damages := damagedStores(t)
	type frame struct {
		off     int
		payload string
	}
	var ends map[string]bool = map[string]bool{}
	for _, d := range damages {
		b, err := os.ReadFile(filepath.Join(src, d.seg))
		require.NoError(t, err)
		b = d.do(b)
		var want []frame
		wantEnd, wantTorn, wantErr := scanSegment(b, "seg", func(off int, p []byte) error {
			want = append(want, frame{off, string(p)})
			return nil
		})
		ends[fmt.Sprint(wantTorn, wantErr != nil)] = true
		for _, window := range []int{7, 64, 1000, 1 << 20} {
			var got []frame
			f := &bytesFile{Reader: bytes.NewReader(b)}
			r := segmentReader{f: f, path: "seg", size: len(b), wide: window}
			end, torn, err := scanFile(&r, func(off int, p []byte) error {
				got = append(got, frame{off, string(p)})
				return nil
			})
			if end != wantEnd || torn != wantTorn || fmt.Sprint(err) != fmt.Sprint(wantErr) || !slices.Equal(got, want) {
				t.Errorf("%s, windows of %d bytes: end %d, torn %v, error %v, %d frames; the whole file: %d, %v, %v, %d frames",
					d.name, window, end, torn, err, len(got), wantEnd, wantTorn, wantErr, len(want))
			}
			if d.name == "none" && window >= 1000 && f.read > len(b)*3/2 {
				// Sound frames are not read twice: none went to scanFrom.
				t.Errorf("windows of %d bytes: %d bytes read of a sound file of %d", window, f.read, len(b))
			}
		}
	}
	require.Len(t, ends, 3, "damages that end in a torn frame, in corruption, and in neither")
}

// bytesFile is a storeFile that reads from memory, and counts the bytes
// read.
type bytesFile struct {
	*bytes.Reader
	read int
}

func (f *bytesFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.Reader.ReadAt(b, off)
	f.read += n
	return n, err
}

func (bytesFile) Write([]byte) (int, error)  { return 0, errors.ErrUnsupported }
func (bytesFile) Sync() error                { return nil }
func (bytesFile) Truncate(int64) error       { return errors.ErrUnsupported }
func (bytesFile) Stat() (os.FileInfo, error) { return nil, errors.ErrUnsupported }
func (bytesFile) Close() error               { return nil }

// TestOpenWindowsAgree opens copies of each damaged store (see
// damagedStores) twice: reading its segments in windows that hold them
// whole, and in windows of 7 bytes. Both opens must end alike: with the
// same error, or with the same events, streams and segment files (a torn
// last frame cut from both).
func TestOpenWindowsAgree(t *testing.T) {
	src, damages := damagedStores(t)
	ctx := t.Context()
	// outcome is what an open of dir with window comes to.
	outcome := func(dir string, window int) string {
		var out strings.Builder
		s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever, window: window})
		if err != nil {
			return "error: " + strings.ReplaceAll(err.Error(), dir, "DIR")
		}
		for e, err := range s.ReadAll(ctx, &ReadOptions{Filter: Filter{StreamPrefix: "$"}}) {
			fmt.Fprintf(&out, "%v %v\n", e, err)
		}
		for e, err := range s.ReadAll(ctx, nil) {
			fmt.Fprintf(&out, "%v %v\n", e, err)
		}
		for i := range 4 {
			info, err := s.StreamInfo(ctx, fmt.Sprint("s", i))
			fmt.Fprintf(&out, "%+v %v\n", info, err)
		}
		fmt.Fprintf(&out, "%+v\n", s.Stats())
		require.NoError(t, s.Close())
		names, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
		require.NoError(t, err)
		for _, name := range names {
			fi, err := os.Stat(name)
			require.NoError(t, err)
			fmt.Fprintf(&out, "%s %d\n", filepath.Base(name), fi.Size())
		}
		return out.String()
	}
	for _, d := range damages {
		whole, windowed := copyStoreDir(t, src), copyStoreDir(t, src)
		for _, dir := range []string{whole, windowed} {
			path := filepath.Join(dir, d.seg)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, d.do(b), 0o644))
		}
		if got, want := outcome(windowed, 7), outcome(whole, 0); got != want {
			t.Errorf("%s: opened in windows of 7 bytes:\n%s\nwhole:\n%s", d.name, got, want)
		}
	}
}

// TestOpenWindowReadError fails the reads of a segment past its first
// window: the open fails with the read's error, naming the file.
func TestOpenWindowReadError(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
	require.NoError(t, err)
	for range 20 {
		_, err := s.Append(t.Context(), "s", Any, EventData{ID: NewID(), Type: "t", Data: bytes.Repeat([]byte{1}, 100)})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	_, err = OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever, window: 300, fs: readFailFS{from: 600}})
	require.ErrorIs(t, err, syscall.EIO)
	require.ErrorContains(t, err, segmentName(1))
}

// readFailFS fails every read of a segment file from offset from on.
type readFailFS struct {
	osFS
	from int64
}

func (f readFailFS) OpenFile(name string, flag int, perm os.FileMode) (storeFile, error) {
	file, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasPrefix(filepath.Base(name), "seg-") {
		return file, err
	}
	return readFailFile{file, f.from}, nil
}

type readFailFile struct {
	storeFile
	from int64
}

func (f readFailFile) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > f.from {
		return 0, &os.PathError{Op: "read", Path: "segment", Err: syscall.EIO}
	}
	return f.storeFile.ReadAt(b, off)
}

// copyStoreDir copies the files of the store in dir to a new directory.
func copyStoreDir(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	require.NoError(t, os.CopyFS(to, os.DirFS(dir)))
	return to
}
