package eventbus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

func openFile(t *testing.T, dir string, opts *eventbus.FileStoreOptions) *eventbus.FileStore {
	t.Helper()
	s, err := eventbus.OpenFileStore(dir, opts)
	require.NoError(t, err, "OpenFileStore")
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFileStoreConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts *eventbus.FileStoreOptions
	}{
		{"SyncAlways", nil},
		{"SyncNever", &eventbus.FileStoreOptions{Sync: eventbus.SyncNever}},
		{"SmallSegments", &eventbus.FileStoreOptions{Sync: eventbus.SyncInterval, MaxSegmentSize: 4 << 10, RetainSize: 1 << 40}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eventbustest.TestStore(t, func(t *testing.T) eventbus.Store {
				s, err := eventbus.OpenFileStore(t.TempDir(), tt.opts)
				require.NoError(t, err)
				return s
			})
		})
	}
}
