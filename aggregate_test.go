package eventbus_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

func TestAggregateExecute(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, nil)

		v, err := accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		if diff := cmp.Diff(eventbus.Version[Account]{Expected: eventbus.NoStream}, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
			t.Errorf("Load of a new stream (-want +got):\n%s", diff)
		}
		_, err = accounts.Execute(ctx, "account-1", withdraw(10))
		if !errors.Is(err, ErrInsufficientFunds) {
			t.Fatalf("Execute(withdraw 10) on an empty account = %v, want %v", err, ErrInsufficientFunds)
		}
		for _, cmd := range []func(Account) ([]any, error){deposit(100), withdraw(30), deposit(5)} {
			_, err := accounts.Execute(ctx, "account-1", cmd)
			require.NoError(t, err)
		}
		res, err := accounts.Execute(ctx, "account-1", func(Account) ([]any, error) { return nil, nil })
		if err != nil || res != (eventbus.AppendResult{}) {
			t.Errorf("Execute(no events) = %v, %v, want the zero result", res, err)
		}
		v, err = accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		if v.State != (Account{Balance: 75, Events: 3}) || v.Expected != eventbus.Exact(2) {
			t.Errorf("Load = %+v, want balance 75 after 3 events at revision 2", v)
		}
	})
}

func TestAggregateConcurrentCommands(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, nil)
		_, err := accounts.Execute(ctx, "account-1", deposit(100))
		require.NoError(t, err)

		// The first command decides on the balance it loaded, then waits
		// while the second one commits; its append then conflicts, and
		// its second attempt must see the second command's withdrawal.
		loaded, proceed := make(chan struct{}), make(chan struct{})
		var seen []int
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := accounts.Execute(ctx, "account-1", func(a Account) ([]any, error) {
				seen = append(seen, a.Balance)
				if len(seen) == 1 {
					close(loaded)
					<-proceed
				}
				return withdraw(20)(a)
			})
			if err != nil {
				t.Errorf("first Execute(withdraw 20) = %v, want success on its retry", err)
			}
		})
		<-loaded
		_, err = accounts.Execute(ctx, "account-1", withdraw(70))
		require.NoError(t, err)
		close(proceed)
		wg.Wait()
		if diff := cmp.Diff([]int{100, 30}, seen); diff != "" {
			t.Errorf("balances the first command decided on (-want +got):\n%s", diff)
		}

		v, err := accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		if v.State != (Account{Balance: 10, Events: 3}) {
			t.Errorf("account after both withdrawals = %+v, want balance 10 after 3 events", v.State)
		}

		// Concurrent commands that all succeed: each conflict of one is
		// another's success, so 8 attempts are enough for 8 commands.
		patient := newAccounts(t, s, reg, &eventbus.AggregateOptions{MaxAttempts: 8})
		var deposits sync.WaitGroup
		for range 8 {
			deposits.Go(func() {
				if _, err := patient.Execute(ctx, "account-1", deposit(1)); err != nil {
					t.Errorf("Execute(deposit) = %v", err)
				}
			})
		}
		deposits.Wait()
		v, err = accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		if v.State.Balance != 18 {
			t.Errorf("balance after 8 concurrent deposits = %d, want 18", v.State.Balance)
		}
	})
}

// TestAggregateConflictLimit checks that Execute runs decide MaxAttempts
// times when every append conflicts, 3 times if MaxAttempts is zero, as
// AggregateOptions.MaxAttempts's doc says.
func TestAggregateConflictLimit(t *testing.T) {
	for _, tc := range []struct {
		opts *eventbus.AggregateOptions
		want int
	}{
		{&eventbus.AggregateOptions{MaxAttempts: 2}, 2},
		{nil, 3},
	} {
		ctx := context.Background()
		s, _ := backends[0].open(t)
		reg := newBankRegistry(t)
		accounts := newAccounts(t, s, reg, tc.opts)
		attempts := 0
		_, err := accounts.Execute(ctx, "account-1", func(Account) ([]any, error) {
			attempts++
			appendDeposits(t, s, reg, "account-1", 1) // another writer wins every time
			return []any{Deposited{Amount: 1}}, nil
		})
		var conflict *eventbus.WrongExpectedVersionError
		if !errors.As(err, &conflict) || attempts != tc.want {
			t.Errorf("Execute with %+v always in conflict = %v after %d attempts, want a *WrongExpectedVersionError after %d", tc.opts, err, attempts, tc.want)
		}
	}
}

// TestAggregateSnapshotsOfLongName snapshots a stream whose name leaves
// no room for the snapshot stream's prefix.
func TestAggregateSnapshotsOfLongName(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
		stream := strings.Repeat("x", 1020)
		for range 3 {
			_, err := accounts.Execute(ctx, stream, deposit(1))
			require.NoError(t, err)
		}
		snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, stream)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, 3, snap.State.Balance)
		v, err := accounts.Load(ctx, stream)
		require.NoError(t, err)
		require.Equal(t, 3, v.State.Balance)

		// A stream named as the long one's snapshots are kept has none,
		// though it has the revisions of the long one's: a snapshot found
		// there would be taken for its own.
		sum := sha256.Sum256([]byte(stream))
		named := "sha256:" + hex.EncodeToString(sum[:])
		appendDeposits(t, s, reg, named, 3)
		_, ok, err = eventbus.LoadSnapshot[Account](ctx, s, reg, named)
		require.NoError(t, err)
		require.False(t, ok, "another stream's snapshot")
	})
}

func TestAggregateSnapshots(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 4})
		for range 10 {
			_, err := accounts.Execute(ctx, "account-1", deposit(1))
			require.NoError(t, err)
		}
		snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
		require.NoError(t, err)
		if !ok || snap.Revision != 7 || snap.State.Balance != 8 {
			t.Errorf("LoadSnapshot = %+v, %v, want balance 8 at revision 7", snap, ok)
		}
		// Load starts from the snapshot: a state that differs from the
		// replay shows that it did.
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: 7, State: Account{Balance: 1000}}))
		v, err := accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		if v.State.Balance != 1002 || v.Expected != eventbus.Exact(9) {
			t.Errorf("Load = %+v, want balance 1000 from the snapshot + 2 at revision 9", v)
		}

		if _, err := eventbus.NewAggregate(s, newEmptyRegistry(t), evolveAccount, &eventbus.AggregateOptions{SnapshotEvery: 1}); !errors.Is(err, eventbus.ErrUnknownEvent) {
			t.Errorf("NewAggregate(SnapshotEvery, state not registered) = %v, want %v", err, eventbus.ErrUnknownEvent)
		}
	})
}

// TestAggregateSnapshotsOfManyEvents runs commands that decide three
// events each, with SnapshotEvery 4: a snapshot is saved each time a
// command takes the stream past a multiple of 4, as AggregateOptions says,
// though no append ends on one (revisions 0-2, 3-5, 6-8 give 3, 6 and 9
// events). An Aggregate that saved only when the event count was a
// multiple of 4 saved none.
func TestAggregateSnapshotsOfManyEvents(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 4})
		three := func(Account) ([]any, error) {
			return []any{Deposited{Amount: 1}, Deposited{Amount: 1}, Deposited{Amount: 1}}, nil
		}
		for i, want := range []struct {
			ok       bool
			revision uint64
		}{
			{false, 0}, // 3 events: no multiple of 4 passed
			{true, 5},  // 6 events: past 4
			{true, 8},  // 9 events: past 8
		} {
			_, err := accounts.Execute(ctx, "account-1", three)
			require.NoError(t, err)
			snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
			require.NoError(t, err)
			if ok != want.ok || ok && (snap.Revision != want.revision || snap.State != (Account{Balance: int(want.revision) + 1, Events: int(want.revision) + 1})) {
				t.Errorf("after command %d, LoadSnapshot = %+v, %v, want ok %v at revision %d", i+1, snap, ok, want.ok, want.revision)
			}
		}
	})
}

// TestAggregateUnusableSnapshot checks snapshots that the stream cannot
// go on from. One of a life of the stream before a soft delete is ignored,
// as a stale schema version is. One that SaveSnapshot is asked for at a
// revision the stream does not have (past its last revision, such as its
// event count; of a stream that does not exist) is refused: ignored, it
// would be used, and wrong, once the stream reached that revision.
// slowSnapshotStore holds the first append to a snapshot stream until
// release is closed, closing held when it starts to wait.
type slowSnapshotStore struct {
	eventbus.Store
	holding       atomic.Bool
	held, release chan struct{}
}

