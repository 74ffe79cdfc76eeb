package eventbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// checkpointType is the event type of the checkpoints of durable
// subscriptions.
const checkpointType = "eventbus.checkpoint"

// checkpointPrefix is how the names of the checkpoint streams begin: those
// of durable subscriptions, and those of every other consumer of a store
// (the Kafka bridge's relay repeats it), which [bookkeeping] skips. A
// consumer other than a durable subscription puts a character in the rest
// of its stream's name that durable names do not have, such as ':'.
const checkpointPrefix = "$checkpoint-"

// checkpointStream returns the system stream that holds the checkpoints of
// the durable subscription name.
func checkpointStream(name string) string { return checkpointPrefix + name }

// loadCheckpoint returns the position from which the durable subscription
// name resumes: the last checkpoint saved, and true; or 0 and false, with
// none saved.
func loadCheckpoint(ctx context.Context, s Store, name string) (uint64, bool, error) {
	for e, err := range s.ReadStream(ctx, checkpointStream(name), &ReadOptions{Direction: Backwards, From: End, Limit: 1}) {
		if err != nil {
			return 0, false, err
		}
		pos, err := strconv.ParseUint(string(e.Data), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("%w: checkpoint of %q at position %d: %v", ErrInvalid, name, e.Position, err)
		}
		return pos, true, nil
	}
	return 0, false, nil
}

// durableStart returns the position of s that from, a DurableOptions.From,
// names: End is the position after the last event outside system streams,
// 0 in an empty store. A position past the store's end, which the
// subscription would wait for while the events appended up to it went by
// unhandled, is refused with an error wrapping ErrInvalid.
func durableStart(ctx context.Context, s Store, from uint64) (uint64, error) {
	end, err := storeEnd(ctx, s, Filter{})
	if err != nil || from == End {
		return end, err
	}
	system, err := storeEnd(ctx, s, Filter{StreamPrefix: "$"})
	if err != nil {
		return 0, err
	}
	if end = max(end, system); from > end {
		return 0, fmt.Errorf("%w: DurableOptions.From %d is past the store's end, position %d", ErrInvalid, from, end)
	}
	return from, nil
}

// storeEnd returns the position after the last event of s that f selects,
// or 0 if it selects none.
func storeEnd(ctx context.Context, s Store, f Filter) (uint64, error) {
	for e, err := range s.ReadAll(ctx, &ReadOptions{Direction: Backwards, From: End, Limit: 1, Filter: f}) {
		if err != nil {
			return 0, err
		}
		return e.Position + 1, nil
	}
	return 0, nil
}

// saveCheckpoint records that the durable subscription name resumes at pos.
func saveCheckpoint(ctx context.Context, s Store, name string, pos uint64) error {
	return appendLatest(ctx, s, checkpointStream(name), EventData{
		ID:   NewID(),
		Type: checkpointType,
		Data: strconv.AppendUint(nil, pos, 10),
	}, nil)
}

// appendLatest appends e to stream, a system stream of which only the
// latest event is ever read (a checkpoint, a snapshot), and gives the
// stream MaxCount 1 so that reads show no older one: set once, before the
// first append, and again if someone changed it. The store may still hold
// the older events (a MemoryStore for good, a FileStore until retention).
// If newer is not nil, it appends e only if newer says that the latest
// event read is not newer than e, and only right after that event: of
// calls made at once, the newest event is the one left latest.
func appendLatest(ctx context.Context, s Store, stream string, e EventData, newer func(latest RecordedEvent) bool) error {
	for range maxLatestAppends {
		info, err := s.StreamInfo(ctx, stream)
		if err != nil {
			return err
		}
		expected := Any
		if newer != nil {
			// Asked before the read: an append made after it conflicts.
			expected = NoStream
			if info.Exists {
				expected = Exact(info.Revision)
			}
			for latest, err := range s.ReadStream(ctx, stream, &ReadOptions{Direction: Backwards, From: End, Limit: 1}) {
				if err != nil {
					return err
				}
				if newer(latest) {
					return nil
				}
			}
		}
		if md := info.Metadata; md.MaxCount != 1 {
			md.MaxCount = 1
			if err := s.SetStreamMetadata(ctx, stream, md); err != nil {
				return err
			}
		}
		_, err = s.Append(ctx, stream, expected, e)
		if !errors.Is(err, ErrWrongExpectedVersion) || newer == nil {
			return err
		}
	}
	return fmt.Errorf("%w: %q changed under %d appends in a row", ErrWrongExpectedVersion, stream, maxLatestAppends)
}

