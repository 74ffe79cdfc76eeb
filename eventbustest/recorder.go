package eventbustest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/seed-a6f1faae/eventbus"
)

// waitTimeout bounds Recorder.Wait when its context has no deadline.
const waitTimeout = 10 * time.Second

// errWaitTimeout is the cause of Wait's own deadline, which its failure
// names: in a synctest bubble it comes at once, in no real time.
var errWaitTimeout = fmt.Errorf("%w (Wait's default deadline, %v)", context.DeadlineExceeded, waitTimeout)

// compareOptions make cmp compare payloads the way a test means: unexported
// fields count, and nil and empty slices and maps are equal. An ID is
// one value, which a diff shows by its String, not byte by byte.
var compareOptions = cmp.Options{
	cmp.Exporter(func(reflect.Type) bool { return true }),
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(x, y eventbus.ID) bool { return x == y }),
}

// unsetGenerated returns a copy of got whose header fields that the bus or
// the store makes up for each event (ID, Time, CorrelationID, CausationID
// and Position) are zero wherever the event of want at the same index has
// them zero, so that a check ignores them there: a test cannot know them
// in advance unless it made them stable (with a Sequence, a Clock,
// WithCorrelationID, or its handler's context), and then it sets them.
func unsetGenerated[T any](want, got []eventbus.Event[T]) []eventbus.Event[T] {
	got = slices.Clone(got)
	for i := range got {
		var w eventbus.Header
		if i < len(want) {
			w = want[i].Header
		}
		h := &got[i].Header
		if w.ID == (eventbus.ID{}) {
			h.ID = eventbus.ID{}
		}
		if w.Time.IsZero() {
			h.Time = time.Time{}
		}
		if w.CorrelationID == (eventbus.ID{}) {
			h.CorrelationID = eventbus.ID{}
		}
		if w.CausationID == (eventbus.ID{}) {
			h.CausationID = eventbus.ID{}
		}
		if w.Position == 0 {
			h.Position = 0
		}
	}
	return got
}

// Recorder records the events of one topic, in the order its subscription
// receives them, and checks them. Make one with [Record] for a Topic, or
// [RecordStoreTopic] for a StoreTopic. Its methods are safe for concurrent
// use; failed checks are reported with Errorf to the test given to Record
// or RecordStoreTopic, and return false.
//
// The checks of a Topic's recorder see what was recorded when they are
// called, without waiting: on an Async bus, call [eventbus.Bus.Flush] or
// [Recorder.Wait] first, or a check that nothing was recorded (Want with no
// argument, WantLen(0)) passes before the events it rules out have had time
// to come. Those of a StoreTopic's recorder, and its Events, first wait
// until it has recorded every event committed to the topic so far, which
// Flush does not wait for.
//
// That test is the one that fails, whichever test calls the check: a
// check in a subtest of it fails the parent, under the parent's name,
// while the subtest passes. Where subtests check, call Record in each
// (it records what is published from then on, until that subtest ends).
type Recorder[T any] struct {
	t       testing.TB
	topic   string
	bus     *eventbus.Bus
	compare cmp.Options // compareOptions and those given to Record
	// caughtUp, for a StoreTopic's recorder, waits until every event
	// committed to the topic so far is recorded; nil for a Topic's.
	caughtUp func(ctx context.Context) error

	mu      sync.Mutex
	events  []eventbus.Event[T]
	changed chan struct{} // closed and replaced each time an event is recorded
}

// Record subscribes a new Recorder to topic. The subscription has one
// worker, so events are recorded in the order they were queued; it receives
// the events published from now on, and is removed when the test ends. Its
// name starts with "eventbustest-recorder". Like any subscription, it runs
// the bus's middleware (eventbus.Options.Middleware): an event that one of
// them fails or skips is not recorded, and a failure is a dead letter of the
// recorder's subscription, which a [WantDeadLetters] without a Subscription
// in its filter counts. When the test ends, the removal waits for the events
// queued to be recorded, as [NewBus] does for its bus: if a middleware holds
// them up 10 seconds (fake time inside a testing/synctest bubble), it
// cancels their contexts, dead-letters them and fails the test, and if a
// middleware then still runs 10 seconds later, it fails the test and leaves
// that goroutine behind. Record stops the test with Fatalf if it cannot
// subscribe. For a StoreTopic, use [RecordStoreTopic].
//
// opts are further options of [cmp.Diff] for every check of the recorder
// (Want, WantEvents and WantContains), for payload fields that the test
// cannot know or need not match exactly, such as
// cmpopts.IgnoreFields(UserCreated{}, "CreatedAt") or
// cmpopts.EquateApproxTime(time.Second).
func Record[T any](t testing.TB, topic *eventbus.Topic[T], opts ...cmp.Option) *Recorder[T] {
	t.Helper()
	if topic == nil {
		t.Fatalf("eventbustest: Record: nil topic")
		return nil // t.Fatalf does not return, unless t is a fake
	}
	r := newRecorder[T](t, topic.Name(), topic.Bus(), opts)
	name := "eventbustest-recorder"
	for i := 2; ; i++ {
		sub, err := topic.Subscribe(name, r.record, &eventbus.SubscriptionOptions{Workers: 1})
		if errors.Is(err, eventbus.ErrDuplicate) {
			name = fmt.Sprintf("eventbustest-recorder-%d", i)
			continue
		}
		if err != nil {
			t.Fatalf("eventbustest: Record(%q): %v", topic.Name(), err)
		}
		t.Cleanup(func() {
			t.Helper() // failures name the test's call of Record
			r.unsubscribe(sub.Unsubscribe)
		})
		return r
	}
}

