package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Checkpoints keeps the position from which each relay resumes. Load returns
// 0 for a relay that never saved one. Save is called by one goroutine of a
// relay at a time, with positions that only grow; implementations must be
// safe for concurrent use by relays of different names.
type Checkpoints interface {
	Load(ctx context.Context, name string) (uint64, error)
	Save(ctx context.Context, name string, next uint64) error
}

// StoreCheckpoints returns Checkpoints kept in s itself, each relay's in the
// system stream "$checkpoint-kafka-relay:" followed by its name, one small
// event per save. The stream has MaxCount 1 (see [eventbus.StreamMetadata]),
// as the bus's own checkpoint streams do, so that reads show only the latest
// save; the store may still hold older ones (a MemoryStore for good, a
// FileStore until retention). Like the bus's, the stream starts with
// "$checkpoint-", which relays and durable subscriptions never handle (see
// RelayOptions.Filter); the ':' keeps it apart from the checkpoint stream
// of every durable subscription, whose names have none.
//
// Relays of earlier versions saved in the stream "$kafka-relay-" followed
// by the name: Load reads that one while the relay's new stream holds no
// checkpoint, so that a relay resumes where it stopped; from its first
// save on, the new stream holds its checkpoint.
//
// The methods of Checkpoints of a nil store return an error wrapping
// eventbus.ErrInvalid.
func StoreCheckpoints(s eventbus.Store) Checkpoints { return storeCheckpoints{s} }

type storeCheckpoints struct{ s eventbus.Store }

var errNilCheckpointStore = fmt.Errorf("%w: StoreCheckpoints of a nil store", eventbus.ErrInvalid)

const checkpointType = "kafka.relay.checkpoint"

// The prefixes of the streams of a store's bookkeeping: a consumer of the
// store that handled one would make another (a checkpoint moved, an event
// recorded as processed), and two consumers that handled each other's would
// never settle. Every consumer, durable subscriptions and relays alike,
// keeps its books in streams that start with one of them, and handles no
// stream that does. They are the root package's checkpointPrefix and
// processedStreamPrefix, which it does not export.
const (
	checkpointPrefix = "$checkpoint-"
	processedPrefix  = "$processed-"
)

// oldCheckpointPrefix begins the name of the checkpoint stream of a relay
// saved by an earlier version.
const oldCheckpointPrefix = "$kafka-relay-"

// checkpointStream returns the system stream of the checkpoints of the relay
// name.
func checkpointStream(name string) string { return checkpointPrefix + "kafka-relay:" + name }

// bookkeeping reports whether stream holds a consumer's books, which a relay
// never relays: relayed, or counted as progress, its own checkpoint would
// make the next save, and that the next, for as long as the relay runs; and
// another consumer's would make this relay save, whose save that consumer
// would handle in turn, each prodding the other for ever. The checkpoint
// streams of relays of earlier versions count too.
func bookkeeping(stream string) bool {
	return strings.HasPrefix(stream, checkpointPrefix) || strings.HasPrefix(stream, processedPrefix) || strings.HasPrefix(stream, oldCheckpointPrefix)
}

// Load returns the relay's checkpoint in its stream, or else in its stream
// of an earlier version, or else 0.
func (c storeCheckpoints) Load(ctx context.Context, name string) (uint64, error) {
	if c.s == nil {
		return 0, errNilCheckpointStore
	}
	for _, stream := range []string{checkpointStream(name), oldCheckpointPrefix + name} {
		next, ok, err := c.load(ctx, name, stream)
		if err != nil || ok {
			return next, err
		}
	}
	return 0, nil
}

// load returns the latest checkpoint of the relay name in stream, and
// whether there is one.
func (c storeCheckpoints) load(ctx context.Context, name, stream string) (uint64, bool, error) {
	for e, err := range c.s.ReadStream(ctx, stream, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}) {
		if err != nil {
			return 0, false, err
		}
		next, err := strconv.ParseUint(string(e.Data), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("%w: checkpoint of relay %q at position %d: %v", eventbus.ErrInvalid, name, e.Position, err)
		}
		return next, true, nil
	}
	return 0, false, nil
}

// Save appends next to the relay's stream, having given the stream MaxCount
// 1 first if it does not have it: only the latest save is ever read, and
// without the limit a relay that runs for months leaves one event per
// CheckpointInterval behind it.
func (c storeCheckpoints) Save(ctx context.Context, name string, next uint64) error {
	if c.s == nil {
		return errNilCheckpointStore
	}
	stream := checkpointStream(name)
	info, err := c.s.StreamInfo(ctx, stream)
	if err != nil {
		return err
	}
	if md := info.Metadata; md.MaxCount != 1 {
		md.MaxCount = 1
		if err := c.s.SetStreamMetadata(ctx, stream, md); err != nil {
			return err
		}
	}
	_, err = c.s.Append(ctx, stream, eventbus.Any, eventbus.EventData{
		ID: eventbus.NewID(), Type: checkpointType, Data: strconv.AppendUint(nil, next, 10),
	})
	return err
}

