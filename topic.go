package eventbus

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TopicOptions configures a topic. The zero value takes the defaults.
type TopicOptions[T any] struct {
	// Mode overrides the bus's delivery mode for this topic.
	Mode Mode
	// Key returns the ordering key of a payload. If nil, the key comes from
	// the payload's AggregateID() or GetAggregateID() method, if it has one;
	// NewTopic refuses a payload type T whose method is declared on *T only,
	// which a T cannot call. A key given to Publish with WithKey takes
	// precedence over both.
	Key func(T) string
	// EventType overrides the event type name, which otherwise comes from
	// the payload's EventType() or GetEventType() method (declared on T or
	// on *T), or else is the Go type's name.
	EventType string
	// SchemaVersion is the version of the payload's schema stamped on each
	// event; zero means 1. It is at most 1<<31, as in a [Store].
	SchemaVersion int
}

// Topic is a named stream of events whose payloads have type T. Publishing
// fans each event out to every subscription of the topic. A Topic is safe for
// concurrent use. A nil or zero Topic, one not made by [NewTopic], has no
// name, event type or bus, and its methods that return an error return one
// wrapping [ErrInvalid].
type Topic[T any] struct {
	bus       *Bus
	name      string
	eventType string
	version   int
	mode      Mode
	key       func(T) string // nil: none, or the payload's method
	methodKey bool           // T has an AggregateID method
	nilKey    bool           // methodKey, and T is a pointer or an interface, which may be nil
	nilEmbed  bool           // methodKey, and T may embed a nil (embedsNil)

	mu    sync.Mutex                  // serialises changes to subs
	subs  atomic.Pointer[[]member[T]] // copied on write
	ctxs  syncSlab[linkedContext]     // handler contexts in Sync mode
	roots syncSlab[rootContext]       // the same, without pointers, for given IDs
	runs  syncRuns                    // the same, for IDs the bus numbers
	sent  atomic.Uint64               // successful publishes, with Options.Metrics
}

