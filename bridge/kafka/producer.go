package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ProducerOptions configures a Producer. The zero value (with Brokers set)
// takes the defaults: an idempotent producer with acks from all in-sync
// replicas, snappy compression, 5ms linger.
type ProducerOptions struct {
	// Brokers are the seed brokers, "host:port". Required, none empty.
	// Brokers that cannot be reached are no error: records wait for
	// them, retried, until their context ends (a Relay's Run, a Forward's
	// handler), and a Relay reports nothing meanwhile; franz-go's own
	// logger, given with kgo.WithLogger in Client, reports each failed
	// dial.
	Brokers []string
	// Linger is how long a partition's batch waits for more records before
	// it is sent; zero means 5ms, negative means no wait. At most a minute,
	// as franz-go takes.
	Linger time.Duration
	// Compression lists the codecs to compress batches with, in order of
	// preference (the first the broker supports is used); nil means snappy,
	// else none.
	Compression []kgo.CompressionCodec
	// BatchMaxBytes caps the size of one partition's batch; zero means
	// franz-go's default (1MB), else 512 bytes up to the most the client
	// writes to a broker at once, as franz-go takes: 100 MiB unless Client
	// raises it with kgo.BrokerMaxWriteBytes, and 1<<30 at most.
	BatchMaxBytes int32
	// MaxBufferedRecords caps the records waiting to be acknowledged;
	// producing blocks while it is reached. Zero means 10,000.
	MaxBufferedRecords int
	// Client holds further franz-go options, such as kgo.DialTLSConfig or
	// kgo.SASL, applied after the bridge's own. Options that disable
	// idempotence or lower the acks give up the ordering and durability
	// promises of this package. So does
	// kgo.AllowIdempotentProduceCancellation its promise that a record is
	// written once: franz-go may then fail a record sent, which Kafka may
	// have written, with the context's error of the first record of its
	// batch, another's, and Forward and Relay produce a record failed so
	// again (see Forward), so that Kafka may hold it twice.
	Client []kgo.Opt
}

// Producer writes events to Kafka: the record key is the event's key, the
// value its payload encoded by a Registry, and headers carry the event's ID,
// type, schema version, encoding, correlation and causation IDs, traceparent
// and metadata. It is idempotent with acks from all in-sync replicas, so a
// retried batch is written once and never overtakes an earlier one: records
// of one key, which all go to one partition, stay in order. A record that
// fails after franz-go's retries fails with the later records of its
// partition that franz-go holds by then, not with those produced after
// that, and one too large for a batch fails alone: a caller that keeps
// producing a key's records before the earlier ones are acknowledged can
// see later ones written without a failed one ([Relay] does not). A
// Producer is safe for concurrent use.
type Producer struct {
	cl        *kgo.Client
	reg       *eventbus.Registry
	batchMax  func(topic string) int32 // the client's batch limit per topic
	alone     chan struct{}            // a slot for the one record produced alone
	closed    chan struct{}            // closed by Close
	closeOnce sync.Once
}

