package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestFileStoreReadOnlyMount opens a store read-only through a read-only
// bind mount of its directory, as one would inspect a backup, with its
// LOCK file and without one: the open used to fail, opening LOCK for
// writing. It needs the privilege to mount, and skips without it.
func TestFileStoreReadOnlyMount(t *testing.T) {
	for _, tt := range []struct {
		name   string
		noLock bool
	}{{name: "with LOCK"}, {name: "without LOCK", noLock: true}} {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			s, err := eventbus.OpenFileStore(src, nil)
			require.NoError(t, err)
			ctx := context.Background()
			_, err = s.Append(ctx, "orders-1", eventbus.NoStream, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{}`)})
			require.NoError(t, err)
			require.NoError(t, s.Close())
			if tt.noLock {
				require.NoError(t, os.Remove(filepath.Join(src, "LOCK")))
			}
			ro := readOnlyMount(t, src)

			s, err = eventbus.OpenFileStore(ro, &eventbus.FileStoreOptions{ReadOnly: true})
			require.NoError(t, err)
			var n int
			for _, err := range s.ReadAll(ctx, nil) {
				require.NoError(t, err)
				n++
			}
			require.Equal(t, 1, n, "events read")
			require.NoError(t, s.Close())
		})
	}
}

// readOnlyMount bind-mounts dir read-only at a new directory, unmounted
// when the test ends, or skips the test without the privilege to mount.
func readOnlyMount(t *testing.T, dir string) string {
	t.Helper()
	ro := t.TempDir()
	if err := syscall.Mount(dir, ro, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount (%v): this test needs the privilege to mount", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(ro, 0) })
	if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount read-only (%v): this test needs the privilege to mount", err)
	}
	if f, err := os.Create(filepath.Join(ro, "probe")); err == nil {
		f.Close()
		t.Fatal("the read-only mount is writable")
	}
	return ro
}

// TestFileStoreReadOnlyShares checks the lock that ReadOnly takes, as its
// doc and the eventbus command's promise: read-only opens share the store
// (several eventbus commands run at once), while neither an open for
// writing nor RepairFileStore gets it until the last of them is closed,
// so that no reader sees files being appended to, cut or deleted. Only
// the first half had a test: read-only opens that locked the store for
// themselves alone passed every test. Without a LOCK file (a copy that left
// it out), a read-only open makes none, since it writes nothing (eventbus
// verify run as root made one that the store's owner could not open), and
// locks the store all the same.
func TestFileStoreReadOnlyShares(t *testing.T) {
	for _, noLock := range []bool{false, true} {
		t.Run(fmt.Sprintf("without LOCK %v", noLock), func(t *testing.T) {
			dir := t.TempDir()
			s := openFile(t, dir, nil)
			_, err := s.Append(t.Context(), "s", eventbus.NoStream, newEvents(2, "t", "")...)
			require.NoError(t, err)
			require.NoError(t, s.Close())
			lock := filepath.Join(dir, "LOCK")
			if noLock {
				require.NoError(t, os.Remove(lock))
			}

			var readers []*eventbus.FileStore
			for i := range 2 {
				r, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
				if err != nil {
					t.Fatalf("read-only OpenFileStore with %d read-only opens = %v, want it to share the store", i, err)
				}
				readers = append(readers, r)
				require.Len(t, readAll(t, r), 2)
				require.NoError(t, r.Verify(t.Context()))
			}
			if _, err := os.Stat(lock); noLock && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after read-only opens, Stat(LOCK) = %v, want no such file", err)
			}
			for i, r := range readers {
				if w, err := eventbus.OpenFileStore(dir, nil); !errors.Is(err, eventbus.ErrLocked) {
					if err == nil {
						w.Close()
					}
					t.Fatalf("OpenFileStore beside %d read-only opens = %v, want ErrLocked", len(readers)-i, err)
				}
				if _, err := eventbus.RepairFileStore(dir); !errors.Is(err, eventbus.ErrLocked) {
					t.Fatalf("RepairFileStore beside %d read-only opens = %v, want ErrLocked", len(readers)-i, err)
				}
				require.NoError(t, r.Close())
			}
			s = openFile(t, dir, nil)
			require.NoError(t, s.Close())
		})
	}
}

// TestFileStoreLockSurvivesLOCKDeleted deletes the LOCK file of a store
// open for writing, as a cleanup script might: a second open for writing,
// or a read-only one, must still find the store locked. With the lock on
// LOCK alone, a second store opened beside the first, and their appends
// corrupted the segments.
func TestFileStoreLockSurvivesLOCKDeleted(t *testing.T) {
	dir := t.TempDir()
	s := openFile(t, dir, nil)
	require.NoError(t, os.Remove(filepath.Join(dir, "LOCK")))
	for _, readOnly := range []bool{false, true} {
		if o, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: readOnly}); !errors.Is(err, eventbus.ErrLocked) {
			if err == nil {
				o.Close()
			}
			t.Fatalf("OpenFileStore(ReadOnly %v) beside a store whose LOCK was deleted = %v, want ErrLocked", readOnly, err)
		}
	}
	require.NoError(t, s.Close())
	s = openFile(t, dir, nil)
	require.NoError(t, s.Close())
}
