package eventbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
)

// StoreTopic is a topic whose events are committed to a [Store] before any
// subscriber sees them: publish after commit. Publish appends the event;
// each subscription is a [Durable] subscription that reads it back from the
// store, so a subscriber never sees an event that the store has not
// acknowledged, and an event committed just before a crash is delivered
// after the restart, when the subscription catches up. A crash takes such
// an event back only from a store that may lose acknowledged appends: a
// [FileStore] under [SyncInterval] or [SyncNever], whose readers see an
// append once it is written, before it is synced, loses those of the last
// moments when the machine crashes. A StoreTopic is safe for
// concurrent use. The methods of a nil or zero StoreTopic, one not made by
// [NewStoreTopic], return an error wrapping [ErrInvalid].
type StoreTopic[T any] struct {
	bus       *Bus
	store     Store
	reg       *Registry
	name      string
	eventType string
	version   int  // T's schema version in reg
	nilKey    bool // T is a pointer or an interface with a key method
	nilEmbed  bool // T may embed a nil that its key method reaches (embedsNil)
}

// maxStoreTopicNameLen is the longest name of a StoreTopic, leaving room
// in the names of its durable subscriptions for '.' and a hashed
// subscription name (see durableName).
const maxStoreTopicNameLen = 200

// NewStoreTopic returns the topic name (1 to 200 letters, digits, '.', '_'
// and '-') of payloads of type T, which must be registered in r, committed
// to s and delivered by b. It returns an error wrapping [ErrInvalid] for a
// bad name, a nil argument, a Bus not made by [New], or a T whose key
// method is declared on *T only (see [TopicOptions].Key), or
// [ErrUnknownEvent] if T is not registered.
func NewStoreTopic[T any](b *Bus, s Store, r *Registry, name string) (*StoreTopic[T], error) {
	if err := checkNameLen("store topic", name, maxStoreTopicNameLen); err != nil {
		return nil, err
	}
	if err := b.check("NewStoreTopic"); err != nil {
		return nil, fmt.Errorf("store topic %q: %w", name, err)
	}
	switch {
	case s == nil:
		return nil, fmt.Errorf("%w: store topic %q: nil Store", ErrInvalid, name)
	case r == nil:
		return nil, fmt.Errorf("%w: store topic %q: nil Registry", ErrInvalid, name)
	}
	if err := checkKeyMethod[T](""); err != nil {
		return nil, fmt.Errorf("store topic %q: %w", name, err)
	}
	entry, err := entryOf[T](r)
	if err != nil {
		return nil, fmt.Errorf("store topic %q: %w", name, err)
	}
	return &StoreTopic[T]{bus: b, store: s, reg: r, name: name, eventType: entry.name, version: entry.version, nilKey: nilKeyed[T](), nilEmbed: embedsNil[T]()}, nil
}

// checkMade returns an error wrapping ErrInvalid for a nil StoreTopic, or
// one that NewStoreTopic did not make (a zero one has no bus), given to
// call.
func (t *StoreTopic[T]) checkMade(call string) error {
	if t == nil || t.bus == nil {
		return fmt.Errorf("%w: %s on a StoreTopic[%v] not made by NewStoreTopic", ErrInvalid, call, reflect.TypeFor[T]())
	}
	return nil
}

// Name returns the topic's name, or "" for a StoreTopic not made by
// [NewStoreTopic].
func (t *StoreTopic[T]) Name() string {
	if t == nil {
		return ""
	}
	return t.name
}

// EventType returns the event type name of T in the topic's [Registry],
// the Type of the events that Publish appends and Subscribe selects, or ""
// for a StoreTopic not made by [NewStoreTopic].
func (t *StoreTopic[T]) EventType() string {
	if t == nil {
		return ""
	}
	return t.eventType
}

// Bus returns the bus that delivers t's events to its subscriptions, or
// nil for a StoreTopic not made by [NewStoreTopic].
func (t *StoreTopic[T]) Bus() *Bus {
	if t == nil {
		return nil
	}
	return t.bus
}

