package eventbus

import (
	"io"
	"os"
)

// fileSystem is what a [FileStore] does to files, so that tests can inject
// failures (a full disk, an I/O error) into writes and syncs.
type fileSystem interface {
	// OpenFile opens a file as os.OpenFile does.
	OpenFile(name string, flag int, perm os.FileMode) (storeFile, error)
	// Rename, Remove and Mkdir work as os.Rename, os.Remove and os.Mkdir.
	Rename(from, to string) error
	Remove(name string) error
	Mkdir(name string, perm os.FileMode) error
}

// storeFile is an open segment file or directory. ReadAt and Stat must be
// safe for concurrent use with themselves, with Write, and with Close
// (after which they fail).
type storeFile interface {
	io.ReaderAt
	io.Writer
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// osFS is the fileSystem of the operating system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (storeFile, error) {
	return os.OpenFile(name, flag, perm)
}

func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) Remove(name string) error     { return os.Remove(name) }

func (osFS) Mkdir(name string, perm os.FileMode) error {
	return os.Mkdir(name, perm)
}