// RelayOptions configures a Relay. Name and Topic (or TopicFor) are required;
// the other fields' zero values take the defaults.
type RelayOptions struct {
	// Name identifies the relay's checkpoint: 1 to 200 letters, digits,
	// '.', '_' and '-'.
	Name string
	// Topic is the Kafka topic of every event, unless TopicFor is set: 1
	// to 249 letters, digits, '.', '_' and '-', other than "." and "..",
	// as Kafka takes. The bridge creates no topics: an event for a topic
	// that Kafka does not have fails once franz-go has asked for it a few
	// times (kgo.UnknownTopicRetries, a second or so), with a
	// [*ProduceError] wrapping kerr.UnknownTopicOrPartition, and stops
	// Run, unless ProducerOptions.Client sets kgo.AllowAutoTopicCreation
	// and the brokers create it.
	Topic string
	// TopicFor, if set, chooses each event's Kafka topic. An event for
	// which it returns a name that Kafka does not take fails as a record
	// that can never be written (see Relay).
	TopicFor func(eventbus.RecordedEvent) string
	// Key returns an event's record key; nil means its stream, so that the
	// events of one stream keep their order. A Consumer gives the key to
	// the event it publishes: by default a handler there sees the stream
	// ("orders:o1" for the key "o1" of an eventbus.StoreTopic named
	// "orders"), not the key given to StoreTopic.Publish, unless Key cuts
	// the topic's prefix off.
	Key func(eventbus.RecordedEvent) string
	// Filter selects the events to relay; its zero value selects every
	// event outside system streams. The streams of a store's bookkeeping
	// are never relayed, even by a filter that selects system streams
	// (StreamPrefix "$", say): the checkpoints (streams starting with
	// "$checkpoint-", as StoreCheckpoints' and those of durable
	// subscriptions do, or with "$kafka-relay-", as those of relays of
	// earlier versions did) and the records of
	// [eventbus.NewStoreProcessed] (starting with "$processed-"), the
	// relay's own and every other consumer's, since handling each would
	// make another: a relay and a durable subscription that selected them
	// would hand them back and forth for ever.
	Filter eventbus.Filter
	// Checkpoints keeps the relay's position; nil means StoreCheckpoints of
	// the relay's store.
	Checkpoints Checkpoints
	// CheckpointInterval is the most time between saves of the checkpoint
	// while records are acknowledged; zero means one second. A save is also
	// made when Run returns, once it has waited for the records in flight,
	// for CheckpointInterval at most.
	CheckpointInterval time.Duration
	// MaxInFlight caps the events read and not yet acknowledged, those
	// held back behind an earlier record of their key included; zero means
	// 10,000.
	MaxInFlight int
}