// Store returns the store that t's events are committed to, or nil for a
// StoreTopic not made by [NewStoreTopic].
func (t *StoreTopic[T]) Store() Store {
	if t == nil {
		return nil
	}
	return t.store
}

// Publish appends payload to the store, in the stream named after the topic
// and the event's key ("orders:o1" for the key "o1" of topic "orders";
// "orders:" for no key), and returns once it is committed. The key
// comes from [WithKey], else from the payload's AggregateID() (or
// GetAggregateID()) method. As with [Topic.Publish], an event published
// with a handler's context is linked to the handled one. Pass the
// result's Position to [Durable.WaitFor] to wait for a subscriber. The
// event's ID is the one that a [PublishOption] of the caller's sets, as
// for Topic.Publish, else it comes from the bus's [Options].NewID, when it
// is set, which must then never repeat an ID over the store's life: an ID
// that the event's stream holds already makes the append an idempotent
// replay (see [Store]), so Publish stores nothing and returns the earlier
// event's result, with no error. A caller retrying a Publish whose result
// it did not get (a timeout, say) gives the retry the first's ID so, to
// store the event once. The event's time is the store's commit time,
// whatever an option sets.
//
// It returns the registry's or the store's error, or an error wrapping
// [ErrInvalid] for bad input as Topic.Publish does, for a nil pointer
// payload, which a Topic delivers but a store would keep for good, and for
// a key that Topic.Publish takes but that makes no stream name (see
// [Store]): the topic's name, ':' and the key must be valid UTF-8 of at
// most 1,024 bytes. It does not wait for any subscriber, and the bus may
// be closed.
func (t *StoreTopic[T]) Publish(ctx context.Context, payload T, opts ...PublishOption) (AppendResult, error) {
	if err := t.checkCall(ctx, "StoreTopic.Publish"); err != nil {
		return AppendResult{}, err
	}
	p, hasParent := parent(ctx)
	stream, e, err := t.event("Publish", payload, &p, hasParent, opts)
	if err != nil {
		return AppendResult{}, err
	}
	return t.store.Append(ctx, stream, Any, e)
}

// PublishBatch appends payloads, as many calls of Publish with ctx and opts
// would, in one atomic step: every event is committed, or none is, even
// when their keys put them in different streams (it uses
// [Store.AppendMulti]). results[i] is the revision and position of
// payloads[i]'s event, and the highest position is the one to pass to
// [Durable.WaitFor]. Subscribers see the events of each key in the order
// given: the store commits the events grouped by stream, the streams in
// the order of their first events, so the order across keys is not the
// batch's. With a [FileStore] it is the fast way to append many events:
// one write and one sync for the whole batch instead of one per event.
//
// A retry of a batch whose result was lost stores nothing twice if
// [Options].NewID gives its events the IDs of the first try: the store
// takes it as an idempotent replay (see [Store]), and it returns the first
// try's results. (They assume that each stream's events were committed
// together, as a PublishBatch commits them.) An empty batch appends
// nothing and returns no results.
//
// It returns an error as Publish does for the first payload that is bad
// input, with its index in the message, one wrapping [ErrInvalid] for
// events given one ID (a [PublishOption] that sets the ID sets it for
// every event), or the store's error, such as [ErrTooLarge] for a batch
// over the store's size limit: nothing was appended then.
func (t *StoreTopic[T]) PublishBatch(ctx context.Context, payloads []T, opts ...PublishOption) ([]AppendResult, error) {
	if err := t.checkCall(ctx, "StoreTopic.PublishBatch"); err != nil {
		return nil, err
	}
	if len(payloads) == 0 {
		return nil, nil
	}
	p, hasParent := parent(ctx)
	var appends []StreamAppend
	part := make(map[string]int)     // stream -> index in appends
	at := make([]int, len(payloads)) // payload -> index in its part's events
	streams := make([]int, len(payloads))
	var prev ID // the ID of the event before
	for i, payload := range payloads {
		stream, e, err := t.event("PublishBatch", payload, &p, hasParent, opts)
		if err != nil {
			return nil, fmt.Errorf("%w (payloads[%d])", err, i)
		}
		if i > 0 && e.ID == prev {
			// An option that sets the ID sets it for every event. The store
			// refuses one ID twice in a stream, but would take it in two,
			// where Idempotency would handle the first event alone.
			return nil, fmt.Errorf("%w: store topic %q: PublishBatch: payloads[%d] and payloads[%d] have the same event ID %v (a PublishOption that sets the ID sets it for every event)", ErrInvalid, t.name, i-1, i, e.ID)
		}
		prev = e.ID
		k, ok := part[stream]
		if !ok {
			k = len(appends)
			part[stream] = k
			appends = append(appends, StreamAppend{Stream: stream})
		}
		streams[i], at[i] = k, len(appends[k].Events)
		appends[k].Events = append(appends[k].Events, e)
	}
	res, err := t.store.AppendMulti(ctx, appends...)
	if err != nil {
		return nil, err
	}
	if len(res) != len(appends) {
		// A Store that breaks its contract: the events may be committed.
		return nil, fmt.Errorf("%w: store topic %q: PublishBatch: Store.AppendMulti of %d streams returned a result count of %d", ErrInvalid, t.name, len(appends), len(res))
	}
	// A stream's events were committed one after another: its result is
	// its last event's, and the others come before it.
	results := make([]AppendResult, len(payloads))
	for i, k := range streams {
		back := uint64(len(appends[k].Events) - 1 - at[i])
		results[i] = AppendResult{Revision: res[k].Revision - back, Position: res[k].Position - back}
	}
	return results, nil
}

