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
	custom func() time.Time        // Options.Clock; nil for the built-in clock
	cached atomic.Pointer[reading] // the last reading; never nil
	wake   chan struct{}           // capacity 1: the refresher should run
	done   chan struct{}           // closed when the bus stops
}

// reading is a cached clock reading. A stale one is the last reading handed
// out, kept so that the next one never goes back before it.
type reading struct {
	t     time.Time
	stale bool
}

func newClock(custom func() time.Time, done chan struct{}) *clock {
	c := &clock{start: time.Now(), custom: custom, wake: make(chan struct{}, 1), done: done}
	c.cached.Store(&reading{t: c.start, stale: true})
	return c
}

func (c *clock) now() time.Time {
	if c.custom != nil {
		return c.custom()
	}
	if r := c.cached.Load(); !r.stale {
		return r.t
	}
	// A reading is shared as it is: building a time.Time from a duration
	// for each event cost 10% of a keyed publish. So a reading costs an
	// allocation, as its stale mark does: about two per clockTick, and one
	// more for each publisher that races to refresh it.
	t := c.install(c.start.Add(time.Since(c.start)))
	select {
	case <-c.done:
		// The bus has stopped, and with it the refresher, which expired
		// the cached reading as it exited: a reading installed since
		// would stay fresh for good (a StoreTopic publishes after the
		// stop), so it goes stale at once. Asked after the install, so
		// that one made as the refresher exits goes stale too.
		if r := c.cached.Load(); !r.stale {
			c.cached.CompareAndSwap(r, &reading{t: r.t, stale: true})
		}
		return t
	default:
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return t
}

// install caches t, a new reading, unless another publisher's went in
// first, and returns the reading to use. It replaces only the stale
// reading it compared t with, so the readings handed out never go back,
// even from a publisher held up for a whole tick between its read and its
// install.
func (c *clock) install(t time.Time) time.Time {
	for {
		r := c.cached.Load()
		if !r.stale {
			return r.t // another publisher's reading went in first: share it
		}
		if t.Before(r.t) {
			t = r.t
		}
		if c.cached.CompareAndSwap(r, &reading{t: t}) {
			return t
		}
	}
}

// expire marks the cached reading stale, and reports whether it was fresh.
func (c *clock) expire() bool {
	r := c.cached.Load()
	if r.stale {
		return false
	}
	// Only the refresher expires readings, and publishers only replace
	// stale ones: r is still the cached reading.
	c.cached.Store(&reading{t: r.t, stale: true})
	return true
}

// stamp returns the time to stamp a dead letter's failure with, given now,
// the wall clock's reading that schedules its retries: Options.Clock's time
// when it has one, so that tests with a fake clock see it there too.
func (c *clock) stamp(now time.Time) time.Time {
	if c.custom != nil {
		return c.custom()
	}
	return now
}

// elapsed returns the time since the bus started, for timing handlers: one
// read of the monotonic clock, where time.Now makes two, and no time.Time to
// build (which cost as much again). It is never 0, which means "not timed".
func (c *clock) elapsed() time.Duration { return time.Since(c.start) | 1 }

// latency returns the time from published to at, a reading of elapsed. A
// time that Options.Clock stamped (stamped: the bus stamped it, and it has
// a custom clock) is compared with that clock's time. A time without a
// monotonic reading, such as a stored event's, is compared with the wall
// clock, which may have been set since the bus started.
func (c *clock) latency(published time.Time, stamped bool, at time.Duration) time.Duration {
	if stamped && c.custom != nil {
		return max(c.custom().Sub(published), 0)
	}
	if published == published.Round(0) {
		return time.Since(published)
	}
	return at - published.Sub(c.start)
}

// refresh marks the cached time stale every clockTick while events flow,
// and sleeps on wake when they stop. It exits when done is closed.
func (c *clock) refresh() {
	defer c.expire() // no refresher expires the readings after the stop: see now
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
			if !c.expire() {
				break // nothing was published during the tick
			}
		}
	}
}
