package eventbus_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestRepairFileStoreCrash proves what RepairFileStore's doc promises of a
// crash in the middle of a repair: it loses none of the bytes it cuts, and
// leaves a store that RepairFileStore repairs again. For each kind of
// damage, the test records a repair's file operations (recordingFS, from
// the crash model), then builds the disk that a power loss after each of
// them leaves (powerLoss, several times at each). On each such disk,
// RepairFileStore must then leave the state a repair without a crash
// leaves, and every byte of the damaged segments must still be in the
// store or in a repair directory: in the segment as it was, or in a copy
// of it, or cut from the segment with what was cut kept from there on.
func TestRepairFileStoreCrash(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, segs []string)
	}{
		// A repair copies what follows the flipped record, cuts the
		// segment there and moves the later segments aside.
		{"record damaged in the middle", func(t *testing.T, segs []string) { flipByte(t, segs[1], 0.5) }},
		{"record damaged in the first segment", func(t *testing.T, segs []string) { flipByte(t, segs[0], 0.8) }},
		// A repair rewrites the next segment with the state of the
		// streams in front, and names it in START.
		{"first segment missing", func(t *testing.T, segs []string) { require.NoError(t, os.Remove(segs[0])) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := startingStore(t)
			tc.damage(t, segments(t, dir))
			damaged := treeFiles(t, dir)

			clean := t.TempDir()
			writeFiles(t, clean, damaged)
			_, err := eventbus.RepairFileStore(clean)
			require.NoError(t, err, "RepairFileStore")
			want := repairedState(t, clean)

			recorded := t.TempDir()
			writeFiles(t, recorded, damaged)
			rfs := newRecordingFS(recorded, damaged, 0)
			first := len(rfs.ops)
			_, err = eventbus.RepairFileStoreFS(recorded, rfs)
			require.NoError(t, err, "RepairFileStore through recordingFS")
			ops := rfs.ops
			require.Greater(t, len(ops), first, "the repair did nothing")

			rng := rand.New(rand.NewPCG(uint64(len(ops)), 0x5eed))
			for k := first; k <= len(ops); k++ {
				for range 4 {
					files, desc := powerLoss(ops[:k], rng)
					at := fmt.Sprintf("crash after op %d of %d of the repair (%s)", k-first, len(ops)-first, desc)
					image := t.TempDir()
					writeFiles(t, image, files)
					if _, err := eventbus.RepairFileStoreFS(image, unsyncedFS{eventbus.OSFS}); err != nil {
						t.Fatalf("%s: RepairFileStore again: %v", at, err)
					}
					if msg := repairedState(t, image).differs(want, true); msg != "" {
						t.Fatalf("%s: after RepairFileStore again, the store differs from one repaired without a crash: %s", at, msg)
					}
					if msg := lostBytes(damaged, treeFiles(t, image)); msg != "" {
						t.Fatalf("%s: after RepairFileStore again: %s", at, msg)
					}
				}
			}
		})
	}
}

// flipByte flips a bit of the byte at fraction at of the file at path.
func flipByte(t *testing.T, path string, at float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[int(float64(len(b))*at)] ^= 0x10
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// treeFiles returns the files under dir, by path relative to it, but for
// its lock file, which is no part of the store.
func treeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err == nil {
			files[rel], err = os.ReadFile(path)
		}
		return err
	})
	require.NoError(t, err)
	return files
}

// repairedState opens the store in dir and returns its state.
func repairedState(t *testing.T, dir string) crashState {
	t.Helper()
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
	require.NoError(t, err, "OpenFileStore after RepairFileStore")
	defer s.Close()
	st, err := readCrashState(context.Background(), s)
	require.NoError(t, err, "read after RepairFileStore")
	return st
}

// lostBytes returns what is lost of the segments of damaged in the tree
// now, files by path, or "". A segment's bytes are kept if it is as it
// was; or if a repair directory holds a copy of it; or if the segment
// holds them up to an offset, and a repair directory holds the rest, in a
// file named for the segment and the offset.
func lostBytes(damaged, now map[string][]byte) string {
	var lost []string
	for _, name := range slices.Sorted(maps.Keys(damaged)) {
		if !strings.HasSuffix(name, ".log") {
			continue // START and LAST name segments; a repair rewrites them
		}
		was, is := damaged[name], now[name]
		kept := bytes.Equal(is, was)
		for path, b := range now {
			if kept {
				break
			}
			dir, base := filepath.Split(path)
			if !strings.HasPrefix(dir, "repair-") {
				continue
			}
			var off int
			switch {
			case base == name:
			case strings.HasPrefix(base, name+".from-"):
				if _, err := fmt.Sscanf(strings.TrimPrefix(base, name+".from-"), "%d", &off); err != nil || off > len(was) {
					continue
				}
			default:
				continue
			}
			kept = bytes.Equal(b, was[off:]) && len(is) >= off && bytes.Equal(is[:off], was[:off])
		}
		if !kept {
			lost = append(lost, fmt.Sprintf("%s (%d bytes, now %d): neither as it was, nor kept in a repair directory", name, len(was), len(is)))
		}
	}
	if lost == nil {
		return ""
	}
	return "bytes lost: " + strings.Join(lost, "; ")
}
