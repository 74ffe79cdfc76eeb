// Package eventbustest provides helpers for testing code built on package
// eventbus, the way net/http/httptest does for net/http: the bus becomes a
// fake broker that runs inside the test, with no container and no sleep.
//
// # A bus for a test
//
// [NewBus] makes a bus that is shut down when the test ends, with one worker
// per subscription (so each subscription sees events in publish order, but
// for one waiting for a retry, which events of other keys pass) and event
// IDs from a [Sequence] (so they are the same on every run). For event
// times that are the same on every run too, pass a [Clock]'s Now method as
// eventbus.Options.Clock, or run the test inside a testing/synctest bubble,
// whose clock is fake. Events read from a store (a StoreTopic's, a durable
// subscription's) carry the store's commit time, by the wall clock, which
// only the bubble makes the same on every run.
//
// # Recording and checking events
//
// [Record] subscribes a [Recorder] to a topic, and [RecordStoreTopic] to
// a StoreTopic, recording the events committed to its store as they were
// published. Its checks read like the test's intent and fail it with a
// list of what was recorded, and of the bus's dead letters if it has any:
// [Recorder.Want] (exactly these payloads, in order; none with no argument)
// and [Recorder.WantEvents] (headers too; the generated ID, time,
// correlation ID, causation ID and store position only where want sets
// them) with a [cmp.Diff] of want and got too, [Recorder.WantContains]
// (these among others) with the payloads missing, and [Recorder.WantLen].
// Options of cmp given to Record apply to every check, for payload fields
// that a test cannot know, such as a time the code under test sets.
//
// # Waiting without sleeping
//
// [eventbus.Bus.Flush] waits until everything published so far is handled.
// It does not wait for the events appended to a store (by a StoreTopic too)
// that a durable subscription has not read yet: [WaitDurable] does, for
// every event committed so far, with no store position to know, so call it
// before checking the effects of such a subscription, its metrics or its
// dead letters ([WantMetrics], [WantDeadLetters]);
// [eventbus.Durable.WaitFor] waits for one position. The checks of a
// StoreTopic's recorder wait by themselves for the events committed to the
// topic. For what Flush does not cover on a topic, such as events that
// handlers publish, [Recorder.Wait] blocks until a condition over the
// recorded events holds.
// It is woken by every recorded event, never by polling, so it takes no time
// when the condition already holds. Its deadline, 10 seconds unless its
// context has one, is fake time inside a testing/synctest bubble: when
// nothing else can happen before it, Wait fails at once, with a message
// naming the subscriptions with events not yet finished (a retry waiting for
// its backoff, say) and listing what was recorded. On a bus that has
// stopped, where no event can come any more, it fails at once too.
//
// # Faults, dead letters and metrics
//
// [Inject] wraps a handler with a [Fault]: failing the first attempts at
// each event, failing or panicking for one key (of a StoreTopic's
// subscriber, the key that its recorder shows, or the stream that the
// handler sees), or taking time. Then
// [WantDeadLetters] checks what the dead-letter queue holds, and
// [WantMetrics] what a subscription counted.
//
// # Your own store
//
// [TestStore] runs the conformance suite of [eventbus.Store] against a store
// of yours, so that it keeps the same contract as the memory and file
// stores.
//
// # Goroutines
//
// No goroutine of a bus is left once NewBus has shut it down, unless a
// handler ignores its cancelled context, or a DeadLetterSink blocks: NewBus
// then fails the test, naming the culprit, instead of waiting for it
// forever. To check the rest, run the test inside [testing/synctest.Test]:
// it fails a test that leaves goroutines blocked, and makes retries, backoff
// and timeouts run on its fake clock, without real waiting.
//
// # Failures
//
// Checks report to the testing.TB they were given with Errorf and return
// whether they passed, so that a test can stop early:
//
//	if !rec.Want(UserCreated{Name: "Aiko"}) {
//		t.FailNow()
//	}
//
// Only setup that cannot go on (NewBus, Record) calls Fatalf; so does
// TestStore, a suite rather than a check, in each of its subtests whose
// store failed a step that later steps need. A Recorder's
// checks report to the test given to Record, also when a subtest calls
// them, which then passes while its parent fails: where subtests check,
// call Record in each.
package eventbustest