// NewTopic adds a topic named name with payload type T to b. Names are 1 to
// 249 characters from letters, digits, '.', '_' and '-' (the characters
// Kafka allows). The event type name is chosen as TopicOptions.EventType
// documents, must follow the same rules, and may belong to one Go type only
// (T and *T count as one).
//
// It returns an error wrapping [ErrInvalid] for a bad name or option or a
// Bus not made by [New], [ErrDuplicate] for a taken topic name or event type
// name, and [ErrClosed] after Shutdown.
func NewTopic[T any](b *Bus, name string, opts *TopicOptions[T]) (*Topic[T], error) {
	if err := b.check("NewTopic"); err != nil {
		return nil, err
	}
	var o TopicOptions[T]
	if opts != nil {
		o = *opts
	}
	if err := checkName("topic", name); err != nil {
		return nil, err
	}
	eventType := o.EventType
	if eventType == "" {
		var err error
		if eventType, err = typeName[T]("TopicOptions.EventType"); err != nil {
			return nil, fmt.Errorf("topic %q: %w", name, err)
		}
	} else if err := checkName("event type", eventType); err != nil {
		return nil, fmt.Errorf("topic %q: %w", name, err)
	}
	if o.Key == nil {
		if err := checkKeyMethod[T](", or set TopicOptions.Key"); err != nil {
			return nil, fmt.Errorf("topic %q: %w", name, err)
		}
	}
	if o.SchemaVersion < 0 || int64(o.SchemaVersion) > maxSchemaVersion {
		return nil, fmt.Errorf("%w: topic %q: SchemaVersion %d is outside 0 to %d", ErrInvalid, name, o.SchemaVersion, int64(maxSchemaVersion))
	}
	if o.SchemaVersion == 0 {
		o.SchemaVersion = 1
	}
	switch o.Mode {
	case Inherit:
		o.Mode = b.opts.Mode
	case Async, Sync:
	default:
		return nil, fmt.Errorf("%w: topic %q: Mode %d is not Async or Sync", ErrInvalid, name, o.Mode)
	}
	t := &Topic[T]{
		bus:       b,
		name:      name,
		eventType: eventType,
		version:   o.SchemaVersion,
		mode:      o.Mode,
		key:       o.Key,
		methodKey: o.Key == nil && hasPayloadKey[T](),
	}
	t.nilKey = t.methodKey && nilKeyed[T]()
	t.nilEmbed = t.methodKey && embedsNil[T]()
	t.subs.Store(new([]member[T]))

	goType := reflect.TypeFor[T]()
	if goType.Kind() == reflect.Pointer {
		goType = goType.Elem()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if _, ok := b.topics[name]; ok {
		return nil, fmt.Errorf("%w: topic %q already exists", ErrDuplicate, name)
	}
	if other, ok := b.types[eventType]; ok && other != goType {
		// Qualified, as Register names them: two packages of one name
		// ("v1") give their types of one name one default event type.
		return nil, fmt.Errorf("%w: event type %q already names %s, not %s", ErrDuplicate, eventType, qualified(other), qualified(goType))
	}
	b.topics[name] = t
	b.types[eventType] = goType
	return t, nil
}

func (t *Topic[T]) published() uint64 { return t.sent.Load() }

// check returns an error wrapping ErrInvalid for a nil Topic, or one that
// NewTopic did not make (a zero Topic has no bus), for a call of method.
// Publish pays one branch for it: check inlines, and notMade, which makes
// the error, does not.
func (t *Topic[T]) check(method string) error {
	if t == nil || t.bus == nil {
		return notMade[T](method)
	}
	return nil
}

func notMade[T any](method string) error {
	return fmt.Errorf("%w: %s on a Topic[%v] not made by NewTopic", ErrInvalid, method, reflect.TypeFor[T]())
}

// Name returns the topic's name, or "" for a nil Topic.
func (t *Topic[T]) Name() string {
	if t == nil {
		return ""
	}
	return t.name
}

// EventType returns the event type name stamped on the topic's events, or
// "" for a nil Topic.
func (t *Topic[T]) EventType() string {
	if t == nil {
		return ""
	}
	return t.eventType
}

// Bus returns the bus that t belongs to, whose Flush and Shutdown cover
// its events, or nil for a Topic not made by [NewTopic].
func (t *Topic[T]) Bus() *Bus {
	if t == nil {
		return nil
	}
	return t.bus
}

// Subscribe adds a subscription named name that hands every event published
// on t from now on to h. Names follow the rules of topic names and are unique
// within a topic. opts may be nil.
//
// It returns an error wrapping [ErrInvalid] for a bad name, a nil handler,
// an option out of range or a [Middleware] that returns a nil handler,
// [ErrDuplicate] for a taken name, and [ErrClosed] after Shutdown.
func (t *Topic[T]) Subscribe(name string, h Handler[T], opts *SubscriptionOptions) (*Subscription, error) {
	if err := t.check("Subscribe"); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: topic %q: subscription %q has a nil handler", ErrInvalid, t.name, name)
	}
	return t.subscribe(name, h, nil, opts)
}

func (t *Topic[T]) subscribe(name string, h Handler[T], batch BatchHandler[T], opts *SubscriptionOptions) (*Subscription, error) {
	if err := checkName("subscription", name); err != nil {
		return nil, fmt.Errorf("topic %q: %w", t.name, err)
	}
	o, retry, err := t.bus.resolveSubscription(t.name, name, opts)
	if err != nil {
		return nil, err
	}
	// Made before t.mu is taken: the middleware's constructors are user
	// code, which may subscribe too.
	m, err := newSubscription(t, name, h, batch, o, retry)
	if err != nil {
		return nil, err
	}
	if err := t.add(m); err != nil {
		m.kill(err)
		return nil, err
	}
	return m.Subscription, nil
}

// member is a subscription as its topic lists it, with the middleware
// chain that a Sync-mode publish runs for it: nil in Async mode, whose
// workers run the subscription's own, and without middleware. The list,
// not the subscription, holds a Sync subscription's chain, so that a
// publish runs the chain of the list it loaded, also once Unsubscribe or
// a stop of the bus has taken the subscription off the list since, while
// what stays of the subscription once those publishes have returned (its
// Subscription, which its owner may keep, and its dead letters) holds no
// state of the chain's, such as an Idempotency record.
type member[T any] struct {
	*subscription[T]
	chain EnvelopeHandler
}