func (s *slowSnapshotStore) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if strings.HasPrefix(stream, "$snapshot") && s.holding.CompareAndSwap(false, true) {
		close(s.held)
		<-s.release
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestAggregateConcurrentSnapshots checks that of two snapshots saved at
// once by two Execute calls, the later revision stays the latest even when
// the older one is saved last: with SnapshotEvery 1 and a max age, as the
// docs advise, the aggregate then loads after its events are hidden, where
// an older snapshot would leave it truncated.
func TestAggregateConcurrentSnapshots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg := newBankRegistry(t)
		setMetadata(t, inner, "account-1", eventbus.StreamMetadata{MaxAge: time.Hour})
		s := &slowSnapshotStore{Store: inner, held: make(chan struct{}), release: make(chan struct{})}
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
		first := make(chan error)
		go func() {
			_, err := accounts.Execute(t.Context(), "account-1", deposit(1))
			first <- err
		}()
		<-s.held // the first deposit is appended, its snapshot not yet saved
		_, err = accounts.Execute(t.Context(), "account-1", deposit(1))
		require.NoError(t, err)
		close(s.release)
		require.NoError(t, <-first)
		time.Sleep(2 * time.Hour) // the bubble's clock: every event is too old
		v, err := accounts.Load(t.Context(), "account-1")
		if err != nil || v.State.Balance != 2 || v.Expected != eventbus.Exact(1) {
			t.Errorf("Load = %+v, %v, want balance 2 at revision 1, from the latest snapshot", v, err)
		}
	})
}

// accountV2 is a second schema version of the Account state.
type accountV2 struct{ Balance, Events int }

// TestSaveSnapshotKeepsLater checks that SaveSnapshot keeps a latest
// snapshot of a later revision rather than replace it with an older one,
// unless that one is of another schema version, which LoadSnapshot would
// ignore.
func TestSaveSnapshotKeepsLater(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		appendDeposits(t, s, reg, "account-1", 3)
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 3, Events: 3}}))
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: 1, State: Account{Balance: 2, Events: 2}}))
		want := eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 3, Events: 3}}
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot after saving revisions 2 and 1 = %+v, %v, %v, want %+v", snap, ok, err, want)
		}

		reg2, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[accountV2](reg2, &eventbus.TypeOptions{Name: "account.state", Version: 2}))
		want2 := eventbus.Snapshot[accountV2]{Revision: 1, State: accountV2{Balance: 2, Events: 2}}
		require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg2, "account-1", want2))
		if snap, ok, err := eventbus.LoadSnapshot[accountV2](ctx, s, reg2, "account-1"); err != nil || !ok || snap != want2 {
			t.Errorf("LoadSnapshot of version 2 after saving it at revision 1 = %+v, %v, %v, want %+v", snap, ok, err, want2)
		}
	})
}

// raceSnapshotStore runs before, once, just before the first append to a
// snapshot stream: what another process saving a snapshot at that moment
// would do.
type raceSnapshotStore struct {
	eventbus.Store
	before func()
}

func (s *raceSnapshotStore) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if f := s.before; f != nil && strings.HasPrefix(stream, "$snapshot") {
		s.before = nil
		f()
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestSaveSnapshotRetriesConflict saves a snapshot while another save, of
// an older revision, gets in between its read of the latest snapshot and
// its append: the append conflicts, and SaveSnapshot reads again and
// saves its later one, with no error, so that the later revision is the
// one read, as its doc says. It returned the conflict, leaving the older
// one latest.
func TestSaveSnapshotRetriesConflict(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		appendDeposits(t, s, reg, "account-1", 3)
		rs := &raceSnapshotStore{Store: s, before: func() {
			require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: 1, State: Account{Balance: 2, Events: 2}}))
		}}
		want := eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 3, Events: 3}}
		if err := eventbus.SaveSnapshot(ctx, rs, reg, "account-1", want); err != nil {
			t.Fatalf("SaveSnapshot(revision 2) while revision 1 is saved = %v, want nil", err)
		}
		if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); err != nil || !ok || snap != want {
			t.Errorf("LoadSnapshot = %+v, %v, %v, want %+v", snap, ok, err, want)
		}
	})
}

// ledger is a state that encoding/json encodes but does not decode: Last,
// of an interface type, comes back as a number it cannot hold.
type ledger struct {
	Last fmt.Stringer
	N    int
}

// amount is the fmt.Stringer that a ledger's Last holds.
type amount int

func (a amount) String() string { return fmt.Sprint(int(a)) }

// TestSaveSnapshotUndecodable checks that a state that the registry
// encodes but cannot decode back is not saved as a snapshot, which would
// fail every later load: SaveSnapshot returns the codec's error, and an
// aggregate that snapshots such a state skips the snapshot and keeps
// loading by replay.
func TestSaveSnapshotUndecodable(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		require.NoError(t, eventbus.Register[ledger](reg, nil))
		ledgers, err := eventbus.NewAggregate(s, reg, func(l ledger, e any) ledger {
			return ledger{Last: amount(e.(Deposited).Amount), N: l.N + 1}
		}, &eventbus.AggregateOptions{SnapshotEvery: 2})
		require.NoError(t, err)
		for i := range 4 {
			if _, err := ledgers.Execute(ctx, "ledger-1", func(ledger) ([]any, error) { return []any{Deposited{Amount: i}}, nil }); err != nil {
				t.Fatalf("Execute %d = %v, want success", i, err)
			}
		}
		v, err := ledgers.Load(ctx, "ledger-1")
		if err != nil || v.State != (ledger{Last: amount(3), N: 4}) {
			t.Errorf("Load = %+v, %v, want 4 events, the last of 3", v, err)
		}
		err = eventbus.SaveSnapshot(ctx, s, reg, "ledger-1", eventbus.Snapshot[ledger]{Revision: 3, State: v.State})
		var jsonErr *json.UnmarshalTypeError
		if !errors.As(err, &jsonErr) {
			t.Errorf("SaveSnapshot of a state that does not decode = %v, want the codec's %T", err, jsonErr)
		}
	})
}

// TestSaveSnapshotTombstoned saves a snapshot of a stream tombstoned since
// its events were folded, as a projection running behind its store does:
// the error wraps ErrStreamDeleted, as the Store's do for such a stream,
// not ErrInvalid as for a bad revision or a stream never written, and
// nothing is saved.
func TestSaveSnapshotTombstoned(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		appendDeposits(t, s, reg, "account-1", 3)
		require.NoError(t, s.Tombstone(ctx, "account-1", eventbus.Any))
		err := eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 3, Events: 3}})
		if !errors.Is(err, eventbus.ErrStreamDeleted) || errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("SaveSnapshot of a tombstoned stream = %v, want %v alone", err, eventbus.ErrStreamDeleted)
		}
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$"}}) {
			require.NoError(t, err)
			t.Errorf("SaveSnapshot of a tombstoned stream saved %s", e.Stream)
		}
	})
}

func TestAggregateUnusableSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		events  int    // deposits of 1 before the snapshot
		rev     uint64 // the snapshot's revision
		delete  bool   // soft-delete the stream after the snapshot
		again   bool   // soft-delete it before, and deposit 1 again
		saveErr error
		want    eventbus.Version[Account] // a deposit of 1 later, the state is one more
	}{
		{name: "past the end", events: 3, rev: 3, saveErr: eventbus.ErrInvalid, want: eventbus.Version[Account]{State: Account{Balance: 3, Events: 3}, Expected: eventbus.Exact(2)}},
		{name: "far past the end", events: 3, rev: 1 << 40, saveErr: eventbus.ErrInvalid, want: eventbus.Version[Account]{State: Account{Balance: 3, Events: 3}, Expected: eventbus.Exact(2)}},
		{name: "no stream", rev: 0, saveErr: eventbus.ErrInvalid, want: eventbus.Version[Account]{Expected: eventbus.NoStream}},
		{name: "deleted stream", events: 3, rev: 2, delete: true, want: eventbus.Version[Account]{Expected: eventbus.NoStream}},
		{name: "before the last soft delete", events: 3, rev: 2, again: true, saveErr: eventbus.ErrInvalid, want: eventbus.Version[Account]{State: Account{Balance: 1, Events: 1}, Expected: eventbus.Exact(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				ctx := t.Context()
				appendDeposits(t, s, reg, "account-1", tt.events)
				if tt.again {
					require.NoError(t, s.Delete(ctx, "account-1", eventbus.Any))
					appendDeposits(t, s, reg, "account-1", 1)
				}
				err := eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: tt.rev, State: Account{Balance: 1000}})
				if !errors.Is(err, tt.saveErr) || (err == nil) != (tt.saveErr == nil) {
					t.Errorf("SaveSnapshot(revision %d) = %v, want %v", tt.rev, err, tt.saveErr)
				}
				if tt.delete {
					require.NoError(t, s.Delete(ctx, "account-1", eventbus.Any))
				}
				if snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1"); ok || err != nil {
					t.Errorf("LoadSnapshot = %+v, %v, %v, want none", snap, ok, err)
				}
				accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 100})
				v, err := accounts.Load(ctx, "account-1")
				require.NoError(t, err)
				if diff := cmp.Diff(tt.want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
					t.Errorf("Load (-want +got):\n%s", diff)
				}
				res, err := accounts.Execute(ctx, "account-1", deposit(1))
				if err != nil {
					t.Fatalf("Execute(deposit 1) = %v, want success", err)
				}
				want := eventbus.Version[Account]{State: Account{Balance: tt.want.State.Balance + 1, Events: tt.want.State.Events + 1}, Expected: eventbus.Exact(res.Revision)}
				v, err = accounts.Load(ctx, "account-1")
				require.NoError(t, err)
				if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
					t.Errorf("Load after a deposit (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestSnapshotStreamBounded checks that a stream's snapshots do not pile
// up: LoadSnapshot reads only the latest, so the snapshot stream keeps
// only that one, also after a restart.
func TestSnapshotStreamBounded(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
		for range 20 {
			_, err := accounts.Execute(ctx, "account-1", deposit(1))
			require.NoError(t, err)
		}
		check := func(s eventbus.Store) {
			t.Helper()
			if n := streamLen(t, s, "$snapshot:account.state:account-1"); n != 1 {
				t.Errorf("after 20 snapshots, the snapshot stream holds %d, want 1", n)
			}
			snap, ok, err := eventbus.LoadSnapshot[Account](ctx, s, reg, "account-1")
			if want := (eventbus.Snapshot[Account]{Revision: 19, State: Account{Balance: 20, Events: 20}}); err != nil || !ok || snap != want {
				t.Errorf("LoadSnapshot = %+v, %v, %v, want %+v", snap, ok, err, want)
			}
		}
		check(s)
		check(reopen())
	})
}

