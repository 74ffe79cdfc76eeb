package eventbustest_test

import (
	"context"
	"errors"
	"iter"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// silentEnd is a store whose subscriptions end without an error when
// their context ends, which the Store contract does not allow.
type silentEnd struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, which ends
// without its error once ctx is done.
func (s silentEnd) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			if err != nil && errors.Is(err, ctx.Err()) {
				return
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsSilentSubscription runs TestStore against a store whose
// subscriptions end silently with their context, in a child process (this
// test binary), and checks that the suite fails, naming what the store got
// wrong: its Subscribe test waited forever for the end of such a
// subscription, and the synctest bubble it runs in crashed the test binary
// with a deadlock panic before SubscribeEnds could name the defect.
func TestStoreFailsSilentSubscription(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreFailsSilentSubscriptionChild$/^(Subscribe|SubscribeEnds)$", "-test.count=1", "-test.shuffle=off", "-test.v")
	cmd.Env = append(os.Environ(), "EVENTBUSTEST_STORE_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child test fails:\n%s", out)
	require.NotContains(t, string(out), "panic:")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsSilentSubscriptionChild/Subscribe ")
	require.Contains(t, string(out), "subscription ended with <nil>, want context canceled")
}

// TestStoreFailsSilentSubscriptionChild is run by
// TestStoreFailsSilentSubscription.
func TestStoreFailsSilentSubscriptionChild(t *testing.T) {
	if os.Getenv("EVENTBUSTEST_STORE_CHILD") == "" {
		t.Skip("run by TestStoreFailsSilentSubscription")
	}
	eventbustest.TestStore(t, func(t *testing.T) eventbus.Store {
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		return silentEnd{s}
	})
}