// NewProducer returns a Producer that encodes payloads with reg. It returns
// an error wrapping eventbus.ErrInvalid for a missing registry or one not
// made by eventbus.NewRegistry, no brokers or an empty one, a nil Client
// entry, a BatchMaxBytes, MaxBufferedRecords or Linger out of its range, or
// options that franz-go refuses, such as a broker address it cannot parse
// or Client options (the error wraps franz-go's too). The error names the
// option.
func NewProducer(reg *eventbus.Registry, opts *ProducerOptions) (*Producer, error) {
	if opts == nil {
		opts = &ProducerOptions{}
	}
	if reg == nil {
		return nil, fmt.Errorf("%w: NewProducer: nil Registry", eventbus.ErrInvalid)
	}
	if err := checkRegistry("NewProducer", reg); err != nil {
		return nil, err
	}
	if err := checkBrokers("NewProducer", opts.Brokers); err != nil {
		return nil, err
	}
	if err := checkClient("NewProducer", "ProducerOptions", opts.Client); err != nil {
		return nil, err
	}
	// franz-go refuses the sizes and Linger out of its bounds too, in
	// errors that name its own settings: these name the caller's.
	switch b := opts.BatchMaxBytes; {
	case b < 0 || b > 0 && b < minBatchMaxBytes || b > maxBatchMaxBytes:
		return nil, fmt.Errorf("%w: NewProducer: ProducerOptions.BatchMaxBytes %d is outside [%d, %d]", eventbus.ErrInvalid, b, minBatchMaxBytes, maxBatchMaxBytes)
	case opts.MaxBufferedRecords < 0:
		return nil, fmt.Errorf("%w: NewProducer: ProducerOptions.MaxBufferedRecords %d is negative", eventbus.ErrInvalid, opts.MaxBufferedRecords)
	case opts.Linger > maxLinger:
		return nil, fmt.Errorf("%w: NewProducer: ProducerOptions.Linger %v is over %v", eventbus.ErrInvalid, opts.Linger, maxLinger)
	}
	cl, err := kgo.NewClient(producerOpts(opts)...)
	if err != nil {
		if batchOverWrite(opts) {
			return nil, fmt.Errorf("%w: NewProducer: ProducerOptions.BatchMaxBytes %d is over the most the client writes to a broker at once (kgo.BrokerMaxWriteBytes, 100 MiB unless Client raises it): %w", eventbus.ErrInvalid, opts.BatchMaxBytes, err)
		}
		return nil, fmt.Errorf("%w: NewProducer: franz-go refuses the options: %w", eventbus.ErrInvalid, err)
	}
	batchMax, _ := cl.OptValue(kgo.ProducerBatchMaxBytesFn).(func(string) int32)
	if batchMax == nil { // not in this franz-go: the check is left to it
		batchMax = func(string) int32 { return math.MaxInt32 }
	}
	batchMax = withinBrokerWrite(cl, batchMax)
	return &Producer{cl: cl, reg: reg, batchMax: batchMax, alone: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

// withinBrokerWrite returns batchMax capped, per topic, as franz-go caps
// it (maxRecordBatchBytesForTopic in its sink.go): a batch must fit in one
// produce request of at most kgo.BrokerMaxWriteBytes, with the request's
// overhead (its header, the client and transactional IDs, the topic's
// name, at least the 16 bytes of a topic ID, and the array and length
// prefixes). A BatchMaxBytes close to BrokerMaxWriteBytes, which both
// take, leaves franz-go a smaller limit.
func withinBrokerWrite(cl *kgo.Client, batchMax func(string) int32) func(string) int32 {
	writeMax, ok := cl.OptValue(kgo.BrokerMaxWriteBytes).(int32)
	if !ok {
		return batchMax
	}
	id, _ := cl.OptValue(kgo.ClientID).(string)
	tx, _ := cl.OptValue(kgo.TransactionalID).(string)
	// The request's header and the produce request without its topics.
	base := int32(4+2+2+4+2+2+2+4+4+1) + int32(len(id)+len(tx))
	return func(topic string) int32 {
		limit := writeMax - (base + 2 + int32(max(16, len(topic))) + 4 + 4 + 4)
		return min(batchMax(topic), limit)
	}
}

// batchOverWrite reports whether franz-go, which refused opts, takes them
// without BatchMaxBytes: then BatchMaxBytes is over the client's
// BrokerMaxWriteBytes, which Client may set, and no bound known before
// the client is made. franz-go's error names its own settings only.
func batchOverWrite(opts *ProducerOptions) bool {
	if opts.BatchMaxBytes <= 0 {
		return false
	}
	o := *opts
	o.BatchMaxBytes = 0
	cl, err := kgo.NewClient(producerOpts(&o)...)
	if err != nil {
		return false
	}
	cl.Close()
	return true
}

// The bounds that franz-go sets to ProducerOptions.BatchMaxBytes and Linger.
const (
	minBatchMaxBytes = 512
	maxBatchMaxBytes = 1 << 30
	maxLinger        = time.Minute
)

// checkRegistry returns an error wrapping eventbus.ErrInvalid, naming
// what, for a Registry not made by eventbus.NewRegistry, which encodes and
// decodes nothing: a Forward of it would dead-letter every event, a Route
// take every record for a bad one. Encode refuses such a registry before
// it looks at the payload; a registry that NewRegistry made refuses a nil
// payload with eventbus.ErrUnknownEvent instead.
func checkRegistry(what string, reg *eventbus.Registry) error {
	if _, err := reg.Encode(nil); errors.Is(err, eventbus.ErrInvalid) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// checkBrokers returns an error wrapping eventbus.ErrInvalid for no
// brokers, or for one that is empty or blank, which franz-go would take for
// localhost:9092: what strings.Split makes of an unset variable, say.
func checkBrokers(what string, brokers []string) error {
	if len(brokers) == 0 {
		return fmt.Errorf("%w: %s needs brokers", eventbus.ErrInvalid, what)
	}
	for i, b := range brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("%w: %s: Brokers[%d] is %q, not an address", eventbus.ErrInvalid, what, i, b)
		}
	}
	return nil
}

// checkClient refuses a nil entry of client, the Client option of what's
// options (as a helper that returns a kgo.Opt only when a setting is on may
// leave one), on which franz-go's NewClient would panic.
func checkClient(what, options string, client []kgo.Opt) error {
	for i, o := range client {
		if o == nil {
			return fmt.Errorf("%w: %s: %s.Client[%d] is nil", eventbus.ErrInvalid, what, options, i)
		}
	}
	return nil
}

func producerOpts(o *ProducerOptions) []kgo.Opt {
	linger := o.Linger
	switch {
	case linger == 0:
		linger = 5 * time.Millisecond
	case linger < 0:
		linger = 0
	}
	codecs := o.Compression
	if codecs == nil {
		codecs = []kgo.CompressionCodec{kgo.SnappyCompression(), kgo.NoCompression()}
	}
	buffered := o.MaxBufferedRecords
	if buffered == 0 {
		buffered = 10_000
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(linger),
		kgo.ProducerBatchCompression(codecs...),
		kgo.MaxBufferedRecords(buffered),
	}
	if o.BatchMaxBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(o.BatchMaxBytes))
	}
	return append(opts, o.Client...)
}

