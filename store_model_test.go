package eventbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// TestStoreDoneContext checks that both stores check the context of a call
// before its arguments: a call with a done context and bad arguments fails
// with the context's error, as every call with a done context does.
func TestStoreDoneContext(t *testing.T) {
	mem, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	file := openFile(t, t.TempDir(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, s := range map[string]eventbus.Store{"MemoryStore": mem, "FileStore": file} {
		calls := map[string]error{
			"SetStreamMetadata(MaxAge -1s)": s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxAge: -time.Second}),
			`SetStreamMetadata("")`:         s.SetStreamMetadata(ctx, "", eventbus.StreamMetadata{}),
			`Delete("")`:                    s.Delete(ctx, "", eventbus.Any),
			`Tombstone("")`:                 s.Tombstone(ctx, "", eventbus.Any),
		}
		_, calls["Append(no events)"] = s.Append(ctx, "s", eventbus.Any)
		_, calls["AppendMulti()"] = s.AppendMulti(ctx)
		_, calls[`StreamInfo("")`] = s.StreamInfo(ctx, "")
		for call, err := range calls {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %s with a cancelled context = %v, want context.Canceled", name, call, err)
			}
		}
	}
}
