package eventbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// accountCents is a later Go type of the account state, registered under
// Account's name and schema version, as by a release that changed the
// state's fields without bumping its version: the snapshots of Account do
// not decode into it.
type accountCents struct {
	Balance struct{ Cents int }
	Events  int
}

func evolveCents(a accountCents, e any) accountCents {
	switch e := e.(type) {
	case Deposited:
		a.Balance.Cents += 100 * e.Amount
	case Withdrawn:
		a.Balance.Cents -= 100 * e.Amount
	}
	a.Events++
	return a
}

// newCentsRegistry returns a registry of the account events and of
// accountCents as the state "account.state" version 1.
func newCentsRegistry(t *testing.T) *eventbus.Registry {
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Deposited](r, nil))
	require.NoError(t, eventbus.Register[Withdrawn](r, nil))
	require.NoError(t, eventbus.Register[accountCents](r, &eventbus.TypeOptions{Name: "account.state"}))
	return r
}

// TestAggregateUndecodableSnapshot checks that a snapshot that no longer
// decodes into the state type does not lock the aggregate out: Load and
// Execute replay the stream's events instead, and the next snapshot
// replaces it. Where the events before the snapshot are hidden, so that
// no replay can stand in for it, Load's error wraps ErrTruncated and the
// snapshot's decode error, also when it starts from a cached state.
func TestAggregateUndecodableSnapshot(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		opts := &eventbus.AggregateOptions{SnapshotEvery: 2}
		accounts := newAccounts(t, s, reg, opts)
		for _, amount := range []int{1, 2, 3} {
			_, err := accounts.Execute(ctx, "account-1", deposit(amount))
			require.NoError(t, err)
		}
		_, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
		require.True(t, ok && err == nil, "LoadSnapshot = %v, %v", ok, err)

		reg2 := newCentsRegistry(t)
		_, _, err = eventbus.LoadSnapshot[accountCents](ctx, s, reg2, "account-1")
		var jsonErr *json.UnmarshalTypeError
		if !errors.As(err, &jsonErr) {
			t.Errorf("LoadSnapshot of a state that does not decode = %v, want the codec's %T", err, jsonErr)
		}
		for _, cache := range []int{0, 10} {
			cents, err := eventbus.NewAggregate(s, reg2, evolveCents, &eventbus.AggregateOptions{SnapshotEvery: 2, CacheSize: cache})
			require.NoError(t, err)
			v, err := cents.Load(ctx, "account-1")
			require.NoError(t, err, "Load over a snapshot that does not decode, cache %d", cache)
			var want accountCents
			want.Balance.Cents, want.Events = 600, 3
			if diff := cmp.Diff(eventbus.Version[accountCents]{State: want, Expected: eventbus.Exact(2)}, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
				t.Errorf("Load, cache %d (-want +got):\n%s", cache, diff)
			}
		}
		cents, err := eventbus.NewAggregate(s, reg2, evolveCents, opts)
		require.NoError(t, err)
		res, err := cents.Execute(ctx, "account-1", func(accountCents) ([]any, error) { return []any{Deposited{Amount: 4}}, nil })
		require.NoError(t, err, "Execute over a snapshot that does not decode")
		snap, ok, err := eventbus.LoadSnapshot[accountCents](ctx, s, reg2, "account-1")
		if err != nil || !ok || snap.Revision != res.Revision || snap.State.Balance.Cents != 1000 {
			t.Errorf("LoadSnapshot after Execute = %+v, %v, %v, want 1000 cents at revision %d", snap, ok, err, res.Revision)
		}

		// loadTruncated deposits amounts to stream, up to the old
		// state's snapshot at revision 1 or past it, hides every event
		// but the last, and wants load's Load to fail for the snapshot,
		// with no events before it to replay instead.
		loadTruncated := func(load *eventbus.Aggregate[accountCents, any], stream string, amounts []int, what string) {
			t.Helper()
			for _, amount := range amounts {
				_, err := accounts.Execute(ctx, stream, deposit(amount))
				require.NoError(t, err)
			}
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 1})
			_, err := load.Load(ctx, stream)
			if !errors.Is(err, eventbus.ErrTruncated) || !errors.As(err, &jsonErr) {
				t.Errorf("%s of a truncated stream over a snapshot that does not decode = %v, want %v and the codec's %T", what, err, eventbus.ErrTruncated, jsonErr)
			}
		}
		// The old state's snapshot at revision 1, the event before it
		// hidden: nothing to load from.
		loadTruncated(cents, "account-2", []int{5, 6}, "Load")
		// The same from a cached state, which Load reads the snapshot
		// for only once it finds the events after the state hidden.
		cached, err := eventbus.NewAggregate(s, reg2, evolveCents, &eventbus.AggregateOptions{SnapshotEvery: 2, CacheSize: 10})
		require.NoError(t, err)
		_, err = accounts.Execute(ctx, "account-3", deposit(5))
		require.NoError(t, err)
		_, err = cached.Load(ctx, "account-3") // caches revision 0
		require.NoError(t, err)
		loadTruncated(cached, "account-3", []int{6, 7}, "Load from a cached state") // the snapshot at 1, the last event at 2
	})
}

