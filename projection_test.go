package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// balances is a read model: the balance of every account.
type balances struct {
	mu sync.Mutex
	m  map[string]int
}

func (b *balances) apply(_ context.Context, e eventbus.Event[any]) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]int)
	}
	switch p := e.Payload.(type) {
	case Deposited:
		b.m[e.Key] += p.Amount
	case Withdrawn:
		b.m[e.Key] -= p.Amount
	}
	return nil
}

func (b *balances) reset(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m = nil
	return nil
}

func (b *balances) get() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.m)
}

// A projection rebuilt from scratch equals the live one, and WaitFor makes
// the last command visible in it.
func TestProjectionRebuild(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		accounts := newAccounts(t, s, reg, nil)
		bus := newBus(t, &eventbus.Options{Workers: 4})
		opts := &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "account-"}, CheckpointEvery: 7}
		var live balances
		d := subscribeDurable(t, bus, s, reg, "balances", live.apply, opts)

		var last eventbus.AppendResult
		for i := range 30 {
			stream := fmt.Sprintf("account-%d", i%3)
			cmd := deposit(i + 1)
			if i%4 == 3 {
				cmd = withdraw(1)
			}
			var err error
			last, err = accounts.Execute(ctx, stream, cmd)
			require.NoError(t, err)
			if i%10 == 9 { // read your writes
				require.NoError(t, d.WaitFor(ctx, last.Position))
				v, err := accounts.Load(ctx, stream)
				require.NoError(t, err)
				if got := live.get()[stream]; got != v.State.Balance {
					t.Errorf("read model balance of %s after WaitFor = %d, want %d", stream, got, v.State.Balance)
				}
			}
		}
		require.NoError(t, d.WaitFor(ctx, last.Position))
		want := live.get()
		require.Len(t, want, 3)

		require.NoError(t, d.Rebuild(ctx, live.reset))
		require.NoError(t, d.WaitFor(ctx, last.Position))
		if diff := cmp.Diff(want, live.get()); diff != "" {
			t.Errorf("rebuilt read model (-live +rebuilt):\n%s", diff)
		}

		var fresh balances
		d2 := subscribeDurable(t, bus, s, reg, "balances-2", fresh.apply, opts)
		require.NoError(t, d2.WaitFor(ctx, last.Position))
		if diff := cmp.Diff(want, fresh.get()); diff != "" {
			t.Errorf("read model of a new projection (-live +new):\n%s", diff)
		}

		require.NoError(t, d.Stop(ctx))
		if err := d.Rebuild(ctx, nil); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Rebuild() after Stop = %v, want %v", err, eventbus.ErrClosed)
		}
	})
}

// failingStore fails the appends to the streams for which fail returns
// true.
type failingStore struct {
	eventbus.Store
	fail func(stream string) bool
}

var errInjected = errors.New("injected failure")

func (s *failingStore) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if s.fail(stream) {
		return eventbus.AppendResult{}, errInjected
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestProjectionRebuildFails rebuilds a projection whose reset empties the
// read model and then fails, and one whose store fails to save the
// checkpoint: the process that starts the projection again must not resume
// past events that the read model lost. While reset runs, Checkpoint has
// gone back to 0.
func TestProjectionRebuildFails(t *testing.T) {
	for _, failing := range []string{"reset", "store"} {
		t.Run(failing, func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				var broken atomic.Bool
				fs := &failingStore{Store: s, fail: func(stream string) bool { return broken.Load() && stream == "$checkpoint-balances" }}
				last := appendDeposits(t, s, reg, "account-1", 5).Position
				bus := newBus(t, nil)
				var model balances
				d := subscribeDurable(t, bus, fs, reg, "balances", model.apply, nil)
				require.NoError(t, d.WaitFor(ctx, last))
				require.NoError(t, d.Stop(ctx)) // the checkpoint is saved
				d = subscribeDurable(t, bus, fs, reg, "balances", model.apply, nil)
				broken.Store(failing == "store")
				err := d.Rebuild(ctx, func(ctx context.Context) error {
					if got := d.Checkpoint(); got != 0 {
						t.Errorf("Checkpoint() in Rebuild's reset = %d, want 0", got)
					}
					require.NoError(t, model.reset(ctx))
					return errInjected
				})
				require.ErrorIs(t, err, errInjected)
				broken.Store(false)
				require.NoError(t, bus.Close())

				s = reopen() // the next process
				bus = newBus(t, nil)
				d = subscribeDurable(t, bus, s, reg, "balances", model.apply, nil)
				require.NoError(t, d.WaitFor(ctx, last))
				require.NoError(t, d.Stop(ctx))
				if got := model.get()["account-1"]; got != 5 {
					t.Errorf("balance after a failed rebuild and a restart = %d, want 5", got)
				}
			})
		})
	}
}