// Close fails the records not yet acknowledged and closes the connections.
// It is idempotent, and does nothing on a Producer not made by NewProducer.
// Close it last: once the buses that forward through it are shut down
// (Bus.Shutdown waits for Kafka's acknowledgements) and its relays have
// returned. After Close every record fails with kgo.ErrClientClosed: a
// bus shut down afterwards (as when Close is deferred after Shutdown, and
// so runs first) dead-letters every forwarded event still queued, in
// memory, at its first attempt whatever the retry policy, and Shutdown
// returns nil; a Relay stops, with the [*ProduceError] of a record that
// Close failed, or else an error wrapping eventbus.ErrClosed: both match
// ErrClosed. Forward, NewRelay and Relay.Run refuse a closed Producer
// with an error wrapping eventbus.ErrClosed.
func (p *Producer) Close() {
	if !p.made() {
		return
	}
	p.closeOnce.Do(func() {
		p.cl.Close()
		close(p.closed)
	})
}

// isClosed reports whether Close was called, and every record now fails.
func (p *Producer) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// made reports whether p was made by NewProducer: a nil or zero Producer has
// no client to produce with.
func (p *Producer) made() bool { return p != nil && p.cl != nil }

// checkProducer returns an error wrapping eventbus.ErrInvalid, naming call,
// for a nil Producer or one that NewProducer did not make.
func checkProducer(call string, p *Producer) error {
	switch {
	case p == nil:
		return fmt.Errorf("%w: %s: nil Producer", eventbus.ErrInvalid, call)
	case !p.made():
		return fmt.Errorf("%w: %s: a Producer not made by NewProducer", eventbus.ErrInvalid, call)
	}
	return nil
}

