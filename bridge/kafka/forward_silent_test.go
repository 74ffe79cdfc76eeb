package kafka_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// TestForwardCloseWhileKafkaSilent closes a bus while Kafka has taken the
// produce request of a forwarded event and does not answer, as a broker
// that hangs or a network that drops replies does. franz-go keeps a record
// it has sent until the broker answers, whatever the record's context, and
// the handler waited for that, so Close, which waits for the handlers it
// cancels, did not return for as long as Kafka was silent (for good here,
// until the test ended). Now the handler gives up once its context is
// done: Close returns, and the event is dead-lettered with the context's
// error.
func TestForwardCloseWhileKafkaSilent(t *testing.T) {
	c, ctx := ordersCluster(t)
	asked := silenceProduce(t, ctx, c, nil)

	bus := newBus(t, nil)
	orders := newTopic(t, bus)
	forward(t, registry(t), orders, "orders", &kafka.ProducerOptions{Brokers: c.ListenAddrs()}, nil)
	if err := orders.Publish(ctx, Order{Key: "a"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-asked:
	case <-ctx.Done():
		t.Fatal("the record was not sent")
	}
	closed := make(chan error, 1)
	go func() { closed <- bus.Close() }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return while Kafka was silent")
	}
	var dead []eventbus.DeadLetter
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		dead = append(dead, dl)
	}
	if len(dead) != 1 || !errors.Is(dead[0].Err, context.Canceled) {
		t.Errorf("dead letters %v, want the event's, with the handler's context.Canceled", dead)
	}
}

// silenceProduce makes c take every produce request, once armed reports
// true (always, if armed is nil), and answer none until the test ends, as a
// broker that hangs or a network that drops replies does. The channel
// returned tells when a request is held. The held requests are answered
// when the test ends, before the cluster closes: kfake's loop hangs for
// good when the cluster closes while it continues a held request.
func silenceProduce(t *testing.T, ctx context.Context, c *kfake.Cluster, armed func() bool) <-chan struct{} {
	return silence(t, ctx, c, func(fn controlFn) { c.ControlKey(int16(kmsg.Produce), fn) }, armed)
}

// silenceAll is silenceProduce for every request: the whole of Kafka hangs.
func silenceAll(t *testing.T, ctx context.Context, c *kfake.Cluster, armed func() bool) <-chan struct{} {
	return silence(t, ctx, c, c.Control, armed)
}

// controlFn is a kfake control function.
type controlFn = func(kmsg.Request) (kmsg.Response, error, bool)

// silence is silenceProduce for the requests that control gives fn.
func silence(t *testing.T, ctx context.Context, c *kfake.Cluster, control func(fn controlFn), armed func() bool) <-chan struct{} {
	asked := make(chan struct{}, 1)
	silence := make(chan struct{})
	var mu sync.Mutex // over ended and the start of a sleep
	ended := false
	var sleeping sync.WaitGroup
	control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if armed != nil && !armed() {
			return nil, nil, false
		}
		mu.Lock()
		if ended { // a request after the test: answered
			mu.Unlock()
			return nil, nil, false
		}
		sleeping.Add(1)
		mu.Unlock()
		defer sleeping.Done()
		select {
		case asked <- struct{}{}:
		default:
		}
		c.SleepControl(func() {
			select {
			case <-silence:
			case <-ctx.Done():
			}
		})
		return nil, nil, false
	})
	t.Cleanup(func() {
		mu.Lock()
		ended = true
		close(silence)
		mu.Unlock()
		sleeping.Wait()
	})
	return asked
}