// afterReadStore calls after, once, when a read of the stream named
// stream has ended: what another subscription of the same bus might do at
// that moment.
type afterReadStore struct {
	eventbus.Store
	stream string
	after  func()
}

func (s *afterReadStore) ReadStream(ctx context.Context, stream string, o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		defer func() {
			if f := s.after; f != nil && stream == s.stream {
				s.after = nil
				f()
			}
		}()
		for e, err := range s.Store.ReadStream(ctx, stream, o) {
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestProjectionRebuildWhileSubscribing starts a projection of the same
// name as a running one, which rebuilds, and fails after emptying the read
// model, just after the new one has read the checkpoint. The new one must
// not resume from the checkpoint it read, which no longer holds: it is
// refused, since the name was taken when it read.
func TestProjectionRebuildWhileSubscribing(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "account-1", 5).Position
		bus := newBus(t, nil)
		var model balances
		d := subscribeDurable(t, bus, s, reg, "balances", model.apply, nil)
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx)) // the checkpoint is saved
		d = subscribeDurable(t, bus, s, reg, "balances", model.apply, nil)

		hooked := &afterReadStore{Store: s, stream: "$checkpoint-balances", after: func() {
			err := d.Rebuild(ctx, func(ctx context.Context) error {
				require.NoError(t, model.reset(ctx))
				return errInjected
			})
			require.ErrorIs(t, err, errInjected)
		}}
		d2, err := eventbus.SubscribeDurable(ctx, bus, hooked, reg, "balances", model.apply, nil)
		if !errors.Is(err, eventbus.ErrDuplicate) {
			t.Errorf("SubscribeDurable() of a running projection's name = %v, want %v", err, eventbus.ErrDuplicate)
		}
		if err == nil {
			require.NoError(t, d2.WaitFor(ctx, last))
			require.NoError(t, d2.Stop(ctx))
			if got := model.get()["account-1"]; got != 5 {
				t.Errorf("balance = %d, want 5", got)
			}
		}
	})
}

// unreadableStore fails the reads of its streams while broken is set.
type unreadableStore struct {
	eventbus.Store
	broken atomic.Bool
}

func (s *unreadableStore) ReadStream(ctx context.Context, stream string, o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if s.broken.Load() {
		return func(yield func(eventbus.RecordedEvent, error) bool) { yield(eventbus.RecordedEvent{}, errInjected) }
	}
	return s.Store.ReadStream(ctx, stream, o)
}

// A projection that could not read its checkpoint leaves its name free:
// the next try starts it.
func TestProjectionCheckpointUnreadable(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "account-1", 5).Position
		bus := newBus(t, nil)
		var model balances
		us := &unreadableStore{Store: s}
		us.broken.Store(true)
		_, err := eventbus.SubscribeDurable(ctx, bus, us, reg, "balances", model.apply, nil)
		require.ErrorIs(t, err, errInjected)
		us.broken.Store(false)
		d := subscribeDurable(t, bus, us, reg, "balances", model.apply, nil)
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
		if got := model.get()["account-1"]; got != 5 {
			t.Errorf("balance = %d, want 5", got)
		}
	})
}