// Relay copies the events of a Store to Kafka: the transactional outbox
// pattern. Append events to the store in the same transaction as the state
// they describe, and the relay publishes them, even after a crash.
//
// # Delivery
//
// Run tails the store (Store.Subscribe) from the relay's checkpoint and
// produces each event selected as a record keyed by its stream (see
// RelayOptions.Key), through an idempotent Producer. Acknowledgements come
// back out of order across keys; the checkpoint only ever moves over the
// contiguous prefix of acknowledged events, and over the positions read
// that the relay does not select (Filter's, the store's bookkeeping), up
// to the first event not acknowledged, never past it. It is saved at most
// every CheckpointInterval and when Run returns, when it has moved over an
// acknowledged event, or at the relay's first catch-up with the store, or
// over at least 1,000 positions not selected since the last save: fewer
// of those alone, read again after a restart, are not worth an append
// (see StoreCheckpoints), and the saves of a store's relays are such
// positions for each other. A crash between an acknowledgement and the
// next save produces the events after the checkpoint again: delivery is
// at-least-once, and consumers deduplicate by event ID (see [EventID]).
//
// The events that a [eventbus.FileStore]'s retention (RetainAge,
// RetainSize) deletes before the relay reads them are the exception, as
// they are for a durable subscription: Run skips them without a word,
// whether it runs behind the store or resumes after a stop, and they never
// reach Kafka. The saved checkpoint goes with its segment too, if no save
// came since (see above: a relay that selects no event saves only once it
// has passed 1,000 others): the next Run then starts from 0, that is from
// the first event left, and produces again those it had written. An
// outbox needs a retention longer than its relay may ever stay stopped,
// or behind.
//
// A FileStore under eventbus.SyncInterval or SyncNever shows an append to
// its readers, the relay among them, before it is on stable storage: the
// relay may produce events that a crash of the machine then takes from
// the store, with the state they describe, so that consumers handle
// events that, for the restarted store, never happened; the default,
// SyncAlways, shows an append only once it is synced. The checkpoint, in
// the store by default, goes with them, and the next Run produces the
// events appended after the restart, at the positions of the lost ones.
// Checkpoints kept elsewhere may then be past the store's end: Run would
// skip those events, without a word, as it skips any before its
// checkpoint.
//
// # Order
//
// A key's records are produced one at a time: the relay gives franz-go the
// record of an event only once the record before it of the same key and
// Kafka topic is acknowledged, and holds the later ones back meanwhile.
// Records of different keys go concurrently, up to MaxInFlight. Records
// without a key (RelayOptions.Key returned "") have no order to keep and
// are not held back.
//
// Holding back is what keeps a key's order when a record fails. franz-go
// fails a partition's records buffered with a failed one, but writes those
// given to it afterwards, and the relay learns of a failure only later, in
// the record's promise; and a record can fail alone: one too large for a
// batch, or one the broker refuses as larger than the topic's
// max.message.bytes, fails while later ones of its key are written. With
// one record of a key in flight, none of them is ever written after one
// that failed.
//
// The guarantee, for each key (and topic): the records a Run writes are a
// prefix of the key's events from its checkpoint on, in store order, each
// once; none follows an event that failed or that the relay did not
// produce before it stopped. The next Run starts from the checkpoint, which
// is never past an event not acknowledged: a key's records after a restart,
// or a crash, repeat a suffix of what was written, then go on, and a
// consumer deduplicating by event ID sees each event of a key once, in
// order.
//
// The cost: a key's records go at most one per acknowledgement, the
// producer's Linger plus a produce request's round trip, so a burst of
// events of one stream drains at that pace while other streams' go on
// beside it (and MaxInFlight of them fill the relay's window). A producer
// with Linger -1 shortens the wait; many streams, the usual shape of an
// outbox, pipeline as before.
//
// # Failures
//
// A record that fails stops the relay: Run returns a [*ProduceError] that
// names the event (one that [Producer.Close] failed matches
// eventbus.ErrClosed), and the checkpoint stays before it, so that the
// next Run produces it first. One that fails with a context's error
// while Run's is not done goes again: franz-go fails every record it
// holds for a partition once the first one's context is done, which may
// be another's (of a Forward or a Relay through the Producer, stopped on
// its own). The relay checks each record's size before producing it: a
// record larger than the producer's batch limit
// (ProducerOptions.BatchMaxBytes, about 1MB unless set) can never be
// written: the relay reads no further, and Run returns a ProduceError
// wrapping kerr.MessageTooLarge, without producing the record, once the
// events read before it are written (those of other keys held back behind an
// earlier record of theirs too), so that the checkpoint is at it unless one
// of them fails. (The relay counts the size as franz-go does before it knows
// the broker's version; once it knows, franz-go takes up to 3 bytes more.)
// The broker refuses a record larger than the topic's max.message.bytes,
// which the relay cannot know, with the same error, after the record is
// produced, and the relay stops at once. It refuses the whole batch of the
// partition that holds the record, and franz-go fails each record of the
// batch as too large: once the records in flight are finished, the relay
// produces those again one at a time, each alone, in store order, and Run
// returns the ProduceError of the first that fails alone, the one too
// large, having written those before it. (If each is written alone, the
// batch was too large as a whole, BatchMaxBytes being over the topic's
// limit, or franz-go reported the one too large only after Run stopped
// waiting for it (see [Relay.Run]): Run returns the error of the first,
// written since, and the next Run goes on. If Run's context ends before
// they are told apart, Run returns the context's error, as for a stop,
// and names none of them: the next Run finds the one too large again.)
// A record too large is permanent: each Run stops there again. So is an
// event for which RelayOptions.TopicFor returns a name that Kafka does not
// take for a topic:
// Run returns a ProduceError wrapping eventbus.ErrInvalid, before the record
// goes to franz-go, as for a record too large. To get past a record too
// large, raise the limit (BatchMaxBytes, the topic's max.message.bytes and
// what the brokers take), make the event smaller (a Registry with
// CompressAbove), or, giving the event up, with no relay of the name
// running, save a checkpoint after it (Checkpoints.Save with the
// ProduceError's Position plus one) once the checkpoint is at it
// (Checkpoints.Load returns that Position): the events of its key after it
// are then written without it. A checkpoint before it, as the broker's
// refusal may leave (with events before it held back behind a record of
// their key in flight), is before events of other keys not yet written,
// which a checkpoint after it would skip too; the next Run writes them,
// and stops at the event again.
//
// One relay of a name may run at a time; a second one started elsewhere
// produces every event twice. A Relay refuses a Run while one of its own
// runs (see [Relay.Run]).
type Relay struct {
	store   eventbus.Store
	p       *Producer
	o       RelayOptions
	running atomic.Bool // a Run is running
}

