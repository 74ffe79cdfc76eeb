package eventbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Store is an append-only log of events grouped in streams, the contract of
// the event store: [MemoryStore] and [FileStore] implement it, and package
// eventbustest holds the conformance suite that every implementation must
// pass.
//
// # Streams, revisions and positions
//
// A stream is named by any non-empty UTF-8 string of at most 1,024 bytes.
// Each event of a stream has a revision (0, 1, 2, ...); each event of the
// store has a global position (0, 1, 2, ...) that is dense and follows commit
// order across all streams, so reading by position never misses an event
// committed before the last one read. Streams whose names start with '$' are
// system streams, such as the snapshots of [SaveSnapshot]: [Store.ReadAll]
// and [Store.Subscribe] skip them unless the filter's StreamPrefix starts
// with '$'.
//
// # Appends
//
// An append is atomic: all of its events are committed, with consecutive
// revisions and positions, or none is. It first checks the stream against
// an [ExpectedRevision] and fails with a [*WrongExpectedVersionError] on a
// mismatch. Appends are idempotent by event ID, following EventStoreDB: when
// every event of the batch is already committed to the stream in the same
// order, right after the expected revision (for [Exact]), from the first
// revision of one of the stream's lives (for [NoStream]: 0, or the first
// appended after a soft delete), or anywhere among at least the stream's
// last 10,000 events (for [Any] and [StreamExists]), the append succeeds
// with the result of the first one and writes nothing; when only some
// are, it fails with [ErrPartialDuplicate], as it does when all are but
// elsewhere in a stream that is in the expected state. A retried append
// is therefore safe. Only the IDs are compared, as EventStoreDB compares
// them: a retry whose events carry another type, data or metadata under
// the committed IDs is a replay all the same, with no error, and the store
// keeps the events of the first append; an event that changed needs a new
// ID. Events larger than the store's limit, or batches larger than its
// limit, fail with [ErrTooLarge] before anything is written.
//
// # Reads
//
// Reads return lazy iterators: they read as the loop advances, never load
// the whole log, and see the events committed when the loop starts. The
// first error ends the sequence. Reads and subscriptions keep a copy of
// their options: the caller may change or reuse them, Filter.Types
// included, once the call returns. [Store.ReadStream] applies the stream's
// deletion and [StreamMetadata] (max count, max age); [Store.ReadAll] and
// [Store.Subscribe] see every committed event, as EventStoreDB's $all does.
//
// # Deletion
//
// [Store.Delete] soft-deletes a stream: its events are no longer read from
// the stream, it counts as absent for expected revisions, and a later
// append starts it again with the next revision, a new life. It forgets
// no event ID (EventStoreDB's keeps the events too): a retry of an append
// committed before it succeeds with the first result and writes nothing,
// whether the stream was written again since or not. [Store.Tombstone]
// deletes a stream forever: reading or writing it fails with
// [ErrStreamDeleted].
//
// # Concurrency
//
// Every method is safe for concurrent use. Appends to one stream are
// serialised by the expected-revision check; iterators may be used from
// any goroutine but not from two at once. A store calls no user code while
// holding a lock. After Close, every method returns [ErrClosed] and running
// iterators end with it at their next check: they may first yield some
// more events (up to 256) or finish, but never stop short
// without an error.
type Store interface {
	// Append appends events to stream atomically if the stream is in the
	// expected state, and returns the revision and position of the last
	// event. It fails with an error wrapping [ErrInvalid] for an empty
	// batch, a bad stream name, two events with the same ID, or an event
	// with a zero ID, a bad Type or a SchemaVersion outside 0 to 2^31.
	Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error)

	// AppendMulti appends to several streams in one atomic step: every
	// append is checked first, then all are committed or none is. Results
	// are in the order of appends. Naming one stream twice is invalid.
	AppendMulti(ctx context.Context, appends ...StreamAppend) ([]AppendResult, error)

	// ReadStream returns the events of one stream by revision; see
	// [ReadOptions]. A stream that does not exist, or was soft-deleted,
	// yields nothing; a tombstoned one yields [ErrStreamDeleted].
	ReadStream(ctx context.Context, stream string, opts *ReadOptions) iter.Seq2[RecordedEvent, error]

	// ReadAll returns the events of every stream by global position; see
	// [ReadOptions].
	ReadAll(ctx context.Context, opts *ReadOptions) iter.Seq2[RecordedEvent, error]

	// Subscribe returns a catch-up subscription: the events from a position
	// on, committed ones first and then new ones as they are committed, in
	// position order, with no gap and no duplicate between the two. It
	// never drops a slow consumer: events are read from the store at the
	// consumer's pace. It calls the options' CaughtUp and Passed as
	// [SubscribeOptions] says. The sequence ends only with an error: ctx's
	// error when ctx is done, or [ErrClosed] when the store closes.
	Subscribe(ctx context.Context, opts *SubscribeOptions) iter.Seq2[RecordedEvent, error]

	// Delete soft-deletes stream if it is in the expected state. Deleting
	// a stream that was never written, even one given metadata, succeeds
	// and does nothing.
	Delete(ctx context.Context, stream string, expected ExpectedRevision) error

	// Tombstone deletes stream forever if it is in the expected state. A
	// stream that never existed can be tombstoned, to reserve its name.
	Tombstone(ctx context.Context, stream string, expected ExpectedRevision) error

	// SetStreamMetadata replaces the metadata of stream, which need not
	// exist yet. It takes effect on the next read. It fails with
	// [ErrStreamDeleted] for a tombstoned stream.
	SetStreamMetadata(ctx context.Context, stream string, md StreamMetadata) error

	// StreamInfo returns the state of stream; a stream never written has
	// the zero StreamInfo, but for the Metadata it was given, if any, and
	// Tombstoned, if it was tombstoned to reserve its name.
	StreamInfo(ctx context.Context, stream string) (StreamInfo, error)

	// Close releases the store. Running iterators end with [ErrClosed] (as
	// the type's doc says). It is idempotent.
	Close() error
}

