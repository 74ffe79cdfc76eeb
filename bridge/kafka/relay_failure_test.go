package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// orderEvent returns o encoded as an event of stream, with an ID.
func orderEvent(t testing.TB, reg *eventbus.Registry, stream string, o Order) eventbus.RecordedEvent {
	t.Helper()
	e, err := reg.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	e.ID = eventbus.NewID()
	return eventbus.RecordedEvent{EventData: e, Stream: stream}
}

// appendEvent appends e to its stream in store and returns it with its
// position.
func appendEvent(ctx context.Context, store eventbus.Store, e eventbus.RecordedEvent) (eventbus.RecordedEvent, error) {
	res, err := store.Append(ctx, e.Stream, eventbus.Any, e.EventData)
	e.Position = res.Position
	return e, err
}

// appendOrder appends o to stream in store and returns the event as
// appended: its ID and position.
func appendOrder(t testing.TB, ctx context.Context, store eventbus.Store, reg *eventbus.Registry, stream string, o Order) eventbus.RecordedEvent {
	t.Helper()
	e, err := appendEvent(ctx, store, orderEvent(t, reg, stream, o))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// eventIDs returns the event IDs of the records of topic, in order of
// offset per partition, partition after partition.
func eventIDs(t testing.TB, ctx context.Context, brokers []string, topic string) []string {
	t.Helper()
	n := countRecords(t, ctx, brokers, topic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rs []*kgo.Record
	for int64(len(rs)) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d records of %s, want %d: %v", len(rs), topic, n, ctx.Err())
		}
		rs = append(rs, fetches.Records()...)
	}
	ids := make([]string, 0, len(rs))
	for _, r := range rs {
		for _, h := range r.Headers {
			if h.Key == "eventbus-id" {
				ids = append(ids, string(h.Value))
			}
		}
	}
	return ids
}

// idsOf returns the IDs of events, as records carry them.
func idsOf(events ...eventbus.RecordedEvent) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID.String()
	}
	return ids
}

// checkProduceError fails unless err is a *kafka.ProduceError for e that
// wraps want.
func checkProduceError(t testing.TB, err error, e eventbus.RecordedEvent, want error) {
	t.Helper()
	var pe *kafka.ProduceError
	if !errors.As(err, &pe) || !errors.Is(err, want) {
		t.Fatalf("Run() = %v, want a *ProduceError wrapping %v", err, want)
	}
	if pe.Position != e.Position || pe.ID != e.ID || pe.Stream != e.Stream || pe.Topic != "orders" {
		t.Errorf("ProduceError names event %s at %d of stream %q, topic %q; want %s at %d of %q, topic orders", pe.ID, pe.Position, pe.Stream, pe.Topic, e.ID, e.Position, e.Stream)
	}
}

