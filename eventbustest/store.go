package eventbustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestStore runs the conformance suite of [eventbus.Store] against the
// stores made by open, one new empty store per subtest. Open may use t
// (t.TempDir, t.Cleanup); TestStore closes each store when its subtest
// ends, so Close must be idempotent. Some subtests call open inside a
// [synctest.Test] bubble, where time is fake and every goroutine the store
// starts must have exited once the store is closed; there a subscription
// that waits for events must block durably, as synctest defines it (on a
// channel or a sync.Cond, not on I/O), or the subtests' deadlines, on the
// fake clock, never pass, and a store that loses events hangs the test
// instead of failing it. The stores must have
// the default limits: events up to 1 MiB, appends up to 16 MiB. A nil open,
// or a nil Store from it, fails the test.
func TestStore(t *testing.T, open func(t *testing.T) eventbus.Store) {
	t.Helper()
	if open == nil {
		t.Fatalf("eventbustest: TestStore: nil open function")
	}
	tests := []struct {
		name string
		test func(t *testing.T, open func(t *testing.T) eventbus.Store)
	}{
		{"AppendAndRead", testAppendAndRead},
		{"CopiesInput", testCopiesInput},
		{"InvalidInput", testInvalidInput},
		{"TooLarge", testTooLarge},
		{"ExpectedRevision", testExpectedRevision},
		{"Idempotence", testIdempotence},
		{"ConcurrentExpectedRevision", testConcurrentExpectedRevision},
		{"ConcurrentAppends", testConcurrentAppends},
		{"AppendMulti", testAppendMulti},
		{"ReadStream", testReadStream},
		{"ReadAll", testReadAll},
		{"ReadsAreLazy", testReadsAreLazy},
		{"KeepsOptions", testKeepsOptions},
		{"Delete", testDelete},
		{"Tombstone", testTombstone},
		{"MaxCount", testMaxCount},
		{"MaxAge", testMaxAge},
		{"WholeEvents", testWholeEvents},
		{"Subscribe", testSubscribe},
		{"SubscribeSwitchOver", testSubscribeSwitchOver},
		{"SubscribeSlowConsumer", testSubscribeSlowConsumer},
		{"SubscribeEnds", testSubscribeEnds},
		{"CaughtUpUnlocked", testCaughtUpUnlocked},
		{"Close", testClose},
		{"CloseRunningReads", testCloseRunningReads},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.test(t, func(t *testing.T) eventbus.Store {
				t.Helper()
				s := open(t)
				if s == nil {
					t.Fatalf("eventbustest: TestStore: open returned a nil Store")
				}
				t.Cleanup(func() {
					if err := s.Close(); err != nil {
						t.Errorf("Close() = %v", err)
					}
				})
				return s
			})
		})
	}
}

// rec is the part of a RecordedEvent that tests compare.
type rec struct {
	Stream             string
	Revision, Position uint64
	Type, Data         string
}

func toRec(e eventbus.RecordedEvent) rec {
	return rec{e.Stream, e.Revision, e.Position, e.Type, string(e.Data)}
}

func summary(events []eventbus.RecordedEvent) []rec {
	out := make([]rec, len(events))
	for i, e := range events {
		out[i] = toRec(e)
	}
	return out
}

// events returns n events of type typ whose data are prefix0, prefix1, ...
func events(n int, typ, prefix string) []eventbus.EventData {
	evs := make([]eventbus.EventData, n)
	for i := range evs {
		evs[i] = eventbus.EventData{ID: eventbus.NewID(), Type: typ, Data: fmt.Appendf(nil, "%s%d", prefix, i)}
	}
	return evs
}

func collect(t *testing.T, seq func(func(eventbus.RecordedEvent, error) bool)) []eventbus.RecordedEvent {
	t.Helper()
	var out []eventbus.RecordedEvent
	for e, err := range seq {
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

func mustAppend(t *testing.T, s eventbus.Store, stream string, expected eventbus.ExpectedRevision, evs ...eventbus.EventData) eventbus.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), stream, expected, evs...)
	require.NoError(t, err, "Append(%q, %v)", stream, expected)
	return res
}

func testAppendAndRead(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	in := []eventbus.EventData{{
		ID: eventbus.NewID(), Type: "user.created", SchemaVersion: 3, Encoding: "deflate",
		CorrelationID: eventbus.NewID(), CausationID: eventbus.NewID(),
		Metadata: eventbus.Metadata{"traceparent": "00-abc"}, Data: []byte(`{"name":"ada"}`),
	}, {
		ID: eventbus.NewID(), Type: "user.renamed", Data: []byte(`{"name":"ada l."}`),
	}}
	before := time.Now()
	res := mustAppend(t, s, "user-1", eventbus.NoStream, in...)
	if diff := cmp.Diff(eventbus.AppendResult{Revision: 1, Position: 1}, res); diff != "" {
		t.Errorf("Append result (-want +got):\n%s", diff)
	}
	res = mustAppend(t, s, "user-2", eventbus.NoStream, events(1, "user.created", "b")...)
	if diff := cmp.Diff(eventbus.AppendResult{Revision: 0, Position: 2}, res); diff != "" {
		t.Errorf("Append result (-want +got):\n%s", diff)
	}

	got := collect(t, s.ReadStream(ctx, "user-1", nil))
	require.Len(t, got, 2)
	want := []eventbus.RecordedEvent{
		{EventData: in[0], Stream: "user-1", Revision: 0, Position: 0},
		{EventData: in[1], Stream: "user-1", Revision: 1, Position: 1},
	}
	want[1].SchemaVersion = 1 // zero means 1
	for i := range got {
		if got[i].Time.Before(before.Truncate(time.Millisecond)) {
			t.Errorf("event %d: Time %v is before the append at %v", i, got[i].Time, before)
		}
		want[i].Time = got[i].Time
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ReadStream (-want +got):\n%s", diff)
	}
	if !got[1].Time.Equal(got[0].Time) {
		t.Errorf("the events of one Append have Times %v and %v, want one Time", got[0].Time, got[1].Time)
	}

	info, err := s.StreamInfo(ctx, "user-1")
	require.NoError(t, err)
	if diff := cmp.Diff(eventbus.StreamInfo{Exists: true, Revision: 1}, info); diff != "" {
		t.Errorf("StreamInfo (-want +got):\n%s", diff)
	}
	info, err = s.StreamInfo(ctx, "nobody")
	require.NoError(t, err)
	if diff := cmp.Diff(eventbus.StreamInfo{}, info); diff != "" {
		t.Errorf("StreamInfo of a new stream (-want +got):\n%s", diff)
	}
	if got := collect(t, s.ReadStream(ctx, "nobody", nil)); len(got) != 0 {
		t.Errorf("ReadStream of a new stream = %v, want nothing", summary(got))
	}

	// Any non-empty UTF-8 string of at most 1,024 bytes names a stream.
	for _, name := range []string{strings.Repeat("é", 512), "a b/c:d\u00e9\x00"} {
		mustAppend(t, s, name, eventbus.NoStream, events(1, "t", "n")...)
		if got := collect(t, s.ReadStream(ctx, name, nil)); len(got) != 1 || got[0].Stream != name {
			t.Errorf("ReadStream of %q (%d bytes) = %v, want its event", name, len(name), summary(got))
		}
	}

	// An event type is 1 to 249 letters, digits, '.', '_' and '-'.
	longType := "aZ09._-" + strings.Repeat("t", 249-7)
	mustAppend(t, s, "long type", eventbus.NoStream, eventbus.EventData{ID: eventbus.NewID(), Type: longType})
	if got := collect(t, s.ReadStream(ctx, "long type", nil)); len(got) != 1 || got[0].Type != longType {
		t.Errorf("ReadStream of an event whose type is 249 bytes = %v, want it", summary(got))
	}

	// A schema version of up to 2^31 is kept, where an int holds it.
	if top := int64(1) << 31; int64(math.MaxInt) >= top {
		e := events(1, "t", "top")[0]
		e.SchemaVersion = int(top)
		mustAppend(t, s, "top", eventbus.NoStream, e)
		if got := collect(t, s.ReadStream(ctx, "top", nil)); len(got) != 1 || got[0].SchemaVersion != int(top) {
			t.Errorf("ReadStream of an event of SchemaVersion 2^31 = %+v, want it", got)
		}
	}
}

func testCopiesInput(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	// Each call appends to the stream named after it.
	for _, call := range []string{"Append", "AppendMulti"} {
		in := events(1, "t", "original")
		in[0].Metadata = eventbus.Metadata{"k": "v"}
		var err error
		if call == "Append" {
			_, err = s.Append(t.Context(), call, eventbus.Any, in...)
		} else {
			_, err = s.AppendMulti(t.Context(), eventbus.StreamAppend{Stream: call, Events: in})
		}
		require.NoError(t, err, call)
		copy(in[0].Data, "XXXXXXXX")
		in[0].Metadata["k"] = "changed"
		got := collect(t, s.ReadStream(t.Context(), call, nil))
		require.Len(t, got, 1)
		if string(got[0].Data) != "original0" || got[0].Metadata["k"] != "v" {
			t.Errorf("after changing the event given to %s, read Data %q and Metadata %v, want %q and k=v", call, got[0].Data, got[0].Metadata, "original0")
		}
	}

	// A read event's Data has no spare capacity: appending to it, which
	// does not modify it, writes past its length, as this does, and must
	// not write over the next event's Data where the store keeps the two
	// side by side.
	mustAppend(t, s, "pair", eventbus.Any, events(2, "t", "pair")...)
	got := collect(t, s.ReadStream(t.Context(), "pair", nil))
	require.Len(t, got, 2)
	first := got[0].Data
	for i := len(first); i < cap(first); i++ {
		first[:cap(first)][i] = 'X'
	}
	if string(got[1].Data) != "pair1" {
		t.Errorf("after writing past the first event's Data, read the second's as %q, want %q", got[1].Data, "pair1")
	}
}

