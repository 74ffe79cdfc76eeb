package eventbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
)

// Snapshot is the state of a stream, such as an aggregate's, after the
// event at Revision, kept so that loading the stream can start there
// instead of replaying it from the start.
//
// The state is stored encoded by the [Registry]'s codec for T, and a load
// from a snapshot starts from what the codec decodes, where a replay (or
// an [Aggregate]'s cache) has the state as it was folded: State must
// survive the codec's round trip unchanged, or a load gives another state
// whenever a snapshot is used. [SaveSnapshot] checks that the state
// decodes, not that it decodes to the same value: with encoding/json,
// unexported fields come back zero and a value in a field of type any
// comes back as a map[string]any, a float64 or the like, with no error.
//
// A snapshot is found by the type name and schema version that T is
// registered with (see [Register]), not by T's fields, so a state type or
// evolve function changed without a new schema version loads the older
// snapshots as they decode: with encoding/json, a field added comes back
// zero and one removed or renamed is dropped, with no error, so loads from
// them give states that a replay would not, and every later snapshot folds
// on from those. Register such a change as the next version
// ([TypeOptions].Version): older snapshots are then passed over (the
// stream replays), unless upcasters (see [RegisterUpcaster]) bring them
// up to it, which must give what a replay would. For the same reason, two
// [Aggregate]s over one stream whose states have one registration share
// its snapshots, each loading the other's latest as its own: states folded
// differently from one stream (a balance and a count of events, both int)
// need a registered type each.
type Snapshot[T any] struct {
	// Revision is the revision of the last event folded into State.
	Revision uint64
	// State is the state after that event.
	State T
}

// snapshotRevision is the metadata key of a snapshot's Revision.
const snapshotRevision = "eventbus.revision"

// snapshotStream returns the system stream that holds stream's snapshots
// of the state registered as name. Each state type has its own, since a
// snapshot stream shows only its latest snapshot: two [Aggregate]s of
// different states over one stream would otherwise replace each other's.
// A type name has no ':', so no two names and streams share one, nor any
// with a [legacySnapshotStream].
func snapshotStream(name, stream string) string {
	return systemStream("$snapshot:"+name+":", stream)
}

// legacySnapshotStream returns the system stream that held stream's
// snapshots, of every state type, before each had a [snapshotStream].
func legacySnapshotStream(stream string) string {
	return systemStream("$snapshot-", stream)
}

