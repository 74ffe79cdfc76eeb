package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Order is the payload of the tests: Seq counts the events of its Key from 0.
type Order struct {
	Key string
	Seq int
}

func (Order) EventType() string     { return "order.placed" }
func (o Order) AggregateID() string { return o.Key }

func registry(t testing.TB) *eventbus.Registry {
	t.Helper()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Order](reg, nil); err != nil {
		t.Fatal(err)
	}
	return reg
}

// cluster starts an in-process Kafka of three brokers with the topics, of 8
// partitions each, and closes it when the test ends.
func cluster(t testing.TB, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(8, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// oneBroker starts an in-process Kafka of one broker made with opts (its
// topics, its limits), closed when the test ends, and returns it with a
// context that ends after 30 seconds or with the test; it checks that the
// test leaves no goroutine.
func oneBroker(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, context.Context) {
	t.Helper()
	checkNoLeaks(t)
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel) // before the cluster closes: held requests let go
	return c, ctx
}

// setup starts a test of the Kafka topics: it checks for leaks, starts a
// cluster with them, and returns its brokers, a registry of Order, and a
// context that ends the test after 30 seconds at most.
func setup(t *testing.T, topics ...string) ([]string, *eventbus.Registry, context.Context) {
	t.Helper()
	checkNoLeaks(t)
	brokers := cluster(t, topics...).ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return brokers, registry(t), ctx
}

// newStore returns a new MemoryStore, closed when the test ends.
func newStore(t testing.TB) *eventbus.MemoryStore {
	t.Helper()
	store, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// newProducer returns a Producer to brokers encoding with reg, with
// franz-go's client options, closed when the test ends.
func newProducer(t testing.TB, reg *eventbus.Registry, brokers []string, client ...kgo.Opt) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(reg, &kafka.ProducerOptions{Brokers: brokers, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newBus(t testing.TB, opts *eventbus.Options) *eventbus.Bus {
	t.Helper()
	b, err := eventbus.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func newTopic(t testing.TB, b *eventbus.Bus) *eventbus.Topic[Order] {
	t.Helper()
	topic, err := eventbus.NewTopic[Order](b, "orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	return topic
}

// checkNoLeaks fails the test if a goroutine of franz-go, kfake or eventbus
// outlives it. Call it first, so that its cleanup runs last. Goroutines that
// were told to stop report their exit to no one (franz-go's connection
// readers, kfake's listeners), so it polls the goroutine list for a while.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked := leakedGoroutines()
			if leaked == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left after the test:\n%s", leaked)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func leakedGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "leakedGoroutines") {
			continue
		}
		if strings.Contains(g, "twmb/franz-go") || strings.Contains(g, "seed-a6f1faae/eventbus") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// orderLog records, per key, the sequence numbers handled, and signals when
// every key has reached its last one.
type orderLog struct {
	t       testing.TB // fails on metadata that does not parse
	mu      sync.Mutex
	seqs    map[string][]int
	handled int
	want    int // distinct events expected
	seen    map[string]int
	done    chan struct{}
	// handledOffsets records, per partition, the offsets handled, when the
	// events carry their Kafka coordinates.
	offsets map[string]map[int64]bool
}

func newOrderLog(t testing.TB, want int) *orderLog {
	return &orderLog{t: t, seqs: make(map[string][]int), seen: make(map[string]int), want: want, done: make(chan struct{}), offsets: make(map[string]map[int64]bool)}
}

func (l *orderLog) handle(_ context.Context, e eventbus.Event[Order]) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs[e.Payload.Key] = append(l.seqs[e.Payload.Key], e.Payload.Seq)
	if e.Payload.Seq >= l.seen[e.Payload.Key] {
		l.seen[e.Payload.Key] = e.Payload.Seq + 1
		l.handled++
		if l.handled == l.want {
			close(l.done)
		}
	}
	if p, ok := e.Metadata["kafka.partition"]; ok {
		off, err := strconv.ParseInt(e.Metadata["kafka.offset"], 10, 64)
		if err != nil {
			l.t.Errorf("event %s: metadata kafka.offset: %v", e.ID, err)
			return nil
		}
		tp := e.Metadata["kafka.topic"] + "/" + p
		if l.offsets[tp] == nil {
			l.offsets[tp] = make(map[int64]bool)
		}
		l.offsets[tp][off] = true
	}
	return nil
}

// handledBelow reports whether every offset of partition tp before off was
// handled.
func (l *orderLog) handledBelow(tp string, off int64) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for o := range off {
		if !l.offsets[tp][o] {
			return o, false
		}
	}
	return 0, true
}

func (l *orderLog) wait(t testing.TB, ctx context.Context) {
	t.Helper()
	select {
	case <-l.done:
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("handled %d distinct events, want %d", l.handled, l.want)
	}
}

// checkExactlyOnce fails unless every key's events were handled once each,
// in order: 0, 1, 2, ... up to its count.
func (l *orderLog) checkExactlyOnce(t testing.TB, perKey map[string]int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, n := range perKey {
		got := l.seqs[k]
		ok := len(got) == n
		for i := 0; ok && i < n; i++ {
			ok = got[i] == i
		}
		if !ok {
			t.Errorf("key %s: handled %v, want 0..%d once each in order", k, abbreviate(got), n-1)
		}
	}
}

// checkInOrder fails unless every key's events were all handled, each one
// after every earlier one: a record handled again (at-least-once) only
// repeats a run that was handled before.
func (l *orderLog) checkInOrder(t testing.TB, perKey map[string]int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, n := range perKey {
		next := 0
		for _, s := range l.seqs[k] {
			if s > next {
				t.Errorf("key %s: seq %d handled before %d: %v", k, s, next, abbreviate(l.seqs[k]))
				break
			}
			if s == next {
				next++
			}
		}
		if next != n {
			t.Errorf("key %s: handled up to %d, want %d", k, next, n)
		}
	}
}

func abbreviate(s []int) string {
	if len(s) > 20 {
		return fmt.Sprint(s[:10], "...", s[len(s)-10:])
	}
	return fmt.Sprint(s)
}

// checkCommittedAll fails unless group has committed the end of every
// partition of topic.
func checkCommittedAll(t testing.TB, ctx context.Context, brokers []string, group, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		c, ok := committed.Lookup(e.Topic, e.Partition)
		if e.Offset > 0 && (!ok || c.At != e.Offset) {
			t.Errorf("group %s committed %s/%d at %d, want its end %d", group, e.Topic, e.Partition, c.At, e.Offset)
		}
	})
}

// forward makes a Producer (closed when the test ends) and forwards orders
// to the Kafka topic kafkaTopic.
func forward(t testing.TB, reg *eventbus.Registry, orders *eventbus.Topic[Order], kafkaTopic string, popts *kafka.ProducerOptions, sopts *eventbus.SubscriptionOptions) {
	t.Helper()
	p, err := kafka.NewProducer(reg, popts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if _, err := kafka.Forward(p, orders, kafkaTopic, sopts); err != nil {
		t.Fatal(err)
	}
}

// consume runs a Consumer on orders' bus that routes the Kafka topic
// "orders" to orders, until stop is called; stop returns Run's error, and
// ended is closed when Run returns, on its own too. Calls of stop after
// the first return the same error. stop also runs when the
// test ends, before the cluster closes and the bus closes (both were made
// before consume, so their cleanups run after its own).
func consume(t testing.TB, ctx context.Context, bus *eventbus.Bus, orders *eventbus.Topic[Order], reg *eventbus.Registry, opts *kafka.ConsumerOptions) (stop func() error, ended <-chan struct{}) {
	t.Helper()
	cons := ordersConsumer(t, bus, orders, reg, opts)
	ctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr <- cons.Run(ctx)
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-runErr
	})
	t.Cleanup(func() { _ = stop() }) // a test that checks Run's error calls stop itself
	return stop, done
}

