package eventbus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The tests here take the decoders of the on-disk format (see
// store_file_format.go) one check at a time: each malformed payload is a
// valid one but for the one thing a check guards, so that a check that
// went missing fails its case. The payloads are made with the encoders
// the store writes with, field by field in the order of the format.

// uvarintOf is x as the format writes an unsigned varint.
func uvarintOf(x uint64) []byte { return binary.AppendUvarint(nil, x) }

// stringOf is s as the format writes a string: its length, then its bytes.
func stringOf(s string) []byte { return appendString(nil, s) }

// concat is the fields one after the other.
func concat(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

// overflow is a varint of more than 64 bits, which no field holds.
var overflow = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}

// payloadOf is the payload of a frame of kind holding fields, one after
// the other.
func payloadOf(kind byte, fields ...[]byte) []byte {
	b, frame := beginFrame(nil, kind)
	b = append(b, concat(fields...)...)
	endFrame(b, frame)
	return b[frameHeader:]
}

// encodedEntry is the entry of e, committed at pos and rev at unix time t ns.
func encodedEntry(pos, rev uint64, t int64, e EventData) []byte {
	return appendEntry(nil, pos, rev, t, appendBody(nil, &e))
}

// decodedEvent is what decodeFrame hands to its callback for one entry.
type decodedEvent struct {
	Stream string
	Off    int // of the entry's length prefix in the payload
	Event  RecordedEvent
}

// decodeAll decodes p, collecting its entries.
func decodeAll(p []byte) (record, []decodedEvent, error) {
	var e entry
	var got []decodedEvent
	r, err := decodeFrame(p, &e, func(stream []byte, off int, e *entry) error {
		got = append(got, decodedEvent{string(stream), off, e.recorded(string(stream), map[string]string{})})
		return nil
	})
	return r, got, err
}

// TestDecodeFrame decodes a valid payload of every kind, at the bounds
// of what its fields may hold, to exactly what was written.
func TestDecodeFrame(t *testing.T) {
	full := EventData{
		ID: ID{1}, CorrelationID: ID{2}, CausationID: ID{3}, Type: "placed", SchemaVersion: 3,
		Encoding: "json", Metadata: Metadata{"k": "v"}, Data: []byte(`{"n":1}`),
	}
	// Schema version 0 is written as 1; no data reads as nil.
	plain := EventData{ID: ID{4}, Type: "t"}
	// The largest schema version and the longest type a store keeps.
	bounds := EventData{ID: ID{5}, Type: strings.Repeat("t", maxNameLen), SchemaVersion: int(min(math.MaxInt, maxSchemaVersion))} // the largest an int holds
	at := func(ns int64) time.Time { return time.Unix(0, ns) }
	recorded := func(e EventData, stream string, rev, pos uint64, ns int64) RecordedEvent {
		if e.SchemaVersion == 0 {
			e.SchemaVersion = 1
		}
		return RecordedEvent{EventData: e, Stream: stream, Revision: rev, Position: pos, Time: at(ns)}
	}
	e0, e1, e2 := encodedEntry(7, 0, 100, full), encodedEntry(8, 1, 100, plain), encodedEntry(9, 4, -1, bounds)
	head := len(payloadOf(kindEvents, uvarintOf(2), stringOf("a"), uvarintOf(2)))

	for _, tc := range []struct {
		name    string
		payload []byte
		want    record
		events  []decodedEvent
	}{{
		name: "events",
		// Two parts, of streams a and b; b's event has a time before 1970.
		payload: payloadOf(kindEvents, uvarintOf(2), stringOf("a"), uvarintOf(2), e0, e1, stringOf("b"), uvarintOf(1), e2),
		want:    record{kind: kindEvents},
		events: []decodedEvent{
			{"a", head, recorded(full, "a", 0, 7, 100)},
			{"a", head + len(e0), recorded(plain, "a", 1, 8, 100)},
			{"b", head + len(e0) + len(e1) + len(stringOf("b")) + 1, recorded(bounds, "b", 4, 9, -1)},
		},
	}, {
		name:    "delete",
		payload: payloadOf(kindDelete, stringOf("s"), []byte{0}),
		want:    record{kind: kindDelete, stream: []byte("s")},
	}, {
		name:    "tombstone",
		payload: payloadOf(kindDelete, stringOf("s"), []byte{1}),
		want:    record{kind: kindDelete, stream: []byte("s"), tombstone: true},
	}, {
		name:    "metadata",
		payload: payloadOf(kindMetadata, stringOf("s"), uvarintOf(10), uvarintOf(uint64(time.Hour))),
		want:    record{kind: kindMetadata, stream: []byte("s"), md: StreamMetadata{MaxCount: 10, MaxAge: time.Hour}},
	}, {
		name: "metadata cleared",
		// No limits, as SetStreamMetadata of the zero StreamMetadata writes.
		payload: payloadOf(kindMetadata, stringOf("s"), uvarintOf(0), uvarintOf(0)),
		want:    record{kind: kindMetadata, stream: []byte("s")},
	}, {
		name: "state",
		// Each flag alone and both; a start equal to the next revision,
		// as a stream tombstoned before it had events has it.
		payload: payloadOf(kindState, uvarintOf(4),
			stringOf("a"), uvarintOf(5), uvarintOf(2), []byte{0}, uvarintOf(0), uvarintOf(0),
			stringOf("b"), uvarintOf(3), uvarintOf(3), []byte{1}, uvarintOf(1), uvarintOf(uint64(time.Second)),
			stringOf("c"), uvarintOf(1), uvarintOf(0), []byte{2}, uvarintOf(0), uvarintOf(0),
			stringOf("d"), uvarintOf(2), uvarintOf(2), []byte{3}, uvarintOf(0), uvarintOf(0),
		),
		want: record{kind: kindState, states: []streamRecord{
			{stream: []byte("a"), next: 5, start: 2},
			{stream: []byte("b"), next: 3, start: 3, deleted: true, md: StreamMetadata{MaxCount: 1, MaxAge: time.Second}},
			{stream: []byte("c"), next: 1, start: 0, tombstoned: true},
			{stream: []byte("d"), next: 2, start: 2, deleted: true, tombstoned: true},
		}},
	}, {
		name: "state of no streams",
		// The last state frame of a segment holds fewer than stateFrame
		// streams, none if need be.
		payload: payloadOf(kindState, uvarintOf(0)),
		want:    record{kind: kindState},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, events, err := decodeAll(tc.payload)
			if err != nil {
				t.Fatalf("decodeFrame(%x) = %v, want nil", tc.payload, err)
			}
			if diff := cmp.Diff(tc.want, r, cmp.AllowUnexported(record{}, streamRecord{})); diff != "" {
				t.Errorf("decodeFrame(%x) record (-want +got):\n%s", tc.payload, diff)
			}
			if diff := cmp.Diff(tc.events, events); diff != "" {
				t.Errorf("decodeFrame(%x) events (-want +got):\n%s", tc.payload, diff)
			}
			// Verify checks frames with no callback.
			r, err = decodeFrame(tc.payload, &entry{}, nil)
			if err != nil {
				t.Fatalf("decodeFrame(%x, nil) = %v, want nil", tc.payload, err)
			}
			if diff := cmp.Diff(tc.want, r, cmp.AllowUnexported(record{}, streamRecord{})); diff != "" {
				t.Errorf("decodeFrame(%x, nil) record (-want +got):\n%s", tc.payload, diff)
			}
		})
	}
}