// RecordStoreTopic subscribes a new Recorder to topic, a StoreTopic, as
// Record does to a Topic: it records the events committed to the topic from
// now on, in store order, as they are published, with the topic's name as
// their Topic and the key they were published with as their Key (not the
// stream, "orders:o1", that the topic's subscribers see as their Key; a
// [Fault]'s Key matches either). The
// recorder is a durable subscription of the topic (see
// [eventbus.StoreTopic.Subscribe]) named "eventbustest-recorder" (or
// "eventbustest-recorder-2", and so on, when that name is taken), stopped
// when the test ends; it saves its checkpoint in the topic's store then
// only. Its checks, and Events, first wait until it has recorded every
// event committed to the topic so far: a check right after the code under
// test published passes or fails on all that it published, without a
// Flush or a [eventbus.Durable.WaitFor]. That wait fails the check when
// the recorder cannot record an event committed (the bus stopped before it
// was read, say), or has not in 10 seconds (fake time inside a
// testing/synctest bubble). opts are as for Record. RecordStoreTopic stops
// the test with Fatalf if topic was not made by [eventbus.NewStoreTopic]
// or it cannot subscribe.
func RecordStoreTopic[T any](t testing.TB, topic *eventbus.StoreTopic[T], opts ...cmp.Option) *Recorder[T] {
	t.Helper()
	if topic.Bus() == nil {
		t.Fatalf("eventbustest: RecordStoreTopic: a StoreTopic not made by eventbus.NewStoreTopic")
		return nil // t.Fatalf does not return, unless t is a fake
	}
	ctx := context.Background()
	from, err := topicEnd(ctx, topic)
	if err != nil {
		t.Fatalf("eventbustest: RecordStoreTopic(%q): %v", topic.Name(), err)
	}
	r := newRecorder[T](t, topic.Name(), topic.Bus(), opts)
	stream := topic.Name() + ":"
	record := func(ctx context.Context, e eventbus.Event[T]) error {
		if e.Position < from {
			return nil // committed before RecordStoreTopic
		}
		e.Topic, e.Key = topic.Name(), strings.TrimPrefix(e.Key, stream)
		return r.record(ctx, e)
	}
	durable := &eventbus.DurableOptions{
		CheckpointEvery: math.MaxInt, // only when it stops: the store is the test's
		Subscription:    eventbus.SubscriptionOptions{Workers: 1},
	}
	name := "eventbustest-recorder"
	for i := 2; ; i++ {
		d, err := topic.Subscribe(ctx, name, record, durable)
		if errors.Is(err, eventbus.ErrDuplicate) {
			name = fmt.Sprintf("eventbustest-recorder-%d", i)
			continue
		}
		if err != nil {
			t.Fatalf("eventbustest: RecordStoreTopic(%q): %v", topic.Name(), err)
		}
		r.caughtUp = func(ctx context.Context) error {
			end, err := topicEnd(ctx, topic)
			if err != nil || end <= from {
				return err
			}
			return d.WaitFor(ctx, end-1)
		}
		t.Cleanup(func() {
			t.Helper() // failures name the test's call of RecordStoreTopic
			r.unsubscribe(d.Stop)
		})
		return r
	}
}

// newRecorder returns a Recorder of topic, on bus b, for test t, whose
// checks compare with opts too.
func newRecorder[T any](t testing.TB, topic string, b *eventbus.Bus, opts []cmp.Option) *Recorder[T] {
	return &Recorder[T]{t: t, topic: topic, bus: b, compare: cmp.Options{compareOptions, cmp.Options(opts)}, changed: make(chan struct{})}
}

