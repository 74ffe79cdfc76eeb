package benchmarks

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	asaskevich "github.com/asaskevich/EventBus"
	cskr "github.com/cskr/pubsub/v2"
	kelindar "github.com/kelindar/event"
	mustafaturan "github.com/mustafaturan/bus/v3"
	vardius "github.com/vardius/message-bus"

	"github.com/seed-a6f1faae/eventbus"
)

// msg is the payload every peer carries.
type msg struct {
	Key string // ordering key; empty in the unkeyed workloads
	K   int32  // index of Key in keys
	Seq uint64 // per-key sequence number, from 1
}

// queueSize is the buffer given to every peer that takes one, so that no
// peer is slowed by a smaller queue than another. eventbus's default
// QueueSize is the same, but per worker: GOMAXPROCS per subscription.
const queueSize = 1024

// A bus is a running instance of a peer with one or more topics.
type bus interface {
	// Publish sends m to every subscriber of topic number topic.
	Publish(topic int, m msg)
	// Close stops the instance and every goroutine the benchmark started
	// for it. Events already handled are all the harness waits for, so
	// Close may drop nothing that matters.
	Close()
}

// A peer is one event bus under test.
type peer struct {
	name string
	// ordered says whether the keyed workload keeps per-key order on this
	// peer; check_test.go holds it to that.
	ordered bool
	// open starts the peer with len(topics) topics, topic i having one
	// subscriber per function in topics[i]. ordered asks for in-order
	// delivery to each subscriber where the peer has a switch for it.
	open func(topics [][]func(msg), ordered bool) bus
	// keyed, if set, starts the peer's own keyed delivery over that many
	// ordered workers. If nil, the harness emulates keys: one topic per
	// worker with one subscriber each, the publisher routing by
	// hash(key) % workers.
	keyed func(workers int, h func(msg)) bus
}

// peers is the table every workload runs over, floors first.
var peers = []peer{
	{name: "direct-call", ordered: true, open: openDirect},
	{name: "channel", ordered: true, open: openChannel},
	{name: "eventbus", ordered: true, open: openEventbus(eventbus.Options{}), keyed: keyedEventbus(eventbus.Options{})},
	{name: "eventbus+mw", ordered: true, open: openEventbus(chain()), keyed: keyedEventbus(chain())},
	{name: "watermill", ordered: false, open: openWatermill(false)},
	{name: "watermill-ack", ordered: true, open: openWatermill(true)},
	{name: "kelindar", ordered: true, open: openKelindar},
	{name: "asaskevich", ordered: true, open: openAsaskevich},
	{name: "mustafaturan", ordered: true, open: openMustafaturan},
	{name: "vardius", ordered: true, open: openVardius},
	{name: "cskr", ordered: true, open: openCskr},
}

// chain is a typical full chain: deduplication by event ID in memory,
// logging to a production-level logger (failures only), a retry policy, and
// metrics with latency histograms. Panic recovery is built into every
// subscription.
func chain() eventbus.Options {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	return eventbus.Options{
		Middleware: []eventbus.Middleware{eventbus.Idempotency(nil), eventbus.Logging(logger)},
		Retry:      eventbus.RetryPolicy{MaxAttempts: 3},
		Metrics:    true,
	}
}

// must panics on a setup error: benchmarks have no better way to stop.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// topicName names topic number i for peers that name topics. The names of
// the workloads' topics are made once, as keys are: a publish to a peer
// that takes a name formatted one, an allocation that eventbus, which
// publishes to a topic value, never paid.
func topicName(i int) string {
	if i < len(topicNames) {
		return topicNames[i]
	}
	return "t" + strconv.Itoa(i)
}

var topicNames = func() []string {
	ns := make([]string, max(fanout, workers))
	for i := range ns {
		ns[i] = "t" + strconv.Itoa(i)
	}
	return ns
}()

// direct is the first floor: the publisher calls every handler itself.
type direct [][]func(msg)

func openDirect(topics [][]func(msg), _ bool) bus { return direct(topics) }

func (d direct) Publish(topic int, m msg) {
	for _, h := range d[topic] {
		h(m)
	}
}

func (direct) Close() {}

// channel is the second floor: one buffered channel and one goroutine per
// subscriber.
type channel struct {
	topics [][]chan msg
	wg     sync.WaitGroup
}

