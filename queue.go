package eventbus

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// queue is one worker's bounded FIFO. Publishers append one event at a time
// under the mutex; the worker takes everything queued in one swap, so the
// hand-over costs one lock per batch on the worker's side, and a publisher
// wakes the worker only when it is parked.
//
// Every event gets a sequence number, its position in the queue's history;
// the worker reports the lowest one not yet finished, which is what Flush
// and Shutdown wait on.
type queue[T any] struct {
	mu      sync.Mutex
	items   []Event[T]
	limit   int
	source  uint32 // ID source number; enq numbers the events
	enq     uint64 // sequence number of the next event appended
	low     uint64 // every event below this sequence number is finished
	laned   int    // events the worker holds back for a retry of their key
	parked  bool   // the worker waits on wake
	woken   bool   // a publish holding several locks took parked off
	stopped bool   // intake closed: the subscription or the bus is stopping
	// free is set while the worker has nothing to do: its last take found
	// the queue empty, and not full with the events held in lanes, and
	// nothing came in since. In a subscription of several workers the
	// queue mirrors it in bit of the subscription's mask of free workers,
	// idle (nil for a lone worker, and past the 64th), where keyless
	// events look for a worker.
	free    bool
	idle    *atomic.Uint64
	bit     uint64
	wake    chan struct{}
	room    broadcast // when room appears, or intake stops
	settled broadcast // when low moves
	stats   counters  // the worker's, as of its last take
}

func (q *queue[T]) init(limit int, source uint32, idle *atomic.Uint64, bit uint64) {
	q.limit = limit
	q.source = source
	q.wake = make(chan struct{}, 1)
	q.idle, q.bit = idle, bit
	q.setFree(true)
}

// setFree records whether the worker has nothing to do, and mirrors a
// change in the subscription's mask. Callers hold mu, or own q alone.
func (q *queue[T]) setFree(free bool) {
	if free == q.free {
		return
	}
	q.free = free
	switch {
	case q.idle == nil:
	case free:
		q.idle.Or(q.bit)
	default:
		q.idle.And(^q.bit)
	}
}

// busy records that the worker has events to handle after all, though its
// last take found the queue empty, which marked it free: the batch that
// gather gathered, or retries that came due.
func (q *queue[T]) busy() {
	q.mu.Lock()
	q.setFree(false)
	q.mu.Unlock()
}

// full reports whether an append must wait: events queued, and those the
// worker holds in lanes behind a retry, count toward the bound. Callers
// hold mu.
func (q *queue[T]) full() bool { return len(q.items)+q.laned >= q.limit }

// push appends d and reports whether the worker must be woken. Callers hold
// mu and have checked stopped and full.
func (q *queue[T]) push(e *Event[T]) (wake bool) {
	q.items = appendEvent(q.items, e)
	q.enq++
	q.setFree(false)
	if q.parked {
		q.parked = false
		return true
	}
	return false
}

// appendEvent is append(events, *e) without the copy of *e to the stack
// that append makes first: 22 fewer instructions per event queued.
func appendEvent[T any](events []Event[T], e *Event[T]) []Event[T] {
	n := len(events)
	if n < cap(events) {
		events = events[:n+1]
	} else {
		events = append(events, Event[T]{})
	}
	events[n] = *e
	return events
}

// offer appends e unless intake has stopped or, without force, the queue is
// full, and wakes the worker if it is parked. It reports whether e went in
// and, if not, whether intake had stopped.
func (q *queue[T]) offer(e *Event[T], force bool) (ok, stopped bool) {
	q.mu.Lock()
	if q.stopped || !force && q.full() {
		stopped = q.stopped
		q.mu.Unlock()
		return false, stopped
	}
	wake := q.push(e)
	q.mu.Unlock()
	if wake { // once the lock is released, so that the worker need not wait for it
		q.signal()
	}
	return true, false
}