// checkpointAt fails unless the relay name's checkpoint in store is at
// failed, or after ok, the last event acknowledged, and before failed: the
// events between them are not the relay's.
func checkpointAt(t testing.TB, ctx context.Context, store eventbus.Store, name string, ok, failed eventbus.RecordedEvent) {
	t.Helper()
	next, err := kafka.StoreCheckpoints(store).Load(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if next <= ok.Position || next > failed.Position {
		t.Errorf("checkpoint = %d, want after %d and at most %d", next, ok.Position, failed.Position)
	}
}

// onceSaved is Checkpoints that calls do, once, when the relay has saved a
// checkpoint at or past end.
type onceSaved struct {
	kafka.Checkpoints
	end  uint64
	once sync.Once
	do   func()
}

func (c *onceSaved) Save(ctx context.Context, name string, next uint64) error {
	err := c.Checkpoints.Save(ctx, name, next)
	if err == nil && next >= c.end {
		c.once.Do(c.do)
	}
	return err
}

// failureHold holds the promise of the first record that fails back until
// the relay has read further: the window in which franz-go has failed the
// record, and the relay, not yet told, may produce later ones. It is a
// franz-go hook (kgo.WithHooks) and the relay's Key function; the promise
// waits until the relay reads the event last, and if by then it gave
// franz-go the record of the event watch, a later one of the failed
// record's key, until that record reached the broker. That makes the race
// deterministic.
type failureHold struct {
	t           testing.TB
	ctx         context.Context
	before      func() // if not nil, called first in the promise
	watch, last eventbus.ID
	failing     chan struct{} // closed when a record fails
	read        chan struct{} // closed when the relay reads last
	reached     chan struct{} // closed when watch's record reaches the broker
	failOnce    sync.Once
	readOnce    sync.Once
	reachOnce   sync.Once
	mu          sync.Mutex
	handed      map[string]bool // event IDs of the records given to franz-go
}

// newFailureHold returns a failureHold that watches c's produce requests.
func newFailureHold(t testing.TB, ctx context.Context, c *kfake.Cluster, watch, last eventbus.ID, before func()) *failureHold {
	h := &failureHold{
		t: t, ctx: ctx, before: before, watch: watch, last: last,
		failing: make(chan struct{}), read: make(chan struct{}), reached: make(chan struct{}),
		handed: make(map[string]bool),
	}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range req.(*kmsg.ProduceRequest).Topics {
			for _, rp := range rt.Partitions {
				if bytes.Contains(rp.Records, []byte(watch.String())) { // uncompressed
					h.reachOnce.Do(func() { close(h.reached) })
				}
			}
		}
		return nil, nil, false
	})
	return h
}

// key is the relay's Key function: the event's stream.
func (h *failureHold) key(e eventbus.RecordedEvent) string {
	if e.ID == h.last {
		h.readOnce.Do(func() { close(h.read) })
	}
	return e.Stream
}

func (h *failureHold) OnProduceRecordBuffered(r *kgo.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handed[recordID(r)] = true
}

// OnProduceRecordUnbuffered runs in the promise goroutine, before the
// promise.
func (h *failureHold) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if err != nil {
		h.failOnce.Do(h.hold)
	}
}

func (h *failureHold) hold() {
	close(h.failing)
	if h.before != nil {
		h.before()
	}
	select {
	case <-h.read:
	case <-h.ctx.Done():
		h.t.Errorf("the relay did not read event %s: %v", h.last, h.ctx.Err())
		return
	}
	h.mu.Lock()
	handed := h.handed[h.watch.String()]
	h.mu.Unlock()
	if !handed {
		return
	}
	select {
	case <-h.reached:
	case <-h.ctx.Done():
		h.t.Errorf("the record of event %s, produced after the failure, did not reach the broker: %v", h.watch, h.ctx.Err())
	}
}

func recordID(r *kgo.Record) string {
	for _, hd := range r.Headers {
		if hd.Key == "eventbus-id" {
			return string(hd.Value)
		}
	}
	return ""
}

