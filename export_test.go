package eventbus

import "time"

// FS and File let the tests of package eventbus_test inject failures into
// the files of a FileStore.
type (
	FS   = fileSystem
	File = storeFile
)

// OSFS is the operating system's FS.
var OSFS FS = osFS{}

// WithFS returns opts (or the defaults) with fs as the file system.
func WithFS(opts *FileStoreOptions, fs FS) *FileStoreOptions {
	o := copyOptions(opts)
	o.fs = fs
	return o
}

// RepairFileStoreFS is RepairFileStore through fs.
func RepairFileStoreFS(dir string, fs FS) (string, error) {
	return repairFileStore(dir, fs)
}

// WithNow returns opts (or the defaults) with now as the wall clock that
// stamps commits.
func WithNow(opts *FileStoreOptions, now func() time.Time) *FileStoreOptions {
	o := copyOptions(opts)
	o.now = now
	return o
}

// NewMemoryStoreNow is NewMemoryStore with now as the wall clock that
// stamps commits.
func NewMemoryStoreNow(now func() time.Time) (*MemoryStore, error) {
	return NewMemoryStore(&MemoryStoreOptions{now: now})
}

// WithWindow returns opts (or the defaults) with window as the bytes an
// open reads at a time.
func WithWindow(opts *FileStoreOptions, window int) *FileStoreOptions {
	o := copyOptions(opts)
	o.window = window
	return o
}

// copyOptions returns a copy of opts, or the defaults if it is nil.
func copyOptions(opts *FileStoreOptions) *FileStoreOptions {
	var o FileStoreOptions
	if opts != nil {
		o = *opts
	}
	return &o
}
