package eventbustest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/eventbustest"
)

// silentEnd is a store whose subscriptions end without an error when
// their context ends, which the Store contract does not allow.
type silentEnd struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, which ends
// without its error once ctx is done.
func (s silentEnd) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			if err != nil && errors.Is(err, ctx.Err()) {
				return
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsSilentSubscription runs TestStore against a store whose
// subscriptions end silently with their context, in a child process (this
// test binary), and checks that the suite fails, naming what the store got
// wrong: its Subscribe test waited forever for the end of such a
// subscription, and the synctest bubble it runs in crashed the test binary
// with a deadlock panic before SubscribeEnds could name the defect.
func TestStoreFailsSilentSubscription(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_STORE_CHILD=1", "^TestStoreFailsSilentSubscriptionChild$/^(Subscribe|SubscribeEnds)$", "-test.v")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsSilentSubscriptionChild/Subscribe ")
	require.Contains(t, string(out), "subscription ended with <nil>, want context canceled")
}

// TestStoreFailsSilentSubscriptionChild is run by
// TestStoreFailsSilentSubscription.
func TestStoreFailsSilentSubscriptionChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_STORE_CHILD", "TestStoreFailsSilentSubscription", func(s eventbus.Store) eventbus.Store { return silentEnd{s} })
}

// thin is a store whose reads keep only part of each event: Subscribe's
// keep nothing but the position, or ReadAll's lose the event's links
// (ID, correlation and causation IDs), metadata and encoding.
type thin struct {
	eventbus.Store
	readAll bool // ReadAll's events are thin, not Subscribe's
}

// Subscribe returns the subscription of the store it wraps, its events
// blank but for their positions unless ReadAll's are thin.
func (s thin) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if s.readAll {
		return s.Store.Subscribe(ctx, opts)
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			if !yield(eventbus.RecordedEvent{Position: e.Position}, err) {
				return
			}
		}
	}
}

// ReadAll returns the read of the store it wraps, its events without
// their links, metadata and encoding if ReadAll's are thin.
func (s thin) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if !s.readAll {
		return s.Store.ReadAll(ctx, opts)
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.ReadAll(ctx, opts) {
			e.ID, e.CorrelationID, e.CausationID, e.Metadata, e.Encoding = eventbus.ID{}, eventbus.ID{}, eventbus.ID{}, nil, ""
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsThinReads runs TestStore against stores whose Subscribe or
// ReadAll yield events with fields missing, in a child process (this test
// binary), and checks that the suite fails, naming the read: it compared
// only positions, and passed a store whose subscriptions, which durable
// subscriptions read, yield blank events.
func TestStoreFailsThinReads(t *testing.T) {
	for how, want := range map[string][]string{
		"subscribe": {
			"--- FAIL: TestStoreFailsThinReadsChild/WholeEvents ",
			"Subscribe, from history and live (-ReadStream's +Subscribe's)",
			"--- FAIL: TestStoreFailsThinReadsChild/Subscribe ",
			"--- FAIL: TestStoreFailsThinReadsChild/SubscribeSwitchOver ",
		},
		"readall": {
			"--- FAIL: TestStoreFailsThinReadsChild/WholeEvents ",
			"ReadAll (-ReadStream's +ReadAll's)",
			"ReadAll backwards, reversed",
		},
	} {
		t.Run(how, func(t *testing.T) {
			out := failingChild(t, "EVENTBUSTEST_THIN_CHILD="+how, "^TestStoreFailsThinReadsChild$", "-test.v")
			for _, w := range want {
				require.Contains(t, string(out), w)
			}
		})
	}
}

// TestStoreFailsThinReadsChild is run by TestStoreFailsThinReads.
func TestStoreFailsThinReadsChild(t *testing.T) {
	how := os.Getenv("EVENTBUSTEST_THIN_CHILD")
	wrongStore(t, "EVENTBUSTEST_THIN_CHILD", "TestStoreFailsThinReads", func(s eventbus.Store) eventbus.Store {
		return thin{Store: s, readAll: how == "readall"}
	})
}

// lossy is a store whose subscriptions lose the events appended while
// their consumer handles the first one: then they wait for the end of
// their context and yield its error, or, if silent, end at once without
// an error.
type lossy struct {
	eventbus.Store
	silent bool
}

// Subscribe returns the subscription of the store it wraps, up to its first
// event.
func (s lossy) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, opts) {
			if !yield(e, err) || err != nil || s.silent {
				return
			}
			<-ctx.Done()
			yield(eventbus.RecordedEvent{}, ctx.Err())
			return
		}
	}
}

// TestStoreFailsLossySubscription runs TestStore's SubscribeSlowConsumer
// and SubscribeSwitchOver against stores whose subscriptions lose the
// events appended while their consumer is busy, in a child process (this
// test binary), and checks that they fail, saying so: SlowConsumer waited
// forever for the lost events, and passed a subscription that ended
// instead of delivering them; SwitchOver waited a minute of real time and
// failed only with the context's error.
func TestStoreFailsLossySubscription(t *testing.T) {
	for _, how := range []string{"stall", "silent"} {
		t.Run(how, func(t *testing.T) {
			// The child's timeout turns the hang into a failure.
			out := failingChild(t, "EVENTBUSTEST_LOSSY_CHILD="+how, "^TestStoreFailsLossySubscriptionChild$/^(SubscribeSlowConsumer|SubscribeSwitchOver)$", "-test.v", "-test.timeout=20s")
			for _, want := range []string{
				"--- FAIL: TestStoreFailsLossySubscriptionChild/SubscribeSlowConsumer ",
				"Subscribe delivered 1 of 5001 events",
				"--- FAIL: TestStoreFailsLossySubscriptionChild/SubscribeSwitchOver ",
				"Subscribe delivered 1 of 1203 events",
			} {
				require.Contains(t, string(out), want)
			}
		})
	}
}

// TestStoreFailsLossySubscriptionChild is run by
// TestStoreFailsLossySubscription.
func TestStoreFailsLossySubscriptionChild(t *testing.T) {
	how := os.Getenv("EVENTBUSTEST_LOSSY_CHILD")
	if how == "" {
		t.Skip("run by TestStoreFailsLossySubscription")
	}
	eventbustest.TestStore(t, func(t *testing.T) eventbus.Store {
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		return lossy{Store: s, silent: how == "silent"}
	})
}

// TestStoreNilOpen runs TestStore with a nil open function, and with one
// that returns a nil Store, in a child process (this test binary), and
// checks that it fails with a message instead of a panic, which ended the
// test binary and skipped every test after it.
func TestStoreNilOpen(t *testing.T) {
	for how, want := range map[string]string{
		"func":  "TestStore: nil open function",
		"store": "TestStore: open returned a nil Store",
	} {
		t.Run(how, func(t *testing.T) {
			out := failingChild(t, "EVENTBUSTEST_NIL_CHILD="+how, "^TestStoreNilOpenChild$")
			require.Contains(t, string(out), want)
		})
	}
}

// TestStoreNilOpenChild is run by TestStoreNilOpen.
func TestStoreNilOpenChild(t *testing.T) {
	switch os.Getenv("EVENTBUSTEST_NIL_CHILD") {
	case "func":
		eventbustest.TestStore(t, nil)
	case "store":
		eventbustest.TestStore(t, func(*testing.T) eventbus.Store { return nil })
	default:
		t.Skip("run by TestStoreNilOpen")
	}
}

// truncating is a store whose reads, once it is closed, end at their next
// event without an error, which the Store contract does not allow: a
// caller takes what they yielded for the whole stream.
type truncating struct {
	eventbus.Store
	closed *atomic.Bool
}

// ReadStream returns the read of the store it wraps, cut short silently
// once the store is closed.
func (s truncating) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.cut(s.Store.ReadStream(ctx, stream, opts))
}

// ReadAll returns the read of the store it wraps, cut short silently once
// the store is closed.
func (s truncating) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.cut(s.Store.ReadAll(ctx, opts))
}

func (s truncating) cut(seq iter.Seq2[eventbus.RecordedEvent, error]) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		started := false
		for e, err := range seq {
			if started && s.closed.Load() {
				return
			}
			started = true
			if !yield(e, err) {
				return
			}
		}
	}
}

// Close closes the store it wraps.
func (s truncating) Close() error {
	s.closed.Store(true)
	return s.Store.Close()
}

// TestStoreFailsTruncatedRead runs TestStore against a store whose reads
// running when it closes end early without an error, in a child process
// (this test binary), and checks that the suite fails, saying so: nothing
// checked that running reads end with ErrClosed, as the Store contract
// says, so such a store passed, and an Aggregate loading a stream while it
// closed would take the events read so far for the whole stream.
func TestStoreFailsTruncatedRead(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_TRUNCATED_CHILD=1", "^TestStoreFailsTruncatedReadChild$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsTruncatedReadChild/CloseRunningReads ")
	require.Contains(t, string(out), "ReadStream forwards running when the store closed yielded 1 of 1000 events, then ended without an error")
	require.Contains(t, string(out), "ReadAll backwards running when the store closed yielded 1 of 1000 events, then ended without an error")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsTruncatedReadChild/AppendAndRead ")
}

// TestStoreFailsTruncatedReadChild is run by TestStoreFailsTruncatedRead.
func TestStoreFailsTruncatedReadChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_TRUNCATED_CHILD", "TestStoreFailsTruncatedRead", func(s eventbus.Store) eventbus.Store { return truncating{Store: s, closed: new(atomic.Bool)} })
}

// gathering is a store whose reads gather every event they select before
// they yield the first, as a read of SQL rows into a slice would, and then
// yield them all, whether the store has closed since or not, and whose
// subscriptions gather their history so: the Store contract lets a read
// running when its store closes yield up to 256 more events only, then end
// with ErrClosed.
type gathering struct{ eventbus.Store }