// relayCluster starts a cluster of one broker with the topic "orders", of
// one partition and the topic configs, and returns it, a registry of Order,
// an empty store, and a context that ends the test after 30 seconds at
// most.
func relayCluster(t *testing.T, configs map[string]string) (*kfake.Cluster, *eventbus.Registry, eventbus.Store, context.Context) {
	t.Helper()
	checkNoLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.CreateTopic("orders", 1, configs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return c, registry(t), store, ctx
}

// noCompression makes batches that carry event IDs as they are, for
// failureHold to see, and that the broker counts at their full size.
var noCompression = []kgo.CompressionCodec{kgo.NoCompression()}

// TestRelayRecordTooLarge relays a stream whose second event is too large
// for the producer's batches: Run stops with an error naming it, and Kafka
// holds the first event alone. The later events of its key, read while
// franz-go reports the failure (held back by a failureHold), are not
// produced: they were, and Kafka had them without the failed one, then
// again after it at each restart. The checkpoint stays at the large event,
// and a relay whose producer takes it carries on from there: every event
// once, in order.
func TestRelayRecordTooLarge(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	brokers := c.ListenAddrs()
	// The first event goes alone, the others once it is acknowledged: a
	// relay that stops on its own cancels the records in flight.
	events := []eventbus.RecordedEvent{appendOrder(t, ctx, store, reg, "k", Order{Key: "k"})}
	var rest []eventbus.RecordedEvent
	for seq := 1; seq < 10; seq++ {
		o := Order{Key: "k", Seq: seq}
		if seq == 1 {
			o.Key = strings.Repeat("x", 8000)
		}
		rest = append(rest, orderEvent(t, reg, "k", o))
	}
	appendRest := func() {
		for _, e := range rest {
			e, err := appendEvent(ctx, store, e)
			if err != nil {
				t.Errorf("appending %s: %v", e.ID, err)
				return
			}
			events = append(events, e)
		}
	}
	hold := newFailureHold(t, ctx, c, rest[1].ID, rest[len(rest)-1].ID, nil)

	// run runs a relay through a producer with the batch limit until it
	// stops, calling do once it has saved a checkpoint past end.
	run := func(ctx context.Context, batchMaxBytes int32, end uint64, do func()) error {
		p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
			Brokers: brokers, BatchMaxBytes: batchMaxBytes, Linger: -1, Compression: noCompression,
			Client: []kgo.Opt{kgo.WithHooks(hold)},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		cp := &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: end, do: do}
		relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: hold.key, Checkpoints: cp, CheckpointInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return relay.Run(ctx)
	}

	err := run(ctx, 2048, events[0].Position+1, appendRest)
	if len(events) != 10 {
		t.Fatalf("Run() = %v before the first event was acknowledged", err)
	}
	checkProduceError(t, err, events[1], kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(events[0]), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Fatalf("records after the large event failed (-want +got):\n%s", diff)
	}
	checkpointAt(t, ctx, store, "r", events[0], events[1])

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if err := run(runCtx, 0, events[9].Position+1, stop); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() with the default batch limit = %v, want %v", err, context.Canceled)
	}
	if diff := cmp.Diff(idsOf(events...), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after a restart with a larger limit (-want +got):\n%s", diff)
	}
}

// TestRelayBrokerRefusesRecord relays a stream whose second event the
// broker refuses, as larger than the topic's max.message.bytes (below the
// producer's own limit, so the relay cannot tell before). While franz-go
// reports the failure (held back by a failureHold), two more events of the
// key are appended and read: the relay must not produce them, since
// franz-go has failed what it had of the partition and would write them
// after the refused one. Run stops with an error naming the refused event,
// Kafka holds the first event alone, and the checkpoint stays at the
// refused one.
func TestRelayBrokerRefusesRecord(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, map[string]string{"max.message.bytes": "1000"})
	brokers := c.ListenAddrs()
	events := []eventbus.RecordedEvent{
		appendOrder(t, ctx, store, reg, "k", Order{Key: "k"}),
		appendOrder(t, ctx, store, reg, "k", Order{Key: strings.Repeat("x", 3000), Seq: 1}),
	}
	later := []eventbus.RecordedEvent{
		orderEvent(t, reg, "k", Order{Key: "k", Seq: 2}),
		orderEvent(t, reg, "k", Order{Key: "k", Seq: 3}),
	}
	hold := newFailureHold(t, ctx, c, later[0].ID, later[1].ID, func() {
		for _, e := range later {
			if _, err := appendEvent(ctx, store, e); err != nil {
				t.Errorf("appending %s: %v", e.ID, err)
			}
		}
	})
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{
		Brokers: brokers, Linger: -1, Compression: noCompression,
		Client: []kgo.Opt{kgo.WithHooks(hold)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: hold.key, CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Run(ctx)
	select {
	case <-hold.failing:
	default:
		t.Fatalf("Run() = %v, and no record failed", err)
	}
	checkProduceError(t, err, events[1], kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(events[0]), eventIDs(t, ctx, brokers, "orders")); diff != "" {
		t.Errorf("records after the broker refused one (-want +got):\n%s", diff)
	}
	checkpointAt(t, ctx, store, "r", events[0], events[1])
}

// produceHooks are franz-go hooks that call buffered with the event ID of
// each record given to franz-go, and unbuffered with that of each record
// finished, in the promise goroutine, before its promise.
type produceHooks struct {
	buffered   func(id string)
	unbuffered func(id string, err error)
}

func (h produceHooks) OnProduceRecordBuffered(r *kgo.Record) { h.buffered(recordID(r)) }
func (h produceHooks) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	h.unbuffered(recordID(r), err)
}

