package eventbus_test

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	billingv1 "github.com/seed-a6f1faae/eventbus/testdata/samename/billing/v1"
	ordersv1 "github.com/seed-a6f1faae/eventbus/testdata/samename/orders/v1"
)

// Three versions of one event type: V1 has a full name, V2 splits it, V3
// adds a country.
type (
	userV1 struct{ Name string }
	userV2 struct{ First, Last string }
	userV3 struct {
		First, Last string
		Country     string
	}
	other struct{ N int }
)

func (userV1) EventType() string { return "user.created" }
func (userV2) EventType() string { return "user.created" }
func (userV3) EventType() string { return "user.created" }

func v1to2(v userV1) (userV2, error) {
	first, last, _ := strings.Cut(v.Name, " ")
	return userV2{First: first, Last: last}, nil
}

func v2to3(v userV2) (userV3, error) {
	return userV3{First: v.First, Last: v.Last, Country: "unknown"}, nil
}

// gobCodec is a Codec other than the default.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(v)
	return buf.Bytes(), err
}
func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}

func newUserRegistry(t testing.TB, opts *eventbus.RegistryOptions) *eventbus.Registry {
	t.Helper()
	r, err := eventbus.NewRegistry(opts)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[userV1](r, &eventbus.TypeOptions{Version: 1}))
	require.NoError(t, eventbus.Register[userV2](r, &eventbus.TypeOptions{Version: 2, Codec: gobCodec{}}))
	require.NoError(t, eventbus.Register[userV3](r, &eventbus.TypeOptions{Version: 3}))
	require.NoError(t, eventbus.Register[other](r, nil))
	require.NoError(t, eventbus.RegisterUpcaster(r, v1to2))
	require.NoError(t, eventbus.RegisterUpcaster(r, v2to3))
	return r
}

// TestCodecRoundTrip encodes random payloads of every version, with and
// without compression, and checks that decoding gives the upcast payload.
func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		letters := []rune("abcdefgh \u00e9\u4e16")
		b := make([]rune, rng.IntN(200))
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		return string(b)
	}
	for _, compress := range []int{0, 1, 64} {
		r := newUserRegistry(t, &eventbus.RegistryOptions{CompressAbove: compress})
		for i := range 300 {
			var in any
			var want userV3
			switch i % 3 {
			case 0:
				v := userV1{Name: word()}
				in = v
				v2, _ := v1to2(v)
				want, _ = v2to3(v2)
			case 1:
				v := userV2{First: word(), Last: word()}
				in = v
				want, _ = v2to3(v)
			default:
				want = userV3{First: word(), Last: word(), Country: word()}
				in = want
			}
			e, err := r.Encode(in)
			require.NoError(t, err)
			if e.Encoding != "" && compress == 0 {
				t.Fatalf("Encode(%+v) with no compression set Encoding %q", in, e.Encoding)
			}
			got, err := eventbus.Decode[userV3](r, e)
			if err != nil {
				t.Fatalf("Decode(Encode(%+v)) = %v", in, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("Decode(Encode(%+v)) (-want +got):\n%s", in, diff)
			}
			if _, err := eventbus.Decode[any](r, e); err != nil {
				t.Fatalf("Decode[any](Encode(%+v)) = %v", in, err)
			}
		}
	}
}

