package eventbustest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/seed-a6f1faae/eventbus"
)

// stopTimeout bounds the graceful shutdown of a bus made by NewBus. It is
// a variable for this package's tests alone (export_test.go), whose
// failing cleanups run outside a synctest bubble, where a failure inside
// one would not name the test's line.
var stopTimeout = 10 * time.Second

// NewBus returns a bus for the test t, shut down when the test ends. opts
// configures it as for [eventbus.New] (nil means the defaults), except that
// some zero fields get defaults that suit tests:
//
//   - Workers 0 means one worker per subscription, so that each
//     subscription handles events one at a time in publish order, whatever
//     their keys, but for an event that failed and waits for its retry:
//     the later events of its key wait behind it, and the others pass it
//     (every later event, for an event without a key), as they would with
//     more workers.
//   - NewID nil means the test's [Sequence], so that event IDs are the
//     same on every run. The buses of one test share it, so that a bus and
//     its restart over one store never reuse an ID: a StoreTopic append
//     of an ID that its stream holds already would be taken for a retry
//     and store nothing, and an Idempotency middleware with a
//     ProcessedStore would skip the event as a duplicate. A subtest has a
//     Sequence of its own, starting at 1, so subtests that share a store
//     or a ProcessedStore of their parent's reuse each other's IDs, and
//     the later one's StoreTopic.Publish of a key the earlier one used
//     succeeds and stores nothing: give their buses one Sequence that
//     the parent makes (Options.NewID), or eventbus.NewID.
//   - Logger nil means a logger that writes to the test's output.
//   - Metrics is always on: in Sync mode the bus counts handled and failed
//     events only then, and [WantMetrics] needs them.
//
// The mode stays Async unless opts says Sync: wait for handlers with
// [eventbus.Bus.Flush] or [Recorder.Wait].
//
// When the test ends, NewBus shuts the bus down, letting queued events be
// handled; if that takes more than 10 seconds (fake time inside a
// testing/synctest bubble), the handlers' contexts are cancelled, the
// remaining events are dead-lettered and the test fails. A handler that
// ignores its context and is still running 10 seconds later fails the test
// too, with the subscriptions it holds up, and is not waited for: its
// goroutine and the bus's are left behind (which synctest.Test reports as
// well). So does a DeadLetterSink's Put, whose context is never cancelled,
// and the failure then names the sink. A result of the test's own call to
// Shutdown or Close is not reported again. Otherwise no goroutine of the bus
// is left after the shutdown; to check that the test's own goroutines are
// gone too, run it inside [synctest.Test], which fails a test whose
// goroutines are still blocked when it returns.
//
// Cleanups run last registered first: register the Close of a store that
// durable subscriptions of the bus use with t.Cleanup before calling
// NewBus, so that the bus stops, and saves their checkpoints, before the
// store closes (a deferred Close runs before every cleanup, and the last
// checkpoint save then fails).
//
// NewBus stops the test with Fatalf if eventbus.New fails.
func NewBus(t testing.TB, opts *eventbus.Options) *eventbus.Bus {
	t.Helper()
	var o eventbus.Options
	if opts != nil {
		o = *opts
	}
	if o.Workers == 0 {
		o.Workers = 1
	}
	if o.NewID == nil {
		o.NewID = testSequence(t)
	}
	o.Metrics = true
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	var sink *watchedSink
	// The wrapper would hide a nil DeadLetterFunc from New, which
	// refuses it.
	if f, ok := o.DeadLetterSink.(eventbus.DeadLetterFunc); ok && f == nil {
		t.Fatalf("eventbustest: NewBus: Options.DeadLetterSink is a nil DeadLetterFunc")
		return nil // t.Fatalf does not return, unless t is a fake
	}
	if o.DeadLetterSink != nil {
		sink = &watchedSink{DeadLetterSink: o.DeadLetterSink}
		o.DeadLetterSink = sink
	}
	b, err := eventbus.New(&o)
	if err != nil {
		t.Fatalf("eventbustest: NewBus: %v", err)
	}
	t.Cleanup(func() {
		t.Helper() // failures name the test's call of NewBus
		shutdown(t, b, sink)
	})
	return b
}

// sequences holds the Sequence of each test that has made a bus with
// NewBus, until the test ends.
var sequences sync.Map // sequenceKey to func() eventbus.ID

// testSequence returns the Sequence of test t, the one its buses share.
func testSequence(t testing.TB) func() eventbus.ID {
	key := sequenceKey(t)
	if seq, ok := sequences.Load(key); ok {
		return seq.(func() eventbus.ID)
	}
	seq, loaded := sequences.LoadOrStore(key, Sequence())
	if !loaded {
		t.Cleanup(func() { sequences.Delete(key) })
	}
	return seq.(func() eventbus.ID)
}

// testName keys the Sequence of a test whose testing.TB cannot be a map
// key.
type testName string