// TestSnapshotStreamBoundedAgain changes the MaxCount of a snapshot
// stream, as an operator may: the next snapshot saved gives it MaxCount 1
// again, keeping the rest of its metadata, so that snapshots do not pile
// up from then on. MaxCount was set only before a stream's first snapshot.
func TestSnapshotStreamBoundedAgain(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		const stream = "$snapshot:account.state:account-1"
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
		execute := func(n int) {
			t.Helper()
			for range n {
				_, err := accounts.Execute(ctx, "account-1", deposit(1))
				require.NoError(t, err)
			}
		}
		execute(2)
		require.NoError(t, s.SetStreamMetadata(ctx, stream, eventbus.StreamMetadata{MaxAge: time.Hour}))
		execute(3)
		info, err := s.StreamInfo(ctx, stream)
		require.NoError(t, err)
		if want := (eventbus.StreamMetadata{MaxCount: 1, MaxAge: time.Hour}); info.Metadata != want {
			t.Errorf("snapshot stream's metadata = %+v, want %+v", info.Metadata, want)
		}
		if n := streamLen(t, s, stream); n != 1 {
			t.Errorf("the snapshot stream shows %d snapshots, want 1", n)
		}
	})
}

func TestAggregateCache(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 1})
		load := func(stream string, want int) {
			t.Helper()
			v, err := accounts.Load(ctx, stream)
			require.NoError(t, err)
			if v.State.Balance != want {
				t.Errorf("Load(%q) balance = %d, want %d", stream, v.State.Balance, want)
			}
		}
		_, err := accounts.Execute(ctx, "account-1", deposit(5)) // miss: loads the new stream
		require.NoError(t, err)
		load("account-1", 5)                      // hit: Execute cached the new state
		appendDeposits(t, s, reg, "account-1", 2) // written elsewhere
		load("account-1", 7)                      // miss: reads the two new events
		load("account-1", 7)                      // hit
		load("account-2", 0)                      // miss, evicts account-1
		load("account-1", 7)                      // miss
		hits, misses := accounts.CacheStats()
		if hits != 2 || misses != 4 {
			t.Errorf("CacheStats() = %d hits, %d misses, want 2, 4", hits, misses)
		}
	})
}

// TestAggregateCacheEvictsLeastRecentlyUsed checks that a full cache
// evicts the state used least recently, as AggregateOptions.CacheSize
// says, not the one put in first or another: TestAggregateCache's cache
// of one cannot tell them apart.
func TestAggregateCacheEvictsLeastRecentlyUsed(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 2})
		for _, stream := range []string{"account-1", "account-2"} { // misses
			_, err := accounts.Execute(ctx, stream, deposit(5))
			require.NoError(t, err)
		}
		for _, stream := range []string{
			"account-1", // hit: account-2 is now the least recently used
			"account-3", // miss, evicts account-2
			"account-1", // hit
			"account-3", // hit
			"account-2", // miss, evicts account-1
		} {
			_, err := accounts.Load(ctx, stream)
			require.NoError(t, err)
		}
		if hits, misses := accounts.CacheStats(); hits != 3 || misses != 4 {
			t.Errorf("CacheStats() = %d hits, %d misses, want 3, 4", hits, misses)
		}
	})
}

// TestAggregateCacheForgetsDeletedState checks that a Load that finds its
// cached state ended by a soft delete drops it from the cache: the state
// of the deleted stream is cached in its place, so that the next load
// finds it with no newer event to read, a hit. A cache that kept the
// state of the earlier life, which a later Load never replaces with
// NoStream, found it stale at every load of the deleted stream, a miss
// each time, and held it for good.
func TestAggregateCacheForgetsDeletedState(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 1})
		_, err := accounts.Execute(ctx, "account-1", deposit(5)) // miss: loads the new stream
		require.NoError(t, err)
		require.NoError(t, s.Delete(ctx, "account-1", eventbus.Any))
		for i, want := range []struct{ hits, misses uint64 }{
			{0, 2}, // miss: the cached state's life is over
			{1, 2}, // hit: the deleted stream's state, cached
			{2, 2},
		} {
			v, err := accounts.Load(ctx, "account-1")
			require.NoError(t, err)
			if v != (eventbus.Version[Account]{Expected: eventbus.NoStream}) {
				t.Errorf("Load %d after the delete = %+v, want the zero state and NoStream", i+1, v)
			}
			if hits, misses := accounts.CacheStats(); hits != want.hits || misses != want.misses {
				t.Errorf("after load %d of the deleted stream, CacheStats() = %d hits, %d misses, want %d, %d", i+1, hits, misses, want.hits, want.misses)
			}
		}
	})
}

// TestAggregateAfterDelete checks that a soft delete ends an aggregate's
// state, whether it came from the cache or from a snapshot: the stream
// reads empty, and once appended to again its state starts over, though its
// revisions go on.
func TestAggregateAfterDelete(t *testing.T) {
	for name, opts := range map[string]*eventbus.AggregateOptions{
		"cache":     {CacheSize: 10},
		"snapshots": {SnapshotEvery: 1},
	} {
		t.Run(name, func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				accounts := newAccounts(t, s, reg, opts)
				load := func(want eventbus.Version[Account]) {
					t.Helper()
					v, err := accounts.Load(ctx, "account-1")
					require.NoError(t, err)
					if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
						t.Errorf("Load (-want +got):\n%s", diff)
					}
				}
				for range 3 {
					_, err := accounts.Execute(ctx, "account-1", deposit(10))
					require.NoError(t, err)
				}
				load(eventbus.Version[Account]{State: Account{Balance: 30, Events: 3}, Expected: eventbus.Exact(2)})

				require.NoError(t, s.Delete(ctx, "account-1", eventbus.Any))
				load(eventbus.Version[Account]{Expected: eventbus.NoStream})
				appendDeposits(t, s, reg, "account-1", 2) // revisions 3 and 4
				load(eventbus.Version[Account]{State: Account{Balance: 2, Events: 2}, Expected: eventbus.Exact(4)})
				_, err := accounts.Execute(ctx, "account-1", deposit(10))
				require.NoError(t, err)
				load(eventbus.Version[Account]{State: Account{Balance: 12, Events: 3}, Expected: eventbus.Exact(5)})
			})
		})
	}
}

// interleavedStore runs before, once, when a read of a stream begins, and
// beforeInfo, once, when a StreamInfo begins: what another process might
// do at that moment. It hides the events of hidden from reads.
type interleavedStore struct {
	eventbus.Store
	before, beforeInfo func()
	hidden             map[uint64]bool
}

