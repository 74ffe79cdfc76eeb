package eventbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// DurableOptions configures a durable subscription. The zero value (or nil)
// takes the defaults.
type DurableOptions struct {
	// Filter selects the events to handle; its zero value selects every
	// event outside system streams. A filter without Types selects, for a
	// handler of one concrete payload type, only that type's events, the
	// only ones that decode to it. The streams of a store's bookkeeping
	// are never handled, even by a filter that selects them (StreamPrefix
	// "$", say): the checkpoints (streams starting with "$checkpoint-": of
	// durable subscriptions, and of other consumers of the store, such as
	// the relays of the Kafka bridge) and the records of
	// [NewStoreProcessed] (starting with "$processed-"), the subscription's
	// own and every other consumer's, since handling each would make
	// another, for ever: two consumers that selected them would hand them
	// back and forth. The checkpoint moves over them as over the events the
	// filter skips.
	//
	// The checkpoint is a position in the store, whatever the filter: a run
	// with another filter than the last one's resumes from it, so the new
	// filter applies from there on, and the events before it that the new
	// filter selects and the old one skipped are never handled.
	// [Durable.Rebuild] handles them.
	Filter Filter
	// From is where the subscription starts when no checkpoint of its name
	// is saved, the first time it runs: the store's first event (zero), a
	// position, or End, after the last event in the store then, for a
	// consumer whose effects must not happen for the store's history (a
	// process manager added to a running system; Kafka's
	// auto.offset.reset=latest). That start is saved as its checkpoint at
	// once, so a restart resumes there; a saved checkpoint always wins,
	// and [Durable.Rebuild] starts from the first event whatever From says.
	// A position past the store's end (the position its next event will
	// take) would pass over the events appended up to it without handling
	// them: [SubscribeDurable] refuses it with an error wrapping
	// [ErrInvalid], and saves nothing.
	From uint64
	// CheckpointEvery is how many finished events pass between saves of the
	// checkpoint; zero means 100. While an event still running holds the
	// checkpoint back, no save is made, and the events finished meanwhile
	// count toward the next one: it is made as soon as the checkpoint
	// moves. The checkpoint is also saved when the subscription stops. A
	// smaller number means fewer events handled again after a crash, and
	// more appends. Saves run in a goroutine of their own, so handlers
	// never wait for them, and saves due while one runs become one: a
	// store slower than the events is not asked for more.
	CheckpointEvery int
	// Subscription configures the workers, queues, middleware and retry
	// policy, as for a bus subscription. BatchSize and BatchWait serve
	// [SubscribeDurableBatch] alone, and are refused out of range as
	// Subscribe refuses them; Middleware is refused there, as by
	// [Topic.SubscribeBatch].
	Subscription SubscriptionOptions
}