// Forward subscribes to t on its bus and writes every event published there
// to the Kafka topic kafkaTopic, returning the subscription (named "kafka."
// followed by kafkaTopic) so that it can be stopped. It hands events to Kafka
// in batches, as many as wait in a worker's queue (up to opts.BatchSize), and
// a batch is handled once Kafka has acknowledged it. A handler whose
// context ends first (Bus.Close, Shutdown's deadline, or in Sync mode the
// publisher's context, which its handlers run with) stops waiting, so
// that a silent Kafka does not hold the bus up: its records not answered
// fail with the context's error, though Kafka may still write them (a
// redrive, or a Sync-mode publisher publishing the event again for the
// error Publish returned, then writes them again). A record that fails
// goes through the subscription's retry policy and then to the bus's
// dead-letter queue; so do the later events of its key that franz-go held
// when it failed, which fail with it (see [Producer]). One failed with
// kgo.ErrClientClosed, by [Producer.Close], is dead-lettered at once: a
// closed Producer writes nothing again. An event whose
// payload does not encode, or is a nil pointer (which a [Consumer] takes
// for a bad record), fails alone and is dead-lettered at once, with an
// error wrapping eventbus.ErrInvalid for a nil pointer; one whose record
// is too large for a batch fails alone and is retried; the later events of
// its key are written. The broker refuses a whole batch for one record
// larger than the topic's max.message.bytes, failing every record of it as
// too large, those of other workers and of other Forwards through the
// Producer too: each handler then produces the records of its events that
// failed as too large again, one at a time, each alone, so that the others
// are written (other records may still join them), and the one too large
// fails on its own. A kafkaTopic that Kafka does not have (the bridge
// creates no topics) fails each record with kerr.UnknownTopicOrPartition
// once franz-go has asked for it a few times, a second or so: its events
// go through the retry policy to the dead-letter queue. franz-go also
// fails every record it holds for a
// partition once the first one's context is done, which may be another
// handler's (of another Forward or a Relay through the Producer, stopped
// on its own): a handler whose own context is not done produces its
// records that failed so again, in order. A later event of their key
// whose record the handler gave franz-go only after they failed (it gives
// a batch's records without waiting for answers) does not fail with them,
// and is written before them, with no error: the key's records in Kafka
// are then out of order, as a [Relay]'s never are. The payload type T
// must be registered in the Producer's Registry. opts configure the
// subscription as [eventbus.Topic.SubscribeBatch] takes them: a batch
// subscription runs no middleware (the bus's neither), so opts must have
// none. Forward returns an error wrapping eventbus.ErrInvalid for a
// missing argument, a Producer or Topic not made by NewProducer or
// eventbus.NewTopic, a T that is not
// registered (wrapping eventbus.ErrUnknownEvent too; a T that is an
// interface is taken, and each event's type must be registered), a
// kafkaTopic that Kafka does not take for a topic (see
// [RelayOptions].Topic) or that is too long for the subscription's name
// (more than 243 bytes), or opts that the bus refuses (out of range, or
// with Middleware); one wrapping eventbus.ErrDuplicate if t is forwarded
// to kafkaTopic already (the subscription's name is taken); and one
// wrapping eventbus.ErrClosed for a closed Producer, through which every
// event would be dead-lettered, or a bus shut down.
//
// The bus keeps events in memory: an event queued for the subscription when
// the process dies never reaches Kafka. For at-least-once delivery, append
// events to a Store and run a [Relay].
func Forward[T any](p *Producer, t *eventbus.Topic[T], kafkaTopic string, opts *eventbus.SubscriptionOptions) (*eventbus.Subscription, error) {
	call := fmt.Sprintf("Forward to %q", kafkaTopic)
	if err := checkProducer(call, p); err != nil {
		return nil, err
	}
	switch {
	case t == nil:
		return nil, fmt.Errorf("%w: %s: nil Topic", eventbus.ErrInvalid, call)
	case t.Bus() == nil:
		// Its SubscribeBatch would refuse it, naming a call the caller
		// never made.
		return nil, fmt.Errorf("%w: %s: a Topic not made by NewTopic", eventbus.ErrInvalid, call)
	}
	if err := checkTopic("Forward", kafkaTopic); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, fmt.Errorf("%w: Forward through a closed Producer", eventbus.ErrClosed)
	}
	if reflect.TypeFor[T]().Kind() != reflect.Interface { // an interface's types are known event by event
		var zero T
		if _, err := p.reg.Encode(zero); errors.Is(err, eventbus.ErrUnknownEvent) {
			return nil, fmt.Errorf("%w: Forward of topic %q: %w", eventbus.ErrInvalid, t.Name(), err)
		}
	}
	kind := reflect.TypeFor[T]().Kind()
	f := &forwarder[T]{p: p, topic: kafkaTopic, mayBeNil: kind == reflect.Pointer || kind == reflect.Interface}
	return t.SubscribeBatch("kafka."+kafkaTopic, f.handle, opts)
}

