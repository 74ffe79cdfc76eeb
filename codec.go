package eventbus

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"sync"
)

// Codec turns payloads into bytes and back. Marshal receives a payload
// value of the Go type it was registered for, Unmarshal a pointer to one.
// Unmarshal must not modify data, nor keep it in the payload once it
// returns (copy what the payload holds, as encoding/json does): [Decode]
// passes it the Data of a stored event as it is, which the store shares
// with its other readers (see [RecordedEvent]), so that a handler changing
// its payload would change the event for all of them. A Codec must be safe
// for concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// jsonCodec is the default Codec: encoding/json.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// RegistryOptions configures a [Registry]. The zero value (or nil) takes
// the defaults.
type RegistryOptions struct {
	// CompressAbove, if positive, compresses encoded payloads larger than
	// this many bytes, up to 64 MiB (the most [Decode] inflates), with
	// DEFLATE (compress/flate), when that makes the event smaller as a
	// store counts it (see [MemoryStoreOptions].MaxEventSize: the
	// compressed Data and its Encoding), and marks them so in
	// [EventData].Encoding. Zero means never.
	CompressAbove int
}

// TypeOptions says how [Register] registers a Go type. The zero value (or
// nil) takes the defaults.
type TypeOptions struct {
	// Name is the event type name; empty means the payload's EventType()
	// or GetEventType() method, else the Go type's name, as for topics.
	// Stored events and snapshots are found and decoded by this name, so
	// it must not change once some are stored: renaming a Go type that
	// takes its name from it renames its events, and those stored under
	// the old name then fail to decode with an error wrapping
	// [ErrUnknownEvent], while the snapshots of a state type so renamed
	// are no longer found (a load replays its stream instead, and fails
	// with [ErrTruncated] if that hides events). Set Name, or give the
	// type an EventType method, to keep a name through a rename.
	// Upcasters join versions of one name only: to read the events of an
	// old name after all, register a Go type under it as well.
	Name string
	// Version is the schema version that this Go type encodes, at most
	// 1<<31, as in a [Store]; zero means 1.
	// Register older versions' Go types under the same name to read old
	// events, with upcasters between consecutive versions.
	Version int
	// Codec encodes the payloads; nil means encoding/json, which writes
	// each string as valid UTF-8, replacing invalid bytes with U+FFFD, so
	// such a string does not come back as it was: keep bytes that are not
	// text in a []byte field, or use a Codec of your own. The state of a
	// snapshot must come back from the codec as it went in (see
	// [Snapshot]).
	Codec Codec
}

// Registry maps event type names and schema versions to Go types and
// codecs, turning payloads into [EventData] with [Registry.Encode] and
// back with [Decode], upcasting old versions to the latest one on the way.
// Make one with [NewRegistry], and register every type before use; a
// Registry is safe for concurrent use. Every function given a nil or zero
// Registry returns an error wrapping [ErrInvalid].
type Registry struct {
	compressAbove int

	mu     sync.RWMutex
	byGo   map[reflect.Type]*codecEntry
	byName map[string]*eventVersions

	writers sync.Pool // *flate.Writer
}

// codecEntry is one registered Go type.
type codecEntry struct {
	goType  reflect.Type
	name    string
	version int
	codec   Codec
	decode  func(data []byte) (any, error)
}

// marshal returns the codec's encoding of v.
func (e *codecEntry) marshal(v any) (_ []byte, err error) {
	defer recovered(&err)
	return e.codec.Marshal(v)
}

// recovered, deferred by each call of a user's codec or upcaster, turns
// its panic into *err, a *PanicError: bytes that make a codec panic are
// bad input, which gets an error, not a crash of the process.
func recovered(err *error) {
	if r := recover(); r != nil {
		*err = &PanicError{Value: r, Stack: debug.Stack()}
	}
}

// eventVersions is the registered versions of one event type name.
type eventVersions struct {
	versions  map[int]*codecEntry
	latest    int
	upcasters map[int]func(any) (any, error) // from version n to n+1
}

// NewRegistry returns an empty Registry. It returns an error wrapping
// [ErrInvalid] for a negative CompressAbove.
func NewRegistry(opts *RegistryOptions) (*Registry, error) {
	var o RegistryOptions
	if opts != nil {
		o = *opts
	}
	if o.CompressAbove < 0 {
		return nil, fmt.Errorf("%w: RegistryOptions: CompressAbove %d is negative", ErrInvalid, o.CompressAbove)
	}
	return &Registry{compressAbove: o.CompressAbove, byGo: make(map[reflect.Type]*codecEntry), byName: make(map[string]*eventVersions)}, nil
}