// TestRelayHoldsKeyNotOthers relays two events of one key and one of
// another, all in one partition: the second event of the first key goes to
// franz-go only once the first is acknowledged, and the other key's event
// goes while the first is in flight (the acknowledgement waits for it), so
// keys still pipeline.
func TestRelayHoldsKeyNotOthers(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	events := []eventbus.RecordedEvent{
		appendOrder(t, ctx, store, reg, "a", Order{Key: "a"}),
		appendOrder(t, ctx, store, reg, "a", Order{Key: "a", Seq: 1}),
		appendOrder(t, ctx, store, reg, "b", Order{Key: "b"}),
	}
	a0, a1, b0 := events[0].ID.String(), events[1].ID.String(), events[2].ID.String()
	var mu sync.Mutex
	handed, acked := make(map[string]bool), make(map[string]bool)
	bHanded := make(chan struct{})
	hooks := produceHooks{
		buffered: func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if id == a1 && !acked[a0] {
				t.Errorf("a1 given to franz-go before a0 was acknowledged")
			}
			handed[id] = true
			if id == b0 {
				close(bHanded)
			}
		},
		unbuffered: func(id string, err error) {
			if err != nil {
				t.Errorf("record of event %s failed: %v", id, err)
			}
			if id == a0 {
				select {
				case <-bHanded:
				case <-ctx.Done():
					t.Errorf("b0 not given to franz-go while a0 was in flight: %v", ctx.Err())
				}
			}
			mu.Lock()
			acked[id] = true
			mu.Unlock()
		},
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Client: []kgo.Opt{kgo.WithHooks(hooks)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cp := &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: events[2].Position + 1, do: stop}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Checkpoints: cp, CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v", err, context.Canceled)
	}
	if diff := cmp.Diff([]string{a0, b0, a1}, eventIDs(t, ctx, c.ListenAddrs(), "orders")); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