func (s *interleavedStore) ReadStream(ctx context.Context, stream string, o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if f := s.before; f != nil {
		s.before = nil
		f()
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.ReadStream(ctx, stream, o) {
			if err == nil && s.hidden[e.Revision] {
				continue
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

func (s *interleavedStore) StreamInfo(ctx context.Context, stream string) (eventbus.StreamInfo, error) {
	if f := s.beforeInfo; f != nil {
		s.beforeInfo = nil
		f()
	}
	return s.Store.StreamInfo(ctx, stream)
}

// TestAggregateDeleteDuringLoad checks a delete and a new append made while
// a Load reads the events after its cached state: the new events belong to
// a new life of the stream, not to that state.
func TestAggregateDeleteDuringLoad(t *testing.T) {
	ctx := context.Background()
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	s := &interleavedStore{Store: inner}
	accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 10})
	for range 3 {
		_, err := accounts.Execute(ctx, "account-1", deposit(10))
		require.NoError(t, err)
	}
	s.before = func() {
		require.NoError(t, inner.Delete(ctx, "account-1", eventbus.Any))
		appendDeposits(t, inner, reg, "account-1", 1)
	}
	for range 2 { // the second load starts from what the first cached
		v, err := accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		require.Equal(t, Account{Balance: 1, Events: 1}, v.State)
	}
}

// TestAggregateDeleteDuringLoadFromSnapshot deletes a stream while a Load
// reads the events after the snapshot it starts from, and starts the
// stream's new life with a max count of 1 and snapshots of its own: Load
// starts over from the new life's latest snapshot. It failed with
// ErrTruncated for the new life's first event, which the max count hides,
// since it had asked for a snapshot once already, before the delete.
func TestAggregateDeleteDuringLoadFromSnapshot(t *testing.T) {
	ctx := context.Background()
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	opts := &eventbus.AggregateOptions{SnapshotEvery: 1}
	other := newAccounts(t, inner, reg, opts)
	for range 3 {
		_, err := other.Execute(ctx, "account-1", deposit(10))
		require.NoError(t, err)
	}
	s := &interleavedStore{Store: inner}
	s.beforeInfo = func() { // the snapshot's check; then the read of the events after it
		s.before = func() {
			require.NoError(t, inner.Delete(ctx, "account-1", eventbus.Any))
			setMetadata(t, inner, "account-1", eventbus.StreamMetadata{MaxCount: 1})
			for range 2 {
				_, err := other.Execute(ctx, "account-1", deposit(1))
				require.NoError(t, err)
			}
		}
	}
	v, err := newAccounts(t, s, reg, opts).Load(ctx, "account-1")
	require.NoError(t, err)
	want := eventbus.Version[Account]{State: Account{Balance: 2, Events: 2}, Expected: eventbus.Exact(4)}
	if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

// TestAggregateChangesDuringLoad checks appends and deletes made between a
// Load's read and its look at the stream's state: events appended after
// the read are not missing ones, nor are those of a life of the stream that
// began after the read. Load returns the state before or after the change.
func TestAggregateChangesDuringLoad(t *testing.T) {
	deposits := func(n int) func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) {
		return func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) {
			appendDeposits(t, s, reg, "account-1", n)
		}
	}
	version := func(balance int, rev uint64) eventbus.Version[Account] {
		return eventbus.Version[Account]{State: Account{Balance: balance, Events: balance}, Expected: eventbus.Exact(rev)}
	}
	tests := []struct {
		name            string
		opts            *eventbus.AggregateOptions
		prepare, during func(t *testing.T, s eventbus.Store, reg *eventbus.Registry)
		want            []eventbus.Version[Account] // before and after the change
	}{
		{
			name:    "append after a cached state",
			opts:    &eventbus.AggregateOptions{CacheSize: 10},
			prepare: deposits(1),
			during:  deposits(1),
			want:    []eventbus.Version[Account]{version(1, 0), version(2, 1)},
		},
		{
			name:   "append to a new stream",
			during: deposits(1),
			want:   []eventbus.Version[Account]{{Expected: eventbus.NoStream}, version(1, 0)},
		},
		{
			name: "delete and append after a delete",
			prepare: func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) {
				appendDeposits(t, s, reg, "account-1", 3)
				require.NoError(t, s.Delete(t.Context(), "account-1", eventbus.Any))
				appendDeposits(t, s, reg, "account-1", 2) // revisions 3 and 4
			},
			during: func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) {
				require.NoError(t, s.Delete(t.Context(), "account-1", eventbus.Any))
				appendDeposits(t, s, reg, "account-1", 1) // revision 5
			},
			want: []eventbus.Version[Account]{version(2, 4), version(1, 5)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := eventbus.NewMemoryStore(nil)
			require.NoError(t, err)
			reg := newBankRegistry(t)
			s := &interleavedStore{Store: inner}
			accounts := newAccounts(t, s, reg, tt.opts)
			if tt.prepare != nil {
				tt.prepare(t, s, reg)
				_, err := accounts.Load(t.Context(), "account-1") // fills the cache, if any
				require.NoError(t, err)
			}
			s.beforeInfo = func() { tt.during(t, inner, reg) }
			v, err := accounts.Load(t.Context(), "account-1")
			if err != nil || !slices.ContainsFunc(tt.want, func(w eventbus.Version[Account]) bool { return w == v }) {
				t.Errorf("Load = %+v, %v, want one of %+v", v, err, tt.want)
			}
		})
	}
}