// topicEnd returns the position after the last event committed to topic,
// or 0 if it has none.
func topicEnd[T any](ctx context.Context, topic *eventbus.StoreTopic[T]) (uint64, error) {
	return storeEnd(ctx, topic.Store(), eventbus.Filter{StreamPrefix: topic.Name() + ":", Types: []string{topic.EventType()}})
}

// unsubscribe ends the recorder's subscription with stop at the end of the
// test, as NewBus shuts its bus down: a middleware of the bus that holds
// the recorder's events up fails the test after 10 seconds instead of
// hanging it.
func (r *Recorder[T]) unsubscribe(stop func(context.Context) error) {
	r.t.Helper()
	late, returned, _ := stopWithin(stop)
	switch {
	case !returned:
		r.t.Errorf("eventbustest: the recorder of topic %q did not drain within %v after the test, and a middleware of the bus still runs %v after its context was cancelled, in %s; "+
			"does it ignore its context, or does the DeadLetterSink wait for the test? Its goroutine is left running",
			r.topic, stopTimeout, stopTimeout, pending(r.bus))
	case late:
		// Unsubscribe's error counts the events still queued, not the
		// one whose handling was cancelled: it may be nil.
		r.t.Errorf("eventbustest: the recorder of topic %q did not drain within %v after the test, and its unfinished events were dead-lettered; does a middleware of the bus block?",
			r.topic, stopTimeout)
	}
}

func (r *Recorder[T]) record(_ context.Context, e eventbus.Event[T]) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// snapshot returns the events recorded so far, which never change, and a
// channel closed when the next one is recorded.
func (r *Recorder[T]) snapshot() ([]eventbus.Event[T], <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[:len(r.events):len(r.events)], r.changed
}

// settled returns the events recorded so far, for a check: for a
// StoreTopic's recorder, once it has recorded every event committed to the
// topic. If it cannot, it fails the test, saying why, and returns false.
func (r *Recorder[T]) settled() ([]eventbus.Event[T], bool) {
	r.t.Helper()
	if r.caughtUp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := r.caughtUp(ctx); err != nil {
			why := err.Error()
			if ctx.Err() != nil {
				why = fmt.Sprintf("not within %v", waitTimeout)
			}
			events, _ := r.snapshot()
			r.t.Errorf("eventbustest: topic %q: the recorder has not recorded every event committed to the store: %s; unfinished events in %s; recorded %s",
				r.topic, why, pending(r.bus), r.recorded(events))
			return events, false
		}
	}
	events, _ := r.snapshot()
	return events, true
}

// Events returns a copy of the events recorded so far, in order. That of
// a StoreTopic's recorder first waits for the events committed to the
// topic so far, and fails the test if it cannot record them.
func (r *Recorder[T]) Events() []eventbus.Event[T] {
	r.t.Helper()
	events, _ := r.settled()
	return append([]eventbus.Event[T](nil), events...)
}

func payloads[T any](events []eventbus.Event[T]) []T {
	out := make([]T, len(events))
	for i, e := range events {
		out[i] = e.Payload
	}
	return out
}

// Wait blocks until cond holds for the events recorded so far, checking it
// again after each new event, and reports whether it did. If ctx ends
// first, or 10 seconds pass when ctx has no deadline, the test fails with a
// message naming the deadline and the subscriptions with events not yet
// finished (a retry waiting for its backoff, say), and listing the events
// recorded. Inside a [testing/synctest] bubble that time is fake and
// passes at once when nothing else can happen before it; but it is still 10
// seconds: for an event that comes later, after a retry's backoff say, give
// Wait a context with a later deadline.
//
// cond is given the recorder's own slice, not a copy, so that a Wait over
// many events takes no time copying them: it must not keep the slice, nor
// change it. A cond that sorts it, say, changes the order that the checks
// and Events see; sort a copy ([slices.Clone]) instead.
//
// Once the bus has stopped (see [eventbus.Bus.Done]), no event can come
// any more: Wait checks cond once more and, if it does not hold, fails at
// once. In Sync mode that holds only once the Publish calls running when
// the bus stopped have returned, which Shutdown does not wait for: Wait
// does not wait for them either.
//
// Use Wait for events that [eventbus.Bus.Flush] does not wait for: those
// published by handlers, or by goroutines of the code under test. Each
// Recorder is a subscription of its own, so Wait on one says nothing of
// the others: once the last event of a chain is recorded, call Flush before
// checking the recorders of its earlier steps, whose subscriptions may not
// have handled their events yet.
func (r *Recorder[T]) Wait(ctx context.Context, cond func(events []eventbus.Event[T]) bool) bool {
	r.t.Helper()
	switch {
	case ctx == nil:
		r.t.Errorf("eventbustest: Wait on topic %q: nil context", r.topic)
		return false
	case cond == nil:
		r.t.Errorf("eventbustest: Wait on topic %q: nil condition", r.topic)
		return false
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, waitTimeout, errWaitTimeout)
		defer cancel()
	}
	for {
		events, changed := r.snapshot()
		if cond(events) {
			return true
		}
		select {
		case <-changed:
		case <-r.bus.Done():
			if events, _ = r.snapshot(); cond(events) {
				return true
			}
			r.t.Errorf("eventbustest: Wait on topic %q: the bus is shut down and the condition does not hold: no event can come any more; recorded %s",
				r.topic, r.recorded(events))
			return false
		case <-ctx.Done():
			r.t.Errorf("eventbustest: Wait on topic %q: %v before the condition held; unfinished events in %s; recorded %s",
				r.topic, context.Cause(ctx), pending(r.bus), r.recorded(events))
			return false
		}
	}
}