// SaveSnapshot stores snap as the latest snapshot of stream in s, encoded
// by r, whose registration of T (see [Register]) gives the snapshot's
// type name and schema version: it returns an error wrapping
// [ErrUnknownEvent] if T is not registered, as an interface type never is,
// since [LoadSnapshot] could not load the snapshot. snap.Revision is the
// revision of the last event folded into the state, not the number of
// events: SaveSnapshot returns an error wrapping [ErrInvalid] for a
// revision the stream does not have in its current life (past its last
// revision, or before its last soft delete) or a stream that does not
// exist, since such a snapshot would later be folded on as if it held
// events it does not, and one wrapping [ErrStreamDeleted] for a tombstoned
// stream. It returns the registry's error for a state that its
// codec encodes but does not decode back (such as encoding/json with a
// non-nil value in a field of a non-empty interface type), which would
// fail every later load; a state that decodes to another value is saved
// (see [Snapshot]).
//
// Snapshots live in a system stream of their own for each state type and
// stream: "$snapshot:", T's type name, ':' and the stream's name (or, for
// a name too long for that or starting with "sha256:", "sha256:" and its
// hash in place of the name), so that states of different types folded
// from one stream keep their snapshots apart. Only the latest one is
// ever read, so SaveSnapshot gives that stream MaxCount 1 (see
// [StreamMetadata]): reads show no older snapshot, though the store still
// holds them (a [MemoryStore] for good, a [FileStore] until its retention
// deletes their segment). Earlier releases kept the snapshots of
// every state type in one stream, "$snapshot-" followed by the stream's
// name; [LoadSnapshot] reads the latest one there while T has none of its
// own.
//
// A latest snapshot of a later revision, saved with the same type name and
// schema version, is kept: SaveSnapshot then saves nothing and returns
// nil. Of snapshots saved at once, as by two [Aggregate.Execute] calls,
// the latest revision is thus the one read, never an older one saved
// last. If other saves get in before each of its appends, 8 times in a
// row, SaveSnapshot gives up with an error wrapping
// [ErrWrongExpectedVersion].
func SaveSnapshot[T any](ctx context.Context, s Store, r *Registry, stream string, snap Snapshot[T]) error {
	if err := checkContext(ctx, "SaveSnapshot"); err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("%w: SaveSnapshot: nil store", ErrInvalid)
	}
	if err := checkStream(stream); err != nil {
		return fmt.Errorf("SaveSnapshot: %w", err)
	}
	// LoadSnapshot finds a snapshot by T's registration, where Encode uses
	// the state's dynamic type: one saved for an interface T never loads.
	entry, err := entryOf[T](r)
	if err != nil {
		return fmt.Errorf("SaveSnapshot: state type %v: %w", reflect.TypeFor[T](), err)
	}
	e, err := r.Encode(snap.State)
	if err != nil {
		return err
	}
	// Every load of the stream would fail on a snapshot that does not
	// decode, where replaying its events works.
	if _, _, err := r.decode(e, e.SchemaVersion); err != nil {
		return fmt.Errorf("SaveSnapshot: stream %q: the state does not decode: %w", stream, err)
	}
	// LoadSnapshot ignores a snapshot past the stream's end only until the
	// stream reaches its revision; then it would fold the stream on from a
	// state that lacks the events up to there. A stream's revision only
	// grows, and its Start with it, so one checked now stays usable or is
	// ignored for good.
	info, err := s.StreamInfo(ctx, stream)
	if err != nil {
		return err
	}
	switch {
	case info.Tombstoned:
		// Not the caller's mistake, as a stream never written is: one
		// that folded its events before the tombstone matches it.
		return fmt.Errorf("%w: SaveSnapshot: stream %q", ErrStreamDeleted, stream)
	case !info.Exists:
		return fmt.Errorf("%w: SaveSnapshot: stream %q has no event to snapshot", ErrInvalid, stream)
	case snap.Revision > info.Revision || snap.Revision < info.Start:
		return fmt.Errorf("%w: SaveSnapshot: stream %q has no revision %d (its current life has revisions %d to %d); Revision is the revision of the last event folded into the state", ErrInvalid, stream, snap.Revision, info.Start, info.Revision)
	}
	e.Metadata = Metadata{snapshotRevision: strconv.FormatUint(snap.Revision, 10)}
	return appendLatest(ctx, s, snapshotStream(entry.name, stream), e, func(latest RecordedEvent) bool {
		rev, err := strconv.ParseUint(latest.Metadata[snapshotRevision], 10, 64)
		return err == nil && rev > snap.Revision && latest.Type == e.Type && max(latest.SchemaVersion, 1) == e.SchemaVersion
	})
}

// LoadSnapshot returns the latest snapshot of stream saved by
// [SaveSnapshot], and whether there is one. A snapshot saved with an
// older schema version than the one T is registered with is upcast to T
// by the upcasters registered for the state's type name (see
// [RegisterUpcaster]), which must then give the state that T's evolve
// would have folded from the same events; without a Go type for its
// version and upcasters from there to T's, it is stale, as is one of a
// later version or another type name: LoadSnapshot ignores it and returns
// false, so that the caller replays the stream. So is a snapshot that the
// stream cannot go on from: one whose Revision the stream has not reached
// (such as its event count, one past its last revision), one of a stream
// that does not exist, or one from before the stream's last soft delete
// (see [StreamInfo].Start). A snapshot that does not decode into T (a
// field's type changed without a new schema version; most other changes
// decode without error, see [Snapshot]) gets the registry's error, and
// one whose stored revision does not parse an error wrapping
// [ErrInvalid]; an [Aggregate] then replays the stream instead, and its
// next snapshot replaces that one. As SaveSnapshot, it returns an error
// wrapping [ErrUnknownEvent] if T is not registered in r (an interface
// type never is), one wrapping [ErrInvalid] for a nil store, a Registry
// not made by [NewRegistry] or a bad stream name, or the store's error.
func LoadSnapshot[T any](ctx context.Context, s Store, r *Registry, stream string) (Snapshot[T], bool, error) {
	snap, ok, err := latestSnapshot[T](ctx, s, r, stream)
	if err != nil || !ok {
		return Snapshot[T]{}, false, err
	}
	state, err := snap.decode(r, stream)
	if errors.Is(err, ErrUnknownEvent) {
		return Snapshot[T]{}, false, nil // an older version, with no upcasters to T's
	}
	if err != nil {
		return Snapshot[T]{}, false, err
	}
	return Snapshot[T]{Revision: snap.rev, State: state}, true, nil
}