// TestAggregateNewLifeDuringReread checks a Load whose read finds no event
// where the stream has some, twice, the stream starting a new life between
// the two: the first time, the stream's first event was appended after the
// read; before the second read, the stream was deleted, and its new life's
// first event was appended after it. Neither read missed an event, so Load
// reads again and returns the new life's state, not an ErrTruncated error
// for the event of the life that the second read never saw.
func TestAggregateNewLifeDuringReread(t *testing.T) {
	ctx := context.Background()
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	s := &interleavedStore{Store: inner}
	s.beforeInfo = func() { // after the first read
		appendDeposits(t, inner, reg, "account-1", 1) // revision 0
		// Before the second read, and its look at the stream after it.
		s.before = func() {
			require.NoError(t, inner.Delete(ctx, "account-1", eventbus.Any))
			s.beforeInfo = func() {
				appendDeposits(t, inner, reg, "account-1", 1) // revision 1
			}
		}
	}
	v, err := newAccounts(t, s, reg, nil).Load(ctx, "account-1")
	require.NoError(t, err)
	want := eventbus.Version[Account]{State: Account{Balance: 1, Events: 1}, Expected: eventbus.Exact(1)}
	if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

// TestAggregateEventMissingInside checks that an event missing between two
// that a read yields fails the load too.
func TestAggregateEventMissingInside(t *testing.T) {
	inner, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	appendDeposits(t, inner, reg, "account-1", 4)
	s := &interleavedStore{Store: inner, hidden: map[uint64]bool{2: true}}
	v, err := newAccounts(t, s, reg, nil).Load(t.Context(), "account-1")
	if !errors.Is(err, eventbus.ErrTruncated) || !strings.Contains(err.Error(), "revision 2 ") {
		t.Errorf("Load = %+v, %v, want an error wrapping %v that names revision 2", v, err, eventbus.ErrTruncated)
	}
}

// misreadingStore breaks the Store contract on reads of a stream, once
// shuffle is set: it yields the events that shuffle returns, which
// reorders them or ignores ReadOptions.From.
type misreadingStore struct {
	eventbus.Store
	shuffle func(s eventbus.Store, ctx context.Context, stream string, o *eventbus.ReadOptions) []eventbus.RecordedEvent
}

func (s *misreadingStore) ReadStream(ctx context.Context, stream string, o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if s.shuffle == nil {
		return s.Store.ReadStream(ctx, stream, o)
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for _, e := range s.shuffle(s.Store, ctx, stream, o) {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// TestAggregateStoreOutOfOrder checks that a store that yields a stream's
// events out of revision order, or before the revision Load asked to read
// from, fails the load with an error wrapping ErrInvalid that says so,
// instead of ErrTruncated with an inverted range or a state that folds an
// event twice.
func TestAggregateStoreOutOfOrder(t *testing.T) {
	read := func(s eventbus.Store, ctx context.Context, stream string, o *eventbus.ReadOptions) []eventbus.RecordedEvent {
		var events []eventbus.RecordedEvent
		for e, err := range s.ReadStream(ctx, stream, o) {
			require.NoError(t, err)
			events = append(events, e)
		}
		return events
	}
	tests := []struct {
		name    string
		opts    *eventbus.AggregateOptions
		shuffle func(s eventbus.Store, ctx context.Context, stream string, o *eventbus.ReadOptions) []eventbus.RecordedEvent
	}{
		{"backwards", nil, func(s eventbus.Store, ctx context.Context, stream string, o *eventbus.ReadOptions) []eventbus.RecordedEvent {
			events := read(s, ctx, stream, o)
			slices.Reverse(events)
			return events
		}},
		{"twice", nil, func(s eventbus.Store, ctx context.Context, stream string, o *eventbus.ReadOptions) []eventbus.RecordedEvent {
			events := read(s, ctx, stream, o)
			return append(events, events...)
		}},
		{"from the start after a cached state", &eventbus.AggregateOptions{CacheSize: 10}, func(s eventbus.Store, ctx context.Context, stream string, _ *eventbus.ReadOptions) []eventbus.RecordedEvent {
			return read(s, ctx, stream, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := eventbus.NewMemoryStore(nil)
			require.NoError(t, err)
			reg := newBankRegistry(t)
			appendDeposits(t, inner, reg, "account-1", 4)
			s := &misreadingStore{Store: inner}
			accounts := newAccounts(t, s, reg, tt.opts)
			_, err = accounts.Load(t.Context(), "account-1") // fills the cache, if any
			require.NoError(t, err)
			s.shuffle = tt.shuffle
			v, err := accounts.Load(t.Context(), "account-1")
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "revision order") {
				t.Errorf("Load = %+v, %v, want an error wrapping %v that says the store broke revision order", v, err, eventbus.ErrInvalid)
			}
		})
	}
}

func TestNewAggregateInvalid(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newBankRegistry(t)
	tests := []struct {
		name   string
		s      eventbus.Store
		r      *eventbus.Registry
		evolve func(Account, any) Account
		opts   *eventbus.AggregateOptions
	}{
		{"nil store", nil, reg, evolveAccount, nil},
		{"nil registry", s, nil, evolveAccount, nil},
		{"zero registry", s, new(eventbus.Registry), evolveAccount, nil},
		{"nil evolve", s, reg, nil, nil},
		{"negative attempts", s, reg, evolveAccount, &eventbus.AggregateOptions{MaxAttempts: -1}},
		{"negative cache", s, reg, evolveAccount, &eventbus.AggregateOptions{CacheSize: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := eventbus.NewAggregate(tt.s, tt.r, tt.evolve, tt.opts); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("NewAggregate() = %v, want %v", err, eventbus.ErrInvalid)
			}
		})
	}
}

// userCount is a state folded from user events, for
// TestAggregateOldVersionRefused.
type userCount struct{ Users int }

// TestAggregateOldVersionRefused makes an Aggregate whose event type is the
// Go type of an old schema version of an event type: its stream's events
// load upcast to the latest version, which that type cannot hold, so every
// Load of a stream with an event and every Execute with one would fail.
// NewAggregate refuses it, as SubscribeDurable does; the latest version's
// type and an interface are taken.
func TestAggregateOldVersionRefused(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newUserRegistry(t, nil)
	count := func(c userCount, _ any) userCount { c.Users++; return c }
	if _, err := eventbus.NewAggregate(s, reg, func(c userCount, e userV1) userCount { return count(c, e) }, nil); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("NewAggregate[userCount, userV1] = %v, want %v", err, eventbus.ErrInvalid)
	}
	latest, err := eventbus.NewAggregate(s, reg, func(c userCount, e userV3) userCount { return count(c, e) }, nil)
	require.NoError(t, err)
	_, err = eventbus.NewAggregate(s, reg, count, nil)
	require.NoError(t, err)

	ctx := context.Background()
	_, err = latest.Execute(ctx, "user-1", func(userCount) ([]userV3, error) { return []userV3{{First: "Ada"}}, nil })
	require.NoError(t, err)
	v, err := latest.Load(ctx, "user-1")
	require.NoError(t, err)
	if v.State.Users != 1 {
		t.Errorf("Load(user-1) = %+v, want 1 user", v.State)
	}
}

// TestAggregateUnregisteredTypeRefused makes an Aggregate whose event type
// is a concrete Go type not registered, such as a pointer to a registered
// one: no event decodes to it and none of it encodes, so every Load of a
// stream with an event, and every Execute that decides one, would fail.
// NewAggregate refuses it with an error wrapping ErrUnknownEvent, as it
// refuses a state type not registered for snapshots.
func TestAggregateUnregisteredTypeRefused(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newUserRegistry(t, nil)
	evolve := func(c userCount, _ *userV3) userCount { c.Users++; return c }
	if _, err := eventbus.NewAggregate(s, reg, evolve, nil); !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("NewAggregate[userCount, *userV3], not registered = %v, want %v", err, eventbus.ErrUnknownEvent)
	}
}

func TestEventSourcingNilContext(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		accounts := newAccounts(t, s, reg, nil)
		bus := newBus(t, nil)
		topic := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		d := subscribeDurable(t, bus, s, reg, "ledger", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
		var nilCtx context.Context
		calls := map[string]func() error{
			"Aggregate.Load":                func() error { _, err := accounts.Load(nilCtx, "a"); return err },
			"Aggregate.Execute":             func() error { _, err := accounts.Execute(nilCtx, "a", deposit(1)); return err },
			"Aggregate.Execute(nil decide)": func() error { _, err := accounts.Execute(context.Background(), "a", nil); return err },
			"StoreTopic.Publish":            func() error { _, err := topic.Publish(nilCtx, Deposited{}); return err },
			"StoreTopic.PublishBatch": func() error {
				_, err := topic.PublishBatch(nilCtx, []Deposited{{}})
				return err
			},
			"SubscribeDurable": func() error {
				_, err := eventbus.SubscribeDurable(nilCtx, bus, s, reg, "x", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
				return err
			},
			"SubscribeDurableBatch": func() error {
				_, err := eventbus.SubscribeDurableBatch(nilCtx, bus, s, reg, "x", func(context.Context, []eventbus.Event[Deposited]) error { return nil }, nil)
				return err
			},
			"StoreTopic.SubscribeBatch": func() error {
				_, err := topic.SubscribeBatch(nilCtx, "x", func(context.Context, []eventbus.Event[Deposited]) error { return nil }, nil)
				return err
			},
			"Durable.WaitFor": func() error { return d.WaitFor(nilCtx, 0) },
			"Durable.Stop":    func() error { return d.Stop(nilCtx) },
			"Durable.Rebuild": func() error { return d.Rebuild(nilCtx, nil) },
			"SaveSnapshot": func() error {
				return eventbus.SaveSnapshot(nilCtx, s, reg, "a", eventbus.Snapshot[Account]{})
			},
			"LoadSnapshot": func() error { _, _, err := eventbus.LoadSnapshot[Account](nilCtx, s, reg, "a"); return err },
			"StoreProcessed.Processed": func() error {
				_, err := eventbus.NewStoreProcessed(s).Processed(nilCtx, eventbus.IdempotencyKey{Subscription: "s"})
				return err
			},
			"StoreProcessed.MarkProcessed": func() error {
				return eventbus.NewStoreProcessed(s).MarkProcessed(nilCtx, eventbus.IdempotencyKey{Subscription: "s"})
			},
			"WithTraceparent": func() error {
				_, err := eventbus.WithTraceparent(nilCtx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
				return err
			},
		}
		if got := eventbus.Traceparent(nilCtx); got != "" {
			t.Errorf("Traceparent(nil context) = %q, want \"\"", got)
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, eventbus.ErrInvalid) {
				t.Errorf("%s(nil context) = %v, want %v", name, err, eventbus.ErrInvalid)
			}
		}
	})
}

// TestNilContextErrorsNameTheCall checks that the error for a nil context
// names the call that was given it, followed by ':', not another one that
// it makes: FileStore.Append said "AppendMulti: nil context",
// Aggregate.Execute "Aggregate.Load: nil context" and StoreTopic.Subscribe
// "SubscribeDurable: nil context", calls the caller never made.
func TestNilContextErrorsNameTheCall(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		accounts := newAccounts(t, s, reg, nil)
		bus := newBus(t, nil)
		topic := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		var nilCtx context.Context // the bad input
		e := eventbus.EventData{ID: eventbus.NewID(), Type: "t"}
		for call, f := range map[string]func() error{
			"Append": func() error { _, err := s.Append(nilCtx, "a", eventbus.Any, e); return err },
			"AppendMulti": func() error {
				_, err := s.AppendMulti(nilCtx, eventbus.StreamAppend{Stream: "a", Events: []eventbus.EventData{e}})
				return err
			},
			"Aggregate.Execute": func() error { _, err := accounts.Execute(nilCtx, "a", deposit(1)); return err },
			"StoreTopic.Subscribe": func() error {
				_, err := topic.Subscribe(nilCtx, "mailer", func(context.Context, eventbus.Event[Deposited]) error { return nil }, nil)
				return err
			},
		} {
			err := f()
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), call+": nil context") {
				t.Errorf("%s(nil context) = %v, want an ErrInvalid naming %s", call, err, call)
			}
		}
	})
}