// add registers m with the bus, starts it and lists it, unless its name is
// taken or the bus is closed.
func (t *Topic[T]) add(m member[T]) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	subs := *t.subs.Load()
	for _, x := range subs {
		if x.name == m.name {
			return fmt.Errorf("%w: topic %q already has a subscription %q", ErrDuplicate, t.name, m.name)
		}
	}
	if err := t.bus.register(m.Subscription); err != nil {
		return err
	}
	m.start()
	next := append(slices.Clip(subs), m)
	t.subs.Store(&next)
	return nil
}

// named returns the topic's subscription called name, or nil.
func (t *Topic[T]) named(name string) *subscription[T] {
	for _, x := range *t.subs.Load() {
		if x.name == name {
			return x.subscription
		}
	}
	return nil
}

// listed returns s as the topic lists it, and whether it does.
func (t *Topic[T]) listed(s *subscription[T]) (member[T], bool) {
	for _, x := range *t.subs.Load() {
		if x.subscription == s {
			return x, true
		}
	}
	return member[T]{}, false
}

// remove takes s out of the topic's subscriptions, if it is listed.
func (t *Topic[T]) remove(s *subscription[T]) {
	t.mu.Lock()
	defer t.mu.Unlock()
	subs := *t.subs.Load()
	at := slices.IndexFunc(subs, func(x member[T]) bool { return x.subscription == s })
	if at < 0 {
		return
	}
	next := slices.Delete(slices.Clone(subs), at, at+1)
	t.subs.Store(&next)
}

// PublishOption sets part of an event's header at Publish. It sees the
// header as the bus stamped it: the topic's event type, name and schema
// version, the key, the time and the lineage of a handler's context (the
// ID, from Options.NewID, if it has one). A field of the first three that
// it clears comes back; the ID and correlation ID, if it leaves them
// zero, are given after it.
type PublishOption func(*Header)

// WithKey sets the event's ordering key, overriding the topic's key function
// and the payload's key method.
func WithKey(key string) PublishOption { return func(h *Header) { h.Key = key } }

// WithMetadata sets the event's metadata. Subscribers share the map: do not
// modify it after Publish.
func WithMetadata(md Metadata) PublishOption { return func(h *Header) { h.Metadata = md } }

// WithCorrelationID sets the event's correlation ID, for an event that
// continues a flow started elsewhere (an HTTP request, a Kafka record).
func WithCorrelationID(id ID) PublishOption { return func(h *Header) { h.CorrelationID = id } }

// Publish sends payload to every subscription of t.
//
// In Async mode it returns once the event is in the queue of one worker of
// every subscription ([Topic.PublishBatch] queues many for less per
// event). While one of those queues is full it waits for room; if ctx ends
// first it returns ctx's error and the event was queued nowhere: a failed
// Publish can be retried without duplicates. A handler publishing with its
// own context never waits, since it might wait for itself: its event is
// queued past the bound.
//
// In Sync mode it runs each subscription's handler (with retries) in turn
// and returns a [*HandlerError] for each that failed, joined; ctx becomes
// the handlers' context.
//
// It returns [ErrClosed] after Shutdown; in Sync mode, events are then
// not handled. It returns an error wrapping [ErrInvalid] for a nil
// PublishOption, a nil pointer payload of a type whose key comes from its
// method, held by an interface payload or not, or a payload whose key
// method, promoted from a pointer or interface it embeds, panics on its
// nil: unless [TopicOptions].Key is set, the method runs, also for an
// event given a key with [WithKey], which replaces its result.
func (t *Topic[T]) Publish(ctx context.Context, payload T, opts ...PublishOption) error {
	_, err := t.publish(ctx, payload, opts, "Publish", false)
	return err
}

// TryPublish is Publish that never waits: if a queue is full it queues the
// event nowhere and returns false with a nil error, also with a handler's
// context, with which Publish would queue past the bound. In Sync mode it
// is Publish.
func (t *Topic[T]) TryPublish(ctx context.Context, payload T, opts ...PublishOption) (bool, error) {
	return t.publish(ctx, payload, opts, "TryPublish", true)
}

