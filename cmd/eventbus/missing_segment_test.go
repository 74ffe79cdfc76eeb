package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMiddleSegmentMissing checks verify and repair of a store whose
// segment file before the last is gone: verify must advise putting it back
// before a repair, which cuts the store there and so takes the sound
// segments after it too; repair must say that it cut them, and keeps them.
// Verify advised a repair that "cuts the damage", as if it cost only the
// damage, and repair said that the events of the segments it kept were
// lost.
func TestMiddleSegmentMissing(t *testing.T) {
	dir, segs := segmentedStore(t)
	require.Len(t, segs, 3)
	require.NoError(t, os.Remove(segs[1]))

	code, _, stderr := runCmd(t, "verify", dir)
	if code != 1 || !strings.Contains(stderr, "seg-0000000000000002.log is missing") || !strings.Contains(stderr, "put it back") {
		t.Errorf("verify without the middle segment: exit status %d, stderr %q; want 1, the segment named and advice to put it back", code, stderr)
	}
	code, stdout, stderr := runCmd(t, "repair", dir)
	want := "the store now ends at position 2: the events from there on, if any, were cut"
	if code != 0 || !strings.Contains(stdout, want) || strings.Contains(stdout, "lost") {
		t.Errorf("repair without the middle segment: exit status %d, stdout %q, stderr %q; want 0 and %q, nothing said lost", code, stdout, stderr, want)
	}
}

// TestRepairSaysCutNotLost checks what repair says of the events after
// damage in a segment before the last: they were cut, and are in its copy
// with the later segments. It said that they were lost, with the segments
// that LAST names, since it found LAST in the copy: but repair moved LAST
// there only because it names a segment that the cut moved there too.
func TestRepairSaysCutNotLost(t *testing.T) {
	dir, segs := segmentedStore(t)
	require.Len(t, segs, 3)
	b, err := os.ReadFile(segs[1])
	require.NoError(t, err)
	b[len(b)-5] ^= 1 // inside the last record of the middle segment
	require.NoError(t, os.WriteFile(segs[1], b, 0o644))

	code, stdout, stderr := runCmd(t, "repair", dir)
	want := "the store now ends at position 3: the events from there on, if any, were cut"
	if code != 0 || !strings.Contains(stdout, want) || strings.Contains(stdout, "lost") {
		t.Errorf("repair of damage in the middle segment: exit status %d, stdout %q, stderr %q; want 0 and %q, nothing said lost", code, stdout, stderr, want)
	}
	if code, _, stderr := runCmd(t, "verify", dir); code != 0 {
		t.Errorf("verify after repair: exit status %d, stderr %q", code, stderr)
	}
}
