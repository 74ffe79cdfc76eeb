//go:build !unix

package eventbus

import (
	"fmt"
	"os"
)

// lockDir opens the LOCK file of dir. On this platform it takes no lock:
// the application must make sure that one process at a time opens a store.
func lockDir(path string, shared bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	return f, nil
}
