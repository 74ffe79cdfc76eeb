package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ConsumerOptions configures a Consumer. Brokers and Group are required; the
// other fields' zero values take the defaults.
type ConsumerOptions struct {
	// Brokers are the seed brokers, "host:port"; none may be empty.
	Brokers []string
	// Group is the consumer group: the processes of one group share the
	// partitions of the routed topics.
	Group string
	// CommitInterval is how often offsets of handled records are
	// committed; zero means one second. Each commit first waits for the
	// bus to handle what was published before it (Bus.Flush), so it also
	// bounds how much is handled again after a crash.
	CommitInterval time.Duration
	// MaxPollRecords caps the records taken from the client at once; zero
	// means 1,000.
	MaxPollRecords int
	// DeadLetterTopic, if set, receives a copy of every record that cannot
	// be made into an event (no bridge headers, a type the registry does
	// not know, a payload that does not decode, an event the bus topic's
	// Publish refuses or panics on, a topic with no Route that options in
	// Client made it consume), with its error in the header
	// "eventbus-error" and where it was read in [MetadataTopic],
	// [MetadataPartition] and [MetadataOffset], in place of any such
	// headers of the record (a dead letter copied back to its topic). A
	// copy too large for the dead-letter topic (over the client's batch
	// limit, 1MB unless Client sets kgo.ProducerBatchMaxBytes, or the
	// topic's max.message.bytes) goes without the record's key, value and
	// headers, its error (cut to its first kilobyte, as it may quote a
	// large header) saying so. A record whose copy Kafka has not
	// acknowledged when Run's context ends is not committed, and is read
	// (and copied) again by the next run. If empty, such a record stops
	// Run with an error wrapping eventbus.ErrInvalid and the record's own,
	// and is read again by the next run. A bad record read from the
	// dead-letter topic itself (routed, or consumed through options in
	// Client) is logged and skipped: it is there already, and written back
	// it would come round for ever. The topic must exist (the bridge
	// creates none): a copy to one that Kafka does not have fails with
	// kerr.UnknownTopicOrPartition, once franz-go has asked for it a few
	// times, and stops Run, the record read again by the next run.
	DeadLetterTopic string
	// DrainTimeout bounds how long Run waits, once its context is done,
	// for the bus to handle what was published so that its offsets can be
	// committed (a Sync-mode topic's handler then running included, see
	// [Route]), and, once more, how long it then waits for Kafka's
	// answer to its leave of the group (franz-go's Close then takes up to
	// two seconds more while Kafka is silent, see [Consumer.Run]); also
	// how long a rebalance waits for the bus before it gives up the
	// partitions. Zero means 30 seconds.
	DrainTimeout time.Duration
	// Logger receives failed commits and fetch errors, which are retried,
	// failed sessions of the consumer group, which Run joins again (see
	// [Consumer]), bad records of the dead-letter topic itself, which are
	// skipped, and the failures of a Sync-mode topic's handlers.
	// Nil means silent; one without a Handler (a zero slog.Logger, which
	// slog.New never makes) is invalid. Brokers that cannot be reached (a
	// wrong address, a port that wants TLS) are not reported here: Run
	// retries for as long as it runs, without an error; franz-go's own
	// logger, given with kgo.WithLogger in Client, reports each failed
	// dial.
	Logger *slog.Logger
	// Client holds further franz-go options, such as kgo.DialTLSConfig or
	// kgo.SASL, applied after the bridge's own, so that one of the same
	// kind replaces the bridge's. kgo.OnPartitionsRevoked and
	// kgo.OnPartitionsLost must not be among them: the Consumer's own
	// callbacks commit the revoked partitions before they are given up,
	// and forget the offsets of partitions no longer its own. Replaced, a
	// rebalance commits nothing, so the next owner handles again what was
	// handled since the last commit, and offsets noted before a partition
	// left may later be committed over the next owner's, moving the group
	// back. franz-go gives no way to tell such options apart, so the
	// Consumer cannot refuse them.
	Client []kgo.Opt
}