// Register adds payload type T to r. It returns an error wrapping
// [ErrInvalid] for an interface type T, a bad name (or an EventType method
// that panics on T's zero value) or a version outside 0 to 1<<31, and
// [ErrDuplicate] if T, or the name and version, is registered already.
// T must be the payloads' concrete type: [Registry.Encode] finds a
// payload's registration by its dynamic type, and a codec cannot decode
// into an interface.
func Register[T any](r *Registry, opts *TypeOptions) error {
	if err := r.check("Register"); err != nil {
		return err
	}
	var o TypeOptions
	if opts != nil {
		o = *opts
	}
	goType := reflect.TypeFor[T]()
	if goType.Kind() == reflect.Interface {
		return fmt.Errorf("%w: Register %v: an interface type; register each concrete payload type", ErrInvalid, goType)
	}
	if o.Name == "" {
		var err error
		if o.Name, err = typeName[T]("TypeOptions.Name"); err != nil {
			return err
		}
	} else if err := checkName("event type", o.Name); err != nil {
		return err
	}
	if o.Version < 0 || int64(o.Version) > maxSchemaVersion {
		return fmt.Errorf("%w: Register %v: Version %d is outside 0 to %d", ErrInvalid, goType, o.Version, int64(maxSchemaVersion))
	}
	if o.Version == 0 {
		o.Version = 1
	}
	if o.Codec == nil {
		o.Codec = jsonCodec{}
	}
	c := o.Codec
	entry := &codecEntry{goType: goType, name: o.Name, version: o.Version, codec: c, decode: func(data []byte) (_ any, err error) {
		defer recovered(&err)
		var v T
		err = c.Unmarshal(data, &v)
		return v, err
	}}

	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.byGo[goType]; ok {
		return fmt.Errorf("%w: %v is registered already, as %q version %d", ErrDuplicate, goType, prev.name, prev.version)
	}
	ev := r.byName[o.Name]
	if ev == nil {
		ev = &eventVersions{versions: make(map[int]*codecEntry), upcasters: make(map[int]func(any) (any, error))}
		r.byName[o.Name] = ev
	}
	if prev, ok := ev.versions[o.Version]; ok {
		// Name the holder: two packages' types of one name take the same
		// default event type name, and the packages may share a name too.
		return fmt.Errorf("%w: %q version %d is registered already, for %s; register %s under another name or version", ErrDuplicate, o.Name, o.Version, qualified(prev.goType), qualified(goType))
	}
	ev.versions[o.Version] = entry
	ev.latest = max(ev.latest, o.Version)
	r.byGo[goType] = entry
	return nil
}

