package eventbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
)

// AggregateOptions configures an [Aggregate]. The zero value (or nil) takes
// the defaults.
type AggregateOptions struct {
	// SnapshotEvery, if positive, saves a snapshot of the state (see
	// [SaveSnapshot]) each time a command takes the stream past a multiple
	// of this many events, so that loading replays fewer of them. The state
	// type must then be registered in the Registry, with a codec that gives
	// it back unchanged (see [Snapshot]), and its encoding must fit in
	// the store's MaxEventSize: a snapshot that fails to save is skipped
	// (see [Aggregate.Execute]). Zero means never, and then
	// [Aggregate.Load] reads no snapshot either, not even one saved by a
	// call of SaveSnapshot: set it to use those. Snapshots are found by
	// T's registration alone, so Aggregates over one stream whose evolve
	// functions differ must not share a state type: each would load the
	// other's snapshots as its own (see [Snapshot]).
	SnapshotEvery int
	// MaxAttempts is how many times [Aggregate.Execute] runs the
	// load-decide-append cycle when appends conflict; zero means 3.
	MaxAttempts int
	// CacheSize, if positive, keeps the state of up to this many streams in
	// memory, the least recently used evicted first, so that a load only
	// reads the events appended since. Zero means no cache.
	CacheSize int
}

// Aggregate loads and changes aggregates of one kind, each the state of
// type T folded from the events of type E in its own stream of a [Store].
// E is usually an interface that the kind's event types implement, each of
// them registered in the [Registry]; T is a value that evolve turns into
// the next state.
//
// States are shared (with the cache, and with concurrent loads), so evolve
// must return a new state rather than modify the one it is given in place:
// copy a map or slice before changing it. For the same reason, neither
// decide (see [Aggregate.Execute]) nor a caller of [Aggregate.Load] may
// modify the state it is given: with a cache, a map entry deleted there is
// deleted from the state that every later load and command of the stream
// starts from, and from its next snapshot, though no event says so. An
// Aggregate is safe for concurrent use. A panic in evolve fails the Load
// or Execute that folds the event with a [*PanicError]; Execute folds a
// command's events before it appends them, so an event that makes evolve
// panic is never appended. A nil or zero Aggregate, one not
// made by [NewAggregate], has no store: Load and Execute return an error
// wrapping [ErrInvalid], and CacheStats zeros.
//
// A state is folded from every event after the one it starts from (none, a
// snapshot or a cached state), so an event that its stream no longer shows
// cannot be skipped: if the stream's [StreamMetadata] (MaxCount, MaxAge) or
// a [FileStore]'s retention hides one, Load and Execute fail with an error
// wrapping [ErrTruncated] instead of returning a state without it. A
// stream with MaxCount or MaxAge therefore needs snapshots, often enough
// that the events after the latest one stay shown: SnapshotEvery well
// below MaxCount, and 1 with MaxAge, since an aggregate may go quiet for
// longer than that with events after its last snapshot. Snapshots do not
// help against a FileStore's retention, which deletes them with the rest
// of their segment: an aggregate that goes quiet until retention deletes
// its events fails to load from then on, snapshots or not.
type Aggregate[T, E any] struct {
	store    Store
	reg      *Registry
	evolve   func(T, E) T
	every    uint64
	attempts int
	cache    *aggregateCache[T]
	// unsaved is the latest snapshot that failed to save, for Load's
	// ErrTruncated error to say why the stream has no later one.
	unsaved atomic.Pointer[unsavedSnapshot]
}

// unsavedSnapshot is a snapshot of stream at rev that failed to save.
type unsavedSnapshot struct {
	stream string
	rev    uint64
	err    error
}