// TestAggregateSnapshotOfOlderVersion checks that a snapshot of an older
// schema version of the state is upcast when the registry chains
// upcasters to the state's version, and passed over otherwise: a stream
// whose events before the snapshot are hidden then loads from the upcast
// snapshot, or fails with an error wrapping ErrTruncated that also says,
// wrapping ErrUnknownEvent, which upcaster is missing.
func TestAggregateSnapshotOfOlderVersion(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 2})
		for _, amount := range []int{1, 2, 3} {
			_, err := accounts.Execute(ctx, "account-1", deposit(amount))
			require.NoError(t, err)
		}
		setMetadata(t, s, "account-1", eventbus.StreamMetadata{MaxCount: 1}) // the snapshot is at 1, the last event at 2

		newReg := func(upcast bool) *eventbus.Registry {
			r, err := eventbus.NewRegistry(nil)
			require.NoError(t, err)
			require.NoError(t, eventbus.Register[Deposited](r, nil))
			require.NoError(t, eventbus.Register[Withdrawn](r, nil))
			require.NoError(t, eventbus.Register[Account](r, &eventbus.TypeOptions{Name: "account.state"}))
			require.NoError(t, eventbus.Register[accountCents](r, &eventbus.TypeOptions{Name: "account.state", Version: 2}))
			if upcast {
				require.NoError(t, eventbus.RegisterUpcaster(r, func(a Account) (accountCents, error) {
					var c accountCents
					c.Balance.Cents, c.Events = 100*a.Balance, a.Events
					return c, nil
				}))
			}
			return r
		}

		reg2 := newReg(true)
		var want accountCents
		want.Balance.Cents, want.Events = 300, 2
		snap, ok, err := eventbus.LoadSnapshot[accountCents](ctx, s, reg2, "account-1")
		if err != nil || !ok || snap != (eventbus.Snapshot[accountCents]{Revision: 1, State: want}) {
			t.Errorf("LoadSnapshot of version 1 with an upcaster to 2 = %+v, %v, %v, want %+v at revision 1", snap, ok, err, want)
		}
		cents, err := eventbus.NewAggregate(s, reg2, evolveCents, &eventbus.AggregateOptions{SnapshotEvery: 2})
		require.NoError(t, err)
		v, err := cents.Load(ctx, "account-1")
		want.Balance.Cents, want.Events = 600, 3
		if err != nil || v.State != want || v.Expected != eventbus.Exact(2) {
			t.Errorf("Load from a snapshot of version 1 with an upcaster to 2 = %+v, %v, want %+v at revision 2", v, err, want)
		}

		reg3 := newReg(false)
		snap, ok, err = eventbus.LoadSnapshot[accountCents](ctx, s, reg3, "account-1")
		if err != nil || ok {
			t.Errorf("LoadSnapshot of version 1 without an upcaster to 2 = %+v, %v, %v, want none", snap, ok, err)
		}
		cents, err = eventbus.NewAggregate(s, reg3, evolveCents, &eventbus.AggregateOptions{SnapshotEvery: 2})
		require.NoError(t, err)
		_, err = cents.Load(ctx, "account-1")
		if !errors.Is(err, eventbus.ErrTruncated) || !errors.Is(err, eventbus.ErrUnknownEvent) {
			t.Errorf("Load of a truncated stream over a snapshot of version 1 without an upcaster to 2 = %v, want %v and %v", err, eventbus.ErrTruncated, eventbus.ErrUnknownEvent)
		}

		// A snapshot of a later version than the state's, as an older
		// release sees one saved by a newer: passed over.
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg2, "account-1", eventbus.Snapshot[accountCents]{Revision: 2, State: want}))
		snap1, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
		if err != nil || ok {
			t.Errorf("LoadSnapshot of version 2 as version 1 = %+v, %v, %v, want none", snap1, ok, err)
		}
	})
}

