package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestDeletedSystemStream checks what read -stream says of a soft-deleted
// system stream (named $...): that its events stay in the log, "printed by
// read without -stream", which leaves out every system stream and so
// prints none of them. The user following the advice finds nothing.
func TestDeletedSystemStream(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	for _, stream := range []string{"$snapshot-order-1", "order-1"} {
		_, err = s.Append(t.Context(), stream, eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(`{}`)})
		require.NoError(t, err)
		require.NoError(t, s.Delete(t.Context(), stream, eventbus.Any))
	}
	require.NoError(t, s.Close())
	_, all, stderr := runCmd(t, "read", dir)
	require.Contains(t, all, `"stream":"order-1"`, stderr)
	for _, stream := range []string{"$snapshot-order-1", "order-1"} {
		code, _, stderr := runCmd(t, "read", "-stream", stream, dir)
		require.Equal(t, 1, code, stderr)
		if strings.Contains(stderr, "printed by read without -stream") && !strings.Contains(all, `"stream":"`+stream+`"`) {
			t.Errorf("eventbus read -stream %s said %q, but read without -stream printed none of its events:\n%s", stream, stderr, all)
		}
	}
}
