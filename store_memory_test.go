package eventbus_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

func openMemoryStore(t *testing.T) eventbus.Store {
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	return s
}

func TestMemoryStore(t *testing.T) {
	eventbustest.TestStore(t, openMemoryStore)
}

func TestNewMemoryStoreOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    *eventbus.MemoryStoreOptions
		wantErr error
	}{
		{"nil", nil, nil},
		{"zero", &eventbus.MemoryStoreOptions{}, nil},
		{"limits", &eventbus.MemoryStoreOptions{MaxEventSize: 10, MaxBatchSize: 100}, nil},
		{"negative event size", &eventbus.MemoryStoreOptions{MaxEventSize: -1}, eventbus.ErrInvalid},
		{"negative batch size", &eventbus.MemoryStoreOptions{MaxBatchSize: -1}, eventbus.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := eventbus.NewMemoryStore(tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewMemoryStore(%+v) = %v, want %v", tt.opts, err, tt.wantErr)
			}
			if err == nil {
				require.NoError(t, s.Close())
			}
		})
	}
}

func TestMemoryStoreLimits(t *testing.T) {
	s, err := eventbus.NewMemoryStore(&eventbus.MemoryStoreOptions{MaxEventSize: 10, MaxBatchSize: 15})
	require.NoError(t, err)
	defer s.Close()
	event := func(data string) eventbus.EventData {
		return eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(data)}
	}
	withMetadata := func(e eventbus.EventData, md eventbus.Metadata) eventbus.EventData { e.Metadata = md; return e }
	withEncoding := func(e eventbus.EventData, enc string) eventbus.EventData { e.Encoding = enc; return e }
	tests := []struct {
		name    string
		events  []eventbus.EventData
		wantErr error
	}{
		{"event at the limit", []eventbus.EventData{event("123456789")}, nil},
		{"event over the limit", []eventbus.EventData{event("1234567890")}, eventbus.ErrTooLarge},
		{"batch at the limit", []eventbus.EventData{event("1234567"), event("123456")}, nil},
		{"batch over the limit", []eventbus.EventData{event("1234567"), event("1234567")}, eventbus.ErrTooLarge},
		// The type, encoding, metadata and data count, as MaxEventSize says.
		{"metadata over the limit", []eventbus.EventData{withMetadata(event("1"), eventbus.Metadata{"k": "12345678"})}, eventbus.ErrTooLarge},
		{"encoding over the limit", []eventbus.EventData{withEncoding(event("123"), "deflate")}, eventbus.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), "s", eventbus.Any, tt.events...)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Append = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// MaxBatchSize bounds the sum over every stream of an AppendMulti.
	for _, tt := range []struct {
		name    string
		a, b    string
		wantErr error
	}{
		{"AppendMulti at the limit", "1234567", "123456", nil},
		{"AppendMulti over the limit", "1234567", "1234567", eventbus.ErrTooLarge},
	} {
		_, err := s.AppendMulti(t.Context(),
			eventbus.StreamAppend{Stream: "a", Events: []eventbus.EventData{event(tt.a)}},
			eventbus.StreamAppend{Stream: "b", Events: []eventbus.EventData{event(tt.b)}})
		if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
			t.Errorf("%s: AppendMulti = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestMemoryStoreAppendAllocs(t *testing.T) {
	s := openMemoryStore(t)
	defer s.Close()
	ctx := t.Context()
	const runs = 1000
	batches := make([][]eventbus.EventData, runs+1) // AllocsPerRun runs once more to warm up
	for i := range batches {
		batches[i] = []eventbus.EventData{{ID: eventbus.NewID(), Type: "t", Data: []byte("payload")}}
	}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		if _, err := s.Append(ctx, "s", eventbus.Any, batches[i]...); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs > 2 {
		t.Errorf("Append of one event makes %.1f allocations, want at most 2", allocs)
	}
}

// TestMemoryStoreTimeIsWallClock checks that a MemoryStore records an
// event's Time as a FileStore returns it: the wall clock's reading only,
// with no monotonic reading, which made the time print "m=+0.0038", differ
// with == from the same instant decoded from JSON or read from a
// FileStore, and MaxAge follow the monotonic clock in one store only.
func TestMemoryStoreTimeIsWallClock(t *testing.T) {
	s, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendBothWays(t, s, nil)
	for rec, err := range s.ReadAll(t.Context(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		if wall := rec.Time.Round(0); rec.Time != wall {
			t.Errorf("ReadAll: %s's Time = %v, want the wall clock's reading alone, %v", rec.Stream, rec.Time, wall)
		}
	}
}