// maxLatestAppends bounds the appends of one appendLatest: each conflicts
// only with an append made by another call meanwhile.
const maxLatestAppends = 8

// tracker follows the events that a durable subscription has handed to its
// workers, which finish them out of order, and keeps next, the position
// before which every one of them is finished, and the checkpoint: next, or
// the first dead letter before it that the sink failed to keep, if any. It
// is safe for concurrent use.
type tracker struct {
	mu       sync.Mutex
	next     uint64    // every event handed out before it is finished
	read     uint64    // position after the last event handed out
	passed   uint64    // the subscription has read every position before it
	inflight []uint64  // positions handed out from next on, ascending, but for finished ones dropped by compact
	done     []bool    // whether each of inflight is finished
	finished int       // how many of inflight are
	held     []uint64  // finished, but kept only in memory: the checkpoint stays before them; ascending
	advanced int       // events finished since the last save began
	saved    uint64    // the checkpoint last saved, or the one the run started from
	changed  broadcast // when next moves, or err is set
	err      error     // why positions from read on will never finish, if they will not
	ended    bool      // no position will finish any more: err holds for every one
}

func newTracker(from uint64) *tracker {
	return &tracker{next: from, read: from, passed: from, saved: from}
}

// handOut records that the event at pos goes to the workers.
func (t *tracker) handOut(pos uint64) {
	t.mu.Lock()
	t.inflight = append(t.inflight, pos)
	t.done = append(t.done, false)
	t.read = pos + 1
	t.advance()
	t.mu.Unlock()
}

// caughtUp records that the subscription has seen every event before
// position n, the ones its filter skipped included.
func (t *tracker) caughtUp(n uint64) {
	t.mu.Lock()
	t.read = max(t.read, n)
	t.advance()
	t.mu.Unlock()
}

// pass records that the subscription has read every position before n,
// the ones its filter skipped included, for waitFor alone: unlike
// caughtUp, it leaves the checkpoint where it is, so that the skipped
// events that the subscription passes once it has caught up, its own
// saves of the checkpoint among them, do not make a save due at Stop.
func (t *tracker) pass(n uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > t.passed {
		t.passed = n
		t.changed.notify()
	}
}

// finish records that the event at pos is finished and returns how many
// events have finished since the last save began, or 0 while the
// checkpoint is the one saved last (see due). held is true for a dead
// letter that the sink failed to keep: the checkpoint stays before it for
// the rest of the run, so that the next run delivers it again, unless its
// redrive finishes it without held or it is discarded (release) first.
// The run goes on past it all the same (next, and so WaitFor), and the
// tracker holds one position for it instead of every position handed out
// after it.
func (t *tracker) finish(pos uint64, held bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := slices.BinarySearch(t.inflight, pos)
	if !ok || t.done[i] {
		// Finished before: a redriven dead letter. Handled now, or kept
		// by the sink, it no longer holds the checkpoint back; dead again
		// and lost again, it still does. One that the sink kept the first
		// time never holds it: the checkpoint may have passed it already.
		if !held {
			t.unhold(pos)
		}
		return t.due()
	}
	t.done[i] = true
	t.finished++
	if held {
		j, _ := slices.BinarySearch(t.held, pos)
		t.held = slices.Insert(t.held, j, pos)
	}
	t.advanced++
	t.advance()
	if t.finished > minCompact && 2*t.finished > len(t.inflight) {
		t.compact()
	}
	return t.due()
}

// release lets the checkpoint pass the dead letter at pos, which held it
// back (see finish): it was discarded. It returns what finish does.
func (t *tracker) release(pos uint64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unhold(pos)
	return t.due()
}