// Durable is a durable subscription: a named consumer of every stream of a
// [Store] that resumes where it stopped, even in another process. Make one
// with [SubscribeDurable]; its methods are safe for concurrent use. A nil or
// zero Durable, one not made by SubscribeDurable, has no name, its
// checkpoint is 0, and its methods that return an error return one
// wrapping [ErrInvalid].
//
// # Delivery
//
// A goroutine of the bus reads the store from the checkpoint on and queues
// each event to the workers of a bus subscription, so durable subscriptions
// share the bus's machinery: middleware, retries, the dead-letter queue,
// metrics, Flush and Shutdown. Flush waits only for the events that the
// subscription has read and queued, not for those still in the store: it
// may return before an event just appended (by [StoreTopic.Publish] too)
// is read, let alone handled; [Durable.WaitFor] waits for it. The key of
// each event is its stream: events of one stream are handled one at a time
// in store order, streams in parallel.
// The handler's [Event] carries the stored event's ID, type, schema
// version, time, IDs, metadata and [Header].Position. Middleware sees the
// [RecordedEvent] as [Envelope.Payload], the stored event's type and schema
// version (before any upcast) as the Envelope's Type and SchemaVersion, as
// do the dead letters, and the topic "durable." followed by the name as
// its Topic. That topic outlives Stop, so that the name can run again on
// the bus, its counters in [Bus.Metrics] going on from where its last run
// left them: each name a bus has run costs about half a kilobyte (a
// kilobyte with Options.Metrics, for its histograms) and an entry in
// Bus.Metrics' Topics for the bus's life, so a bus should not run durable
// subscriptions of ever-new names (one per request, say).
//
// # Checkpoints
//
// Workers finish events out of order, so the checkpoint is the position
// before which every event has finished (handled, skipped as a duplicate, or
// dead-lettered): the lowest one still running holds it back. It is saved
// every CheckpointEvery events and when the subscription or the bus stops,
// in the store's system stream "$checkpoint-" followed by the name, whose
// reads show only the latest (MaxCount 1, see [StreamMetadata]; the store
// holds the older ones until its own cleanup, if any); the subscription
// never handles them itself, whatever its filter. An event abandoned
// by [Bus.Close] is not finished, though its dead letter reaches the sink
// (see [DeadLetterSink]); nor is one whose handler failed with an error
// matching [ErrClosed] once the bus began to stop, as a publish to a
// topic of the bus fails during a graceful [Bus.Shutdown], so that the
// next run handles it again and its follow-up events are not lost. A
// dead-lettered one is not delivered again (give the bus a
// [DeadLetterSink] to keep dead letters across restarts), unless the sink
// fails to keep it: the checkpoint then stays
// before it for the rest of the run (WaitFor passes it, as it does other
// dead letters), and the next run delivers it again, unless a redrive of
// it is handled or [DeadLetterQueue.Discard] removes it first. After a
// restart, the events from the checkpoint on are delivered again: delivery is
// at-least-once. The [Idempotency] middleware with a durable
// [ProcessedStore], such as [NewStoreProcessed], skips the events handled
// before, so that their effects do not happen again, but for an event
// whose handler returned when the process died, before its record was
// saved, or whose record failed to save and was not saved by a retry or
// redrive before the restart: its handler runs again. An effect
// that must happen exactly once must be idempotent itself. Idempotency
// keys events by ID unless told otherwise, and a store takes one ID in
// several streams (it deduplicates appends stream by stream): of such
// events, it handles one only, the first whose handler succeeds (not
// always the first in the store, if that one fails and waits for a retry).
// Key it by stream and ID (see [IdempotencyOptions].Key) to handle each.
//
// # Projections
//
// A durable subscription whose handler updates a read model is a
// projection: [Durable.WaitFor] gives read-your-writes (wait until the event
// just appended is in the read model), and [Durable.Rebuild] builds the read
// model again from the first event.
//
// The checkpoint is kept in the store, so the read model must last as long
// as the store does: one kept in memory starts empty in the next process,
// whose run resumes from the checkpoint and hands it none of the events
// before, without an error. Give such a read model a [Durable.Rebuild]
// once the subscription has started, with a reset that empties it.
//
// A projection sees every event committed, as [Store.Subscribe] does, not
// a stream's current contents as [Store.ReadStream] and an [Aggregate]
// do: the events of streams deleted since, soft-deleted or tombstoned,
// and those that a stream's max count or max age hides are handed out
// too, by Rebuild as well, and no event says that a stream was deleted. A
// stream written again after a soft delete goes on with the next revision,
// where an Aggregate starts its state over: its earlier life's events are
// those whose Revision is below the stream's [StreamInfo].Start. A read
// model that must forget a deleted stream learns of it from the
// application, by an event of its own appended before the delete, say.
//
// The events that a [FileStore]'s retention (RetainAge, RetainSize)
// deletes before the subscription reads them are the exception: it skips
// them without a word, whether it runs behind the store or resumes after
// a stop, and a Rebuild starts from the first event left. The saved
// checkpoint goes with its segment too, if no save came since: the next
// run then starts from 0, that is from the first event left. A
// projection that must see every event needs a retention longer than it
// may ever stay stopped, or behind.
type Durable struct {
	bus     *Bus
	store   Store
	name    string
	filter  Filter
	every   int
	topic   *Topic[RecordedEvent]
	handler Handler[RecordedEvent]      // or:
	batch   BatchHandler[RecordedEvent] // for SubscribeDurableBatch
	subOpts SubscriptionOptions
	track   *tracker

	life chan struct{} // held by Stop and Rebuild, one at a time
	run  atomic.Pointer[durableRun]
}

// durableRun is one run of a durable subscription, from its start or a
// rebuild to its stop.
type durableRun struct {
	sub      *Subscription
	cancel   context.CancelFunc // stops the tailer
	stopping chan struct{}      // closed when Stop or Rebuild takes over
	tailed   chan struct{}      // closed when the tailer has exited
	err      error              // why the tailer stopped, if not told to; read after tailed
	due      chan struct{}      // a save is due; buffered, so that workers never wait
	quit     chan struct{}      // closed to stop the saver
	quitted  chan struct{}      // closed when the saver has exited
	once     sync.Once          // the final save
	final    error
}

// maxDurableNameLen is the longest name of a durable subscription, so that
// its topic, "durable." and the name, is a valid topic name.
const maxDurableNameLen = 240