// ReadStream gathers the read of the store it wraps, then yields it.
func (s gathering) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return gather(s.Store.ReadStream(ctx, stream, opts))
}

// ReadAll gathers the read of the store it wraps, then yields it.
func (s gathering) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return gather(s.Store.ReadAll(ctx, opts))
}

// Subscribe gathers the history of the store it wraps, from opts.From, as
// ReadAll does, yields it, then subscribes from after it.
func (s gathering) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	var o eventbus.SubscribeOptions
	if opts != nil {
		o = *opts
	}
	if o.From == eventbus.End {
		return s.Store.Subscribe(ctx, &o)
	}
	history := gather(s.Store.ReadAll(ctx, &eventbus.ReadOptions{From: o.From, Filter: o.Filter}))
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range history {
			if !yield(e, err) || err != nil {
				return
			}
			o.From = e.Position + 1
		}
		for e, err := range s.Store.Subscribe(ctx, &o) {
			if !yield(e, err) {
				return
			}
		}
	}
}

func gather(seq iter.Seq2[eventbus.RecordedEvent, error]) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		var events []eventbus.RecordedEvent
		for e, err := range seq {
			if err != nil {
				yield(e, err)
				return
			}
			events = append(events, e)
		}
		for _, e := range events {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// TestStoreFailsGatheringRead runs TestStore against a store whose reads
// running when it closes yield all they gathered before, in a child process
// (this test binary), and checks that the suite fails, saying so: the
// suite wanted such a read to yield every event or ErrClosed, not at most
// 256 and then ErrClosed, as the Store contract says, so such a store
// passed, and a read of a million events went on to its end after Close.
func TestStoreFailsGatheringRead(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_GATHERING_CHILD=1", "^TestStoreFailsGatheringReadChild$/^(AppendAndRead|CloseRunningReads)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsGatheringReadChild/CloseRunningReads ")
	require.Contains(t, string(out), "ReadStream forwards running when the store closed yielded 999 more events, then []; want at most 256, then ErrClosed")
	require.Contains(t, string(out), "ReadAll backwards running when the store closed yielded 999 more events, then []; want at most 256, then ErrClosed")
	require.Contains(t, string(out), "Subscribe running when the store closed yielded 999 more events, then [eventbus: closed]; want at most 256, then ErrClosed")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsGatheringReadChild/AppendAndRead ")
}

// TestStoreFailsGatheringReadChild is run by TestStoreFailsGatheringRead.
func TestStoreFailsGatheringReadChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_GATHERING_CHILD", "TestStoreFailsGatheringRead", func(s eventbus.Store) eventbus.Store { return gathering{Store: s} })
}

// lockedCaughtUp is a store that calls a subscription's CaughtUp with the
// lock its appends take held, which the Store contract does not allow: a
// CaughtUp that appends deadlocks.
type lockedCaughtUp struct {
	eventbus.Store
	mu *sync.Mutex
}

// Append appends to the store it wraps, with the lock held.
func (s lockedCaughtUp) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Append(ctx, stream, expected, events...)
}

// Subscribe subscribes to the store it wraps, calling CaughtUp with the
// lock held.
func (s lockedCaughtUp) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.CaughtUp == nil {
		return s.Store.Subscribe(ctx, opts)
	}
	o, caughtUp := *opts, opts.CaughtUp
	o.CaughtUp = func(next uint64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		caughtUp(next)
	}
	return s.Store.Subscribe(ctx, &o)
}

// TestStoreFailsLockedCaughtUp runs TestStore against a store that calls
// CaughtUp with a lock held, in a child process (this test binary), and
// checks that the suite fails, saying so, once its wait for an append from
// CaughtUp has run out (a second, set by SetLockWait; 10 for a user's
// store): no CaughtUp of the suite called the store, so such a store
// passed, and a CaughtUp of the caller's that appended or read
// deadlocked. The wait takes real time: a blocked sync.Mutex does not let
// a synctest bubble's clock move.
func TestStoreFailsLockedCaughtUp(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_LOCKED_CHILD=1", "^TestStoreFailsLockedCaughtUpChild$/^(AppendAndRead|CaughtUpUnlocked)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsLockedCaughtUpChild/CaughtUpUnlocked ")
	require.Contains(t, string(out), "Append from CaughtUp did not return within 1s: does the store call CaughtUp with a lock held?")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsLockedCaughtUpChild/AppendAndRead ")
}

// TestStoreFailsLockedCaughtUpChild is run by TestStoreFailsLockedCaughtUp.
func TestStoreFailsLockedCaughtUpChild(t *testing.T) {
	if os.Getenv("EVENTBUSTEST_LOCKED_CHILD") != "" {
		eventbustest.SetLockWait(t, time.Second)
	}
	wrongStore(t, "EVENTBUSTEST_LOCKED_CHILD", "TestStoreFailsLockedCaughtUp", func(s eventbus.Store) eventbus.Store { return lockedCaughtUp{Store: s, mu: new(sync.Mutex)} })
}

// passless is a store whose subscriptions never call Passed, as one
// written before it was part of the Store contract: a durable
// subscription's WaitFor for an event that its filter skips waits for the
// next one selected.
type passless struct{ eventbus.Store }

// Subscribe subscribes to the store it wraps without Passed.
func (s passless) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil {
		return s.Store.Subscribe(ctx, opts)
	}
	o := *opts
	o.Passed = nil
	return s.Store.Subscribe(ctx, &o)
}

// TestStoreFailsPassless runs TestStore against a store whose
// subscriptions never call Passed, in a child process (this test binary),
// and checks that the suite fails, saying so.
func TestStoreFailsPassless(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_PASSLESS_CHILD=1", "^TestStoreFailsPasslessChild$/^(AppendAndRead|Subscribe)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsPasslessChild/Subscribe ")
	require.Contains(t, string(out), "types: Passed's arguments (-want +got)")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsPasslessChild/AppendAndRead ")
}

// TestStoreFailsPasslessChild is run by TestStoreFailsPassless.
func TestStoreFailsPasslessChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_PASSLESS_CHILD", "TestStoreFailsPassless", func(s eventbus.Store) eventbus.Store { return passless{s} })
}

// TestStoreFailsContentCheck runs TestStore against a store that refuses
// a retried append whose events carry other data under the committed IDs,
// in a child process (this test binary), and checks that the suite fails,
// saying so: the Store contract compares IDs alone, as EventStoreDB does.
func TestStoreFailsContentCheck(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_CONTENT_CHILD=1", "^TestStoreFailsContentCheckChild$/^(AppendAndRead|Idempotence)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsContentCheckChild/Idempotence/other_contents_under_the_same_IDs ")
	require.Contains(t, string(out), "Append(NoStream) retried with other contents = eventbustest: other data under event ID")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsContentCheckChild/Idempotence/NoStream ")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsContentCheckChild/AppendAndRead ")
}

// TestStoreFailsContentCheckChild is run by TestStoreFailsContentCheck.
func TestStoreFailsContentCheckChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_CONTENT_CHILD", "TestStoreFailsContentCheck", func(s eventbus.Store) eventbus.Store { return contentChecking{Store: s} })
}

// contentChecking is a store that refuses an append of an event whose ID
// the stream holds with other data, where the Store contract replays it.
type contentChecking struct{ eventbus.Store }

// Append appends to the store it wraps, unless an event's ID is in the
// stream with other data.
func (s contentChecking) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	for e, err := range s.Store.ReadStream(ctx, stream, nil) {
		if err != nil {
			return eventbus.AppendResult{}, err
		}
		for _, ev := range events {
			if ev.ID == e.ID && !bytes.Equal(ev.Data, e.Data) {
				return eventbus.AppendResult{}, fmt.Errorf("eventbustest: other data under event ID %v", ev.ID)
			}
		}
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// forgetful is a store that looks for a retried append with Any or
// StreamExists among the stream's last 100 events only, and writes the
// events again with new IDs when they are further back, where the Store
// contract promises at least the last 10,000.
type forgetful struct{ eventbus.Store }

// Append appends to the store it wraps, forgetting the events of the
// stream but for its last 100.
func (s forgetful) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if len(events) == 0 || (expected != eventbus.Any && expected != eventbus.StreamExists) {
		return s.Store.Append(ctx, stream, expected, events...)
	}
	back := 0
	for e, err := range s.Store.ReadStream(ctx, stream, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End}) {
		if err != nil {
			return eventbus.AppendResult{}, err
		}
		if back++; e.ID == events[0].ID && back > 100 {
			again := slices.Clone(events)
			for i := range again {
				again[i].ID = eventbus.NewID()
			}
			return s.Store.Append(ctx, stream, expected, again...)
		}
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestStoreFailsForgetfulIdempotence runs TestStore against a store that
// looks for retried appends with Any among the stream's last 100 events
// only, in a child process (this test binary), and checks that the suite
// fails, saying so: no retry of the suite came more than 2 events after
// its first append, so such a store passed, and a retry 100 events later
// (a StoreTopic's Publish given the first's ID) stored its event twice.
func TestStoreFailsForgetfulIdempotence(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_FORGETFUL_CHILD=1", "^TestStoreFailsForgetfulIdempotenceChild$/^(AppendAndRead|Idempotence)$", "-test.v")
	for _, expected := range []string{"any", "stream_exists"} {
		require.Contains(t, string(out), "--- FAIL: TestStoreFailsForgetfulIdempotenceChild/Idempotence/"+expected+",_10,000_events_back ")
	}
	require.Contains(t, string(out), "after a retried Append(any), the stream's last revision is 10003, want 10000: the retry wrote its events again")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsForgetfulIdempotenceChild/Idempotence/Any ")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsForgetfulIdempotenceChild/AppendAndRead ")
}