// TestDecodeFrameMalformed decodes payloads that are valid but for one
// field, each what one check of decodeFrame or decodeEntry guards: each
// must fail with errMalformed (which recovery reports as a
// CorruptionError), and none may panic or yield an event of its damage.
// It may yield the events of the whole entries before it: decodeFrame
// hands over entries as it reads them, and recovery, which applies them,
// fails with the frame. The bounds on counts (of parts, of events in a
// part, of metadata pairs, of streams in a state frame) stop early what
// running out of bytes stops anyway: no case needs one of them alone.
func TestDecodeFrameMalformed(t *testing.T) {
	plain := EventData{ID: ID{4}, Type: "t"}
	negative := -time.Second
	valid := encodedEntry(0, 0, 1, plain)
	want := RecordedEvent{EventData: EventData{ID: ID{4}, Type: "t", SchemaVersion: 1}, Stream: "s", Time: time.Unix(0, 1)}
	// body is plain's entry after its position, revision and time:
	//	id [16] | correlation [16] | causation [16] | uv schema version |
	//	type | encoding | uv metadata pairs | data
	body := appendBody(nil, &plain)
	ids := body[:48]
	withBody := func(fields ...[]byte) []byte { return appendEntry(nil, 0, 0, 1, concat(fields...)) }
	// events is a frame of one part, of stream s, holding entry alone.
	events := func(entry []byte) []byte {
		return payloadOf(kindEvents, uvarintOf(1), stringOf("s"), uvarintOf(1), entry)
	}
	state := func(stream string, next, start uint64, flags byte, maxAge time.Duration) []byte {
		return concat(stringOf(stream), uvarintOf(next), uvarintOf(start), []byte{flags}, uvarintOf(0), uvarintOf(uint64(maxAge)))
	}
	// The valid payloads the others are made from decode.
	for _, p := range [][]byte{
		events(valid), events(withBody(body)), events(withBody(ids, uvarintOf(1), stringOf("t"), stringOf(""), uvarintOf(1), stringOf("k"), stringOf("v"), stringOf(""))),
		payloadOf(kindDelete, stringOf("s"), []byte{1}),
		payloadOf(kindMetadata, stringOf("s"), uvarintOf(1), uvarintOf(1)),
		payloadOf(kindState, uvarintOf(1), state("s", 1, 1, 3, 0)),
	} {
		if _, _, err := decodeAll(p); err != nil {
			t.Fatalf("decodeFrame(%x) = %v, want nil", p, err)
		}
	}

	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"kind 0", payloadOf(0, stringOf("s"), []byte{0})},
		{"kind 5", payloadOf(kindState+1, stringOf("s"), []byte{0})},
		{"kind 5 alone", payloadOf(kindState + 1)},

		// Events: uv parts, each: uv len, stream, uv n, n entries.
		{"events: no parts", payloadOf(kindEvents, uvarintOf(0))},
		{"events: parts not a varint", payloadOf(kindEvents, overflow, stringOf("s"), uvarintOf(1), valid)},
		{"events: more parts than bytes", payloadOf(kindEvents, uvarintOf(1<<40), stringOf("s"), uvarintOf(1), valid)},
		{"events: a part missing", payloadOf(kindEvents, uvarintOf(2), stringOf("s"), uvarintOf(1), valid)},
		{"events: stream of no name", payloadOf(kindEvents, uvarintOf(1), stringOf(""), uvarintOf(1), valid)},
		{"events: stream past the end", payloadOf(kindEvents, uvarintOf(1), uvarintOf(2), []byte("s"))},
		{"events: part of no events", payloadOf(kindEvents, uvarintOf(1), stringOf("s"), uvarintOf(0))},
		{"events: more events than bytes", payloadOf(kindEvents, uvarintOf(1), stringOf("s"), uvarintOf(1<<40), valid)},
		{"events: an event missing", payloadOf(kindEvents, uvarintOf(1), stringOf("s"), uvarintOf(2), valid)},
		{"events: entry past the end", events(valid[:len(valid)-1])},
		{"events: entry length not a varint", events(overflow)},
		{"events: a byte after the last part", payloadOf(kindEvents, uvarintOf(1), stringOf("s"), uvarintOf(1), valid, []byte{0})},

		// Entry: uv len, uv position, uv revision, i64 time, then body.
		{"entry: empty", events(uvarintOf(0))},
		{"entry: position not a varint", events(concat(uvarintOf(uint64(len(overflow)+len(valid)-2)), overflow, valid[2:]))},
		{"entry: cut in its IDs", events(withBody(ids[:20]))},
		{"entry: schema version 0", events(withBody(ids, uvarintOf(0), body[49:]))},
		{"entry: schema version past the largest", events(withBody(ids, uvarintOf(maxSchemaVersion+1), body[49:]))},
		{"entry: zero ID", events(encodedEntry(0, 0, 1, EventData{Type: "t"}))},
		{"entry: no type", events(encodedEntry(0, 0, 1, EventData{ID: ID{4}}))},
		{"entry: type past the longest", events(encodedEntry(0, 0, 1, EventData{ID: ID{4}, Type: strings.Repeat("t", maxNameLen+1)}))},
		{"entry: more metadata pairs than bytes", events(withBody(ids, uvarintOf(1), stringOf("t"), stringOf(""), uvarintOf(1<<40), stringOf("k"), stringOf("v"), stringOf("")))},
		{"entry: a metadata value missing", events(withBody(ids, uvarintOf(1), stringOf("t"), stringOf(""), uvarintOf(1), stringOf("k")))},
		{"entry: no data length", events(withBody(body[:len(body)-1]))},
		{"entry: data past the end", events(withBody(body[:len(body)-1], uvarintOf(2), []byte("d")))},
		{"entry: a byte after its data", events(withBody(body, []byte{0}))},

		// Delete: uv len, stream, u8 tombstone (0 or 1).
		{"delete: tombstone 2", payloadOf(kindDelete, stringOf("s"), []byte{2})},
		{"delete: no tombstone byte", payloadOf(kindDelete, stringOf("s"))},
		{"delete: stream of no name", payloadOf(kindDelete, stringOf(""), []byte{1})},
		{"delete: a byte after", payloadOf(kindDelete, stringOf("s"), []byte{1, 0})},

		// Metadata: uv len, stream, uv max count, uv max age in ns.
		{"metadata: negative max age", payloadOf(kindMetadata, stringOf("s"), uvarintOf(1), uvarintOf(uint64(negative)))},
		{"metadata: no max age", payloadOf(kindMetadata, stringOf("s"), uvarintOf(1))},
		{"metadata: max count not a varint", payloadOf(kindMetadata, stringOf("s"), overflow, uvarintOf(1))},
		{"metadata: stream of no name", payloadOf(kindMetadata, stringOf(""), uvarintOf(1), uvarintOf(1))},
		{"metadata: a byte after", payloadOf(kindMetadata, stringOf("s"), uvarintOf(1), uvarintOf(1), []byte{0})},

		// State: uv n, n × (uv len, stream, uv next revision, uv start,
		// u8 flags, uv max count, uv max age in ns).
		{"state: more streams than bytes", payloadOf(kindState, uvarintOf(1<<40), state("s", 1, 1, 3, 0))},
		{"state: a stream missing", payloadOf(kindState, uvarintOf(2), state("s", 1, 1, 3, 0))},
		{"state: stream of no name", payloadOf(kindState, uvarintOf(1), state("", 1, 1, 3, 0))},
		{"state: flags 4", payloadOf(kindState, uvarintOf(1), state("s", 1, 1, 4, 0))},
		{"state: start past the next revision", payloadOf(kindState, uvarintOf(1), state("s", 1, 2, 0, 0))},
		{"state: negative max age", payloadOf(kindState, uvarintOf(1), state("s", 1, 1, 0, -time.Second))},
		{"state: no max age", payloadOf(kindState, uvarintOf(1), concat(stringOf("s"), uvarintOf(1), uvarintOf(1), []byte{0}, uvarintOf(0)))},
		{"state: a byte after", payloadOf(kindState, uvarintOf(1), state("s", 1, 1, 0, 0), []byte{0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, events, err := decodeAll(tc.payload)
			if !errors.Is(err, errMalformed) {
				t.Errorf("decodeFrame(%x) = %v, want %v", tc.payload, err, errMalformed)
			}
			for _, e := range events {
				if diff := cmp.Diff(want, e.Event); diff != "" {
					t.Errorf("decodeFrame(%x) yielded an event not written (-want +got):\n%s", tc.payload, diff)
				}
			}
		})
	}
}

