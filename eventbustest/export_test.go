package eventbustest

import (
	"testing"
	"time"
)

// SetStopTimeout makes d the bound of the graceful stops at the end of a
// test (NewBus's, Record's) until t ends, so that a test of what happens
// when a stop runs out of it, in real time, takes d and not 10 seconds. No
// bus or recorder may be stopping meanwhile.
func SetStopTimeout(t testing.TB, d time.Duration) {
	old := stopTimeout
	stopTimeout = d
	t.Cleanup(func() { stopTimeout = old })
}

// SetLockWait makes d the bound of TestStore's wait for an append made
// from a subscription's CaughtUp until t ends, so that a test of a store
// that calls CaughtUp with a lock held takes d and not 10 seconds. No
// TestStore may be running meanwhile.
func SetLockWait(t testing.TB, d time.Duration) {
	old := lockWait
	lockWait = d
	t.Cleanup(func() { lockWait = old })
}