func openChannel(topics [][]func(msg), _ bool) bus {
	c := &channel{topics: make([][]chan msg, len(topics))}
	for i, hs := range topics {
		for _, h := range hs {
			ch := make(chan msg, queueSize)
			c.topics[i] = append(c.topics[i], ch)
			c.wg.Go(func() {
				for m := range ch {
					h(m)
				}
			})
		}
	}
	return c
}

func (c *channel) Publish(topic int, m msg) {
	for _, ch := range c.topics[topic] {
		ch <- m
	}
}

func (c *channel) Close() {
	for _, chs := range c.topics {
		for _, ch := range chs {
			close(ch)
		}
	}
	c.wg.Wait()
}

// ebus is eventbus with default options: GOMAXPROCS workers per
// subscription, which unkeyed events go to (a free one if there is one).
type ebus struct {
	bus    *eventbus.Bus
	topics []*eventbus.Topic[msg]
}

func newEbus(opts eventbus.Options) *ebus {
	b, err := eventbus.New(&opts)
	must(err)
	return &ebus{bus: b}
}

func openEventbus(opts eventbus.Options) func([][]func(msg), bool) bus {
	return func(topics [][]func(msg), _ bool) bus {
		e := newEbus(opts)
		for i, hs := range topics {
			t, err := eventbus.NewTopic[msg](e.bus, topicName(i), nil)
			must(err)
			for j, h := range hs {
				_, err := t.Subscribe("s"+strconv.Itoa(j), handle(h), nil)
				must(err)
			}
			e.topics = append(e.topics, t)
		}
		return e
	}
}

// keyedEventbus uses the bus's own keys: one subscription with that many
// workers, the key taken from the payload by TopicOptions.Key.
func keyedEventbus(opts eventbus.Options) func(int, func(msg)) bus {
	return func(workers int, h func(msg)) bus {
		e := newEbus(opts)
		t, err := eventbus.NewTopic(e.bus, "keyed", &eventbus.TopicOptions[msg]{
			Key: func(m msg) string { return m.Key },
		})
		must(err)
		_, err = t.Subscribe("workers", handle(h), &eventbus.SubscriptionOptions{Workers: workers})
		must(err)
		e.topics = append(e.topics, t)
		return e
	}
}

func handle(h func(msg)) eventbus.Handler[msg] {
	return func(_ context.Context, e eventbus.Event[msg]) error {
		h(e.Payload)
		return nil
	}
}

func (e *ebus) Publish(topic int, m msg) {
	must(e.topics[topic].Publish(context.Background(), m))
}

func (e *ebus) Close() { must(e.bus.Shutdown(context.Background())) }

// wmill is watermill's gochannel Pub/Sub. Messages carry bytes, so the
// payload is encoded at publish and decoded in the subscriber, and each
// gets a UUID, as watermill's documentation does it.
type wmill struct {
	ps *gochannel.GoChannel
	wg sync.WaitGroup
}

func openWatermill(ack bool) func([][]func(msg), bool) bus {
	return func(topics [][]func(msg), _ bool) bus {
		w := &wmill{ps: gochannel.NewGoChannel(gochannel.Config{
			OutputChannelBuffer:            queueSize,
			BlockPublishUntilSubscriberAck: ack,
		}, watermill.NopLogger{})}
		for i, hs := range topics {
			for _, h := range hs {
				ch, err := w.ps.Subscribe(context.Background(), topicName(i))
				must(err)
				w.wg.Go(func() {
					for m := range ch {
						p := m.Payload
						k := int32(binary.LittleEndian.Uint32(p))
						h(msg{Key: keys[k], K: k, Seq: binary.LittleEndian.Uint64(p[4:])})
						m.Ack()
					}
				})
			}
		}
		return w
	}
}

func (w *wmill) Publish(topic int, m msg) {
	p := make([]byte, 12)
	binary.LittleEndian.PutUint32(p, uint32(m.K))
	binary.LittleEndian.PutUint64(p[4:], m.Seq)
	must(w.ps.Publish(topicName(topic), message.NewMessage(watermill.NewUUID(), p)))
}

func (w *wmill) Close() {
	must(w.ps.Close())
	w.wg.Wait()
}

// kmsg is msg as kelindar/event wants it: the event type is the topic.
type kmsg struct {
	msg
	topic uint32
	stop  bool // asks every subscriber of the topic to unsubscribe
}

func (k kmsg) Type() uint32 { return k.topic }

