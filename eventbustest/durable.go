package eventbustest

import (
	"context"
	"fmt"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

// errDurableTimeout is the cause of WaitDurable's own deadline, which its
// failure names: in a synctest bubble it comes at once, in no real time.
var errDurableTimeout = fmt.Errorf("%w (WaitDurable's default deadline, %v)", context.DeadlineExceeded, waitTimeout)

// WaitDurable waits until each durable subscription of ds (a StoreTopic's
// too) has finished every event committed to s, the store they read,
// before the call (but for those of system streams, whose names start
// with '$', such as checkpoints, after the last other event): handled it, skipped it as a duplicate or dead-lettered
// it, with its retries, or passed it by (an event its filter does not
// select). It is what [eventbus.Bus.Flush] is for a bus's topics, for the
// events that durable subscriptions read from a store, which Flush does
// not wait for: a test that published to a StoreTopic, or called code
// that did, needs no AppendResult to wait for its subscribers, and may
// then check their effects, [WantDeadLetters] and [WantMetrics]. It does
// not wait for events committed after it has begun, such as those that
// the handlers append (by a StoreTopic's Publish, say): a second call
// waits for those that the first one's handlers appended before they
// returned.
//
// It reports whether they finished. If one cannot (it stopped, or its
// read of the store failed), or ctx ends first, or 10 seconds pass when
// ctx has no deadline, the test fails with a message naming the
// subscription, where it stands and why. As for [Recorder.Wait], those 10
// seconds are fake time inside a testing/synctest bubble, and pass at once
// when nothing else can happen before them: for an event that a retry
// handles later than that, give it a context with a later deadline. A
// subscription given a store other than the one it reads waits for a
// position of that store, and fails at the deadline, or passes, whatever
// it handled. A nil context, store or subscription, or no subscription,
// fails the test at once.
func WaitDurable(ctx context.Context, t testing.TB, s eventbus.Store, ds ...*eventbus.Durable) bool {
	t.Helper()
	switch {
	case ctx == nil:
		t.Errorf("eventbustest: WaitDurable: nil context")
		return false
	case s == nil:
		t.Errorf("eventbustest: WaitDurable: nil store")
		return false
	case len(ds) == 0:
		t.Errorf("eventbustest: WaitDurable: no durable subscription to wait for")
		return false
	}
	for i, d := range ds {
		if d == nil {
			t.Errorf("eventbustest: WaitDurable: durable subscription %d of %d is nil", i+1, len(ds))
			return false
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, waitTimeout, errDurableTimeout)
		defer cancel()
	}
	// The last event of the application's streams: a checkpoint that a
	// subscription saves meanwhile is no event to wait for.
	end, err := storeEnd(ctx, s, eventbus.Filter{})
	if err != nil {
		t.Errorf("eventbustest: WaitDurable: reading the store's last event: %v", err)
		return false
	}
	if end == 0 {
		return true // nothing committed
	}
	ok := true
	for _, d := range ds {
		err := d.WaitFor(ctx, end-1)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		t.Errorf("eventbustest: WaitDurable: durable subscription %q has not finished the events committed up to position %d: %v; it has finished those before position %d (a retry waiting for its backoff, a blocked handler, or a store it does not read?)",
			d.Name(), end-1, err, d.Checkpoint())
		ok = false
	}
	return ok
}

// storeEnd returns the position after the last event of s that f selects,
// or 0 if it has none.
func storeEnd(ctx context.Context, s eventbus.Store, f eventbus.Filter) (uint64, error) {
	last := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1, Filter: f}
	for e, err := range s.ReadAll(ctx, last) {
		if err != nil {
			return 0, err
		}
		return e.Position + 1, nil
	}
	return 0, nil
}
