//go:build unix

package eventbus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive lock on the store in dir, or a shared one for
// shared, and returns what holds it. The lock is on the directory itself,
// which nothing can delete from under an open store, and on its LOCK file,
// which the versions of this package before the directory's lock lock
// alone. A writer makes LOCK if it is missing; a shared lock writes
// nothing, so that a read-only open (eventbus verify, as root, say) never
// leaves a file behind, and works on a read-only file system (a backup
// mounted read-only): without LOCK it takes the directory's lock alone.
func lockDir(dir string, shared bool) (*dirLock, error) {
	how := syscall.LOCK_EX
	flag := os.O_RDWR | os.O_CREATE
	if shared {
		how, flag = syscall.LOCK_SH, os.O_RDONLY
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	l := &dirLock{dir: d}
	if err := flock(d, how, dir); err != nil {
		l.Close()
		return nil, err
	}
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, flag, 0o644)
	switch {
	case shared && errors.Is(err, fs.ErrNotExist):
		return l, nil
	case err != nil:
		l.Close()
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	l.file = f
	if err := flock(f, how, path); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// flock locks f, path, as how says, without waiting.
func flock(f *os.File, how int, path string) error {
	err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return fmt.Errorf("%w: %s is held by another open store or repair, in this process or another", ErrLocked, path)
	case err != nil:
		return fmt.Errorf("eventbus: lock %s: %w", path, err)
	}
	return nil
}