// kbus is kelindar/event. Its consumers wake on a 500µs ticker. A consumer
// unsubscribed from outside exits only at its topic's next tick, which may
// never come once the dispatcher is closed, so each consumer unsubscribes
// itself from its own handler when it sees a stop event, and exits as soon
// as that handler returns.
type kbus struct {
	d      *kelindar.Dispatcher
	topics int
	wg     sync.WaitGroup
}

func openKelindar(topics [][]func(msg), _ bool) bus {
	k := &kbus{d: kelindar.NewDispatcher(), topics: len(topics)}
	for i, hs := range topics {
		for _, h := range hs {
			k.wg.Add(1)
			var cancel context.CancelFunc
			// Publish orders this assignment before any handler call.
			cancel = kelindar.SubscribeTo(k.d, uint32(i), func(m kmsg) {
				if m.stop {
					cancel()
					k.wg.Done()
					return
				}
				h(m.msg)
			})
		}
	}
	return k
}

func (k *kbus) Publish(topic int, m msg) {
	kelindar.Publish(k.d, kmsg{msg: m, topic: uint32(topic)})
}

func (k *kbus) Close() {
	for t := range k.topics {
		kelindar.Publish(k.d, kmsg{topic: uint32(t), stop: true})
	}
	k.wg.Wait()
	must(k.d.Close())
}

// abus is asaskevich/EventBus with asynchronous subscribers: each event
// runs in a goroutine of its own, in parallel unless the subscription is
// transactional, which runs them one at a time in publish order.
type abus struct {
	b asaskevich.Bus
}

func openAsaskevich(topics [][]func(msg), ordered bool) bus {
	a := &abus{b: asaskevich.New()}
	for i, hs := range topics {
		for _, h := range hs {
			must(a.b.SubscribeAsync(topicName(i), h, ordered))
		}
	}
	return a
}

func (a *abus) Publish(topic int, m msg) { a.b.Publish(topicName(topic), m) }

func (a *abus) Close() { a.b.WaitAsync() }

// mbus is mustafaturan/bus: handlers run in the publishing goroutine. It
// needs an ID generator; a counter is the cheapest honest one.
type mbus struct {
	b *mustafaturan.Bus
}

func openMustafaturan(topics [][]func(msg), _ bool) bus {
	var id atomic.Uint64
	b, err := mustafaturan.NewBus(mustafaturan.Next(func() string {
		return strconv.FormatUint(id.Add(1), 36)
	}))
	must(err)
	for i, hs := range topics {
		b.RegisterTopics(topicName(i))
		for j, h := range hs {
			b.RegisterHandler(topicName(i)+"/"+strconv.Itoa(j), mustafaturan.Handler{
				Handle:  func(_ context.Context, e mustafaturan.Event) { h(e.Data.(msg)) },
				Matcher: "^" + topicName(i) + "$",
			})
		}
	}
	return &mbus{b: b}
}

func (m *mbus) Publish(topic int, v msg) {
	must(m.b.Emit(context.Background(), topicName(topic), v))
}

func (*mbus) Close() {}

// vbus is vardius/message-bus: one buffered channel and one goroutine per
// subscriber, handlers called by reflection. Its goroutines end when their
// topic is closed and drained; the library offers no way to wait for that.
type vbus struct {
	b      vardius.MessageBus
	topics int
}

func openVardius(topics [][]func(msg), _ bool) bus {
	v := &vbus{b: vardius.New(queueSize), topics: len(topics)}
	for i, hs := range topics {
		for _, h := range hs {
			must(v.b.Subscribe(topicName(i), func(m msg) { h(m) }))
		}
	}
	return v
}

func (v *vbus) Publish(topic int, m msg) { v.b.Publish(topicName(topic), m) }

func (v *vbus) Close() {
	for i := range v.topics {
		v.b.Close(topicName(i))
	}
}

// cbus is cskr/pubsub: one dispatching goroutine owned by the library,
// which hands each subscriber a channel; a goroutine of ours per subscriber
// drains it.
type cbus struct {
	ps *cskr.PubSub[int, msg]
	wg sync.WaitGroup
}

func openCskr(topics [][]func(msg), _ bool) bus {
	c := &cbus{ps: cskr.New[int, msg](queueSize)}
	for i, hs := range topics {
		for _, h := range hs {
			ch := c.ps.Sub(i)
			c.wg.Go(func() {
				for m := range ch {
					h(m)
				}
			})
		}
	}
	return c
}

func (c *cbus) Publish(topic int, m msg) { c.ps.Pub(m, topic) }

func (c *cbus) Close() {
	c.ps.Shutdown()
	c.wg.Wait()
}
