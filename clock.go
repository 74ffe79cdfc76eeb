package eventbus

import (
	"sync/atomic"
	"time"
)

// clockTick is how often a busy bus refreshes its cached time.
const clockTick = 500 * time.Microsecond

// clock stamps events. A clock read costs 40-90 ns on some machines, more
// than the rest of a publish, so under load the bus reuses a reading for up
// to clockTick, the way Kafka stamps records to the millisecond: a helper
// goroutine marks the cached reading stale every clockTick, and the next
// publish reads the clock again. When a whole tick passes without a publish
// the helper sleeps until the next one, so an idle bus costs nothing and an
// event published after a quiet spell always gets a fresh reading. Time comes
// from the monotonic clock, anchored to the wall clock when the bus starts,
// so it never goes backwards.
type clock struct {
	start  time.Time
	custom func() time.Time          // Options.Clock; nil for the built-in clock
	cached atomic.Pointer[time.Time] // the last reading; nil when stale
	wake   chan struct{}             // capacity 1: the refresher should run
	done   chan struct{}             // closed when the bus stops
}

func newClock(custom func() time.Time, done chan struct{}) *clock {
	return &clock{start: time.Now(), custom: custom, wake: make(chan struct{}, 1), done: done}
}

func (c *clock) now() time.Time {
	if c.custom != nil {
		return c.custom()
	}
	if t := c.cached.Load(); t != nil {
		return *t
	}
	// A reading is shared as it is: building a time.Time from a duration
	// for each event cost 10% of a keyed publish. So a reading costs an
	// allocation: about one per clockTick, one more for each publisher
	// that races to refresh it.
	t := c.start.Add(time.Since(c.start))
	if !c.cached.CompareAndSwap(nil, &t) {
		// Another publisher's reading went in first: share it, so that the
		// readings handed out go forward even between racing publishers.
		if p := c.cached.Load(); p != nil {
			return *p
		}
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return t
}

// elapsed returns the time since the bus started, for timing handlers: one
// read of the monotonic clock, where time.Now makes two, and no time.Time to
// build (which cost as much again). It is never 0, which means "not timed".
func (c *clock) elapsed() time.Duration { return time.Since(c.start) | 1 }

// latency returns the time from published to at, a reading of elapsed. A
// time without a monotonic reading, such as a stored event's, is compared
// with the wall clock instead, which may have been set since the bus
// started.
func (c *clock) latency(published time.Time, at time.Duration) time.Duration {
	if published == published.Round(0) {
		return time.Since(published)
	}
	return at - published.Sub(c.start)
}

// refresh marks the cached time stale every clockTick while events flow,
// and sleeps on wake when they stop. It exits when done is closed.
func (c *clock) refresh() {
	t := time.NewTimer(clockTick)
	t.Stop()
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			t.Reset(clockTick)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
			if c.cached.Swap(nil) == nil {
				break // nothing was published during the tick
			}
		}
	}
}