// TestStoreFailsForgetfulIdempotenceChild is run by
// TestStoreFailsForgetfulIdempotence.
func TestStoreFailsForgetfulIdempotenceChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_FORGETFUL_CHILD", "TestStoreFailsForgetfulIdempotence", func(s eventbus.Store) eventbus.Store { return forgetful{Store: s} })
}

// systemBlind is a store whose subscriptions skip the system streams
// (those whose names start with '$') whatever their filter, where the
// Store contract has a StreamPrefix that starts with '$' select them.
type systemBlind struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, without the
// events of system streams.
func (s systemBlind) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	seq := s.Store.Subscribe(ctx, opts)
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range seq {
			if err == nil && strings.HasPrefix(e.Stream, "$") {
				continue
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsSystemBlindSubscription runs TestStore against a store
// whose subscriptions never deliver the events of system streams, in a
// child process (this test binary), and checks that the suite fails,
// saying so: only ReadAll was given a '$' prefix, so such a store passed,
// and a subscription given one, to follow the snapshots of SaveSnapshot
// say, never saw an event.
func TestStoreFailsSystemBlindSubscription(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_SYSTEMBLIND_CHILD=1", "^TestStoreFailsSystemBlindSubscriptionChild$/^(ReadAll|Subscribe)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsSystemBlindSubscriptionChild/Subscribe ")
	require.Contains(t, string(out), "system prefix: Subscribe(")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsSystemBlindSubscriptionChild/ReadAll ")
}

// TestStoreFailsSystemBlindSubscriptionChild is run by
// TestStoreFailsSystemBlindSubscription.
func TestStoreFailsSystemBlindSubscriptionChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_SYSTEMBLIND_CHILD", "TestStoreFailsSystemBlindSubscription", func(s eventbus.Store) eventbus.Store { return systemBlind{Store: s} })
}

// following is a store whose forward reads do not stop at the events
// committed when their loop started, but read on while appends come, which
// the Store contract does not allow: a loop that appends what it reads
// (a migration copying a stream, say) never ends.
type following struct{ eventbus.Store }

// ReadStream reads the stream of the store it wraps forwards, then again
// from after the last event read, until no more events come.
func (s following) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.follow(opts, func(o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
		return s.Store.ReadStream(ctx, stream, o)
	}, func(e eventbus.RecordedEvent) uint64 { return e.Revision })
}

// ReadAll reads the store it wraps forwards, then again from after the
// last event read, until no more events come.
func (s following) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.follow(opts, func(o *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
		return s.Store.ReadAll(ctx, o)
	}, func(e eventbus.RecordedEvent) uint64 { return e.Position })
}

func (s following) follow(opts *eventbus.ReadOptions, read func(*eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error], at func(eventbus.RecordedEvent) uint64) iter.Seq2[eventbus.RecordedEvent, error] {
	var o eventbus.ReadOptions
	if opts != nil {
		o = *opts
	}
	if o.Direction != eventbus.Forwards || o.Limit != 0 {
		return read(opts)
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for {
			n := 0
			for e, err := range read(&o) {
				if err != nil {
					yield(e, err)
					return
				}
				n++
				o.From = at(e) + 1
				if !yield(e, nil) {
					return
				}
			}
			if n == 0 {
				return
			}
		}
	}
}

// TestStoreFailsFollowingRead runs TestStore against a store whose reads
// go on to the events committed while their loop runs, in a child process
// (this test binary), and checks that the suite fails, saying so: nothing
// checked that a read sees the events committed when its loop starts only,
// as the Store contract says, so such a store passed, and a loop appending
// what it read never ended.
func TestStoreFailsFollowingRead(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_FOLLOWING_CHILD=1", "^TestStoreFailsFollowingReadChild$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsFollowingReadChild/ReadsAreLazy ")
	require.Contains(t, string(out), "ReadStream yielded 5 events, 2 of them committed after its loop started; want the 3 committed before")
	require.Contains(t, string(out), "ReadAll yielded 7 events, 2 of them committed after its loop started; want the 5 committed before")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsFollowingReadChild/AppendAndRead ")
}

// TestStoreFailsFollowingReadChild is run by TestStoreFailsFollowingRead.
func TestStoreFailsFollowingReadChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_FOLLOWING_CHILD", "TestStoreFailsFollowingRead", func(s eventbus.Store) eventbus.Store { return following{s} })
}

// reckless is a store whose Tombstone ignores the expected revision, which
// the Store contract does not allow: a stream deleted forever although
// another writer appended to it meanwhile.
type reckless struct{ eventbus.Store }

// Tombstone tombstones stream whatever its state.
func (s reckless) Tombstone(ctx context.Context, stream string, _ eventbus.ExpectedRevision) error {
	return s.Store.Tombstone(ctx, stream, eventbus.Any)
}

// TestStoreFailsRecklessTombstone runs TestStore against a store whose
// Tombstone ignores the expected revision, in a child process (this test
// binary), and checks that the suite fails, saying so: nothing checked a
// Tombstone in the wrong state, so such a store passed, and deleted forever
// a stream that a writer had appended to since it was checked.
func TestStoreFailsRecklessTombstone(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_RECKLESS_CHILD=1", "^TestStoreFailsRecklessTombstoneChild$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsRecklessTombstoneChild/ExpectedRevision ")
	require.Contains(t, string(out), "Tombstone(0) = <nil>, want ErrWrongExpectedVersion")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsRecklessTombstoneChild/Tombstone ")
}

// TestStoreFailsRecklessTombstoneChild is run by
// TestStoreFailsRecklessTombstone.
func TestStoreFailsRecklessTombstoneChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_RECKLESS_CHILD", "TestStoreFailsRecklessTombstone", func(s eventbus.Store) eventbus.Store { return reckless{s} })
}

// exactStart is a store whose Backwards reads start only at an event at
// From, and yield nothing when there is none there (past the last event,
// or where the filter rejects one), which the Store contract does not
// allow: past the last event, a Backwards read starts at the last event.
type exactStart struct{ eventbus.Store }

// ReadStream returns the read of the store it wraps, or nothing if it is a
// Backwards read whose first event is not at From.
func (s exactStart) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return exact(opts, s.Store.ReadStream(ctx, stream, opts), func(e eventbus.RecordedEvent) uint64 { return e.Revision })
}

// ReadAll returns the read of the store it wraps, or nothing if it is a
// Backwards read whose first event is not at From.
func (s exactStart) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return exact(opts, s.Store.ReadAll(ctx, opts), func(e eventbus.RecordedEvent) uint64 { return e.Position })
}

func exact(opts *eventbus.ReadOptions, seq iter.Seq2[eventbus.RecordedEvent, error], at func(eventbus.RecordedEvent) uint64) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.Direction != eventbus.Backwards || opts.From == eventbus.End {
		return seq
	}
	from := opts.From
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		first := true
		for e, err := range seq {
			if first && err == nil && at(e) != from {
				return
			}
			first = false
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsExactBackwardsStart runs TestStore against a store whose
// Backwards reads from past the last event yield nothing, in a child
// process (this test binary), and checks that the suite fails, saying so:
// nothing read Backwards from past the end, so such a store passed, and a
// caller reading the last events before a position it was given (a
// checkpoint, say, later than the store's end) took the stream for empty.
func TestStoreFailsExactBackwardsStart(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_EXACT_CHILD=1", "^TestStoreFailsExactBackwardsStartChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsExactBackwardsStartChild/ReadStream/backwards_from_past_the_end ",
		"--- FAIL: TestStoreFailsExactBackwardsStartChild/ReadAll/backwards_from_past_the_end ",
		"--- FAIL: TestStoreFailsExactBackwardsStartChild/ReadAll/backwards_from_a_rejected_event ",
		"--- PASS: TestStoreFailsExactBackwardsStartChild/ReadStream/backwards_from_1 ",
		"--- PASS: TestStoreFailsExactBackwardsStartChild/AppendAndRead ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsExactBackwardsStartChild is run by
// TestStoreFailsExactBackwardsStart.
func TestStoreFailsExactBackwardsStartChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_EXACT_CHILD", "TestStoreFailsExactBackwardsStart", func(s eventbus.Store) eventbus.Store { return exactStart{s} })
}

// endReporting is a store whose subscriptions report to CaughtUp the
// position the next committed event will have, even when From is later,
// which the Store contract does not allow: a subscription from past the
// end has passed every position before From, and says so.
type endReporting struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, whose CaughtUp
// is told the store's next position.
func (s endReporting) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.CaughtUp == nil {
		return s.Store.Subscribe(ctx, opts)
	}
	o := *opts
	o.CaughtUp = func(uint64) {
		next := uint64(0)
		for _, prefix := range []string{"", "$"} {
			last := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1, Filter: eventbus.Filter{StreamPrefix: prefix}}
			for e, err := range s.Store.ReadAll(ctx, last) {
				if err == nil {
					next = max(next, e.Position+1)
				}
			}
		}
		opts.CaughtUp(next)
	}
	return s.Store.Subscribe(ctx, &o)
}

// TestStoreFailsEndReportingSubscription runs TestStore against a store
// whose subscriptions from past the end report to CaughtUp the store's
// next position instead of From, in a child process (this test binary),
// and checks that the suite fails, saying so: nothing subscribed from past
// the end, so such a store passed, and a caller that took CaughtUp's
// argument for a checkpoint moved it back before From.
func TestStoreFailsEndReportingSubscription(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_END_CHILD=1", "^TestStoreFailsEndReportingSubscriptionChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsEndReportingSubscriptionChild/Subscribe ",
		"from past the end: CaughtUp(8), want 9",
		"from far past the end: CaughtUp(8), want 100",
		"--- PASS: TestStoreFailsEndReportingSubscriptionChild/SubscribeSwitchOver ",
	} {
		require.Contains(t, string(out), want)
	}
	require.NotContains(t, string(out), "from 5: CaughtUp")
}

