package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRepairFailsAfterCut checks that repair, failing after it has cut
// records, says where it put them: it printed the error only, so the user
// did not learn that part of the store was now in a repair-<time>
// subdirectory. The failure is made by an immutable segment (chattr +i),
// which repair copies but cannot truncate.
func TestRepairFailsAfterCut(t *testing.T) {
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		t.Skip("no chattr")
	}
	dir, segs := segmentedStore(t)
	require.Greater(t, len(segs), 1)
	b, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	b[len(b)-3] ^= 1 // inside the last record of the first segment
	require.NoError(t, os.WriteFile(segs[0], b, 0o644))
	if out, err := exec.Command(chattr, "+i", segs[0]).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(chattr, "-i", segs[0]).Run() })

	code, _, stderr := runCmd(t, "repair", dir)
	kept, err := filepath.Glob(filepath.Join(dir, "repair-*"))
	require.NoError(t, err)
	require.Len(t, kept, 1, "repair kept no copy; stderr %q", stderr)
	if code != 1 || !strings.Contains(stderr, kept[0]) {
		t.Errorf("eventbus repair failing after a cut: exit status %d, stderr %q; want 1 and %s named", code, stderr, kept[0])
	}
}