// ordersConsumer makes a Consumer on orders' bus that routes the Kafka
// topic "orders" to orders.
func ordersConsumer(t testing.TB, bus *eventbus.Bus, orders *eventbus.Topic[Order], reg *eventbus.Registry, opts *kafka.ConsumerOptions) *kafka.Consumer {
	t.Helper()
	cons, err := kafka.NewConsumer(bus, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "orders", orders); err != nil {
		t.Fatal(err)
	}
	return cons
}

// holdMetadata makes c answer the first metadata request for topic only
// once release is closed (or ctx is done), so that a producer holds the
// records it is given meanwhile and sends them in one batch. The channel
// returned is closed once that request arrives: the producer asks for topic
// once it holds a record for it, so the first record buffered before then
// is the first for the topic, whose context franz-go watches while it
// waits.
func holdMetadata(ctx context.Context, c *kfake.Cluster, topic string, release <-chan struct{}) <-chan struct{} {
	asked := make(chan struct{})
	var held bool
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range req.(*kmsg.MetadataRequest).Topics {
			if rt.Topic != nil && *rt.Topic == topic && !held {
				held = true
				close(asked)
				c.SleepControl(func() {
					select {
					case <-release:
					case <-ctx.Done():
					}
				})
			}
		}
		return nil, nil, false
	})
	return asked
}