func (q *queue[T]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take records that every event below low is finished and that laned
// events wait in the worker's lanes, then hands every
// queued event to the worker, with the sequence number of the first, and
// reports whether intake has stopped. The worker gives back the slice of its
// previous batch, spare, emptied, to hold the next events: two slices serve
// a worker for good. With nothing queued take returns nil, marks the
// worker free unless its lanes fill the queue (see free) and, if park is
// set, marks it parked, to be woken by the next append.
func (q *queue[T]) take(low uint64, laned int, spare []Event[T], stats *counters, park bool) ([]Event[T], uint64, bool) {
	q.mu.Lock() // no defer: take runs twice per event when the bus is idle
	q.setLow(low)
	if laned < q.laned {
		q.room.notify()
	}
	q.laned = laned
	stats.copyTo(&q.stats)
	stopped := q.stopped
	if len(q.items) == 0 {
		q.parked = park
		// Not free while the events held in lanes fill the queue: a
		// keyless event sent here would wait for room behind a retry.
		q.setFree(!q.full())
		q.mu.Unlock()
		return nil, 0, stopped
	}
	batch := q.items
	q.items = spare
	q.room.notify()
	base := q.enq - uint64(len(batch))
	q.mu.Unlock()
	return batch, base, stopped
}

// setLow records that every event below low is finished. Callers hold mu.
func (q *queue[T]) setLow(low uint64) {
	if low == q.low {
		return
	}
	q.low = low
	q.settled.notify()
}

// finishAll records that every event ever appended is finished, with the
// worker's final counters.
func (q *queue[T]) finishAll(stats *counters) {
	q.mu.Lock()
	q.setLow(q.enq)
	stats.copyTo(&q.stats)
	q.mu.Unlock()
}

// collect adds the worker's counters to c and returns the queue's depth.
func (q *queue[T]) collect(c *counters) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	c.add(&q.stats)
	c.queued += q.enq
	return uint64(len(q.items))
}

// mark returns the sequence number of the next event to be appended: settle
// waits for the events before it.
func (q *queue[T]) mark() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.enq
}

// settle waits until every event below sequence number target, from mark,
// is finished.
func (q *queue[T]) settle(ctx context.Context, target uint64) error {
	q.mu.Lock()
	for q.low < target {
		ch := q.settled.wait()
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// stop closes intake and wakes the worker so that it notices.
func (q *queue[T]) stop() {
	q.mu.Lock()
	q.stopped = true
	q.room.notify() // publishers waiting for room must see the stop
	q.mu.Unlock()
	q.signal()
}

// unshift puts events the worker took, the last ones, back at the front of
// the queue, ahead of those appended since, with their sequence numbers. It
// moves them in the queue's slice when it has room, so that a worker putting
// back a batch's leftovers under load does not allocate.
func (q *queue[T]) unshift(events []Event[T]) {
	if len(events) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.setFree(false)
	n, k := len(q.items), len(events)
	if cap(q.items) < n+k {
		q.items = append(append(make([]Event[T], 0, n+k), events...), q.items...)
		return
	}
	q.items = q.items[:n+k]
	copy(q.items[k:], q.items[:n])
	copy(q.items, events)
}

// drain removes and returns what is still queued, with the sequence number
// of the first. The worker calls it when it
// is told to stop without grace.
func (q *queue[T]) drain() ([]Event[T], uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.items
	q.items = nil
	return batch, q.enq - uint64(len(batch))
}

// lockSet holds the queues that a publish locks at once, each once, in
// the order in which every publisher locks them: by the subscription's
// place in its topic (which keeps its order as subscriptions come and go),
// then by source number, unique to each queue.
type lockSet[T any] []*queue[T]

// add puts q in its place among l[from:], the queues of one subscription,
// unless it is there. It looks from the end, which is short: a
// subscription has few workers, and a run's events few queues.
func (l lockSet[T]) add(from int, q *queue[T]) lockSet[T] {
	at := len(l)
	for ; at > from && l[at-1].source >= q.source; at-- {
		if l[at-1] == q {
			return l
		}
	}
	return slices.Insert(l, at, q)
}

func (l lockSet[T]) lock() {
	for _, q := range l {
		q.mu.Lock()
	}
}

// unlock unlocks the queues, and wakes the workers that were parked once
// their queue is unlocked, so that they do not wake up only to wait for it.
func (l lockSet[T]) unlock() {
	for _, q := range l {
		wake := q.woken
		q.woken = false
		q.mu.Unlock()
		if wake {
			q.signal()
		}
	}
}