type forwarder[T any] struct {
	p     *Producer
	topic string
	// mayBeNil is set when T is a pointer or an interface, whose payloads
	// may be nil pointers, which a Consumer takes for bad records.
	mayBeNil bool
}

func (f *forwarder[T]) handle(ctx context.Context, events []eventbus.Event[T]) error {
	errs := make([]error, len(events))
	recs := make([]*kgo.Record, len(events))
	rd := newRound(len(events))
	for i := range events {
		e := &events[i]
		if f.mayBeNil && nilPointer(any(e.Payload)) { // no boxing: T is a pointer or an interface
			errs[i] = eventbus.Permanent(fmt.Errorf("%w: Forward of a nil %T payload: a Consumer would take its record for a bad one", eventbus.ErrInvalid, any(e.Payload)))
			continue
		}
		ed, err := f.p.reg.Encode(e.Payload)
		if err != nil {
			errs[i] = eventbus.Permanent(err)
			continue
		}
		ed.ID = e.ID // the schema version stays the one the payload was encoded at
		ed.CorrelationID, ed.CausationID, ed.Metadata = e.CorrelationID, e.CausationID, e.Metadata
		recs[i] = newRecord(f.topic, e.Key, &ed)
		rd.produce(ctx, f.p.cl, recs[i], i)
	}
	rd.wait(ctx, errs)
	f.againIfCancelled(ctx, recs, errs)
	f.alone(ctx, recs, errs)
	return batchError(errs)
}

// round is the records that a handler gives franz-go together, and their
// outcomes. franz-go keeps a record it has sent until the broker answers,
// whatever the record's context, so that a handler waiting for them
// while Kafka does not answer would hold up the bus's Close for as long:
// it stops waiting once its context is done, and the promises that come
// after that write under mu what no one reads.
type round struct {
	given []int // indexes of the records given, in order; the handler's

	mu       sync.Mutex
	errs     []error // outcomes by index
	answered []bool  // by index
	left     int     // records given and not answered, plus one until wait
	all      chan struct{}
}

func newRound(n int) *round {
	return &round{errs: make([]error, n), answered: make([]bool, n), left: 1, all: make(chan struct{})}
}

// produce gives franz-go r, the record of index i.
func (rd *round) produce(ctx context.Context, cl *kgo.Client, r *kgo.Record, i int) {
	rd.given = append(rd.given, i)
	rd.mu.Lock()
	rd.left++
	rd.mu.Unlock()
	cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		rd.errs[i], rd.answered[i] = err, true
		rd.done()
	})
}

// done counts one answer, or wait's start; mu is held.
func (rd *round) done() {
	if rd.left--; rd.left == 0 {
		close(rd.all)
	}
}