// EventData is an event to append. Its zero value is not valid: ID and Type
// are required.
type EventData struct {
	// ID identifies the event; appends are idempotent by ID alone, whatever
	// the rest of the event holds (see [Store]). Use [NewID].
	ID ID
	// Type is the event type name, such as "user.created": 1 to 249
	// letters, digits, '.', '_' and '-'.
	Type string
	// SchemaVersion is the version of Data's schema; zero means 1.
	SchemaVersion int
	// Encoding says how Data is compressed: empty for not at all, "deflate"
	// for compress/flate. A [Registry] sets it; stores keep it as is;
	// [EventData.Decompress] undoes it.
	Encoding string
	// CorrelationID and CausationID link the event to the one that started
	// its chain and to the one that caused it, as in [Header].
	CorrelationID, CausationID ID
	// Metadata holds free-form strings. The store keeps a copy; an empty
	// one reads back as nil.
	Metadata Metadata
	// Data is the encoded payload. The store keeps a copy; an empty one
	// reads back as nil.
	Data []byte
}

// RecordedEvent is an event read from a [Store]. Its Data and Metadata are
// shared with the store and other readers and must not be modified.
type RecordedEvent struct {
	EventData
	// Stream is the name of the event's stream.
	Stream string
	// Revision is the event's place in its stream, from 0.
	Revision uint64
	// Position is the event's place in the store, from 0.
	Position uint64
	// Time is when the event was committed, by the wall clock, and the
	// same for the events of one append. The stores of this package never
	// stamp a commit earlier than the one before it: while the wall clock
	// is behind the latest Time in the store (stepped back by an NTP
	// correction, or a FileStore opened again on a host whose clock is
	// behind), commits get that latest Time. So a clock that ran ahead,
	// even once and then was corrected, stamps every later commit with its
	// reading, a FileStore's after it is opened again too, until the wall
	// clock passes it, and [StreamMetadata].MaxAge and
	// [FileStoreOptions].RetainAge count the age of those events from it.
	Time time.Time
}

// AppendResult is what a successful append committed.
type AppendResult struct {
	// Revision is the stream revision of the batch's last event.
	Revision uint64
	// Position is the global position of the batch's last event.
	Position uint64
}

// StreamAppend is one stream's part of [Store.AppendMulti].
type StreamAppend struct {
	// Stream is the stream to append to.
	Stream string
	// Expected is the state the stream must be in; the zero value is [Any].
	Expected ExpectedRevision
	// Events are the events to append, at least one.
	Events []EventData
}

// ExpectedRevision is the state a stream must be in for an append or a
// delete to go ahead: [Any], [NoStream], [StreamExists] or [Exact]. The zero
// value is Any.
type ExpectedRevision struct {
	kind expectKind
	rev  uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectExists
	expectExact
)

var (
	// Any accepts the stream in any state.
	Any = ExpectedRevision{}
	// NoStream requires that the stream does not exist, or was soft-deleted.
	NoStream = ExpectedRevision{kind: expectNoStream}
	// StreamExists requires that the stream exists and is not deleted.
	StreamExists = ExpectedRevision{kind: expectExists}
)

// Exact requires that the stream's last event has revision rev.
func Exact(rev uint64) ExpectedRevision { return ExpectedRevision{kind: expectExact, rev: rev} }

// next returns the revision of the event that follows e, which is
// [NoStream] or [Exact]: 0 for NoStream, else the revision after e's.
func (e ExpectedRevision) next() uint64 {
	if e == NoStream {
		return 0
	}
	return e.rev + 1
}

// String returns "any", "no stream", "stream exists" or the revision.
func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectExists:
		return "stream exists"
	case expectExact:
		return strconv.FormatUint(e.rev, 10)
	}
	return "any"
}

// Direction is the order of a read.
type Direction uint8