// TestAggregateTruncatedStream checks an aggregate whose stream no longer
// shows every event after the state it starts from (none, a snapshot or a
// cached state), because the stream's MaxCount or MaxAge hides them: Load
// and Execute fail with ErrTruncated, naming the revisions, instead of
// folding what is left; a snapshot that covers the hidden events lets the
// aggregate load again.
func TestAggregateTruncatedStream(t *testing.T) {
	const stream = "account-1"
	tests := []struct {
		name string
		opts *eventbus.AggregateOptions
		// prepare writes the stream, sets its metadata and returns the
		// balance Load must find, or an error message it must contain.
		prepare func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, accounts *eventbus.Aggregate[Account, any]) (balance int, gone string)
	}{
		{"no start, max count", nil, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, _ *eventbus.Aggregate[Account, any]) (int, string) {
			appendDeposits(t, s, reg, stream, 6)
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			return 0, "revisions 0 to 3 "
		}},
		{"cached state, max count", &eventbus.AggregateOptions{CacheSize: 10}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, accounts *eventbus.Aggregate[Account, any]) (int, string) {
			_, err := accounts.Execute(t.Context(), stream, deposit(1)) // cached at revision 0
			require.NoError(t, err)
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			appendDeposits(t, s, reg, stream, 5)
			return 0, "revisions 1 to 3 "
		}},
		{"no start, max age", nil, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, _ *eventbus.Aggregate[Account, any]) (int, string) {
			appendDeposits(t, s, reg, stream, 3)
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxAge: time.Hour})
			time.Sleep(2 * time.Hour) // the bubble's clock: every event is too old
			return 0, "revisions 0 to 2 "
		}},
		{"cached state, max age", &eventbus.AggregateOptions{CacheSize: 10}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, accounts *eventbus.Aggregate[Account, any]) (int, string) {
			_, err := accounts.Execute(t.Context(), stream, deposit(1))
			require.NoError(t, err)
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxAge: time.Hour})
			appendDeposits(t, s, reg, stream, 2)
			time.Sleep(2 * time.Hour)
			return 0, "revisions 1 to 2 "
		}},
		{"snapshot before the hidden events", &eventbus.AggregateOptions{SnapshotEvery: 100}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, _ *eventbus.Aggregate[Account, any]) (int, string) {
			appendDeposits(t, s, reg, stream, 6)
			require.NoError(t, eventbus.SaveSnapshot(t.Context(), s, reg, stream, eventbus.Snapshot[Account]{Revision: 2, State: Account{Balance: 3, Events: 3}}))
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			return 0, "revision 3 "
		}},
		{"snapshot at the last hidden event", &eventbus.AggregateOptions{SnapshotEvery: 100}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, _ *eventbus.Aggregate[Account, any]) (int, string) {
			appendDeposits(t, s, reg, stream, 6)
			require.NoError(t, eventbus.SaveSnapshot(t.Context(), s, reg, stream, eventbus.Snapshot[Account]{Revision: 3, State: Account{Balance: 4, Events: 4}}))
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			return 6, ""
		}},
		{"snapshot at the last hidden event, unread", nil, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, _ *eventbus.Aggregate[Account, any]) (int, string) {
			// Without SnapshotEvery, Load reads no snapshot: the error's
			// remedy, a snapshot, must say that it takes the option.
			appendDeposits(t, s, reg, stream, 6)
			require.NoError(t, eventbus.SaveSnapshot(t.Context(), s, reg, stream, eventbus.Snapshot[Account]{Revision: 3, State: Account{Balance: 4, Events: 4}}))
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			return 0, "SnapshotEvery"
		}},
		{"snapshots every event, max age", &eventbus.AggregateOptions{SnapshotEvery: 1}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, accounts *eventbus.Aggregate[Account, any]) (int, string) {
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxAge: time.Hour})
			for range 3 {
				_, err := accounts.Execute(t.Context(), stream, deposit(1))
				require.NoError(t, err)
			}
			time.Sleep(2 * time.Hour)
			return 3, ""
		}},
		{"cached state before a snapshot that covers", &eventbus.AggregateOptions{CacheSize: 10, SnapshotEvery: 100}, func(t *testing.T, s eventbus.Store, reg *eventbus.Registry, accounts *eventbus.Aggregate[Account, any]) (int, string) {
			_, err := accounts.Execute(t.Context(), stream, deposit(1)) // cached at revision 0
			require.NoError(t, err)
			other := newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1})
			for range 5 {
				_, err := other.Execute(t.Context(), stream, deposit(1))
				require.NoError(t, err)
			}
			setMetadata(t, s, stream, eventbus.StreamMetadata{MaxCount: 2})
			return 6, ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				accounts := newAccounts(t, s, reg, tt.opts)
				balance, gone := tt.prepare(t, s, reg, accounts)
				v, err := accounts.Load(t.Context(), stream)
				if gone == "" {
					if err != nil || v.State.Balance != balance {
						t.Fatalf("Load = %+v, %v, want balance %d", v, err, balance)
					}
					_, err := accounts.Execute(t.Context(), stream, deposit(1))
					require.NoError(t, err, "Execute after a Load that succeeded")
					return
				}
				if !errors.Is(err, eventbus.ErrTruncated) || !strings.Contains(err.Error(), gone) || !strings.Contains(err.Error(), "snapshot") {
					t.Fatalf("Load = %+v, %v, want an error wrapping %v that names %q and a snapshot", v, err, eventbus.ErrTruncated, gone)
				}
				decided := false
				_, err = accounts.Execute(t.Context(), stream, func(a Account) ([]any, error) {
					decided = true
					return deposit(1)(a)
				})
				if !errors.Is(err, eventbus.ErrTruncated) || decided {
					t.Errorf("Execute = %v (decide ran: %v), want an error wrapping %v before decide", err, decided, eventbus.ErrTruncated)
				}
			})
		})
	}
}

// setMetadata sets stream's metadata in s.
func setMetadata(t *testing.T, s eventbus.Store, stream string, md eventbus.StreamMetadata) {
	t.Helper()
	require.NoError(t, s.SetStreamMetadata(t.Context(), stream, md))
}

// skewedStore reports every existing stream as starting 5 revisions later
// than its reads show: a store whose reads and StreamInfo disagree.
type skewedStore struct{ eventbus.Store }

func (s skewedStore) StreamInfo(ctx context.Context, stream string) (eventbus.StreamInfo, error) {
	info, err := s.Store.StreamInfo(ctx, stream)
	if info.Exists {
		info.Start += 5
	}
	return info, err
}

// churningStore soft-deletes every stream and appends a deposit to it
// again before each StreamInfo: another process that restarts the stream
// after every read of it.
type churningStore struct {
	eventbus.Store
	reg *eventbus.Registry
}

func (s churningStore) StreamInfo(ctx context.Context, stream string) (eventbus.StreamInfo, error) {
	if err := s.Delete(ctx, stream, eventbus.Any); err != nil {
		return eventbus.StreamInfo{}, err
	}
	e, err := s.reg.Encode(Deposited{Amount: 1})
	if err != nil {
		return eventbus.StreamInfo{}, err
	}
	if _, err := s.Append(ctx, stream, eventbus.Any, e); err != nil {
		return eventbus.StreamInfo{}, err
	}
	return s.Store.StreamInfo(ctx, stream)
}

// TestAggregateLoadGivesUp checks that Load stops reading again after a
// few reads when the stream seems to change under every one, instead of
// spinning, with an error that matches ErrWrongExpectedVersion, as a
// conflict with another writer does.
func TestAggregateLoadGivesUp(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, nil)
		_, err := accounts.Execute(ctx, "a", deposit(1))
		require.NoError(t, err)
		// Soft-deleted and written again: its reads start after revision 0,
		// so Load asks StreamInfo where its current life starts.
		require.NoError(t, s.Delete(ctx, "a", eventbus.Any))
		_, err = accounts.Execute(ctx, "a", deposit(1))
		require.NoError(t, err)
		for _, tt := range []struct {
			name string
			s    eventbus.Store
		}{
			{"reads and StreamInfo disagree", skewedStore{s}},
			{"deleted after every read", churningStore{s, reg}},
		} {
			_, err = newAccounts(t, tt.s, reg, nil).Load(ctx, "a")
			if !errors.Is(err, eventbus.ErrWrongExpectedVersion) || !strings.Contains(err.Error(), "changed under 8 reads in a row") {
				t.Errorf("%s: Load = %v, want an error wrapping %v that says the stream changed under 8 reads", tt.name, err, eventbus.ErrWrongExpectedVersion)
			}
		}
	})
}

// depositedInCents is the first schema version of Deposited, which
// upcasts to it.
type depositedInCents struct{ Cents int }

func (depositedInCents) EventType() string { return "account.deposited" }

// TestAggregateFoldsWhatItAppends checks that the state Execute caches and
// snapshots is the one a load of the stream gives: its events as the
// registry decodes them (here, an older schema version upcast), not as
// decide returned them. And that an event the registry cannot decode back
// is not appended, since every load of the stream would then fail.
func TestAggregateFoldsWhatItAppends(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := t.Context()
		reg, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[depositedInCents](reg, &eventbus.TypeOptions{Version: 1}))
		require.NoError(t, eventbus.Register[Deposited](reg, &eventbus.TypeOptions{Version: 2}))
		require.NoError(t, eventbus.Register[Withdrawn](reg, nil))
		require.NoError(t, eventbus.Register[Account](reg, &eventbus.TypeOptions{Name: "account.state"}))
		require.NoError(t, eventbus.RegisterUpcaster(reg, func(d depositedInCents) (Deposited, error) {
			return Deposited{Amount: d.Cents / 100}, nil
		}))
		accounts := newAccounts(t, s, reg, &eventbus.AggregateOptions{CacheSize: 10, SnapshotEvery: 1})
		_, err = accounts.Execute(ctx, "account-1", func(Account) ([]any, error) {
			return []any{depositedInCents{Cents: 500}, Deposited{Amount: 1}}, nil // an old writer's event, a new one's
		})
		require.NoError(t, err)

		want := eventbus.Version[Account]{State: Account{Balance: 6, Events: 2}, Expected: eventbus.Exact(1)}
		for name, a := range map[string]*eventbus.Aggregate[Account, any]{
			"cached":   accounts,
			"snapshot": newAccounts(t, s, reg, &eventbus.AggregateOptions{SnapshotEvery: 1}),
			"replayed": newAccounts(t, s, reg, nil),
		} {
			v, err := a.Load(ctx, "account-1")
			require.NoError(t, err)
			if diff := cmp.Diff(want, v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
				t.Errorf("Load, %s (-want +got):\n%s", name, diff)
			}
		}

		// An upcaster that fails for this payload: the event cannot be read.
		boom := errors.New("boom")
		broken, err := eventbus.NewRegistry(nil)
		require.NoError(t, err)
		require.NoError(t, eventbus.Register[depositedInCents](broken, &eventbus.TypeOptions{Version: 1}))
		require.NoError(t, eventbus.Register[Deposited](broken, &eventbus.TypeOptions{Version: 2}))
		require.NoError(t, eventbus.RegisterUpcaster(broken, func(depositedInCents) (Deposited, error) { return Deposited{}, boom }))
		unreadable := newAccounts(t, s, broken, nil)
		_, err = unreadable.Execute(ctx, "account-2", func(Account) ([]any, error) {
			return []any{depositedInCents{Cents: 500}}, nil
		})
		if !errors.Is(err, boom) {
			t.Errorf("Execute of an event that does not decode = %v, want %v", err, boom)
		}
		info, err := s.StreamInfo(ctx, "account-2")
		require.NoError(t, err)
		if info.Exists {
			t.Errorf("Execute appended an event that does not decode: %+v", info)
		}
	})
}

