package eventbus

import (
	"errors"
	"os"
)

// dirLock holds the lock on a store's directory (see lockDir): the
// directory and its LOCK file, each open, or nil where not locked.
type dirLock struct{ dir, file *os.File }

// Close lets go of the lock.
func (l *dirLock) Close() error {
	var errs []error
	for _, f := range []*os.File{l.file, l.dir} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}