// TestRegistryConcurrentUse checks that a Registry is safe for concurrent
// use, as its doc says: one goroutine registers the versions of an event
// type and their upcasters while others encode and decode, events of a
// type registered before and of the type being registered. Run with
// -race; no test used a Registry from two goroutines before.
func TestRegistryConcurrentUse(t *testing.T) {
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 8})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[other](r, nil))
	require.NoError(t, eventbus.Register[userV1](r, nil))
	old, err := r.Encode(userV1{Name: "Ada Lovelace"})
	require.NoError(t, err)
	want := userV3{First: "Ada", Last: "Lovelace", Country: "unknown"}

	// The registrations start once the readers have, so that the race
	// detector sees them run alongside.
	var wg, started sync.WaitGroup
	started.Add(2)
	wg.Go(func() {
		started.Wait()
		for _, err := range []error{
			eventbus.Register[userV2](r, &eventbus.TypeOptions{Version: 2, Codec: gobCodec{}}),
			eventbus.RegisterUpcaster(r, v1to2),
			eventbus.Register[userV3](r, &eventbus.TypeOptions{Version: 3}),
			eventbus.RegisterUpcaster(r, v2to3),
		} {
			if err != nil {
				t.Errorf("registering: %v", err)
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			started.Done()
			for i := range 50 {
				e, err := r.Encode(other{N: i})
				if err != nil {
					t.Errorf("Encode(other{%d}) = %v", i, err)
					return
				}
				if got, err := eventbus.Decode[other](r, e); err != nil || got.N != i {
					t.Errorf("Decode(Encode(other{%d})) = %+v, %v", i, got, err)
					return
				}
				// Until the last upcaster is registered, an old event
				// decodes to an older version, or lacks an upcaster.
				if _, err := eventbus.Decode[any](r, old); err != nil && !errors.Is(err, eventbus.ErrUnknownEvent) {
					t.Errorf("Decode[any] of a version 1 event = %v", err)
					return
				}
				if _, err := r.Encode(userV1{Name: "Grace Hopper"}); err != nil {
					t.Errorf("Encode(userV1) = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := eventbus.Decode[userV3](r, old)
	require.NoError(t, err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode of a version 1 event after registering (-want +got):\n%s", diff)
	}
}

// TestRegisterAnyOrder registers the versions of an event type latest
// first, then the older ones: the latest version stays the one that
// Decode upcasts to, whatever the order of registration.
func TestRegisterAnyOrder(t *testing.T) {
	old, err := newUserRegistry(t, nil).Encode(userV1{Name: "Ada Lovelace"})
	require.NoError(t, err)
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[userV3](r, &eventbus.TypeOptions{Version: 3}))
	require.NoError(t, eventbus.Register[userV2](r, &eventbus.TypeOptions{Version: 2, Codec: gobCodec{}}))
	require.NoError(t, eventbus.Register[userV1](r, &eventbus.TypeOptions{Version: 1}))
	require.NoError(t, eventbus.RegisterUpcaster(r, v2to3))
	require.NoError(t, eventbus.RegisterUpcaster(r, v1to2))
	got, err := eventbus.Decode[userV3](r, old)
	want := userV3{First: "Ada", Last: "Lovelace", Country: "unknown"}
	if err != nil || got != want {
		t.Errorf("Decode[userV3](version 1) = %+v, %v, want %+v", got, err, want)
	}
}

func TestCodecCompresses(t *testing.T) {
	r := newUserRegistry(t, &eventbus.RegistryOptions{CompressAbove: 100})
	in := userV3{First: strings.Repeat("a", 10_000)}
	e, err := r.Encode(in)
	require.NoError(t, err)
	if e.Encoding != "deflate" || len(e.Data) > 1000 {
		t.Errorf("Encode of 10 KB of 'a' = %d bytes with Encoding %q, want deflate and much smaller", len(e.Data), e.Encoding)
	}
	small, err := r.Encode(other{N: 1})
	require.NoError(t, err)
	if small.Encoding != "" {
		t.Errorf("Encode of a small payload has Encoding %q, want none", small.Encoding)
	}

	// Random bytes do not compress: deflated, they would only grow.
	rr, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 100})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](rr, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	noise := make(raw, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	kept, err := rr.Encode(noise)
	require.NoError(t, err)
	if kept.Encoding != "" || !bytes.Equal(kept.Data, noise) {
		t.Errorf("Encode of %d random bytes = %d bytes with Encoding %q, want them as they are, since deflate makes them larger", len(noise), len(kept.Data), kept.Encoding)
	}

	// CompressAbove is a size that stays as it is: compressed are only
	// payloads larger than it, however well they compress.
	for _, tt := range []struct {
		size int
		want string
	}{{100, ""}, {101, "deflate"}} {
		e, err := rr.Encode(make(raw, tt.size))
		require.NoError(t, err)
		if e.Encoding != tt.want {
			t.Errorf("Encode of %d zeros with CompressAbove 100 has Encoding %q, want %q", tt.size, e.Encoding, tt.want)
		}
	}
}

// rawCodec is a Codec of raw payloads: their bytes as they are, copied
// on decode, since data may be shared with a store.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.(raw), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *v.(*raw) = bytes.Clone(data); return nil }

// raw is a payload of bytes, encoded by rawCodec.
type raw []byte

// TestCodecCompressesOnlyWhatShrinksTheEvent encodes payloads that deflate
// shrinks by a few bytes, fewer than its Encoding "deflate" adds to the
// size a store counts: Encode must keep them as they are, so that one that
// fits a store's MaxEventSize still fits.
func TestCodecCompressesOnlyWhatShrinksTheEvent(t *testing.T) {
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 1})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](r, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	deflated := func(b []byte) int {
		var buf bytes.Buffer
		w, err := flate.NewWriter(&buf, flate.DefaultCompression)
		require.NoError(t, err)
		_, err = w.Write(b)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		return buf.Len()
	}
	// Random bytes, which deflate makes larger, then a run of zeros, which
	// it makes smaller: the longer the run, the more it saves.
	rng := rand.New(rand.NewPCG(3, 4))
	noise := make([]byte, 1000)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	tested := 0
	for run := range 200 {
		in := append(bytes.Clone(noise), make([]byte, run)...)
		if saved := len(in) - deflated(in); saved <= 0 || saved >= len("deflate") {
			continue
		}
		tested++
		s, err := eventbus.NewMemoryStore(&eventbus.MemoryStoreOptions{MaxEventSize: len("raw") + len(in)})
		require.NoError(t, err)
		e, err := r.Encode(raw(in))
		require.NoError(t, err)
		if _, err := s.Append(t.Context(), "s", eventbus.Any, e); err != nil {
			t.Errorf("Append of Encode(%d bytes that deflate saves %d of) with Encoding %q = %v, want it to fit a MaxEventSize of its type and data", len(in), len(in)-deflated(in), e.Encoding, err)
		}
		require.NoError(t, s.Close())
	}
	require.NotZero(t, tested, "no payload that deflate shrinks by less than its Encoding")
}

// TestCodecCompressesWhatDecodes encodes, with compression on, a payload
// larger than Decode inflates: Encode must not compress it into an event
// that the store accepts and Decode then refuses.
func TestCodecCompressesWhatDecodes(t *testing.T) {
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 1})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](r, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	in := make(raw, 64<<20+1) // zeros, which compress well
	e, err := r.Encode(in)
	require.NoError(t, err)
	got, err := eventbus.Decode[raw](r, e)
	if err != nil || len(got) != len(in) {
		t.Errorf("Decode(Encode(%d bytes)) = %d bytes, %v; want them back (Encoding %q)", len(in), len(got), err, e.Encoding)
	}
}