// qualified returns t's name with its package's import path, which tells
// apart the types of one name of two packages of one name (two "v1"
// packages, say), where t.String() gives the package's name only; "nil"
// for none.
func qualified(t reflect.Type) string {
	switch {
	case t == nil:
		return "nil"
	case t.Kind() == reflect.Pointer && t.Name() == "":
		return "*" + qualified(t.Elem())
	case t.Name() != "" && t.PkgPath() != "":
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

// check returns an error wrapping ErrInvalid for a nil Registry, or one
// that NewRegistry did not make (a zero Registry has no maps), which every
// function taking one calls first; the error names call, unless it is ""
// for a caller that names itself.
func (r *Registry) check(call string) error {
	if r != nil && r.byGo != nil {
		return nil
	}
	if call != "" {
		call += ": "
	}
	return fmt.Errorf("%w: %snil Registry, or one not made by NewRegistry", ErrInvalid, call)
}

// entryFor returns the registration of v's Go type.
func (r *Registry) entryFor(v any) (*codecEntry, error) {
	if err := r.check(""); err != nil {
		return nil, err
	}
	if v == nil {
		// Its message would otherwise name the Go type <nil>.
		return nil, fmt.Errorf("%w: a nil payload has no Go type to find a registration by", ErrUnknownEvent)
	}
	r.mu.RLock()
	entry := r.byGo[reflect.TypeOf(v)]
	r.mu.RUnlock()
	if entry == nil {
		return nil, fmt.Errorf("%w: Go type %T is not registered", ErrUnknownEvent, v)
	}
	return entry, nil
}

// entryOf returns the registration of Go type T. The zero value of an
// interface T is nil, which names no type: for one, entryOf says that T is
// an interface, which Register refuses.
func entryOf[T any](r *Registry) (*codecEntry, error) {
	if rt := reflect.TypeFor[T](); rt.Kind() == reflect.Interface {
		if err := r.check(""); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v is an interface type, which is never registered; take a registered concrete type", ErrUnknownEvent, rt)
	}
	var zero T
	return r.entryFor(zero)
}

// latest returns the latest schema version registered for the event type
// name, zero for none.
func (r *Registry) latest(name string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if ev := r.byName[name]; ev != nil {
		return ev.latest
	}
	return 0
}

// checkLatest returns an error wrapping ErrInvalid if E is the Go type of
// an older schema version than the latest registered in r for its event
// type, and one wrapping ErrUnknownEvent if E is a concrete type not
// registered in r (a pointer to a registered type, say): [Decode] gives
// only the latest version's registered Go type, so no event would decode
// to E. An interface E passes. It returns the event type of a concrete E,
// the only one whose events decode to it, and "" for an interface.
func checkLatest[E any](r *Registry) (string, error) {
	if reflect.TypeFor[E]().Kind() == reflect.Interface {
		return "", r.check("")
	}
	entry, err := entryOf[E](r)
	if err != nil {
		return "", fmt.Errorf("%w: no event decodes to it: register it, or take the registered type or an interface", err)
	}
	if latest := r.latest(entry.name); entry.version != latest {
		return "", fmt.Errorf("%w: %v is version %d of %q, whose latest is %d: events are upcast to the latest, so none would decode to it; use the latest version's Go type", ErrInvalid, reflect.TypeFor[E](), entry.version, entry.name, latest)
	}
	return entry.name, nil
}

// Encode returns payload v, whose Go type must be registered, as an event
// to append, with a new ID. It returns an error wrapping [ErrUnknownEvent]
// for a type not registered, or the codec's error (a [*PanicError] for a
// panic).
func (r *Registry) Encode(v any) (EventData, error) {
	if err := r.check("Registry.Encode"); err != nil {
		return EventData{}, err
	}
	entry, err := r.entryFor(v)
	if err != nil {
		return EventData{}, err
	}
	data, err := entry.marshal(v)
	if err != nil {
		return EventData{}, fmt.Errorf("eventbus: encode %q version %d: %w", entry.name, entry.version, err)
	}
	e := EventData{ID: NewID(), Type: entry.name, SchemaVersion: entry.version, Data: data}
	// A payload that inflates past maxInflated could be stored but never
	// decoded: it stays as it is, for the store's size limit to judge.
	if r.compressAbove > 0 && len(data) > r.compressAbove && len(data) <= maxInflated {
		// A store counts the Encoding in an event's size: compression
		// that saves fewer bytes than that would make the event larger.
		if z := r.deflate(data); len(z)+len(encodingDeflate) < len(data) {
			e.Data, e.Encoding = z, encodingDeflate
		}
	}
	return e, nil
}

// encodingDeflate marks data compressed with compress/flate.
const encodingDeflate = "deflate"

// maxInflated bounds the size of a decompressed payload, so that a
// hostile payload cannot exhaust memory.
const maxInflated = 64 << 20

func (r *Registry) deflate(data []byte) []byte {
	var buf bytes.Buffer
	w, _ := r.writers.Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(&buf, flate.DefaultCompression) // the level is valid
	} else {
		w.Reset(&buf)
	}
	_, _ = w.Write(data) // writes to a bytes.Buffer do not fail
	_ = w.Close()
	r.writers.Put(w)
	return buf.Bytes()
}

// inflate returns data decompressed. Bytes after the end of the deflate
// stream, which deflate never writes, are corrupt data: they may hold a
// payload that would otherwise be dropped without a word.
func inflate(data []byte) ([]byte, error) {
	br := bytes.NewReader(data) // an io.ByteReader: flate reads no further
	fr := flate.NewReader(br)
	defer fr.Close()
	out, err := io.ReadAll(io.LimitReader(fr, maxInflated+1))
	if err != nil {
		return nil, fmt.Errorf("%w: deflated payload: %v", ErrInvalid, err)
	}
	if len(out) > maxInflated {
		return nil, fmt.Errorf("%w: deflated payload inflates to more than %d bytes", ErrTooLarge, maxInflated)
	}
	if br.Len() > 0 {
		return nil, fmt.Errorf("%w: deflated payload: %d bytes after the end of its stream", ErrInvalid, br.Len())
	}
	return out, nil
}

// Decompress returns e's Data with its Encoding undone: Data itself when
// it has none, and inflated when it is "deflate". [Decode] decompresses so
// before the codec gets the bytes; Decompress serves those who read
// events without a [Registry], as the eventbus command does to show them.
// It returns an error wrapping [ErrInvalid] for an unknown Encoding or
// corrupt deflated Data (bytes after the end of the deflate stream
// included), and [ErrTooLarge] for Data that inflates to more than
// 64 MiB.
func (e EventData) Decompress() ([]byte, error) {
	switch e.Encoding {
	case "":
		return e.Data, nil
	case encodingDeflate:
		return inflate(e.Data)
	}
	return nil, fmt.Errorf("%w: unknown Encoding %q", ErrInvalid, e.Encoding)
}

// Decode returns the payload of e as the Go type registered for its type
// name and latest schema version, upcasting an older version through the
// registered upcasters. T is that Go type, or any (or another interface)
// to decode events of several types, to be told apart with a type switch.
//
// It returns an error wrapping [ErrUnknownEvent] when e's type, its
// version or an upcaster on the way is not registered, [ErrInvalid] when
// the payload is not T, its SchemaVersion is negative, its Encoding is
// unknown or its deflated Data is corrupt (bytes after the end of the
// deflate stream included), [ErrTooLarge] when that Data inflates to more
// than 64 MiB, or the codec's or the upcaster's error (a [*PanicError] for
// a panic), and then the zero value of T. A payload that
// the codec decodes to a zero value, such as JSON's null (a nil pointer
// for a pointer type), is no error: Decode returns it.
func Decode[T any](r *Registry, e EventData) (T, error) {
	if err := r.check("Decode"); err != nil {
		var zero T
		return zero, err
	}
	t, _, err := decodeLatest[T](r, e)
	return t, err
}

// decodeLatest is Decode, which also returns the schema version of the
// payload, the latest of its type.
func decodeLatest[T any](r *Registry, e EventData) (T, int, error) {
	var zero T
	v, version, err := r.decode(e, 0)
	if err != nil {
		return zero, 0, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, 0, fmt.Errorf("%w: event %q decodes to %s, not %s", ErrInvalid, e.Type, qualified(reflect.TypeOf(v)), qualified(reflect.TypeFor[T]()))
	}
	return t, version, nil
}

// decode decodes e with the Go type of its version and upcasts it to
// version to, if that is later, or to the latest version if to is zero.
// It returns the payload and the version it has reached.
func (r *Registry) decode(e EventData, to int) (_ any, version int, _ error) {
	if err := r.check(""); err != nil {
		return nil, 0, err
	}
	if e.SchemaVersion < 0 {
		// As a store refuses to append it: no version to decode it as.
		return nil, 0, fmt.Errorf("%w: event %q: SchemaVersion %d is negative", ErrInvalid, e.Type, e.SchemaVersion)
	}
	version = max(e.SchemaVersion, 1)
	r.mu.RLock()
	ev := r.byName[e.Type]
	var entry *codecEntry
	var latest int
	if ev != nil {
		entry, latest = ev.versions[version], ev.latest
	}
	r.mu.RUnlock()
	switch {
	case ev == nil:
		return nil, 0, fmt.Errorf("%w: event type %q is not registered", ErrUnknownEvent, e.Type)
	case entry == nil:
		return nil, 0, fmt.Errorf("%w: %q version %d is not registered (latest is %d)", ErrUnknownEvent, e.Type, version, latest)
	}
	data, err := e.Decompress()
	if err != nil {
		return nil, 0, fmt.Errorf("event %q version %d: %w", e.Type, version, err)
	}
	v, err := entry.decode(data)
	if err != nil {
		return nil, 0, fmt.Errorf("eventbus: decode %q version %d: %w", e.Type, version, err)
	}
	if to == 0 {
		to = latest
	}
	for ; version < to; version++ {
		r.mu.RLock()
		up := ev.upcasters[version]
		r.mu.RUnlock()
		if up == nil {
			return nil, 0, fmt.Errorf("%w: %q has no upcaster from version %d to %d", ErrUnknownEvent, e.Type, version, version+1)
		}
		if v, err = up(v); err != nil {
			return nil, 0, fmt.Errorf("eventbus: upcast %q from version %d: %w", e.Type, version, err)
		}
	}
	return v, version, nil
}