// Want checks that the payloads recorded are exactly want, in order; with
// no arguments, that nothing was recorded. Every field counts, unexported
// ones too, but as the options given to [Record] say; a failure shows a
// [cmp.Diff] and lists the events recorded.
func (r *Recorder[T]) Want(want ...T) bool {
	r.t.Helper()
	events, ok := r.settled()
	if !ok {
		return false
	}
	if diff := cmp.Diff(want, payloads(events), r.compare); diff != "" {
		r.t.Errorf("eventbustest: topic %q: payloads recorded (-want +got):\n%s\nrecorded %s", r.topic, diff, r.recorded(events))
		return false
	}
	return true
}

// WantEvents checks that the events recorded are exactly want, in order,
// headers included. The fields that the bus makes up, ID, Time,
// CorrelationID, CausationID and (for a StoreTopic's) Position, are
// compared only where want sets them (not zero): set CorrelationID to
// the ID given to [eventbus.WithCorrelationID], say, or Time with a [Clock].
// opts are further options of [cmp.Diff], for this check only, after
// those given to [Record], such as
// cmpopts.IgnoreFields(eventbus.Header{}, "Metadata").
func (r *Recorder[T]) WantEvents(want []eventbus.Event[T], opts ...cmp.Option) bool {
	r.t.Helper()
	events, ok := r.settled()
	if !ok {
		return false
	}
	if diff := cmp.Diff(want, unsetGenerated(want, events), r.compare, cmp.Options(opts)); diff != "" {
		r.t.Errorf("eventbustest: topic %q: events recorded (-want +got):\n%s\nrecorded %s", r.topic, diff, r.recorded(events))
		return false
	}
	return true
}

// WantContains checks that every payload in want was recorded, in any
// order and among others; a payload given twice must have been recorded
// twice. Payloads are compared as by Want.
func (r *Recorder[T]) WantContains(want ...T) bool {
	r.t.Helper()
	events, ok := r.settled()
	if !ok {
		return false
	}
	used := make([]bool, len(events))
	var missing []string
next:
	for _, w := range want {
		for i, e := range events {
			if !used[i] && cmp.Equal(w, e.Payload, r.compare) {
				used[i] = true
				continue next
			}
		}
		missing = append(missing, fmt.Sprintf("\t%#v", w))
	}
	if len(missing) > 0 {
		r.t.Errorf("eventbustest: topic %q: payloads not recorded:\n%s\nrecorded %s",
			r.topic, strings.Join(missing, "\n"), r.recorded(events))
		return false
	}
	return true
}

// WantLen checks that n events were recorded.
func (r *Recorder[T]) WantLen(n int) bool {
	r.t.Helper()
	events, ok := r.settled()
	if !ok {
		return false
	}
	if len(events) != n {
		r.t.Errorf("eventbustest: topic %q: want %d events, recorded %s", r.topic, n, r.recorded(events))
		return false
	}
	return true
}

// recorded describes events, those recorded, for the failure message of a
// check, with the dead letters of the bus: an event that did not come is
// most often the dead letter of the handler that was to publish it.
func (r *Recorder[T]) recorded(events []eventbus.Event[T]) string {
	s := formatEvents(events)
	if r.bus.DeadLetters().Len() > 0 {
		s += "\ndead letters:" + describeDeadLetters(r.bus, nil)
	}
	return s
}

// formatEvents describes events for a failure message, one per line. It
// prints payloads with %#v, field by field: a String method might leave out
// the field that failed the check.
func formatEvents[T any](events []eventbus.Event[T]) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d events", len(events))
	if len(events) > 0 {
		b.WriteByte(':')
	}
	for i, e := range events {
		fmt.Fprintf(&b, "\n\t%d: key=%q %#v", i, e.Key, e.Payload)
	}
	return b.String()
}