// TestRegisterVersionLimit checks the bound of TypeOptions.Version that
// Register's doc gives: 1<<31, the highest version a Store keeps, is
// accepted and stamped on the events it encodes, and one more is refused
// with ErrInvalid.
func TestRegisterVersionLimit(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("an int cannot hold a version above 1<<31 here")
	}
	type highest struct{}
	type tooHigh struct{}
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	v := math.MaxInt32
	v++ // 1<<31, which a 32-bit int cannot hold as a constant
	require.ErrorIs(t, eventbus.Register[tooHigh](r, &eventbus.TypeOptions{Name: "limit", Version: v + 1}), eventbus.ErrInvalid)
	require.NoError(t, eventbus.Register[highest](r, &eventbus.TypeOptions{Name: "limit", Version: v}), "the highest version a store keeps")
	e, err := r.Encode(highest{})
	require.NoError(t, err)
	require.Equal(t, v, e.SchemaVersion)
}

func TestRegisterErrors(t *testing.T) {
	r := newUserRegistry(t, nil)
	type unnamed struct{}
	type sameName struct{}
	tests := []struct {
		name    string
		err     error
		wantErr error
	}{
		{"type twice", eventbus.Register[other](r, &eventbus.TypeOptions{Name: "x"}), eventbus.ErrDuplicate},
		{"name and version taken", eventbus.Register[sameName](r, &eventbus.TypeOptions{Name: "user.created", Version: 2}), eventbus.ErrDuplicate},
		{"bad name", eventbus.Register[unnamed](r, &eventbus.TypeOptions{Name: "a b"}), eventbus.ErrInvalid},
		{"negative version", eventbus.Register[unnamed](r, &eventbus.TypeOptions{Version: -1}), eventbus.ErrInvalid},
		{"interface type", eventbus.Register[fmt.Stringer](r, nil), eventbus.ErrInvalid},
		{"any", eventbus.Register[any](r, &eventbus.TypeOptions{Name: "anything"}), eventbus.ErrInvalid},
		{"upcaster twice", eventbus.RegisterUpcaster(r, v1to2), eventbus.ErrDuplicate},
		{"upcaster with a gap", eventbus.RegisterUpcaster(r, func(userV1) (userV3, error) { return userV3{}, nil }), eventbus.ErrInvalid},
		{"upcaster backwards", eventbus.RegisterUpcaster(r, func(userV3) (userV2, error) { return userV2{}, nil }), eventbus.ErrInvalid},
		{"upcaster to itself", eventbus.RegisterUpcaster(r, func(v userV2) (userV2, error) { return v, nil }), eventbus.ErrInvalid},
		{"upcaster across types", eventbus.RegisterUpcaster(r, func(other) (userV2, error) { return userV2{}, nil }), eventbus.ErrInvalid},
		{"upcaster of an unregistered type", eventbus.RegisterUpcaster(r, func(unnamed) (userV2, error) { return userV2{}, nil }), eventbus.ErrUnknownEvent},
		{"nil upcaster", eventbus.RegisterUpcaster[userV1, userV2](r, nil), eventbus.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.wantErr) {
				t.Errorf("got %v, want %v", tt.err, tt.wantErr)
			}
		})
	}
	if _, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: -1}); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("NewRegistry(CompressAbove -1) = %v, want ErrInvalid", err)
	}
}