// TestAggregateTruncatedSaysSnapshotIsLater loads, with an older release's
// state type, an aggregate whose latest snapshot a newer release saved at
// a later schema version, on a stream whose max count hides the events
// before it: the snapshot is passed over, and Load's ErrTruncated error
// must say why, wrapping ErrUnknownEvent as for a snapshot of an older
// version without upcasters, rather than suggest that no snapshot exists.
func TestAggregateTruncatedSaysSnapshotIsLater(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		newer, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[Deposited](newer, nil))
		require.NoError(t, eventbus.Register[Withdrawn](newer, nil))
		require.NoError(t, eventbus.Register[accountCents](newer, &eventbus.TypeOptions{Name: "account.state", Version: 2}))
		cents, err := eventbus.NewAggregate(s, newer, evolveCents, &eventbus.AggregateOptions{SnapshotEvery: 1})
		require.NoError(t, err)
		for _, amount := range []int{1, 2, 3} {
			_, err := cents.Execute(ctx, "account-1", func(accountCents) ([]any, error) {
				return []any{Deposited{Amount: amount}}, nil
			})
			require.NoError(t, err)
		}
		setMetadata(t, s, "account-1", eventbus.StreamMetadata{MaxCount: 1})

		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
		_, err = accounts.Load(ctx, "account-1")
		if !errors.Is(err, eventbus.ErrTruncated) || !errors.Is(err, eventbus.ErrUnknownEvent) || !strings.Contains(err.Error(), "version 2") {
			t.Errorf("Load over a snapshot of version 2 as version 1 = %v, want %v and %v naming version 2", err, eventbus.ErrTruncated, eventbus.ErrUnknownEvent)
		}
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || ok {
			t.Errorf("LoadSnapshot of version 2 as version 1 = %+v, %v, %v, want none", snap, ok, err)
		}
	})
}

// readLogStore records the From of each read of a stream.
type readLogStore struct {
	eventbus.Store
	mu    sync.Mutex
	froms []uint64
}

func (s *readLogStore) ReadStream(ctx context.Context, stream string, o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	s.mu.Lock()
	s.froms = append(s.froms, o.From)
	s.mu.Unlock()
	return s.Store.ReadStream(ctx, stream, o)
}