// Consumer feeds the records of Kafka topics into typed topics of a bus, as a
// member of a consumer group. Route says which Kafka topic goes to which bus
// topic; Run consumes.
//
// # Delivery
//
// Each record is decoded by the Registry and published on its bus topic
// with the record's key as the event's key (a record without a key, as a
// Relay whose RelayOptions.Key returns "" writes, gets the key that
// Publish gives its payload: TopicOptions.Key's, or its key method's),
// its correlation ID (or, for an event that had none, as one appended to a
// store without one, its ID: an event that starts a chain is its own
// correlation), and its metadata, to which the Consumer adds
// [MetadataEventID] and the record's coordinates; the bus gives the event
// an ID of its own, and the type name and schema version of the bus topic
// (see eventbus.TopicOptions: for a topic of an interface type, the
// interface's name and version 1 unless set), as to any event published
// there, not the record's, whose payload is decoded upcast to its latest
// version. Publish queues it to
// the subscriptions' per-key workers, so records of one key are handled in
// order, with the bus's middleware, retries and dead-letter queue, while other
// keys are handled in parallel. The Consumer reads committed records only:
// those of a transaction that its producer aborted are skipped, and a
// partition's records wait behind an open transaction until it ends
// (kgo.FetchIsolationLevel in ConsumerOptions.Client reads them all).
//
// # Commits
//
// An offset is committed only when every record before it in its partition
// has been handled or dead-lettered by every subscription, and none
// abandoned by a bus stopped without grace, nor failed by a stopping bus
// that refused what its handler published (Bus.Flush then fails, and
// nothing more is committed, see Consumer.Run). A record whose event was
// dead-lettered is committed, and the bus's dead-letter queue is in
// memory: only an eventbus.Options.DeadLetterSink that keeps dead letters
// somewhere durable keeps them past the process's exit. The commit waits
// for the sink's Put, but not for its success: unlike a durable
// subscription's checkpoint, it passes a dead letter that Put failed to
// keep. Records are published in offset order from one goroutine, so
// the bus's Flush gives that point cheaply: every CommitInterval the
// Consumer notes the next offset of each partition published so far,
// waits for Bus.Flush (which waits for exactly the events published
// before it, not for later ones, so publishing goes on meanwhile), and
// commits what it noted, unless partitions were given up meanwhile (the
// next interval commits then). On a rebalance, the revoked partitions
// are published no more (the client blocks rebalances while a poll's
// records are being published), the bus is flushed (for DrainTimeout at
// most, whatever a periodic commit waits for), and their offsets
// committed before they are given up; lost partitions are dropped
// without a commit. A record is handled once its handlers have
// returned: the events that they publish on the bus, in memory, are not
// waited for once Flush has begun, so a crash after the commit loses
// those not yet handled. A follow-up that must survive one goes to an
// [eventbus.StoreTopic], whose Publish appends it to the store before the
// handler returns. Delivery is at-least-once: records handled after
// the last commit are handled again after a crash or by the partition's next
// owner. The Idempotency middleware keyed by [EventID] makes handling
// effectively-once: over a [eventbus.ProcessedStore] that the group's
// processes share across them, in memory within one (see [EventID]).
//
// A record that fails on its way into the bus goes to the DeadLetterTopic,
// or stops Run.
//
// # Group failures
//
// The group's coordinator may fail its requests (joining the group, the
// assignment, the committed offsets, heartbeats): while it moves, loads or
// rebalances the group, and when it drops a member (UNKNOWN_MEMBER_ID,
// ILLEGAL_GENERATION, as after a session timeout), franz-go retries and
// joins the group again, and Run goes on, logging each failed session to
// ConsumerOptions.Logger. A rebalance commits the partitions given up; a
// session that fails otherwise loses them without a commit (another member
// may own them already), so their records since the last commit are
// handled again, by this member or the next owner. An error that no retry
// clears stops Run, which returns an error naming the group (and the
// partition, for one whose committed offset Kafka refuses, which franz-go
// would leave unconsumed until the next rebalance) and wrapping Kafka's
// (kerr.GroupAuthorizationFailed, TopicAuthorizationFailed,
// ClusterAuthorizationFailed, InvalidGroupID or InconsistentGroupProtocol,
// matched with errors.Is), rather than retrying for ever, consuming
// nothing: such a group needs a change of its ACLs, its name, or its other
// members, and a new Consumer. A group that is full, holding the broker's
// group.max.size members already, is not such an error: Kafka refuses the
// Consumer (GROUP_MAX_SIZE_REACHED), which waits as a standby, consuming
// nothing and logging each refusal, and joins once a member leaves.
type Consumer struct {
	bus *eventbus.Bus
	reg *eventbus.Registry
	o   ConsumerOptions
	log *slog.Logger

	mu      sync.Mutex
	routes  map[string]route
	started bool
}

// route publishes the event e of record r on a bus topic. bad is set when the
// record cannot be made into an event; err when the bus refused it.
type route func(ctx context.Context, r *kgo.Record, e *eventbus.EventData, key string) (bad, err error)