// TestZeroRegistry checks that a Registry not made by NewRegistry is
// refused with an error wrapping ErrInvalid, as a nil one is, that names
// the call: Register panicked on its nil maps, and the errors of Register,
// RegisterUpcaster, Registry.Encode, Decode and LoadSnapshot said "nil
// Registry, or one not made by NewRegistry" and no more, where LoadSnapshot
// names itself for a nil store.
func TestZeroRegistry(t *testing.T) {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	for name, call := range map[string]func(r *eventbus.Registry) error{
		"Register": func(r *eventbus.Registry) error { return eventbus.Register[userV1](r, nil) },
		"RegisterUpcaster": func(r *eventbus.Registry) error {
			return eventbus.RegisterUpcaster(r, v1to2)
		},
		"Registry.Encode": func(r *eventbus.Registry) error { _, err := r.Encode(userV1{}); return err },
		"Decode": func(r *eventbus.Registry) error {
			_, err := eventbus.Decode[userV1](r, eventbus.EventData{Type: "user.created", Data: []byte(`{}`)})
			return err
		},
		"LoadSnapshot": func(r *eventbus.Registry) error {
			_, _, err := eventbus.LoadSnapshot[userV1](ctx, store, r, "user-1")
			return err
		},
		"SaveSnapshot": func(r *eventbus.Registry) error {
			return eventbus.SaveSnapshot(ctx, store, r, "user-1", eventbus.Snapshot[userV1]{Revision: 1})
		},
		"NewAggregate": func(r *eventbus.Registry) error {
			_, err := eventbus.NewAggregate(store, r, func(s int, _ userV1) int { return s }, nil)
			return err
		},
	} {
		for kind, r := range map[string]*eventbus.Registry{"nil": nil, "zero": new(eventbus.Registry)} {
			err := call(r)
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), name+": ") {
				t.Errorf("%s on a %s Registry = %v, want ErrInvalid naming %s", name, kind, err, name)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	r := newUserRegistry(t, nil)
	gap, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[userV1](gap, &eventbus.TypeOptions{Version: 1}))
	require.NoError(t, eventbus.Register[userV3](gap, &eventbus.TypeOptions{Version: 3}))
	failing, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[userV1](failing, &eventbus.TypeOptions{Version: 1}))
	require.NoError(t, eventbus.Register[userV2](failing, &eventbus.TypeOptions{Version: 2}))
	boom := errors.New("boom")
	require.NoError(t, eventbus.RegisterUpcaster(failing, func(userV1) (userV2, error) { return userV2{}, boom }))

	v1 := eventbus.EventData{Type: "user.created", SchemaVersion: 1, Data: []byte(`{"Name":"Ada L"}`)}
	with := func(f func(*eventbus.EventData)) eventbus.EventData { e := v1; f(&e); return e }
	tests := []struct {
		name    string
		r       *eventbus.Registry
		e       eventbus.EventData
		wantErr error
	}{
		{"unknown type", r, with(func(e *eventbus.EventData) { e.Type = "nope" }), eventbus.ErrUnknownEvent},
		{"unknown version", r, with(func(e *eventbus.EventData) { e.SchemaVersion = 4 }), eventbus.ErrUnknownEvent},
		{"negative version", r, with(func(e *eventbus.EventData) { e.SchemaVersion = -1 }), eventbus.ErrInvalid},
		{"missing upcaster", gap, v1, eventbus.ErrUnknownEvent},
		{"unknown encoding", r, with(func(e *eventbus.EventData) { e.Encoding = "zstd" }), eventbus.ErrInvalid},
		{"corrupt deflate", r, with(func(e *eventbus.EventData) { e.Encoding = "deflate" }), eventbus.ErrInvalid},
		{"bad JSON", r, with(func(e *eventbus.EventData) { e.Data = []byte("{") }), nil},
		{"failing upcaster", failing, v1, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eventbus.Decode[any](tt.r, tt.e)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Decode = %v, %v; want error %v", got, err, tt.wantErr)
			}
			if got != nil {
				t.Errorf("Decode returned %v with its error, want nil", got)
			}
		})
	}
	if _, err := eventbus.Decode[other](r, v1); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("Decode[other] of a user.created = %v, want ErrInvalid", err)
	}
	if _, err := r.Encode(struct{}{}); !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("Encode of an unregistered type = %v, want ErrUnknownEvent", err)
	}
}