// NewRelay returns a relay from s to Kafka through p. The relay keeps a
// copy of opts, so the caller may change them afterwards. It returns an
// error wrapping eventbus.ErrInvalid for a nil store, a Producer not made
// by NewProducer, or missing or bad options, naming which, and one
// wrapping eventbus.ErrClosed for a closed Producer.
func NewRelay(s eventbus.Store, p *Producer, opts *RelayOptions) (*Relay, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil Store", eventbus.ErrInvalid)
	}
	if err := checkProducer("NewRelay", p); err != nil {
		return nil, err
	}
	if opts == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil options; RelayOptions needs a Name and a Topic (or TopicFor)", eventbus.ErrInvalid)
	}
	if p.isClosed() {
		return nil, fmt.Errorf("%w: NewRelay with a closed Producer", eventbus.ErrClosed)
	}
	o := *opts
	// Read by the store's goroutine as the relay runs: a caller that
	// reuses opts must not change them.
	o.Filter.Types = slices.Clone(o.Filter.Types)
	if !validName(o.Name, 200) {
		return nil, fmt.Errorf("%w: relay name %q: want 1 to 200 letters, digits, '.', '_' and '-'", eventbus.ErrInvalid, o.Name)
	}
	if o.Topic == "" && o.TopicFor == nil {
		return nil, fmt.Errorf("%w: relay %q has no Topic or TopicFor", eventbus.ErrInvalid, o.Name)
	}
	if o.TopicFor == nil {
		if err := checkTopic("relay "+strconv.Quote(o.Name)+": Topic", o.Topic); err != nil {
			return nil, err
		}
	}
	if o.CheckpointInterval < 0 {
		return nil, fmt.Errorf("%w: relay %q: RelayOptions.CheckpointInterval %v is negative", eventbus.ErrInvalid, o.Name, o.CheckpointInterval)
	}
	if o.MaxInFlight < 0 {
		return nil, fmt.Errorf("%w: relay %q: RelayOptions.MaxInFlight %d is negative", eventbus.ErrInvalid, o.Name, o.MaxInFlight)
	}
	if o.Checkpoints == nil {
		o.Checkpoints = StoreCheckpoints(s)
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = time.Second
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 10_000
	}
	return &Relay{store: s, p: p, o: o}, nil
}

func validName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkTopic returns an error wrapping eventbus.ErrInvalid for a name that
// Kafka does not take for a topic, which would fail only once records go
// to it or are fetched from it; what says where the name comes from.
func checkTopic(what, topic string) error {
	if !validName(topic, 249) || topic == "." || topic == ".." {
		return fmt.Errorf("%w: %s: Kafka topic %.250q: want 1 to 249 letters, digits, '.', '_' and '-', other than \".\" and \"..\"", eventbus.ErrInvalid, what, topic)
	}
	return nil
}

// ProduceError is the error of [Relay.Run] when the record of an event was
// not written: Kafka did not take it, or the relay could never produce it.
// It names the event, and wraps why: franz-go's or the broker's error, such
// as kerr.MessageTooLarge for a record larger than the producer's batch
// limit or the topic's max.message.bytes (the broker refuses the whole
// batch, and the relay names the record of it that fails alone, see
// [Relay]), or eventbus.ErrInvalid for a topic name from
// [RelayOptions].TopicFor that Kafka does not take. The relay's checkpoint
// stays before the event, so the next Run produces it first.
type ProduceError struct {
	Relay    string      // the relay's name
	Position uint64      // the event's position in the store
	ID       eventbus.ID // the event's ID
	Stream   string      // the event's stream
	Topic    string      // the Kafka topic of its record
	Err      error       // why the record was not written
}

// Error names the relay, the event and its topic, and the cause. A nil
// *ProduceError reads as the zero one, as a nil pointer of each error type
// of package eventbus does.
func (e *ProduceError) Error() string {
	if e == nil {
		e = &ProduceError{}
	}
	return fmt.Sprintf("kafka: relay %q: producing event %s (stream %q, position %d) to topic %q: %v", e.Relay, e.ID, e.Stream, e.Position, e.Topic, e.Err)
}

// Unwrap returns Err, so that errors.Is sees the cause, such as
// kerr.MessageTooLarge or eventbus.ErrInvalid.
func (e *ProduceError) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// Is reports whether target is eventbus.ErrClosed and the record failed
// because the Producer was closed (kgo.ErrClientClosed), so that a Run
// stopped by [Producer.Close] returns an error matching ErrClosed whether
// or not a record was in flight.
func (e *ProduceError) Is(target error) bool {
	return e != nil && target == eventbus.ErrClosed && errors.Is(e.Err, kgo.ErrClientClosed)
}

