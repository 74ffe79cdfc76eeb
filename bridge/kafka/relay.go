package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/seed-a6f1faae/eventbus"
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
// system stream "$kafka-relay-" followed by its name, one small event per
// save. The stream has MaxCount 1 (see [eventbus.StreamMetadata]), as the
// bus's own checkpoints do, so that reads show only the latest save; the
// store may still hold older ones (a MemoryStore for good, a FileStore
// until retention).
func StoreCheckpoints(s eventbus.Store) Checkpoints { return storeCheckpoints{s} }

type storeCheckpoints struct{ s eventbus.Store }

const checkpointType = "kafka.relay.checkpoint"

// checkpointStream returns the system stream of the checkpoints of the relay
// name.
func checkpointStream(name string) string { return "$kafka-relay-" + name }

func (c storeCheckpoints) Load(ctx context.Context, name string) (uint64, error) {
	for e, err := range c.s.ReadStream(ctx, checkpointStream(name), &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}) {
		if err != nil {
			return 0, err
		}
		next, err := strconv.ParseUint(string(e.Data), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: checkpoint of relay %q at position %d: %v", eventbus.ErrInvalid, name, e.Position, err)
		}
		return next, nil
	}
	return 0, nil
}

// Save appends next to the relay's stream, having given the stream MaxCount
// 1 first if it does not have it: only the latest save is ever read, and
// without the limit a relay that runs for months leaves one event per
// CheckpointInterval behind it.
func (c storeCheckpoints) Save(ctx context.Context, name string, next uint64) error {
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
	// Topic is the Kafka topic of every event, unless TopicFor is set.
	Topic string
	// TopicFor, if set, chooses each event's Kafka topic.
	TopicFor func(eventbus.RecordedEvent) string
	// Key returns an event's record key; nil means its stream, so that the
	// events of one stream keep their order.
	Key func(eventbus.RecordedEvent) string
	// Filter selects the events to relay; its zero value selects every
	// event outside system streams.
	Filter eventbus.Filter
	// Checkpoints keeps the relay's position; nil means StoreCheckpoints of
	// the relay's store.
	Checkpoints Checkpoints
	// CheckpointInterval is the most time between saves of the checkpoint
	// while records are acknowledged; zero means one second. A save is also
	// made when Run returns.
	CheckpointInterval time.Duration
	// MaxInFlight caps the records produced and not yet acknowledged; zero
	// means 10,000.
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
// back out of order across partitions; the checkpoint only ever moves over
// the contiguous prefix of acknowledged events, and is saved at most every
// CheckpointInterval and when Run returns. A crash between an
// acknowledgement and the next save produces the events after the checkpoint
// again: delivery is at-least-once, and consumers deduplicate by event ID
// (see [EventID]). Duplicates come in order: a key's records after a restart
// repeat a suffix of what was written, then go on.
//
// One relay of a name may run at a time; a second one started elsewhere
// produces every event twice.
type Relay struct {
	store eventbus.Store
	p     *Producer
	o     RelayOptions
}

// NewRelay returns a relay from s to Kafka through p. It returns an error
// wrapping eventbus.ErrInvalid for missing or bad options.
func NewRelay(s eventbus.Store, p *Producer, opts *RelayOptions) (*Relay, error) {
	if s == nil || p == nil || opts == nil {
		return nil, fmt.Errorf("%w: NewRelay needs a store, a producer and options", eventbus.ErrInvalid)
	}
	o := *opts
	if !validName(o.Name, 200) {
		return nil, fmt.Errorf("%w: relay name %q: want 1 to 200 letters, digits, '.', '_' and '-'", eventbus.ErrInvalid, o.Name)
	}
	if o.Topic == "" && o.TopicFor == nil {
		return nil, fmt.Errorf("%w: relay %q has no Topic or TopicFor", eventbus.ErrInvalid, o.Name)
	}
	if o.CheckpointInterval < 0 || o.MaxInFlight < 0 {
		return nil, fmt.Errorf("%w: relay %q: negative CheckpointInterval or MaxInFlight", eventbus.ErrInvalid, o.Name)
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

// window tracks the records in flight in position order, and the position
// before which all are acknowledged.
type window struct {
	mu      sync.Mutex
	pending []*inflight // in position order
	acked   uint64      // every selected event before it is acknowledged
}

type inflight struct {
	pos  uint64
	done bool
}

// add records that the event at pos is being produced.
func (w *window) add(pos uint64) *inflight {
	f := &inflight{pos: pos}
	w.mu.Lock()
	w.pending = append(w.pending, f)
	w.mu.Unlock()
	return f
}

// ack marks f acknowledged and moves acked over the prefix of acknowledged
// records.
func (w *window) ack(f *inflight) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f.done = true
	n := 0
	for n < len(w.pending) && w.pending[n].done {
		w.acked = w.pending[n].pos + 1
		n++
	}
	w.pending = w.pending[n:]
}

// skip moves acked to next when nothing is in flight: the events before it
// were not selected.
func (w *window) skip(next uint64) {
	w.mu.Lock()
	if len(w.pending) == 0 && next > w.acked {
		w.acked = next
	}
	w.mu.Unlock()
}

func (w *window) ackedUpTo() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// Run relays events until ctx is done, a record fails, or the store or
// checkpoint store fails, and returns why: ctx's error (wrapping its cause
// too, if ctx was cancelled with one, see [context.Cause]), or the first
// failure. Before it returns it waits for the records in flight and saves
// the checkpoint over those acknowledged, with a context that is not
// cancelled with ctx. It starts one goroutine, for checkpoint saves, and
// waits for it.
func (r *Relay) Run(ctx context.Context) error {
	parent := ctx
	from, err := r.o.Checkpoints.Load(ctx, r.o.Name)
	if err != nil {
		return fmt.Errorf("kafka: relay %q: loading checkpoint: %w", r.o.Name, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &window{acked: from}
	saved := from
	save := func(ctx context.Context) error {
		acked := w.ackedUpTo()
		if acked <= saved {
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
			case <-t.C:
			}
			if err := save(ctx); err != nil {
				cancel(err)
				return
			}
		}
	}()

	var inflight sync.WaitGroup
	cancel(r.tail(ctx, cancel, from, w, &inflight))
	<-saverDone
	inflight.Wait()
	why := stopCause(parent, context.Cause(ctx))
	if err := save(context.WithoutCancel(ctx)); err != nil {
		return errors.Join(why, err)
	}
	return why
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

// tail reads the store and produces each selected event until ctx is done or
// the store fails.
func (r *Relay) tail(ctx context.Context, fail context.CancelCauseFunc, from uint64, w *window, inflight *sync.WaitGroup) error {
	sem := make(chan struct{}, r.o.MaxInFlight)
	opts := &eventbus.SubscribeOptions{From: from, Filter: r.o.Filter, CaughtUp: w.skip}
	for e, err := range r.store.Subscribe(ctx, opts) {
		if err != nil {
			return err
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		topic := r.o.Topic
		if r.o.TopicFor != nil {
			topic = r.o.TopicFor(e)
		}
		key := e.Stream
		if r.o.Key != nil {
			key = r.o.Key(e)
		}
		f := w.add(e.Position)
		inflight.Add(1)
		r.p.cl.Produce(ctx, newRecord(topic, key, &e.EventData), func(_ *kgo.Record, err error) {
			if err == nil {
				w.ack(f)
			} else {
				// Every later record of the partition fails too, so the
				// checkpoint stays before this one: stop, and let the next
				// run produce from there.
				fail(fmt.Errorf("kafka: relay %q: producing event at position %d: %w", r.o.Name, f.pos, err))
			}
			<-sem
			inflight.Done()
		})
	}
	return context.Cause(ctx)
}