// overVersion is a schema version over 2^31, which stores refuse (on 32-bit
// platforms the conversion to int makes it negative, which they refuse too).
var overVersion = int64(1)<<31 + 1

func testInvalidInput(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	good := events(1, "t", "x")[0]
	withID := func(e eventbus.EventData, id eventbus.ID) eventbus.EventData { e.ID = id; return e }
	withType := func(e eventbus.EventData, typ string) eventbus.EventData { e.Type = typ; return e }
	withVersion := func(e eventbus.EventData, v int) eventbus.EventData { e.SchemaVersion = v; return e }
	// A large batch, whose IDs a store may check with a map rather than
	// pair by pair, holding one ID twice, far apart.
	large := events(40, "t", "x")
	large[35].ID = large[3].ID
	tests := []struct {
		name   string
		stream string
		events []eventbus.EventData
	}{
		{"empty stream name", "", []eventbus.EventData{good}},
		{"stream name not UTF-8", "s\xff", []eventbus.EventData{good}},
		{"stream name too long", strings.Repeat("s", 1025), []eventbus.EventData{good}},
		{"no events", "s", nil},
		{"zero ID", "s", []eventbus.EventData{good, withID(good, eventbus.ID{})}},
		{"empty type", "s", []eventbus.EventData{withType(good, "")}},
		{"bad type", "s", []eventbus.EventData{withType(good, "a b")}},
		{"type too long", "s", []eventbus.EventData{withType(good, strings.Repeat("t", 250))}},
		{"negative schema version", "s", []eventbus.EventData{withVersion(good, -1)}},
		{"schema version over 2^31", "s", []eventbus.EventData{withVersion(good, int(overVersion))}},
		{"same ID twice", "s", []eventbus.EventData{good, withType(good, "u")}},
		{"same ID twice in a large batch", "s", large},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(ctx, tt.stream, eventbus.Any, tt.events...)
			if !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("Append = %v, want ErrInvalid", err)
			}
			_, err = s.AppendMulti(ctx, eventbus.StreamAppend{Stream: tt.stream, Events: tt.events})
			if !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("AppendMulti = %v, want ErrInvalid", err)
			}
			// Every part is checked before any is committed.
			_, err = s.AppendMulti(ctx,
				eventbus.StreamAppend{Stream: "valid", Events: events(1, "t", "valid")},
				eventbus.StreamAppend{Stream: tt.stream, Events: tt.events})
			if !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("AppendMulti after a valid part = %v, want ErrInvalid", err)
			}
			if got := collect(t, s.ReadStream(ctx, "valid", nil)); len(got) != 0 {
				t.Errorf("AppendMulti of a valid part and an invalid one wrote the valid part: %v", summary(got))
			}
		})
	}
	// Every call that names a stream refuses a name that names none, as
	// Append does: a store that took one would keep a stream no other
	// call can reach, or report one that cannot exist.
	for _, bad := range []string{"", "s\xff", strings.Repeat("s", 1025)} {
		onlyError(t, fmt.Sprintf("ReadStream(%.20q)", bad), s.ReadStream(ctx, bad, nil), eventbus.ErrInvalid)
		if err := s.Delete(ctx, bad, eventbus.Any); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Delete(%.20q) = %v, want ErrInvalid", bad, err)
		}
		if err := s.Tombstone(ctx, bad, eventbus.Any); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Tombstone(%.20q) = %v, want ErrInvalid", bad, err)
		}
		if err := s.SetStreamMetadata(ctx, bad, eventbus.StreamMetadata{MaxCount: 1}); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("SetStreamMetadata(%.20q) = %v, want ErrInvalid", bad, err)
		}
		if _, err := s.StreamInfo(ctx, bad); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("StreamInfo(%.20q) = %v, want ErrInvalid", bad, err)
		}
	}
	onlyError(t, "ReadStream(Limit -1)", s.ReadStream(ctx, "s", &eventbus.ReadOptions{Limit: -1}), eventbus.ErrInvalid)
	onlyError(t, "ReadAll(Limit -1)", s.ReadAll(ctx, &eventbus.ReadOptions{Limit: -1}), eventbus.ErrInvalid)
	onlyError(t, "ReadStream(Direction 2)", s.ReadStream(ctx, "s", &eventbus.ReadOptions{Direction: 2}), eventbus.ErrInvalid)
	onlyError(t, "ReadAll(Direction 2)", s.ReadAll(ctx, &eventbus.ReadOptions{Direction: 2}), eventbus.ErrInvalid)
	if err := s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxAge: -time.Second}); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("SetStreamMetadata(MaxAge -1s) = %v, want ErrInvalid", err)
	}
	testNilContext(t, s, good)
	if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 0 {
		t.Errorf("after invalid appends, ReadAll = %v, want nothing", summary(got))
	}
}

// testNilContext checks that every call of s refuses a nil context with
// ErrInvalid, without a panic.
func testNilContext(t *testing.T, s eventbus.Store, e eventbus.EventData) {
	var nilCtx context.Context
	check := func(call string, err error) {
		t.Helper()
		if !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("%s with a nil context = %v, want ErrInvalid", call, err)
		}
	}
	_, err := s.Append(nilCtx, "s", eventbus.Any, e)
	check("Append", err)
	_, err = s.AppendMulti(nilCtx, eventbus.StreamAppend{Stream: "s", Events: []eventbus.EventData{e}})
	check("AppendMulti", err)
	check("Delete", s.Delete(nilCtx, "s", eventbus.Any))
	check("Tombstone", s.Tombstone(nilCtx, "s", eventbus.Any))
	check("SetStreamMetadata", s.SetStreamMetadata(nilCtx, "s", eventbus.StreamMetadata{MaxCount: 1}))
	_, err = s.StreamInfo(nilCtx, "s")
	check("StreamInfo", err)
	reads := map[string]iter.Seq2[eventbus.RecordedEvent, error]{
		"ReadStream": s.ReadStream(nilCtx, "s", nil),
		"ReadAll":    s.ReadAll(nilCtx, nil),
		"Subscribe":  s.Subscribe(nilCtx, nil),
	}
	for call, seq := range reads {
		n := 0
		for _, err := range seq {
			check(call, err)
			if n++; n > 1 {
				t.Errorf("%s with a nil context yields more than its error", call)
				break
			}
		}
		if n == 0 {
			t.Errorf("%s with a nil context yields nothing, want ErrInvalid", call)
		}
	}
}

func testTooLarge(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	big := make([]byte, 1<<20)
	huge := events(1, "t", "")
	huge[0].Data = big
	almost := make([]byte, 1<<20-100)
	var batch []eventbus.EventData
	for range 17 {
		batch = append(batch, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: almost})
	}
	tests := []struct {
		name   string
		events []eventbus.EventData
	}{
		{"event over 1 MiB", append(events(1, "t", "ok"), huge...)},
		{"batch over 16 MiB", batch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(ctx, "s", eventbus.Any, tt.events...)
			if !errors.Is(err, eventbus.ErrTooLarge) {
				t.Errorf("Append = %v, want ErrTooLarge", err)
			}
		})
	}
	if _, err := s.AppendMulti(ctx,
		eventbus.StreamAppend{Stream: "a", Events: batch[:9]},
		eventbus.StreamAppend{Stream: "b", Events: batch[9:]},
	); !errors.Is(err, eventbus.ErrTooLarge) {
		t.Errorf("AppendMulti over 16 MiB in all = %v, want ErrTooLarge", err)
	}
	if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 0 {
		t.Errorf("after appends too large, ReadAll = %v, want nothing", summary(got))
	}
	mustAppend(t, s, "s", eventbus.NoStream, batch[:15]...)
}

