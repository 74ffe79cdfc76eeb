package main

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// heapWriter records the bytes of heap in use at its first write, after a
// garbage collection: what the command holds once it starts printing.
type heapWriter struct {
	bytes.Buffer
	heap uint64
}

func (w *heapWriter) Write(p []byte) (int, error) {
	if w.heap == 0 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.heap = ms.HeapAlloc
	}
	return w.Buffer.Write(p)
}

// TestTailStreams checks that tail holds no more than an event or so in
// memory, however many it prints, and prints them oldest first: it held
// every event it printed, with its data, so that tail -n with a large
// number took as much memory as the whole store.
func TestTailStreams(t *testing.T) {
	const events, size = 32, 256 << 10
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	// Random, so that it is printed in base64, as it is.
	r := rand.NewChaCha8([32]byte{})
	for range events {
		data := make([]byte, size)
		r.Read(data)
		_, err := s.Append(t.Context(), "big", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "blob", Data: data})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())

	for _, args := range [][]string{{"tail", "-n", "1000", dir}, {"tail", "-n", "1000", "-stream", "big", dir}} {
		var out heapWriter
		var errOut bytes.Buffer
		if code := run(t.Context(), args, &out, &errOut); code != 0 {
			t.Fatalf("eventbus %v: exit status %d, stderr %q", args, code, errOut.String())
		}
		if held := out.heap; held > events*size/2 {
			t.Errorf("eventbus %v held %d bytes of heap when it started printing, want less than half the %d bytes of the events' data", args, held, events*size)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		require.Len(t, lines, events)
		for i, line := range lines {
			if want := `"revision":` + strconv.Itoa(i) + `,`; !strings.Contains(line, want) {
				t.Fatalf("eventbus %v: line %d does not hold %s", args, i, want)
			}
		}
	}
}