// outgoing is an event read by a relay, on its way to Kafka.
type outgoing struct {
	pos   uint64
	lane  lane
	keyed bool // the record has a key, and an order to keep
	// e and rec are let go once the record is acknowledged, since the
	// window may keep o until the events before it are acknowledged too;
	// guarded by the window's mu from then.
	e    *eventbus.RecordedEvent
	rec  *kgo.Record
	done bool // acknowledged; guarded by the window's mu
}

// lane names the records kept in order with each other: those of one key on
// one topic. Records without a key have no order to keep.
type lane struct{ topic, key string }

// window tracks the events read and not yet acknowledged, in position
// order, and the position before which all are acknowledged.
type window struct {
	mu      sync.Mutex
	pending []*outgoing // in position order
	read    uint64      // the relay has read every position before it
	acked   uint64      // every selected event before it is acknowledged
	// progress is set when acked moves over an acknowledged event, or at
	// a catch-up (see caughtUp), and cleared when a save takes acked.
	progress bool
}

// add records that o is on its way.
func (w *window) add(o *outgoing) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, o)
	w.read = o.pos + 1
	w.advance()
}

// ack marks o acknowledged and moves acked over the prefix of acknowledged
// records.
func (w *window) ack(o *outgoing) {
	w.mu.Lock()
	defer w.mu.Unlock()
	o.done = true
	o.e, o.rec = nil, nil
	n := 0
	for n < len(w.pending) && w.pending[n].done {
		w.acked = w.pending[n].pos + 1
		n++
	}
	clear(w.pending[:n]) // let the events go
	w.pending = w.pending[n:]
	w.advance()
	w.progress = w.progress || n > 0
}

// caughtUp records that the relay has read every position before next,
// as pass does, and makes a save due if acked moves: once, when the relay
// first catches up with the store, or before an event that can never be
// written (see failAfterRead).
func (w *window) caughtUp(next uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.acked
	w.read = max(w.read, next)
	w.advance()
	w.progress = w.progress || w.acked != old
}

// pass records that the relay has read every position before next, those
// its filter skipped included (SubscribeOptions.Passed), and moves acked
// over them up to the first event still in flight: never past one not
// acknowledged, whose record the next Run must produce again, and so in
// order after those of its key before it.
func (w *window) pass(next uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.read = max(w.read, next)
	w.advance()
}

// advance moves acked over the positions read that the relay did not
// select: up to the first event in flight, or, with none, to read.
// Callers hold mu.
func (w *window) advance() {
	if len(w.pending) > 0 {
		w.acked = max(w.acked, w.pending[0].pos)
	} else {
		w.acked = max(w.acked, w.read)
	}
}

// checkpoint returns acked, and whether it is worth saving over saved,
// the checkpoint saved last: when acked moved over an acknowledged event
// or at a catch-up since, or over at least passedSaveMin positions that
// the relay did not select. Fewer of those alone are not saved: they are
// read again, and skipped, after a restart. Among them are the relay's
// own saves of the checkpoint in the store, which a save for them would
// pass in turn, and those of other relays of the store, which pass this
// relay's: saving for them, the relays of an idle store would append a
// checkpoint every CheckpointInterval, for ever.
func (w *window) checkpoint(saved uint64) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acked <= saved || !w.progress && w.acked-saved < passedSaveMin {
		return saved, false
	}
	w.progress = false
	return w.acked, true
}

// passedSaveMin is the number of positions that the relay did not select
// which make a save due by themselves: far more than the checkpoint saves
// of the relays of one store, which each relay passes (see
// window.checkpoint), and few enough to read again after a restart.
const passedSaveMin = 1000

// lanes lets one record of a lane at a time go to franz-go: the later ones
// wait, in order, until it is acknowledged. A record that fails is then
// the last of its lane that franz-go was given (see Relay).
type lanes struct {
	mu      sync.Mutex
	stopped bool
	busy    map[lane][]*outgoing // lanes with a record in flight: the records waiting behind it
}

// enter reports whether o may go to franz-go now; if not, o waits behind
// its lane's record in flight, or, once the lanes are stopped, is dropped
// (ok is false).
func (l *lanes) enter(o *outgoing) (now, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return false, false
	case !o.keyed:
		return true, true
	}
	waiting, busy := l.busy[o.lane]
	if !busy {
		l.busy[o.lane] = nil
		return true, true
	}
	l.busy[o.lane] = append(waiting, o)
	return false, true
}

