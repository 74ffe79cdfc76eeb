package eventbus

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"
)

// Metrics is a snapshot of a bus's counters and latencies, from
// [Bus.Metrics]. Async subscriptions always keep their counters; Sync ones,
// and the histograms, only when Options.Metrics is set, since timing costs a
// clock read per attempt.
//
// To export it, call Bus.Metrics from a Prometheus collector or an
// OpenTelemetry observable callback, or publish it with expvar:
//
//	expvar.Publish("eventbus", expvar.Func(func() any { return bus.Metrics() }))
type Metrics struct {
	// Topics has one entry per topic, sorted by name.
	Topics []TopicMetrics
	// Subscriptions has one entry per live subscription, sorted by topic
	// and name. A [Durable]'s entry counts all its runs on the bus (see
	// SubscriptionMetrics).
	Subscriptions []SubscriptionMetrics
	// DeadLetters counts the dead-letter queue's entries, evictions and
	// sink errors.
	DeadLetters DeadLetterMetrics
}

// TopicMetrics counts the events of one topic.
type TopicMetrics struct {
	// Topic is the topic's name.
	Topic string
	// Published counts the events published, with Options.Metrics: those
	// that Publish, TryPublish and PublishBatch queued (Async mode) or
	// handed to the handlers (Sync mode, where a Publish that returns a
	// handler's error counts too).
	Published uint64
}

// SubscriptionMetrics counts what one subscription did. A subscription's
// events are each finished exactly once, as Handled, DeadLettered or
// Duplicates; Failed counts failed attempts, Retried the attempts after the
// first.
//
// The counters and histograms only grow while the subscription lives, and
// those of a [Durable] go on across its runs on the bus: a Rebuild's
// replay adds to them, as does a run resumed on the same bus after Stop
// (the entry is gone in between, while no run is live). A Subscription
// that takes the name of one unsubscribed on its topic starts from zero,
// which an exporter of counters (Prometheus's) sees as a reset.
//
// In Async mode a worker takes all that its queue holds at once, and hands
// over its counts and timings when it takes the next events, so that
// counting costs it no lock per event: a snapshot does not yet count what
// a worker did in the events it took last, which it counts as Pending, and
// a handler that hangs holds back the counts of the events taken with it
// (up to QueueSize and those queued past it). After [Bus.Flush] they are
// all counted. In Sync mode a publish hands over the counts and timing of
// a failed attempt before it waits for the retry, and the rest once its
// handlers are done with the event.
type SubscriptionMetrics struct {
	// Topic and Subscription name the subscription.
	Topic, Subscription string
	// Queued counts events queued for the subscription (Async mode) or run
	// by Publish (Sync mode).
	Queued uint64
	// Handled counts events whose handler succeeded.
	Handled uint64
	// Failed counts failed attempts, Retried the attempts after the first.
	Failed, Retried uint64
	// DeadLettered counts events given up on.
	DeadLettered uint64
	// Duplicates counts events the Idempotency middleware skipped.
	Duplicates uint64
	// Depth is the number of events in the queues, not yet taken by a
	// worker: it may be 0 while events that a worker took wait behind a
	// slow handler. Pending is the number queued and not yet finished
	// (taken, being handled, waiting for a retry or behind one of their
	// key), as of the counts handed over. Both stay 0 in Sync mode, where
	// a publish counts its event once its handlers are done with it.
	Depth, Pending uint64
	// HandleTime is the time each attempt spent in the middleware and
	// handler; for a batch handler, each event of a batch takes an equal
	// share of the batch's time, so that Sum is the time the handler ran.
	// Latency is the time from publish to the event's final outcome; for a
	// [Durable] subscription, from the event's commit, its
	// [RecordedEvent].Time, by the wall clock: an event whose Time is ahead
	// of the wall clock (see RecordedEvent.Time) counts 0. Both fill only
	// with Options.Metrics.
	HandleTime, Latency Histogram
	// Uncounted is set for a Sync-mode subscription of a bus without
	// Options.Metrics: its counters stay 0, whatever it handles (see
	// Options.Metrics), so zeros there do not mean that nothing failed.
	Uncounted bool
}

// DeadLetterMetrics counts the dead-letter queue.
type DeadLetterMetrics struct {
	// Held is the number of entries; Evicted the ones dropped to make room;
	// SinkErrors the failed calls of Options.DeadLetterSink.
	Held, Evicted, SinkErrors uint64
}

// histogramBuckets is the number of buckets in a Histogram.
const histogramBuckets = 28

// Histogram counts durations in buckets whose upper bounds double from
// 256ns: bucket i counts durations below 256ns<<i and at least the bound of
// bucket i-1 (each duration in one bucket only: unlike Prometheus's, the
// counts are not cumulative), and the last bucket everything longer.
type Histogram struct {
	// Count is the number of durations counted.
	Count uint64
	// Sum is their total; it stops at the longest Duration rather than
	// wrapping around.
	Sum time.Duration
	// Buckets holds the count of each of the 28 buckets; see BucketBound.
	Buckets [histogramBuckets]uint64
}

