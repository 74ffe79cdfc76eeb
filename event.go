package eventbus

import (
	"fmt"
	"reflect"
	"time"
	"unicode/utf8"
)

// Header is what the bus knows about an event besides its payload: the
// envelope. The bus fills it in at publish; handlers read it.
type Header struct {
	// ID is unique per event and sorts by publish time; see [ID].
	ID ID
	// Type is the event type name, such as "user.created"; see [NewTopic]
	// for how it is chosen.
	Type string
	// Topic is the name of the topic the event was published on.
	Topic string
	// Key orders events: within one subscription, events with the same key
	// are handled one at a time in publish order. Empty means no order. In
	// Sync mode each publisher runs the handlers itself, so only its own
	// events are ordered, key or not.
	Key string
	// Time is when the event was published.
	Time time.Time
	// SchemaVersion is the version of the payload's schema (1 unless the
	// topic says otherwise).
	SchemaVersion int
	// CorrelationID ties together every event caused, directly or not, by
	// one original event: it is that event's ID, inherited by each event
	// that a handler publishes.
	CorrelationID ID
	// CausationID is the ID of the event whose handler published this one;
	// zero for an event published outside any handler.
	CausationID ID
	// Metadata carries free-form strings such as a W3C traceparent. It is
	// nil unless the publisher set some ([WithMetadata]) or published with
	// a context that carries a trace context, of [WithTraceparent] or a
	// handler's whose event has one: the event inherits its traceparent
	// (see [TraceparentKey]). Handlers must not modify it: all
	// subscriptions of a topic share it.
	Metadata Metadata
	// Position is the event's global position in the [Store] it was read
	// from, for events delivered by a [Durable] subscription or a
	// [StoreTopic]; zero for events published straight to a [Topic].
	Position uint64
}

// Metadata holds an event's free-form string attributes.
type Metadata map[string]string

// Event is a published event: its envelope and its typed payload. Handlers
// receive it by value.
type Event[T any] struct {
	Header
	// Payload is the value given to Publish.
	Payload T
}

// The methods a payload type may have. The Get* forms are those of the
// original design's Event interface.
type (
	eventTyper     interface{ EventType() string }
	getEventTyper  interface{ GetEventType() string }
	aggregateIDer  interface{ AggregateID() string }
	getAggregateID interface{ GetAggregateID() string }
)

// typeName returns the event type name of payloads of type T: EventType()
// or GetEventType() on a pointer to a zero value (a method declared on *T
// names T too, as T and *T share a name), else the Go type's name. It
// returns an error wrapping ErrInvalid if the method panics, as one that
// dereferences a nil field does, or if the name is not valid; that error
// says how to give one: option, the caller's option that names the type
// instead, or a method, for a named type without one (a type without a
// name, such as []byte, can have no methods).
func typeName[T any](option string) (_ string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: payload %v: its event type method panicked on the zero value: %v", ErrInvalid, reflect.TypeFor[T](), r)
		}
	}()
	var zero T
	probe := any(zero)
	rt := reflect.TypeFor[T]()
	switch rt.Kind() {
	case reflect.Pointer:
		probe = reflect.New(rt.Elem()).Interface()
	case reflect.Interface:
	default:
		probe = reflect.New(rt).Interface()
	}
	var name, how string
	switch p := probe.(type) {
	case eventTyper:
		name, how = p.EventType(), "its EventType method returns it: fix it, or set "
	case getEventTyper:
		name, how = p.GetEventType(), "its GetEventType method returns it: fix it, or set "
	default:
		for rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		name, how = rt.Name(), "set "
		if name != "" {
			how = "add an EventType() string method, or set "
		}
	}
	if err := checkName("event type", name); err != nil {
		return "", fmt.Errorf("%w (payload %v: %s%s)", err, reflect.TypeFor[T](), how, option)
	}
	return name, nil
}

// payloadKey returns the key of payload v from its AggregateID() or
// GetAggregateID() method, and whether it has one.
func payloadKey[T any](v T) (string, bool) {
	switch p := any(v).(type) {
	case aggregateIDer:
		return p.AggregateID(), true
	case getAggregateID:
		return p.GetAggregateID(), true
	}
	return "", false
}

// nilKeyed reports whether T is a pointer type with a key method, which a
// nil payload cannot run, or an interface type with one, whose payloads may
// hold a nil pointer.
func nilKeyed[T any]() bool {
	k := reflect.TypeFor[T]().Kind()
	return hasPayloadKey[T]() && (k == reflect.Pointer || k == reflect.Interface)
}

// embedsNil reports whether T has a key method and embeds a pointer or an
// interface, at any depth, or is an interface, whose values may: a key
// method promoted through an embedded pointer or interface that is nil
// dereferences it. T's own method may shadow the promoted one; telling
// which runs would take the source, so the check then runs for nothing.
func embedsNil[T any]() bool {
	rt := reflect.TypeFor[T]()
	return hasPayloadKey[T]() && (rt.Kind() == reflect.Interface || embeds(rt))
}