// wait waits until franz-go has answered for every record given, or ctx
// is done, and sets errs[i] of each: its outcome, or, if it has none yet,
// ctx's error.
func (rd *round) wait(ctx context.Context, errs []error) {
	rd.mu.Lock()
	rd.done()
	rd.mu.Unlock()
	select {
	case <-rd.all:
	case <-ctx.Done():
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	for _, i := range rd.given {
		if errs[i] = rd.errs[i]; !rd.answered[i] {
			errs[i] = fmt.Errorf("kafka: the handler's context ended before Kafka answered; the record may still be written: %w", ctx.Err())
		}
	}
}

// againIfCancelled produces again, together and in order, copies of the
// records that failed with a context's error while ctx is not done, until
// none does or ctx is done. franz-go fails every record it buffers for a
// partition (or for a topic whose partitions it does not know yet) once
// the first one's context is done, and that one may be another handler's,
// of another worker, of another Forward or of a Relay through the
// Producer, cancelled by a stop of its own; none of them was sent. The
// later records of their partition that franz-go holds fail with them,
// and go again in order; one given to franz-go after they failed is
// written before them (see Forward).
func (f *forwarder[T]) againIfCancelled(ctx context.Context, recs []*kgo.Record, errs []error) {
	cancelled := func(i int) bool {
		return recs[i] != nil && cancelledElsewhere(ctx, errs[i])
	}
	for again := true; again && ctx.Err() == nil; {
		rd := newRound(len(recs))
		again = false
		for i, r := range recs {
			if cancelled(i) {
				// A copy: franz-go keeps what it set on r, such as
				// its context.
				recs[i] = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
				rd.produce(ctx, f.p.cl, recs[i], i)
				again = true
			}
		}
		rd.wait(ctx, errs)
	}
}

// alone produces again, one at a time and each alone, the records that
// failed as too large: the broker refuses a whole batch for one record too
// large for the topic, and franz-go fails each record of the batch with
// its error, so that the events produced beside that one, of any key, would
// be retried or dead-lettered as too large. Now they are written, and the
// one too large fails on its own. A single failure is no sign that the
// record is the large one: the batch may have held another handler's (of
// another worker, or of another Forward through the Producer), which fails
// in that handler.
func (f *forwarder[T]) alone(ctx context.Context, recs []*kgo.Record, errs []error) {
	for i, r := range recs {
		if errors.Is(errs[i], kerr.MessageTooLarge) {
			errs[i] = f.p.produceAlone(ctx, r)
		}
	}
}

// produceAlone produces r again, on its own, and waits for the outcome: a
// record the broker refused with its whole batch, for another record of it
// too large for the topic. One such record goes at a time, whoever
// produces it (handlers of Forward, a Relay): each of the batch's records
// is produced again by its own, and together they would make one batch
// again, refused again. It produces a copy of r, as franz-go keeps the
// fields it set on r the first time, such as its context, which the
// relay's stop cancels. A copy failed by another's context (see
// [cancelledElsewhere]) goes again while ctx is not done.
func (p *Producer) produceAlone(ctx context.Context, r *kgo.Record) error {
	select {
	case p.alone <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.alone }()
	for {
		r = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
		if err := produceWait(ctx, p.cl, r); !cancelledElsewhere(ctx, err) {
			return err
		}
	}
}

// cancelledElsewhere reports whether err, a record's failure, is a
// context's error while ctx, the record's own, is not done. franz-go fails
// every record it holds for a partition (or for a topic whose partitions
// it does not know yet) once the first one's context is done, and that
// one may be another's, of a Forward or a Relay through the Producer,
// stopped on its own; none of them was sent.
func cancelledElsewhere(ctx context.Context, err error) bool {
	return ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// produceWait produces r with cl and waits for Kafka's answer, or until ctx
// is done. Not ProduceSync, which waits for the answer whatever ctx:
// franz-go keeps a record it has sent until the broker answers, so that a
// silent Kafka would hold up a stop for as long.
func produceWait(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	answer := make(chan error, 1)
	cl.Produce(ctx, r, func(_ *kgo.Record, err error) { answer <- err })
	select {
	case err := <-answer:
		return err
	case <-ctx.Done():
		return fmt.Errorf("kafka: the context ended before Kafka answered; the record may still be written: %w", ctx.Err())
	}
}

// batchError names the failed events. A record that fails once buffered
// fails with the later records of its partition buffered by then, so the
// later events of its key usually fail with it; one too large for a batch
// fails alone, before it is buffered. Neither error says for sure that a
// retry would fail too (a broker refusing a whole batch as too large fails
// every record in it), so both go through the retry policy. A record
// failed by the Producer's Close (kgo.ErrClientClosed) is marked
// permanent: every retry would fail so too, and would only hold up the
// bus, whose Shutdown waits out the retries of its queued events.
func batchError(errs []error) error {
	var failed map[int]error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if failed == nil {
			failed = make(map[int]error)
		}
		if errors.Is(err, kgo.ErrClientClosed) {
			err = eventbus.Permanent(err)
		}
		failed[i] = err
	}
	if failed == nil {
		return nil
	}
	return &eventbus.BatchError{Failed: failed}
}