// TestAggregateExecuteBadEventSaysWhich runs commands whose decide returns
// an event that cannot be encoded: a nil one, or one of a type not
// registered. Execute appends nothing, and its error names the stream and
// the event, as for an event that does not decode, and a nil one wraps
// ErrInvalid, not ErrUnknownEvent as Encode's error for it does.
func TestAggregateExecuteBadEventSaysWhich(t *testing.T) {
	type unregistered struct{ N int }
	tests := []struct {
		name   string
		events []any
		want   error
		says   []string
	}{
		{"nil", []any{Deposited{Amount: 1}, nil}, eventbus.ErrInvalid, []string{`"acc-1"`, "event 2 of 2", "nil"}},
		{"unregistered", []any{unregistered{N: 1}, Deposited{Amount: 1}}, eventbus.ErrUnknownEvent, []string{`"acc-1"`, "event 1 of 2", "unregistered"}},
	}
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := t.Context()
		accounts := newAccounts(t, s, reg, nil)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := accounts.Execute(ctx, "acc-1", func(Account) ([]any, error) { return tt.events, nil })
				if !errors.Is(err, tt.want) {
					t.Fatalf("Execute(%v) = %v, want %v", tt.events, err, tt.want)
				}
				for _, says := range tt.says {
					if !strings.Contains(err.Error(), says) {
						t.Errorf("Execute(%v) = %q, want it to say %s", tt.events, err, says)
					}
				}
				info, err := s.StreamInfo(ctx, "acc-1")
				require.NoError(t, err)
				if info.Exists {
					t.Errorf("Execute(%v) appended: %+v", tt.events, info)
				}
			})
		}
	})
}

// ctxStore is a Store of someone else's that, like database/sql, panics on
// a nil context.
type ctxStore struct{ eventbus.Store }

func (s ctxStore) StreamInfo(ctx context.Context, stream string) (eventbus.StreamInfo, error) {
	if ctx == nil {
		panic("nil Context")
	}
	return s.Store.StreamInfo(ctx, stream)
}

// TestStoreProcessedNilContext checks that StoreProcessed refuses a nil
// context itself, over any Store, as MarkProcessed does, rather than hand
// it to the store.
func TestStoreProcessedNilContext(t *testing.T) {
	s, _ := backends[0].open(t)
	p := eventbus.NewStoreProcessed(ctxStore{s})
	var nilCtx context.Context
	k := eventbus.IdempotencyKey{Subscription: "s", ID: eventbus.NewID()}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Processed(nil context) panicked in the store: %v", r)
			}
		}()
		if _, err := p.Processed(nilCtx, k); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Processed(nil context) = %v, want %v", err, eventbus.ErrInvalid)
		}
	}()
	if err := p.MarkProcessed(nilCtx, k); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("MarkProcessed(nil context) = %v, want %v", err, eventbus.ErrInvalid)
	}
}

// modelStream is what a stream should fold to: the amounts of its current
// life's events, its last revision (-1 before any) and whether it is
// soft-deleted.
type modelStream struct {
	life    []int
	lastRev int
	deleted bool
}

// want is the Version that a load of the stream must give.
func (m *modelStream) want() eventbus.Version[Account] {
	if m.deleted || len(m.life) == 0 {
		return eventbus.Version[Account]{Expected: eventbus.NoStream}
	}
	var a Account
	for _, x := range m.life {
		a.Balance += x
		a.Events++
	}
	return eventbus.Version[Account]{State: a, Expected: eventbus.Exact(uint64(m.lastRev))}
}

// add records an event of amount x appended to the stream.
func (m *modelStream) add(x int) {
	if m.deleted {
		m.deleted = false
		m.life = nil
	}
	m.life = append(m.life, x)
	m.lastRev++
}

// TestAggregateModel runs random commands, appends of other writers, soft
// deletes, max counts, snapshots and restarts against aggregates of every
// combination of options over the same streams, and checks every load
// against a model of each stream: the fold of its current life. A load may
// fail with ErrTruncated only where a max count hides an event of it.
func TestAggregateModel(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(seed, 7))
				optss := []*eventbus.AggregateOptions{
					{CacheSize: 2, SnapshotEvery: 3},
					{SnapshotEvery: 2},
					{CacheSize: 1},
					nil,
					{CacheSize: 3, SnapshotEvery: 1},
				}
				var aggs []*eventbus.Aggregate[Account, any]
				for _, o := range optss {
					aggs = append(aggs, newAccounts(t, s, reg, o))
				}
				streams := []string{"a", "b", "c"}
				model := map[string]*modelStream{}
				for _, st := range streams {
					model[st] = &modelStream{lastRev: -1}
				}
				maxCount := map[string]uint64{}
				for step := range 300 {
					st := streams[rng.IntN(len(streams))]
					m := model[st]
					ag := aggs[rng.IntN(len(aggs))]
					var op string
					switch r := rng.IntN(100); {
					case r < 30:
						amt := rng.IntN(10) + 1
						op = fmt.Sprintf("execute deposit %d", amt)
						_, err := ag.Execute(ctx, st, deposit(amt))
						if errors.Is(err, eventbus.ErrTruncated) && maxCount[st] > 0 {
							continue
						}
						require.NoError(t, err, op)
						m.add(amt)
					case r < 45:
						amt := rng.IntN(20) + 1
						op = fmt.Sprintf("execute withdraw %d", amt)
						_, err := ag.Execute(ctx, st, withdraw(amt))
						if errors.Is(err, eventbus.ErrTruncated) && maxCount[st] > 0 {
							continue
						}
						if m.want().State.Balance < amt {
							require.ErrorIs(t, err, ErrInsufficientFunds, op)
						} else {
							require.NoError(t, err, op)
							m.add(-amt)
						}
					case r < 60:
						op = "external deposit"
						appendDeposits(t, s, reg, st, 1)
						m.add(1)
					case r < 66:
						op = "delete"
						require.NoError(t, s.Delete(ctx, st, eventbus.Any))
						if m.lastRev >= 0 {
							m.deleted = true
						}
					case r < 67:
						mc := []uint64{0, 0, 2, 5}[rng.IntN(4)]
						op = fmt.Sprintf("max count %d", mc)
						setMetadata(t, s, st, eventbus.StreamMetadata{MaxCount: mc})
						maxCount[st] = mc
					case r < 68:
						op = "reopen"
						s = reopen()
						aggs = nil
						for _, o := range optss {
							aggs = append(aggs, newAccounts(t, s, reg, o))
						}
					case r < 72:
						op = "valid snapshot"
						w := m.want()
						if w.Expected != eventbus.NoStream {
							v, err := aggs[3].Load(ctx, st)
							if errors.Is(err, eventbus.ErrTruncated) && maxCount[st] > 0 {
								v.State = w.State
							} else {
								require.NoError(t, err)
							}
							require.NoError(t, eventbus.SaveSnapshot(ctx, s, reg, st, eventbus.Snapshot[Account]{Revision: uint64(m.lastRev), State: v.State}))
						}
					default:
						op = "load"
					}
					for i, a := range aggs {
						v, err := a.Load(ctx, st)
						if errors.Is(err, eventbus.ErrTruncated) && maxCount[st] > 0 && uint64(len(m.life)) > maxCount[st] && !m.deleted {
							continue
						}
						require.NoError(t, err, "step %d after %s: aggregate %d", step, op, i)
						if diff := cmp.Diff(m.want(), v, cmp.AllowUnexported(eventbus.ExpectedRevision{})); diff != "" {
							t.Fatalf("step %d after %s on %s: aggregate %d Load (-want +got):\n%s", step, op, st, i, diff)
						}
					}
				}
			})
		})
	}
}

// TestAggregateConcurrentExecute runs deposits and withdrawals of 3 on one
// stream from 8 goroutines, each with an aggregate of its own options, some
// with a single attempt: a command either succeeds once or fails with a
// conflict or its own error, a balance is never negative, and the stream,
// the cache and the snapshots all agree with the commands that succeeded.
func TestAggregateConcurrentExecute(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		optss := []*eventbus.AggregateOptions{
			{CacheSize: 2, SnapshotEvery: 3, MaxAttempts: 2},
			{SnapshotEvery: 2, MaxAttempts: 1},
			{CacheSize: 1, MaxAttempts: 3},
			{CacheSize: 3, SnapshotEvery: 1, MaxAttempts: 1},
		}
		_, err := newAccounts(t, s, reg, nil).Execute(ctx, "acc", deposit(50))
		require.NoError(t, err)
		type result struct{ dep, wd int }
		results := make(chan result, 8)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				ag := newAccounts(t, s, reg, optss[g%len(optss)])
				var r result
				for i := range 40 {
					if (i+g)%2 == 0 {
						_, err := ag.Execute(ctx, "acc", deposit(1))
						if err == nil {
							r.dep++
						} else if !errors.Is(err, eventbus.ErrWrongExpectedVersion) {
							t.Errorf("deposit: %v", err)
						}
					} else {
						_, err := ag.Execute(ctx, "acc", withdraw(3))
						if err == nil {
							r.wd++
						} else if !errors.Is(err, eventbus.ErrWrongExpectedVersion) && !errors.Is(err, ErrInsufficientFunds) {
							t.Errorf("withdraw: %v", err)
						}
					}
					v, err := ag.Load(ctx, "acc")
					if err != nil {
						t.Errorf("load: %v", err)
					} else if v.State.Balance < 0 {
						t.Errorf("negative balance %d", v.State.Balance)
					}
				}
				results <- r
			})
		}
		wg.Wait()
		close(results)
		want := Account{Balance: 50, Events: 1}
		for r := range results {
			want.Balance += r.dep - 3*r.wd
			want.Events += r.dep + r.wd
		}
		var fold Account
		for e, err := range s.ReadStream(ctx, "acc", nil) {
			require.NoError(t, err)
			p, err := eventbus.Decode[any](reg, e.EventData)
			require.NoError(t, err)
			fold = evolveAccount(fold, p)
		}
		require.Equal(t, want, fold)
		for _, o := range optss {
			v, err := newAccounts(t, s, reg, o).Load(ctx, "acc")
			require.NoError(t, err)
			require.Equal(t, want, v.State)
		}
	})
}

