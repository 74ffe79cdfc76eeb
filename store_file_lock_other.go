//go:build !unix

package eventbus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// lockDir opens the LOCK file of dir, which a writer makes if it is missing
// and a reader never does. On this platform it takes no lock: the
// application must make sure that one process at a time opens a store.
func lockDir(dir string, shared bool) (*dirLock, error) {
	flag := os.O_RDWR | os.O_CREATE
	if shared {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), flag, 0o644)
	switch {
	case shared && errors.Is(err, fs.ErrNotExist):
		return &dirLock{}, nil
	case err != nil:
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	return &dirLock{file: f}, nil
}