// TestAggregateCacheAfterConflict checks that a command that loses to
// another writer keeps its cached state: the retry reads only the events
// appended since, not the whole stream again.
func TestAggregateCacheAfterConflict(t *testing.T) {
	ctx := t.Context()
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	appendDeposits(t, inner, reg, "account-1", 50)
	s := &readLogStore{Store: inner}
	accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 10})
	_, err = accounts.Load(ctx, "account-1") // fills the cache
	require.NoError(t, err)
	s.froms = nil
	attempts := 0
	_, err = accounts.Execute(ctx, "account-1", func(Account) ([]any, error) {
		if attempts++; attempts == 1 {
			appendDeposits(t, inner, reg, "account-1", 1) // another writer wins
		}
		return []any{Deposited{Amount: 1}}, nil
	})
	require.NoError(t, err)
	if diff := cmp.Diff([]uint64{50, 50}, s.froms); diff != "" {
		t.Errorf("reads of the stream from (-want +got):\n%s", diff)
	}
	v, err := accounts.Load(ctx, "account-1")
	if err != nil || v.State != (Account{Balance: 52, Events: 52}) || v.Expected != eventbus.Exact(51) {
		t.Errorf("Load = %+v, %v, want balance 52 at revision 51", v, err)
	}
}

// depositCount is a second state folded from the account events, as by
// another view of the same stream: it counts the deposits.
type depositCount struct{ Deposits int }

func evolveDepositCount(c depositCount, e any) depositCount {
	if _, ok := e.(Deposited); ok {
		c.Deposits++
	}
	return c
}

// TestAggregateSnapshotsOfTwoStates checks that two Aggregates over one
// stream whose states are of different types each keep their own latest
// snapshot, rather than each overwriting the other's: on a stream whose
// MaxCount hides the events before them, both load from their snapshots.
func TestAggregateSnapshotsOfTwoStates(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		require.NoError(t, eventbus.Register[depositCount](reg, &eventbus.TypeOptions{Name: "account.deposits"}))
		opts := &eventbus.AggregateOptions{SnapshotEvery: 1}
		accounts := newAccounts(t, s, reg, opts)
		counts, err := eventbus.NewAggregate(s, reg, evolveDepositCount, opts)
		require.NoError(t, err)
		setMetadata(t, s, "account-1", eventbus.StreamMetadata{MaxCount: 2})
		for i := range 6 {
			_, err := accounts.Execute(ctx, "account-1", deposit(1))
			require.NoError(t, err, "Execute on Account %d", i)
			// Each command sees the other's event: both snapshot.
			_, err = counts.Execute(ctx, "account-1", func(depositCount) ([]any, error) {
				return []any{Withdrawn{Amount: i % 2}}, nil
			})
			require.NoError(t, err, "Execute on depositCount %d", i)
		}
		snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
		if want := (eventbus.Snapshot[Account]{Revision: 10, State: Account{Balance: 4, Events: 11}}); err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot[Account] = %+v, %v, %v, want %+v", snap, ok, err, want)
		}
		v, err := accounts.Load(ctx, "account-1")
		if err != nil || v.State != (Account{Balance: 3, Events: 12}) || v.Expected != eventbus.Exact(11) {
			t.Errorf("Load of Account = %+v, %v, want balance 3 after 12 events at revision 11", v, err)
		}
		c, err := counts.Load(ctx, "account-1")
		if err != nil || c.State != (depositCount{Deposits: 6}) || c.Expected != eventbus.Exact(11) {
			t.Errorf("Load of depositCount = %+v, %v, want 6 deposits at revision 11", c, err)
		}
	})
}

// TestLoadSnapshotSavedByEarlierRelease checks that a snapshot saved as
// releases before per-type snapshot streams saved it, in "$snapshot-"
// followed by the stream's name, is still loaded, until the state type
// has a snapshot of its own, which is then the one loaded.
func TestLoadSnapshotSavedByEarlierRelease(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		appendDeposits(t, s, reg, "account-1", 3)
		e, err := reg.Encode(Account{Balance: 1000, Events: 2})
		require.NoError(t, err)
		e.Metadata = eventbus.Metadata{"eventbus.revision": "1"}
		_, err = s.Append(ctx, "$snapshot-account-1", eventbus.Any, e)
		require.NoError(t, err)

		want := eventbus.Snapshot[Account]{Revision: 1, State: Account{Balance: 1000, Events: 2}}
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot of an earlier release's snapshot = %+v, %v, %v, want %+v", snap, ok, err, want)
		}
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 5})
		v, err := accounts.Load(ctx, "account-1")
		if err != nil || v.State != (Account{Balance: 1001, Events: 3}) {
			t.Errorf("Load from an earlier release's snapshot = %+v, %v, want balance 1001 after 3 events", v, err)
		}
		_, err = accounts.Execute(ctx, "account-1", deposit(1))
		require.NoError(t, err)
		want = eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 2000, Events: 3}}
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", want))
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot after SaveSnapshot = %+v, %v, %v, want %+v", snap, ok, err, want)
		}
	})
}

