package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAdviceIsARunnableCommand checks that the repair command that
// verify advises for a damaged store, pasted into a shell, repairs that
// store: it printed the directory as it is, so for a path with a space
// (~/Library/Application Support/...) the shell split it into two
// arguments and repair failed with bad usage, and for one starting with
// '-' repair took it for a flag.
func TestAdviceIsARunnableCommand(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, name := range []string{"my store", "-store", "it's $HOME"} {
		t.Run(name, func(t *testing.T) {
			src, seg := newStore(t)
			b, err := os.ReadFile(seg)
			require.NoError(t, err)
			b[60] ^= 1 // inside the first record
			require.NoError(t, os.WriteFile(seg, b, 0o644))
			parent := t.TempDir()
			dir := filepath.Join(parent, name)
			require.NoError(t, os.Rename(src, dir))
			// As the user gives it, relative to the working directory.
			t.Chdir(parent)
			code, _, stderr := runCmd(t, "verify", "--", name)
			require.Equal(t, 1, code, stderr)
			m := regexp.MustCompile("`(eventbus repair [^`]*)`").FindStringSubmatch(stderr)
			require.NotNil(t, m, "verify advised no repair: %q", stderr)
			// The words the shell makes of the advice.
			out, err := exec.Command(sh, "-c", "set -- "+m[1]+`; shift; for a; do printf '%s\000' "$a"; done`).Output()
			if err != nil {
				t.Fatalf("the advice %s is no valid shell command: %v", m[1], err)
			}
			args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
			code, stdout, stderr := runCmd(t, args...)
			if code != 0 || !strings.Contains(stdout, "repaired") {
				t.Errorf("the advice %s, run by a shell as %q: exit status %d, stdout %q, stderr %q; want it to repair %q", m[1], args, code, stdout, stderr, dir)
			}
		})
	}
}