func testExpectedRevision(t *testing.T, open func(t *testing.T) eventbus.Store) {
	noStream := eventbus.NoStream
	tests := []struct {
		state    string // new, rev1 (revisions 0 and 1), deleted (rev1 then soft-deleted)
		expected eventbus.ExpectedRevision
		actual   *eventbus.ExpectedRevision // nil: the append succeeds
	}{
		{"new", eventbus.Any, nil},
		{"new", eventbus.NoStream, nil},
		{"new", eventbus.StreamExists, &noStream},
		{"new", eventbus.Exact(0), &noStream},
		{"rev1", eventbus.Any, nil},
		{"rev1", eventbus.NoStream, ptr(eventbus.Exact(1))},
		{"rev1", eventbus.StreamExists, nil},
		{"rev1", eventbus.Exact(1), nil},
		{"rev1", eventbus.Exact(0), ptr(eventbus.Exact(1))},
		{"rev1", eventbus.Exact(2), ptr(eventbus.Exact(1))},
		{"deleted", eventbus.Any, nil},
		{"deleted", eventbus.NoStream, nil},
		{"deleted", eventbus.StreamExists, &noStream},
		{"deleted", eventbus.Exact(1), &noStream},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.state, tt.expected), func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			if tt.state != "new" {
				mustAppend(t, s, "s", eventbus.NoStream, events(2, "t", "old")...)
			}
			if tt.state == "deleted" {
				require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
			}
			_, err := s.Append(ctx, "s", tt.expected, events(1, "t", "new")...)
			if tt.actual == nil {
				if err != nil {
					t.Fatalf("Append(%v) = %v, want success", tt.expected, err)
				}
				return
			}
			var wev *eventbus.WrongExpectedVersionError
			if !errors.As(err, &wev) || !errors.Is(err, eventbus.ErrWrongExpectedVersion) {
				t.Fatalf("Append(%v) = %v, want a *WrongExpectedVersionError", tt.expected, err)
			}
			want := eventbus.WrongExpectedVersionError{Stream: "s", Expected: tt.expected, Actual: *tt.actual}
			if diff := cmp.Diff(want, *wev, cmp.Comparer(func(a, b eventbus.ExpectedRevision) bool { return a == b })); diff != "" {
				t.Errorf("Append(%v) error (-want +got):\n%s", tt.expected, diff)
			}
			if err := s.Delete(ctx, "s", tt.expected); !errors.Is(err, eventbus.ErrWrongExpectedVersion) {
				t.Errorf("Delete(%v) = %v, want ErrWrongExpectedVersion", tt.expected, err)
			}
			// A tombstone cannot be undone: one in the wrong state would
			// delete forever what another writer has just appended.
			if err := s.Tombstone(ctx, "s", tt.expected); !errors.Is(err, eventbus.ErrWrongExpectedVersion) {
				t.Errorf("Tombstone(%v) = %v, want ErrWrongExpectedVersion", tt.expected, err)
			}
			if info, err := s.StreamInfo(ctx, "s"); err != nil || info.Tombstoned {
				t.Errorf("after a Tombstone(%v) in the wrong state, StreamInfo = %+v, %v; want the stream not tombstoned", tt.expected, info, err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// onlyError checks that seq yields one error, matching want, and nothing
// else: a read that yields nothing would pass a loop that checks each error.
func onlyError(t *testing.T, call string, seq iter.Seq2[eventbus.RecordedEvent, error], want error) {
	t.Helper()
	var errs []error
	for _, err := range seq {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], want) {
		t.Errorf("%s yielded %v, want %v only", call, errs, want)
	}
}

// idempotenceWindow is how many of a stream's last events, at least, a
// retried append with Any or StreamExists is looked for in.
const idempotenceWindow = 10_000

func testIdempotence(t *testing.T, open func(t *testing.T) eventbus.Store) {
	tests := []struct {
		name     string
		prefix   bool                      // an event precedes the batch in the stream
		deleted  bool                      // and is soft-deleted before the batch
		expected eventbus.ExpectedRevision // of the batch and of its retry
		retry    eventbus.ExpectedRevision // if not the same
		other    bool                      // another batch comes between the two
		deletes  int                       // then soft deletes, each but the last followed by an append
		maxCount uint64                    // the stream's MaxCount, which hides committed events
		wantErr  error
	}{
		{name: "NoStream", expected: eventbus.NoStream, other: true},
		{name: "NoStream after a soft delete", prefix: true, deleted: true, expected: eventbus.NoStream, other: true},
		// A soft delete forgets no event ID: the retry of an append
		// committed before it succeeds with the first result, whatever
		// became of the stream since, as with EventStoreDB. NoStream
		// finds its batch at the start of the life it began.
		{name: "NoStream, then a soft delete", expected: eventbus.NoStream, other: true, deletes: 1},
		{name: "NoStream, then a soft delete and a new life", expected: eventbus.NoStream, other: true, deletes: 2},
		{name: "NoStream, then two soft deletes", expected: eventbus.NoStream, deletes: 3},
		{name: "NoStream after a soft delete, then another", prefix: true, deleted: true, expected: eventbus.NoStream, deletes: 3},
		{name: "Exact, then a soft delete and a new life", prefix: true, expected: eventbus.Exact(0), deletes: 2},
		{name: "Any, then two soft deletes", prefix: true, expected: eventbus.Any, deletes: 3},
		{name: "Exact", prefix: true, expected: eventbus.Exact(0), other: true},
		{name: "Any", prefix: true, expected: eventbus.Any, other: true},
		{name: "StreamExists", prefix: true, expected: eventbus.StreamExists, other: true},
		// Events that MaxCount hides are committed all the same: the
		// retry finds them, though a read of the stream does not.
		{name: "NoStream hidden by MaxCount", expected: eventbus.NoStream, maxCount: 2},
		{name: "Any hidden by MaxCount", prefix: true, expected: eventbus.Any, other: true, maxCount: 1},
		{name: "Exact elsewhere", prefix: true, expected: eventbus.Exact(0), retry: eventbus.Exact(1), wantErr: eventbus.ErrWrongExpectedVersion},
		{name: "NoStream elsewhere", prefix: true, expected: eventbus.Exact(0), retry: eventbus.NoStream, wantErr: eventbus.ErrWrongExpectedVersion},
		{name: "Exact wrapping around", expected: eventbus.NoStream, retry: eventbus.Exact(math.MaxUint64), wantErr: eventbus.ErrWrongExpectedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			if tt.maxCount > 0 {
				require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: tt.maxCount}))
			}
			if tt.prefix {
				mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "first")...)
			}
			if tt.deleted {
				require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
			}
			batch := events(3, "t", "batch")
			res := mustAppend(t, s, "s", tt.expected, batch...)
			if tt.other {
				mustAppend(t, s, "s", eventbus.Any, events(2, "t", "other")...)
			}
			for i := range tt.deletes {
				if i%2 == 0 {
					require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
				} else {
					mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", fmt.Sprintf("life %d", i/2+2))...)
				}
			}
			retry := tt.expected
			if tt.retry != (eventbus.ExpectedRevision{}) {
				retry = tt.retry
			}
			again, err := s.Append(ctx, "s", retry, batch...)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("retried Append(%v) = %v, want %v", retry, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("retried Append(%v) = %v, want success", retry, err)
			case again != res:
				t.Errorf("retried Append(%v) = %+v, want the first result %+v", retry, again, res)
			}
			got := collect(t, s.ReadStream(ctx, "s", nil))
			seen := make(map[eventbus.ID]bool)
			for _, e := range got {
				if seen[e.ID] {
					t.Errorf("event %v read twice after a retried append: %v", e.ID, summary(got))
				}
				seen[e.ID] = true
			}
		})
	}
	t.Run("partial overlap", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		batch := events(3, "t", "b")
		mustAppend(t, s, "s", eventbus.NoStream, batch[:2]...)
		for _, expected := range []eventbus.ExpectedRevision{eventbus.Any, eventbus.NoStream, eventbus.Exact(1)} {
			for _, evs := range [][]eventbus.EventData{batch, batch[1:], {batch[1], batch[0]}} {
				if _, err := s.Append(ctx, "s", expected, evs...); !errors.Is(err, eventbus.ErrPartialDuplicate) {
					t.Errorf("Append(%v) of %d events overlapping a committed batch = %v, want ErrPartialDuplicate", expected, len(evs), err)
				}
			}
		}
		// A part of AppendMulti is an append like the others, beside a
		// new part too: it fails, and the new part is not written.
		for _, expected := range []eventbus.ExpectedRevision{eventbus.Any, eventbus.NoStream, eventbus.Exact(1)} {
			for _, evs := range [][]eventbus.EventData{batch, batch[1:], {batch[1], batch[0]}} {
				for _, parts := range [][]eventbus.StreamAppend{
					{{Stream: "s", Expected: expected, Events: evs}},
					{{Stream: "new", Events: events(1, "t", "new")}, {Stream: "s", Expected: expected, Events: evs}},
				} {
					if _, err := s.AppendMulti(ctx, parts...); !errors.Is(err, eventbus.ErrPartialDuplicate) {
						t.Errorf("AppendMulti of %d parts, one of %d events (%v) overlapping a committed batch = %v, want ErrPartialDuplicate",
							len(parts), len(evs), expected, err)
					}
				}
			}
		}
		if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 2 {
			t.Errorf("after overlapping appends, ReadAll = %v, want the 2 first events", summary(got))
		}
	})
	t.Run("committed elsewhere, stream as expected", func(t *testing.T) {
		// The events are committed, not right after the expected revision,
		// and the stream is in the expected state: a retry cannot succeed,
		// and a *WrongExpectedVersionError would report as actual the
		// state the caller expected.
		tests := []struct {
			name     string
			setup    func(t *testing.T, s eventbus.Store, batch []eventbus.EventData)
			expected eventbus.ExpectedRevision
		}{
			{"Exact at the end", func(t *testing.T, s eventbus.Store, batch []eventbus.EventData) {
				mustAppend(t, s, "s", eventbus.NoStream, batch...)
			}, eventbus.Exact(1)},
			{"NoStream after a delete, the events mid-life", func(t *testing.T, s eventbus.Store, batch []eventbus.EventData) {
				mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "first")...)
				mustAppend(t, s, "s", eventbus.Exact(0), batch...)
				require.NoError(t, s.Delete(t.Context(), "s", eventbus.Any))
			}, eventbus.NoStream},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				ctx := t.Context()
				batch := events(2, "t", "b")
				tt.setup(t, s, batch)
				before := collect(t, s.ReadAll(ctx, nil))
				_, err := s.Append(ctx, "s", tt.expected, batch...)
				var wev *eventbus.WrongExpectedVersionError
				if errors.As(err, &wev) && wev.Actual == wev.Expected {
					t.Errorf("Append(%v) = %v: expected and actual are the same", tt.expected, err)
				}
				if !errors.Is(err, eventbus.ErrPartialDuplicate) {
					t.Errorf("Append(%v) of events committed elsewhere in the stream = %v, want ErrPartialDuplicate", tt.expected, err)
				}
				if got := collect(t, s.ReadAll(ctx, nil)); len(got) != len(before) {
					t.Errorf("the failed append wrote %d events", len(got)-len(before))
				}
			})
		}
	})
	// A retry with Any or StreamExists finds its events among at least the
	// stream's last 10,000, as the Store contract says: a store that
	// remembers fewer writes them twice.
	for _, expected := range []eventbus.ExpectedRevision{eventbus.Any, eventbus.StreamExists} {
		t.Run(fmt.Sprintf("%v, 10,000 events back", expected), func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "first")...)
			batch := events(3, "t", "batch")
			res := mustAppend(t, s, "s", expected, batch...)
			for left := idempotenceWindow - len(batch); left > 0; left -= 1000 {
				mustAppend(t, s, "s", eventbus.Any, events(min(left, 1000), "t", "later")...)
			}
			again, err := s.Append(ctx, "s", expected, batch...)
			switch {
			case err != nil:
				t.Errorf("Append(%v) retried %d events later = %v, want success", expected, idempotenceWindow-len(batch), err)
			case again != res:
				t.Errorf("Append(%v) retried %d events later = %+v, want the first result %+v", expected, idempotenceWindow-len(batch), again, res)
			}
			info, err := s.StreamInfo(ctx, "s")
			require.NoError(t, err)
			if want := uint64(idempotenceWindow); info.Revision != want {
				t.Errorf("after a retried Append(%v), the stream's last revision is %d, want %d: the retry wrote its events again",
					expected, info.Revision, want)
			}
		})
	}
	// Only IDs are compared, as the Store contract says: a retry that
	// carries other contents under the committed IDs replays, and the
	// store keeps the first events.
	t.Run("other contents under the same IDs", func(t *testing.T) {
		s := open(t)
		batch := events(2, "t", "first")
		res := mustAppend(t, s, "s", eventbus.NoStream, batch...)
		changed := make([]eventbus.EventData, len(batch))
		for i, e := range batch {
			changed[i] = eventbus.EventData{ID: e.ID, Type: "u", Data: []byte("changed"), Metadata: eventbus.Metadata{"k": "v"}}
		}
		again, err := s.Append(t.Context(), "s", eventbus.NoStream, changed...)
		switch {
		case err != nil:
			t.Errorf("Append(NoStream) retried with other contents = %v, want success", err)
		case again != res:
			t.Errorf("Append(NoStream) retried with other contents = %+v, want the first result %+v", again, res)
		}
		var got []string
		for _, e := range collect(t, s.ReadStream(t.Context(), "s", nil)) {
			got = append(got, e.Type+":"+string(e.Data))
		}
		if want := []string{"t:first0", "t:first1"}; !slices.Equal(got, want) {
			t.Errorf("after a retry with other contents, ReadStream = %q, want the first events %q", got, want)
		}
	})
	t.Run("IDs in another stream", func(t *testing.T) {
		s := open(t)
		batch := events(2, "t", "b")
		mustAppend(t, s, "a", eventbus.NoStream, batch...)
		res := mustAppend(t, s, "b", eventbus.NoStream, batch...)
		if res.Position != 3 {
			t.Errorf("Append to another stream with the same IDs = %+v, want it written at position 3", res)
		}
	})
}