// NewConsumer returns a Consumer that publishes on topics of bus, decoding
// payloads with reg. The Consumer keeps a copy of opts, so the caller may
// change them afterwards. It returns an error wrapping eventbus.ErrInvalid
// for missing arguments, a bus or registry not made by eventbus.New or
// eventbus.NewRegistry, or bad options (a nil Client entry among them), and
// one wrapping eventbus.ErrClosed for a bus stopped already.
func NewConsumer(bus *eventbus.Bus, reg *eventbus.Registry, opts *ConsumerOptions) (*Consumer, error) {
	switch {
	case bus == nil:
		return nil, fmt.Errorf("%w: NewConsumer: nil Bus", eventbus.ErrInvalid)
	case reg == nil:
		return nil, fmt.Errorf("%w: NewConsumer: nil Registry", eventbus.ErrInvalid)
	case opts == nil:
		return nil, fmt.Errorf("%w: NewConsumer: nil options; ConsumerOptions needs Brokers and a Group", eventbus.ErrInvalid)
	}
	if bus.DeadLetters() == nil { // as it is for a Bus not made by New only
		// No topic is on it: every Route would fail.
		return nil, fmt.Errorf("%w: NewConsumer: a Bus not made by eventbus.New", eventbus.ErrInvalid)
	}
	if err := busStopped(bus, "NewConsumer"); err != nil {
		return nil, err
	}
	if err := checkRegistry("NewConsumer", reg); err != nil {
		return nil, err
	}
	o := *opts
	// Read by Run: a caller that reuses opts must not change them.
	o.Brokers, o.Client = slices.Clone(o.Brokers), slices.Clone(o.Client)
	if err := checkBrokers("NewConsumer", o.Brokers); err != nil {
		return nil, err
	}
	if err := checkClient("NewConsumer", "ConsumerOptions", o.Client); err != nil {
		return nil, err
	}
	switch {
	case o.Group == "":
		return nil, fmt.Errorf("%w: NewConsumer needs a group", eventbus.ErrInvalid)
	case o.CommitInterval < 0:
		return nil, fmt.Errorf("%w: NewConsumer: ConsumerOptions.CommitInterval %v is negative", eventbus.ErrInvalid, o.CommitInterval)
	case o.MaxPollRecords < 0:
		return nil, fmt.Errorf("%w: NewConsumer: ConsumerOptions.MaxPollRecords %d is negative", eventbus.ErrInvalid, o.MaxPollRecords)
	case o.DrainTimeout < 0:
		return nil, fmt.Errorf("%w: NewConsumer: ConsumerOptions.DrainTimeout %v is negative", eventbus.ErrInvalid, o.DrainTimeout)
	case o.Logger != nil && o.Logger.Handler() == nil:
		// Its first report would panic in Run's goroutine.
		return nil, fmt.Errorf("%w: NewConsumer: ConsumerOptions.Logger has no Handler; make it with slog.New", eventbus.ErrInvalid)
	}
	if o.DeadLetterTopic != "" {
		if err := checkTopic("NewConsumer: DeadLetterTopic", o.DeadLetterTopic); err != nil {
			return nil, err
		}
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = time.Second
	}
	if o.MaxPollRecords == 0 {
		o.MaxPollRecords = 1000
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 30 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Consumer{bus: bus, reg: reg, o: o, log: log, routes: make(map[string]route)}, nil
}

// Route makes c publish the records of kafkaTopic on t, which must be a topic
// of c's bus (whose Flush the commits wait for), decoding them as T (see
// eventbus.Decode). A record that does not decode, decodes to a nil pointer
// (T's, or one in T if T is an interface), or whose event t's Publish
// refuses (an error wrapping eventbus.ErrInvalid, say) or panics on (a key
// method that panics on the payload, which Publish runs before the event
// goes anywhere; the error wraps an [*eventbus.PanicError]) is a bad
// record: the event was published nowhere. On a Sync-mode
// topic the handlers run in Run's goroutine, with a context that has the
// values of Run's but not its end: a handler running when Run is stopped
// has DrainTimeout to finish, as an Async-mode one has, and its context
// ends then. An event whose handlers fail (an [*eventbus.HandlerError],
// whatever it wraps) is retried and dead-lettered by the bus, as in Async
// mode, and Run goes on, its record consumed, unless they failed once
// that drain was over, cut short: the record is then read again by the
// next run. As
// everywhere on the bus, an event goes to the subscriptions t has when it
// is published: while t has none, its records are consumed, and committed,
// with no handler seeing them, so subscribe before Run. A kafkaTopic
// that Kafka does not have is no error: Run waits for it, with no error
// and nothing logged, and consumes it from its first record once it is
// created, so that a misspelt name consumes nothing, silently. Call it
// before Run.
// It returns an error wrapping eventbus.ErrDuplicate if kafkaTopic is routed
// already, and eventbus.ErrInvalid for a nil c or t, or one not made by
// NewConsumer or eventbus.NewTopic, a name that Kafka does not take for a
// topic (see [RelayOptions].Topic), a topic of another bus, a T that is not
// registered in the consumer's registry (wrapping eventbus.ErrUnknownEvent
// too: a pointer to a registered type, say, to which no record decodes; a
// T that is an interface is taken, and each record's type must be
// registered), or once Run started.
func Route[T any](c *Consumer, kafkaTopic string, t *eventbus.Topic[T]) error {
	return routeVia(c, kafkaTopic, t, nil)
}

// routeVia is Route with publish in place of t.Publish, if it is not nil:
// tests make a Publish that refuses, which the bus's own does not today for
// a record that decodes (the refusal branch is a guard for checks that
// Publish may add).
func routeVia[T any](c *Consumer, kafkaTopic string, t *eventbus.Topic[T], publish func(context.Context, T, ...eventbus.PublishOption) error) error {
	switch {
	case c == nil:
		return fmt.Errorf("%w: Route(%q): nil Consumer", eventbus.ErrInvalid, kafkaTopic)
	case t == nil:
		return fmt.Errorf("%w: Route(%q): nil Topic", eventbus.ErrInvalid, kafkaTopic)
	case c.bus == nil:
		// Its nil map of routes would panic; its nil bus is no topic's.
		return fmt.Errorf("%w: Route on a Consumer not made by NewConsumer", eventbus.ErrInvalid)
	case t.Bus() == nil:
		return fmt.Errorf("%w: Route(%q) to a Topic not made by NewTopic", eventbus.ErrInvalid, kafkaTopic)
	}
	if err := checkTopic("Route", kafkaTopic); err != nil {
		return err
	}
	if t.Bus() != c.bus {
		return fmt.Errorf("%w: Route(%q): topic %q is not on the consumer's bus", eventbus.ErrInvalid, kafkaTopic, t.Name())
	}
	if reflect.TypeFor[T]().Kind() != reflect.Interface { // an interface's types are known record by record
		// Decode gives a registered Go type: no record would decode to
		// another, and each would be a bad record.
		var zero T
		if _, err := c.reg.Encode(zero); errors.Is(err, eventbus.ErrUnknownEvent) {
			return fmt.Errorf("%w: Route(%q) to topic %q: no record decodes to its payload type: %w", eventbus.ErrInvalid, kafkaTopic, t.Name(), err)
		}
	}
	if publish == nil {
		publish = t.Publish
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("%w: Route(%q) after Run", eventbus.ErrInvalid, kafkaTopic)
	}
	if _, ok := c.routes[kafkaTopic]; ok {
		return fmt.Errorf("%w: Kafka topic %q is routed already", eventbus.ErrDuplicate, kafkaTopic)
	}
	// A nil pointer is a bad record: of T, or in T if T is an interface.
	kind := reflect.TypeFor[T]().Kind()
	mayBeNil := kind == reflect.Pointer || kind == reflect.Interface
	c.routes[kafkaTopic] = func(ctx context.Context, r *kgo.Record, e *eventbus.EventData, key string) (error, error) {
		v, err := eventbus.Decode[T](c.reg, *e)
		if err != nil {
			return err, nil
		}
		if mayBeNil && nilPointer(any(v)) { // no boxing: T is a pointer or an interface
			return fmt.Errorf("%w: the value of the record decodes to a nil %T", eventbus.ErrInvalid, any(v)), nil
		}
		md := make(eventbus.Metadata, len(e.Metadata)+5)
		maps.Copy(md, e.Metadata)
		md[MetadataEventID] = e.ID.String()
		if !e.CausationID.IsZero() {
			md[MetadataCausationID] = e.CausationID.String()
		} else {
			// An event consumed before, forwarded again, holds the
			// causation ID of its first record.
			delete(md, MetadataCausationID)
		}
		md[MetadataTopic] = r.Topic
		md[MetadataPartition] = strconv.Itoa(int(r.Partition))
		md[MetadataOffset] = strconv.FormatInt(r.Offset, 10)
		corr := e.CorrelationID
		if corr.IsZero() {
			// An event that starts its chain (appended to a store
			// without one) is its own correlation, as Publish makes
			// it: not the ID of this delivery, which differs in each.
			corr = e.ID
		}
		opts := make([]eventbus.PublishOption, 2, 3)
		opts[0], opts[1] = eventbus.WithMetadata(md), eventbus.WithCorrelationID(corr)
		if key != "" {
			opts = append(opts, eventbus.WithKey(key))
		}
		panicked, err := publishSafely(ctx, publish, v, opts)
		if panicked != nil {
			// Bytes from the wire that make the key method panic are bad
			// input, as they are for a codec: ending the process would
			// end every run at the record, and every member of the group
			// it passes to.
			return fmt.Errorf("%w: topic %q: Publish panicked: %w", eventbus.ErrInvalid, t.Name(), panicked), nil
		}
		var failed *eventbus.HandlerError
		switch {
		case err == nil:
			return nil, nil
		case ctx.Err() != nil:
			// Run's drain is over: a Sync-mode handler was cut short
			// (its event dead-lettered unhandled), or a wait for room
			// in a queue. The record is read again.
			return nil, err
		case errors.As(err, &failed):
			// The handlers of a Sync-mode topic failed: the bus has
			// retried and dead-lettered the event, as its workers do in
			// Async mode. The record is done with, also when Run is
			// stopping: read again, it would be handled twice.
			c.log.Warn("kafka: handlers failed; the bus dead-lettered the event", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			return nil, nil
		case errors.Is(err, eventbus.ErrClosed):
			return nil, err
		}
		// Publish refused the event, which no handler will see: committed
		// past, the record would be lost without a trace.
		return fmt.Errorf("topic %q refused the event: %w", t.Name(), err), nil
	}
	return nil
}

// publishSafely calls publish, turning a panic into a *eventbus.PanicError:
// the payload's key method, or TopicOptions.Key, runs in Publish on a
// payload decoded from the wire. Handlers' panics never get here: the bus
// turns them into failures.
func publishSafely[T any](ctx context.Context, publish func(context.Context, T, ...eventbus.PublishOption) error, v T, opts []eventbus.PublishOption) (panicked *eventbus.PanicError, err error) {
	defer func() {
		if r := recover(); r != nil {
			panicked = &eventbus.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return nil, publish(ctx, v, opts...)
}

// nilPointer reports whether v holds a nil pointer.
func nilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// offsets holds, per partition, the offset after the last record published
// on the bus, and the one last committed.
type offsets struct {
	mu        sync.Mutex
	published map[string]map[int32]kgo.EpochOffset
	committed map[string]map[int32]int64
	drops     uint64 // how many times partitions were given up
}

func (o *offsets) merge(m map[string]map[int32]kgo.EpochOffset) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for t, ps := range m {
		if o.published[t] == nil {
			o.published[t] = make(map[int32]kgo.EpochOffset)
		}
		maps.Copy(o.published[t], ps)
	}
}

// uncommitted returns the published offsets not committed yet, of the
// partitions in only, or of all if only is nil.
func (o *offsets) uncommitted(only map[string][]int32) map[string]map[int32]kgo.EpochOffset {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]map[int32]kgo.EpochOffset)
	add := func(t string, p int32, eo kgo.EpochOffset) {
		if c, ok := o.committed[t][p]; ok && c >= eo.Offset {
			return
		}
		if out[t] == nil {
			out[t] = make(map[int32]kgo.EpochOffset)
		}
		out[t][p] = eo
	}
	if only == nil {
		for t, ps := range o.published {
			for p, eo := range ps {
				add(t, p, eo)
			}
		}
		return out
	}
	for t, ps := range only {
		for _, p := range ps {
			if eo, ok := o.published[t][p]; ok {
				add(t, p, eo)
			}
		}
	}
	return out
}

func (o *offsets) setCommitted(m map[string]map[int32]kgo.EpochOffset) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for t, ps := range m {
		if o.committed[t] == nil {
			o.committed[t] = make(map[int32]int64)
		}
		for p, eo := range ps {
			o.committed[t][p] = eo.Offset
		}
	}
}