// checkCall returns an error wrapping ErrInvalid for a StoreTopic not made
// by NewStoreTopic, or a nil ctx, given to call.
func (t *StoreTopic[T]) checkCall(ctx context.Context, call string) error {
	if err := t.checkMade(call); err != nil {
		return err
	}
	return checkContext(ctx, call)
}

// event returns payload encoded as the event that Publish appends, with the
// name of its stream; p is the lineage of ctx, if hasParent, which the
// caller reads once for a batch. call names the caller in errors.
func (t *StoreTopic[T]) event(call string, payload T, p *lineage, hasParent bool, opts []PublishOption) (string, EventData, error) {
	key, err := checkPublish(call, t.name, payload, opts, t.nilKey, t.nilEmbed)
	if err != nil {
		return "", EventData{}, err
	}
	if nilPointer(any(payload)) {
		// Encode takes it (JSON's null), and every subscriber would get
		// a nil, for good.
		return "", EventData{}, fmt.Errorf("%w: store topic %q: %s of a nil %T", ErrInvalid, t.name, call, any(payload))
	}
	// Stamped as Topic.Publish stamps it, for the options to see (see
	// PublishOption), though the store gives the event its time at commit.
	h := Header{Type: t.eventType, Topic: t.name, Key: key, Time: t.bus.clock.now(), SchemaVersion: t.version}
	if !t.nilEmbed { // else checkPublish took the key
		h.Key, _ = payloadKey(payload)
	}
	if t.bus.opts.NewID != nil {
		h.ID = t.bus.opts.NewID()
	}
	// The parent's lineage first and the options after, as Topic.stamp
	// does, so that an option such as WithCorrelationID wins.
	if hasParent {
		h.CausationID, h.CorrelationID = p.ID, p.CorrelationID
	}
	for _, o := range opts {
		o(&h)
	}
	if hasParent {
		h.Metadata = inherit(h.Metadata, p)
	}
	stream := t.stream(h.Key)
	if err := checkStream(stream); err != nil { // as the store would, but for this payload
		return "", EventData{}, fmt.Errorf("store topic %q: %s with key %.40q: %w", t.name, call, h.Key, err)
	}
	e, err := t.reg.Encode(payload)
	if err != nil {
		return "", EventData{}, err
	}
	if !h.ID.IsZero() { // Options.NewID's, or an option's
		e.ID = h.ID
	}
	e.CorrelationID, e.CausationID, e.Metadata = h.CorrelationID, h.CausationID, h.Metadata
	if e.CorrelationID.IsZero() {
		e.CorrelationID = e.ID
	}
	return stream, e, nil
}

