package eventbus_test

import (
	"context"
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