// TestRelayUnkeyedNotHeld relays two events of one stream whose records
// have no key (RelayOptions.Key returns ""): they have no order to keep,
// so the second goes to franz-go while the first is in flight (the
// acknowledgement of the first waits for it), as the Relay's doc says,
// instead of waiting behind it as a key's records do.
func TestRelayUnkeyedNotHeld(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	first := appendOrder(t, ctx, store, reg, "a", Order{Key: "a"})
	second := appendOrder(t, ctx, store, reg, "a", Order{Key: "a", Seq: 1})
	secondHanded := make(chan struct{})
	hooks := produceHooks{
		buffered: func(id string) {
			if id == second.ID.String() {
				close(secondHanded)
			}
		},
		unbuffered: func(id string, err error) {
			if err != nil {
				t.Errorf("record of event %s failed: %v", id, err)
			}
			if id == first.ID.String() {
				select {
				case <-secondHanded:
				case <-ctx.Done():
					t.Errorf("the second record not given to franz-go while the first was in flight: %v", ctx.Err())
				}
			}
		},
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Client: []kgo.Opt{kgo.WithHooks(hooks)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cp := &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: second.Position + 1, do: stop}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "r", Topic: "orders", Checkpoints: cp, CheckpointInterval: time.Millisecond,
		Key: func(eventbus.RecordedEvent) string { return "" },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v", err, context.Canceled)
	}
	if diff := cmp.Diff(idsOf(first, second), eventIDs(t, ctx, c.ListenAddrs(), "orders")); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

// TestRelayMaxInFlight relays two events of each of five streams with
// MaxInFlight 2: the relay never has more than two events read and not
// acknowledged, as RelayOptions.MaxInFlight promises, those held back
// behind the record of their key in flight included, and every event is
// written, in order per stream. The relay calls Key for each event once
// it has taken a place in its window, and a franz-go hook sees each
// acknowledgement before the relay frees the place; the producer's
// batches wait 50ms before they go, time in which a relay that read on
// past its window would read every event.
func TestRelayMaxInFlight(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	var events []eventbus.RecordedEvent
	want := make(map[string][]string) // event IDs per stream
	for i := range 10 {
		k := fmt.Sprintf("k%d", i/2)
		e := appendOrder(t, ctx, store, reg, k, Order{Key: k, Seq: i % 2})
		events = append(events, e)
		want[k] = append(want[k], e.ID.String())
	}
	var mu sync.Mutex
	read, most := 0, 0 // events read and not acknowledged
	key := func(e eventbus.RecordedEvent) string {
		mu.Lock()
		defer mu.Unlock()
		read++
		most = max(most, read)
		return e.Stream
	}
	hooks := produceHooks{
		buffered: func(string) {},
		unbuffered: func(id string, err error) {
			if err != nil {
				t.Errorf("record of event %s failed: %v", id, err)
			}
			mu.Lock()
			defer mu.Unlock()
			read--
		},
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Linger: 50 * time.Millisecond, Client: []kgo.Opt{kgo.WithHooks(hooks)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cp := &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: events[len(events)-1].Position + 1, do: stop}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: key, Checkpoints: cp, CheckpointInterval: time.Millisecond, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v", err, context.Canceled)
	}
	mu.Lock()
	if most > 2 {
		t.Errorf("the relay had %d events read and not acknowledged at once, want MaxInFlight, 2, at most", most)
	}
	mu.Unlock()
	stream := make(map[string]string)
	for _, e := range events {
		stream[e.ID.String()] = e.Stream
	}
	got := make(map[string][]string)
	for _, id := range eventIDs(t, ctx, c.ListenAddrs(), "orders") {
		got[stream[id]] = append(got[stream[id]], id)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records per stream (-want +got):\n%s", diff)
	}
}

// checkpointsHook is Checkpoints that calls saved after each save.
type checkpointsHook struct {
	kafka.Checkpoints
	saved func(next uint64)
}

func (c checkpointsHook) Save(ctx context.Context, name string, next uint64) error {
	err := c.Checkpoints.Save(ctx, name, next)
	if err == nil {
		c.saved(next)
	}
	return err
}

// TestRelaySkipsItsOwnCheckpoints relays system streams (StreamPrefix "$"),
// which take in the relay's own checkpoint stream: each save appended an
// event that the relay produced, which moved the checkpoint and so made the
// next save, one record of the relay's own per CheckpointInterval for as
// long as it ran.
func TestRelaySkipsItsOwnCheckpoints(t *testing.T) { relaySystemStreams(t, "r") }

// TestRelaySkipsOtherRelaysCheckpoints runs two relays of system streams
// on one store: each relayed the other's checkpoints, and so moved its own
// checkpoint, whose save the other relayed in turn, prodding each other
// into a save and a record every CheckpointInterval for as long as they
// ran.
func TestRelaySkipsOtherRelaysCheckpoints(t *testing.T) { relaySystemStreams(t, "r1", "r2") }

// TestRelayAndDurableSettle runs a relay and a durable subscription of
// system streams (StreamPrefix "$") on one store, the durable one saving its
// checkpoint after every event and recording each event in a
// StoreProcessed of the store. The relay relayed the durable one's
// checkpoints and records, and the durable one handled the relay's
// checkpoints; each so moved its own checkpoint, whose save the other
// handled in turn, prodding each other for as long as they ran. The books
// kept after the first event are in the store before the second: each must
// handle the two events alone.
func TestRelayAndDurableSettle(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	if err := c.CreateTopic("audit", 1, nil); err != nil {
		t.Fatal(err)
	}
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	first := appendOrder(t, ctx, store, reg, "$audit", Order{Key: "a"})
	var (
		mu      sync.Mutex
		saved   = make(map[string]uint64) // the latest checkpoint of each consumer
		second  eventbus.RecordedEvent
		once    sync.Once
		settled = make(chan struct{}) // both saved past second
	)
	save := func(who string, next uint64) {
		mu.Lock()
		defer mu.Unlock()
		saved[who] = max(saved[who], next)
		past := func(e eventbus.RecordedEvent) bool {
			return saved["relay"] > e.Position && saved["durable"] > e.Position
		}
		switch {
		case second.ID.IsZero() && past(first):
			e, err := appendEvent(ctx, store, orderEvent(t, reg, "$audit", Order{Key: "a", Seq: 1}))
			if err != nil {
				t.Errorf("appending the second event: %v", err)
				once.Do(func() { close(settled) })
			}
			second = e
		case !second.ID.IsZero() && past(second):
			once.Do(func() { close(settled) })
		}
	}

	var (
		handledMu sync.Mutex
		handled   []string
	)
	b := newBus(t, nil)
	d, err := eventbus.SubscribeDurable(ctx, b, checkpointSaves{Store: store, stream: "$checkpoint-audit", saved: func(next uint64) { save("durable", next) }}, nil, "audit",
		func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			handledMu.Lock()
			defer handledMu.Unlock()
			handled = append(handled, e.Payload.ID.String())
			return nil
		}, &eventbus.DurableOptions{
			Filter:          eventbus.Filter{StreamPrefix: "$"},
			CheckpointEvery: 1,
			Subscription: eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{
				eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(store)}),
			}},
		})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
		Name: "audit", Topic: "audit", Filter: eventbus.Filter{StreamPrefix: "$"},
		Checkpoints:        checkpointsHook{Checkpoints: kafka.StoreCheckpoints(store), saved: func(next uint64) { save("relay", next) }},
		CheckpointInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(runCtx) }()
	select {
	case <-settled:
		stop()
		if err := <-ran; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want %v", err, context.Canceled)
		}
	case err := <-ran:
		t.Fatalf("Run() = %v before both saved past the second event", err)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if diff := cmp.Diff(idsOf(first, second), eventIDs(t, ctx, c.ListenAddrs(), "audit")); diff != "" {
		t.Errorf("records of the relay (-want +got):\n%s", diff)
	}
	handledMu.Lock()
	defer handledMu.Unlock()
	if diff := cmp.Diff(idsOf(first, second), handled); diff != "" {
		t.Errorf("events handled by the durable subscription (-want +got):\n%s", diff)
	}
}

