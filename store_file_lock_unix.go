//go:build unix

package eventbus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// lockDir takes an exclusive lock on the LOCK file of dir, or a shared one
// for shared, and returns the file holding it. A shared lock opens the file
// for reading only, so that a store on a read-only file system (a backup
// mounted read-only, say) can be read; there, without a LOCK file, it takes
// no lock and returns a nil file, since no writer can come.
func lockDir(path string, shared bool) (*os.File, error) {
	flag := os.O_RDWR | os.O_CREATE
	if shared {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if shared && errors.Is(err, fs.ErrNotExist) {
		// Made for the writers that open the store later, to find.
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, syscall.EROFS) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	how := syscall.LOCK_EX
	if shared {
		how = syscall.LOCK_SH
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by another open store or repair, in this process or another", ErrLocked, path)
		}
		return nil, fmt.Errorf("eventbus: lock %s: %w", path, err)
	}
	return f, nil
}