// publish is Publish, or TryPublish with try, named call in errors. It
// reports whether the event was published: queued, or in Sync mode handed
// to the handlers, whose errors it returns.
func (t *Topic[T]) publish(ctx context.Context, payload T, opts []PublishOption, call string, try bool) (bool, error) {
	if err := t.check(call); err != nil {
		return false, err
	}
	if err := checkContext(ctx, call); err != nil {
		return false, err
	}
	var p lineage
	bg := ctx == context.Background() // the common case, which has no parent
	if !bg {
		p, _ = parent(ctx)
	}
	key, err := t.keyOf(call, payload, opts)
	if err != nil {
		return false, err
	}
	var ev [1]Event[T] // an array, for enqueue's enqueueAll
	e := &ev[0]
	t.stamp(e, payload, key, t.bus.clock.now(), &p)
	if !t.plain(&p, opts) {
		t.extend(e, &p, opts)
	}
	if t.mode == Sync {
		// Loaded before closed is read: a stop of the bus takes the Sync
		// subscriptions off the list once it has set closed (see
		// subscription.stopIntake), so a publish that finds the bus open
		// runs every subscription that it had, with its chain.
		subs := *t.subs.Load()
		if t.bus.closed.Load() {
			return false, ErrClosed
		}
		t.count(1)
		return true, t.publishSync(t.syncContext(ctx, bg, e), subs, e)
	}
	if t.bus.closed.Load() {
		return false, ErrClosed
	}
	ok, err := t.enqueue(ctx, &ev, p.handler && !try, try) // a try never waits, so it keeps the bound
	if ok {
		t.count(1)
	}
	return ok, err
}

// count adds n events published to the topic's metrics, if the bus keeps
// them.
func (t *Topic[T]) count(n int) {
	if t.bus.opts.Metrics {
		t.sent.Add(uint64(n))
	}
}

// publishStamped queues payload under the header h, which the store
// stamped, for a Durable on its Async topic: it spares the stamp, and the
// PublishOption that would replace it, whose copy of the header costs an
// allocation per event. ctx carries no handler's lineage.
func (t *Topic[T]) publishStamped(ctx context.Context, payload T, h *Header) error {
	if t.bus.closed.Load() {
		return ErrClosed
	}
	ev := [1]Event[T]{{Header: *h, Payload: payload}}
	ok, err := t.enqueue(ctx, &ev, false, false)
	if ok {
		t.count(1)
	}
	return err
}

// stamp fills in the envelope of a new event with key, published at now
// by a publisher of lineage p, and with what every event of the topic
// shares (number fills that in again if a PublishOption clears it).
//
// It only stores, so that it inlines: e is then the caller's own variable,
// which the compiler can tell is on the stack, and it spares the stores of
// pointers the write barriers that a store through a pointer needs while
// the garbage collector marks. Those cost a Sync publish a fifth of its
// time; and stamped here, the topic's fields are not left for the worker
// to store, with barriers, into the queued event: together about a tenth
// of a keyed Async event. (Built apart and returned, the event cost as
// much again: its copy waits for the stores that built it to reach the
// cache.)
func (t *Topic[T]) stamp(e *Event[T], payload T, key string, now time.Time, p *lineage) {
	e.Payload = payload
	e.Type, e.Topic, e.SchemaVersion = t.eventType, t.name, t.version
	e.Key, e.Time = key, now
	e.CorrelationID, e.CausationID = p.CorrelationID, p.ID
}

// keyOf checks payload and opts, as call's, and returns the payload's key.
func (t *Topic[T]) keyOf(call string, payload T, opts []PublishOption) (string, error) {
	var key string                               // the payload's key, taken by checkPublish with nilEmbed
	if len(opts) > 0 || t.nilKey || t.nilEmbed { // spares the common case a call
		var err error
		if key, err = checkPublish(call, t.name, payload, opts, t.nilKey, t.nilEmbed); err != nil {
			return "", err
		}
	}
	switch {
	case t.key != nil:
		return t.key(payload), nil
	case t.methodKey && !t.nilEmbed:
		key, _ = payloadKey(payload)
	}
	return key, nil
}