const (
	// Forwards reads in increasing revision or position.
	Forwards Direction = iota
	// Backwards reads in decreasing revision or position.
	Backwards
)

// End stands for the end of a stream or of the store in [ReadOptions].From
// and [SubscribeOptions].From: read Backwards from End to start at the last
// event, or Subscribe from End to receive only events committed later.
const End uint64 = math.MaxUint64

// ReadOptions selects the events of a read. The zero value (or nil) reads
// every event forwards from the start.
type ReadOptions struct {
	// Direction is Forwards (the zero value) or Backwards; reads fail
	// with an error wrapping [ErrInvalid] for any other value.
	Direction Direction
	// From is the revision (ReadStream) or position (ReadAll) of the first
	// event to read, included; past the last event, a Backwards read starts
	// at the last event. See [End].
	From uint64
	// Limit is the most events to yield; zero means no limit, and reads
	// with a negative one fail with an error wrapping [ErrInvalid].
	Limit int
	// Filter selects events; events it rejects do not count toward Limit.
	Filter Filter
}

// SubscribeOptions configures [Store.Subscribe]. The zero value (or nil)
// subscribes to every event from position 0.
type SubscribeOptions struct {
	// From is the position of the first event to deliver, or [End] for
	// only the events committed after the sequence starts.
	From uint64
	// Filter selects events.
	Filter Filter
	// CaughtUp, if not nil, is called once, in the goroutine iterating the
	// subscription, when it has delivered every event committed so far and
	// starts waiting for new ones; not once the store is closed, when the
	// subscription ends with [ErrClosed]. Next is the position that the
	// next committed event will have, or From if that is later and not
	// [End]: the subscription has passed every position before next.
	CaughtUp func(next uint64)
	// Passed, if not nil, is called as CaughtUp is, in the goroutine
	// iterating the subscription and not once the store is closed, each
	// time it starts waiting for new events having passed positions since
	// it started or last called either: the consumer learns that it has
	// passed the events that the filter skips (or that a [FileStore]'s
	// retention removed), which it is never given, without waiting for the
	// next one that it is. [Durable.WaitFor] relies on it.
	Passed func(next uint64)
}

// Filter selects events by stream name and type. Its zero value selects
// every event: outside system streams for [Store.ReadAll] and
// [Store.Subscribe], while [Store.ReadStream] of a system stream (see
// [Store]) reads its events as those of any other stream.
type Filter struct {
	// StreamPrefix selects the streams whose names start with it. A prefix
	// starting with '$' selects system streams too; ReadStream needs none
	// to read one.
	StreamPrefix string
	// Types selects the events whose type is one of them; empty selects
	// every type.
	Types []string
}

// match reports whether f selects an event of type eventType in stream,
// for reads of every stream.
func (f *Filter) match(stream, eventType string) bool {
	return f.matchStream(stream) && f.matchType(eventType)
}

// matchStream reports whether f selects the events of stream, for reads of
// every stream.
func (f *Filter) matchStream(stream string) bool {
	if stream[0] == '$' && (f.StreamPrefix == "" || f.StreamPrefix[0] != '$') {
		return false
	}
	return strings.HasPrefix(stream, f.StreamPrefix)
}

// matchType reports whether f selects events of type eventType.
func (f *Filter) matchType(eventType string) bool {
	return len(f.Types) == 0 || slices.Contains(f.Types, eventType)
}

// StreamMetadata limits which events of a stream are read. Its zero value
// imposes no limit. Limits apply when reading: events beyond them are
// hidden from [Store.ReadStream] but keep their revisions and positions.
type StreamMetadata struct {
	// MaxCount, if positive, hides all but the stream's last MaxCount events.
	MaxCount uint64
	// MaxAge, if positive, hides events committed longer ago than MaxAge:
	// those whose [RecordedEvent].Time is more than MaxAge before the wall
	// clock's reading when read. A Time ahead of the wall clock (see
	// RecordedEvent.Time) keeps its events until MaxAge after it.
	MaxAge time.Duration
}

// StreamInfo is the state of a stream.
type StreamInfo struct {
	// Exists is true when the stream has events and is not deleted.
	Exists bool
	// Revision is the revision of the stream's last event, also after a
	// soft delete; zero when the stream was never written.
	Revision uint64
	// Deleted is true after a soft delete, until the next append.
	Deleted bool
	// Start is the revision of the first event of the stream's current
	// life: zero, or after a soft delete the revision of the first event
	// appended since (or that the next append gets). Events before it are
	// never read from the stream again, so a state folded from them (a
	// snapshot, a cache) is stale if its revision is below Start; an
	// [Aggregate] relies on it. A Store that supports Delete must set it.
	Start uint64
	// Tombstoned is true after [Store.Tombstone].
	Tombstoned bool
	// Metadata is the stream's metadata.
	Metadata StreamMetadata
}