// sequenceKey returns the key of t's Sequence in sequences: t itself, or,
// for a t that cannot be a map key (a wrapper struct passed by value with
// a slice field, say, which a map would panic on), its name.
func sequenceKey(t testing.TB) any {
	if reflect.ValueOf(t).Comparable() {
		return t
	}
	return testName(t.Name())
}

// watchedSink passes dead letters on to the sink of a bus made by NewBus,
// counting the calls of Put still running, so that a sink that holds up
// the shutdown is named, not the handlers whose workers wait for it.
type watchedSink struct {
	eventbus.DeadLetterSink
	running atomic.Int64
}

// Put calls the sink's Put.
func (s *watchedSink) Put(ctx context.Context, dl eventbus.DeadLetter) error {
	s.running.Add(1)
	defer s.running.Add(-1)
	return s.DeadLetterSink.Put(ctx, dl)
}

// shutdown shuts b down at the end of a test, and reports what kept it;
// sink is b's DeadLetterSink, or nil if it has none.
func shutdown(t testing.TB, b *eventbus.Bus, sink *watchedSink) {
	t.Helper()
	before := deadLetterIDs(b)
	late, returned, err := stopWithin(b.Shutdown)
	if !returned {
		if sink != nil && sink.running.Load() > 0 {
			t.Errorf("eventbustest: the bus did not drain within %v after the test, and its DeadLetterSink's Put still runs %v after the handlers' contexts were cancelled, in %s; "+
				"does it wait for the test? Its context is never cancelled. Its goroutine and the bus's are left running",
				stopTimeout, stopTimeout, pending(b))
			return
		}
		t.Errorf("eventbustest: the bus did not drain within %v after the test, and a handler still runs %v after its context was cancelled, in %s; "+
			"does it ignore its context? Its goroutine and the bus's are left running",
			stopTimeout, stopTimeout, pending(b))
		return
	}
	// Shutdown returns the result of the first call: when the test shut
	// the bus down itself, that is the test's own result, reported to it
	// already. Only a deadline of this call means a blocked handler. Its
	// error counts the events left in queues, not those whose handling
	// was cancelled: it is nil when only those were left.
	if late {
		why := "the handlers' contexts were cancelled"
		if err != nil {
			why = err.Error()
		}
		// The events it gave up on are dead letters now, naming their
		// subscriptions, attempts and errors: read before the deadline,
		// the pending counts would race with the stop that clears them.
		t.Errorf("eventbustest: the bus did not drain within %v after the test: %s; is a handler blocked, or an event waiting for a retry longer than that? Dead-lettered by the shutdown:%s",
			stopTimeout, why, describeDeadLetters(b, before))
	}
}

// deadLetterID names a dead letter in the dead-letter queue.
type deadLetterID struct {
	subscription string
	id           eventbus.ID
}

// deadLetterIDs returns the dead letters that b holds.
func deadLetterIDs(b *eventbus.Bus) map[deadLetterID]bool {
	ids := make(map[deadLetterID]bool)
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		ids[deadLetterID{dl.Subscription, dl.ID}] = true
	}
	return ids
}

// maxListed bounds the dead letters that a failure message lists.
const maxListed = 10

// describeDeadLetters lists the dead letters of b, oldest first, but for
// those in skip, for a failure message after a colon: one a line, or
// " none".
func describeDeadLetters(b *eventbus.Bus, skip map[deadLetterID]bool) string {
	var lines []string
	n := 0
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		if skip[deadLetterID{dl.Subscription, dl.ID}] {
			continue
		}
		if n++; n <= maxListed {
			lines = append(lines, describeDeadLetter(dl))
		}
	}
	if n == 0 {
		return " none"
	}
	if n > maxListed {
		lines = append(lines, fmt.Sprintf("\t... and %d more", n-maxListed))
	}
	return "\n" + strings.Join(lines, "\n")
}

// stopWithin calls stop, the Shutdown of a bus or the Unsubscribe of a
// subscription at the end of a test, with a context that ends after
// stopTimeout. Once it has ended, stop cancels the handlers' contexts and
// waits for them, forever for a handler that ignores its context: then
// stopWithin waits stopTimeout more, and no longer. It returns whether the
// context had ended when stop returned, whether stop returned at all (if
// not, its goroutine is left running), and stop's error.
func stopWithin(stop func(context.Context) error) (late, returned bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stop(ctx) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case err = <-done:
		case <-timer.C:
			return true, false, nil
		}
	}
	return ctx.Err() != nil, true, err
}

// pending names the subscriptions of b with events not finished, and how
// many each has.
func pending(b *eventbus.Bus) string {
	var subs []string
	for _, m := range b.Metrics().Subscriptions {
		if m.Pending > 0 {
			subs = append(subs, fmt.Sprintf("%s/%s (pending %d)", m.Topic, m.Subscription, m.Pending))
		}
	}
	if len(subs) == 0 {
		return "no subscription" // a Sync-mode handler that outlived its Publish, or a sink
	}
	return strings.Join(subs, ", ")
}