func TestSnapshot(t *testing.T) {
	ctx := t.Context()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	r := newUserRegistry(t, nil)

	_, ok, err := eventbus.LoadSnapshot[userV3](ctx, s, r, "user-1")
	require.NoError(t, err)
	if ok {
		t.Errorf("LoadSnapshot before any save: ok, want none")
	}
	for rev := range uint64(3) {
		// A snapshot is usable only at a revision the stream has.
		_, err := s.Append(ctx, "user-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "user.renamed"})
		require.NoError(t, err)
		snap := eventbus.Snapshot[userV3]{Revision: rev, State: userV3{First: fmt.Sprint(rev)}}
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, r, "user-1", snap))
	}
	got, ok, err := eventbus.LoadSnapshot[userV3](ctx, s, r, "user-1")
	require.NoError(t, err)
	require.True(t, ok, "LoadSnapshot after saves")
	if diff := cmp.Diff(eventbus.Snapshot[userV3]{Revision: 2, State: userV3{First: "2"}}, got); diff != "" {
		t.Errorf("LoadSnapshot (-want +got):\n%s", diff)
	}
	for e, err := range s.ReadAll(ctx, nil) {
		require.NoError(t, err)
		if e.Stream != "user-1" {
			t.Errorf("ReadAll yielded snapshot %+v; snapshots live in system streams", e)
		}
	}

	// The state's Go type changes schema: the old snapshots are stale.
	type stateV4 struct{ First string }
	newer, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[stateV4](newer, &eventbus.TypeOptions{Name: "user.created", Version: 4}))
	_, ok, err = eventbus.LoadSnapshot[stateV4](ctx, s, newer, "user-1")
	require.NoError(t, err)
	if ok {
		t.Errorf("LoadSnapshot of a stale schema version: ok, want it ignored")
	}
	if _, _, err := eventbus.LoadSnapshot[other](ctx, s, newEmptyRegistry(t), "user-1"); !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("LoadSnapshot of an unregistered type = %v, want ErrUnknownEvent", err)
	}
}

func newEmptyRegistry(t *testing.T) *eventbus.Registry {
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	return r
}