// streamInfo is the StreamInfo of a stream whose next revision is next and
// whose current life began at start.
func streamInfo(next, start uint64, deleted, tombstoned bool, md StreamMetadata) StreamInfo {
	info := StreamInfo{Deleted: deleted && !tombstoned, Tombstoned: tombstoned, Metadata: md, Start: lifeStart(start, next, deleted)}
	if next > 0 {
		info.Revision = next - 1
		info.Exists = !deleted
	}
	return info
}

// lifeStart returns the first revision of a stream's current life: start,
// the first since it was created or last soft-deleted, or next, the one its
// next append gets, while it is deleted.
func lifeStart(start, next uint64, deleted bool) uint64 {
	if deleted {
		return next
	}
	return start
}

// WrongExpectedVersionError reports that a stream was not in the state an
// append or delete expected. It matches [ErrWrongExpectedVersion] with
// errors.Is; use errors.As to read the stream and revisions.
type WrongExpectedVersionError struct {
	// Stream is the stream that was checked.
	Stream string
	// Expected is the state the caller asked for.
	Expected ExpectedRevision
	// Actual is the stream's state: NoStream, or Exact(its last revision).
	Actual ExpectedRevision
}

// Error names the stream and both states. A nil
// *WrongExpectedVersionError reads as the zero one.
func (e *WrongExpectedVersionError) Error() string {
	if e == nil {
		e = &WrongExpectedVersionError{}
	}
	return fmt.Sprintf("eventbus: stream %q: expected revision %v, actual %v", e.Stream, e.Expected, e.Actual)
}

// Unwrap returns [ErrWrongExpectedVersion].
func (e *WrongExpectedVersionError) Unwrap() error { return ErrWrongExpectedVersion }

// maxStreamLen bounds stream names so that backends can frame them simply.
const maxStreamLen = 1024

// checkStream validates a stream name.
func checkStream(stream string) error {
	switch {
	case stream == "":
		return fmt.Errorf("%w: stream name is empty", ErrInvalid)
	case len(stream) > maxStreamLen:
		return fmt.Errorf("%w: stream name %.20q... is %d bytes, more than %d", ErrInvalid, stream, len(stream), maxStreamLen)
	case !utf8.ValidString(stream):
		return fmt.Errorf("%w: stream name %q is not valid UTF-8", ErrInvalid, stream)
	}
	return nil
}

// systemStream returns the name of a stream the library keeps for name,
// prefix followed by name; or, where that is no valid stream name (too
// long, or name is not UTF-8), or name starts with "sha256:", prefix,
// "sha256:" and the hex SHA-256 of name: one name, one stream.
func systemStream(prefix, name string) string {
	if s := prefix + name; !strings.HasPrefix(name, "sha256:") && checkStream(s) == nil {
		return s
	}
	sum := sha256.Sum256([]byte(name))
	return prefix + "sha256:" + hex.EncodeToString(sum[:])
}

// checkEvents validates a batch for stream against the size limits and
// returns its total size in bytes, as measured by eventSize.
func checkEvents(stream string, events []EventData, maxEvent, maxBatch int) (int, error) {
	if err := checkStream(stream); err != nil {
		return 0, err
	}
	if len(events) == 0 {
		return 0, fmt.Errorf("%w: stream %q: no events to append", ErrInvalid, stream)
	}
	total := 0
	for i := range events {
		e := &events[i]
		if e.ID.IsZero() {
			return 0, fmt.Errorf("%w: stream %q: event %d has a zero ID; use NewID", ErrInvalid, stream, i)
		}
		if err := checkName("event type", e.Type); err != nil {
			return 0, fmt.Errorf("stream %q: event %d: %w", stream, i, err)
		}
		if e.SchemaVersion < 0 || int64(e.SchemaVersion) > maxSchemaVersion {
			return 0, fmt.Errorf("%w: stream %q: event %d: SchemaVersion %d is outside 0 to %d", ErrInvalid, stream, i, e.SchemaVersion, int64(maxSchemaVersion))
		}
		n := eventSize(e)
		if n > maxEvent {
			return 0, fmt.Errorf("%w: stream %q: event %d (%s) is %d bytes, more than %d", ErrTooLarge, stream, i, e.Type, n, maxEvent)
		}
		total += n
	}
	if err := checkUniqueIDs(stream, events); err != nil {
		return 0, err
	}
	if total > maxBatch {
		return 0, fmt.Errorf("%w: stream %q: batch of %d events is %d bytes, more than %d", ErrTooLarge, stream, len(events), total, maxBatch)
	}
	return total, nil
}