func testConcurrentExpectedRevision(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	const writers, rounds = 8, 20
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			wg.Go(func() {
				expected := eventbus.NoStream
				if round > 0 {
					expected = eventbus.Exact(uint64(2*round - 1))
				}
				_, errs[w] = s.Append(ctx, "s", expected, events(2, "t", fmt.Sprintf("r%dw%d-", round, w))...)
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, eventbus.ErrWrongExpectedVersion):
				t.Fatalf("round %d: Append = %v, want success or ErrWrongExpectedVersion", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of %d appends with the same expected revision succeeded, want 1", round, won, writers)
		}
	}
	got := collect(t, s.ReadStream(ctx, "s", nil))
	require.Len(t, got, 2*rounds)
	for i, e := range got {
		if e.Revision != uint64(i) || e.Position != uint64(i) {
			t.Fatalf("event %d has revision %d, position %d; want both %d", i, e.Revision, e.Position, i)
		}
		if i%2 == 1 && !bytes.Equal(bytes.TrimSuffix(e.Data, []byte("1")), bytes.TrimSuffix(got[i-1].Data, []byte("0"))) {
			t.Errorf("events %d and %d come from different batches: %q, %q", i-1, i, got[i-1].Data, e.Data)
		}
	}
}

func testConcurrentAppends(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	const writers, appends = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				stream := fmt.Sprintf("s-%d", (w+i)%3)
				if _, err := s.Append(ctx, stream, eventbus.Any, events(1+i%3, "t", "")...); err != nil {
					t.Errorf("Append = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	all := collect(t, s.ReadAll(ctx, nil))
	next := map[string]uint64{}
	for i, e := range all {
		if e.Position != uint64(i) {
			t.Fatalf("ReadAll: event %d has position %d; positions must be dense", i, e.Position)
		}
		if e.Revision != next[e.Stream] {
			t.Fatalf("ReadAll: event %d of %q has revision %d, want %d", i, e.Stream, e.Revision, next[e.Stream])
		}
		next[e.Stream]++
	}
	for stream, n := range next {
		got := collect(t, s.ReadStream(ctx, stream, nil))
		if uint64(len(got)) != n {
			t.Errorf("ReadStream(%q) has %d events, ReadAll %d", stream, len(got), n)
		}
	}
}

func testAppendMulti(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	mustAppend(t, s, "a", eventbus.NoStream, events(1, "t", "a")...)
	parts := []eventbus.StreamAppend{
		{Stream: "a", Expected: eventbus.Exact(0), Events: events(2, "t", "a+")},
		{Stream: "b", Expected: eventbus.NoStream, Events: events(1, "t", "b")},
	}
	res, err := s.AppendMulti(ctx, parts...)
	require.NoError(t, err)
	if diff := cmp.Diff([]eventbus.AppendResult{{Revision: 2, Position: 2}, {Revision: 0, Position: 3}}, res); diff != "" {
		t.Errorf("AppendMulti results (-want +got):\n%s", diff)
	}
	again, err := s.AppendMulti(ctx, parts...)
	require.NoError(t, err, "retried AppendMulti")
	if diff := cmp.Diff(res, again); diff != "" {
		t.Errorf("retried AppendMulti results (-want +got):\n%s", diff)
	}
	// A retried part beside a new one is replayed, as a retried Append
	// is, and the new one committed.
	d := eventbus.StreamAppend{Stream: "d", Expected: eventbus.NoStream, Events: events(1, "t", "d")}
	mixed, err := s.AppendMulti(ctx, parts[0], d)
	if err != nil {
		t.Errorf("AppendMulti of a retried part of a and a new one of d = %v, want success", err)
	} else if diff := cmp.Diff([]eventbus.AppendResult{res[0], {Revision: 0, Position: 4}}, mixed); diff != "" {
		t.Errorf("AppendMulti of a retried part of a and a new one of d: results (-want +got):\n%s", diff)
	}

	_, err = s.AppendMulti(ctx,
		eventbus.StreamAppend{Stream: "c", Events: events(1, "t", "c")},
		eventbus.StreamAppend{Stream: "b", Expected: eventbus.Exact(7), Events: events(1, "t", "b")},
	)
	var wev *eventbus.WrongExpectedVersionError
	if !errors.As(err, &wev) || wev.Stream != "b" {
		t.Errorf("AppendMulti with a stale expected revision for b = %v, want a *WrongExpectedVersionError for b", err)
	}
	_, err = s.AppendMulti(ctx,
		eventbus.StreamAppend{Stream: "c", Events: events(1, "t", "c")},
		eventbus.StreamAppend{Stream: "c", Events: events(1, "t", "c")},
	)
	if !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("AppendMulti naming c twice = %v, want ErrInvalid", err)
	}
	many := make([]eventbus.StreamAppend, 40) // past the few a store may compare pairwise
	for i := range many {
		many[i] = eventbus.StreamAppend{Stream: fmt.Sprint("many-", i), Events: events(1, "t", "m")}
	}
	many[len(many)-1].Stream = many[2].Stream
	if _, err := s.AppendMulti(ctx, many...); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("AppendMulti of 40 naming %s twice = %v, want ErrInvalid", many[2].Stream, err)
	}
	if _, err := s.AppendMulti(ctx); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("AppendMulti() = %v, want ErrInvalid", err)
	}
	want := []rec{
		{"a", 0, 0, "t", "a0"}, {"a", 1, 1, "t", "a+0"}, {"a", 2, 2, "t", "a+1"}, {"b", 0, 3, "t", "b0"},
		{"d", 0, 4, "t", "d0"},
	}
	all := collect(t, s.ReadAll(ctx, nil))
	if diff := cmp.Diff(want, summary(all)); diff != "" {
		t.Errorf("ReadAll after AppendMulti (-want +got):\n%s", diff)
	}
	if len(all) == len(want) && (!all[2].Time.Equal(all[1].Time) || !all[3].Time.Equal(all[1].Time)) {
		t.Errorf("the events of one AppendMulti have Times %v, %v and %v, want one Time", all[1].Time, all[2].Time, all[3].Time)
	}
}

// fill appends to s: stream "a" gets a0 to a4 of types t0, t1, t0, t1, t0,
// interleaved with "b" (b0, b1: type t0) and "$sys" (one event).
func fill(t *testing.T, s eventbus.Store) {
	t.Helper()
	a := events(5, "t0", "a")
	a[1].Type, a[3].Type = "t1", "t1"
	mustAppend(t, s, "a", eventbus.Any, a[:2]...)                   // positions 0, 1
	mustAppend(t, s, "b", eventbus.Any, events(1, "t0", "b")...)    // 2: b0
	mustAppend(t, s, "$sys", eventbus.Any, events(1, "t0", "$")...) // 3
	mustAppend(t, s, "a", eventbus.Any, a[2:]...)                   // 4, 5, 6
	b1 := events(1, "t0", "b")
	b1[0].Data = []byte("b1")
	mustAppend(t, s, "b", eventbus.Any, b1...) // 7
}

