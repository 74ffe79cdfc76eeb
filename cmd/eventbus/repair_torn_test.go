package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRepairSaysWhatItCutWithoutACopy damages the LAST file of a store
// whose last segment also ends in an incomplete record: repair moves LAST
// into its repair-<time> directory, and opening for writing then cuts the
// incomplete record, keeping no copy. Repair said "what was cut is in
// repair-<time>", silent on the bytes it cut from the segment, which are
// not there: it reports the incomplete record only when it kept no copy
// of anything.
func TestRepairSaysWhatItCutWithoutACopy(t *testing.T) {
	dir, seg := newStore(t)
	last := filepath.Join(dir, "LAST")
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	b[len(b)-2] ^= 1 // a digit of its checksum
	require.NoError(t, os.WriteFile(last, b, 0o644))
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, fi.Size()-5))

	code, stdout, stderr := runCmd(t, "repair", dir)
	require.Equal(t, 0, code, stderr)
	after, err := os.Stat(seg)
	require.NoError(t, err)
	cut := fi.Size() - 5 - after.Size()
	require.Positive(t, cut, "repair cut nothing from the segment: the test made no case")
	kept, err := filepath.Glob(filepath.Join(dir, "repair-*", "*"))
	require.NoError(t, err)
	var inCopy int64
	for _, k := range kept {
		if strings.HasPrefix(filepath.Base(k), "seg-") {
			fi, err := os.Stat(k)
			require.NoError(t, err)
			inCopy += fi.Size()
		}
	}
	want := fmt.Sprintf("incomplete final record of %d bytes", cut)
	if inCopy == 0 && !strings.Contains(stdout, want) {
		t.Errorf("eventbus repair cut %d bytes from %s, of which its copy (%v) holds none, and printed\n%s\nwant it to say %q", cut, filepath.Base(seg), kept, stdout, want)
	}
}