// eventSize is the size of an event as the size limits count it: its type,
// encoding, metadata and data.
func eventSize(e *EventData) int {
	n := len(e.Type) + len(e.Encoding) + len(e.Data)
	for k, v := range e.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// checkUniqueIDs rejects a batch that holds one event ID twice.
func checkUniqueIDs(stream string, events []EventData) error {
	if len(events) <= 16 {
		for i := range events {
			for j := range i {
				if events[j].ID == events[i].ID {
					return fmt.Errorf("%w: stream %q: events %d and %d have the same ID %v", ErrInvalid, stream, j, i, events[i].ID)
				}
			}
		}
		return nil
	}
	seen := make(map[ID]int, len(events))
	for i := range events {
		if j, ok := seen[events[i].ID]; ok {
			return fmt.Errorf("%w: stream %q: events %d and %d have the same ID %v", ErrInvalid, stream, j, i, events[i].ID)
		}
		seen[events[i].ID] = i
	}
	return nil
}

// check returns a [*WrongExpectedVersionError] unless a stream whose state
// is actual (NoStream or Exact) meets e.
func (e ExpectedRevision) check(stream string, actual ExpectedRevision) error {
	ok := true
	switch e.kind {
	case expectNoStream:
		ok = actual.kind == expectNoStream
	case expectExists:
		ok = actual.kind != expectNoStream
	case expectExact:
		ok = actual == e
	}
	if !ok {
		return &WrongExpectedVersionError{Stream: stream, Expected: e, Actual: actual}
	}
	return nil
}

// lives records where the lives of a stream begin: the first at revision
// 0, each later one at the first revision appended after a soft delete.
// A store keeps those of the events it still holds.
type lives struct {
	start   uint64   // of the current life: see [StreamInfo].Start
	earlier []uint64 // of the earlier lives after the first, ascending
}

// restart begins a new life at rev, the stream's next revision, when a
// soft-deleted stream is written again.
func (l *lives) restart(rev uint64) {
	if l.start > 0 {
		l.earlier = append(l.earlier, l.start)
	}
	l.start = rev
}

// begins reports whether a life of the stream begins at rev.
func (l *lives) begins(rev uint64) bool {
	if rev == 0 || rev == l.start {
		return true
	}
	_, ok := slices.BinarySearch(l.earlier, rev)
	return ok
}

// trim drops the earlier lives that begin before rev, the stream's first
// revision left after retention: no append can replay their first events.
func (l *lives) trim(rev uint64) {
	k, _ := slices.BinarySearch(l.earlier, rev)
	l.earlier = l.earlier[k:]
}

// replayed applies the idempotence rules of [Store] to an append of events
// to stream. Lookup returns the revision of an event ID committed to the
// stream (within the backend's window); actual is the stream's state and
// l where its lives begin. Replayed returns ok and the revision of the
// batch's first event when the whole batch is already committed as
// expected says, false when none of it is, and an error otherwise.
func replayed(stream string, expected, actual ExpectedRevision, l *lives, events []EventData, lookup func(ID) (uint64, bool)) (first uint64, ok bool, err error) {
	first, inOrder := lookup(events[0].ID)
	found := 0
	for i := range events {
		rev, ok := lookup(events[i].ID)
		if ok {
			found++
		}
		inOrder = inOrder && ok && rev == first+uint64(i)
	}
	switch {
	case found == 0:
		return 0, false, nil
	case !inOrder:
		return 0, false, fmt.Errorf("%w: stream %q: %d of %d events are committed already, not as one batch", ErrPartialDuplicate, stream, found, len(events))
	case expected.kind == expectExact && (first == 0 || first-1 != expected.rev),
		expected.kind == expectNoStream && !l.begins(first):
		// Committed elsewhere in the stream: a mismatch, unless the stream
		// is as expected, which a WrongExpectedVersionError would report
		// as expected and actual both, and a caller could never meet.
		if err := expected.check(stream, actual); err != nil {
			return 0, false, err
		}
		return 0, false, fmt.Errorf("%w: stream %q: the %d events are committed already from revision %d, not right after expected revision %v", ErrPartialDuplicate, stream, len(events), first, expected)
	}
	return first, true, nil
}

// decide applies the rules of [Store] to an append of events to stream,
// whose state is actual (NoStream or Exact) and whose lives begin where l
// says. It returns replay and the revision of the batch's first event when
// the whole batch is committed already, and an error when the append must
// fail.
func decide(stream string, tombstoned bool, expected, actual ExpectedRevision, l *lives, events []EventData, lookup func(ID) (uint64, bool)) (first uint64, replay bool, err error) {
	if tombstoned {
		return 0, false, fmt.Errorf("%w: stream %q", ErrStreamDeleted, stream)
	}
	first, replay, err = replayed(stream, expected, actual, l, events, lookup)
	if err != nil || replay {
		return first, replay, err
	}
	return 0, false, expected.check(stream, actual)
}

// storeNotMade returns the error of a call on a nil or zero store of type
// typ, one that its constructor ctor did not make.
func storeNotMade(call, typ, ctor string) error {
	return fmt.Errorf("%w: %s on a %s not made by %s", ErrInvalid, call, typ, ctor)
}

// failed returns an iterator that yields err alone, for a read that cannot
// start.
func failed(err error) iter.Seq2[RecordedEvent, error] {
	return func(yield func(RecordedEvent, error) bool) { yield(RecordedEvent{}, err) }
}

// storeLimits returns the size limits of a store's options, with zero
// meaning the defaults of 1 MiB per event and 16 MiB per append.
func storeLimits(what string, maxEvent, maxBatch int) (int, int, error) {
	if maxEvent < 0 {
		return 0, 0, fmt.Errorf("%w: %s: MaxEventSize %d is negative", ErrInvalid, what, maxEvent)
	}
	if maxBatch < 0 {
		return 0, 0, fmt.Errorf("%w: %s: MaxBatchSize %d is negative", ErrInvalid, what, maxBatch)
	}
	if maxEvent == 0 {
		maxEvent = 1 << 20
	}
	if maxBatch == 0 {
		maxBatch = 16 << 20
	}
	return maxEvent, maxBatch, nil
}

// checkAppends validates the appends of an AppendMulti and returns their
// total size, as checkEvents measures it.
func checkAppends(appends []StreamAppend, maxEvent, maxBatch int) (int, error) {
	if len(appends) == 0 {
		return 0, fmt.Errorf("%w: AppendMulti: no appends", ErrInvalid)
	}
	total := 0
	var seen map[string]bool // past a few appends, where comparing each pair costs more
	if len(appends) > 16 {
		seen = make(map[string]bool, len(appends))
	}
	for i, a := range appends {
		size, err := checkEvents(a.Stream, a.Events, maxEvent, maxBatch)
		if err != nil {
			return 0, err
		}
		twice := seen[a.Stream]
		if seen != nil {
			seen[a.Stream] = true
		} else {
			for _, b := range appends[:i] {
				twice = twice || b.Stream == a.Stream
			}
		}
		if twice {
			return 0, fmt.Errorf("%w: AppendMulti: stream %q appears twice", ErrInvalid, a.Stream)
		}
		if total += size; total > maxBatch {
			return 0, fmt.Errorf("%w: AppendMulti: more than %d bytes", ErrTooLarge, maxBatch)
		}
	}
	return total, nil
}

// span returns the indexes (revisions or positions) that a read visits
// among lo to n-1: forwards from max(from, lo), or backwards from
// min(from, n-1) down to lo.
func span(dir Direction, from, lo, n uint64) iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		if n == 0 {
			return
		}
		if dir == Backwards {
			for i := min(from, n-1) + 1; i > lo; i-- {
				if !yield(i - 1) {
					return
				}
			}
			return
		}
		for i := max(from, lo); i < n; i++ {
			if !yield(i) {
				return
			}
		}
	}
}