// dropped returns how many times partitions were given up.
func (o *offsets) dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.drops
}

// drop forgets partitions given up.
func (o *offsets) drop(m map[string][]int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(m) > 0 {
		o.drops++
	}
	for t, ps := range m {
		for _, p := range ps {
			delete(o.published[t], p)
			delete(o.committed[t], p)
		}
	}
}

// Run joins the group and consumes the routed topics until ctx is done, a
// record cannot be delivered or Kafka refuses the group, then publishes no
// more, waits (up to DrainTimeout after ctx is done, for a Sync-mode
// handler running then too) for the bus to handle what it published,
// commits, leaves the group and returns: nil after ctx is done, else the
// error (for a bad record, one wrapping eventbus.ErrInvalid, see
// [ConsumerOptions].DeadLetterTopic; for a group Kafka refuses, one
// naming it, see [Consumer]), joined with the final commit's error
// if that commit fails ("final commit of group ...", wrapping
// context.DeadlineExceeded when the bus has not handled what it was given
// within DrainTimeout), also after ctx is done: the records published since
// the last commit are then read again by the next run, and may have been
// handled. DrainTimeout bounds the wait for the bus and the commit, and
// then, once more, the wait for Kafka's answer to the leave: while Kafka is
// silent (a hung broker, dropped replies) Run gives the leave up and
// returns, and the group gives the partitions to its other members only
// after its session timeout, as for a crash. franz-go's Close then takes up
// to two seconds more, whatever DrainTimeout: it waits a second at most to
// end its fetch sessions, and one for its last push of client metrics
// (kgo.DisableFetchSessions and kgo.DisableClientMetrics, in Client, spare
// both). Stop Run, and wait for it to return, before Shutdown or Close of
// the bus: a bus stopped without grace (Close, or a Shutdown whose context
// ends) while Run runs or drains dead-letters the events it abandons, in
// memory, unhandled, and those of running handlers that it cancels and
// that then fail. Bus.Flush then fails with eventbus.ErrClosed, so Run
// commits nothing more, not even the records handled before, and returns
// an error wrapping eventbus.ErrClosed: the group's next consumer gets
// every record after the last commit again. So it does after a graceful
// Shutdown in which a handler's publish to the bus was refused (an error
// matching eventbus.ErrClosed), its event dead-lettered, unhandled. A
// Shutdown that handles every event loses nothing; Run then returns an
// error wrapping eventbus.ErrClosed at its next record. A group new to a
// partition starts at its first record. Run may
// be called once. It starts a franz-go client and one goroutine for commits;
// it waits for the goroutine, and closes the client before it returns, but
// not every one of the client's goroutines has ended by then: its
// connections' readers exit shortly after, on their own. On a Consumer not
// made by NewConsumer, with a nil ctx, with
// a handler's context (or one made from it, as with context.WithoutCancel:
// the commits wait for the bus, and Bus.Flush refuses one), with no Route,
// or with options that franz-go refuses (Client options, or a broker address
// it cannot parse; the error wraps franz-go's), it returns at once an error
// wrapping eventbus.ErrInvalid, and the Consumer is left as it was: Route
// and Run may be called again. A second Run, once one started, returns an
// error wrapping eventbus.ErrInvalid too. On a bus stopped already it
// returns at once an error wrapping eventbus.ErrClosed, without joining
// the group, whose other members keep their partitions.
func (c *Consumer) Run(ctx context.Context) error {
	switch {
	case c == nil || c.bus == nil:
		return fmt.Errorf("%w: Consumer.Run on a Consumer not made by NewConsumer", eventbus.ErrInvalid)
	case ctx == nil:
		return fmt.Errorf("%w: Consumer.Run: nil context", eventbus.ErrInvalid)
	}
	c.mu.Lock()
	switch {
	case c.started:
		c.mu.Unlock()
		return fmt.Errorf("%w: Consumer.Run called twice", eventbus.ErrInvalid)
	case len(c.routes) == 0:
		c.mu.Unlock()
		return fmt.Errorf("%w: Consumer.Run without a Route", eventbus.ErrInvalid)
	case handlerContext(c.bus, ctx): // routed: the bus is one made by New
		// Every commit would fail, and every Publish queue past the
		// bus's bound, as a handler's own publishes do.
		c.mu.Unlock()
		return fmt.Errorf("%w: Consumer.Run called with a handler's context (or one made from it): its commits wait for the bus, whose Flush refuses one", eventbus.ErrInvalid)
	}
	if err := busStopped(c.bus, "Consumer.Run"); err != nil {
		c.mu.Unlock()
		return err
	}
	c.started = true
	routes := maps.Clone(c.routes)
	c.mu.Unlock()

	offs := &offsets{published: make(map[string]map[int32]kgo.EpochOffset), committed: make(map[string]map[int32]int64)}
	var commitMu sync.Mutex // one commit at a time; a revoke waits for it, but not for a periodic commit's Flush
	var closing atomic.Bool // the final commit is made: revokes commit nothing
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.o.Brokers...),
		kgo.ConsumerGroup(c.o.Group),
		kgo.ConsumeTopics(slicesKeys(routes)...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // records of aborted transactions never happened
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			commitMu.Lock()
			defer commitMu.Unlock()
			if closing.Load() {
				return // Run made the final commit, within DrainTimeout
			}
			// A rebalance waits for the handlers as long as a drain may.
			ctx, cancel := context.WithTimeout(ctx, c.o.DrainTimeout)
			defer cancel()
			if err := c.commit(ctx, cl, offs, revoked); err != nil {
				c.log.Warn("kafka: commit of revoked partitions failed; their records after the last commit will be handled again", "group", c.o.Group, "err", err)
			}
			offs.drop(revoked)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			commitMu.Lock()
			defer commitMu.Unlock()
			offs.drop(lost)
		}),
	}
	cl, err := kgo.NewClient(append(opts, c.o.Client...)...)
	if err != nil {
		c.mu.Lock()
		c.started = false // nothing ran: Route and Run are open again
		c.mu.Unlock()
		return fmt.Errorf("%w: Consumer.Run: franz-go refuses the options: %w", eventbus.ErrInvalid, err)
	}

	commitCtx, stopCommits := context.WithCancel(ctx)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		t := time.NewTicker(c.o.CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-commitCtx.Done():
				return
			case <-t.C:
			}
			err := c.commitPeriodic(commitCtx, cl, offs, &commitMu)
			if err != nil && commitCtx.Err() == nil {
				c.log.Warn("kafka: commit failed; retrying at the next interval", "group", c.o.Group, "err", err)
			}
		}
	}()

	// Publish runs a Sync-mode topic's handlers with its context: given
	// ctx, a stop would cut the running one short, and its event, failed,
	// would be dead-lettered in memory and its record committed, lost at
	// exit. Publishes get ctx's values and, once ctx is done, the time
	// that the bus has to handle what was published: DrainTimeout, which
	// the final commit's wait shares.
	pubCtx, endDrain := context.WithCancelCause(context.WithoutCancel(ctx))
	defer endDrain(nil)
	var stoppedAt atomic.Pointer[time.Time]
	stopDrainClock := context.AfterFunc(ctx, func() {
		now := time.Now()
		stoppedAt.Store(&now)
		t := time.AfterFunc(c.o.DrainTimeout, func() { endDrain(context.DeadlineExceeded) })
		context.AfterFunc(pubCtx, func() { t.Stop() })
	})
	defer stopDrainClock()

	runErr := c.poll(ctx, pubCtx, cl, routes, offs)
	stopCommits()
	<-committerDone

	deadline := time.Now().Add(c.o.DrainTimeout)
	if t := stoppedAt.Load(); t != nil {
		deadline = t.Add(c.o.DrainTimeout) // the drain began then
	}
	drainCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	commitMu.Lock()
	commitErr := c.commit(drainCtx, cl, offs, nil)
	closing.Store(true)
	commitMu.Unlock()
	// Close waits for Kafka's answer to the group leave, however long a
	// silent Kafka takes; left this way first, it waits no longer. Not
	// left, the group gives the partitions up after its session timeout,
	// as for a crash.
	leaveCtx, cancelLeave := context.WithTimeout(context.WithoutCancel(ctx), c.o.DrainTimeout)
	defer cancelLeave()
	_ = cl.LeaveGroupContext(leaveCtx) // nothing to do about a failed leave
	cl.Close()
	if commitErr != nil {
		commitErr = fmt.Errorf("kafka: final commit of group %q: %w", c.o.Group, commitErr)
	}
	return errors.Join(runErr, commitErr)
}