// plain reports whether a new event published with opts by a publisher of
// lineage p needs nothing more than stamp gives it (see extend).
func (t *Topic[T]) plain(p *lineage, opts []PublishOption) bool {
	return len(opts) == 0 && p.Metadata == nil && t.bus.opts.NewID == nil
}

// extend completes the envelope of a new event, e, with what
// Options.NewID, opts and the lineage p add to it: rarely (see plain), so
// that it is not worth stamp's care.
func (t *Topic[T]) extend(e *Event[T], p *lineage, opts []PublishOption) {
	if t.bus.opts.NewID != nil {
		e.ID = t.bus.opts.NewID()
	}
	if len(opts) > 0 {
		// Options see a copy, so that e stays on the publisher's stack when
		// there are none.
		h := new(Header)
		*h = e.Header
		for _, o := range opts {
			o(h)
		}
		e.Header = *h
	}
	if p.Metadata != nil {
		e.Metadata = inherit(e.Metadata, p)
	}
}

// number completes e with the ID of the n-th event of source src, whose
// stamp is hi (see idSource.stamp: the caller has it from e.Time), unless
// it has one, and makes it its own correlation ID if it has none; and with
// what every event of the topic shares, where a PublishOption cleared it
// or the event comes from a store (publishStamped). With one subscription
// the worker numbers the event, off the publisher's path.
func (t *Topic[T]) number(e *Event[T], hi uint64, src uint32, n uint64) {
	if e.Type == "" {
		e.Type = t.eventType
	}
	if e.Topic == "" {
		e.Topic = t.name
	}
	if e.SchemaVersion == 0 {
		e.SchemaVersion = t.version
	}
	if !e.ID.IsZero() {
		if e.CorrelationID.IsZero() {
			e.CorrelationID = e.ID
		}
		return
	}
	// Stamped in place, twice, rather than built and copied: see putID.
	putID(&e.ID, hi, src, n)
	if e.CorrelationID.IsZero() {
		putID(&e.CorrelationID, hi, src, n)
	}
}

// syncContext numbers a Sync-mode event and returns its handler context;
// bg reports whether base is context.Background(). The events of such
// publishers that are their own correlation ID and have IDs already get
// contexts without pointers, as Async handlers do: 24 bytes the garbage
// collector never scans instead of 64 it does, which measured 5-9% off a
// Sync publish. Those that are their own correlation ID, without metadata,
// whose IDs the bus numbers, nearly all, get a runSlot (see runChunk),
// which took a Sync publish with context.Background() from 73-85 to 66-74
// ns at GOMAXPROCS=1, and SyncParallel from 47-52 to 37-39 at 2; one with
// a context of its own (BenchmarkSync/bus-request-context) from 122 to 95
// ns at 1 (medians of 4 alternating rounds) and 108 to 102 at 2 (97 to 80
// at 1 in a quieter hour), its garbage from 65 bytes, with pointers, to 20.
func (t *Topic[T]) syncContext(base context.Context, bg bool, e *Event[T]) context.Context {
	if e.Metadata == nil && e.CorrelationID.IsZero() {
		if e.ID.IsZero() {
			hi := t.bus.ids.stamp(e.Time)
			if bg {
				base = nil
			}
			src, n, c := t.runs.get(t.bus.ids, hi, base)
			t.number(e, hi, src, n)
			return c
		}
		if bg { // Options.NewID's or a PublishOption's ID
			c, src, n := t.roots.get(t.bus.ids)
			*c = rootContext{base: background, id: e.ID}
			t.number(e, 0, src, n) // e has its IDs: this fills in the rest
			return c
		}
	}
	c, src, n := t.ctxs.get(t.bus.ids)
	t.number(e, t.bus.ids.stamp(e.Time), src, n)
	c.init(base, &e.Header)
	return c
}