// checkEvery is how many events a read yields between checks of its
// context and of the store's closing.
const checkEvery = 256

// maxSchemaVersion is the highest schema version a store keeps.
const maxSchemaVersion = 1 << 31

// errRetained is what get, given to yieldEach, returns for an event that
// retention deleted while the read ran.
var errRetained = errors.New("eventbus: removed by retention")

// getter returns the event at an index (a revision or a position) of a
// store's snapshot for yieldEach, and whether the read keeps it. Each
// store writes its own, so that the work done per event stays one call.
type getter func(uint64) (RecordedEvent, bool, error)

// yieldEach yields the events that get returns for indexes, skipping those
// it does not keep, up to limit (0: no limit). It skips the events that
// retention deleted meanwhile too, so that a read runs as if they had been
// deleted before it started. It stops with an error when get fails, ctx
// is done or closed is set, and reports whether the consumer wants more.
func yieldEach(ctx context.Context, closed *atomic.Bool, limit int, indexes iter.Seq[uint64], get getter, yield func(RecordedEvent, error) bool) bool {
	yielded, seen := 0, 0
	for i := range indexes {
		if seen%checkEvery == 0 {
			if err := interrupted(ctx, closed); err != nil {
				yield(RecordedEvent{}, err)
				return false
			}
		}
		seen++
		e, keep, err := get(i)
		if errors.Is(err, errRetained) {
			continue
		}
		if err != nil {
			if closed.Load() {
				err = ErrClosed
			}
			yield(RecordedEvent{}, err)
			return false
		}
		if !keep {
			continue
		}
		if !yield(e, nil) {
			return false
		}
		if yielded++; yielded == limit {
			return false
		}
	}
	return true
}

// interrupted returns why a read must stop early, or nil.
func interrupted(ctx context.Context, closed *atomic.Bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if closed.Load() {
		return ErrClosed
	}
	return nil
}

// snapshotter is what readStream, readAll and stateOf need of a store:
// snapshots of what it has committed, taken under its lock to read
// without it.
type snapshotter interface {
	// streamView takes a snapshot of stream, whose getter keeps the events
	// that keep selects; readStream fills keep in before it reads.
	streamView(stream string, keep *streamKeep) streamView
	// logView takes a snapshot of the log: the events kept are at
	// positions first to n-1, and get is a getter of those that f selects.
	logView(f *Filter) (first, n uint64, get getter)
	// info returns the state of stream, for stateOf, which holds the
	// store's lock for reading.
	info(stream string) StreamInfo
}