// eachConsumerCase runs test as a subtest in each mode, with and without a
// dead-letter topic. The cases may share a cluster: each reads in a group
// of its own, and dead-letters to a topic of its own.
func eachConsumerCase(t *testing.T, test func(t *testing.T, mode eventbus.Mode, group, deadLetter string)) {
	for _, mode := range []string{"async", "sync"} {
		for _, deadLetter := range []string{"dead-" + mode, ""} {
			t.Run(fmt.Sprintf("%s, dead-letter topic %q", mode, deadLetter), func(t *testing.T) {
				m := map[string]eventbus.Mode{"async": eventbus.Async, "sync": eventbus.Sync}[mode]
				test(t, m, "g-"+mode+"-"+deadLetter, deadLetter)
			})
		}
	}
}

// handledThenStop waits until handled is closed, when the handler has
// handled record (named in failures), failing the test if Run returns or
// ctx ends first; then it stops Run and wants it to return nil.
func handledThenStop(t *testing.T, ctx context.Context, handled <-chan struct{}, runErr <-chan error, stop func(), record string) {
	t.Helper()
	select {
	case <-handled:
	case err := <-runErr:
		t.Fatalf("Run() = %v before %s was handled", err, record)
	case <-ctx.Done():
		t.Fatalf("%s was not handled", record)
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
}

// startRun runs r (a Consumer or a Relay) in a goroutine of its own until
// stop is called or ctx ends, and returns the channel that receives Run's
// result.
func startRun(ctx context.Context, r interface{ Run(context.Context) error }) (runErr <-chan error, stop context.CancelFunc) {
	ctx, stop = context.WithCancel(ctx)
	ch := make(chan error, 1)
	go func() { ch <- r.Run(ctx) }()
	return ch, stop
}

// runReturned waits for Run, started by startRun, to return, and returns
// its error; it fails the test if ctx ends first.
func runReturned(t *testing.T, ctx context.Context, runErr <-chan error) error {
	t.Helper()
	select {
	case err := <-runErr:
		return err
	case <-ctx.Done():
		t.Fatal("Run did not return")
		return nil
	}
}

// awaitRunning waits for ch while the Run of runErr (from startRun) runs,
// and fails the test, naming what it waited for, if Run returns or ctx
// ends first.
func awaitRunning(t *testing.T, ctx context.Context, runErr <-chan error, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case err := <-runErr:
		t.Fatalf("Run() = %v before %s", err, what)
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// logOrders subscribes "shipping" to orders with a handler that logs the
// events it handles in the log returned, done once want distinct events
// were handled.
func logOrders(t testing.TB, orders *eventbus.Topic[Order], want int) *orderLog {
	t.Helper()
	log := newOrderLog(t, want)
	if _, err := orders.Subscribe("shipping", log.handle, nil); err != nil {
		t.Fatal(err)
	}
	return log
}

// holdHandling subscribes "shipping" to orders with a handler that holds
// each event that hold selects (every event if hold is nil) until release
// is closed or the handler's context ends. started is closed once it
// holds the first.
func holdHandling(t testing.TB, orders *eventbus.Topic[Order], hold func(Order) bool) (started <-chan struct{}, release chan struct{}) {
	t.Helper()
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	if _, err := orders.Subscribe("shipping", func(hctx context.Context, e eventbus.Event[Order]) error {
		if hold != nil && !hold(e.Payload) {
			return nil
		}
		once.Do(func() { close(held) })
		select {
		case <-release:
		case <-hctx.Done():
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	return held, release
}

// orderWriter returns a function that writes o to partition of the Kafka
// topic "orders" as the bridge writes an event (its ID and type in
// headers), straight through a franz-go client of its own, closed when the
// test ends, and waits until Kafka has it.
func orderWriter(t testing.TB, ctx context.Context, brokers []string, reg *eventbus.Registry) func(partition int32, o Order) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return func(partition int32, o Order) {
		t.Helper()
		ed, err := reg.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: "orders", Partition: partition, Value: ed.Data, Headers: []kgo.RecordHeader{
			{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
			{Key: "eventbus-type", Value: []byte(ed.Type)},
		}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// otherMember returns a franz-go client that joins the group "g" on the
// Kafka topic "orders", beside a test's Consumer, with opts, and commits
// only when told; it is closed when the test ends. The channel returned
// receives a partition it is assigned.
func otherMember(t testing.TB, brokers []string, opts ...kgo.Opt) (*kgo.Client, <-chan int32) {
	t.Helper()
	assigned := make(chan int32, 1)
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			for _, p := range m["orders"] {
				select {
				case assigned <- p:
				default: // one is enough; or assigned again as the test ends
				}
			}
		}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, assigned
}

// failGroupRequests answers the first n requests of key, a request of the
// consumer group protocol, with the error, as a coordinator does that
// moves, loads, rebalances or refuses the group; all of them if n is
// negative. The channel returned is closed once the n-th is answered.
func failGroupRequests(c *kfake.Cluster, key kmsg.Key, fail *kerr.Error, n int) <-chan struct{} {
	failedAll := make(chan struct{})
	var failed int // kfake runs control functions one at a time
	c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if n >= 0 && failed >= n {
			return nil, nil, false
		}
		if failed++; failed == n {
			close(failedAll)
		}
		resp := req.ResponseKind()
		resp.SetVersion(req.GetVersion())
		switch r := resp.(type) {
		case *kmsg.JoinGroupResponse:
			r.ErrorCode = fail.Code
		case *kmsg.SyncGroupResponse:
			r.ErrorCode = fail.Code
		case *kmsg.HeartbeatResponse:
			r.ErrorCode = fail.Code
		case *kmsg.OffsetFetchResponse:
			r.ErrorCode = fail.Code // before v8; from v8 on, per group
			for _, g := range req.(*kmsg.OffsetFetchRequest).Groups {
				rg := kmsg.NewOffsetFetchResponseGroup()
				rg.Group, rg.ErrorCode = g.Group, fail.Code
				r.Groups = append(r.Groups, rg)
			}
		}
		return resp, nil, true
	})
	return failedAll
}

// groupCluster starts a subtest of a test that checks for leaks: a
// cluster with the topic "orders", a registry of Order, and a context that
// ends the subtest after 60 seconds at most.
func groupCluster(t *testing.T) (*kfake.Cluster, *eventbus.Registry, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return cluster(t, "orders"), registry(t), ctx
}

// newClientHook is a franz-go hook that keeps the client it is given as
// it is made, whose OptValue tells the options it runs with.
type newClientHook struct{ cl *kgo.Client }

func (h *newClientHook) OnNewClient(cl *kgo.Client) { h.cl = cl }

// relayHeld relays n events, each of a stream of its own, through a
// Producer of popts (Brokers filled in) by a relay of ropts (Name, Topic
// and Checkpoints filled in), while Kafka holds back the topic's metadata,
// so that franz-go sends no record, until watch, run meanwhile in the
// test's goroutine, closes release; it returns once every event is
// written.
func relayHeld(t *testing.T, n int, popts kafka.ProducerOptions, ropts kafka.RelayOptions, watch func(ctx context.Context, release chan<- struct{})) {
	t.Helper()
	c, reg, store, ctx := relayCluster(t, nil)
	var last eventbus.RecordedEvent
	for i := range n {
		last = appendOrder(t, ctx, store, reg, fmt.Sprint("s", i), Order{Key: fmt.Sprint("s", i)})
	}
	release := make(chan struct{})
	holdMetadata(ctx, c, "orders", release)
	popts.Brokers = c.ListenAddrs()
	p, err := kafka.NewProducer(reg, &popts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ropts.Name, ropts.Topic = "r", "orders"
	ropts.Checkpoints = &onceSaved{Checkpoints: kafka.StoreCheckpoints(store), end: last.Position + 1, do: stop}
	relay, err := kafka.NewRelay(store, p, &ropts)
	if err != nil {
		t.Fatal(err)
	}
	runErr, _ := startRun(runCtx, relay)
	watch(ctx, release)
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want %v once every event was written", err, context.Canceled)
	}
}

// logRecorder is a slog.Handler that keeps the attributes of the first
// record of each message in want, as strings (the error's presence as
// "err"), and its error in errs, and closes the message's channel then.
type logRecorder struct {
	mu   sync.Mutex
	want map[string]chan struct{}
	got  map[string]map[string]string
	errs map[string]error
}

func newLogRecorder(messages ...string) *logRecorder {
	l := &logRecorder{want: make(map[string]chan struct{}), got: make(map[string]map[string]string), errs: make(map[string]error)}
	for _, m := range messages {
		l.want[m] = make(chan struct{})
	}
	return l
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.want[r.Message]
	if !ok || l.got[r.Message] != nil {
		return nil
	}
	attrs := make(map[string]string)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			attrs[a.Key] = "err"
			l.errs[r.Message], _ = a.Value.Any().(error)
		} else {
			attrs[a.Key] = a.Value.String()
		}
		return true
	})
	l.got[r.Message] = attrs
	close(ch)
	return nil
}

// oneEventRelay returns a relay "r" to the topic "orders" of c, with the
// CheckpointInterval (zero for its default), of a new store that holds one
// event, the event, and the Checkpoints the relay saves in.
func oneEventRelay(t *testing.T, ctx context.Context, c *kfake.Cluster, checkpointInterval time.Duration) (*kafka.Relay, kafka.Checkpoints, eventbus.RecordedEvent) {
	t.Helper()
	reg := registry(t)
	p := newProducer(t, reg, c.ListenAddrs())
	store := newStore(t)
	e := appendOrder(t, ctx, store, reg, "o-1", Order{Key: "o-1"})
	cp := kafka.StoreCheckpoints(store)
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "r", Topic: "orders", Checkpoints: cp, CheckpointInterval: checkpointInterval})
	if err != nil {
		t.Fatal(err)
	}
	return relay, cp, e
}