// TestStoreFailsEndReportingSubscriptionChild is run by
// TestStoreFailsEndReportingSubscription.
func TestStoreFailsEndReportingSubscriptionChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_END_CHILD", "TestStoreFailsEndReportingSubscription", func(s eventbus.Store) eventbus.Store { return endReporting{s} })
}

// sharing is a store whose reads and subscriptions copy their options
// when the call returns, but share their Filter.Types with the caller,
// and use them when the loop starts, which the Store contract does not
// allow: a caller reusing its options for another read changes the first.
type sharing struct{ eventbus.Store }

// ReadStream returns a read of the store it wraps, made when the loop
// starts, with a shallow copy of opts.
func (s sharing) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	o := shallow(opts)
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.ReadStream(ctx, stream, o) {
			if !yield(e, err) {
				return
			}
		}
	}
}

// ReadAll returns a read of the store it wraps, made when the loop starts,
// with a shallow copy of opts.
func (s sharing) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	o := shallow(opts)
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.ReadAll(ctx, o) {
			if !yield(e, err) {
				return
			}
		}
	}
}

// Subscribe returns a subscription of the store it wraps, made when the
// loop starts, with a shallow copy of opts.
func (s sharing) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	o := shallow(opts)
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.Subscribe(ctx, o) {
			if !yield(e, err) {
				return
			}
		}
	}
}

// shallow returns a copy of *opts that shares its Filter.Types, or nil.
func shallow[O any](opts *O) *O {
	if opts == nil {
		return nil
	}
	o := *opts
	return &o
}

// TestStoreFailsSharedTypes runs TestStore against a store whose reads and
// subscriptions share their options' Filter.Types with the caller, in a
// child process (this test binary), and checks that the suite fails,
// saying so: nothing changed options after a call, so such a store
// passed, and a caller reusing its options changed a running read's
// selection, or raced with a subscription read in another goroutine.
func TestStoreFailsSharedTypes(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_SHARING_CHILD=1", "^TestStoreFailsSharedTypesChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsSharedTypesChild/KeepsOptions ",
		"ReadStream from 1 of type t1, its options changed after the call",
		"ReadAll from 1 of type t1, its options changed after the call",
		"Subscribe from 1 of type t1, its options changed after the call",
		"--- PASS: TestStoreFailsSharedTypesChild/ReadAll ",
		"--- PASS: TestStoreFailsSharedTypesChild/Subscribe ",
	} {
		require.Contains(t, string(out), want)
	}
	// The rest of the options were copied.
	require.NotContains(t, string(out), "CaughtUp its options were given after the call")
}

// TestStoreFailsSharedTypesChild is run by TestStoreFailsSharedTypes.
func TestStoreFailsSharedTypesChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_SHARING_CHILD", "TestStoreFailsSharedTypes", func(s eventbus.Store) eventbus.Store { return sharing{s} })
}

// limitFirst is a store whose stream reads take Limit events of the
// stream first and hide the events that a soft delete or the stream's
// metadata hides afterwards, as a store over SQL might (a LIMIT in the
// query, the hiding in Go): a read with a limit then yields fewer events
// than it should, or none.
type limitFirst struct{ eventbus.Store }

// ReadStream reads the stream's events in the log, forwards, up to
// opts.Limit, then leaves out those the stream hides.
func (s limitFirst) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.Limit <= 0 || opts.Direction != eventbus.Forwards || opts.Filter.Types != nil || stream == "" {
		return s.Store.ReadStream(ctx, stream, opts)
	}
	from, limit := opts.From, opts.Limit
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		info, err := s.StreamInfo(ctx, stream)
		if err != nil || info.Tombstoned {
			for e, err := range s.Store.ReadStream(ctx, stream, &eventbus.ReadOptions{From: from, Limit: limit}) {
				if !yield(e, err) {
					return
				}
			}
			return
		}
		var page []eventbus.RecordedEvent
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: stream}}) {
			if err != nil {
				yield(e, err)
				return
			}
			if e.Stream == stream && e.Revision >= from && len(page) < limit {
				page = append(page, e)
			}
		}
		md := info.Metadata
		for _, e := range page {
			switch {
			case info.Deleted || e.Revision < info.Start:
			case md.MaxCount > 0 && e.Revision+md.MaxCount <= info.Revision:
			case md.MaxAge > 0 && time.Since(e.Time) > md.MaxAge:
			default:
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// TestStoreFailsLimitBeforeHiding runs TestStore against a store whose
// stream reads apply Limit before hiding the events that a soft delete,
// MaxCount or MaxAge hides, in a child process (this test binary), and
// checks that the suite fails, saying so: every read of a stream with such
// events was without a limit, so such a store passed, and a caller paging
// through a stream with MaxCount got an empty first page and took the
// stream for empty.
func TestStoreFailsLimitBeforeHiding(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_LIMIT_CHILD=1", "^TestStoreFailsLimitBeforeHidingChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsLimitBeforeHidingChild/Delete ",
		"ReadStream with Limit 1 after Delete and Append",
		"--- FAIL: TestStoreFailsLimitBeforeHidingChild/MaxCount ",
		"ReadStream with Limit 1 and MaxCount 2",
		"--- FAIL: TestStoreFailsLimitBeforeHidingChild/MaxAge ",
		"ReadStream with Limit 1, 80 minutes later with MaxAge 1h",
		"--- PASS: TestStoreFailsLimitBeforeHidingChild/ReadStream ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsLimitBeforeHidingChild is run by
// TestStoreFailsLimitBeforeHiding.
func TestStoreFailsLimitBeforeHidingChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_LIMIT_CHILD", "TestStoreFailsLimitBeforeHiding", func(s eventbus.Store) eventbus.Store { return limitFirst{s} })
}

// backwardsUnhidden is a store whose Backwards stream reads yield every
// event of the stream in the log, those that a soft delete or the
// stream's metadata hides included, as a store might that reads a stream
// back from its end by another code path than forwards.
type backwardsUnhidden struct{ eventbus.Store }

// ReadStream reads Backwards from the log, hiding nothing.
func (s backwardsUnhidden) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.Direction != eventbus.Backwards || opts.Filter.Types != nil || opts.Filter.StreamPrefix != "" || stream == "" {
		return s.Store.ReadStream(ctx, stream, opts)
	}
	from, limit := opts.From, opts.Limit
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		if info, err := s.StreamInfo(ctx, stream); err != nil || info.Tombstoned || limit < 0 {
			for e, err := range s.Store.ReadStream(ctx, stream, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: from, Limit: limit}) {
				if !yield(e, err) {
					return
				}
			}
			return
		}
		n := 0
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Filter: eventbus.Filter{StreamPrefix: stream}}) {
			if err != nil {
				yield(e, err)
				return
			}
			if e.Stream != stream || e.Revision > from {
				continue
			}
			if !yield(e, nil) {
				return
			}
			if n++; n == limit {
				return
			}
		}
	}
}

// TestStoreFailsBackwardsUnhidden runs TestStore against a store whose
// Backwards stream reads show the events that a soft delete, MaxCount or
// MaxAge hides, in a child process (this test binary), and checks that the
// suite fails, saying so: no stream soft-deleted or with MaxAge was read
// Backwards, so such a store passed (but for MaxCount, whose Backwards read
// is counted), and the last event read back from the end of a deleted
// stream (Backwards, Limit 1, as checkpoints and snapshots are read) was a
// deleted one.
func TestStoreFailsBackwardsUnhidden(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_BACKWARDS_CHILD=1", "^TestStoreFailsBackwardsUnhiddenChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsBackwardsUnhiddenChild/Delete ",
		"ReadStream backwards after Delete =",
		"ReadStream backwards after Delete and Append",
		"--- FAIL: TestStoreFailsBackwardsUnhiddenChild/MaxAge ",
		"ReadStream backwards 80 minutes later with MaxAge 1h",
		"--- PASS: TestStoreFailsBackwardsUnhiddenChild/ReadStream ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsBackwardsUnhiddenChild is run by
// TestStoreFailsBackwardsUnhidden.
func TestStoreFailsBackwardsUnhiddenChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_BACKWARDS_CHILD", "TestStoreFailsBackwardsUnhidden", func(s eventbus.Store) eventbus.Store { return backwardsUnhidden{s} })
}

// tailReplay is a store that takes a NoStream append for the replay of a
// committed batch only while that batch ends the stream, as a store might
// that looks for the batch among the stream's last events: once the
// stream has more, a retry fails with a *WrongExpectedVersionError.
type tailReplay struct{ eventbus.Store }

// Append refuses a NoStream append of a batch committed to stream, in
// order, but not as its last events.
func (s tailReplay) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	info, err := s.StreamInfo(ctx, stream)
	if expected != eventbus.NoStream || len(events) == 0 || err != nil || !info.Exists {
		return s.Store.Append(ctx, stream, expected, events...)
	}
	revs := map[eventbus.ID]uint64{}
	for e, err := range s.ReadStream(ctx, stream, nil) {
		if err != nil {
			return eventbus.AppendResult{}, err
		}
		revs[e.ID] = e.Revision
	}
	first, ok := revs[events[0].ID]
	for i, e := range events {
		rev, found := revs[e.ID]
		ok = ok && found && rev == first+uint64(i)
	}
	if !ok || first+uint64(len(events))-1 == info.Revision {
		return s.Store.Append(ctx, stream, expected, events...)
	}
	return eventbus.AppendResult{}, &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected, Actual: eventbus.Exact(info.Revision)}
}