// BucketBound returns the upper bound of bucket i, or 0 for an i outside
// the buckets (below 0, or from len(Buckets) on), which no bucket has. The
// last bucket has no upper bound: it counts every duration from the bound
// of the one before it (about 17 s) on, so that a duration of a minute is
// counted there, past its BucketBound (about 34 s). Exported as Prometheus
// buckets, whose counts are cumulative, it is the one whose bound is +Inf.
func (Histogram) BucketBound(i int) time.Duration {
	if i < 0 || i >= histogramBuckets {
		return 0
	}
	return 256 << i
}

// observe counts d, or 0 for a negative d: an event stamped by a clock
// ahead of the bus's (a store's, or the wall clock before it was set back)
// has no latency yet, not a negative one, which would take from Sum.
func (h *Histogram) observe(d time.Duration) {
	d = max(d, 0)
	i := min(bits.Len64(uint64(d)>>8), histogramBuckets-1)
	h.Buckets[i]++
	h.Count++
	h.Sum = addSum(h.Sum, d)
}

// addSum returns a+b, two sums of durations of at least 0, or the longest
// Duration if that would overflow.
func addSum(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func (h *Histogram) add(o *Histogram) {
	h.Count += o.Count
	h.Sum = addSum(h.Sum, o.Sum)
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1; q outside that range is clamped to it, and NaN reads as 1) of the
// observations, or 0 without any: the bucket of the smallest observation
// with at least a fraction q of them at or below it. The last bucket has
// no upper bound: for it, Quantile returns BucketBound of its index, about
// 34 s, which durations there may exceed.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	// The rank of the observation, from 1; q out of range is clamped, and
	// NaN, which no comparison holds for, takes the last.
	rank := h.Count
	if q < 1 {
		rank = min(max(uint64(math.Ceil(max(q, 0)*float64(h.Count))), 1), h.Count)
		if rank > 1 && float64(rank-1)/float64(h.Count) >= q {
			rank-- // q*Count rounded up past a whole number: 0.07*100 is 7.000000000000001
		}
	}
	var seen uint64
	for i, n := range h.Buckets {
		seen += n
		if seen >= rank {
			return h.BucketBound(i)
		}
	}
	return h.BucketBound(histogramBuckets - 1)
}

// counters is what a worker, or one Sync-mode publish, counts. A worker
// keeps its own and copies them into its queue under the queue's lock at
// each batch, so counting costs no atomic operation.
type counters struct {
	tally
	times *timings // nil unless Options.Metrics
	clock *clock   // set with times
	// stored is set for a durable subscription's worker, whose events were
	// stamped by the store, not by the bus's clock.
	stored bool
	// shared, if not nil, is the Sync-mode subscription whose timings
	// times points to, shared with other publishes, under its lock. held is
	// then what the last attempt adds to them (and a dead letter's
	// latency), which goes in with the counts, so that a snapshot sees
	// neither without the other and a publish takes the lock once, and
	// once more before each wait for a retry (see syncCounters.flush).
	shared *syncCounters
	held   attemptTiming
}

// attemptTiming is what an attempt adds to the histograms.
type attemptTiming struct {
	handle, latency time.Duration
	finished        bool // latency is set: the event was handled, or given up
	set             bool // handle is set: an attempt's timing is held
}

// timings are the latency histograms of Options.Metrics.
type timings struct {
	handleTime, latency Histogram
}

func (t *timings) add(o *timings) {
	t.handleTime.add(&o.handleTime)
	t.latency.add(&o.latency)
}

func (t *timings) record(a *attemptTiming) {
	if a.set {
		t.handleTime.observe(a.handle)
	}
	if a.finished {
		t.latency.observe(a.latency)
	}
}

// attempt records the outcome of one attempt that started at start and
// ended at end, readings of clock.elapsed (both zero when not timed). The
// latency of a failed attempt is recorded when the event is dead-lettered.
func (c *counters) attempt(attempt int, dup bool, err error, e *Header, start, end time.Duration) {
	switch {
	case err == nil && !dup:
		c.handled++
	case err != nil:
		c.failed++
	default:
		c.duplicates++
	}
	if attempt > 1 {
		c.retried++
	}
	if c.times != nil {
		c.timeAttempt(err, e, start, end)
	}
}

// timeAttempt records the timings of an attempt.
func (c *counters) timeAttempt(err error, e *Header, start, end time.Duration) {
	a := attemptTiming{handle: end - start, finished: err == nil, set: true}
	if a.finished {
		a.latency = c.clock.latency(e.Time, !c.stored, end)
	}
	if c.shared == nil {
		c.times.record(&a)
		return
	}
	c.held = a
}