// TestDecodeSegHeader decodes a segment header and headers valid but for
// one field: damage is an error that does not wrap ErrInvalid (opening
// reports it as a CorruptionError), and a sound header of another format
// version one that does.
func TestDecodeSegHeader(t *testing.T) {
	valid := segHeader{seq: 7, firstPos: 1 << 40}.encode()
	h, err := decodeSegHeader(valid)
	if err != nil || h != (segHeader{seq: 7, firstPos: 1 << 40}) {
		t.Fatalf("decodeSegHeader(%x) = %+v, %v, want seq 7 from 1<<40", valid, h, err)
	}
	edit := func(f func(b []byte)) []byte {
		b := append([]byte(nil), valid...)
		f(b)
		return b
	}
	// resum makes the checksum of header b match.
	resum := func(b []byte) {
		clear(b[12:16])
		binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b, castagnoli))
	}
	for _, tc := range []struct {
		name    string
		header  []byte
		invalid bool // a sound header this version does not read
	}{
		{"short", valid[:segHeaderSize-1], false},
		{"magic", edit(func(b []byte) { b[7] = 'X'; resum(b) }), false},
		{"checksum", edit(func(b []byte) { b[16] ^= 1 }), false},
		{"version 2", edit(func(b []byte) {
			binary.LittleEndian.PutUint16(b[8:], segVersion+1)
			resum(b)
		}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeSegHeader(tc.header)
			if err == nil || errors.Is(err, ErrInvalid) != tc.invalid {
				t.Errorf("decodeSegHeader(%x) = %v, want an error, wrapping ErrInvalid: %v", tc.header, err, tc.invalid)
			}
		})
	}
}