// TestStoreFailsTailReplay runs TestStore against a store that replays a
// NoStream batch only while it ends the stream, in a child process (this
// test binary), and checks that the suite fails, saying so: the Store
// contract replays a batch committed right after the expected revision,
// whatever was appended since, but no NoStream retry came after other
// appends, so such a store passed, and a command retried after a timeout
// (its first append committed, another writer's since) failed.
func TestStoreFailsTailReplay(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_TAIL_REPLAY_CHILD=1", "^TestStoreFailsTailReplayChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsTailReplayChild/Idempotence/NoStream ",
		"--- FAIL: TestStoreFailsTailReplayChild/Idempotence/NoStream_after_a_soft_delete ",
		"retried Append(no stream) = eventbus: stream \"s\": expected revision no stream",
		"--- PASS: TestStoreFailsTailReplayChild/Idempotence/partial_overlap ",
		"--- PASS: TestStoreFailsTailReplayChild/ExpectedRevision ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsTailReplayChild is run by TestStoreFailsTailReplay.
func TestStoreFailsTailReplayChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_TAIL_REPLAY_CHILD", "TestStoreFailsTailReplay", func(s eventbus.Store) eventbus.Store { return tailReplay{s} })
}

// countsDeleted is a store whose stream reads apply MaxCount, or MaxAge,
// in place of a soft delete: they show the stream's last MaxCount events,
// or those of the last MaxAge, those of its lives before the delete
// included, as a store might whose query limits a stream to its last rows
// without asking where its life starts.
type countsDeleted struct{ eventbus.Store }

// ReadStream shows the last MaxCount events of a soft-deleted stream, or
// those of the last MaxAge.
func (s countsDeleted) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	info, err := s.StreamInfo(ctx, stream)
	md := info.Metadata
	if err != nil || info.Tombstoned || info.Start == 0 || md == (eventbus.StreamMetadata{}) || opts != nil && (opts.Filter.Types != nil || opts.Filter.StreamPrefix != "" || opts.Limit < 0) {
		return s.Store.ReadStream(ctx, stream, opts)
	}
	var o eventbus.ReadOptions
	if opts != nil {
		o = *opts
	}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		var all []eventbus.RecordedEvent
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: stream}}) {
			if err != nil {
				yield(e, err)
				return
			}
			if e.Stream == stream && (md.MaxAge == 0 || time.Since(e.Time) <= md.MaxAge) {
				all = append(all, e)
			}
		}
		if md.MaxCount > 0 {
			all = all[max(0, len(all)-int(md.MaxCount)):]
		}
		if o.Direction == eventbus.Backwards {
			slices.Reverse(all)
		}
		n := 0
		for _, e := range all {
			if o.Direction == eventbus.Backwards && e.Revision > o.From || o.Direction == eventbus.Forwards && e.Revision < o.From {
				continue
			}
			if !yield(e, nil) {
				return
			}
			if n++; n == o.Limit {
				return
			}
		}
	}
}

// TestStoreFailsCountsDeleted runs TestStore against a store whose stream
// reads apply MaxCount or MaxAge in place of a soft delete, in a child
// process (this test binary), and checks that the suite fails, saying so:
// no stream with either was soft-deleted, so such a store passed, and a
// stream written again after a delete showed events of its earlier life,
// which an Aggregate folds into the new one.
func TestStoreFailsCountsDeleted(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_COUNTS_DELETED_CHILD=1", "^TestStoreFailsCountsDeletedChild$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsCountsDeletedChild/MaxCount ",
		"ReadStream with MaxCount 3 after Delete and Append",
		"ReadStream backwards with MaxCount 3 after Delete and Append",
		"--- FAIL: TestStoreFailsCountsDeletedChild/MaxAge ",
		"ReadStream with MaxAge 1h after Delete and Append",
		"--- PASS: TestStoreFailsCountsDeletedChild/Delete ",
		"--- PASS: TestStoreFailsCountsDeletedChild/ReadStream ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsCountsDeletedChild is run by TestStoreFailsCountsDeleted.
func TestStoreFailsCountsDeletedChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_COUNTS_DELETED_CHILD", "TestStoreFailsCountsDeleted", func(s eventbus.Store) eventbus.Store { return countsDeleted{s} })
}

// nameBlind is a store whose Tombstone, SetStreamMetadata and StreamInfo
// take any stream name, which the Store contract does not allow: a stream
// is named by a non-empty UTF-8 string of at most 1,024 bytes, and a bad
// name is bad input (eventbus.ErrInvalid).
type nameBlind struct{ eventbus.Store }

// bad reports whether stream names no stream.
func bad(stream string) bool { return stream == "" || len(stream) > 1024 || !utf8.ValidString(stream) }

// Tombstone does nothing for a bad name.
func (s nameBlind) Tombstone(ctx context.Context, stream string, expected eventbus.ExpectedRevision) error {
	if bad(stream) {
		return nil
	}
	return s.Store.Tombstone(ctx, stream, expected)
}

// SetStreamMetadata does nothing for a bad name.
func (s nameBlind) SetStreamMetadata(ctx context.Context, stream string, md eventbus.StreamMetadata) error {
	if bad(stream) {
		return nil
	}
	return s.Store.SetStreamMetadata(ctx, stream, md)
}

// StreamInfo reports a stream never written for a bad name.
func (s nameBlind) StreamInfo(ctx context.Context, stream string) (eventbus.StreamInfo, error) {
	if bad(stream) {
		return eventbus.StreamInfo{}, nil
	}
	return s.Store.StreamInfo(ctx, stream)
}

// TestStoreFailsNameBlind runs TestStore against a store whose Tombstone,
// SetStreamMetadata and StreamInfo take an empty name, one not UTF-8 or
// one over 1,024 bytes, in a child process (this test binary), and checks
// that the suite fails, saying so: only Append, AppendMulti, Delete("")
// and ReadStream("") were given a bad name, so such a store passed, and a
// caller's Tombstone of a name made of a bad key reserved nothing and
// reported success.
func TestStoreFailsNameBlind(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_NAMEBLIND_CHILD=1", "^TestStoreFailsNameBlindChild$/^(InvalidInput|Tombstone)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsNameBlindChild/InvalidInput ",
		`Tombstone("") = <nil>, want ErrInvalid`,
		`SetStreamMetadata("s\xff") = <nil>, want ErrInvalid`,
		`StreamInfo("ssssssssssssssssssss") = <nil>, want ErrInvalid`,
		"--- PASS: TestStoreFailsNameBlindChild/Tombstone ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsNameBlindChild is run by TestStoreFailsNameBlind.
func TestStoreFailsNameBlindChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_NAMEBLIND_CHILD", "TestStoreFailsNameBlind", func(s eventbus.Store) eventbus.Store { return nameBlind{s} })
}

// liveTypeBlind is a store whose subscriptions apply Filter.Types to the
// events committed before they caught up, but not to those that come
// after, as a store might that filters its history by a query and its live
// events by another code path.
type liveTypeBlind struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, given no
// types, whose events it filters by opts' types until CaughtUp is called.
func (s liveTypeBlind) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || len(opts.Filter.Types) == 0 {
		return s.Store.Subscribe(ctx, opts)
	}
	o, types, caughtUp := *opts, slices.Clone(opts.Filter.Types), opts.CaughtUp
	live := false // set and read in the goroutine iterating the subscription
	o.Filter.Types = nil
	o.CaughtUp = func(next uint64) {
		live = true
		if caughtUp != nil {
			caughtUp(next)
		}
	}
	seq := s.Store.Subscribe(ctx, &o)
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range seq {
			if err == nil && !live && !slices.Contains(types, e.Type) {
				continue
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsLiveTypeBlind runs TestStore against a store whose
// subscriptions deliver live events of every type, whatever Filter.Types
// says, in a child process (this test binary), and checks that the suite
// fails, saying so: only a subscription that stopped once it caught up
// was given types, so such a store passed, and a subscriber of some types
// got the others too once it caught up.
func TestStoreFailsLiveTypeBlind(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_LIVETYPES_CHILD=1", "^TestStoreFailsLiveTypeBlindChild$/^(Subscribe|KeepsOptions)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsLiveTypeBlindChild/Subscribe ",
		"types: Subscribe(",
		"--- PASS: TestStoreFailsLiveTypeBlindChild/KeepsOptions ",
	} {
		require.Contains(t, string(out), want)
	}
	require.NotContains(t, string(out), "filter: Subscribe(")
}

// TestStoreFailsLiveTypeBlindChild is run by TestStoreFailsLiveTypeBlind.
func TestStoreFailsLiveTypeBlindChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_LIVETYPES_CHILD", "TestStoreFailsLiveTypeBlind", func(s eventbus.Store) eventbus.Store { return liveTypeBlind{s} })
}

// countsFromStart is a store whose Backwards stream reads of a stream with
// MaxCount show the first MaxCount events of its current life instead of
// the last, as a store might that computes the events a stream shows from
// where its life starts rather than from its end.
type countsFromStart struct{ eventbus.Store }

// ReadStream reads Backwards from the log the first MaxCount events of the
// stream's current life.
func (s countsFromStart) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.Direction != eventbus.Backwards || opts.Filter.Types != nil || opts.Filter.StreamPrefix != "" || opts.Limit < 0 || stream == "" {
		return s.Store.ReadStream(ctx, stream, opts)
	}
	from, limit := opts.From, opts.Limit
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		info, err := s.StreamInfo(ctx, stream)
		if err != nil || info.Tombstoned || info.Deleted || info.Metadata.MaxCount == 0 {
			for e, err := range s.Store.ReadStream(ctx, stream, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: from, Limit: limit}) {
				if !yield(e, err) {
					return
				}
			}
			return
		}
		var shown []eventbus.RecordedEvent
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: stream}}) {
			if err != nil {
				yield(e, err)
				return
			}
			if e.Stream == stream && e.Revision >= info.Start && e.Revision < info.Start+info.Metadata.MaxCount && e.Revision <= from {
				shown = append(shown, e)
			}
		}
		slices.Reverse(shown)
		for i, e := range shown {
			if (limit > 0 && i == limit) || !yield(e, nil) {
				return
			}
		}
	}
}