// TestLoadSnapshotLegacyOfAnotherType checks that a snapshot in the
// stream that earlier releases shared between state types, "$snapshot-"
// and the stream's name, is passed over when it is of another type name:
// LoadSnapshot returns none, as its doc says, rather than an error for a
// state that is not T, and Load replays the stream.
func TestLoadSnapshotLegacyOfAnotherType(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		appendDeposits(t, s, reg, "account-1", 3)
		e, err := reg.Encode(Deposited{Amount: 1000})
		require.NoError(t, err)
		e.Metadata = eventbus.Metadata{"eventbus.revision": "1"}
		_, err = s.Append(ctx, "$snapshot-account-1", eventbus.Any, e)
		require.NoError(t, err)

		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || ok {
			t.Errorf("LoadSnapshot[Account] of an earlier release's snapshot of %s = %+v, %v, %v, want none", e.Type, snap, ok, err)
		}
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 5})
		v, err := accounts.Load(ctx, "account-1")
		if err != nil || v.State != (Account{Balance: 3, Events: 3}) {
			t.Errorf("Load = %+v, %v, want balance 3 after 3 events", v, err)
		}
	})
}

// TestLoadSnapshotUnusableOfEarlierRelease checks that LoadSnapshot
// passes over a snapshot that the stream cannot go on from, as its doc
// says, also where SaveSnapshot, which refuses to save it, did not check
// it: one that an earlier release saved, in the stream that all state
// types shared, of a stream that does not exist or past the stream's end
// (its event count as Revision). Load replays the stream instead.
func TestLoadSnapshotUnusableOfEarlierRelease(t *testing.T) {
	tests := []struct {
		name   string
		events int    // deposits of 1 before the snapshot
		rev    string // the snapshot's revision
	}{
		{name: "no stream", rev: "0"},
		{name: "past the end", events: 3, rev: "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				ctx := t.Context()
				appendDeposits(t, s, reg, "account-1", tt.events)
				e, err := reg.Encode(Account{Balance: 1000, Events: tt.events})
				require.NoError(t, err)
				e.Metadata = eventbus.Metadata{"eventbus.revision": tt.rev}
				_, err = s.Append(ctx, "$snapshot-account-1", eventbus.Any, e)
				require.NoError(t, err)

				if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); ok || err != nil {
					t.Errorf("LoadSnapshot of revision %s after %d events = %+v, %v, %v, want none", tt.rev, tt.events, snap, ok, err)
				}
				want := eventbus.Version[Account]{Expected: eventbus.NoStream}
				if tt.events > 0 {
					want = eventbus.Version[Account]{State: Account{Balance: tt.events, Events: tt.events}, Expected: eventbus.Exact(uint64(tt.events - 1))}
				}
				v, err := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 100}).Load(ctx, "account-1")
				require.NoError(t, err)
				if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
					t.Errorf("Load (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestAggregateSnapshotWithBadRevision checks that a snapshot whose
// revision metadata does not parse is passed over as one that does not
// decode is: LoadSnapshot returns an error wrapping ErrInvalid, Load and
// Execute replay the stream's events instead, and the next snapshot
// replaces it. Where the events are hidden, Load's error wraps
// ErrTruncated and the snapshot's error.
func TestAggregateSnapshotWithBadRevision(t *testing.T) {
	for _, md := range []eventbus.Metadata{nil, {"eventbus.revision": "x"}, {"eventbus.revision": "-1"}} {
		eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
			ctx := t.Context()
			appendDeposits(t, s, reg, "account-1", 3)
			e, err := reg.Encode(Account{Balance: 1000, Events: 2})
			require.NoError(t, err)
			e.Metadata = md
			_, err = s.Append(ctx, "$snapshot:account.state:account-1", eventbus.Any, e)
			require.NoError(t, err)

			if _, _, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("LoadSnapshot, metadata %v = %v, want %v", md, err, eventbus.ErrInvalid)
			}
			accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 4})
			v, err := accounts.Load(ctx, "account-1")
			if err != nil || v.State != (Account{Balance: 3, Events: 3}) {
				t.Errorf("Load over a snapshot with metadata %v = %+v, %v, want balance 3 by replay", md, v, err)
			}
			res, err := accounts.Execute(ctx, "account-1", deposit(1))
			if err != nil {
				t.Fatalf("Execute over a snapshot with metadata %v = %v, want success", md, err)
			}
			want := eventbus.Snapshot[Account]{Revision: res.Revision, State: Account{Balance: 4, Events: 4}}
			if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || !ok || snap != want {
				t.Errorf("LoadSnapshot after Execute = %+v, %v, %v, want %+v", snap, ok, err, want)
			}

			e.ID = eventbus.NewID() // not taken for a retry of the first
			_, err = s.Append(ctx, "$snapshot:account.state:account-1", eventbus.Any, e)
			require.NoError(t, err)
			setMetadata(t, s, "account-1", eventbus.StreamMetadata{MaxCount: 1})
			v, err = accounts.Load(ctx, "account-1")
			if !errors.Is(err, eventbus.ErrTruncated) || !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("Load of a truncated stream over a snapshot with metadata %v = %+v, %v, want %v and %v", md, v, err, eventbus.ErrTruncated, eventbus.ErrInvalid)
			}
		})
	}
}

