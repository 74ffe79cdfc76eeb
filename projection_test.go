package eventbus_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
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
		if err := d.Rebuild(ctx, nil); err != eventbus.ErrClosed {
			t.Errorf("Rebuild() after Stop = %v, want %v", err, eventbus.ErrClosed)
		}
	})
}
