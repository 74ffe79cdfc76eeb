package eventbus

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeFrame feeds hostile payloads to the record decoder: it must
// fail cleanly, never panic, and allocate no more than the payload holds.
func FuzzDecodeFrame(f *testing.F) {
	e := EventData{ID: NewID(), Type: "t", Metadata: Metadata{"k": "v"}, Data: []byte("data")}
	b, frame := beginFrame(nil, kindEvents)
	b = append(b, 1)
	b = appendString(b, "s")
	b = append(b, 1)
	b = appendEntry(b, 0, 0, 1, appendBody(nil, &e))
	endFrame(b, frame)
	f.Add(b[frameHeader:])
	f.Add([]byte{kindDelete, 1, 's', 1})
	f.Add([]byte{kindMetadata, 1, 's', 5, 0})
	f.Add([]byte{kindState, 1, 1, 's', 3, 1, 2, 0, 0})
	f.Add([]byte{kindEvents, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, p []byte) {
		var e entry
		_, _ = decodeFrame(p, &e, func(stream []byte, off int, e *entry) error {
			e.recorded(string(stream), map[string]string{})
			return nil
		})
	})
}

// FuzzOpenFileStore opens a store whose segment holds a valid header and
// then hostile bytes: opening must fail with an error or succeed with a
// store that reads without panicking.
func FuzzOpenFileStore(f *testing.F) {
	dir := f.TempDir()
	s, err := OpenFileStore(dir, nil)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Append(context.Background(), "s", Any, EventData{ID: NewID(), Type: "t", Data: []byte{byte(i)}}); err != nil {
			f.Fatal(err)
		}
	}
	if err := s.SetStreamMetadata(context.Background(), "s", StreamMetadata{MaxCount: 2}); err != nil {
		f.Fatal(err)
	}
	s.Close()
	valid, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid[segHeaderSize:])
	f.Add(valid[segHeaderSize : len(valid)-3])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		dir := t.TempDir()
		seg := append(segHeader{seq: 1}.encode(), body...)
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := OpenFileStore(dir, &FileStoreOptions{Sync: SyncNever})
		if err != nil {
			return
		}
		defer s.Close()
		for range s.ReadAll(context.Background(), &ReadOptions{Filter: Filter{StreamPrefix: ""}}) {
		}
		for range s.ReadStream(context.Background(), "s", nil) {
		}
		if err := s.Verify(context.Background()); err != nil {
			t.Errorf("Verify of a store that opened = %v", err)
		}
	})
}