// stateOf is [Store.StreamInfo] for store s, whose lock is mu.
func stateOf(ctx context.Context, s snapshotter, mu *sync.RWMutex, closed *atomic.Bool, stream string) (StreamInfo, error) {
	if err := liveContext(ctx, "StreamInfo"); err != nil {
		return StreamInfo{}, err
	}
	if err := checkStream(stream); err != nil {
		return StreamInfo{}, err
	}
	mu.RLock()
	defer mu.RUnlock()
	if closed.Load() {
		return StreamInfo{}, ErrClosed
	}
	return s.info(stream), nil
}

// readAll is [Store.ReadAll] for store s.
func readAll(ctx context.Context, s snapshotter, closed *atomic.Bool, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	o := copyReadOptions(opts)
	return func(yield func(RecordedEvent, error) bool) { yieldAll(ctx, s, closed, &o, yield) }
}

// yieldAll runs one iteration of readAll. It is a function of its own,
// as catchUp.run is, so that inlining readAll into a store's method does
// not stop yieldEach from being inlined here: yield would escape, and
// with it the caller's loop body.
func yieldAll(ctx context.Context, s snapshotter, closed *atomic.Bool, o *ReadOptions, yield func(RecordedEvent, error) bool) {
	if err := checkContext(ctx, "ReadAll"); err != nil {
		yield(RecordedEvent{}, err)
		return
	}
	if err := checkReadOptions("ReadAll", o); err != nil {
		yield(RecordedEvent{}, err)
		return
	}
	first, n, get := s.logView(&o.Filter)
	if closed.Load() {
		yield(RecordedEvent{}, ErrClosed)
		return
	}
	yieldEach(ctx, closed, o.Limit, span(o.Direction, o.From, first, n), get, yield)
}

// catchUp is what a catch-up subscription needs of a store.
type catchUp struct {
	mu     *sync.RWMutex
	closed *atomic.Bool
	// n is the number of committed events, and waiting the subscriptions
	// waiting for more; mu guards both.
	n       *uint64
	waiting *waiters
	// read yields the events from position next to n-1 that f selects,
	// like yieldEach, from a snapshot it takes.
	read func(ctx context.Context, f *Filter, next, n uint64, yield func(RecordedEvent, error) bool) bool
}

// subscribe is [Store.Subscribe] for the store that s describes. It starts
// no goroutine: the subscription runs in the goroutine iterating it.
func (s catchUp) subscribe(ctx context.Context, opts *SubscribeOptions) iter.Seq2[RecordedEvent, error] {
	var o SubscribeOptions
	if opts != nil {
		o = *opts
	}
	// The caller may reuse its options, Types included, while this runs.
	o.Filter.Types = slices.Clone(o.Filter.Types)
	return func(yield func(RecordedEvent, error) bool) { s.run(ctx, o, yield) }
}

// run runs a catch-up subscription in the goroutine iterating it.
func (s catchUp) run(ctx context.Context, o SubscribeOptions, yield func(RecordedEvent, error) bool) {
	if err := checkContext(ctx, "Subscribe"); err != nil {
		yield(RecordedEvent{}, err)
		return
	}
	next := o.From
	if next == End {
		next = s.end()
	}
	caughtUp := o.CaughtUp == nil
	passed := next // reported passed: From, or the next of CaughtUp or Passed
	for {
		if n := s.end(); next < n {
			if !s.read(ctx, &o.Filter, next, n, yield) {
				return
			}
			next = n
			continue
		}
		if !caughtUp || o.Passed != nil && passed < next {
			if s.closed.Load() { // nothing delivered, nothing to wait for
				yield(RecordedEvent{}, ErrClosed)
				return
			}
			if caughtUp {
				o.Passed(next)
			} else {
				caughtUp = true
				o.CaughtUp(next)
			}
			passed = next
			continue // time passed in the call: look again before waiting
		}
		wait, err := s.waitAfter(next)
		if err != nil {
			yield(RecordedEvent{}, err)
			return
		}
		if wait == nil {
			continue
		}
		select {
		case <-wait:
		case <-ctx.Done():
			yield(RecordedEvent{}, ctx.Err())
			return
		}
	}
}

// end returns the number of committed events.
func (s catchUp) end() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return *s.n
}

// waitAfter returns a channel closed when an event at position next or
// later is committed, or nil when one already is. It fails with ErrClosed
// once the store is closed.
func (s catchUp) waitAfter(next uint64) (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if *s.n > next {
		return nil, nil
	}
	if s.waiting.ch == nil {
		s.waiting.ch = make(chan struct{})
	}
	return s.waiting.ch, nil
}

