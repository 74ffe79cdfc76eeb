package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// The event-sourcing tests run on every store backend listed here. Open
// returns an empty store and a function that simulates a restart of the
// process: it returns the store as the next process would open it (for a
// store in memory, the same one).
var backends = []struct {
	name string
	open func(t *testing.T) (s eventbus.Store, reopen func() eventbus.Store)
}{
	{"memory", func(t *testing.T) (eventbus.Store, func() eventbus.Store) {
		s := openMemoryStore(t)
		t.Cleanup(func() { s.Close() })
		return s, func() eventbus.Store { return s }
	}},
	{"file", func(t *testing.T) (eventbus.Store, func() eventbus.Store) {
		dir := t.TempDir()
		s := openFile(t, dir, nil)
		return s, func() eventbus.Store {
			require.NoError(t, s.Close())
			s = openFile(t, dir, nil)
			return s
		}
	}},
}

// Withdrawn is an event of a bank account.
type Withdrawn struct{ Amount int }

// EventType names the event in the store.
func (Withdrawn) EventType() string { return "account.withdrawn" }

// Account is the state of a bank account.
type Account struct {
	Balance, Events int
}

// ErrInsufficientFunds is what a withdrawal beyond the balance decides.
var ErrInsufficientFunds = errors.New("insufficient funds")

// evolveAccount folds one event into an account.
func evolveAccount(a Account, e any) Account {
	switch e := e.(type) {
	case Deposited:
		a.Balance += e.Amount
	case Withdrawn:
		a.Balance -= e.Amount
	}
	a.Events++
	return a
}

func deposit(amount int) func(Account) ([]any, error) {
	return func(Account) ([]any, error) { return []any{Deposited{Amount: amount}}, nil }
}

func withdraw(amount int) func(Account) ([]any, error) {
	return func(a Account) ([]any, error) {
		if a.Balance < amount {
			return nil, fmt.Errorf("withdraw %d from %d: %w", amount, a.Balance, ErrInsufficientFunds)
		}
		return []any{Withdrawn{Amount: amount}}, nil
	}
}

// newBankRegistry returns a registry of the account events and state.
func newBankRegistry(t testing.TB) *eventbus.Registry {
	r, err := eventbus.NewRegistry(nil)
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[Deposited](r, nil))
	require.NoError(t, eventbus.Register[Withdrawn](r, nil))
	require.NoError(t, eventbus.Register[Account](r, &eventbus.TypeOptions{Name: "account.state"}))
	return r
}

func newAccounts(t testing.TB, s eventbus.Store, r *eventbus.Registry, opts *eventbus.AggregateOptions) *eventbus.Aggregate[Account, any] {
	a, err := eventbus.NewAggregate(s, r, evolveAccount, opts)
	require.NoError(t, err)
	return a
}

// appendDeposits appends n deposits of 1 to stream, one append each, and
// returns the result of the last.
func appendDeposits(t testing.TB, s eventbus.Store, r *eventbus.Registry, stream string, n int) eventbus.AppendResult {
	return appendAmounts(t, s, r, stream, slices.Repeat([]int{1}, n)...)
}

// appendAmounts appends one deposit per amount to stream, one append each,
// and returns the result of the last.
func appendAmounts(t testing.TB, s eventbus.Store, r *eventbus.Registry, stream string, amounts ...int) eventbus.AppendResult {
	var res eventbus.AppendResult
	for _, a := range amounts {
		e, err := r.Encode(Deposited{Amount: a})
		require.NoError(t, err)
		res, err = s.Append(context.Background(), stream, eventbus.Any, e)
		require.NoError(t, err)
	}
	return res
}

// streamLen returns the number of events that stream of s reads.
func streamLen(t testing.TB, s eventbus.Store, stream string) int {
	t.Helper()
	n := 0
	for _, err := range s.ReadStream(context.Background(), stream, nil) {
		require.NoError(t, err)
		n++
	}
	return n
}

// eachBackend runs test on a new store of every backend, with a registry
// of the account events, inside a synctest bubble if bubble is true.
func eachBackend(t *testing.T, bubble bool, test func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			run := func(t *testing.T) {
				s, reopen := be.open(t)
				test(t, s, reopen, newBankRegistry(t))
			}
			if bubble {
				synctest.Test(t, run)
			} else {
				run(t)
			}
		})
	}
}