func testReadStream(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	fill(t, s)
	tests := []struct {
		name string
		opts *eventbus.ReadOptions
		want []string // data
	}{
		{"nil options", nil, []string{"a0", "a1", "a2", "a3", "a4"}},
		{"from 2", &eventbus.ReadOptions{From: 2}, []string{"a2", "a3", "a4"}},
		{"from past the end", &eventbus.ReadOptions{From: 9}, nil},
		{"limit", &eventbus.ReadOptions{From: 1, Limit: 2}, []string{"a1", "a2"}},
		{"backwards from end", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End}, []string{"a4", "a3", "a2", "a1", "a0"}},
		{"backwards from 1", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 1}, []string{"a1", "a0"}},
		// From the last event, as End does: no event at From is no
		// reason to yield nothing.
		{"backwards from past the end", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 9}, []string{"a4", "a3", "a2", "a1", "a0"}},
		{"backwards limit", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}, []string{"a4"}},
		{"types", &eventbus.ReadOptions{Filter: eventbus.Filter{Types: []string{"t1"}}}, []string{"a1", "a3"}},
		{"types and limit", &eventbus.ReadOptions{Limit: 2, Filter: eventbus.Filter{Types: []string{"t0"}}}, []string{"a0", "a2"}},
		{"backwards types", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Filter: eventbus.Filter{Types: []string{"t1"}}}, []string{"a3", "a1"}},
		{"backwards types and limit", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1, Filter: eventbus.Filter{Types: []string{"t1"}}}, []string{"a3"}},
		{"other prefix", &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "b"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for e, err := range s.ReadStream(t.Context(), "a", tt.opts) {
				require.NoError(t, err)
				if e.Stream != "a" || string(e.Data) != fmt.Sprintf("a%d", e.Revision) {
					t.Errorf("ReadStream yielded %+v", toRec(e))
				}
				got = append(got, string(e.Data))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadStream(%+v) (-want +got):\n%s", tt.opts, diff)
			}
		})
	}
	t.Run("system stream", func(t *testing.T) {
		if got := collect(t, s.ReadStream(t.Context(), "$sys", nil)); len(got) != 1 {
			t.Errorf("ReadStream($sys) = %v, want its event", summary(got))
		}
	})
}

func testReadAll(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	fill(t, s)
	tests := []struct {
		name string
		opts *eventbus.ReadOptions
		want []uint64 // positions
	}{
		{"nil options skip system streams", nil, []uint64{0, 1, 2, 4, 5, 6, 7}},
		{"from 5", &eventbus.ReadOptions{From: 5}, []uint64{5, 6, 7}},
		{"limit", &eventbus.ReadOptions{From: 1, Limit: 3}, []uint64{1, 2, 4}},
		{"backwards", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 3}, []uint64{7, 6, 5}},
		{"backwards from 2", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 2}, []uint64{2, 1, 0}},
		{"backwards from past the end", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 20, Limit: 3}, []uint64{7, 6, 5}},
		// Position 3 holds an event of a system stream, which the
		// filter rejects: the read starts at the next one back.
		{"backwards from a rejected event", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 3}, []uint64{2, 1, 0}},
		{"prefix", &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "b"}}, []uint64{2, 7}},
		{"types", &eventbus.ReadOptions{Filter: eventbus.Filter{Types: []string{"t1", "t2"}}}, []uint64{1, 5}},
		{"backwards types", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Filter: eventbus.Filter{Types: []string{"t1"}}}, []uint64{5, 1}},
		{"backwards prefix and limit", &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 6, Limit: 1, Filter: eventbus.Filter{StreamPrefix: "b"}}, []uint64{2}},
		{"system prefix", &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$"}}, []uint64{3}},
		{"from past the end", &eventbus.ReadOptions{From: 8}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			for e, err := range s.ReadAll(t.Context(), tt.opts) {
				require.NoError(t, err)
				got = append(got, e.Position)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadAll(%+v) positions (-want +got):\n%s", tt.opts, diff)
			}
		})
	}
	t.Run("break", func(t *testing.T) {
		n := 0
		for _, err := range s.ReadAll(t.Context(), nil) {
			require.NoError(t, err)
			if n++; n == 2 {
				break
			}
		}
		require.Equal(t, 2, n)
	})
}

func testReadsAreLazy(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	stream := s.ReadStream(ctx, "s", nil)
	all := s.ReadAll(ctx, nil)
	mustAppend(t, s, "s", eventbus.Any, events(3, "t", "")...)
	if got := collect(t, stream); len(got) != 3 {
		t.Errorf("ReadStream made before an append and ranged after = %v, want the 3 events", summary(got))
	}
	if got := collect(t, all); len(got) != 3 {
		t.Errorf("ReadAll made before an append and ranged after = %v, want the 3 events", summary(got))
	}
	// A loop sees the events committed when it starts, not those committed
	// while it runs: a loop that appends what it reads would never end.
	for _, r := range []struct {
		name string
		read func() iter.Seq2[eventbus.RecordedEvent, error]
	}{
		{"ReadStream", func() iter.Seq2[eventbus.RecordedEvent, error] { return s.ReadStream(ctx, "s", nil) }},
		{"ReadAll", func() iter.Seq2[eventbus.RecordedEvent, error] { return s.ReadAll(ctx, nil) }},
	} {
		before := len(collect(t, r.read()))
		got := 0
		for _, err := range r.read() {
			require.NoError(t, err)
			if got++; got == 1 {
				mustAppend(t, s, "s", eventbus.Any, events(2, "t", "during")...)
			}
			if got > 2*before {
				break // a read that would never end
			}
		}
		switch {
		case got > before:
			t.Errorf("%s yielded %d events, %d of them committed after its loop started; want the %d committed before",
				r.name, got, got-before, before)
		case got < before:
			t.Errorf("%s yielded %d events while events were appended; want the %d committed before its loop started",
				r.name, got, before)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, read := range []func() []error{
		func() (errs []error) {
			for _, err := range s.ReadAll(cancelled, nil) {
				errs = append(errs, err)
			}
			return errs
		},
		func() (errs []error) {
			for _, err := range s.ReadStream(cancelled, "s", nil) {
				errs = append(errs, err)
			}
			return errs
		},
	} {
		errs := read()
		if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
			t.Errorf("read with a cancelled context yielded %v, want context.Canceled only", errs)
		}
	}
}

// testKeepsOptions checks that reads and subscriptions keep a copy of
// their options, as the Store contract says: the caller may change or
// reuse them, Filter.Types included, once the call returns.
func testKeepsOptions(t *testing.T, open func(t *testing.T) eventbus.Store) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		fill(t, s)
		// The deadline, fake time, turns a subscription that never
		// catches up into a failure instead of a hang.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		subCtx, stop := context.WithCancel(ctx)
		defer stop()
		// Each read selects positions 1 and 5 (a1 and a3, of type t1);
		// changed as below, its options would select others or none.
		ro := &eventbus.ReadOptions{From: 1, Limit: 2, Filter: eventbus.Filter{Types: []string{"t1"}}}
		caughtUp := uint64(0)
		so := &eventbus.SubscribeOptions{From: 1, Filter: eventbus.Filter{Types: []string{"t1"}}, CaughtUp: func(next uint64) {
			caughtUp = next
			stop()
		}}
		reads := []struct {
			name string
			seq  iter.Seq2[eventbus.RecordedEvent, error]
		}{
			{"ReadStream", s.ReadStream(ctx, "a", ro)},
			{"ReadAll", s.ReadAll(ctx, ro)},
			{"Subscribe", s.Subscribe(subCtx, so)},
		}
		// Reused for other reads, as a caller may.
		*ro = eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1, Filter: eventbus.Filter{StreamPrefix: "b", Types: ro.Filter.Types}}
		ro.Filter.Types[0] = "t0"
		so.Filter.Types[0] = "t0"
		so.From, so.Filter.StreamPrefix = eventbus.End, "b"
		so.CaughtUp = func(next uint64) {
			t.Errorf("Subscribe called the CaughtUp its options were given after the call, with %d", next)
			stop()
		}
		for _, r := range reads {
			var got []uint64
			for e, err := range r.seq {
				if err != nil {
					if r.name != "Subscribe" || !errors.Is(err, context.Canceled) || ctx.Err() != nil {
						t.Errorf("%s: %v", r.name, err)
					}
					break
				}
				got = append(got, e.Position)
			}
			if diff := cmp.Diff([]uint64{1, 5}, got); diff != "" {
				t.Errorf("%s from 1 of type t1, its options changed after the call: positions (-want +got):\n%s", r.name, diff)
			}
		}
		if caughtUp != 8 {
			t.Errorf("Subscribe from 1, its options changed after the call: CaughtUp(%d), want 8", caughtUp)
		}
	})
}

// limited reads the first event of a stream. The events that a soft
// delete or the stream's metadata hides do not count toward its Limit, as
// those a filter rejects do not: a store that took the first events of the
// stream, then hid some, would yield none, and a caller paging through the
// stream would take it for empty.
var limited = &eventbus.ReadOptions{Limit: 1}

// fromEnd reads a stream back from its end. The events that a soft delete
// or the stream's metadata hides are hidden from it too.
var fromEnd = &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End}

func testDelete(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	mustAppend(t, s, "s", eventbus.NoStream, events(2, "t", "old")...)
	require.NoError(t, s.Delete(ctx, "s", eventbus.Exact(1)))
	require.NoError(t, s.Delete(ctx, "s", eventbus.Any), "deleting again")
	require.NoError(t, s.Delete(ctx, "never", eventbus.Any), "deleting a stream that never existed")
	md := eventbus.StreamMetadata{MaxCount: 3}
	require.NoError(t, s.SetStreamMetadata(ctx, "meta", md))
	require.NoError(t, s.Delete(ctx, "meta", eventbus.Any), "deleting a stream that only has metadata")
	for stream, want := range map[string]eventbus.StreamInfo{"never": {}, "meta": {Metadata: md}} {
		info, err := s.StreamInfo(ctx, stream)
		require.NoError(t, err)
		if diff := cmp.Diff(want, info); diff != "" {
			t.Errorf("StreamInfo(%q) after deleting a stream never written (-want +got):\n%s", stream, diff)
		}
	}

	if got := collect(t, s.ReadStream(ctx, "s", nil)); len(got) != 0 {
		t.Errorf("ReadStream after Delete = %v, want nothing", summary(got))
	}
	// Read back from the end, as the last checkpoint or snapshot is.
	if got := collect(t, s.ReadStream(ctx, "s", fromEnd)); len(got) != 0 {
		t.Errorf("ReadStream backwards after Delete = %v, want nothing", summary(got))
	}
	info, err := s.StreamInfo(ctx, "s")
	require.NoError(t, err)
	if diff := cmp.Diff(eventbus.StreamInfo{Revision: 1, Deleted: true, Start: 2}, info); diff != "" {
		t.Errorf("StreamInfo after Delete (-want +got):\n%s", diff)
	}

	mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "new")...)
	want := []rec{{"s", 2, 2, "t", "new0"}}
	if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", nil)))); diff != "" {
		t.Errorf("ReadStream after Delete and Append (-want +got):\n%s", diff)
	}
	// The hidden events do not count toward Limit (see limited).
	if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", limited)))); diff != "" {
		t.Errorf("ReadStream with Limit 1 after Delete and Append (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", fromEnd)))); diff != "" {
		t.Errorf("ReadStream backwards after Delete and Append (-want +got):\n%s", diff)
	}
	// A read from a revision of the earlier life starts the new one, or,
	// backwards, finds nothing before it.
	from1 := &eventbus.ReadOptions{From: 1}
	if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", from1)))); diff != "" {
		t.Errorf("ReadStream from revision 1 after Delete and Append (-want +got):\n%s", diff)
	}
	back1 := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: 1}
	if got := collect(t, s.ReadStream(ctx, "s", back1)); len(got) != 0 {
		t.Errorf("ReadStream backwards from revision 1 after Delete and Append = %v, want nothing", summary(got))
	}
	if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 3 {
		t.Errorf("ReadAll after Delete = %v, want all 3 events", summary(got))
	}
	info, err = s.StreamInfo(ctx, "s")
	require.NoError(t, err)
	if diff := cmp.Diff(eventbus.StreamInfo{Exists: true, Revision: 2, Start: 2}, info); diff != "" {
		t.Errorf("StreamInfo after Delete and Append (-want +got):\n%s", diff)
	}
}