// growingState is a state whose encoding grows with every event, until
// its snapshots no longer fit in the store.
type growingState struct {
	Events int
	Log    string
}

// TestAggregateTruncatedSaysSnapshotFailed runs commands on a stream with
// MaxCount 2 and a snapshot after every event, until the state grows past
// the store's MaxEventSize and its snapshots fail to save: Execute goes on
// (the events are committed), but once the stream hides the events after
// the last snapshot saved, Load fails with ErrTruncated, which must say
// why no later snapshot covers them, and the ErrTruncated of another
// stream must not. A save that works again clears it; one of another
// stream's snapshot does not.
func TestAggregateTruncatedSaysSnapshotFailed(t *testing.T) {
	ctx := context.Background()
	s, err := eventbus.NewMemoryStore(&eventbus.MemoryStoreOptions{MaxEventSize: 200})
	require.NoError(t, err)
	reg := newBankRegistry(t)
	require.NoError(t, eventbus.Register[growingState](reg, nil))
	grow := true
	states, err := eventbus.NewAggregate(s, reg, func(st growingState, _ any) growingState {
		st.Events++
		if grow {
			st.Log += strings.Repeat("x", 50)
		} else {
			st.Log = ""
		}
		return st
	}, &eventbus.AggregateOptions{SnapshotEvery: 1})
	require.NoError(t, err)
	const stream = "account-1"
	_, err = states.Execute(ctx, stream, deposit1)
	require.NoError(t, err)
	setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
	var loadErr error
	for range 8 {
		if _, loadErr = states.Execute(ctx, stream, deposit1); loadErr != nil {
			break
		}
	}
	if !errors.Is(loadErr, eventbus.ErrTruncated) {
		t.Fatalf("Execute after snapshots grew too large = %v, want %v", loadErr, eventbus.ErrTruncated)
	}
	if !strings.Contains(loadErr.Error(), eventbus.ErrTooLarge.Error()) {
		t.Errorf("Execute = %v, want it to quote the failed snapshot save's %v", loadErr, eventbus.ErrTooLarge)
	}
	if errors.Is(loadErr, eventbus.ErrTooLarge) {
		t.Errorf("Execute = %v matches %v, which is the save's, not its own", loadErr, eventbus.ErrTooLarge)
	}
	if _, err := states.Load(ctx, "account-2"); err != nil {
		t.Errorf("Load(account-2) = %v, want the empty stream", err)
	}
	// Another stream's snapshot saved is no save of account-1's: the
	// failure is still the latest, and still quoted.
	_, err = states.Execute(ctx, "account-2", deposit1)
	require.NoError(t, err)
	snap, ok, err := eventbus.LoadSnapshot[growingState](ctx, s, reg, "account-2")
	require.NoError(t, err)
	require.True(t, ok, "account-2's snapshot is saved")
	require.Equal(t, 1, snap.State.Events)
	_, err = states.Load(ctx, stream)
	if !errors.Is(err, eventbus.ErrTruncated) || !strings.Contains(err.Error(), eventbus.ErrTooLarge.Error()) {
		t.Errorf("Load(%s) after account-2's snapshot saved = %v, want %v quoting the failed save's %v", stream, err, eventbus.ErrTruncated, eventbus.ErrTooLarge)
	}
	// Another stream's ErrTruncated has nothing to do with that save.
	appendDeposits(t, s, reg, "account-3", 3)
	setMetadata(t, s, "account-3", eventbus.StreamMetadata{MaxCount: 1})
	_, err = states.Load(ctx, "account-3")
	if !errors.Is(err, eventbus.ErrTruncated) || strings.Contains(err.Error(), eventbus.ErrTooLarge.Error()) {
		t.Errorf("Load(account-3) = %v, want %v without account-1's failed save", err, eventbus.ErrTruncated)
	}

	// A snapshot saved again (the state shrinks, read back from a
	// snapshot that the caller saves by hand) clears the failure.
	grow = false
	var last eventbus.RecordedEvent
	for e, err := range s.ReadStream(ctx, stream, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}) {
		require.NoError(t, err)
		last = e
	}
	require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, stream, eventbus.Snapshot[growingState]{Revision: last.Revision}))
	_, err = states.Execute(ctx, stream, deposit1)
	require.NoError(t, err)
	setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 1})
	appendDeposits(t, s, reg, stream, 2)
	_, err = states.Load(ctx, stream)
	if !errors.Is(err, eventbus.ErrTruncated) || strings.Contains(err.Error(), eventbus.ErrTooLarge.Error()) {
		t.Errorf("Load after a snapshot saved again = %v, want %v without the old save's error", err, eventbus.ErrTruncated)
	}
}