// TestFileFormatWritten checks that the payloads the tests above make by
// hand are the ones a FileStore writes: it makes a store write a frame of
// every kind and compares them byte for byte. Every change is a group of
// its own, and a segment of one byte is full before it (with its header
// alone), so each change starts a segment, which under retention starts
// with the state of every stream.
func TestFileFormatWritten(t *testing.T) {
	dir := t.TempDir()
	opts := &FileStoreOptions{Sync: SyncNever, MaxSegmentSize: 1, RetainSize: 1 << 30, now: func() time.Time { return time.Unix(0, 100) }}
	s, err := OpenFileStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	full := EventData{
		ID: ID{1}, CorrelationID: ID{2}, CausationID: ID{3}, Type: "placed", SchemaVersion: 3,
		Encoding: "json", Metadata: Metadata{"k": "v"}, Data: []byte(`{"n":1}`),
	}
	for _, err := range []error{
		s.SetStreamMetadata(ctx, "a", StreamMetadata{MaxCount: 10, MaxAge: time.Hour}),
		s.Tombstone(ctx, "b", Any),
		func() error { _, err := s.Append(ctx, "a", Any, full); return err }(),
		s.Delete(ctx, "a", Any),
		func() error { _, err := s.Append(ctx, "c", Any, EventData{ID: ID{4}, Type: "t"}); return err }(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var got [][][]byte // the payloads of each segment
	for seq := uint64(1); ; seq++ {
		b, err := os.ReadFile(filepath.Join(dir, segmentName(seq)))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var payloads [][]byte
		if _, _, err := scanSegment(b, "", func(_ int, p []byte) error {
			payloads = append(payloads, p)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got = append(got, payloads)
	}
	none := concat(uvarintOf(0), uvarintOf(0))
	limits := concat(uvarintOf(10), uvarintOf(uint64(time.Hour)))
	state := func(records ...[]byte) []byte {
		return payloadOf(kindState, uvarintOf(uint64(len(records))), concat(records...))
	}
	a := func(next, start uint64, flags byte) []byte {
		return concat(stringOf("a"), uvarintOf(next), uvarintOf(start), []byte{flags}, limits)
	}
	b := concat(stringOf("b"), uvarintOf(0), uvarintOf(0), []byte{3}, none)
	want := [][][]byte{
		nil, // full with its header alone
		{state(), payloadOf(kindMetadata, stringOf("a"), limits)},
		{state(a(0, 0, 0)), payloadOf(kindDelete, stringOf("b"), []byte{1})},
		{state(a(0, 0, 0), b), payloadOf(kindEvents, uvarintOf(1), stringOf("a"), uvarintOf(1), encodedEntry(0, 0, 100, full))},
		{state(a(1, 0, 0), b), payloadOf(kindDelete, stringOf("a"), []byte{0})},
		{state(a(1, 0, 1), b), payloadOf(kindEvents, uvarintOf(1), stringOf("c"), uvarintOf(1), encodedEntry(1, 0, 100, EventData{ID: ID{4}, Type: "t"}))},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("payloads of each segment (-want +got):\n%s", diff)
	}
}