// enqueue puts e in one queue of every subscription, all or none.
func (t *Topic[T]) enqueue(ctx context.Context, e *[1]Event[T], force, try bool) (bool, error) {
	var h [1]uint64
	hashed := false
	if subs := *t.subs.Load(); len(subs) == 1 {
		// The common case, one subscription, takes one lock and no loops,
		// and hashes no key when it has one worker; a full or stopped
		// queue goes the long way, to the same queue for a key.
		q := &subs[0].workers[0].q
		if len(subs[0].workers) > 1 {
			h[0], hashed = t.hash(e[0].Key), true
			q = subs[0].queueOf(h[0], e[0].Key == "")
		}
		if ok, _ := q.offer(&e[0], force); ok {
			return true, nil
		}
	}
	if !hashed {
		h[0] = t.hash(e[0].Key)
	}
	n, err := t.enqueueAll(ctx, e[:], h[:], e[0].Key == "", force, try)
	return n == 1, err
}

// maxLocked bounds the queues a publish locks at once, unless one event
// needs more (a fan-out to more subscriptions).
const maxLocked = 32

// enqueueAll puts events in order, each in one queue of every
// subscription, all or none, hashes[i] choosing events[i]'s, or with free
// (a lone keyless event) a free worker's if there is one. It returns how
// many went in: all of them, or those before one that met a stopped bus
// (ErrClosed), a full queue with try (a nil error), or a full queue until
// ctx ended (ctx's error). force queues past the bound.
//
// It takes the events in runs that use at most maxLocked queues, locks
// those queues in the order every publisher does (see lockSet), so that
// publishers never wait for each other in a circle, and appends as many
// events as fit: one lock per queue per run, not per event.
func (t *Topic[T]) enqueueAll(ctx context.Context, events []Event[T], hashes []uint64, free, force, try bool) (int, error) {
	var chosen, ordered [maxLocked]*queue[T] // runs choose their queues without allocating
	sent := 0
	for sent < len(events) {
		subs := *t.subs.Load()
		run := min(len(events)-sent, max(1, maxLocked/max(1, len(subs))))
		// qs[n*len(subs)+i] is the queue of the run's n-th event in the
		// i-th subscription.
		qs := chosen[:0]
		for _, h := range hashes[sent : sent+run] {
			for _, s := range subs {
				qs = append(qs, s.queueOf(h, free))
			}
		}
		locks := lockSet[T](qs) // one event's queues are in order
		if run > 1 {
			locks = ordered[:0]
			for i := range subs {
				from := len(locks)
				for n := range run {
					locks = locks.add(from, qs[n*len(subs)+i])
				}
			}
		}
		locks.lock()
		var room <-chan struct{}
		closed := false
		n := 0
	events:
		for ; n < run; n++ {
			e, eqs := &events[sent+n], qs[n*len(subs):(n+1)*len(subs)]
			for _, q := range eqs {
				if q.stopped {
					closed = closed || t.bus.closed.Load()
				} else if !force && q.full() {
					room = q.room.wait()
					break events
				}
			}
			if closed {
				break
			}
			if len(eqs) > 1 {
				// The first open queue numbers the event (a stopped one
				// counts no more events). With one subscription, its
				// worker does, off the publisher's path.
				for _, q := range eqs {
					if !q.stopped {
						t.number(e, t.bus.ids.stamp(e.Time), q.source, q.enq)
						break
					}
				}
			}
			for _, q := range eqs {
				if !q.stopped && q.push(e) {
					q.woken = true
				}
			}
		}
		locks.unlock()
		sent += n
		switch {
		case closed:
			return sent, ErrClosed
		case room == nil:
			continue
		case try:
			return sent, nil
		}
		select {
		case <-room:
		case <-ctx.Done():
			return sent, ctx.Err()
		}
	}
	return sent, nil
}

// hash picks the worker of a key in every subscription; a keyless event
// goes to a random one, unless it is alone and a worker is free (see
// subscription.queueOf).
func (t *Topic[T]) hash(key string) uint64 {
	if key == "" {
		return rand.Uint64()
	}
	return maphash.String(t.bus.seed, key)
}

// publishSync runs the handler of every subscription of subs, a list of
// the topic's, for e in the calling goroutine.
func (t *Topic[T]) publishSync(ctx context.Context, subs []member[T], e *Event[T]) error {
	var errs []error
	for _, s := range subs {
		if err := s.runSync(ctx, s.chain, e); err != nil {
			errs = append(errs, &HandlerError{Topic: t.name, Subscription: s.name, Err: err})
		}
	}
	return errors.Join(errs...)
}