// deposit1 is a command that deposits 1.
func deposit1(growingState) ([]any, error) { return []any{Deposited{Amount: 1}}, nil }

// TestSnapshotOfOlderVersionOfState saves and loads the snapshots of a
// state type registered as version 1 of its name while version 2 is
// registered too, with an upcaster, as a release that moves to version 2
// step by step does: SaveSnapshot checks that the state decodes as the
// version it saves, and LoadSnapshot and Load give it back as that
// version, as their docs say (only a snapshot older than T's version is
// upcast). The upcaster fails, so that an upcast past T's version fails
// them: SaveSnapshot refused the state, and LoadSnapshot, whose decode
// went on to the latest version, could not give an Account. A snapshot
// of version 2 is then one of a later version, passed over.
func TestSnapshotOfOlderVersionOfState(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := t.Context()
		reg := newBankRegistry(t)
		require.NoError(t, eventbus.Register[accountCents](reg, &eventbus.TypeOptions{Name: "account.state", Version: 2}))
		upcasts := 0
		require.NoError(t, eventbus.RegisterUpcaster(reg, func(Account) (accountCents, error) {
			upcasts++
			return accountCents{}, errors.New("no upcast is due")
		}))
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 2})
		for _, amount := range []int{1, 2, 3} {
			_, err := accounts.Execute(ctx, "account-1", deposit(amount))
			require.NoError(t, err)
		}
		want := eventbus.Snapshot[Account]{Revision: 1, State: Account{Balance: 3, Events: 2}}
		snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
		if err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot of version 1 as version 1 = %+v, %v, %v, want %+v", snap, ok, err, want)
		}
		want = eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 6, Events: 3}}
		if err := eventbus.SaveSnapshot(ctx, s, reg, "account-1", want); err != nil {
			t.Errorf("SaveSnapshot of version 1 with version 2 registered = %v, want nil", err)
		}
		// The events before the snapshot hidden, Load needs it.
		setMetadata(t, s, "account-1", eventbus.StreamMetadata{MaxCount: 1})
		v, err := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 2}).Load(ctx, "account-1")
		if err != nil || v.State != want.State || v.Expected != eventbus.Exact(2) {
			t.Errorf("Load from a snapshot of version 1 as version 1 = %+v, %v, want %+v at revision 2", v, err, want.State)
		}
		if upcasts != 0 {
			t.Errorf("the upcaster from version 1 ran %d times, want none", upcasts)
		}

		// A snapshot of version 2, saved by an Aggregate of it, is one of
		// a later version for version 1, though its Go type is registered:
		// LoadSnapshot passes over it, and Load's error says why.
		later := eventbus.Snapshot[accountCents]{Revision: 2, State: accountCents{Events: 3}}
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", later))
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || ok {
			t.Errorf("LoadSnapshot of version 2 as version 1 = %+v, %v, %v, want none", snap, ok, err)
		}
		_, err = newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 2}).Load(ctx, "account-1")
		if !errors.Is(err, eventbus.ErrTruncated) || !errors.Is(err, eventbus.ErrUnknownEvent) {
			t.Errorf("Load past a snapshot of version 2 = %v, want %v wrapping %v", err, eventbus.ErrTruncated, eventbus.ErrUnknownEvent)
		}
	})
}