// WantDeadLetters checks that the payloads of the dead letters of b that
// match f are exactly want, oldest first; with no want, that there are none.
// It sees the dead letters of b when it is called, without waiting: on an
// Async bus, call [eventbus.Bus.Flush] first ([WaitDurable] for a durable
// subscription, a StoreTopic's too), or a check that there are none passes
// before the failures it rules out have happened.
// Payloads are compared like [Recorder.Want]; a failure lists each dead
// letter with its subscription, attempts and error, those that f does not
// match after the others. To check the error too, set f.Err. The payload
// of a durable subscription's dead letter (a StoreTopic's too) is the
// eventbus.RecordedEvent as stored, not the decoded event: check those
// with [eventbus.DeadLetterQueue.All] and eventbus.Decode. A failure lists
// such a dead letter by its type, stream, revision, position and encoded
// payload, and says so when want has decoded payloads. A nil b fails the
// check, and so does a Topic or Subscription in f that b does not have (a
// typo, say) and that no dead letter names: a subscription removed by
// Unsubscribe counts only with its dead letters. A bus whose dead-letter
// queue has evicted dead letters (see eventbus.Options.DeadLetterCapacity)
// fails the check too, which cannot see them, and so does a Bus not made
// by eventbus.New.
func WantDeadLetters(t testing.TB, b *eventbus.Bus, f eventbus.DeadLetterFilter, want ...any) bool {
	t.Helper()
	if b == nil {
		t.Errorf("eventbustest: WantDeadLetters: nil bus")
		return false
	}
	if b.DeadLetters() == nil {
		t.Errorf("eventbustest: WantDeadLetters: a Bus not made by eventbus.New, which has no dead-letter queue")
		return false
	}
	var (
		got     []any
		lines   []string
		matched = make(map[string]int) // lines of the dead letters that f matches
	)
	for dl := range b.DeadLetters().All(f) {
		got = append(got, dl.Payload())
		line := describeDeadLetter(dl)
		lines = append(lines, line)
		matched[line]++
	}
	// blind says why the check cannot vouch for what it did not see.
	var blind []string
	if unknown := unknownNames(b, f); unknown != "" {
		blind = append(blind, unknown)
	}
	if evicted, _ := b.DeadLetters().Evicted(); evicted > 0 {
		// The evicted ones may be those the check is about.
		blind = append(blind, fmt.Sprintf(
			"the bus evicted %d dead letters to make room, which the check cannot see; raise Options.DeadLetterCapacity",
			evicted))
	}
	if diff := cmp.Diff(want, got, compareOptions); diff != "" {
		list := "none"
		if len(lines) > 0 {
			list = "\n" + strings.Join(lines, "\n")
		}
		// A dead letter that the filter leaves out is often the one the
		// test expected, with another error or subscription than it said.
		var others []string
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			line := describeDeadLetter(dl)
			if matched[line] > 0 {
				matched[line]--
				continue
			}
			others = append(others, line)
		}
		if len(others) > 0 {
			list += "\nnot matching:\n" + strings.Join(others, "\n")
		}
		if decodedWanted(want, got) {
			list += "\nthe payload of a durable subscription's dead letter (a StoreTopic's too) is the eventbus.RecordedEvent as stored, not the decoded event: " +
				"read those with b.DeadLetters().All and eventbus.Decode"
		}
		if len(blind) > 0 {
			list += "\n" + strings.Join(blind, "\n")
		}
		t.Errorf("eventbustest: dead letters matching %+v, payloads (-want +got):\n%s\ndead letters: %s",
			f, diff, list)
		return false
	}
	if len(blind) > 0 {
		// No dead letter matched a name that may be mistyped, or those
		// that matched may have been evicted: the check would pass
		// whatever was dead-lettered.
		t.Errorf("eventbustest: dead letters matching %+v: %s", f, strings.Join(blind, "\n"))
		return false
	}
	return true
}