// TestStoreFailsCountsFromStart runs TestStore against a store whose
// Backwards stream reads of a stream with MaxCount show its first events
// instead of its last, in a child process (this test binary), and checks
// that the suite fails, saying so: the Backwards read with MaxCount was
// counted, not compared, so such a store passed, and the latest snapshot
// or checkpoint, read back from the end of a stream of MaxCount 1, was the
// first one ever saved.
func TestStoreFailsCountsFromStart(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_COUNTSFROMSTART_CHILD=1", "^TestStoreFailsCountsFromStartChild$/^(MaxCount|ReadStream)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsCountsFromStartChild/MaxCount ",
		"ReadStream backwards with MaxCount 2 (-want +got)",
		"--- PASS: TestStoreFailsCountsFromStartChild/ReadStream ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsCountsFromStartChild is run by TestStoreFailsCountsFromStart.
func TestStoreFailsCountsFromStartChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_COUNTSFROMSTART_CHILD", "TestStoreFailsCountsFromStart", func(s eventbus.Store) eventbus.Store { return countsFromStart{s} })
}

// backwardsUnfiltered is a store whose Backwards reads of every stream
// apply no filter but the one that leaves out system streams, as a store
// might that reads the log back from its end by another code path than
// forwards.
type backwardsUnfiltered struct{ eventbus.Store }

// ReadAll reads Backwards with the zero Filter, unless the filter selects
// system streams.
func (s backwardsUnfiltered) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts == nil || opts.Direction != eventbus.Backwards || strings.HasPrefix(opts.Filter.StreamPrefix, "$") {
		return s.Store.ReadAll(ctx, opts)
	}
	o := *opts
	o.Filter = eventbus.Filter{}
	return s.Store.ReadAll(ctx, &o)
}

// TestStoreFailsBackwardsUnfiltered runs TestStore against a store whose
// Backwards ReadAll ignores Filter.Types and Filter.StreamPrefix, in a
// child process (this test binary), and checks that the suite fails,
// saying so: no Backwards ReadAll was given types or a prefix, so such a
// store passed, and a caller looking for the last event of a type, or of
// some streams, got the last event of any.
func TestStoreFailsBackwardsUnfiltered(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_BACKWARDSUNFILTERED_CHILD=1", "^TestStoreFailsBackwardsUnfilteredChild$/^(ReadAll|ReadStream)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsBackwardsUnfilteredChild/ReadAll/backwards_types ",
		"--- FAIL: TestStoreFailsBackwardsUnfilteredChild/ReadAll/backwards_prefix_and_limit ",
		"--- PASS: TestStoreFailsBackwardsUnfilteredChild/ReadAll/backwards_from_a_rejected_event ",
		"--- PASS: TestStoreFailsBackwardsUnfilteredChild/ReadStream ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsBackwardsUnfilteredChild is run by
// TestStoreFailsBackwardsUnfiltered.
func TestStoreFailsBackwardsUnfilteredChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_BACKWARDSUNFILTERED_CHILD", "TestStoreFailsBackwardsUnfiltered", func(s eventbus.Store) eventbus.Store { return backwardsUnfiltered{s} })
}

// tombstoneLate is a store whose AppendMulti checks each stream for a
// tombstone only when it comes to commit it, which the Store contract
// does not allow: the streams before a tombstoned one are committed, and
// the call fails with ErrStreamDeleted, so a caller takes none of them for
// written.
type tombstoneLate struct{ eventbus.Store }

// AppendMulti commits the appends before the first to a tombstoned
// stream, then fails.
func (s tombstoneLate) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	for i, a := range appends {
		if info, err := s.StreamInfo(ctx, a.Stream); err != nil || !info.Tombstoned {
			continue
		}
		if i > 0 {
			if _, err := s.Store.AppendMulti(ctx, appends[:i]...); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("%w: stream %q", eventbus.ErrStreamDeleted, a.Stream)
	}
	return s.Store.AppendMulti(ctx, appends...)
}

// TestStoreFailsTombstoneLate runs TestStore against a store whose
// AppendMulti commits the appends before one to a tombstoned stream, in a
// child process (this test binary), and checks that the suite fails,
// saying so: only AppendMulti calls of one stream met a tombstone, so such
// a store passed, and a caller whose AppendMulti failed had written some
// of it.
func TestStoreFailsTombstoneLate(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_TOMBSTONELATE_CHILD=1", "^TestStoreFailsTombstoneLateChild$/^(Tombstone|AppendMulti)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsTombstoneLateChild/Tombstone ",
		"ReadAll after Tombstone = [",
		"--- PASS: TestStoreFailsTombstoneLateChild/AppendMulti ",
	} {
		require.Contains(t, string(out), want)
	}
	require.NotContains(t, string(out), "want ErrStreamDeleted")
}

// TestStoreFailsTombstoneLateChild is run by TestStoreFailsTombstoneLate.
func TestStoreFailsTombstoneLateChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_TOMBSTONELATE_CHILD", "TestStoreFailsTombstoneLate", func(s eventbus.Store) eventbus.Store { return tombstoneLate{s} })
}

// systemLeak is a store whose subscriptions leave out the events of
// system streams (those whose names start with '$') from the history
// they catch up with, but not from the events that come after, as a store
// might that filters its history by a query and its live events by
// another code path, matching the prefix alone.
type systemLeak struct{ eventbus.Store }

// Subscribe returns the subscription of the store it wraps, which, once
// caught up, yields the events of system streams committed before each of
// its events.
func (s systemLeak) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if opts != nil && strings.HasPrefix(opts.Filter.StreamPrefix, "$") {
		return s.Store.Subscribe(ctx, opts)
	}
	var o eventbus.SubscribeOptions
	if opts != nil {
		o = *opts
	}
	caughtUp := o.CaughtUp
	live, next := false, uint64(0) // set and read in the goroutine iterating the subscription
	o.CaughtUp = func(n uint64) {
		live, next = true, n
		if caughtUp != nil {
			caughtUp(n)
		}
	}
	seq := s.Store.Subscribe(ctx, &o)
	system := &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$", Types: slices.Clone(o.Filter.Types)}}
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range seq {
			if err == nil && live {
				system.From = next
				for se, err := range s.ReadAll(ctx, system) {
					if err != nil || se.Position >= e.Position {
						break
					}
					if !yield(se, nil) {
						return
					}
				}
				next = e.Position + 1
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsSystemLeak runs TestStore against a store whose
// subscriptions deliver the live events of system streams whatever their
// filter, in a child process (this test binary), and checks that the
// suite fails, saying so: no system stream was appended to while a
// subscription waited, so such a store passed, and a Durable subscription
// got the snapshots and checkpoints saved once it caught up, its own
// included.
func TestStoreFailsSystemLeak(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_SYSTEMLEAK_CHILD=1", "^TestStoreFailsSystemLeakChild$/^(Subscribe|SubscribeSwitchOver)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsSystemLeakChild/Subscribe ",
		"from start: Subscribe(",
		"from end: Subscribe(",
		"--- PASS: TestStoreFailsSystemLeakChild/SubscribeSwitchOver ",
	} {
		require.Contains(t, string(out), want)
	}
	require.NotContains(t, string(out), "system prefix: Subscribe(")
}

// TestStoreFailsSystemLeakChild is run by TestStoreFailsSystemLeak.
func TestStoreFailsSystemLeakChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_SYSTEMLEAK_CHILD", "TestStoreFailsSystemLeak", func(s eventbus.Store) eventbus.Store { return systemLeak{s} })
}

// visibleReplay is a store that looks for a retried batch among the events
// that a read of its stream shows, as a store might that finds the
// committed events of a stream by a query that applies MaxCount: once
// MaxCount hides some of the batch, the retry fails, with
// ErrPartialDuplicate or, if it hides all, a *WrongExpectedVersionError, or
// for Any and StreamExists writes the hidden events again.
type visibleReplay struct{ eventbus.Store }

// Append passes on an append none of whose events MaxCount hides.
func (s visibleReplay) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	info, err := s.StreamInfo(ctx, stream)
	if err != nil || info.Metadata.MaxCount == 0 || !info.Exists {
		return s.Store.Append(ctx, stream, expected, events...)
	}
	shown := map[eventbus.ID]bool{}
	for e, err := range s.ReadStream(ctx, stream, nil) {
		if err != nil {
			return eventbus.AppendResult{}, err
		}
		shown[e.ID] = true
	}
	hidden, seen := 0, 0
	for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: stream}}) {
		if err != nil {
			return eventbus.AppendResult{}, err
		}
		if e.Stream != stream || !slices.ContainsFunc(events, func(d eventbus.EventData) bool { return d.ID == e.ID }) {
			continue
		}
		if seen++; !shown[e.ID] {
			hidden++
		}
	}
	switch {
	case hidden == 0:
		return s.Store.Append(ctx, stream, expected, events...)
	case seen > hidden:
		return eventbus.AppendResult{}, fmt.Errorf("%w: stream %q", eventbus.ErrPartialDuplicate, stream)
	case expected == eventbus.Any || expected == eventbus.StreamExists:
		again := slices.Clone(events)
		for i := range again {
			again[i].ID = eventbus.NewID()
		}
		return s.Store.Append(ctx, stream, expected, again...)
	}
	return eventbus.AppendResult{}, &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected, Actual: eventbus.Exact(info.Revision)}
}