// embeds reports whether struct type rt, or the struct rt points to, embeds
// a pointer or an interface, directly or through the structs it embeds.
func embeds(rt reflect.Type) bool {
	if rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	if rt.Kind() != reflect.Struct {
		return false
	}
	for i := range rt.NumField() {
		if f := rt.Field(i); f.Anonymous {
			switch f.Type.Kind() {
			case reflect.Pointer, reflect.Interface:
				return true
			case reflect.Struct:
				if embeds(f.Type) {
					return true
				}
			}
		}
	}
	return false
}

// checkPublish returns an error wrapping ErrInvalid for a nil option, for
// a nil pointer payload of a type whose key comes from its method (nilKey,
// from nilKeyed, says whether it may), held by an interface or not, and
// for a payload whose key method panics, as one promoted through a nil
// that it embeds does (nilEmbed, from embedsNil, says whether it may). A
// nil interface has no key method to run: its event has no key. With
// nilEmbed, it returns the key the method gave, so that the caller does
// not run it again. call names the caller's method in the errors.
func checkPublish[T any](call, topic string, payload T, opts []PublishOption, nilKey, nilEmbed bool) (key string, err error) {
	for _, o := range opts {
		if o == nil {
			return "", fmt.Errorf("%w: topic %q: %s with a nil PublishOption", ErrInvalid, topic, call)
		}
	}
	if nilKey {
		if nilPointer(any(payload)) {
			return "", fmt.Errorf("%w: topic %q: %s of a nil %T, whose key comes from its method", ErrInvalid, topic, call, any(payload))
		}
	}
	if nilEmbed {
		return checkKey(call, topic, payload)
	}
	return "", nil
}

// nilPointer reports whether v holds a nil pointer.
func nilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// checkKey returns payload's key from its method, or an error wrapping
// ErrInvalid, naming call, if the method panics.
func checkKey[T any](call, topic string, payload T) (key string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: topic %q: %s of a %T whose key method panicked (is a pointer it embeds nil?): %v", ErrInvalid, topic, call, any(payload), r)
		}
	}()
	key, _ = payloadKey(payload)
	return key, nil
}

// hasPayloadKey reports whether T has a key method.
func hasPayloadKey[T any]() bool { return hasKeyMethod(reflect.TypeFor[T]()) }

func hasKeyMethod(rt reflect.Type) bool {
	return rt.Implements(reflect.TypeFor[aggregateIDer]()) || rt.Implements(reflect.TypeFor[getAggregateID]())
}

// checkKeyMethod returns an error wrapping ErrInvalid if T, not a pointer,
// has no key method but *T has one: a payload of type T cannot call it
// without a copy on the heap per event, and ignoring it would leave the
// events keyless, with no order, without a word. or names a further way
// out, such as a key function, for the message.
func checkKeyMethod[T any](or string) error {
	rt := reflect.TypeFor[T]()
	if rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Interface || hasKeyMethod(rt) || !hasKeyMethod(reflect.PointerTo(rt)) {
		return nil
	}
	return fmt.Errorf("%w: payload %v has its key method (AggregateID or GetAggregateID) on *%v only, which a %v cannot call: declare it on %v, make the payload type *%v%s", ErrInvalid, rt, rt, rt, rt, rt, or)
}

// maxNameLen is Kafka's limit on topic names.
const maxNameLen = 249

// checkName validates topic, subscription and event type names: 1 to 249
// characters from [A-Za-z0-9._-], the characters Kafka allows in topic
// names. Kafka also refuses "." and "..", which are valid names here; the
// Kafka bridge checks the topic names it is given itself.
func checkName(what, name string) error { return checkNameLen(what, name, maxNameLen) }

// checkNameLen is checkName for names of at most limit characters.
func checkNameLen(what, name string, limit int) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalid, what)
	}
	if len(name) > limit {
		return fmt.Errorf("%w: %s name %.20q... is %d bytes, more than %d", ErrInvalid, what, name, len(name), limit)
	}
	for i := range len(name) {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s name %q has %s at byte %d; use letters, digits, '.', '_' and '-'", ErrInvalid, what, name, charAt(name, i), i)
		}
	}
	return nil
}

// charAt quotes the character at byte i of s for an error message: as
// typed ('é'), not its first byte ('Ã'), or the byte where s is not UTF-8
// ('\xff').
func charAt[S string | []byte](s S, i int) string {
	c := s[i]
	if r, size := utf8.DecodeRuneInString(string(s[i:])); size > 1 {
		return fmt.Sprintf("%q", r)
	} else if c >= utf8.RuneSelf {
		return fmt.Sprintf(`'\x%02x'`, c)
	}
	return fmt.Sprintf("%q", rune(c))
}