// unknownNames says which of the topic and subscription that f names b has
// not, in a failure message, or returns "" if it has them, or if a dead
// letter names them (their subscription may have been removed since).
func unknownNames(b *eventbus.Bus, f eventbus.DeadLetterFilter) string {
	if f.Topic == "" && f.Subscription == "" {
		return ""
	}
	names := eventbus.DeadLetterFilter{Topic: f.Topic, Subscription: f.Subscription}
	for range b.DeadLetters().All(names) {
		return ""
	}
	m := b.Metrics()
	var topics, subs []string
	for _, tm := range m.Topics {
		topics = append(topics, tm.Topic)
	}
	if f.Topic != "" && !slices.Contains(topics, f.Topic) {
		return fmt.Sprintf("the bus has no topic %q, and no dead letter names it; it has %v", f.Topic, topics)
	}
	if f.Subscription == "" {
		return ""
	}
	for _, sm := range m.Subscriptions {
		if sm.Subscription == f.Subscription && (f.Topic == "" || sm.Topic == f.Topic) {
			return ""
		}
		subs = append(subs, sm.Topic+"/"+sm.Subscription)
	}
	where := "the bus"
	if f.Topic != "" {
		where = fmt.Sprintf("topic %q", f.Topic)
	}
	return fmt.Sprintf("%s has no subscription %q, and no dead letter names it (if it was unsubscribed, it left none: check its topic, or read b.DeadLetters()); the bus has %v", where, f.Subscription, subs)
}

// decodedWanted reports whether want has a payload that is not an
// eventbus.RecordedEvent where got has one: a payload of the StoreTopic's
// type, say, which a durable subscription's dead letter never holds.
func decodedWanted(want, got []any) bool {
	stored := func(p any) bool {
		_, ok := p.(eventbus.RecordedEvent)
		return ok
	}
	return slices.ContainsFunc(got, stored) && slices.ContainsFunc(want, func(p any) bool { return !stored(p) })
}

// describeDeadLetter describes dl for a failure message, on one line.
func describeDeadLetter(dl eventbus.DeadLetter) string {
	return fmt.Sprintf("\t%s/%s key=%q attempts=%d err=%q %s",
		dl.Topic, dl.Subscription, dl.Key, dl.Attempt, dl.Err, describePayload(dl.Payload()))
}

// describePayload prints the payload p of a dead letter with %#v, field by
// field, but for the RecordedEvent of a durable subscription's, whose %#v
// shows its IDs and its encoded payload as lists of bytes: it shows its
// type, place in the store, metadata and encoded payload, as text when it
// is text, leaving out the IDs and time that the bus and store make up.
func describePayload(p any) string {
	e, ok := p.(eventbus.RecordedEvent)
	if !ok {
		return fmt.Sprintf("%#v", p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "eventbus.RecordedEvent{Type:%q, SchemaVersion:%d, Stream:%q, Revision:%d, Position:%d, ",
		e.Type, e.SchemaVersion, e.Stream, e.Revision, e.Position)
	if len(e.Metadata) > 0 {
		fmt.Fprintf(&b, "Metadata:%#v, ", e.Metadata)
	}
	switch {
	case e.Encoding != "":
		fmt.Fprintf(&b, "Data:%d bytes, %s}", len(e.Data), e.Encoding)
	case utf8.Valid(e.Data) && !bytes.ContainsRune(e.Data, '`'):
		fmt.Fprintf(&b, "Data:`%s`}", e.Data)
	default:
		fmt.Fprintf(&b, "Data:%q}", e.Data)
	}
	return b.String()
}

// WantMetrics checks the counters of the subscription of b that want
// names (by its Topic and Subscription fields) against want. The
// histograms HandleTime and Latency are not compared: timings do not belong
// in test assertions. Call it after [eventbus.Bus.Flush], when Depth and
// Pending are zero. For a durable subscription (a StoreTopic's too), whose
// Topic is "durable." and its name, and whose Subscription is that name,
// call [WaitDurable] first: Flush does not wait for the events that the
// subscription has not read from the store yet, and without WaitDurable
// the check sees some of them counted, or none, run by run. A nil b fails the
// check, as does a Sync-mode subscription of a bus without Options.Metrics
// (NewBus sets it), which counts nothing (see
// [eventbus.SubscriptionMetrics].Uncounted).
func WantMetrics(t testing.TB, b *eventbus.Bus, want eventbus.SubscriptionMetrics) bool {
	t.Helper()
	if b == nil {
		t.Errorf("eventbustest: WantMetrics of %s/%s: nil bus", want.Topic, want.Subscription)
		return false
	}
	m := b.Metrics()
	var names []string
	for _, got := range m.Subscriptions {
		if got.Topic != want.Topic || got.Subscription != want.Subscription {
			names = append(names, got.Topic+"/"+got.Subscription)
			continue
		}
		if got.Uncounted {
			t.Errorf("eventbustest: metrics of %s/%s: a Sync-mode subscription of a bus without Options.Metrics counts nothing; make the bus with NewBus, or set Options.Metrics", want.Topic, want.Subscription)
			return false
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(eventbus.SubscriptionMetrics{}, "HandleTime", "Latency", "Uncounted")); diff != "" {
			t.Errorf("eventbustest: metrics of %s/%s (-want +got):\n%s", want.Topic, want.Subscription, diff)
			return false
		}
		return true
	}
	t.Errorf("eventbustest: no subscription %s/%s; the bus has %v", want.Topic, want.Subscription, names)
	return false
}