// checkpointSaves is a Store that calls saved with each checkpoint that a
// durable subscription appends to stream, its checkpoint stream.
type checkpointSaves struct {
	eventbus.Store
	stream string
	saved  func(next uint64)
}

func (s checkpointSaves) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	res, err := s.Store.Append(ctx, stream, expected, events...)
	if err != nil || stream != s.stream {
		return res, err
	}
	for _, e := range events {
		next, err := strconv.ParseUint(string(e.Data), 10, 64)
		if err != nil {
			return res, fmt.Errorf("checkpoint %q: %w", e.Data, err)
		}
		s.saved(next)
	}
	return res, nil
}

// relaySystemStreams runs relays of the names, each to a topic of its name,
// that relay system streams (StreamPrefix "$"), and so see the relays'
// checkpoint streams. The checkpoints saved after the first event are in
// the store before the second: each topic must hold the two events alone.
func relaySystemStreams(t *testing.T, relays ...string) {
	t.Helper()
	c, reg, store, ctx := relayCluster(t, nil)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	first := appendOrder(t, ctx, store, reg, "$audit", Order{Key: "a"})
	var (
		mu        sync.Mutex
		pastFirst = make(map[string]bool) // the relays that saved past first
		second    eventbus.RecordedEvent
		wg        sync.WaitGroup
		errs      = make([]error, len(relays))
	)
	runs := make([]func() error, len(relays))
	for i, name := range relays {
		if err := c.CreateTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		defer stop()
		cp := checkpointsHook{Checkpoints: kafka.StoreCheckpoints(store), saved: func(next uint64) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case second.ID.IsZero() && next > first.Position:
				pastFirst[name] = true
				if len(pastFirst) < len(relays) {
					return
				}
				e, err := appendEvent(ctx, store, orderEvent(t, reg, "$audit", Order{Key: "a", Seq: 1}))
				if err != nil {
					t.Errorf("appending the second event: %v", err)
					stop()
				}
				second = e
			case !second.ID.IsZero() && next > second.Position:
				stop()
			}
		}}
		relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{
			Name: name, Topic: name, Filter: eventbus.Filter{StreamPrefix: "$"},
			Checkpoints: cp, CheckpointInterval: time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = func() error { return relay.Run(runCtx) }
	}
	for i, run := range runs {
		wg.Go(func() { errs[i] = run() })
	}
	wg.Wait()
	for i, name := range relays {
		if !errors.Is(errs[i], context.Canceled) {
			t.Fatalf("Run() of relay %s = %v, want %v", name, errs[i], context.Canceled)
		}
		if diff := cmp.Diff(idsOf(first, second), eventIDs(t, ctx, c.ListenAddrs(), name)); diff != "" {
			t.Errorf("records of relay %s (-want +got):\n%s", name, diff)
		}
	}
}