// NewAggregate returns an Aggregate over s whose events r decodes and
// evolve folds into a state, starting from the zero T. It returns an error
// wrapping [ErrInvalid] for a nil argument, a Registry not made by
// [NewRegistry], a negative option or an E of an older schema version
// (events load upcast to the latest, which such an E cannot hold: use the
// latest version's Go type, or an interface), or [ErrUnknownEvent] for an
// E that is neither an interface nor registered in r (a pointer to a
// registered type, say), to which no event decodes, and if SnapshotEvery
// is set and T is not registered in r.
func NewAggregate[T, E any](s Store, r *Registry, evolve func(state T, event E) T, opts *AggregateOptions) (*Aggregate[T, E], error) {
	var o AggregateOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case s == nil:
		return nil, fmt.Errorf("%w: NewAggregate: nil store", ErrInvalid)
	case evolve == nil:
		return nil, fmt.Errorf("%w: NewAggregate: nil evolve", ErrInvalid)
	case o.SnapshotEvery < 0:
		return nil, fmt.Errorf("%w: AggregateOptions.SnapshotEvery %d is negative", ErrInvalid, o.SnapshotEvery)
	case o.MaxAttempts < 0:
		return nil, fmt.Errorf("%w: AggregateOptions.MaxAttempts %d is negative", ErrInvalid, o.MaxAttempts)
	case o.CacheSize < 0:
		return nil, fmt.Errorf("%w: AggregateOptions.CacheSize %d is negative", ErrInvalid, o.CacheSize)
	}
	if err := r.check("NewAggregate"); err != nil {
		return nil, err
	}
	if _, err := checkLatest[E](r); err != nil {
		return nil, fmt.Errorf("NewAggregate: events: %w", err)
	}
	if o.SnapshotEvery > 0 {
		if _, err := entryOf[T](r); err != nil {
			return nil, fmt.Errorf("AggregateOptions.SnapshotEvery: %w", err)
		}
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 3
	}
	a := &Aggregate[T, E]{store: s, reg: r, evolve: evolve, every: uint64(o.SnapshotEvery), attempts: o.MaxAttempts}
	if o.CacheSize > 0 {
		a.cache = newAggregateCache[T](o.CacheSize)
	}
	return a, nil
}

// Version is an aggregate's state as of a revision of its stream.
type Version[T any] struct {
	// State is the state after the stream's events so far. It is shared
	// with the Aggregate's cache and other loads: do not modify it (see
	// [Aggregate]).
	State T
	// Expected is the stream's revision to append after: [NoStream] for an
	// aggregate with no event yet, else Exact of its last event's revision.
	Expected ExpectedRevision
}

// Load returns the state of the aggregate in stream: the latest snapshot,
// if there is one and SnapshotEvery is set, with the events after it
// folded in, else the fold of all its events. A stream with no
// event, or soft-deleted since its last event, gives the zero T and
// [NoStream]; a stream appended to again after a soft delete starts over
// from the zero T, ignoring snapshots and cached states of its earlier
// life. If an event after the cached state or snapshot it starts from (or
// after none) is no longer read from the stream, it returns an error
// wrapping [ErrTruncated] that names the missing revisions (and quotes
// the error of the Aggregate's latest failed snapshot save, if it was of
// that stream, see [Aggregate.Execute]). A snapshot that does not decode
// into T (a field's type changed without a new schema version; most other
// changes decode, see [Snapshot]), that is of an older schema version
// with no upcasters to T's or of a later one (saved by a newer release),
// or whose stored revision does not parse, is passed over: Load replays
// the events it stands for, and if they are no longer read, its
// ErrTruncated error wraps the snapshot's decode error too (one wrapping
// [ErrUnknownEvent] for a missing upcaster or a later version,
// [ErrInvalid] for a bad revision). If the stream
// changes under each of several reads in a row (soft-deleted again and
// again), it gives up with an error wrapping [ErrWrongExpectedVersion], as
// for a conflict with another writer; if the store reads the stream out of
// revision order, breaking the [Store] contract, one wrapping [ErrInvalid].
// Otherwise it returns the store's or the registry's error.
func (a *Aggregate[T, E]) Load(ctx context.Context, stream string) (Version[T], error) {
	if err := a.check("Aggregate.Load"); err != nil {
		return Version[T]{}, err
	}
	if err := checkContext(ctx, "Aggregate.Load"); err != nil {
		return Version[T]{}, err
	}
	if err := checkStream(stream); err != nil {
		return Version[T]{}, fmt.Errorf("Aggregate.Load: %w", err)
	}
	base, cached := Version[T]{Expected: NoStream}, false
	if a.cache != nil {
		if v, ok := a.cache.get(stream); ok {
			base, cached = v, true
		}
	}
	snapshotted := false // whether Load has asked for the snapshot since base was set
	var skipped error    // why the latest snapshot asked for was not used
	if !cached && a.every > 0 {
		var err error
		if base, skipped, err = a.snapshot(ctx, stream, base); err != nil {
			return Version[T]{}, err
		}
		snapshotted = true
	}
	// before is the stream's state before the read, once a read found no
	// event where the stream had some.
	var before *StreamInfo
	for round := 1; ; round++ {
		if round > maxLoadReads {
			return Version[T]{}, fmt.Errorf("%w: stream %q changed under %d reads in a row (deleted again and again, or a store whose reads and StreamInfo disagree)", ErrWrongExpectedVersion, stream, maxLoadReads)
		}
		v, r, err := a.replay(ctx, stream, base)
		if err != nil {
			return Version[T]{}, err
		}
		if base.Expected == NoStream && r.n > 0 && r.first == 0 {
			return a.loaded(stream, v, false), nil // every event, from the first
		}
		// Start only grows, so asking after the read also catches a
		// delete made during it.
		info, err := a.store.StreamInfo(ctx, stream)
		if err != nil {
			return Version[T]{}, err
		}
		if base.Expected != NoStream && (info.Deleted || base.Expected.rev < info.Start) {
			// The events after base continue it only if the stream was
			// not soft-deleted since: its revisions go on after a delete.
			// The snapshot asked for, if any, was of that earlier life.
			base, cached, before, snapshotted = Version[T]{Expected: NoStream}, false, nil, false
			if a.cache != nil {
				a.cache.drop(stream)
			}
			continue
		}
		from := max(base.Expected.next(), info.Start) // the first event v needs
		missing, last := false, uint64(0)             // whether events from from to last are hidden
		switch {
		case r.n > 0 && r.first < info.Start:
			// The read saw a life of the stream deleted since.
			before = nil
			continue
		case r.n > 0 && r.first > from:
			missing, last = true, r.first-1
		case r.n == 0 && info.Exists && info.Revision >= from:
			// Events after base, but none read: hidden (by max age), or
			// appended after the read. A read that starts after info
			// tells, if the stream keeps its life (Start) meanwhile.
			if before == nil || before.Start != info.Start {
				before = &info
				continue
			}
			missing, last = true, before.Revision
		}
		if !missing {
			return a.loaded(stream, v, cached && r.n == 0), nil
		}
		// A snapshot may start after the missing events.
		if a.every > 0 && !snapshotted {
			snapshotted = true
			newer, why, err := a.snapshot(ctx, stream, base)
			if err != nil {
				return Version[T]{}, err
			}
			skipped = why
			if newer.Expected != base.Expected {
				base, cached, before = newer, false, nil
				continue
			}
		}
		err = a.truncated(stream, from, last)
		if skipped != nil {
			err = fmt.Errorf("%w; the latest snapshot does not decode: %w", err, skipped)
		}
		if u := a.unsaved.Load(); u != nil && u.stream == stream {
			// Not wrapped: a context's error, say, is not this call's.
			err = fmt.Errorf("%w; saving its snapshot at revision %d failed: %v", err, u.rev, u.err)
		}
		return Version[T]{}, err
	}
}

