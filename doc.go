// Package eventbus provides an in-process event bus with typed topics,
// per-key ordered workers, retries and a dead-letter queue, and an embedded
// event store for event sourcing.
//
// # Topics, events and subscriptions
//
// A [Bus] carries many topics; a [Topic] carries events whose payload has
// one Go type, checked by the compiler at Publish and in handlers:
//
//	bus, _ := eventbus.New(nil)
//	users, _ := eventbus.NewTopic[UserCreated](bus, "users", nil)
//	users.Subscribe("mailer", func(ctx context.Context, e eventbus.Event[UserCreated]) error {
//		return sendWelcome(ctx, e.Payload.Email)
//	}, nil)
//	users.Publish(ctx, UserCreated{UserID: "u-1", Email: "a@example.com"})
//
// Every published event gets an envelope, its [Header]: a unique,
// time-sortable [ID], the event type name, the topic, a key, the publish
// time, a schema version, metadata, and correlation and causation IDs. A
// handler that publishes with the context it was given links the new event
// to the one it handles: the new event inherits the correlation ID and takes
// the handled event's ID as its causation ID.
//
// # Delivery and ordering
//
// Each subscription receives every event of its topic. Inside a
// subscription, events are shared out to workers by key: events with the
// same key go to the same worker and are handled one at a time in publish
// order; events with different keys are handled in parallel. The key comes
// from [WithKey] at Publish, else from [TopicOptions].Key, else from the
// payload's AggregateID() (or GetAggregateID()) method. Events without a key
// have no order promise at all: one published alone goes to a worker with
// nothing to do, if one of the first 64 has nothing, so that it does not
// wait behind another event; the rest go to workers at random.
//
// In [Async] mode, the default, Publish returns once the event is queued for
// every subscription. Queues are bounded: when one is full, Publish waits
// for room or for its context, and [Topic.TryPublish] returns false instead.
// An event is queued for every subscription or for none, never for some.
// [Topic.PublishBatch] publishes a slice of payloads in order at a lower
// cost per event, and says how many it published if it stops early.
// Nothing is dropped silently. A handler that publishes with the context it
// was given (or one made from it) never waits for room (its event is queued
// past the bound; TryPublish keeps the bound and returns false), so a
// handler publishing to its own topic cannot deadlock the bus; nor can a
// [DeadLetterSink], which the worker waits for. A handler
// that publishes with another context, such as context.Background(), waits
// like any publisher, for room that may have to come from its own worker. In
// [Sync] mode the handlers run in the publishing goroutine before Publish
// returns, and their errors come back to the publisher, one [*HandlerError]
// per failed subscription. Keys order nothing there: the handlers of
// concurrent publishers run at once, whatever their keys, and a retry's
// wait holds up only its own publisher.
//
// [Bus.Flush] waits until everything published before it has been handled.
//
// # Failures
//
// A handler fails by returning an error or by panicking; a panic becomes a
// [*PanicError] with the stack, and the worker goes on. A [RetryPolicy]
// says how often to try again, with exponential backoff; while an event waits
// for its retry, later events with its key wait behind it and other keys keep
// flowing. Errors wrapped with [Permanent] are not retried. An event whose
// attempts are spent goes to the bus's [DeadLetterQueue], with its error,
// attempt count and failure times, from where it can be inspected and
// redriven.
//
// [Topic.SubscribeBatch] hands a subscription's events to a [BatchHandler]
// many at a time, for bulk writes; a [*BatchError] names the events that
// failed, and only those are retried.
//
// # Middleware
//
// A [Middleware] wraps the handling of every event, whatever its payload
// type, through its untyped view, the [Envelope]. The bus's middleware runs
// outside each subscription's own; the first given is the outermost. A
// batch subscription runs none, not even the bus's. Built in:
// [Idempotency] (effectively-once handling, in memory or over a
// [ProcessedStore]), [Timeout] and [Logging]. W3C trace context travels
// with events through [WithTraceparent] and [Traceparent].
//
// # Metrics
//
// [Bus.Metrics] counts, per subscription, what was queued, handled, failed,
// retried, dead-lettered and skipped as duplicate, with queue depths and,
// with Options.Metrics, latency histograms. A Sync-mode subscription counts
// only with Options.Metrics: its handlers run in concurrent publishers,
// where counting costs a lock.
//
// # The event store
//
// A [Store] keeps events in streams with EventStoreDB's rules: atomic
// appends checked against an [ExpectedRevision], idempotent by event ID;
// lazy reads by stream or by global position; catch-up subscriptions;
// soft deletion and tombstones. [MemoryStore] keeps it in memory;
// [FileStore] ([OpenFileStore]) keeps it on disk, in append-only segment
// files whose records carry checksums, and recovers it after a crash. A
// [Registry] encodes typed payloads by event type and schema version, and
// upcasts old versions on read.
//
// # Event sourcing
//
// An [Aggregate] loads an aggregate by folding the events of its stream
// (from its latest snapshot, when it has one and the Aggregate's
// SnapshotEvery is set), runs a command that decides new events, and
// appends them with the revision it loaded, retrying the whole cycle when
// another command got there first. A [Durable] subscription
// ([SubscribeDurable]) reads the store from a persisted checkpoint through
// the bus's workers, middleware, retries and dead-letter queue, one stream
// at a time per key; it resumes after a restart, at least once, and
// [Idempotency] over [NewStoreProcessed] skips the events it handled before
// but those whose handlers returned just before a crash, before their
// records were saved. It is also how projections build read models:
// [Durable.WaitFor] reads your own writes, [Durable.Rebuild] replays from
// the start, and [SubscribeDurableBatch] hands a projection its events in
// batches, to write each in one transaction. A [StoreTopic] publishes
// after commit: its events reach subscribers only once they are in the
// store, and [StoreTopic.PublishBatch] commits many at once, all or none.
//
// # Shutdown
//
// [Bus.Shutdown] stops intake, drains every queue and waits for every
// handler and goroutine of the bus. Intake stops for the handlers too: one
// that publishes while the queues drain gets [ErrClosed], and its event
// fails, without retries, if it returns that (a [Durable] subscription's
// next run handles it again); publish follow-ups that must outlive a stop
// to a [StoreTopic]. If its context ends first, or on [Bus.Close], handler
// contexts are cancelled and events not yet handled go to the dead-letter
// queue, counted in an [*UndeliveredError]. Sync-mode handlers are none
// of these: they run in their publishers' goroutines,
// which a stop neither waits for nor cancels (a Publish already running
// completes). Afterwards
// Publish, Subscribe and NewTopic return [ErrClosed]; Unsubscribe, with
// nothing left to wait for, returns nil, and so does Flush, unless the
// stop abandoned events, cut a running handler short, or failed handlers
// with ErrClosed ([ErrClosed] then, so that a caller acknowledging its
// input after Flush knows that not all of it was handled); and Shutdown
// and Close return the first call's result. [Subscription.Unsubscribe] stops
// one subscription the same way. [Bus.Done] is closed once the bus has
// stopped, for goroutines of your own that publish and should stop with it.
//
// # Errors
//
// Bad input returns an error wrapping [ErrInvalid] that says what was wrong;
// the bus never panics on it. Two kinds wrap another sentinel instead:
// a name already taken, [ErrDuplicate]; a Go type that a [Registry] has not
// registered, given to a function that encodes or decodes it through the
// Registry ([NewStoreTopic], [NewAggregate], [SubscribeDurable],
// [SaveSnapshot] and the like), [ErrUnknownEvent].
//
// # Concurrency
//
// Every exported method is safe for concurrent use. The bus starts a fixed
// number of goroutines per subscription (its workers, and for a [Durable]
// subscription two more: one reading the store, one saving its checkpoint)
// and one to refresh its clock (none with Options.Clock), never one per
// event; the one exception is a [DeadLetterSink], which runs on a goroutine
// of its own for each dead letter, waited for by the goroutine that gave up
// on the event. No goroutine outlives Shutdown or Close.
package eventbus