// TestRelayTooLargeAfterOtherKeys relays two events of one stream, then one
// of another stream too large for the producer's batches, read while the
// first event's record is in flight (its produce request is held until the
// relay reads the large event). Run stops with an error naming the large
// event once the two before it are written, the second held back behind
// the first: the relay stopped at once, cancelling the first and dropping
// the second, with its checkpoint before both, and so at each restart, so
// that the way past the large event, a checkpoint saved after it, skipped
// them too.
func TestRelayTooLargeAfterOtherKeys(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	events := []eventbus.RecordedEvent{
		appendOrder(t, ctx, store, reg, "a", Order{Key: "a"}),
		appendOrder(t, ctx, store, reg, "a", Order{Key: "a", Seq: 1}),
		appendOrder(t, ctx, store, reg, "b", Order{Key: strings.Repeat("x", 8000)}),
	}
	large := events[2]
	read := make(chan struct{}) // closed when the relay reads the large event
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.SleepControl(func() {
			select {
			case <-read:
			case <-ctx.Done():
			}
		})
		return nil, nil, false
	})
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), BatchMaxBytes: 2048, Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Key: func(e eventbus.RecordedEvent) string {
		if e.ID == large.ID {
			once.Do(func() { close(read) })
		}
		return e.Stream
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkProduceError(t, relay.Run(ctx), large, kerr.MessageTooLarge)
	if diff := cmp.Diff(idsOf(events[:2]...), eventIDs(t, ctx, c.ListenAddrs(), "orders")); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != large.Position {
		t.Errorf("checkpoint = %d, %v; want %d, the large event's position", next, err, large.Position)
	}
}

// TestRelayTooLargeAfterUnselected relays an event, then meets one that
// its filter does not select and one too large for the producer's
// batches: Run stops with an error naming the large event, and the
// checkpoint is at it, as the way past it (a checkpoint saved after it
// once Load returns its position) needs. The checkpoint stayed after the
// first event, before the one not selected, so Load never returned the
// large event's position.
func TestRelayTooLargeAfterUnselected(t *testing.T) {
	c, reg, store, ctx := relayCluster(t, nil)
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: c.ListenAddrs(), BatchMaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	appendOrder(t, ctx, store, reg, "order-a", Order{Key: "a"})
	appendOrder(t, ctx, store, reg, "audit", Order{Key: "not selected"})
	large := appendOrder(t, ctx, store, reg, "order-b", Order{Key: strings.Repeat("x", 8000)})
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Filter: eventbus.Filter{StreamPrefix: "order-"}})
	if err != nil {
		t.Fatal(err)
	}
	checkProduceError(t, relay.Run(ctx), large, kerr.MessageTooLarge)
	if next, err := kafka.StoreCheckpoints(store).Load(ctx, "r"); err != nil || next != large.Position {
		t.Errorf("checkpoint = %d, %v; want %d, the large event's position", next, err, large.Position)
	}
}