// maxLoadReads bounds the reads of one Load: a read is made again only when
// the stream was deleted, or hid events, while it ran.
const maxLoadReads = 8

// loaded caches v as the state of stream and returns it; hit tells whether
// it came from the cache as it was.
func (a *Aggregate[T, E]) loaded(stream string, v Version[T], hit bool) Version[T] {
	if a.cache != nil {
		a.cache.count(hit)
		a.cache.put(stream, v)
	}
	return v
}

// snapshot returns the latest usable snapshot of stream as a Version if it
// is later than v, else v. A snapshot that does not decode is no reason
// to fail, since the events it stands for are in the stream: snapshot
// returns v and the decode error as skipped (for a snapshot of an older
// schema version with no upcasters to T's, or of a later one, one
// wrapping ErrUnknownEvent), for Load to report if it cannot replay those
// events either.
func (a *Aggregate[T, E]) snapshot(ctx context.Context, stream string, v Version[T]) (_ Version[T], skipped, err error) {
	snap, ok, err := latestSnapshot[T](ctx, a.store, a.reg, stream)
	switch {
	case err != nil || !ok:
		return v, nil, err
	case snap.bad != nil: // of no known revision, so never used
		return v, snap.bad, nil
	case v.Expected != NoStream && snap.rev <= v.Expected.rev:
		return v, nil, nil
	}
	state, err := snap.decode(a.reg, stream)
	if err != nil {
		return v, err, nil
	}
	return Version[T]{State: state, Expected: Exact(snap.rev)}, nil, nil
}

// truncated returns the error of a, which reads snapshots if its every is
// set, for the events from first to last of stream that a state needs and
// that are no longer read from it.
func (a *Aggregate[T, E]) truncated(stream string, first, last uint64) error {
	revs := fmt.Sprintf("revisions %d to %d are", first, last)
	if first == last {
		revs = fmt.Sprintf("revision %d is", first)
	}
	// A snapshot is the way out only for an Aggregate that reads them.
	unread := ""
	if a.every == 0 {
		unread = ", if read: set AggregateOptions.SnapshotEvery"
	}
	return fmt.Errorf("%w: stream %q: %s no longer read (hidden by its max count or max age, or deleted by retention); a snapshot at revision %d or later would cover them%s", ErrTruncated, stream, revs, last, unread)
}