// SubscribeDurable starts the durable subscription name (1 to 240 letters,
// digits, '.', '_' and '-') on bus b over store s, from its last saved
// checkpoint (the first time, with none saved, from the store's first
// event: a subscription added to a store with a history handles all of
// it, as a projection must; one whose effects must not happen for past
// events, a process manager's, starts at the store's end, with
// DurableOptions.From), and hands the events its filter selects to h, decoded by r
// (see [Decode]). A handler of [RecordedEvent] receives the events as
// stored, and r may then be nil. Events are upcast to the latest schema
// version of their type, which their header's SchemaVersion then gives, so
// E must be an interface or the latest version's registered Go type. An E
// of one concrete type selects its own event type when the filter has no
// Types, so the events of other types are skipped; an interface E selects
// every type, and its handler gets each event as its registered Go type.
// An event that does not decode goes to the dead-letter queue, undecoded,
// as does every event of another type that Filter.Types selects for an E
// of one concrete type (it decodes to another Go type). opts may be nil; the subscription keeps a copy, so the
// caller may change them afterwards.
//
// ctx bounds only the read of the checkpoint. The subscription runs until
// [Durable.Stop], a failed [Durable.Rebuild], or the bus's Shutdown or
// Close, whatever becomes of ctx once SubscribeDurable has returned
// (unlike [Store.Subscribe], whose reads end with their context), and its
// handlers' contexts come from the bus, with none of ctx's values: a
// request's or a test's context stops nothing when it ends.
//
// A name is used by one subscription at a time: another process resuming
// it must wait for this one to stop; on the same bus, it may resume once
// this one's Stop has returned. Only a bus enforces that, among its own
// subscriptions: nothing stops another bus over the same store, in this
// process or in another that shares a Store of its own (a [FileStore]'s
// lock keeps other processes out), from running the name at the same
// time. Both then handle every event, and the checkpoint is the one saved
// last by either, which may be behind the other's (its events are
// delivered again after a restart) or ahead of it, past events that the
// other had not finished: a restart that resumes there never gives them
// to the other's handler. It returns an error wrapping [ErrInvalid]
// for a bad name, handler or option, an E of an older schema version, a
// nil store or a Bus not made by [New], [ErrUnknownEvent] for an E that is
// neither an interface nor registered in r (a pointer to a registered
// type, say), to which no event decodes, [ErrDuplicate] if b has a durable
// subscription of that name that runs, rebuilds or is stopping, or a topic
// named "durable." and the name that [NewTopic] made, [ErrClosed] after
// Shutdown, the store's error reading the checkpoint, or one wrapping
// [ErrInvalid] for a saved checkpoint that is not a position (corrupt).
func SubscribeDurable[E any](ctx context.Context, b *Bus, s Store, r *Registry, name string, h Handler[E], opts *DurableOptions) (*Durable, error) {
	return subscribeDurable(ctx, "SubscribeDurable", b, s, name, opts, func() (Handler[RecordedEvent], BatchHandler[RecordedEvent], string, error) {
		handler, eventType, err := decoding(r, h)
		return handler, nil, eventType, err
	})
}

// SubscribeDurableBatch is SubscribeDurable with a handler that takes up
// to opts.Subscription.BatchSize events at once, as [Topic.SubscribeBatch]
// does: a projection can write a whole batch in one transaction. Each
// batch holds events in store order, the events of one stream in order
// (a stream's events go to one worker); its events finish, and move the
// checkpoint, when the handler returns. A [*BatchError] fails the events it
// names alone, which are retried one at a time, as batches of one, and
// dead-lettered if they keep failing; any other error fails the whole
// batch. A failed event is retried after the later events of its stream
// in the same batch were handled (see [BatchHandler]): a projection that
// needs each stream's events applied in order fails those too. An event
// that does not decode is left out of the batch it came in and
// dead-lettered, as by SubscribeDurable. A batch subscription runs no
// middleware, so opts.Subscription.Middleware must be empty (it returns an
// error wrapping [ErrInvalid] otherwise) and the bus's is skipped.
func SubscribeDurableBatch[E any](ctx context.Context, b *Bus, s Store, r *Registry, name string, h BatchHandler[E], opts *DurableOptions) (*Durable, error) {
	if opts != nil && len(opts.Subscription.Middleware) > 0 {
		return nil, fmt.Errorf("%w: durable subscription %q: a batch subscription cannot have middleware", ErrInvalid, name)
	}
	return subscribeDurable(ctx, "SubscribeDurableBatch", b, s, name, opts, func() (Handler[RecordedEvent], BatchHandler[RecordedEvent], string, error) {
		batch, eventType, err := decodingBatch(r, h)
		return nil, batch, eventType, err
	})
}