// TestStoreFailsVisibleReplay runs TestStore against a store that looks
// for a retried batch among the events its stream shows, in a child
// process (this test binary), and checks that the suite fails, saying so:
// no retried batch was hidden by MaxCount, so such a store passed, and a
// command retried on a stream with MaxCount (as an Aggregate's may have)
// failed, or wrote its events twice.
func TestStoreFailsVisibleReplay(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_VISIBLEREPLAY_CHILD=1", "^TestStoreFailsVisibleReplayChild$/^(Idempotence|MaxCount)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsVisibleReplayChild/Idempotence/NoStream_hidden_by_MaxCount ",
		"retried Append(no stream) = eventbus: events partly committed already",
		"--- FAIL: TestStoreFailsVisibleReplayChild/Idempotence/Any_hidden_by_MaxCount ",
		"retried Append(any) = {Revision:8 Position:8}, want the first result {Revision:3 Position:3}",
		"--- PASS: TestStoreFailsVisibleReplayChild/Idempotence/NoStream ",
		"--- PASS: TestStoreFailsVisibleReplayChild/MaxCount ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsVisibleReplayChild is run by TestStoreFailsVisibleReplay.
func TestStoreFailsVisibleReplayChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_VISIBLEREPLAY_CHILD", "TestStoreFailsVisibleReplay", func(s eventbus.Store) eventbus.Store { return visibleReplay{s} })
}

// failingChild runs this test binary again with the environment variable
// env ("NAME=value") set, running the tests that match run, with the
// further flags given, and wants them to fail without a panic: it returns
// their output.
func failingChild(t *testing.T, env, run string, flags ...string) []byte {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=" + run, "-test.count=1", "-test.shuffle=off"}, flags...)...)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child test fails:\n%s", out)
	require.NotContains(t, string(out), "panic:")
	return out
}

// wrongStore runs TestStore over a MemoryStore wrapped by wrap, a store
// that breaks the Store contract, when the environment variable env is set:
// in the child process that the test parent runs with failingChild.
func wrongStore(t *testing.T, env, parent string, wrap func(eventbus.Store) eventbus.Store) {
	if os.Getenv(env) == "" {
		t.Skip("run by " + parent)
	}
	eventbustest.TestStore(t, func(t *testing.T) eventbus.Store {
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		return wrap(s)
	})
}

// stampEach is a store that stamps each event with the clock's reading as
// it writes it, a microsecond per position later than the one before, as
// a store over SQL might (a column defaulting to clock_timestamp()), where
// the Store contract gives the events of one append one Time.
type stampEach struct{ eventbus.Store }

// ReadStream returns the read of the store it wraps, each event stamped
// as it was written.
func (s stampEach) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return stamped(s.Store.ReadStream(ctx, stream, opts))
}

// ReadAll returns the read of the store it wraps, each event stamped as
// it was written.
func (s stampEach) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return stamped(s.Store.ReadAll(ctx, opts))
}

// stamped returns seq with each event's Time moved on by a microsecond
// per position.
func stamped(seq iter.Seq2[eventbus.RecordedEvent, error]) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range seq {
			e.Time = e.Time.Add(time.Duration(e.Position) * time.Microsecond)
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsStampEach runs TestStore against a store that gives each
// event of an append its own Time, in a child process (this test binary),
// and checks that the suite fails, saying so: no test compared the Times
// of one append, so such a store passed, and a caller grouping events by
// their commit, or a MaxAge or retention boundary, split an atomic append.
func TestStoreFailsStampEach(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_STAMPEACH_CHILD=1", "^TestStoreFailsStampEachChild$/^(AppendAndRead|AppendMulti|Delete)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsStampEachChild/AppendAndRead ",
		"the events of one Append have Times",
		"--- FAIL: TestStoreFailsStampEachChild/AppendMulti ",
		"the events of one AppendMulti have Times",
		"--- PASS: TestStoreFailsStampEachChild/Delete ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsStampEachChild is run by TestStoreFailsStampEach.
func TestStoreFailsStampEachChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_STAMPEACH_CHILD", "TestStoreFailsStampEach", func(s eventbus.Store) eventbus.Store { return stampEach{s} })
}

// wholeRetry is a store that replays an AppendMulti only when it is
// retried whole: a part already committed beside a new one is appended
// as a new one, where the Store contract replays each part as an Append
// (a retried part of Exact then fails its expected revision, one of Any
// is written twice).
type wholeRetry struct{ eventbus.Store }

// AppendMulti appends to the store it wraps, giving the events of the
// parts already committed new IDs when some part is not.
func (s wholeRetry) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	again := slices.Clone(appends)
	retried := 0
	for i, a := range appends {
		if len(a.Events) == 0 {
			continue
		}
		for e, err := range s.Store.ReadStream(ctx, a.Stream, nil) {
			if err != nil || e.ID != a.Events[0].ID {
				continue
			}
			retried++
			again[i].Events = slices.Clone(a.Events)
			for j := range again[i].Events {
				again[i].Events[j].ID = eventbus.NewID()
			}
			break
		}
	}
	if retried == 0 || retried == len(appends) {
		return s.Store.AppendMulti(ctx, appends...)
	}
	return s.Store.AppendMulti(ctx, again...)
}

// TestStoreFailsWholeRetry runs TestStore against a store that replays an
// AppendMulti only when all of its parts are committed already, in a child
// process (this test binary), and checks that the suite fails, saying so:
// the suite retried AppendMulti only whole, so such a store passed, and a
// caller retrying a failed AppendMulti with one more part (a new command's
// events beside those of one it may have committed) got a
// *WrongExpectedVersionError or a part written twice.
func TestStoreFailsWholeRetry(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_WHOLERETRY_CHILD=1", "^TestStoreFailsWholeRetryChild$/^(AppendMulti|Idempotence)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsWholeRetryChild/AppendMulti ",
		`AppendMulti of a retried part of a and a new one of d = eventbus: stream "a": expected revision 0, actual 2, want success`,
		"--- PASS: TestStoreFailsWholeRetryChild/Idempotence/Any ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsWholeRetryChild is run by TestStoreFailsWholeRetry.
func TestStoreFailsWholeRetryChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_WHOLERETRY_CHILD", "TestStoreFailsWholeRetry", func(s eventbus.Store) eventbus.Store { return wholeRetry{s} })
}

// sharedMulti is a store whose AppendMulti keeps the Data and Metadata of
// the events it is given, not copies, as a store that hands the caller's
// slices to a log it writes later might, where the Store contract keeps a
// copy: a caller that reuses its buffers changes the events stored.
type sharedMulti struct {
	eventbus.Store
	mu   sync.Mutex
	kept map[eventbus.ID]eventbus.EventData // the events AppendMulti was given
}

// AppendMulti appends to the store it wraps, keeping the events given.
func (s *sharedMulti) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	res, err := s.Store.AppendMulti(ctx, appends...)
	if err == nil {
		s.mu.Lock()
		for _, a := range appends {
			for _, e := range a.Events {
				s.kept[e.ID] = e
			}
		}
		s.mu.Unlock()
	}
	return res, err
}

// ReadStream returns the read of the store it wraps, with the Data and
// Metadata that AppendMulti was given.
func (s *sharedMulti) ReadStream(ctx context.Context, stream string, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range s.Store.ReadStream(ctx, stream, opts) {
			s.mu.Lock()
			if in, ok := s.kept[e.ID]; ok {
				e.Data, e.Metadata = in.Data, in.Metadata
			}
			s.mu.Unlock()
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestStoreFailsSharedMulti runs TestStore against a store whose
// AppendMulti keeps the events' Data and Metadata it is given, in a child
// process (this test binary), and checks that the suite fails, saying so:
// CopiesInput changed the events given to Append only, so such a store
// passed, and a caller reusing its buffers after an AppendMulti changed
// the events that every later read and subscriber got.
func TestStoreFailsSharedMulti(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_SHAREDMULTI_CHILD=1", "^TestStoreFailsSharedMultiChild$/^(CopiesInput|AppendMulti)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsSharedMultiChild/CopiesInput ",
		`after changing the event given to AppendMulti, read Data "XXXXXXXX0" and Metadata map[k:changed], want "original0" and k=v`,
		"--- PASS: TestStoreFailsSharedMultiChild/AppendMulti ",
	} {
		require.Contains(t, string(out), want)
	}
	require.NotContains(t, string(out), "after changing the event given to Append,")
}

// TestStoreFailsSharedMultiChild is run by TestStoreFailsSharedMulti.
func TestStoreFailsSharedMultiChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_SHAREDMULTI_CHILD", "TestStoreFailsSharedMulti", func(s eventbus.Store) eventbus.Store {
		return &sharedMulti{Store: s, kept: make(map[eventbus.ID]eventbus.EventData)}
	})
}

// lazyMulti is a store whose AppendMulti commits its parts one by one,
// checking the events of each as it comes to it, where the Store contract
// checks every part first: the parts before an invalid one are written,
// though the call fails with eventbus.ErrInvalid.
type lazyMulti struct{ eventbus.Store }

// AppendMulti appends to the store it wraps, and for an AppendMulti that
// it refuses as invalid (of streams named once each), appends its parts
// one by one until one fails.
func (s lazyMulti) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	res, err := s.Store.AppendMulti(ctx, appends...)
	if !errors.Is(err, eventbus.ErrInvalid) {
		return res, err
	}
	named := make(map[string]bool)
	for _, a := range appends {
		if named[a.Stream] {
			return res, err
		}
		named[a.Stream] = true
	}
	for _, a := range appends {
		if _, err := s.Store.AppendMulti(ctx, a); err != nil {
			break
		}
	}
	return res, err
}

