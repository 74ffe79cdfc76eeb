//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestLockedStore runs every command on a store that an application holds
// open, as the package doc says not to: each must fail (exit status 1)
// saying "file store locked", print nothing on standard output, advise no
// repair, which would fail too, but to stop the application (the error
// alone named a LOCK file, not who holds it), and change no file; once the
// application closes the store, they work. No test proved it: a command that read a
// store held open, whose segments its application changes under it, or
// that advised a repair for the lock, passed every test.
func TestLockedStore(t *testing.T) {
	dir, seg := newStore(t)
	before, err := os.ReadFile(seg)
	require.NoError(t, err)
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	for _, args := range [][]string{{"inspect"}, {"stats"}, {"verify"}, {"read"}, {"tail"}, {"read", "-stream", "order-1"}, {"repair"}} {
		code, stdout, stderr := runCmd(t, append(args, dir)...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "file store locked") || strings.Contains(stderr, "eventbus repair ") ||
			!strings.Contains(stderr, "stop the application that uses it") {
			t.Errorf("eventbus %v of a store held open: exit status %d, stdout %q, stderr %q; want 1, nothing printed, \"file store locked\", the advice to stop the application and none to repair", args, code, stdout, stderr)
		}
	}
	require.NoError(t, s.Close())
	after, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, before, after, "the segment")
	kept, err := filepath.Glob(filepath.Join(dir, "repair-*"))
	require.NoError(t, err)
	require.Empty(t, kept, "repair directories")
	for _, cmd := range []string{"verify", "repair"} {
		if code, _, stderr := runCmd(t, cmd, dir); code != 0 {
			t.Errorf("eventbus %s once the store is closed: exit status %d, stderr %q", cmd, code, stderr)
		}
	}
}