func testTombstone(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	mustAppend(t, s, "s", eventbus.NoStream, events(2, "t", "")...)
	require.NoError(t, s.Tombstone(ctx, "s", eventbus.StreamExists))
	require.NoError(t, s.Tombstone(ctx, "reserved", eventbus.NoStream))

	for _, stream := range []string{"s", "reserved"} {
		// Whatever the state expected: a tombstoned stream is no state
		// that an append or delete can expect or fail to meet.
		for _, expected := range []eventbus.ExpectedRevision{eventbus.Any, eventbus.NoStream, eventbus.StreamExists, eventbus.Exact(1)} {
			if _, err := s.Append(ctx, stream, expected, events(1, "t", "")...); !errors.Is(err, eventbus.ErrStreamDeleted) {
				t.Errorf("Append(%q, %v) after Tombstone = %v, want ErrStreamDeleted", stream, expected, err)
			}
			if _, err := s.AppendMulti(ctx, eventbus.StreamAppend{Stream: stream, Expected: expected, Events: events(1, "t", "")}); !errors.Is(err, eventbus.ErrStreamDeleted) {
				t.Errorf("AppendMulti(%q, %v) after Tombstone = %v, want ErrStreamDeleted", stream, expected, err)
			}
			if err := s.Delete(ctx, stream, expected); !errors.Is(err, eventbus.ErrStreamDeleted) {
				t.Errorf("Delete(%q, %v) after Tombstone = %v, want ErrStreamDeleted", stream, expected, err)
			}
			if err := s.Tombstone(ctx, stream, expected); !errors.Is(err, eventbus.ErrStreamDeleted) {
				t.Errorf("Tombstone(%q, %v) again = %v, want ErrStreamDeleted", stream, expected, err)
			}
		}
		onlyError(t, fmt.Sprintf("ReadStream(%q) after Tombstone", stream), s.ReadStream(ctx, stream, nil), eventbus.ErrStreamDeleted)
		if err := s.SetStreamMetadata(ctx, stream, eventbus.StreamMetadata{MaxCount: 1}); !errors.Is(err, eventbus.ErrStreamDeleted) {
			t.Errorf("SetStreamMetadata(%q) after Tombstone = %v, want ErrStreamDeleted", stream, err)
		}
		info, err := s.StreamInfo(ctx, stream)
		require.NoError(t, err)
		if !info.Tombstoned || info.Exists || info.Metadata != (eventbus.StreamMetadata{}) {
			t.Errorf("StreamInfo(%q) after Tombstone = %+v, want Tombstoned, not Exists, no metadata", stream, info)
		}
	}
	// AppendMulti is atomic: the streams appended with a tombstoned one
	// are not written either.
	if _, err := s.AppendMulti(ctx,
		eventbus.StreamAppend{Stream: "fresh", Events: events(1, "t", "")},
		eventbus.StreamAppend{Stream: "s", Events: events(1, "t", "")},
	); !errors.Is(err, eventbus.ErrStreamDeleted) {
		t.Errorf("AppendMulti(fresh, s) after Tombstone(s) = %v, want ErrStreamDeleted", err)
	}
	if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 2 {
		t.Errorf("ReadAll after Tombstone = %v, want both events appended before it", summary(got))
	}
}

func testMaxCount(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: 2}))
	mustAppend(t, s, "s", eventbus.Any, events(5, "t", "e")...)
	want := []rec{{"s", 3, 3, "t", "e3"}, {"s", 4, 4, "t", "e4"}}
	if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", nil)))); diff != "" {
		t.Errorf("ReadStream with MaxCount 2 (-want +got):\n%s", diff)
	}
	// ReadAll and Subscribe see every committed event, those that MaxCount
	// hides from the stream too, as the Store contract says.
	if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 5 {
		t.Errorf("ReadAll with MaxCount 2 = %v, want all 5 events: MaxCount applies to stream reads", summary(got))
	}
	// The deadline turns a store that never calls CaughtUp into a failure
	// instead of a hang.
	subCtx, stop := context.WithTimeout(ctx, lockWait)
	var subscribed []eventbus.RecordedEvent
	for e, err := range s.Subscribe(subCtx, &eventbus.SubscribeOptions{CaughtUp: func(uint64) { stop() }}) {
		if err != nil {
			break
		}
		if subscribed = append(subscribed, e); len(subscribed) == 5 {
			break
		}
	}
	stop()
	if len(subscribed) != 5 {
		t.Errorf("Subscribe with MaxCount 2 = %v, want all 5 events: MaxCount applies to stream reads", summary(subscribed))
	}
	if diff := cmp.Diff(want[:1], summary(collect(t, s.ReadStream(ctx, "s", limited)))); diff != "" {
		t.Errorf("ReadStream with Limit 1 and MaxCount 2 (-want +got):\n%s", diff)
	}
	// The last events, not the first ones of the stream: a snapshot or a
	// checkpoint, whose stream has MaxCount 1, is read so.
	if diff := cmp.Diff([]rec{want[1], want[0]}, summary(collect(t, s.ReadStream(ctx, "s", fromEnd)))); diff != "" {
		t.Errorf("ReadStream backwards with MaxCount 2 (-want +got):\n%s", diff)
	}
	info, err := s.StreamInfo(ctx, "s")
	require.NoError(t, err)
	if diff := cmp.Diff(eventbus.StreamInfo{Exists: true, Revision: 4, Metadata: eventbus.StreamMetadata{MaxCount: 2}}, info); diff != "" {
		t.Errorf("StreamInfo (-want +got):\n%s", diff)
	}
	require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{}))
	if got := collect(t, s.ReadStream(ctx, "s", nil)); len(got) != 5 {
		t.Errorf("ReadStream after lifting MaxCount = %v, want 5 events", summary(got))
	}

	// A soft delete hides the events before it, though MaxCount alone
	// would keep some: the new life's one event is all there is to read.
	require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: 3}))
	require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
	mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "new")...)
	want = []rec{{"s", 5, 5, "t", "new0"}}
	for name, opts := range map[string]*eventbus.ReadOptions{"": nil, " with Limit 1": limited, " backwards": fromEnd} {
		if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", opts)))); diff != "" {
			t.Errorf("ReadStream%s with MaxCount 3 after Delete and Append (-want +got):\n%s", name, diff)
		}
	}
}

func testMaxAge(t *testing.T, open func(t *testing.T) eventbus.Store) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		require.NoError(t, s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxAge: time.Hour}))
		mustAppend(t, s, "s", eventbus.Any, events(1, "t", "old")...)
		time.Sleep(40 * time.Minute) // fake time: the bubble's clock jumps
		mustAppend(t, s, "s", eventbus.Any, events(1, "t", "new")...)
		if got := collect(t, s.ReadStream(ctx, "s", nil)); len(got) != 2 {
			t.Errorf("ReadStream before MaxAge = %v, want both events", summary(got))
		}
		time.Sleep(20 * time.Minute)
		// The first event is MaxAge old, not more: it is still read.
		if got := collect(t, s.ReadStream(ctx, "s", nil)); len(got) != 2 {
			t.Errorf("ReadStream exactly MaxAge after the first event = %v, want both events", summary(got))
		}
		time.Sleep(20 * time.Minute)
		want := []rec{{"s", 1, 1, "t", "new0"}}
		if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", nil)))); diff != "" {
			t.Errorf("ReadStream 80 minutes later with MaxAge 1h (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", limited)))); diff != "" {
			t.Errorf("ReadStream with Limit 1, 80 minutes later with MaxAge 1h (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", fromEnd)))); diff != "" {
			t.Errorf("ReadStream backwards 80 minutes later with MaxAge 1h (-want +got):\n%s", diff)
		}
		if got := collect(t, s.ReadAll(ctx, nil)); len(got) != 2 {
			t.Errorf("ReadAll = %v, want both events: MaxAge applies to stream reads", summary(got))
		}

		// A soft delete hides the events before it, though MaxAge alone
		// would keep one: the new life's one event is all there is to read.
		require.NoError(t, s.Delete(ctx, "s", eventbus.Any))
		mustAppend(t, s, "s", eventbus.NoStream, events(1, "t", "newer")...)
		want = []rec{{"s", 2, 2, "t", "newer0"}}
		for name, opts := range map[string]*eventbus.ReadOptions{"": nil, " with Limit 1": limited, " backwards": fromEnd} {
			if diff := cmp.Diff(want, summary(collect(t, s.ReadStream(ctx, "s", opts)))); diff != "" {
				t.Errorf("ReadStream%s with MaxAge 1h after Delete and Append (-want +got):\n%s", name, diff)
			}
		}
	})
}