// replayRead is what a replay read: n events, the first at revision first.
type replayRead struct {
	first uint64
	n     int
}

// replay folds the events of stream after v into v. An event missing
// between two it reads fails it with ErrTruncated; one at or before a
// revision already folded, which a store that keeps its contract never
// yields, with ErrInvalid.
func (a *Aggregate[T, E]) replay(ctx context.Context, stream string, v Version[T]) (Version[T], replayRead, error) {
	var r replayRead
	for e, err := range a.store.ReadStream(ctx, stream, &ReadOptions{From: v.Expected.next()}) {
		if err != nil {
			return Version[T]{}, replayRead{}, err
		}
		if e.Revision < v.Expected.next() {
			return Version[T]{}, replayRead{}, fmt.Errorf("%w: stream %q: the store read revision %d where revision %d or later was due: a Store must read a stream's events in revision order, from ReadOptions.From on", ErrInvalid, stream, e.Revision, v.Expected.next())
		}
		if r.n == 0 {
			r.first = e.Revision
		} else if e.Revision != v.Expected.rev+1 {
			return Version[T]{}, replayRead{}, a.truncated(stream, v.Expected.rev+1, e.Revision-1)
		}
		p, err := Decode[E](a.reg, e.EventData)
		if err == nil {
			v.State, err = a.fold(v.State, p)
		}
		if err != nil {
			return Version[T]{}, replayRead{}, fmt.Errorf("stream %q revision %d: %w", stream, e.Revision, err)
		}
		v.Expected = Exact(e.Revision)
		r.n++
	}
	return v, r, nil
}

// fold returns the state that evolve makes of state and e, or the
// *PanicError that evolve's panic becomes: an event that makes it panic
// fails the load or the command, as one that does not decode does, and a
// command's events are folded before they are appended, so such an event
// is never appended.
func (a *Aggregate[T, E]) fold(state T, e E) (_ T, err error) {
	defer recovered(&err)
	return a.evolve(state, e), nil
}

// Execute runs a command on the aggregate in stream: it loads the state,
// asks decide for the events the command makes, and appends them if the
// stream has not changed since the load. If it has, another command won:
// Execute loads the new state and asks decide again, up to MaxAttempts
// times in all. decide may thus run more than once, and must have no effect
// besides its result: it must not modify the state it is given, which is
// shared (see [Aggregate]). With no event, nothing is appended and the
// result is the zero AppendResult.
//
// It returns decide's error as is; after MaxAttempts conflicts, an error
// wrapping the last [*WrongExpectedVersionError]; Load's error, such as one
// wrapping [ErrTruncated], before decide runs; one wrapping [ErrInvalid]
// for a nil event (a nil pointer included); or the store's or the
// registry's error, such as [Registry.Encode]'s for an event of a type not
// registered or [Decode]'s for one that the registry cannot read back,
// which are not appended (these errors name the stream and the event). A
// snapshot that fails to save is skipped, since the events are committed:
// the next load replays a few more events. One that fails every time, as
// a state grown past the store's MaxEventSize does, leaves loads replaying
// ever more events and, on a stream with MaxCount or MaxAge, failing with
// [ErrTruncated] once the events after the last snapshot saved are
// hidden; the Aggregate remembers the latest failed save, and Load's
// ErrTruncated error quotes its error if it was of that stream.
// [SaveSnapshot] returns it too.
//
// The events are linked as those of [StoreTopic.Publish] are: given a
// handler's context, they take the handled event's correlation ID, its ID
// as causation ID, and its trace context (see [WithTraceparent]), which a
// context made by WithTraceparent gives them too; otherwise each is its
// own correlation ID. Events get new IDs on every call, so a command run
// again, as by a durable subscription's handler handling an event again
// after a crash, appends its events again: to make such a command
// idempotent, put the handled event's ID in the events and have decide
// refuse an ID that the state holds.
func (a *Aggregate[T, E]) Execute(ctx context.Context, stream string, decide func(state T) ([]E, error)) (AppendResult, error) {
	if err := a.check("Aggregate.Execute"); err != nil {
		return AppendResult{}, err
	}
	if err := checkContext(ctx, "Aggregate.Execute"); err != nil {
		return AppendResult{}, err
	}
	if decide == nil {
		return AppendResult{}, fmt.Errorf("%w: Aggregate.Execute: nil decide", ErrInvalid)
	}
	if err := checkStream(stream); err != nil {
		return AppendResult{}, fmt.Errorf("Aggregate.Execute: %w", err)
	}
	var conflict error
	for range a.attempts {
		v, err := a.Load(ctx, stream)
		if err != nil {
			return AppendResult{}, err
		}
		events, err := decide(v.State)
		if err != nil || len(events) == 0 {
			return AppendResult{}, err
		}
		res, err := a.append(ctx, stream, v, events)
		if !errors.Is(err, ErrWrongExpectedVersion) {
			return res, err
		}
		// The cached state, if any, stays: it is as of its revision, and
		// the next load reads only the events that won since.
		conflict = err
	}
	return AppendResult{}, fmt.Errorf("eventbus: stream %q: %d attempts conflicted: %w", stream, a.attempts, conflict)
}