// stream returns the name of the stream of the events of key: the topic's
// name, ':', which topic names do not have, and the key. So a topic's
// streams never mix with another's, even one whose name starts with its.
func (t *StoreTopic[T]) stream(key string) string { return t.name + ":" + key }

// Subscribe starts the durable subscription named after the topic and name
// (1 to 249 letters, digits, '.', '_' and '-'), which hands h the topic's
// events: those of T's event type in the topic's streams. The durable
// subscription's name is the topic's name, '.', and name ("orders.mailer"
// for topic "orders" and name "mailer"); or, for a name that has a '.',
// starts with "sha256-" or is too long for that, the topic's name,
// ".sha256-" and 32 hex digits of name's SHA-256. So every topic and name
// make a subscription of their own: topic "orders" with name "eu.mailer"
// never shares a checkpoint with topic "orders.eu" and name "mailer".
// opts.Filter is replaced by the topic's selection. Handlers see each
// event's stream as its Key, as a Durable's handlers do: "orders:o1" for
// an event published with the key "o1" (strings.CutPrefix gives it back),
// and "durable." and the durable subscription's name as its Topic
// ("durable.orders.mailer"), not the topic's. Handlers get every
// event decoded and upcast to the latest schema version of T's event type
// (see [Decode]), so T must be that version's Go type: a topic of an older
// one may publish, not subscribe. It returns an error wrapping [ErrInvalid]
// for a bad name or a T of an older version, or one as [SubscribeDurable]
// does. As there, ctx bounds only the read of the checkpoint: the
// subscription runs until [Durable.Stop] or the bus stops.
func (t *StoreTopic[T]) Subscribe(ctx context.Context, name string, h Handler[T], opts *DurableOptions) (*Durable, error) {
	o, err := t.subscription(ctx, "StoreTopic.Subscribe", name, opts)
	if err != nil {
		return nil, err
	}
	return SubscribeDurable(ctx, t.bus, t.store, t.reg, t.durableName(name), h, o)
}

// SubscribeBatch is Subscribe with a handler that takes up to
// opts.Subscription.BatchSize events at once: see [SubscribeDurableBatch].
func (t *StoreTopic[T]) SubscribeBatch(ctx context.Context, name string, h BatchHandler[T], opts *DurableOptions) (*Durable, error) {
	o, err := t.subscription(ctx, "StoreTopic.SubscribeBatch", name, opts)
	if err != nil {
		return nil, err
	}
	return SubscribeDurableBatch(ctx, t.bus, t.store, t.reg, t.durableName(name), h, o)
}

// subscription checks the arguments of call, a subscription called name,
// and returns opts with the topic's filter.
func (t *StoreTopic[T]) subscription(ctx context.Context, call, name string, opts *DurableOptions) (*DurableOptions, error) {
	if err := t.checkCall(ctx, call); err != nil {
		return nil, err
	}
	if err := checkName("subscription", name); err != nil {
		return nil, fmt.Errorf("store topic %q: %w", t.name, err)
	}
	var o DurableOptions
	if opts != nil {
		o = *opts
	}
	o.Filter = Filter{StreamPrefix: t.stream(""), Types: []string{t.eventType}}
	return &o, nil
}

// durableName returns the name of the durable subscription name of the
// topic, as Subscribe documents. The last '.' of a durable name parts the
// topic's name from the subscription's, which therefore has no '.' of its
// own; names that do, and those too long, are hashed, into a name that
// starts with "sha256-" and so is never that of another subscription.
// Hashed, the longest topic's name makes a durable name of 200+8+32 = 240
// bytes, the most there is room for.
func (t *StoreTopic[T]) durableName(name string) string {
	if s := t.name + "." + name; !strings.Contains(name, ".") && !strings.HasPrefix(name, "sha256-") && len(s) <= maxDurableNameLen {
		return s
	}
	sum := sha256.Sum256([]byte(name))
	return t.name + ".sha256-" + hex.EncodeToString(sum[:16])
}