// storedSnapshot is a snapshot as stored, of the state T.
type storedSnapshot[T any] struct {
	rev     uint64    // the revision of the last event folded in
	data    EventData // the encoded state
	version int       // the schema version T is registered with
	bad     error     // why rev is unknown, if it is: no use, as no decode
}

// latestSnapshot returns the latest snapshot of stream that has T's type
// name, and whether there is one. One of a later schema version than T's,
// or whose revision does not parse, is returned with bad set (wrapping
// ErrUnknownEvent, or ErrInvalid), for the caller to pass over as one that
// does not decode: the events it stands for are in the stream, and the
// next snapshot saved replaces it.
func latestSnapshot[T any](ctx context.Context, s Store, r *Registry, stream string) (storedSnapshot[T], bool, error) {
	var none storedSnapshot[T]
	if err := checkContext(ctx, "LoadSnapshot"); err != nil {
		return none, false, err
	}
	if s == nil {
		return none, false, fmt.Errorf("%w: LoadSnapshot: nil store", ErrInvalid)
	}
	if err := r.check("LoadSnapshot"); err != nil {
		return none, false, err
	}
	entry, err := entryOf[T](r)
	if err != nil {
		return none, false, err
	}
	if err := checkStream(stream); err != nil {
		return none, false, fmt.Errorf("LoadSnapshot: %w", err)
	}
	e, ok, err := readLatest(ctx, s, snapshotStream(entry.name, stream))
	if err == nil && !ok {
		// One saved before each state type had its own stream.
		e, ok, err = readLatest(ctx, s, legacySnapshotStream(stream))
	}
	if err != nil || !ok {
		return none, false, err
	}
	if e.Type != entry.name {
		return none, false, nil
	}
	// A later version, as an older release sees one saved by a newer,
	// has no upcaster down to T's: passed over as one that does not
	// decode, for a Load that cannot replay its events to tell why.
	if v := max(e.SchemaVersion, 1); v > entry.version {
		return storedSnapshot[T]{bad: fmt.Errorf("%w: snapshot of %q at position %d: version %d of %q, later than %v's version %d (saved by a newer release?)", ErrUnknownEvent, stream, e.Position, v, e.Type, reflect.TypeFor[T](), entry.version)}, true, nil
	}
	rev, err := strconv.ParseUint(e.Metadata[snapshotRevision], 10, 64)
	if err != nil {
		return storedSnapshot[T]{bad: fmt.Errorf("%w: snapshot of %q at position %d: bad revision: %v", ErrInvalid, stream, e.Position, err)}, true, nil
	}
	// Asked after the read, since a stream's revision only grows: a
	// snapshot saved concurrently is of a revision the stream has.
	info, err := s.StreamInfo(ctx, stream)
	if err != nil {
		return none, false, err
	}
	if !info.Exists || rev > info.Revision || rev < info.Start {
		return none, false, nil
	}
	return storedSnapshot[T]{rev: rev, data: e.EventData, version: entry.version}, true, nil
}

// decode returns the state of stream's snapshot s, upcast to T's version.
func (s storedSnapshot[T]) decode(r *Registry, stream string) (T, error) {
	var zero T
	if s.bad != nil {
		return zero, s.bad
	}
	v, _, err := r.decode(s.data, s.version)
	if err != nil {
		return zero, fmt.Errorf("snapshot of %q: %w", stream, err)
	}
	state, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("%w: snapshot of %q decodes to %T, not %T", ErrInvalid, stream, v, zero)
	}
	return state, nil
}

// readLatest returns the last event that stream shows, and whether it
// shows one.
func readLatest(ctx context.Context, s Store, stream string) (RecordedEvent, bool, error) {
	for e, err := range s.ReadStream(ctx, stream, &ReadOptions{Direction: Backwards, From: End, Limit: 1}) {
		return e, err == nil, err
	}
	return RecordedEvent{}, false, nil
}