// subscribeDurable starts a durable subscription, as SubscribeDurable
// documents, with the handler or batch handler of stored events that
// decode returns, with the event type that the handler selects ("" for
// any); call names the caller in errors.
func subscribeDurable(ctx context.Context, call string, b *Bus, s Store, name string, opts *DurableOptions,
	decode func() (Handler[RecordedEvent], BatchHandler[RecordedEvent], string, error)) (*Durable, error) {
	var o DurableOptions
	if opts != nil {
		o = *opts
	}
	// Kept for the runs to come (a Rebuild's), and read by the store's
	// goroutine: a caller that reuses opts must not change them.
	o.Filter.Types = slices.Clone(o.Filter.Types)
	o.Subscription.Middleware = slices.Clone(o.Subscription.Middleware)
	if p := o.Subscription.Retry; p != nil {
		policy := *p
		o.Subscription.Retry = &policy
	}
	if err := checkContext(ctx, call); err != nil {
		return nil, err
	}
	if err := checkNameLen("durable subscription", name, maxDurableNameLen); err != nil {
		return nil, err
	}
	if err := b.check(call); err != nil {
		return nil, fmt.Errorf("durable subscription %q: %w", name, err)
	}
	if s == nil {
		return nil, fmt.Errorf("%w: durable subscription %q: nil store", ErrInvalid, name)
	}
	topic := "durable." + name
	if _, _, err := b.resolveSubscription(topic, name, &o.Subscription); err != nil {
		return nil, err // checked before the topic is made, so that a retry can make it
	}
	handler, batch, eventType, err := decode()
	if err != nil {
		return nil, fmt.Errorf("durable subscription %q: %w", name, err)
	}
	if len(o.Filter.Types) == 0 && eventType != "" {
		o.Filter.Types = []string{eventType}
	}
	if o.CheckpointEvery < 0 {
		return nil, fmt.Errorf("%w: durable subscription %q: CheckpointEvery %d is negative", ErrInvalid, name, o.CheckpointEvery)
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 100
	}
	t, err := durableTopic(b, topic)
	if err != nil {
		return nil, fmt.Errorf("durable subscription %q: %w", name, err)
	}
	started := false
	defer func() {
		// Deferred, so that a panic of user code (a middleware's
		// constructor, the store), which the caller may recover, does not
		// leave the name taken for good either.
		if !started {
			b.releaseDurable(topic)
		}
	}()
	// Read once the name is claimed: a subscription of that name that ran
	// until now has saved its last checkpoint.
	from, saved, err := loadCheckpoint(ctx, s, name)
	if err == nil && !saved && o.From > 0 {
		// Saved at once: a run that stops, or crashes, before its first
		// save must not leave the next one to start at a later End.
		if from, err = durableStart(ctx, s, o.From); err == nil {
			err = saveCheckpoint(ctx, s, name, from)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("durable subscription %q: %w", name, err)
	}
	d := &Durable{
		bus:     b,
		store:   s,
		name:    name,
		filter:  o.Filter,
		every:   o.CheckpointEvery,
		topic:   t,
		handler: handler,
		batch:   batch,
		subOpts: o.Subscription,
		track:   newTracker(from),
		life:    make(chan struct{}, 1),
	}
	d.subOpts.finished, d.subOpts.released = d.finished, d.released
	if err := d.start(from); err != nil {
		return nil, err
	}
	started = true
	return d, nil
}

// durableTopic returns the internal topic of a durable subscription: a new
// one, or the one that a durable subscription of the same name left once
// its Stop returned, so that it can be resumed on the same bus. A topic of
// that name made by NewTopic is never taken over: it returns an error
// wrapping ErrDuplicate, as it does while the durable subscription runs or
// stops. Once the bus is closed it returns ErrClosed, whatever the name.
func durableTopic(b *Bus, name string) (*Topic[RecordedEvent], error) {
	b.mu.Lock()
	if b.closed.Load() {
		// A durable subscription that the stop ended keeps its claim
		// until its Stop: what is taken is the bus, not the name.
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if c := b.durables[name]; c != nil {
		defer b.mu.Unlock()
		// Claimed until Stop has returned, not only while subscribed:
		// Unsubscribe takes the workers off the topic before they drain.
		if c.claimed {
			return nil, fmt.Errorf("%w: a durable subscription runs on topic %q, or stops", ErrDuplicate, name)
		}
		c.claimed = true
		return c.topic, nil
	}
	c := &durableClaim{claimed: true} // held while the topic is made
	b.durables[name] = c
	b.mu.Unlock()
	t, err := NewTopic(b, name, &TopicOptions[RecordedEvent]{Mode: Async, EventType: name})
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		delete(b.durables, name)
		if errors.Is(err, ErrDuplicate) {
			return nil, fmt.Errorf("%w: topic %q is the application's, not a durable subscription's", ErrDuplicate, name)
		}
		return nil, err
	}
	c.topic = t
	return t, nil
}

// durableClaim is the internal topic of a durable subscription, and whether
// a durable subscription runs or stops on it.
type durableClaim struct {
	topic   *Topic[RecordedEvent]
	claimed bool
	// ended holds, under the bus's mu, the final counts of the runs that
	// have ended on the topic, each a subscription of its own, which
	// Bus.Metrics adds to the running one's: the Durable's counters go on
	// across its runs (see SubscriptionMetrics). Its timings are nil until
	// a run with timings ends.
	ended counters
}

// releaseDurable frees the name of the durable subscription whose topic is
// name, once it has stopped for good, for another to resume on the topic.
func (b *Bus) releaseDurable(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.durables[name]; c != nil {
		c.claimed = false
	}
}

// decoding returns h as a handler of stored events, and the event type of
// a concrete E, the only one whose events decode to it ("" for an
// interface or RecordedEvent).
func decoding[E any](r *Registry, h Handler[E]) (Handler[RecordedEvent], string, error) {
	if h == nil {
		return nil, "", fmt.Errorf("%w: nil handler", ErrInvalid)
	}
	if raw, ok := any(h).(Handler[RecordedEvent]); ok {
		return raw, "", nil
	}
	eventType, err := decodable[E](r)
	if err != nil {
		return nil, "", err
	}
	return func(ctx context.Context, e Event[RecordedEvent]) error {
		d, err := decodeEvent[E](r, &e)
		if err != nil {
			return err
		}
		return h(ctx, d)
	}, eventType, nil
}

// decodable checks that r decodes stored events to E, its latest version,
// and returns the event type that E selects ("" for an interface).
func decodable[E any](r *Registry) (string, error) {
	if err := r.check(""); err != nil { // a nil Registry, or one NewRegistry did not make
		return "", fmt.Errorf("registry to decode the events: %w", err)
	}
	return checkLatest[E](r)
}

// decodeEvent decodes e for a handler of E, upcast to the latest version,
// which its header then gives, or returns why it does not decode, for
// good (Permanent).
func decodeEvent[E any](r *Registry, e *Event[RecordedEvent]) (Event[E], error) {
	p, version, err := decodeLatest[E](r, e.Payload.EventData)
	if err != nil {
		return Event[E]{}, Permanent(err)
	}
	hdr := e.Header
	hdr.SchemaVersion = version
	return Event[E]{Header: hdr, Payload: p}, nil
}

// decodingBatch is decoding for a batch handler. The events of a batch that
// do not decode are left out of the batch that h gets, and fail alone, for
// good, whatever h returns or panics with; the indexes of h's *BatchError
// are mapped back to the batch's.
func decodingBatch[E any](r *Registry, h BatchHandler[E]) (BatchHandler[RecordedEvent], string, error) {
	if h == nil {
		return nil, "", fmt.Errorf("%w: nil handler", ErrInvalid)
	}
	if raw, ok := any(h).(BatchHandler[RecordedEvent]); ok {
		return raw, "", nil
	}
	eventType, err := decodable[E](r)
	if err != nil {
		return nil, "", err
	}
	return func(ctx context.Context, events []Event[RecordedEvent]) error {
		decoded := make([]Event[E], 0, len(events))
		var index []int // decoded[j] is events[index[j]], once an event failed
		var failed map[int]error
		for i := range events {
			d, err := decodeEvent[E](r, &events[i])
			if err != nil {
				if failed == nil {
					failed = make(map[int]error)
					for j := range i {
						index = append(index, j)
					}
				}
				failed[i] = err
				continue
			}
			decoded = append(decoded, d)
			if failed != nil {
				index = append(index, i)
			}
		}
		if failed == nil {
			return h(ctx, decoded) // the same events: the same indexes
		}
		if len(decoded) == 0 {
			return &BatchError{Failed: failed}
		}
		// A panic fails the events h got, not those left out, which keep
		// their own errors.
		var each map[int]error
		all := callBatch(ctx, h, decoded)
		if _, panicked := all.(*PanicError); !panicked { // as runChunk reads a panic
			each, all = failures(all, len(decoded))
		}
		for j, i := range index {
			if err := cmp.Or(all, each[j]); err != nil {
				failed[i] = err
			}
		}
		return &BatchError{Failed: failed}
	}, eventType, nil
}

// start subscribes the workers and starts the tailer, reading from from.
func (d *Durable) start(from uint64) error {
	sub, err := d.topic.subscribe(d.name, d.handler, d.batch, &d.subOpts)
	if err != nil {
		return fmt.Errorf("durable subscription %q: %w", d.name, err)
	}
	ctx, cancel := context.WithCancel(d.bus.ctx)
	r := &durableRun{
		sub:      sub,
		cancel:   cancel,
		stopping: make(chan struct{}),
		tailed:   make(chan struct{}),
		due:      make(chan struct{}, 1),
		quit:     make(chan struct{}),
		quitted:  make(chan struct{}),
	}
	b := d.bus
	b.mu.Lock()
	if b.closed.Load() { // Shutdown may be waiting for the bus's goroutines
		b.mu.Unlock()
		cancel()
		return fmt.Errorf("durable subscription %q: %w", d.name, ErrClosed)
	}
	b.goroutines.Add(2)
	b.mu.Unlock()
	d.run.Store(r)
	go func() {
		defer b.goroutines.Done()
		d.tail(ctx, r, from)
	}()
	go func() {
		defer b.goroutines.Done()
		d.saveDue(r)
	}()
	return nil
}

// tail is the goroutine of one run. It queues the store's events to the
// workers until Stop or Rebuild cancels it, the bus stops, or the store
// fails; unless told to stop, it then waits for the workers to exit, which
// Shutdown or Close make them do, and saves the final checkpoint.
func (d *Durable) tail(ctx context.Context, r *durableRun, from uint64) {
	defer close(r.tailed)
	// At a stop of the bus the workers exit once they have drained, before
	// the bus's context ends, which waits for every subscription: the pump,
	// waiting for the store's next event, stops then too, so that WaitFor
	// learns at once that no event will finish any more. A handler of
	// another subscription may be waiting for that, and the bus for it.
	pumped, stopPump := context.WithCancel(ctx)
	defer stopPump()
	d.bus.goroutines.Go(func() {
		select {
		case <-r.sub.exited:
			stopPump()
		case <-pumped.Done():
		}
	})
	// ErrClosed is the bus's only when the bus closed: a store closed
	// under the subscription stopped it too, and Stop says so.
	if err := d.pump(pumped, from); ctx.Err() == nil && !d.bus.closed.Load() {
		r.err = err
		if err != nil {
			d.track.stop(fmt.Errorf("durable subscription %q: stopped reading the store: %w", d.name, err), false)
			report(context.Background(), d.bus.opts.Logger, slog.LevelError, "eventbus: durable subscription stopped: reading the store failed", "subscription", d.name, "error", err)
		}
	}
	select {
	case <-r.stopping:
	case <-r.sub.exited:
		// The bus has stopped: a Stop may never come to return the
		// error, so the stop of the bus does.
		if err := d.finish(r); err != nil {
			d.bus.saveFailed(fmt.Errorf("durable subscription %q: saving its final checkpoint: %w", d.name, err))
			report(context.Background(), d.bus.opts.Logger, slog.LevelWarn, "eventbus: saving a checkpoint failed", "subscription", d.name, "position", d.track.position(), "error", err)
		}
		d.track.stop(ErrClosed, true)
	}
}

// pump reads the store from position from and queues each event. It
// returns why it stopped, which is never nil.
func (d *Durable) pump(ctx context.Context, from uint64) error {
	opts := &SubscribeOptions{From: from, Filter: d.filter, CaughtUp: d.track.caughtUp, Passed: d.track.pass}
	for e, err := range d.store.Subscribe(ctx, opts) {
		if err != nil {
			return err
		}
		if bookkeeping(e.Stream) {
			d.track.caughtUp(e.Position + 1) // skipped, as by the filter
			continue
		}
		d.track.handOut(e.Position)
		h := Header{
			ID:            e.ID,
			Type:          e.Type,
			SchemaVersion: max(e.SchemaVersion, 1),
			Key:           e.Stream,
			Time:          e.Time,
			CorrelationID: e.CorrelationID,
			CausationID:   e.CausationID,
			Metadata:      e.Metadata,
			Position:      e.Position,
		}
		if err := d.topic.publishStamped(ctx, e, &h); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Not for the subscription to take for a stop it was told of: the
	// events after the end would never be read, and no one would know.
	return fmt.Errorf("%w: the store's Subscribe ended without an error, which a Store's must not", ErrInvalid)
}

// bookkeeping reports whether stream holds a consumer's books: a checkpoint
// stream, or a record of [StoreProcessed]. A filter that selects system
// streams selects these too, and handling one would make another (a
// checkpoint moved, an event processed), of the subscription itself or of
// another consumer that handles it in turn, so they would never settle.
// Every consumer of a store keeps its books under these two prefixes and
// skips them, the Kafka bridge's relay too, which repeats them.
func bookkeeping(stream string) bool {
	return strings.HasPrefix(stream, checkpointPrefix) || strings.HasPrefix(stream, processedStreamPrefix)
}

// finished is called by a worker when the event at position is finished. A
// save that is due goes to the saver, so that handling goes on while the
// store writes (and syncs) the checkpoint.
func (d *Durable) finished(position uint64, held bool) {
	d.saveIfDue(d.track.finish(position, held))
}

// released is called when the dead letter of the event at position, which
// held the checkpoint back, is discarded.
func (d *Durable) released(position uint64) { d.saveIfDue(d.track.release(position)) }

// saveIfDue hands a save to the saver if n events have finished since the
// last one began, and that is enough.
func (d *Durable) saveIfDue(n int) {
	if n < d.every {
		return
	}
	if r := d.run.Load(); r != nil { // nil while stopping: the final save follows
		select {
		case r.due <- struct{}{}:
		default: // a save is due already; it will take this event too
		}
	}
}

// saveDue is the saver goroutine of run r: it saves the checkpoint whenever
// one is due, until the final save stops it.
func (d *Durable) saveDue(r *durableRun) {
	defer close(r.quitted)
	for {
		select {
		case <-r.due:
			if pos, err := d.persist(); err != nil {
				report(context.Background(), d.bus.opts.Logger, slog.LevelWarn, "eventbus: saving a checkpoint failed", "subscription", d.name, "position", pos, "error", err)
			}
		case <-r.quit:
			return
		}
	}
}

// persist saves the checkpoint if it moved since the last save, and
// returns it.
func (d *Durable) persist() (uint64, error) {
	pos, moved := d.track.checkpoint()
	if !moved {
		return pos, nil
	}
	if err := saveCheckpoint(context.Background(), d.store, d.name, pos); err != nil {
		return pos, err
	}
	d.track.savedAt(pos)
	return pos, nil
}

// finish stops the saver of r and saves the final checkpoint, once r's
// workers have exited.
func (d *Durable) finish(r *durableRun) error {
	r.once.Do(func() {
		close(r.quit)
		<-r.quitted
		_, r.final = d.persist()
	})
	return r.final
}

// made reports whether SubscribeDurable made d: a nil or zero Durable has
// no tracker.
func (d *Durable) made() bool { return d != nil && d.track != nil }

// checkMade returns an error wrapping ErrInvalid for a Durable not made by
// SubscribeDurable, given to call.
func (d *Durable) checkMade(call string) error {
	if !d.made() {
		return fmt.Errorf("%w: %s on a Durable not made by SubscribeDurable", ErrInvalid, call)
	}
	return nil
}

// Name returns the subscription's name, or "" for a nil Durable.
func (d *Durable) Name() string {
	if d == nil {
		return ""
	}
	return d.name
}

// Checkpoint returns the position the subscription would resume from: the
// one before which every event it selects has finished, or, if earlier,
// that of the first dead letter the [DeadLetterSink] failed to keep. It
// returns 0 for a Durable not made by [SubscribeDurable].
func (d *Durable) Checkpoint() uint64 {
	if !d.made() {
		return 0
	}
	return d.track.position()
}

// WaitFor waits until the event at position pos has finished, with every
// event before it, or until ctx is done (it then returns ctx's error). Give
// it the Position of an [AppendResult] to read your own writes from a
// projection. For a position that the subscription passes without
// handling it (an event that its filter skips, one of a system stream, or
// one that a [FileStore]'s retention removed), it waits until the
// subscription has read past it and every event before it has finished:
// with a store that calls [SubscribeOptions].Passed, as this package's
// do, that is as soon as the subscription has read the events committed
// up to it; with another, only once it reads a later event that it
// selects, or first catches up with the store. If the event will never
// finish, it returns at once: the error that stopped the subscription
// reading the store, if pos was not read before, or [ErrClosed] once the
// subscription has stopped (by Stop, a failed Rebuild, or the bus's
// Shutdown or Close). Unlike [Bus.Flush], it takes a handler's context,
// so that a handler can wait for another projection; but the
// subscription's own handler waiting for its own event, or a later one,
// waits for itself, until ctx is done.
func (d *Durable) WaitFor(ctx context.Context, pos uint64) error {
	if err := d.checkMade("Durable.WaitFor"); err != nil {
		return err
	}
	if err := checkContext(ctx, "Durable.WaitFor"); err != nil {
		return err
	}
	return d.track.waitFor(ctx, pos)
}

// Err returns nil while the subscription reads the store, and otherwise
// why it stopped: the store's error (wrapped) when reading it failed (the
// subscription then handles the events it read, and reads no more; the
// bus's Logger reports it too), or [ErrClosed] once it has stopped, by
// Stop, a failed Rebuild, or the bus's Shutdown or Close. The first reason
// stays: after a failed read, Err keeps the store's error once the
// subscription has stopped too, until a Rebuild. Poll it for a
// health check: a catch-up subscription of EventStoreDB reports such a
// drop in the same way. To go on after a failed read, Stop the
// subscription, which saves its checkpoint, and call [SubscribeDurable]
// again (on the same bus too): it resumes from the checkpoint. A
// [Durable.Rebuild] reads the store again as well, but from the first
// event, handling every event again. A checkpoint that fails to save
// stops nothing, and Err does not report it: the bus's Logger hears of
// each failure, Stop returns that of its final save, and until a save
// succeeds a crash delivers again every event after the checkpoint saved
// last, while [Durable.Checkpoint] moves on. It returns an error wrapping
// [ErrInvalid] for a Durable not made by [SubscribeDurable].
func (d *Durable) Err() error {
	if err := d.checkMade("Durable.Err"); err != nil {
		return err
	}
	return d.track.stopped()
}

// Stop stops the subscription: it reads no more events, handles those
// already queued (with their retries), saves the checkpoint, and returns
// once its workers have exited. If ctx ends first, running handlers see
// their context cancelled, and events not yet handled are delivered again
// by the next run; the error then wraps an [*UndeliveredError] (see
// errors.As). Their dead letters stay in the bus's queue: a Redrive of
// them once the subscription runs again, on the same bus, hands them to
// that run, which delivers them from its checkpoint as well, so that each
// is handled twice; Discard them instead (see [DeadLetterSink]). It
// returns the error that stopped reading the store, if any, and that of
// the last save; each names the subscription. If another Stop or a
// Rebuild runs, it waits for that first; should ctx end meanwhile, it
// stops nothing (a Rebuild goes on to start the subscription again) and
// returns an error that names the subscription and wraps ctx's. Calling
// it again returns one that names it and wraps [ErrClosed]. Like
// [Bus.Shutdown], it refuses a handler's context (an error wrapping
// [ErrInvalid]), since it would wait for that handler, and, while it
// runs, the context that a Rebuild of the subscription gives its reset,
// since it would wait for that Rebuild. A handler of the subscription must
// not call it with another context either, such as context.Background() or
// one with a deadline: once ctx ends Stop still waits for the running
// handlers, the caller among them, so neither ever returns, nor does the
// bus's Shutdown or Close. A handler that decides to stop its subscription
// calls Stop in a goroutine of its own. Stop also waits for the store's
// Subscribe, cancelled, to return, as [Store.Subscribe] must once its
// context ends: a Store that ignores its context keeps Stop waiting, and
// the bus's Shutdown and Close, as a handler that ignores its context does.
// So does a Store whose Append never returns, whatever ctx: the saves of
// the checkpoint have no deadline, since a stop without grace saves it
// too.
func (d *Durable) Stop(ctx context.Context) error {
	if err := d.checkMade("Durable.Stop"); err != nil {
		return err
	}
	return d.stopThen(ctx, "Durable.Stop", nil)
}

// stopThen stops the running subscription for call, then calls then, if
// not nil, with no other Stop or Rebuild running meanwhile.
func (d *Durable) stopThen(ctx context.Context, call string, then func() error) error {
	if err := checkWaitContext(ctx, call); err != nil {
		return fmt.Errorf("durable subscription %q: %w", d.name, err)
	}
	if running, ok := ctx.Value(resetKey{d}).(*atomic.Bool); ok && running.Load() {
		return fmt.Errorf("%w: durable subscription %q: %s called with the context of its Rebuild's reset would wait for that Rebuild", ErrInvalid, d.name, call)
	}
	select {
	case d.life <- struct{}{}:
	default:
		// Another Stop or Rebuild runs: wait for it on ctx's terms. Only
		// then, so that a ctx done already stops without grace, as it
		// does once stopping.
		select {
		case d.life <- struct{}{}:
		case <-ctx.Done():
			// Named, as Stop's other errors are: nothing was stopped,
			// and a caller stopping several must learn which.
			return fmt.Errorf("durable subscription %q: %s: waiting for another Stop or Rebuild: %w", d.name, call, ctx.Err())
		}
	}
	defer func() { <-d.life }()
	r := d.run.Swap(nil)
	if r == nil {
		return fmt.Errorf("durable subscription %q: %s: %w", d.name, call, ErrClosed)
	}
	// Deferred, so that a panic of then (a Rebuild's reset, a middleware's
	// constructor), which the caller may recover, leaves the subscription
	// stopped as an error does, not stopped while Err reports nothing.
	defer func() {
		if d.run.Load() == nil { // stopped for good: the name is free again
			d.track.stop(ErrClosed, true)
			d.bus.releaseDurable(d.topic.name)
		}
	}()
	err := d.stop(ctx, r)
	if r.err != nil && then == nil {
		// A Rebuild reads the store again from the first event: the
		// failed read of the run it replaces, which Err reported, is no
		// reason to stay stopped.
		err = errors.Join(fmt.Errorf("durable subscription %q: %w", d.name, r.err), err)
	}
	if err == nil && then != nil {
		err = then()
	}
	return err
}

// stop ends run r and saves its checkpoint. The error that stopped r
// reading the store, if any, is r.err, read after stop returns.
func (d *Durable) stop(ctx context.Context, r *durableRun) error {
	close(r.stopping)
	r.cancel()
	<-r.tailed
	var errs []error
	// Also while the bus shuts down, so that ctx bounds the wait for its
	// drain too; once the bus has stopped, it returns at once.
	if err := r.sub.Unsubscribe(ctx); err != nil && !errors.Is(err, ErrClosed) {
		// Named as the other errors are: a caller stopping several
		// subscriptions learns whose events the next run delivers.
		errs = append(errs, fmt.Errorf("durable subscription %q: %w", d.name, err))
	}
	<-r.sub.exited
	if err := d.finish(r); err != nil {
		errs = append(errs, fmt.Errorf("durable subscription %q: saving the checkpoint: %w", d.name, err))
	}
	return errors.Join(errs...)
}

// Rebuild handles every event again from the first: it stops the
// subscription as Stop does, saves a checkpoint at position 0, calls reset
// (which should empty the read model), and starts again. reset may be nil.
// WaitFor and Checkpoint follow the new run from the moment reset is
// called, so that WaitFor does not return while the read model is empty.
// The checkpoint is saved first so that a crash, or a failure of reset,
// never leaves an emptied read model behind a later checkpoint: the next
// run handles every event again. An [Idempotency] middleware with a
// durable store would skip every event: a projection that rebuilds should
// apply events idempotently by itself.
//
// A subscription that stopped reading the store because a read failed
// (see [Durable.Err]) reads it again: the failed read is no error of
// Rebuild's. It returns Stop's other errors, the store's, reset's, or
// [ErrClosed] after Stop or Shutdown, each wrapped in one that names the
// subscription; after an error the subscription
// stays stopped, as it does when reset panics (the panic goes on to the
// caller), but for one wrapping [ErrInvalid] for a nil context, a
// handler's or its reset's, refused as Stop refuses them before it stops
// anything. An error of reset's leaves it stopped whatever it wraps,
// ErrInvalid too (a refused Stop that reset returns, say), so
// errors.Is(err, ErrInvalid) does not tell that it runs: [Durable.Err]
// does. As with Stop, a handler of the subscription that calls it with
// another context never returns: it calls Rebuild in a goroutine of its
// own. Nor may reset stop or rebuild the subscription: Stop and
// Rebuild refuse reset's context, and with another they wait for this
// Rebuild, which waits for reset, so none returns. A reset that must
// leave the subscription stopped returns an error.
func (d *Durable) Rebuild(ctx context.Context, reset func(ctx context.Context) error) error {
	if err := d.checkMade("Durable.Rebuild"); err != nil {
		return err
	}
	return d.stopThen(ctx, "Durable.Rebuild", func() error {
		if d.bus.closed.Load() {
			return fmt.Errorf("durable subscription %q: Durable.Rebuild: %w", d.name, ErrClosed)
		}
		if err := saveCheckpoint(ctx, d.store, d.name, 0); err != nil {
			return fmt.Errorf("durable subscription %q: %w", d.name, err)
		}
		d.track.reset(0)
		if reset != nil {
			if err := d.callReset(ctx, reset); err != nil {
				// Named, as Stop's errors are: a caller rebuilding
				// several projections must learn whose read model
				// failed to empty.
				return fmt.Errorf("durable subscription %q: Rebuild's reset: %w", d.name, err)
			}
		}
		return d.start(0)
	})
}

// resetKey is the context key under which the context given to the reset
// of a Rebuild of d holds whether reset runs: Stop and Rebuild of d refuse
// that context meanwhile, since they would wait for the Rebuild, which
// waits for reset. A key of its own for each Durable, so that a reset
// that rebuilds another subscription, whose reset stops this one, is
// refused too.
type resetKey struct{ d *Durable }

// callReset calls a Rebuild's reset with a context that marks it.
func (d *Durable) callReset(ctx context.Context, reset func(ctx context.Context) error) error {
	running := new(atomic.Bool)
	running.Store(true)
	defer running.Store(false) // also when reset panics
	return reset(context.WithValue(ctx, resetKey{d}, running))
}