// testWholeEvents checks that ReadAll, forwards and backwards, and
// Subscribe, from history and live, yield every field of an event as
// appended, as ReadStream does (see testAppendAndRead): the consumers of a
// store, durable subscriptions among them, read through them.
func testWholeEvents(t *testing.T, open func(t *testing.T) eventbus.Store) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		full := func(data string) eventbus.EventData {
			return eventbus.EventData{
				ID: eventbus.NewID(), Type: "user.created", SchemaVersion: 3, Encoding: "deflate",
				CorrelationID: eventbus.NewID(), CausationID: eventbus.NewID(),
				Metadata: eventbus.Metadata{"traceparent": data}, Data: []byte(data),
			}
		}
		in := []eventbus.EventData{full("history"), full("live")}
		mustAppend(t, s, "other", eventbus.NoStream, events(1, "t", "o")...)
		mustAppend(t, s, "full", eventbus.NoStream, in[0])
		only := eventbus.Filter{StreamPrefix: "full"}
		subscribed := make(chan eventbus.RecordedEvent, 2)
		go func() {
			defer close(subscribed)
			for e, err := range s.Subscribe(ctx, &eventbus.SubscribeOptions{Filter: only}) {
				if err != nil {
					return
				}
				subscribed <- e
			}
		}()
		synctest.Wait() // the subscription waits for live events
		mustAppend(t, s, "full", eventbus.Any, in[1])
		synctest.Wait()
		cancel()

		want := collect(t, s.ReadStream(t.Context(), "full", nil))
		require.Len(t, want, len(in), "ReadStream(full)")
		for i := range want {
			e := in[i]
			if diff := cmp.Diff(e, want[i].EventData); diff != "" {
				t.Errorf("ReadStream's event %d (-appended +read):\n%s", i, diff)
			}
		}
		var got []eventbus.RecordedEvent
		for e := range subscribed {
			got = append(got, e)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Subscribe, from history and live (-ReadStream's +Subscribe's):\n%s", diff)
		}
		if diff := cmp.Diff(want, collect(t, s.ReadAll(t.Context(), &eventbus.ReadOptions{Filter: only}))); diff != "" {
			t.Errorf("ReadAll (-ReadStream's +ReadAll's):\n%s", diff)
		}
		backwards := collect(t, s.ReadAll(t.Context(), &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Filter: only}))
		slices.Reverse(backwards)
		if diff := cmp.Diff(want, backwards); diff != "" {
			t.Errorf("ReadAll backwards, reversed (-ReadStream's +ReadAll's):\n%s", diff)
		}
	})
}

// byPosition returns every event of s, system streams' too, by position.
func byPosition(t *testing.T, s eventbus.Store) map[uint64]eventbus.RecordedEvent {
	t.Helper()
	all := collect(t, s.ReadAll(t.Context(), nil))
	all = append(all, collect(t, s.ReadAll(t.Context(), &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$"}}))...)
	m := make(map[uint64]eventbus.RecordedEvent, len(all))
	for _, e := range all {
		m[e.Position] = e
	}
	return m
}

func testSubscribe(t *testing.T, open func(t *testing.T) eventbus.Store) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		fill(t, s) // positions 0-7, 3 in a system stream

		// The live events come in two commits: 8, then 9 and 10. Passed
		// follows each, once the subscription has read it, whether it
		// selects the commit's events or not, but for one that is all
		// before From.
		live := []uint64{9, 11}
		tests := []struct {
			name   string
			opts   *eventbus.SubscribeOptions
			want   []uint64 // positions of history then of the 3 live events (8; 9, 10)
			next   uint64   // CaughtUp's argument, if it is given one
			passed []uint64 // Passed's arguments
			alone  bool     // Passed without CaughtUp
		}{
			// Live events of system streams (9) are skipped, as those
			// of the history are.
			{"from start", nil, []uint64{0, 1, 2, 4, 5, 6, 7, 8, 10}, 8, live, false},
			{"from 5", &eventbus.SubscribeOptions{From: 5}, []uint64{5, 6, 7, 8, 10}, 8, live, false},
			{"from end", &eventbus.SubscribeOptions{From: eventbus.End}, []uint64{8, 10}, 8, live, false},
			// Past the end, the subscription has passed every position
			// before From, and waits for the event at From.
			{"from past the end", &eventbus.SubscribeOptions{From: 9}, []uint64{10}, 9, []uint64{11}, false},
			{"from far past the end", &eventbus.SubscribeOptions{From: 100}, nil, 100, nil, false},
			{"filter", &eventbus.SubscribeOptions{Filter: eventbus.Filter{StreamPrefix: "b"}}, []uint64{2, 7, 10}, 8, live, false},
			// The live events are of types t0 (8) and t1 (9, 10): the
			// filter selects live events as it selects history.
			{"types", &eventbus.SubscribeOptions{Filter: eventbus.Filter{Types: []string{"t1"}}}, []uint64{1, 5, 10}, 8, live, false},
			// Without CaughtUp, Passed reports the catch-up too.
			{"types, Passed alone", &eventbus.SubscribeOptions{Filter: eventbus.Filter{Types: []string{"t1"}}}, []uint64{1, 5, 10}, 0, []uint64{8, 9, 11}, true},
			// A prefix that starts with '$' selects system streams.
			{"system prefix", &eventbus.SubscribeOptions{Filter: eventbus.Filter{StreamPrefix: "$"}}, []uint64{3, 9}, 8, live, false},
		}
		type sub struct {
			got      chan eventbus.RecordedEvent
			caughtUp chan uint64
			passed   chan uint64
		}
		subs := make([]sub, len(tests))
		for i, tt := range tests {
			opts := eventbus.SubscribeOptions{}
			if tt.opts != nil {
				opts = *tt.opts
			}
			sb := sub{got: make(chan eventbus.RecordedEvent, 100), caughtUp: make(chan uint64, 2), passed: make(chan uint64, 10)}
			if !tt.alone {
				opts.CaughtUp = func(next uint64) { sb.caughtUp <- next }
			}
			opts.Passed = func(next uint64) { sb.passed <- next }
			subs[i] = sb
			go func() {
				// Closed however the subscription ends: SubscribeEnds
				// checks that it ends with its context's error.
				defer close(sb.got)
				for e, err := range s.Subscribe(ctx, &opts) {
					if err != nil {
						return
					}
					sb.got <- e
				}
			}()
		}
		synctest.Wait()
		for i, tt := range tests {
			if tt.alone {
				continue
			}
			select {
			case next := <-subs[i].caughtUp:
				if next != tt.next {
					t.Errorf("%s: CaughtUp(%d), want %d", tt.name, next, tt.next)
				}
			default:
				t.Errorf("%s: CaughtUp not called once history was delivered", tt.name)
			}
		}
		mustAppend(t, s, "a", eventbus.Any, events(1, "t0", "live")...)
		synctest.Wait() // every subscription waits again
		// AppendMulti must wake them as Append does.
		_, err := s.AppendMulti(t.Context(),
			eventbus.StreamAppend{Stream: "$sys", Events: events(1, "t1", "live")},
			eventbus.StreamAppend{Stream: "b", Events: events(1, "t1", "live")},
		)
		require.NoError(t, err, "AppendMulti($sys, b)")
		synctest.Wait()
		cancel()
		stored := byPosition(t, s)
		for i, tt := range tests {
			var got []uint64
			for e := range subs[i].got {
				got = append(got, e.Position)
				if diff := cmp.Diff(stored[e.Position], e); diff != "" {
					t.Errorf("%s: Subscribe(%+v) yielded at position %d (-ReadAll's +Subscribe's):\n%s", tt.name, tt.opts, e.Position, diff)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s: Subscribe(%+v) positions (-want +got):\n%s", tt.name, tt.opts, diff)
			}
			if len(subs[i].caughtUp) != 0 {
				t.Errorf("%s: CaughtUp called more than once", tt.name)
			}
			var passed []uint64
			for len(subs[i].passed) > 0 {
				passed = append(passed, <-subs[i].passed)
			}
			if diff := cmp.Diff(tt.passed, passed); diff != "" {
				t.Errorf("%s: Passed's arguments (-want +got):\n%s", tt.name, diff)
			}
		}
	})
}

func testSubscribeSwitchOver(t *testing.T, open func(t *testing.T) eventbus.Store) {
	// The bubble's goroutines run in parallel all the same: the writers
	// race the subscription's switch-over from history to live events.
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		// The deadline, fake time, turns a store that never calls
		// CaughtUp, or loses events, into a failure instead of a hang.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		const writers, appends, perAppend = 4, 100, 3
		const total = writers*appends*perAppend + perAppend
		mustAppend(t, s, "history", eventbus.Any, events(perAppend, "t", "")...)

		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				<-start
				for range appends {
					if _, err := s.Append(ctx, fmt.Sprintf("w%d", w), eventbus.Any, events(perAppend, "t", "")...); err != nil {
						t.Errorf("Append = %v", err)
						return
					}
				}
			})
		}
		var caughtUp bool
		want := uint64(0)
		var got []eventbus.RecordedEvent
		opts := &eventbus.SubscribeOptions{CaughtUp: func(uint64) {
			caughtUp = true
			if want == total {
				// The writers finished before the subscription caught up
				// with them: it delivered every event, then caught up.
				cancel()
			}
		}}
		close(start) // the subscription starts while the writers append
		for e, err := range s.Subscribe(ctx, opts) {
			if err != nil && want == total && errors.Is(ctx.Err(), context.Canceled) {
				break
			}
			if err != nil && ctx.Err() != nil {
				t.Fatalf("Subscribe delivered %d of %d events, then none until its context ended (%v); caught up: %v",
					want, total, err, caughtUp)
			}
			require.NoError(t, err)
			if e.Position != want {
				t.Fatalf("Subscribe delivered position %d, want %d: a gap or a duplicate", e.Position, want)
			}
			got = append(got, e)
			if want++; want == total && caughtUp {
				break
			}
		}
		wg.Wait()
		if !caughtUp {
			t.Errorf("CaughtUp not called")
		}
		if want != total {
			t.Errorf("Subscribe delivered %d of %d events, then ended without an error", want, total)
		}
		all := collect(t, s.ReadAll(t.Context(), nil))
		if len(all) != total {
			t.Errorf("ReadAll has %d events, want %d", len(all), total)
		}
		if diff := cmp.Diff(all, got); diff != "" {
			t.Errorf("Subscribe's events (-ReadAll's +Subscribe's):\n%s", diff)
		}
	})
}