// FuzzDecode decodes arbitrary events: Decode never panics, returns a
// payload of the latest version of the event's type or an error (and then
// no payload), and decodes a deflated payload as it decodes it plain.
func FuzzDecode(f *testing.F) {
	f.Add("user.created", 1, false, []byte(`{"Name":"Ada Lovelace"}`))
	f.Add("user.created", 3, false, []byte(`{"First":"Ada","Country":"uk"}`))
	f.Add("user.created", 2, false, []byte{})
	f.Add("other", 0, true, []byte(`{"N":1}`))
	f.Add("other", -1, false, []byte(`null`))
	r := newUserRegistry(f, nil)
	f.Fuzz(func(t *testing.T, typ string, version int, deflated bool, data []byte) {
		e := eventbus.EventData{Type: typ, SchemaVersion: version, Data: data}
		if deflated {
			e.Encoding = "deflate"
		}
		got, err := eventbus.Decode[any](r, e)
		if err != nil {
			if got != nil {
				t.Fatalf("Decode = %v with error %v", got, err)
			}
			return
		}
		switch got.(type) {
		case userV3:
			if typ != "user.created" {
				t.Fatalf("%q decoded to %T", typ, got)
			}
		case other:
			if typ != "other" {
				t.Fatalf("%q decoded to %T", typ, got)
			}
		default:
			t.Fatalf("Decode gave %T, not a latest version", got)
		}
		if deflated {
			return
		}
		var buf bytes.Buffer
		w, err := flate.NewWriter(&buf, flate.BestSpeed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		e.Data, e.Encoding = buf.Bytes(), "deflate"
		z, err := eventbus.Decode[any](r, e)
		if err != nil {
			t.Fatalf("Decode of the deflated payload = %v", err)
		}
		if diff := cmp.Diff(got, z); diff != "" {
			t.Fatalf("deflated decode differs (-plain +deflated):\n%s", diff)
		}
	})
}

// panicCodec panics in Marshal and Unmarshal, as a codec may on a value or
// bytes it does not expect.
type panicCodec struct{}

func (panicCodec) Marshal(any) ([]byte, error) { panic("marshal boom") }
func (panicCodec) Unmarshal([]byte, any) error { panic("unmarshal boom") }

// TestCodecPanics checks that a codec or upcaster that panics makes
// Encode or Decode return an error holding a *PanicError with the panic's
// value and naming the event type and version, instead of crashing the
// process: corrupt stored bytes are bad input like any other.
func TestCodecPanics(t *testing.T) {
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[userV1](r, &eventbus.TypeOptions{Version: 1}))
	require.NoError(t, eventbus.Register[userV2](r, &eventbus.TypeOptions{Version: 2}))
	require.NoError(t, eventbus.Register[other](r, &eventbus.TypeOptions{Name: "panicky", Codec: panicCodec{}}))
	require.NoError(t, eventbus.RegisterUpcaster(r, func(userV1) (userV2, error) { panic("upcast boom") }))

	tests := []struct {
		name      string
		call      func() (any, error)
		wantValue any
		wantMsg   string
	}{
		{"encode", func() (any, error) { e, err := r.Encode(other{N: 1}); return e.Data, err },
			"marshal boom", `encode "panicky" version 1`},
		{"decode", func() (any, error) {
			return eventbus.Decode[any](r, eventbus.EventData{Type: "panicky", Data: []byte(`{}`)})
		}, "unmarshal boom", `decode "panicky" version 1`},
		{"upcast", func() (any, error) {
			return eventbus.Decode[any](r, eventbus.EventData{Type: "user.created", SchemaVersion: 1, Data: []byte(`{}`)})
		}, "upcast boom", `upcast "user.created" from version 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			var pe *eventbus.PanicError
			if !errors.As(err, &pe) || pe.Value != tt.wantValue || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("%s with a panicking codec = %v, %v; want a *PanicError of %q naming %s", tt.name, got, err, tt.wantValue, tt.wantMsg)
			}
			if len(pe.Stack) == 0 {
				t.Errorf("%s: *PanicError has no stack", tt.name)
			}
			if got != nil && !reflect.ValueOf(got).IsZero() {
				t.Errorf("%s returned %v with its error, want nothing", tt.name, got)
			}
		})
	}
}

// nilNamed has an EventType method that panics on its zero value, which
// dereferences a nil pointer.
type nilNamed struct{ prefix *string }

func (v nilNamed) EventType() string { return *v.prefix + ".created" }

// TestRegisterEventTypePanics checks that Register and NewTopic return an
// error wrapping ErrInvalid, holding the panic, for a payload type whose
// EventType method panics on its zero value, instead of crashing the
// process: they have an error to return.
func TestRegisterEventTypePanics(t *testing.T) {
	r := newEmptyRegistry(t)
	if err := eventbus.Register[nilNamed](r, nil); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "nil pointer") {
		t.Errorf("Register of a type whose EventType panics = %v, want ErrInvalid naming the panic", err)
	}
	if err := eventbus.Register[nilNamed](r, &eventbus.TypeOptions{Name: "named"}); err != nil {
		t.Errorf("Register with a Name, which runs no EventType = %v, want nil", err)
	}
	b, err := eventbus.New(nil)
	require.NoError(t, err)
	defer b.Close()
	if _, err := eventbus.NewTopic[nilNamed](b, "t", nil); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("NewTopic of a type whose EventType panics = %v, want ErrInvalid", err)
	}
}

// TestRegisterTakenNameNamesItsType registers two Go types that take one
// event type name and version, as two packages' types of the same name do
// without an EventType method: the error must name the Go type that holds
// the name, which the caller did not register under it knowingly.
func TestRegisterTakenNameNamesItsType(t *testing.T) {
	r := newEmptyRegistry(t)
	type Created struct{ ID string }
	require.NoError(t, eventbus.Register[Created](r, nil))
	err := eventbus.Register[other](r, &eventbus.TypeOptions{Name: "Created"})
	if !errors.Is(err, eventbus.ErrDuplicate) || !strings.Contains(err.Error(), "eventbus_test.Created") {
		t.Errorf("Register[other] under the name of Created = %v, want ErrDuplicate naming eventbus_test.Created", err)
	}
}

// TestRegisterTakenNameSamePackageName registers the types of one name
// of two packages of one name (two generated "v1" packages, say), which
// take one default event type name: the error must tell the two apart by
// their import paths, where their package-qualified names read alike, as
// if one type were registered twice.
func TestRegisterTakenNameSamePackageName(t *testing.T) {
	r := newEmptyRegistry(t)
	require.NoError(t, eventbus.Register[ordersv1.Created](r, nil))
	err := eventbus.Register[*billingv1.Created](r, nil)
	for _, want := range []string{"eventbus/testdata/samename/orders/v1.Created", "*github.com/seed-a6f1faae/eventbus/testdata/samename/billing/v1.Created"} {
		if !errors.Is(err, eventbus.ErrDuplicate) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("Register[*billingv1.Created] after ordersv1.Created = %v, want ErrDuplicate naming %s", err, want)
		}
	}
}

// TestDecodeWrongTypeSamePackageName decodes an event of one package's
// Created into another package of the same name's Created: the error must
// tell the two apart by their import paths, where "decodes to v1.Created,
// not v1.Created" reads like no mismatch at all.
func TestDecodeWrongTypeSamePackageName(t *testing.T) {
	r := newEmptyRegistry(t)
	require.NoError(t, eventbus.Register[ordersv1.Created](r, &eventbus.TypeOptions{Name: "orders.created"}))
	require.NoError(t, eventbus.Register[billingv1.Created](r, &eventbus.TypeOptions{Name: "billing.created"}))
	e, err := r.Encode(ordersv1.Created{})
	require.NoError(t, err)
	_, err = eventbus.Decode[billingv1.Created](r, e)
	require.ErrorIs(t, err, eventbus.ErrInvalid)
	for _, want := range []string{"eventbus/testdata/samename/orders/v1.Created", "eventbus/testdata/samename/billing/v1.Created"} {
		require.ErrorContains(t, err, want)
	}
}

// TestDecodeDeflateBomb decodes a small deflated payload that inflates
// past the 64 MiB that Decode inflates: it gets an error wrapping
// ErrTooLarge, as documented, and no payload.
func TestDecodeDeflateBomb(t *testing.T) {
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](r, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	require.NoError(t, err)
	_, err = w.Write(make([]byte, 64<<20+1))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	got, err := eventbus.Decode[raw](r, eventbus.EventData{Type: "raw", Encoding: "deflate", Data: buf.Bytes()})
	if !errors.Is(err, eventbus.ErrTooLarge) || got != nil {
		t.Errorf("Decode of %d deflated bytes that inflate to 64 MiB + 1 = %d bytes, %v; want ErrTooLarge", buf.Len(), len(got), err)
	}
}

// shape is an interface type of snapshot states, which a Registry cannot
// register: LoadSnapshot[shape] cannot find a registration to load by.
type shape interface{ area() int }

func (v userV3) area() int { return len(v.First) }

// TestSaveSnapshotOfInterfaceType checks that SaveSnapshot refuses a state
// type T that LoadSnapshot cannot load, an interface type, with the error
// that LoadSnapshot gives: it saved the state under its dynamic type, and
// every LoadSnapshot[T] of the stream then failed.
func TestSaveSnapshotOfInterfaceType(t *testing.T) {
	ctx := t.Context()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	r := newUserRegistry(t, nil)
	_, err = s.Append(ctx, "user-1", eventbus.NoStream, eventbus.EventData{ID: eventbus.NewID(), Type: "user.renamed"})
	require.NoError(t, err)
	_, _, loadErr := eventbus.LoadSnapshot[shape](ctx, s, r, "user-1")
	require.ErrorIs(t, loadErr, eventbus.ErrUnknownEvent, "LoadSnapshot of an interface type")
	err = eventbus.SaveSnapshot(ctx, s, r, "user-1", eventbus.Snapshot[shape]{State: userV3{First: "Ada"}})
	if !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("SaveSnapshot of an interface type = %v, want ErrUnknownEvent, as LoadSnapshot gives", err)
	}
}

// TestDecodeDeflateTrailingData decodes deflated payloads followed by bytes
// that are not part of the stream, such as a second payload concatenated
// to the first: the data is corrupt, and Decode returns an error wrapping
// ErrInvalid rather than the first payload alone.
func TestDecodeDeflateTrailingData(t *testing.T) {
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 1})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](r, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	first, err := r.Encode(raw(strings.Repeat("first ", 100)))
	require.NoError(t, err)
	second, err := r.Encode(raw(strings.Repeat("second ", 100)))
	require.NoError(t, err)
	require.Equal(t, "deflate", first.Encoding)
	for name, tail := range map[string][]byte{
		"second payload": second.Data,
		"one byte":       {0},
		"text":           []byte("garbage"),
	} {
		e := first
		e.Data = append(bytes.Clone(first.Data), tail...)
		got, err := eventbus.Decode[raw](r, e)
		if !errors.Is(err, eventbus.ErrInvalid) || got != nil {
			t.Errorf("%s: Decode = %d bytes, %v; want ErrInvalid", name, len(got), err)
		}
	}
	got, err := eventbus.Decode[raw](r, first)
	require.NoError(t, err)
	require.Equal(t, raw(strings.Repeat("first ", 100)), got)
}

// TestUnregisteredInterfaceTypeSaysSo gives an interface type, which no
// registry holds, where a registered one is needed (the state of
// snapshots, a StoreTopic's payload), and a nil payload to Encode: each
// error wraps ErrUnknownEvent and names the type, or says that the payload
// is nil, where a nil interface value has no Go type to name.
func TestUnregisteredInterfaceTypeSaysSo(t *testing.T) {
	ctx := t.Context()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	r := newUserRegistry(t, nil)
	b, err := eventbus.New(nil)
	require.NoError(t, err)
	defer b.Close()
	evolve := func(st shape, _ any) shape { return st }
	tests := []struct {
		name string
		call func() error
		says string
	}{
		{"NewAggregate", func() error {
			_, err := eventbus.NewAggregate(s, r, evolve, &eventbus.AggregateOptions{SnapshotEvery: 1})
			return err
		}, "eventbus_test.shape is an interface"},
		{"SaveSnapshot", func() error {
			return eventbus.SaveSnapshot(ctx, s, r, "user-1", eventbus.Snapshot[shape]{State: userV3{}})
		}, "eventbus_test.shape is an interface"},
		{"LoadSnapshot", func() error {
			_, _, err := eventbus.LoadSnapshot[shape](ctx, s, r, "user-1")
			return err
		}, "eventbus_test.shape is an interface"},
		{"NewStoreTopic", func() error {
			_, err := eventbus.NewStoreTopic[shape](b, s, r, "users")
			return err
		}, "eventbus_test.shape is an interface"},
		{"Encode", func() error {
			_, err := r.Encode(nil)
			return err
		}, "nil payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, eventbus.ErrUnknownEvent) || !strings.Contains(err.Error(), tt.says) || strings.Contains(err.Error(), "<nil>") {
				t.Errorf("%s = %v, want ErrUnknownEvent saying %q", tt.name, err, tt.says)
			}
		})
	}
}

// nullable is a state registered as a pointer, whose nil value is a state
// of its own.
type nullable struct{ N int }

// TestDecodeNull checks what Decode's doc says of a payload that the codec
// decodes to a zero value, such as JSON's null: no error, and that value
// (a nil pointer for a pointer type, the zero struct for a struct); and
// that a snapshot of a nil pointer state, which encodes to null, loads
// back as one, as an Aggregate of a pointer state relies on. No test
// proved either: a Decode that refused null passed every test.
func TestDecodeNull(t *testing.T) {
	r := newEmptyRegistry(t)
	require.NoError(t, eventbus.Register[*nullable](r, nil))
	require.NoError(t, eventbus.Register[other](r, nil))

	ptr, err := eventbus.Decode[*nullable](r, eventbus.EventData{Type: "nullable", Data: []byte("null")})
	if err != nil || ptr != nil {
		t.Errorf("Decode[*nullable](null) = %v, %v, want nil, nil", ptr, err)
	}
	v, err := eventbus.Decode[any](r, eventbus.EventData{Type: "nullable", Data: []byte("null")})
	if p, ok := v.(*nullable); err != nil || !ok || p != nil {
		t.Errorf("Decode[any](null) = %#v, %v, want a nil *nullable", v, err)
	}
	o, err := eventbus.Decode[other](r, eventbus.EventData{Type: "other", Data: []byte("null")})
	if err != nil || o != (other{}) {
		t.Errorf("Decode[other](null) = %v, %v, want the zero other", o, err)
	}

	ctx := t.Context()
	s := openMemoryStore(t)
	defer s.Close()
	e, err := r.Encode(&nullable{N: 1})
	require.NoError(t, err)
	_, err = s.Append(ctx, "n-1", eventbus.NoStream, e)
	require.NoError(t, err)
	require.NoError(t, eventbus.SaveSnapshot(ctx, s, r, "n-1", eventbus.Snapshot[*nullable]{Revision: 0}))
	snap, ok, err := eventbus.LoadSnapshot[*nullable](ctx, s, r, "n-1")
	if err != nil || !ok || snap.State != nil || snap.Revision != 0 {
		t.Errorf("LoadSnapshot of a nil state = %+v, %v, %v, want a nil state at revision 0", snap, ok, err)
	}
}

// TestDecompress checks that EventData.Decompress gives the bytes that
// the codec encoded, as Decode would hand them to it, for plain and
// deflated Data, without a registration of the type, and refuses an
// unknown Encoding or corrupt deflated Data with an error wrapping
// ErrInvalid.
func TestDecompress(t *testing.T) {
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 1})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[raw](r, &eventbus.TypeOptions{Name: "raw", Codec: rawCodec{}}))
	payload := strings.Repeat("payload ", 100)
	deflated, err := r.Encode(raw(payload))
	require.NoError(t, err)
	require.Equal(t, "deflate", deflated.Encoding)
	trailing := deflated
	trailing.Data = append(bytes.Clone(deflated.Data), 0)
	tests := []struct {
		name    string
		e       eventbus.EventData
		want    string
		wantErr error
	}{
		{"plain", eventbus.EventData{Type: "unregistered", Data: []byte(payload)}, payload, nil},
		{"deflate", deflated, payload, nil},
		{"unknown encoding", eventbus.EventData{Type: "raw", Encoding: "zstd", Data: []byte(payload)}, "", eventbus.ErrInvalid},
		{"corrupt deflate", eventbus.EventData{Type: "raw", Encoding: "deflate", Data: []byte(payload)}, "", eventbus.ErrInvalid},
		{"bytes after the deflate stream", trailing, "", eventbus.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.e.Decompress()
			if string(got) != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("Decompress() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