// unhold lets the checkpoint pass pos, if it held it back. Callers hold mu.
func (t *tracker) unhold(pos uint64) {
	if j, found := slices.BinarySearch(t.held, pos); found {
		t.held = slices.Delete(t.held, j, j+1)
		t.advanced++
	}
}

// due returns how many events have finished since the last save began, or
// 0 if the checkpoint is the one saved last: a save would save nothing
// then, and restart the count, so that once the event that holds the
// checkpoint back finishes, the checkpoint would pass every event finished
// meanwhile and wait for as many more again before it is saved. Callers
// hold mu.
func (t *tracker) due() int {
	if t.resume() == t.saved {
		return 0
	}
	return t.advanced
}

// compact drops the finished positions of inflight. Behind an event that
// stays in flight for long (a stuck handler, retries that wait for hours),
// each event finished after it would otherwise keep its entry until it
// finishes; so the tracker holds about twice the events in flight at
// most. A position that finish no longer finds was finished before,
// whether compact dropped it or next passed it. Callers hold mu.
func (t *tracker) compact() {
	kept := 0
	for i, pos := range t.inflight {
		if !t.done[i] {
			t.inflight[kept], t.done[kept] = pos, false
			kept++
		}
	}
	t.inflight, t.done, t.finished = t.inflight[:kept], t.done[:kept], 0
}

// minCompact is the number of finished positions under which compact
// does not run: a few, which the next advance is likely to drop anyway,
// are not worth a pass over inflight.
const minCompact = 64

// advance moves next over the finished prefix of inflight, and over the
// events that the filter skipped after it. Callers hold mu.
func (t *tracker) advance() {
	old := t.next
	n := 0
	for n < len(t.inflight) && t.done[n] {
		n++
	}
	if n > 0 {
		t.next = t.inflight[n-1] + 1
		t.inflight, t.done = t.inflight[n:], t.done[n:]
		t.finished -= n
	}
	if len(t.inflight) > 0 {
		t.next = max(t.next, t.inflight[0])
	} else {
		t.inflight, t.done = t.inflight[:0:0], t.done[:0:0] // let the arrays go
		t.next = max(t.next, t.read)
	}
	if t.next != old {
		t.changed.notify()
	}
}

// checkpoint returns the checkpoint and whether it is not the one saved
// last; if not, a save of it starts: the count of events finished since the
// last save restarts.
func (t *tracker) checkpoint() (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pos := t.resume()
	if pos == t.saved {
		return pos, false
	}
	t.advanced = 0
	return pos, true
}

// savedAt records that the checkpoint pos is saved.
func (t *tracker) savedAt(pos uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.saved = pos
}

// position returns the checkpoint.
func (t *tracker) position() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resume()
}

// resume returns the checkpoint: next, or the first held position before
// it. Callers hold mu.
func (t *tracker) resume() uint64 {
	if len(t.held) > 0 {
		return min(t.next, t.held[0])
	}
	return t.next
}

// waitFor waits until next is past pos, or the subscription has passed
// pos with no event up to pos still running, or ctx is done. It returns
// err if pos will never finish.
func (t *tracker) waitFor(ctx context.Context, pos uint64) error {
	for {
		t.mu.Lock()
		if t.next > pos || t.passed > pos && (len(t.inflight) == 0 || t.inflight[0] > pos) {
			t.mu.Unlock()
			return nil
		}
		if t.err != nil && (t.ended || pos >= t.read) {
			err := t.err
			t.mu.Unlock()
			return err
		}
		ch := t.changed.wait()
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop records that the subscription reads no more events, for reason
// err: the positions from read on will never finish, and, if ended, no
// other will either, the run being over. The first reason stays. It wakes
// the waiters so that they look again.
func (t *tracker) stop(err error, ended bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
	t.ended = t.ended || ended
	t.changed.notify()
}

// stopped returns why the subscription reads no more events, or nil while
// it reads them.
func (t *tracker) stopped() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// reset starts the tracker again at from, for a rebuild, and wakes the
// waiters so that they look again.
func (t *tracker) reset(from uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next, t.read, t.passed, t.inflight, t.done, t.finished, t.held, t.advanced, t.saved = from, from, from, nil, nil, 0, nil, 0, from
	t.err, t.ended = nil, false
	t.changed.notify()
}