// next returns the record of o's lane that goes to franz-go now that o is
// acknowledged, or nil.
func (l *lanes) next(o *outgoing) *outgoing {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || !o.keyed {
		return nil
	}
	waiting := l.busy[o.lane]
	if len(waiting) == 0 {
		delete(l.busy, o.lane)
		return nil
	}
	l.busy[o.lane] = waiting[1:]
	return waiting[0]
}

// stop lets no more records go to franz-go, and returns those waiting,
// which never will.
func (l *lanes) stop() []*outgoing {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	var dropped []*outgoing
	for _, waiting := range l.busy {
		dropped = append(dropped, waiting...)
	}
	l.busy = nil
	return dropped
}

// pass is one Run of a relay: the state its goroutines share.
type pass struct {
	r     *Relay
	ctx   context.Context
	fail  context.CancelCauseFunc
	w     window
	lanes lanes
	sem   chan struct{} // a slot per event read and not finished
	// read counts the events read and not finished: acknowledged, failed
	// or dropped.
	read flight
	// sends counts the goroutines that give franz-go a record that
	// waited: a promise must not produce. Once sendsShut, Run waits for
	// them, and no more start.
	sends     sync.WaitGroup
	sendsMu   sync.Mutex
	sendsShut bool
	// tooLarge holds the records that failed as too large: the broker
	// refuses a whole batch for a record too large for the topic, and
	// franz-go fails each record of the batch with its error.
	tooLarge   []*outgoing
	tooLargeMu sync.Mutex
}