// handlerContext reports whether ctx is a handler's context, of any bus,
// or made from one (context.WithoutCancel keeps what makes it one), which
// bus's Flush refuses: the probe, done at once, waits for nothing.
func handlerContext(bus *eventbus.Bus, ctx context.Context) bool {
	probe, cancel := context.WithCancel(ctx)
	cancel()
	return errors.Is(bus.Flush(probe), eventbus.ErrInvalid)
}

func slicesKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// poll publishes records on the bus, with pubCtx, until ctx is done or one
// cannot be delivered.
func (c *Consumer) poll(ctx, pubCtx context.Context, cl *kgo.Client, routes map[string]route, offs *offsets) error {
	for {
		fetches := cl.PollRecords(ctx, c.o.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		var groupErr error
		fetches.EachError(func(t string, p int32, err error) {
			var session *kgo.ErrGroupSession
			isSession := errors.As(err, &session)
			switch {
			case groupFatal(err):
				if groupErr != nil {
					break
				}
				if isSession {
					groupErr = fmt.Errorf("kafka: consumer group %q: %w", c.o.Group, err)
				} else {
					groupErr = fmt.Errorf("kafka: consumer group %q: partition %s/%d: %w", c.o.Group, t, p, err)
				}
			case isSession:
				c.log.Warn("kafka: consumer group session failed; rejoining", "group", c.o.Group, "err", err)
			default:
				c.log.Warn("kafka: fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		if groupErr != nil {
			// franz-go would retry the group for ever, consuming
			// nothing, and leaves a partition whose committed offset
			// Kafka refuses unconsumed until the next rebalance. The
			// partitions of a failed session, lost, are given up
			// without a commit.
			cl.AllowRebalance()
			return groupErr
		}
		done := make(map[string]map[int32]kgo.EpochOffset)
		var err error
		// Once ctx is done, the rest of the poll is left for the next run:
		// a stop handles no more than what it finds published.
		for it := fetches.RecordIter(); !it.Done() && err == nil && ctx.Err() == nil; {
			r := it.Next()
			if err = c.deliver(ctx, pubCtx, cl, routes[r.Topic], r); err == nil {
				if done[r.Topic] == nil {
					done[r.Topic] = make(map[int32]kgo.EpochOffset)
				}
				done[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
			}
		}
		offs.merge(done)
		cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// groupFatal reports whether err, which ended a consumer group session or
// came with a partition's fetch, is one that no retry clears: it takes a
// change of the group's ACLs or configuration, or of its other members.
func groupFatal(err error) bool {
	for _, fatal := range []error{
		kerr.GroupAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.InvalidGroupID, kerr.InconsistentGroupProtocol,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	return false
}

// deliver publishes r on its bus topic with pubCtx, or sends it to the
// dead-letter topic.
func (c *Consumer) deliver(ctx, pubCtx context.Context, cl *kgo.Client, publish route, r *kgo.Record) error {
	e, key, bad := parseRecord(r)
	var err error
	switch {
	case bad != nil:
	case publish == nil: // a topic added by ConsumerOptions.Client
		bad = fmt.Errorf("%w: topic %q is not routed", eventbus.ErrInvalid, r.Topic)
	default:
		bad, err = publish(pubCtx, r, &e, key)
	}
	if err != nil {
		return fmt.Errorf("kafka: consumer group %q: record %s/%d@%d: %w", c.o.Group, r.Topic, r.Partition, r.Offset, err)
	}
	if bad == nil {
		return nil
	}
	switch c.o.DeadLetterTopic {
	case "":
		if !errors.Is(bad, eventbus.ErrInvalid) { // a decode error, say
			bad = fmt.Errorf("%w: %w", eventbus.ErrInvalid, bad)
		}
		return fmt.Errorf("kafka: record %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, bad)
	case r.Topic:
		// It is in the dead-letter topic already; written back, it would
		// come again, for ever.
		c.log.Error("kafka: skipping a bad record of the dead-letter topic itself",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", bad)
		return nil
	}
	where := []kgo.RecordHeader{
		{Key: MetadataTopic, Value: []byte(r.Topic)},
		{Key: MetadataPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		{Key: MetadataOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
	}
	h := make([]kgo.RecordHeader, 0, len(r.Headers)+1+len(where))
	for _, x := range r.Headers {
		switch x.Key {
		case headerError, MetadataTopic, MetadataPartition, MetadataOffset:
			// Of a dead letter copied back to a topic: a reader taking
			// the first header of a name would see them, not these.
			continue
		}
		h = append(h, x)
	}
	h = append(h, kgo.RecordHeader{Key: headerError, Value: []byte(bad.Error())})
	dl := &kgo.Record{Topic: c.o.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: append(h, where...)}
	err = produceWait(ctx, cl, dl)
	if errors.Is(err, kerr.MessageTooLarge) {
		// The copy, a little larger than the record Kafka took, is over
		// the client's batch limit or the dead-letter topic's: stopping
		// here would stop every run at the record. A copy without what
		// makes it large still says why, and where the record is; the
		// error is cut short, since it may quote a large header.
		msg := bad.Error()
		if len(msg) > maxStubError {
			msg = msg[:maxStubError] + "..."
		}
		h := []kgo.RecordHeader{{Key: headerError, Value: fmt.Appendf(nil,
			"%s; the record is too large for the dead-letter topic: its key, value and headers are left out", msg)}}
		dl = &kgo.Record{Topic: c.o.DeadLetterTopic, Headers: append(h, where...)}
		err = produceWait(ctx, cl, dl)
	}
	if err != nil {
		return fmt.Errorf("kafka: record %s/%d@%d to dead-letter topic %q: %w", r.Topic, r.Partition, r.Offset, c.o.DeadLetterTopic, err)
	}
	return nil
}

// maxStubError is the most bytes of a record's error that the copy of a
// record too large for the dead-letter topic keeps.
const maxStubError = 1024

// commit waits until the bus has handled every record published so far of
// the partitions in only (all if nil), and commits their offsets.
func (c *Consumer) commit(ctx context.Context, cl *kgo.Client, offs *offsets, only map[string][]int32) error {
	todo := offs.uncommitted(only)
	if len(todo) == 0 {
		return nil
	}
	if err := c.bus.Flush(ctx); err != nil {
		return err
	}
	return c.commitOffsets(ctx, cl, offs, todo)
}

// commitPeriodic is commit of every partition for the periodic commits,
// which wait for the bus without holding mu, the lock of the commits, so
// that a rebalance, which holds it while it waits for the bus, waits no
// longer than DrainTimeout. It commits nothing if partitions were given up
// meanwhile: their offsets noted before would then go over those committed
// when they were given up, or by their next owner.
func (c *Consumer) commitPeriodic(ctx context.Context, cl *kgo.Client, offs *offsets, mu *sync.Mutex) error {
	drops := offs.dropped() // before the offsets: a partition given up after them counts
	todo := offs.uncommitted(nil)
	if len(todo) == 0 {
		return nil
	}
	if err := c.bus.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if offs.dropped() != drops {
		return nil // the next interval commits what is still the consumer's
	}
	return c.commitOffsets(ctx, cl, offs, todo)
}

// commitOffsets commits todo, offsets of records the bus has handled.
func (c *Consumer) commitOffsets(ctx context.Context, cl *kgo.Client, offs *offsets, todo map[string]map[int32]kgo.EpochOffset) error {
	var cerr error
	cl.CommitOffsetsSync(ctx, todo, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && cerr == nil {
					cerr = fmt.Errorf("partition %s/%d: %w", t.Topic, p.Partition, err)
				}
			}
		}
	})
	if cerr == nil {
		offs.setCommitted(todo)
	}
	return cerr
}

// busStopped returns an error wrapping eventbus.ErrClosed, naming call, for
// a bus that has stopped, which would refuse every record.
func busStopped(bus *eventbus.Bus, call string) error {
	select {
	case <-bus.Done():
		return fmt.Errorf("%w: %s: the bus has stopped", eventbus.ErrClosed, call)
	default:
		return nil
	}
}