// waiters wakes the catch-up subscriptions of a store that wait for events
// to be committed. Its fields are guarded by the store's lock.
type waiters struct {
	ch chan struct{} // closed, and set to nil, at the next wake; nil while none waits
}

// wake tells waiting subscribers that something changed.
func (w *waiters) wake() {
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// copyReadOptions returns a copy of opts (nil: the zero ReadOptions) that
// the caller's later changes, to Filter.Types too, leave alone.
func copyReadOptions(opts *ReadOptions) ReadOptions {
	var o ReadOptions
	if opts != nil {
		o = *opts
	}
	o.Filter.Types = slices.Clone(o.Filter.Types)
	return o
}

// checkReadStream validates the arguments of ReadStream.
func checkReadStream(stream string, o *ReadOptions) error {
	if err := checkStream(stream); err != nil {
		return err
	}
	return checkReadOptions("ReadStream", o)
}

// checkReadOptions validates o's Limit and Direction.
func checkReadOptions(call string, o *ReadOptions) error {
	if o.Limit < 0 {
		return fmt.Errorf("%w: %s: Limit %d is negative", ErrInvalid, call, o.Limit)
	}
	if o.Direction > Backwards {
		return fmt.Errorf("%w: %s: Direction %d is neither Forwards nor Backwards", ErrInvalid, call, o.Direction)
	}
	return nil
}

// streamView is a store's snapshot of one stream for readStream.
type streamView struct {
	// n is the stream's next revision; revisions below lo are gone
	// (soft-deleted, or removed by retention).
	lo, n      uint64
	tombstoned bool
	md         StreamMetadata
	// get is a getter, by revision from lo to n-1, of the events that the
	// streamKeep given to snapshotter.streamView selects.
	get getter
}

// streamKeep is the check each event that ReadStream visits must pass:
// one of the filter's types, committed at oldest or later (zero: any time).
type streamKeep struct {
	f      *Filter
	oldest time.Time
}

// keep reports whether ReadStream keeps e.
func (k *streamKeep) keep(e *RecordedEvent) bool {
	return k.f.matchType(e.Type) && (k.oldest.IsZero() || !e.Time.Before(k.oldest))
}

// readStream is [Store.ReadStream] for store s: it reads the events of the
// stream's current life, within its max count and max age.
func readStream(ctx context.Context, s snapshotter, closed *atomic.Bool, stream string, opts *ReadOptions) iter.Seq2[RecordedEvent, error] {
	o := copyReadOptions(opts)
	return func(yield func(RecordedEvent, error) bool) { yieldStream(ctx, s, closed, stream, &o, yield) }
}

// yieldStream runs one iteration of readStream; see yieldAll.
func yieldStream(ctx context.Context, s snapshotter, closed *atomic.Bool, stream string, o *ReadOptions, yield func(RecordedEvent, error) bool) {
	if err := checkContext(ctx, "ReadStream"); err != nil {
		yield(RecordedEvent{}, err)
		return
	}
	if err := checkReadStream(stream, o); err != nil {
		yield(RecordedEvent{}, err)
		return
	}
	keep := streamKeep{f: &o.Filter}
	v := s.streamView(stream, &keep)
	switch {
	case closed.Load():
		yield(RecordedEvent{}, ErrClosed)
		return
	case v.tombstoned:
		yield(RecordedEvent{}, fmt.Errorf("%w: stream %q", ErrStreamDeleted, stream))
		return
	case v.n == 0 || !strings.HasPrefix(stream, o.Filter.StreamPrefix):
		return
	}
	lo := v.lo
	if v.md.MaxCount > 0 && v.n > v.md.MaxCount {
		lo = max(lo, v.n-v.md.MaxCount)
	}
	if v.md.MaxAge > 0 {
		keep.oldest = time.Now().Add(-v.md.MaxAge)
	}
	yieldEach(ctx, closed, o.Limit, span(o.Direction, o.From, lo, v.n), v.get, yield)
}

// commitClock stamps the events of a store's commits with their time: the
// wall clock's reading alone, without the monotonic one, as a FileStore
// reads it back from disk, so that both stores return times that compare
// equal with == (and reflect.DeepEqual) once decoded from anywhere, and
// MaxAge judges events by the wall clock in both. A stamp is never earlier
// than the one before it: MaxAge hides the events committed before a
// moment, and if the wall clock stepped back (an NTP correction, a restart
// on a host whose clock is behind) a stream would keep an earlier event
// and hide a later one, a gap that readers, and Aggregate.Load, would take
// for the stream. The store's lock, or its committer, guards it.
type commitClock struct {
	now  func() time.Time // for tests; nil means time.Now
	last time.Time
}

// stamp returns the time of the next commit.
func (c *commitClock) stamp() time.Time {
	var t time.Time
	if c.now != nil {
		t = c.now()
	} else {
		t = time.Now()
	}
	t = t.Round(0)
	if t.Before(c.last) {
		return c.last
	}
	c.last = t
	return t
}