// Run relays events until ctx is done, a record fails, or the store or
// checkpoint store fails, and returns why: ctx's error (wrapping its cause
// too, if ctx was cancelled with one, see [context.Cause]), a
// [*ProduceError] for a record that failed or could never be written, or
// the first other failure (one wrapping eventbus.ErrInvalid for a store
// whose Subscribe ended without an error, which the Store contract
// forbids, as a durable subscription reports it). Before it returns it
// waits for the records in flight, CheckpointInterval at most, and saves
// the checkpoint over those acknowledged, with a context that is not
// cancelled with ctx. franz-go
// keeps a record it has sent until the broker answers, whatever ctx: one
// not answered by then (Kafka silent: a hung broker, dropped replies)
// stays in the Producer, to be written or failed later, and the
// checkpoint stays before it, as after a crash, so that the next Run
// produces it again. The goroutines it starts (one for
// checkpoint saves, and one for each record that waited for an earlier one
// of its key) it waits for; franz-go's are the Producer's, and end after
// Producer.Close (its connections' readers shortly after Close returns). On
// a Relay not made by NewRelay, with a nil ctx, or while another Run of r
// runs, it returns at once an error wrapping eventbus.ErrInvalid, and once
// its Producer is closed, one wrapping eventbus.ErrClosed: at once, or,
// while it runs, at the Close, unless a record that Close failed stops it
// first. Once Run has returned, r may run again, from its checkpoint.
func (r *Relay) Run(ctx context.Context) error {
	switch {
	case r == nil || r.store == nil:
		return fmt.Errorf("%w: Relay.Run on a Relay not made by NewRelay", eventbus.ErrInvalid)
	case ctx == nil:
		return fmt.Errorf("%w: Relay.Run: nil context", eventbus.ErrInvalid)
	case !r.running.CompareAndSwap(false, true):
		// Two passes would produce every event twice, and save the
		// checkpoint from two goroutines.
		return fmt.Errorf("%w: Relay.Run of relay %q while it runs", eventbus.ErrInvalid, r.o.Name)
	}
	defer r.running.Store(false)
	if r.p.isClosed() {
		return r.producerClosed()
	}
	parent := ctx
	from, err := r.o.Checkpoints.Load(ctx, r.o.Name)
	if err != nil {
		return fmt.Errorf("kafka: relay %q: loading checkpoint: %w", r.o.Name, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pass{r: r, ctx: ctx, fail: cancel, sem: make(chan struct{}, r.o.MaxInFlight)}
	p.w.read, p.w.acked = from, from
	p.lanes.busy = make(map[lane][]*outgoing)
	saved := from
	save := func(ctx context.Context) error {
		acked, due := p.w.checkpoint(saved)
		if !due {
			return nil
		}
		if err := r.o.Checkpoints.Save(ctx, r.o.Name, acked); err != nil {
			return fmt.Errorf("kafka: relay %q: saving checkpoint: %w", r.o.Name, err)
		}
		saved = acked
		return nil
	}

	saverDone := make(chan struct{})
	go func() {
		defer close(saverDone)
		t := time.NewTicker(r.o.CheckpointInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.p.closed: // with nothing to produce, Run would go on
				cancel(r.producerClosed())
				return
			case <-t.C:
			}
			if err := save(ctx); err != nil {
				cancel(err)
				return
			}
		}
	}()

	cancel(p.tail(from))
	p.drop(p.lanes.stop())
	<-saverDone
	p.settle()
	p.sendsMu.Lock()
	p.sendsShut = true
	p.sendsMu.Unlock()
	p.sends.Wait()
	why := p.blame(parent, stopCause(parent, context.Cause(ctx)))
	if err := save(context.WithoutCancel(ctx)); err != nil {
		return errors.Join(why, err)
	}
	return why
}

// producerClosed returns Run's error once its Producer is closed.
func (r *Relay) producerClosed() error {
	return fmt.Errorf("%w: relay %q: its Producer is closed", eventbus.ErrClosed, r.o.Name)
}

// stopCause returns what Run returns when cause stopped it: cause, unless
// cause came from parent, Run's context, being done; then parent's error,
// followed by a cause of the caller's own, so that a caller can tell a stop
// from a failure with errors.Is(err, context.Canceled) also when it
// cancelled with a cause.
func stopCause(parent context.Context, cause error) error {
	err := parent.Err()
	if err == nil || !errors.Is(cause, context.Cause(parent)) || errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// tail reads the store and produces each selected event, or holds it back
// behind the record of its key in flight, until ctx is done, the store
// fails (its Subscribe ending without an error too), or an event's record
// is too large to ever be written.
func (p *pass) tail(from uint64) error {
	r, ctx := p.r, p.ctx
	limits := make(map[string]int64) // the producer's batch limit per topic
	opts := &eventbus.SubscribeOptions{From: from, Filter: r.o.Filter, CaughtUp: p.w.caughtUp, Passed: p.w.pass}
	for e, err := range r.store.Subscribe(ctx, opts) {
		if err != nil {
			if ctx.Err() != nil { // a stop, or a failure that Run reports
				return err
			}
			return fmt.Errorf("kafka: relay %q: reading the store: %w", r.o.Name, err)
		}
		if bookkeeping(e.Stream) {
			continue
		}
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		o := &outgoing{e: &e}
		o.lane.topic, o.lane.key = r.o.Topic, e.Stream
		if r.o.TopicFor != nil {
			o.lane.topic = r.o.TopicFor(e)
		}
		if r.o.Key != nil {
			o.lane.key = r.o.Key(e)
		}
		o.pos, o.keyed = e.Position, o.lane.key != ""
		if err := checkTopic("TopicFor", o.lane.topic); err != nil { // Topic is checked
			<-p.sem
			return p.failAfterRead(o, err)
		}
		o.rec = newRecord(o.lane.topic, o.lane.key, &e.EventData)
		limit, ok := limits[o.lane.topic]
		if !ok {
			limit = int64(r.p.batchMax(o.lane.topic))
			limits[o.lane.topic] = limit
		}
		if size := batchBytes(o.rec); size > limit {
			<-p.sem
			return p.failAfterRead(o, fmt.Errorf("%w: the record takes %d bytes of a batch, over the producer's limit of %d", kerr.MessageTooLarge, size, limit))
		}
		if ctx.Err() != nil { // a record failed: stop at once
			<-p.sem
			return context.Cause(ctx)
		}
		p.w.add(o)
		p.read.add()
		switch now, ok := p.lanes.enter(o); {
		case now:
			p.produce(o)
		case !ok:
			p.finish()
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	// Not for Run to take for a stop (ctx's cause would be
	// context.Canceled): the events after the end would never be read,
	// and a caller that runs the relay again after a failure, not after
	// its own stop, would not know.
	return fmt.Errorf("%w: relay %q: the store's Subscribe ended without an error, which a Store's must not", eventbus.ErrInvalid, r.o.Name)
}

// produce gives o's record to franz-go. When it is acknowledged, the next
// record of its lane goes, from a goroutine of its own; when it fails, the
// relay stops, and the records waiting are dropped, unless it failed with
// another's context (see below), when it goes again.
func (p *pass) produce(o *outgoing) {
	p.r.p.cl.Produce(p.ctx, o.rec, func(_ *kgo.Record, err error) {
		if cancelledElsewhere(p.ctx, err) {
			// franz-go fails every record it holds for a partition (or
			// a topic whose partitions it does not know yet) once the
			// first one's context is done: another's, of a Forward or
			// a Relay through the Producer, stopped on its own. o was
			// not sent, and is still the one of its lane in flight;
			// a copy goes, as franz-go keeps what it set on o.rec.
			r := o.rec
			o.rec = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
			p.send(o)
			return
		}
		if err != nil {
			if errors.Is(err, kerr.MessageTooLarge) {
				p.tooLargeMu.Lock()
				p.tooLarge = append(p.tooLarge, o)
				p.tooLargeMu.Unlock()
			}
			p.fail(p.failure(o, err))
			p.drop(p.lanes.stop())
		} else {
			p.w.ack(o)
			if next := p.lanes.next(o); next != nil {
				p.send(next)
			}
		}
		p.finish()
	})
}

func (p *pass) failure(o *outgoing, err error) *ProduceError {
	return &ProduceError{Relay: p.r.o.Name, Position: o.pos, ID: o.e.ID, Stream: o.e.Stream, Topic: o.lane.topic, Err: err}
}

// blame returns the failure of the record too large that stopped the
// relay, once the records in flight are finished, when records failed as
// too large: the broker refuses a whole batch for one record too large for
// the topic, so that the first to fail, which why names, may be a small one
// produced beside it. It produces them again one at a time, each alone,
// in store order, and returns the failure of the first that fails alone;
// those written before it are acknowledged, so that the checkpoint can
// move up to it. Each of them is the first of its lane not written, so
// none is written out of its key's order. If every one is written alone,
// the batch was too large as a whole, or the answer of the one too large
// came after settle gave up waiting for it, and it returns why. A single
// record failed as too large goes alone again too, for that reason: taken
// for the large one, a small one would be named, with the checkpoint at
// it, which the way past a record too large (see [Relay]) would skip. For
// that reason too, once ctx (Run's) is done before it has told them
// apart, it returns ctx's error, as for a stop, and names none.
func (p *pass) blame(ctx context.Context, why error) error {
	// A record's answer may still come (see settle), and add to tooLarge.
	p.tooLargeMu.Lock()
	tooLarge := slices.Clone(p.tooLarge)
	p.tooLargeMu.Unlock()
	var pe *ProduceError
	if len(tooLarge) == 0 || !errors.As(why, &pe) || !errors.Is(pe.Err, kerr.MessageTooLarge) {
		return why
	}
	slices.SortFunc(tooLarge, func(a, b *outgoing) int { return cmp.Compare(a.pos, b.pos) })
	for _, o := range tooLarge {
		if err := p.r.p.produceAlone(ctx, o.rec); err != nil {
			if ctx.Err() != nil {
				// Stopped before they are told apart: why may name a
				// small one, which the way past a record too large
				// would skip. The next Run finds the large one again.
				return stopCause(ctx, context.Cause(ctx))
			}
			return p.failure(o, err)
		}
		p.w.ack(o)
	}
	return why
}

// failAfterRead returns the failure of o, whose record can never be
// written, once the events read before it are finished: written, those
// held back behind an earlier record of their key too, unless one fails or
// the relay stops. Stopped at once, the relay would cancel them, and its
// checkpoint, before them, would bring it back to o at each Run, so that a
// checkpoint saved after o to give it up would skip them too. Once they
// are all written, the checkpoint moves to o, over the events before it
// that the relay did not select, so that Checkpoints.Load returns o's
// position, as the way past o needs (see [Relay]).
func (p *pass) failAfterRead(o *outgoing, err error) error {
	select {
	case <-p.read.idle():
	case <-p.ctx.Done(): // stopped, or one failed: Run waits for the rest
		return context.Cause(p.ctx)
	}
	p.w.caughtUp(o.pos)
	return p.failure(o, err)
}

// finish releases what an event read held: its slot and its count.
func (p *pass) finish() {
	<-p.sem
	p.read.done()
}

// send gives franz-go o's record from a goroutine of its own, which Run
// waits for; once Run no longer waits, o is finished without going.
func (p *pass) send(o *outgoing) {
	p.sendsMu.Lock()
	defer p.sendsMu.Unlock()
	if p.sendsShut {
		p.finish()
		return
	}
	p.sends.Go(func() { p.produce(o) })
}

// settle waits until the events read are finished, or CheckpointInterval
// has passed: franz-go keeps a record it has sent until the broker
// answers, whatever its context, so that a silent Kafka (a hung broker,
// dropped replies) would hold up the stop for as long. A record not
// answered by then is not acknowledged: the checkpoint stays before it, as
// after a crash, whose records produced again CheckpointInterval bounds
// too, and the next Run produces it again. Its answer, when it comes
// after Run returned, touches only this pass.
func (p *pass) settle() {
	t := time.NewTimer(p.r.o.CheckpointInterval)
	defer t.Stop()
	select {
	case <-p.read.idle():
	case <-t.C:
	}
}

// flight counts the events read and not finished, and tells when none is.
// Its zero value counts none.
type flight struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed once n is back to 0
}

// add counts an event read.
func (f *flight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.none = make(chan struct{})
	}
	f.n++
}

// done counts an event finished.
func (f *flight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		close(f.none)
	}
}

// idle returns a channel that is closed once no event is in flight.
func (f *flight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		none := make(chan struct{})
		close(none)
		return none
	}
	return f.none
}

// drop finishes the events that never went to franz-go.
func (p *pass) drop(dropped []*outgoing) {
	for range dropped {
		p.finish()
	}
}