// TestAggregateExecuteLinksHandlerEvent runs a command from a bus handler,
// as a process manager does: the events appended take the handled event's
// correlation ID, its ID as causation ID and its trace context, as
// StoreTopic.Publish's do. Run outside any handler, each appended event is
// its own correlation ID, with no cause; a context of WithTraceparent gives
// its trace context.
func TestAggregateExecuteLinksHandlerEvent(t *testing.T) {
	ctx := context.Background()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	accounts := newAccounts(t, s, newBankRegistry(t), nil)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	bus := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	type depositCommand struct{ Amount int }
	commands := newTopic[depositCommand](t, bus, "commands", nil)
	var handled eventbus.Header
	_, err = commands.Subscribe("accounts", func(ctx context.Context, e eventbus.Event[depositCommand]) error {
		handled = e.Header
		_, err := accounts.Execute(ctx, "account-1", deposit(e.Payload.Amount))
		return err
	}, nil)
	require.NoError(t, err)
	traced, err := eventbus.WithTraceparent(ctx, tp)
	require.NoError(t, err)
	require.NoError(t, commands.Publish(traced, depositCommand{Amount: 5}, eventbus.WithCorrelationID(eventbus.NewID())))

	_, err = accounts.Execute(ctx, "account-1", deposit(1))
	require.NoError(t, err)
	_, err = accounts.Execute(traced, "account-1", deposit(2))
	require.NoError(t, err)

	var got []eventbus.RecordedEvent
	for e, err := range s.ReadStream(ctx, "account-1", nil) {
		require.NoError(t, err)
		got = append(got, e)
	}
	require.Len(t, got, 3)
	if e := got[0]; e.CorrelationID != handled.CorrelationID || e.CausationID != handled.ID || e.Metadata[eventbus.TraceparentKey] != tp {
		t.Errorf("event appended by the handler: correlation %v, causation %v, metadata %v; want %v, %v and traceparent %s",
			e.CorrelationID, e.CausationID, e.Metadata, handled.CorrelationID, handled.ID, tp)
	}
	if e := got[1]; e.CorrelationID != e.ID || !e.CausationID.IsZero() || e.Metadata != nil {
		t.Errorf("event appended outside a handler: correlation %v, causation %v, metadata %v; want its own ID, none and none", e.CorrelationID, e.CausationID, e.Metadata)
	}
	if e := got[2]; e.CorrelationID != e.ID || !e.CausationID.IsZero() || e.Metadata[eventbus.TraceparentKey] != tp {
		t.Errorf("event appended with a traceparent: correlation %v, causation %v, metadata %v; want its own ID, none and traceparent %s", e.CorrelationID, e.CausationID, e.Metadata, tp)
	}
}

// opened is an event of a payload type registered as a pointer, as
// protobuf messages are.
type opened struct{ Owner string }

// TestAggregateExecuteNilPointerEvent runs commands whose decide returns a
// nil pointer event, of a pointer E or held by an interface E: a nil
// event, which Execute refuses with an error wrapping ErrInvalid that
// names the stream and the event, appending nothing, where the event
// would be stored as JSON null and decode to a nil pointer for every
// evolve and subscriber that reads it.
func TestAggregateExecuteNilPointerEvent(t *testing.T) {
	ctx := t.Context()
	r := newEmptyRegistry(t)
	require.NoError(t, eventbus.Register[*opened](r, nil))
	s := openMemoryStore(t)
	defer s.Close()
	owners := func(n int, e *opened) int { return n + 1 } // nil-safe, so that Execute can append
	ptr, err := eventbus.NewAggregate(s, r, owners, nil)
	require.NoError(t, err)
	anyE, err := eventbus.NewAggregate(s, r, func(n int, e any) int { return n + 1 }, nil)
	require.NoError(t, err)
	tests := []struct {
		name    string
		execute func(stream string) error
	}{
		{"pointer E", func(stream string) error {
			_, err := ptr.Execute(ctx, stream, func(int) ([]*opened, error) { return []*opened{{Owner: "ada"}, nil}, nil })
			return err
		}},
		{"interface E", func(stream string) error {
			_, err := anyE.Execute(ctx, stream, func(int) ([]any, error) { return []any{&opened{Owner: "ada"}, (*opened)(nil)}, nil })
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := "acc-" + tt.name
			err := tt.execute(stream)
			if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "event 2 of 2") || !strings.Contains(err.Error(), stream) {
				t.Errorf("Execute of a nil *opened = %v, want ErrInvalid naming %q and event 2 of 2", err, stream)
			}
			info, err := s.StreamInfo(ctx, stream)
			require.NoError(t, err)
			if info.Exists {
				t.Errorf("Execute of a nil *opened appended: %+v", info)
			}
		})
	}
}

// TestBadStreamNameErrorsNameTheCall checks that an empty stream name, or
// one that is not UTF-8, given to Aggregate.Load, Aggregate.Execute,
// SaveSnapshot or LoadSnapshot gets an error wrapping ErrInvalid that names
// the call, as their other errors of bad input do (a nil context, a nil
// store): each said "stream name is empty" and no more.
func TestBadStreamNameErrorsNameTheCall(t *testing.T) {
	ctx := context.Background()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	r := newBankRegistry(t)
	accounts := newAccounts(t, s, r, &eventbus.AggregateOptions{SnapshotEvery: 1})
	for _, stream := range []string{"", "bad\xff"} {
		for call, f := range map[string]func() error{
			"Aggregate.Load": func() error { _, err := accounts.Load(ctx, stream); return err },
			"Aggregate.Execute": func() error {
				_, err := accounts.Execute(ctx, stream, deposit(1))
				return err
			},
			"SaveSnapshot": func() error {
				return eventbus.SaveSnapshot(ctx, s, r, stream, eventbus.Snapshot[Account]{Revision: 1})
			},
			"LoadSnapshot": func() error {
				_, _, err := eventbus.LoadSnapshot[Account](ctx, s, r, stream)
				return err
			},
		} {
			if err := f(); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(fmt.Sprint(err), call+": ") {
				t.Errorf("%s(%q) = %v, want an error wrapping ErrInvalid naming %s", call, stream, err, call)
			}
		}
	}
}

// TestAggregateEvolvePanic checks that a panic in evolve fails the Load or
// Execute that folds the event with a *PanicError, as one in a codec or an
// upcaster does, and that Execute, which folds a command's events before it
// appends them, never appends one that makes evolve panic. The panic
// crashed the caller of Load on every load of a stream holding such an
// event, and Execute appended the event before failing.
func TestAggregateEvolvePanic(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		evolve := func(a Account, e any) Account {
			if d, ok := e.(Deposited); ok && d.Amount < 0 {
				panic(fmt.Sprintf("negative deposit %d", d.Amount))
			}
			return evolveAccount(a, e)
		}
		accounts, err := eventbus.NewAggregate(s, reg, evolve, &eventbus.AggregateOptions{CacheSize: 4})
		require.NoError(t, err)
		var pe *eventbus.PanicError

		_, err = accounts.Execute(ctx, "account-1", deposit(10))
		require.NoError(t, err)
		_, err = accounts.Execute(ctx, "account-1", deposit(-1))
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "negative deposit -1") {
			t.Fatalf("Execute(deposit -1) = %v, want a *PanicError with evolve's panic value", err)
		}
		info, err := s.StreamInfo(ctx, "account-1")
		require.NoError(t, err)
		require.Equal(t, uint64(0), info.Revision, "the stream's revision after the failed command: it appended its event")
		v, err := accounts.Load(ctx, "account-1")
		require.NoError(t, err)
		require.Equal(t, Account{Balance: 10, Events: 1}, v.State)

		// An event written by other code, which evolve cannot fold:
		// every load fails with an error naming it, and no caller
		// crashes.
		data, err := reg.Encode(Deposited{Amount: -2})
		require.NoError(t, err)
		_, err = s.Append(ctx, "account-1", eventbus.Exact(0), data)
		require.NoError(t, err)
		for range 2 {
			_, err = accounts.Load(ctx, "account-1")
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), `stream "account-1" revision 1`) {
				t.Fatalf("Load of a stream with an event that makes evolve panic = %v, want a *PanicError naming the stream and revision", err)
			}
		}
		_, err = accounts.Execute(ctx, "account-1", deposit(5))
		require.ErrorAs(t, err, &pe, "Execute on that stream")
		_, err = accounts.Execute(ctx, "account-2", deposit(5))
		require.NoError(t, err, "Execute on another stream")
	})
}