// TestStoreFailsLazyMulti runs TestStore against a store whose
// AppendMulti commits the parts before an invalid one, in a child process
// (this test binary), and checks that the suite fails, saying so: every
// invalid AppendMulti of InvalidInput had one part, so such a store
// passed, and a caller whose AppendMulti failed with ErrInvalid had
// written some of its streams, the atomic step it asked for half done.
func TestStoreFailsLazyMulti(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_LAZYMULTI_CHILD=1", "^TestStoreFailsLazyMultiChild$/^(InvalidInput|AppendMulti)$", "-test.v")
	for _, want := range []string{
		"--- FAIL: TestStoreFailsLazyMultiChild/InvalidInput/zero_ID ",
		"AppendMulti of a valid part and an invalid one wrote the valid part",
		"--- PASS: TestStoreFailsLazyMultiChild/AppendMulti ",
	} {
		require.Contains(t, string(out), want)
	}
}

// TestStoreFailsLazyMultiChild is run by TestStoreFailsLazyMulti.
func TestStoreFailsLazyMultiChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_LAZYMULTI_CHILD", "TestStoreFailsLazyMulti", func(s eventbus.Store) eventbus.Store { return lazyMulti{s} })
}

// trimmedAll is a store whose ReadAll and Subscribe hide the events that
// their stream's MaxCount hides, as a store might that drops the rows past
// a stream's MaxCount when it appends (an eager scavenge), where the Store
// contract has ReadAll and Subscribe see every committed event.
type trimmedAll struct{ eventbus.Store }

func (s trimmedAll) hide(ctx context.Context, seq iter.Seq2[eventbus.RecordedEvent, error]) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		for e, err := range seq {
			if err == nil {
				if info, ierr := s.Store.StreamInfo(ctx, e.Stream); ierr == nil {
					if mc := info.Metadata.MaxCount; mc > 0 && e.Revision+mc <= info.Revision {
						continue
					}
				}
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

func (s trimmedAll) ReadAll(ctx context.Context, opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.hide(ctx, s.Store.ReadAll(ctx, opts))
}

func (s trimmedAll) Subscribe(ctx context.Context, opts *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return s.hide(ctx, s.Store.Subscribe(ctx, opts))
}

// TestStoreFailsTrimmedAll runs TestStore against a store whose ReadAll and
// Subscribe hide the events that MaxCount hides from their stream, and
// wants the suite to fail.
func TestStoreFailsTrimmedAll(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_TRIMMEDALL_CHILD=1", "^TestStoreFailsTrimmedAllChild$/^(MaxCount|ReadAll)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsTrimmedAllChild/MaxCount ")
	require.Contains(t, string(out), "ReadAll with MaxCount 2 = ")
	require.Contains(t, string(out), "Subscribe with MaxCount 2 = ")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsTrimmedAllChild/ReadAll ")
}

// TestStoreFailsTrimmedAllChild is run by TestStoreFailsTrimmedAll.
func TestStoreFailsTrimmedAllChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_TRIMMEDALL_CHILD", "TestStoreFailsTrimmedAll", func(s eventbus.Store) eventbus.Store { return trimmedAll{s} })
}

// dedupeMulti is a store whose AppendMulti drops the events of a part that
// are committed already and appends the others, as a store over SQL might
// whose insert skips the rows of an event ID it holds (ON CONFLICT DO
// NOTHING), where the Store contract fails such an append with
// ErrPartialDuplicate: a part partly committed is written in part again.
type dedupeMulti struct{ eventbus.Store }

func (s dedupeMulti) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	res, err := s.Store.AppendMulti(ctx, appends...)
	if !errors.Is(err, eventbus.ErrPartialDuplicate) {
		return res, err
	}
	again := slices.Clone(appends)
	for i, a := range appends {
		committed := make(map[eventbus.ID]bool)
		for e, err := range s.Store.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: a.Stream}}) {
			if err != nil {
				return nil, err
			}
			if e.Stream == a.Stream {
				committed[e.ID] = true
			}
		}
		var keep []eventbus.EventData
		for _, e := range a.Events {
			if !committed[e.ID] {
				keep = append(keep, e)
			}
		}
		if len(keep) > 0 {
			again[i].Events = keep
		}
	}
	return s.Store.AppendMulti(ctx, again...)
}

// TestStoreFailsDedupeMulti runs TestStore against a store whose
// AppendMulti writes the new events of a part partly committed already,
// and wants the suite to fail.
func TestStoreFailsDedupeMulti(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_DEDUPEMULTI_CHILD=1", "^TestStoreFailsDedupeMultiChild$/^(Idempotence|AppendMulti)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsDedupeMultiChild/Idempotence/partial_overlap ")
	require.Contains(t, string(out), "overlapping a committed batch = <nil>, want ErrPartialDuplicate")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsDedupeMultiChild/AppendMulti ")
}

// TestStoreFailsDedupeMultiChild is run by TestStoreFailsDedupeMulti.
func TestStoreFailsDedupeMultiChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_DEDUPEMULTI_CHILD", "TestStoreFailsDedupeMulti", func(s eventbus.Store) eventbus.Store { return dedupeMulti{s} })
}

// versionFirst is a store that checks a stream's expected revision before
// whether it is tombstoned, taking a tombstoned stream for one that does
// not exist: a write to it expecting StreamExists or an exact revision
// fails with a *WrongExpectedVersionError, where the Store contract fails
// every write to a tombstoned stream with ErrStreamDeleted.
type versionFirst struct{ eventbus.Store }

func (s versionFirst) check(ctx context.Context, stream string, expected eventbus.ExpectedRevision) error {
	if expected == eventbus.Any || expected == eventbus.NoStream {
		return nil
	}
	info, err := s.Store.StreamInfo(ctx, stream)
	if err != nil || !info.Tombstoned {
		return nil
	}
	return &eventbus.WrongExpectedVersionError{Stream: stream, Expected: expected, Actual: eventbus.NoStream}
}

func (s versionFirst) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if err := s.check(ctx, stream, expected); err != nil {
		return eventbus.AppendResult{}, err
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

func (s versionFirst) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	for _, a := range appends {
		if err := s.check(ctx, a.Stream, a.Expected); err != nil {
			return nil, err
		}
	}
	return s.Store.AppendMulti(ctx, appends...)
}

func (s versionFirst) Delete(ctx context.Context, stream string, expected eventbus.ExpectedRevision) error {
	if err := s.check(ctx, stream, expected); err != nil {
		return err
	}
	return s.Store.Delete(ctx, stream, expected)
}

func (s versionFirst) Tombstone(ctx context.Context, stream string, expected eventbus.ExpectedRevision) error {
	if err := s.check(ctx, stream, expected); err != nil {
		return err
	}
	return s.Store.Tombstone(ctx, stream, expected)
}

// TestStoreFailsVersionFirst runs TestStore against a store that fails a
// write to a tombstoned stream with a *WrongExpectedVersionError when it
// expects StreamExists or an exact revision, and wants the suite to fail.
func TestStoreFailsVersionFirst(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_VERSIONFIRST_CHILD=1", "^TestStoreFailsVersionFirstChild$/^(Tombstone|ExpectedRevision)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsVersionFirstChild/Tombstone ")
	require.Contains(t, string(out), `Append("s", stream exists) after Tombstone = eventbus: stream "s": expected revision stream exists, actual no stream, want ErrStreamDeleted`)
	require.Contains(t, string(out), "--- PASS: TestStoreFailsVersionFirstChild/ExpectedRevision ")
}

// TestStoreFailsVersionFirstChild is run by TestStoreFailsVersionFirst.
func TestStoreFailsVersionFirstChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_VERSIONFIRST_CHILD", "TestStoreFailsVersionFirst", func(s eventbus.Store) eventbus.Store { return versionFirst{s} })
}

// shortTypes is a store that refuses event types longer than 64 bytes, as
// a store over SQL might whose type column is a VARCHAR(64), where the
// Store contract (EventData.Type) takes types of up to 249.
type shortTypes struct{ eventbus.Store }

func (s shortTypes) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	for _, e := range events {
		if len(e.Type) > 64 {
			return eventbus.AppendResult{}, fmt.Errorf("%w: type %q longer than 64 bytes", eventbus.ErrInvalid, e.Type)
		}
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

func (s shortTypes) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	for _, a := range appends {
		for _, e := range a.Events {
			if len(e.Type) > 64 {
				return nil, fmt.Errorf("%w: type %q longer than 64 bytes", eventbus.ErrInvalid, e.Type)
			}
		}
	}
	return s.Store.AppendMulti(ctx, appends...)
}

// TestStoreFailsShortTypes runs TestStore against a store that refuses
// event types of 65 to 249 bytes, and wants the suite to fail.
func TestStoreFailsShortTypes(t *testing.T) {
	out := failingChild(t, "EVENTBUSTEST_SHORTTYPES_CHILD=1", "^TestStoreFailsShortTypesChild$/^(AppendAndRead|InvalidInput)$", "-test.v")
	require.Contains(t, string(out), "--- FAIL: TestStoreFailsShortTypesChild/AppendAndRead ")
	require.Contains(t, string(out), "longer than 64 bytes")
	require.Contains(t, string(out), "--- PASS: TestStoreFailsShortTypesChild/InvalidInput ")
}

// TestStoreFailsShortTypesChild is run by TestStoreFailsShortTypes.
func TestStoreFailsShortTypesChild(t *testing.T) {
	wrongStore(t, "EVENTBUSTEST_SHORTTYPES_CHILD", "TestStoreFailsShortTypes", func(s eventbus.Store) eventbus.Store { return shortTypes{s} })
}