// deadLetter records that an event published at e.Time is given up now:
// its latency runs to now, not to its last failure, which may lie long
// before when a stop or the publisher's context cut a retry's wait short.
func (c *counters) deadLetter(e *Header) {
	c.deadLettered++
	if c.times == nil {
		return
	}
	// Measured outside the Sync counters' lock: Options.Clock is user code.
	l := c.clock.latency(e.Time, !c.stored, time.Since(c.clock.start))
	if c.shared == nil {
		c.times.latency.observe(l)
		return
	}
	// The last attempt's timing is held, unless it went in before a wait
	// for a retry that the publisher's context cut short: the latency goes
	// in with it, if held, and the count.
	c.held.latency, c.held.finished = l, true
}

// tally is what counters count.
type tally struct {
	queued, handled, failed, retried, deadLettered, duplicates uint64
}

// copyTo sets dst's counts and timings to c's, allocating dst's timings if
// need be. It copies nothing else: a worker calls it at every take, and the
// counts hold no pointers, so copying them needs no write barrier.
func (c *counters) copyTo(dst *counters) {
	dst.tally = c.tally
	if c.times != nil {
		if dst.times == nil {
			dst.times = new(timings)
		}
		*dst.times = *c.times
	}
}

// add adds o to c, which must have timings if o has.
func (c *counters) add(o *counters) {
	c.addCounts(o)
	if o.times != nil {
		c.times.add(o.times)
	}
}

func (c *counters) addCounts(o *counters) {
	c.queued += o.queued
	c.handled += o.handled
	c.failed += o.failed
	c.retried += o.retried
	c.deadLettered += o.deadLettered
	c.duplicates += o.duplicates
}

// syncCounters are the counters of a Sync-mode subscription, whose handlers
// run in publishers' goroutines, under a lock.
type syncCounters struct {
	mu     sync.Mutex
	counts counters // without timings
	times  timings
}

// flush adds the counts and the held timing of a publish's counters c so
// far, before it waits for a retry, and takes them out of c: a snapshot
// taken during the wait, which may be long, sees the failed attempt. The
// event is not finished yet, so c keeps its queued count.
func (s *syncCounters) flush(c *counters) {
	queued := c.queued
	c.queued = 0
	s.add(c)
	*c = counters{tally: tally{queued: queued}, times: c.times, clock: c.clock, stored: c.stored, shared: c.shared}
}

// add adds the counts and the held timing of one publish's counters c.
func (s *syncCounters) add(c *counters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.held.set || c.held.finished {
		s.times.record(&c.held)
	}
	s.counts.addCounts(c)
}

// start returns the counters of one publish, observing into s's timings
// if timed, the bus's clock, is not nil.
func (s *syncCounters) start(timed *clock) counters {
	c := counters{tally: tally{queued: 1}}
	if timed != nil {
		c.times, c.shared, c.clock = &s.times, s, timed
	}
	return c
}

func (s *syncCounters) collect(c *counters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.addCounts(&s.counts)
	c.times.add(&s.times)
}

// Metrics returns a snapshot of the bus's counters and latencies. It is
// safe to call at any time, also after Shutdown (subscriptions then show
// their final counts; unsubscribed ones, and stopped Durables, no longer
// appear). For a Bus not made by [New] it returns the zero Metrics.
func (b *Bus) Metrics() Metrics {
	var m Metrics
	if !b.made() {
		return m
	}
	// The subscriptions and the counts of the durable runs that ended are
	// read in one step, as unregister moves a run's counts from the one to
	// the other: a run is counted once.
	b.mu.Lock()
	for name, t := range b.topics {
		m.Topics = append(m.Topics, TopicMetrics{Topic: name, Published: t.(published).published()})
	}
	subs := make([]*Subscription, 0, len(b.subs))
	counts := make([]counters, 0, len(b.subs))
	for s := range b.subs {
		c := counters{times: new(timings)}
		if d := b.durables[s.topic]; d != nil {
			c.add(&d.ended)
		}
		subs = append(subs, s)
		counts = append(counts, c)
	}
	b.mu.Unlock()
	for i, s := range subs {
		sm := SubscriptionMetrics{Topic: s.topic, Subscription: s.name}
		c := &counts[i]
		sm.Depth, sm.Pending = s.impl.collect(c)
		sm.Queued, sm.Handled, sm.Failed, sm.Retried = c.queued, c.handled, c.failed, c.retried
		sm.DeadLettered, sm.Duplicates = c.deadLettered, c.duplicates
		sm.HandleTime, sm.Latency = c.times.handleTime, c.times.latency
		sm.Uncounted = s.impl.uncounted()
		m.Subscriptions = append(m.Subscriptions, sm)
	}
	slices.SortFunc(m.Topics, func(a, b TopicMetrics) int { return cmp.Compare(a.Topic, b.Topic) })
	slices.SortFunc(m.Subscriptions, func(a, b SubscriptionMetrics) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Subscription, b.Subscription))
	})
	held := b.dlq.Len()
	evicted, sinkErrs := b.dlq.Evicted()
	m.DeadLetters = DeadLetterMetrics{Held: uint64(held), Evicted: evicted, SinkErrors: sinkErrs}
	return m
}

// published is the untyped view of a Topic that Metrics needs.
type published interface{ published() uint64 }
