package eventbus

import (
	"testing"
	"time"
)

// A publisher held up between its clock read and its install must not
// install a reading older than one already handed out: event times, and the
// IDs made from them, would go back.
func TestClockNeverGoesBack(t *testing.T) {
	c := newClock(nil, make(chan struct{}))
	early := c.start.Add(time.Millisecond) // read first, installed last
	late := c.start.Add(time.Second)

	if got := c.install(late); !got.Equal(late) {
		t.Fatalf("install(late) = %v, want %v", got, late)
	}
	if got := c.install(early); !got.Equal(late) {
		t.Fatalf("install while fresh = %v, want the cached %v", got, late)
	}
	if !c.expire() {
		t.Fatal("expire of a fresh reading reported it stale")
	}
	if c.expire() {
		t.Fatal("second expire reported a fresh reading")
	}
	if got := c.install(early); got.Before(late) {
		t.Fatalf("install(early) after expiry = %v, before %v handed out earlier", got, late)
	}
	if got := c.now(); got.Before(late) {
		t.Fatalf("now() = %v, before %v handed out earlier", got, late)
	}
}

// TestClockAfterStop reads the clock after the bus has stopped, as a
// StoreTopic's Publish does: its refresher has exited, and a reading
// cached then, or since, must not stay fresh for good. It did: every read
// after the stop gave the time of the last one before it.
func TestClockAfterStop(t *testing.T) {
	done := make(chan struct{})
	c := newClock(nil, done)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		c.refresh()
	}()
	before := c.now() // a fresh reading, which the refresher would expire
	close(done)
	<-exited
	for range 2 {
		// The clock moves on, however coarse: wait until it has.
		for time.Since(c.start) <= before.Sub(c.start) {
		}
		if got := c.now(); !got.After(before) {
			t.Fatalf("now() after the stop = %v, the reading of %v before it", got, before)
		}
		before = c.now()
	}
}