// TestAggregateCacheKeepsLaterState ends a Load's read only after a
// command of the same Aggregate has appended an event and cached its
// state: the Load, which returns the state as of its read, must leave
// the later state in the cache, so that the next load finds it with no
// newer event to read, a hit (see CacheStats), where a cache set back to
// the older state reads the command's event again, a miss.
func TestAggregateCacheKeepsLaterState(t *testing.T) {
	ctx := context.Background()
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	appendDeposits(t, inner, reg, "account-1", 1)
	s := &afterReadStore{Store: inner, stream: "account-1"}
	accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 1})
	s.after = func() {
		_, err := accounts.Execute(ctx, "account-1", deposit(10))
		require.NoError(t, err)
	}
	v, err := accounts.Load(ctx, "account-1")
	require.NoError(t, err)
	if want := (eventbus.Version[Account]{State: Account{Balance: 1, Events: 1}, Expected: eventbus.Exact(0)}); v != want {
		t.Errorf("Load during a command = %+v, want %+v, as of its read", v, want)
	}
	hits, misses := accounts.CacheStats()
	v, err = accounts.Load(ctx, "account-1")
	require.NoError(t, err)
	if want := (eventbus.Version[Account]{State: Account{Balance: 11, Events: 2}, Expected: eventbus.Exact(1)}); v != want {
		t.Errorf("Load after the command = %+v, want %+v", v, want)
	}
	if h, m := accounts.CacheStats(); h != hits+1 || m != misses {
		t.Errorf("Load after the command counted %d hits and %d misses, want 1 hit: the cache went back to the state of the load that ended last", h-hits, m-misses)
	}
}
