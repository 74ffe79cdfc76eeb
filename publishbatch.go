package eventbus

import "context"

// batchRun is how many events PublishBatch stamps, on its stack, before it
// queues them: one run of enqueueAll with one subscription. The array stays
// on the stack unless a payload takes kilobytes.
const batchRun = maxLocked

// PublishBatch publishes payloads in order, as many calls of Publish with
// ctx and opts would, and returns how many it published: payloads[:n] were
// published and payloads[n:] were not, so the rest can be published again
// without duplicates. A nil error means all of them. Otherwise it stopped
// because of payloads[n]: an error wrapping [ErrInvalid] for it as Publish
// would return, [ErrClosed], or ctx's error when it ended while the event
// waited for room.
//
// In Async mode it is the fast way to publish many events: it queues them
// in runs, and takes each worker's lock once per run instead of once per
// event. Each event goes, as with Publish, in one queue of every
// subscription or in none, and the events of one key are handled in the
// order given. With a handler's context it never waits, and queues past
// the bound as Publish does.
//
// In Sync mode it publishes one event after the other and stops after the
// first whose handlers failed: n counts that event, and the error is its
// handlers', as Publish returns it.
func (t *Topic[T]) PublishBatch(ctx context.Context, payloads []T, opts ...PublishOption) (int, error) {
	const call = "PublishBatch"
	if err := t.check(call); err != nil {
		return 0, err
	}
	if err := checkContext(ctx, call); err != nil {
		return 0, err
	}
	if t.mode == Sync {
		for n, payload := range payloads {
			if published, err := t.publish(ctx, payload, opts, call, false); err != nil {
				if published {
					n++
				}
				return n, err
			}
		}
		return len(payloads), nil
	}
	var p lineage
	if ctx != context.Background() {
		p, _ = parent(ctx)
	}
	var events [batchRun]Event[T]
	var hashes [batchRun]uint64
	sent := 0
	for sent < len(payloads) {
		run := payloads[sent:min(len(payloads), sent+batchRun)]
		var invalid error
		for i, payload := range run {
			key, err := t.keyOf(call, payload, opts)
			if err != nil {
				run, invalid = run[:i], err
				break
			}
			e := &events[i]
			// stamp only sets some fields: an earlier run left the rest
			// (the ID that enqueueAll numbers in place for several
			// subscriptions, the Metadata) behind.
			*e = Event[T]{}
			t.stamp(e, payload, key, t.bus.clock.now(), &p)
			if !t.plain(&p, opts) {
				t.extend(e, &p, opts)
			}
			hashes[i] = t.hash(events[i].Key)
		}
		// After the checks, as Publish: an invalid payload is refused as
		// such, closed bus or not.
		if len(run) > 0 && t.bus.closed.Load() {
			return sent, ErrClosed
		}
		n, err := t.enqueueAll(ctx, events[:len(run)], hashes[:len(run)], false, p.handler, false)
		t.count(n)
		sent += n
		switch {
		case err != nil:
			return sent, err
		case invalid != nil:
			return sent, invalid
		}
	}
	return sent, nil
}