func testSubscribeSlowConsumer(t *testing.T, open func(t *testing.T) eventbus.Store) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t)
		// The deadline, fake time, turns a store that loses the events
		// appended while its consumer is busy into a failure, not a hang.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		mustAppend(t, s, "s", eventbus.Any, events(1, "t", "")...)
		const later = 5000
		want := uint64(0)
		for e, err := range s.Subscribe(ctx, nil) {
			if err != nil && ctx.Err() != nil {
				t.Fatalf("Subscribe delivered %d of %d events, then none until its context ended (%v): it lost those appended while its consumer was busy",
					want, later+1, err)
			}
			require.NoError(t, err)
			if e.Position != want {
				t.Fatalf("Subscribe delivered position %d, want %d", e.Position, want)
			}
			if want == 0 { // the consumer is busy while many events are committed
				for i := 0; i < later; i += 100 {
					mustAppend(t, s, "s", eventbus.Any, events(100, "t", "")...)
				}
			}
			if want++; want == later+1 {
				break
			}
		}
		if want != later+1 {
			t.Errorf("Subscribe delivered %d of %d events, then ended without an error", want, later+1)
		}
	})
}

func testSubscribeEnds(t *testing.T, open func(t *testing.T) eventbus.Store) {
	for _, how := range []string{"context", "close"} {
		t.Run(how, func(t *testing.T) {
			// synctest.Test fails if the subscription leaves a
			// goroutine behind.
			synctest.Test(t, func(t *testing.T) {
				s := open(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				mustAppend(t, s, "s", eventbus.Any, events(2, "t", "")...)
				ended := make(chan error, 1)
				n := 0
				go func() {
					for _, err := range s.Subscribe(ctx, nil) {
						if err != nil {
							ended <- err
							return
						}
						n++
					}
					ended <- nil
				}()
				synctest.Wait()
				var want error = context.Canceled
				if how == "context" {
					cancel()
				} else {
					require.NoError(t, s.Close())
					want = eventbus.ErrClosed
				}
				if err := <-ended; !errors.Is(err, want) {
					t.Errorf("subscription ended with %v, want %v", err, want)
				}
				if n != 2 {
					t.Errorf("subscription delivered %d events, want 2", n)
				}
			})
		})
	}
}

// lockWait bounds how long testCaughtUpUnlocked waits, in real time, for
// an append made from CaughtUp: a store that calls CaughtUp with its lock
// held never lets it finish, and a synctest bubble, whose clock moves only
// once every goroutine blocks durably (a sync.Mutex does not), would hang.
// It is a variable for this package's tests alone (export_test.go).
var lockWait = 10 * time.Second

// testCaughtUpUnlocked checks that a store calls CaughtUp, which is user
// code, without a lock held, as the Store contract says: a CaughtUp that
// appends (or reads) must not deadlock, and the subscription then delivers
// what it appended.
func testCaughtUpUnlocked(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mustAppend(t, s, "s", eventbus.Any, events(1, "t", "")...)
	appended := make(chan error, 1)
	opts := &eventbus.SubscribeOptions{CaughtUp: func(uint64) {
		go func() {
			_, err := s.Append(ctx, "s", eventbus.Any, events(1, "t", "")...)
			appended <- err
		}()
		timer := time.NewTimer(lockWait)
		defer timer.Stop()
		select {
		case err := <-appended:
			if err != nil {
				t.Errorf("Append from CaughtUp = %v", err)
			}
		case <-timer.C:
			t.Errorf("Append from CaughtUp did not return within %v: does the store call CaughtUp with a lock held?", lockWait)
			cancel() // the subscription then ends, and the lock goes
		}
	}}
	var got []uint64
	for e, err := range s.Subscribe(ctx, opts) {
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("Subscribe: %v", err)
			}
			break
		}
		if got = append(got, e.Position); len(got) == 2 {
			break
		}
	}
	if !t.Failed() {
		if diff := cmp.Diff([]uint64{0, 1}, got); diff != "" {
			t.Errorf("Subscribe whose CaughtUp appended an event: positions (-want +got):\n%s", diff)
		}
	}
}

func testClose(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	mustAppend(t, s, "s", eventbus.Any, events(1, "t", "")...)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "second Close")
	_, err := s.Append(ctx, "s", eventbus.Any, events(1, "t", "")...)
	if !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := s.AppendMulti(ctx, eventbus.StreamAppend{Stream: "s", Events: events(1, "t", "")}); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("AppendMulti after Close = %v, want ErrClosed", err)
	}
	// A closed store delivers nothing and waits for nothing: a subscription
	// never reports that it caught up, nor passed anything.
	caughtUp := func(next uint64) { t.Errorf("Subscribe after Close called CaughtUp(%d)", next) }
	for name, seq := range map[string]func(func(eventbus.RecordedEvent, error) bool){
		"ReadStream":         s.ReadStream(ctx, "s", nil),
		"ReadAll":            s.ReadAll(ctx, nil),
		"Subscribe":          s.Subscribe(ctx, nil),
		"Subscribe from 0":   s.Subscribe(ctx, &eventbus.SubscribeOptions{CaughtUp: caughtUp}),
		"Subscribe from End": s.Subscribe(ctx, &eventbus.SubscribeOptions{From: eventbus.End, CaughtUp: caughtUp}),
		"Subscribe, Passed":  s.Subscribe(ctx, &eventbus.SubscribeOptions{Passed: func(next uint64) { t.Errorf("Subscribe after Close called Passed(%d)", next) }}),
	} {
		var errs []error
		for _, err := range seq {
			errs = append(errs, err)
		}
		if len(errs) != 1 || !errors.Is(errs[0], eventbus.ErrClosed) {
			t.Errorf("%s after Close yielded %v, want ErrClosed only", name, errs)
		}
	}
	if err := s.Delete(ctx, "s", eventbus.Any); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Delete after Close = %v, want ErrClosed", err)
	}
	if err := s.Tombstone(ctx, "s", eventbus.Any); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("Tombstone after Close = %v, want ErrClosed", err)
	}
	if err := s.SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{}); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("SetStreamMetadata after Close = %v, want ErrClosed", err)
	}
	if _, err := s.StreamInfo(ctx, "s"); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("StreamInfo after Close = %v, want ErrClosed", err)
	}
}

// testCloseRunningReads checks that a read running when the store closes
// does not end early without an error, which its caller would take for the
// end of the stream, nor goes on to its end: it yields some more events in
// order, up to 256, and then ErrClosed, as the Store contract says.
// maxAfterClose is how many events the Store contract lets a read yield
// once its store has closed, before it ends with ErrClosed.
const maxAfterClose = 256

func testCloseRunningReads(t *testing.T, open func(t *testing.T) eventbus.Store) {
	s := open(t)
	ctx := t.Context()
	const n = 1000 // past any batch a store reads before it checks
	for range n / 100 {
		mustAppend(t, s, "s", eventbus.Any, events(100, "t", "")...)
	}
	backwards := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End}
	reads := []struct {
		name      string
		seq       iter.Seq2[eventbus.RecordedEvent, error]
		backwards bool
	}{
		{"ReadStream forwards", s.ReadStream(ctx, "s", nil), false},
		{"ReadStream backwards", s.ReadStream(ctx, "s", backwards), true},
		{"ReadAll forwards", s.ReadAll(ctx, nil), false},
		{"ReadAll backwards", s.ReadAll(ctx, backwards), true},
		// A subscription reading history is a read like the others.
		{"Subscribe", s.Subscribe(ctx, nil), false},
	}
	nexts := make([]func() (eventbus.RecordedEvent, error, bool), len(reads))
	for i, r := range reads {
		next, stop := iter.Pull2(r.seq)
		defer stop()
		nexts[i] = next
		if _, err, ok := next(); !ok || err != nil {
			t.Fatalf("%s of %d events: first event: %v, %v", r.name, n, err, ok)
		}
	}
	require.NoError(t, s.Close())
	for i, r := range reads {
		yielded, want := 1, uint64(1) // the position of the next event
		if r.backwards {
			want = n - 2
		}
		var errs []error
		for {
			e, err, ok := nexts[i]()
			if !ok {
				break
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if len(errs) > 0 {
				t.Errorf("%s running when the store closed yielded an event after %v", r.name, errs)
			}
			if e.Position != want {
				t.Errorf("%s running when the store closed yielded position %d, want %d", r.name, e.Position, want)
				break
			}
			yielded++
			if r.backwards {
				want--
			} else {
				want++
			}
		}
		// The first event was yielded before Close; the n-1 left are
		// more than the contract lets a read yield after it.
		switch after := yielded - 1; {
		case len(errs) == 0 && yielded < n:
			t.Errorf("%s running when the store closed yielded %d of %d events, then ended without an error; want ErrClosed",
				r.name, yielded, n)
		case after > maxAfterClose:
			t.Errorf("%s running when the store closed yielded %d more events, then %v; want at most %d, then ErrClosed",
				r.name, after, errs, maxAfterClose)
		case len(errs) != 1 || !errors.Is(errs[0], eventbus.ErrClosed):
			t.Errorf("%s running when the store closed yielded %d of %d events, then %v; want ErrClosed only",
				r.name, yielded, n, errs)
		}
	}
}