// append appends events to stream after v, then caches and snapshots the
// new state.
func (a *Aggregate[T, E]) append(ctx context.Context, stream string, v Version[T], events []E) (AppendResult, error) {
	data := make([]EventData, len(events))
	state := v.State
	p, hasParent := parent(ctx)
	for i, e := range events {
		// Encode's own error for a nil event wraps ErrUnknownEvent and
		// names neither the stream nor the event. A nil pointer, of a
		// pointer E or in an interface E, is a nil event too: Encode takes
		// it (JSON's null), and every load would fold a nil.
		if any(e) == nil {
			return AppendResult{}, fmt.Errorf("%w: stream %q: event %d of %d is nil", ErrInvalid, stream, i+1, len(events))
		}
		if nilPointer(any(e)) {
			return AppendResult{}, fmt.Errorf("%w: stream %q: event %d of %d is a nil %T", ErrInvalid, stream, i+1, len(events), any(e))
		}
		var err error
		if data[i], err = a.reg.Encode(e); err != nil {
			return AppendResult{}, fmt.Errorf("stream %q: event %d of %d does not encode: %w", stream, i+1, len(events), err)
		}
		if hasParent { // as StoreTopic.Publish links its event
			data[i].CausationID, data[i].CorrelationID = p.ID, p.CorrelationID
			data[i].Metadata = inherit(data[i].Metadata, &p)
		}
		if data[i].CorrelationID.IsZero() {
			data[i].CorrelationID = data[i].ID
		}
		// The new state folds the events as a load reads them back (an
		// older schema version upcast, what the codec keeps), not as
		// decide made them: the cache and the snapshot must hold what a
		// replay gives. An event that does not decode is not appended,
		// where it would fail every load of the stream.
		p, err := Decode[E](a.reg, data[i])
		if err != nil {
			return AppendResult{}, fmt.Errorf("stream %q: event %d of %d does not decode: %w", stream, i+1, len(events), err)
		}
		if state, err = a.fold(state, p); err != nil {
			return AppendResult{}, fmt.Errorf("stream %q: event %d of %d: %w", stream, i+1, len(events), err)
		}
	}
	res, err := a.store.Append(ctx, stream, v.Expected, data...)
	if err != nil {
		return AppendResult{}, err
	}
	before := v.Expected.next() // events in the stream before the append
	v.State, v.Expected = state, Exact(res.Revision)
	if a.cache != nil {
		a.cache.put(stream, v)
	}
	if a.every > 0 && before/a.every != (res.Revision+1)/a.every {
		err := SaveSnapshot(ctx, a.store, a.reg, stream, Snapshot[T]{Revision: res.Revision, State: v.State})
		if u := a.unsaved.Load(); err != nil {
			a.unsaved.Store(&unsavedSnapshot{stream: stream, rev: res.Revision, err: err})
		} else if u != nil && u.stream == stream {
			a.unsaved.CompareAndSwap(u, nil)
		}
	}
	return res, nil
}

// check returns an error wrapping ErrInvalid for a nil Aggregate, or one
// that NewAggregate did not make (a zero Aggregate has no store), given to
// call.
func (a *Aggregate[T, E]) check(call string) error {
	if a == nil || a.store == nil {
		return fmt.Errorf("%w: %s on an Aggregate[%v, %v] not made by NewAggregate", ErrInvalid, call, reflect.TypeFor[T](), reflect.TypeFor[E]())
	}
	return nil
}

// CacheStats returns how many loads found the state in the cache with no
// newer event to read (hits), and how many did not (misses): zeros without
// a cache, or for an Aggregate not made by [NewAggregate].
func (a *Aggregate[T, E]) CacheStats() (hits, misses uint64) {
	if a == nil || a.cache == nil {
		return 0, 0
	}
	return a.cache.stats()
}
