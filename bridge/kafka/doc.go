// Package kafka carries the events of eventbus buses between processes over
// Apache Kafka, with franz-go, without changing handler code.
//
// # Three parts
//
// [Forward] writes the events of a bus topic to a Kafka topic through a
// [Producer]. A [Relay] writes the events of an event store to Kafka from a
// durable checkpoint: the outbox pattern, at-least-once. A [Consumer] reads
// Kafka topics as a consumer group and publishes their records on typed bus
// topics ([Route]), where the bus's per-key workers, middleware, retries and
// dead-letter queue handle them as any other event.
//
// # On the wire
//
// A record's key is the event's key (a Relay's default: its stream), so
// Kafka's key hashing puts one key's events in one partition, in order. Its
// value is the payload encoded by an [eventbus.Registry]: empty, never null
// (a tombstone, which compaction takes for a deletion), for a payload that
// encodes to no bytes. Headers carry the envelope: "eventbus-id",
// "eventbus-type", "eventbus-schema-version", "eventbus-encoding" (when
// compressed), "eventbus-correlation-id", "eventbus-causation-id",
// "traceparent", and each other metadata entry as "eventbus-md-" followed
// by its key.
//
// # Ordering and delivery
//
// The producer is idempotent and waits for all in-sync replicas, so retries
// neither duplicate nor reorder a partition's records. A record that fails
// fails with the later ones of its partition that franz-go holds, but not
// with those produced after it failed, nor when it fails alone (too large
// for a batch): a Relay therefore produces one record of a key at a time,
// and stops at the first that fails, so that no later one of its key
// overtakes it (see [Relay]). The Consumer commits a
// partition's offset only past records the bus has handled or dead-lettered,
// and before giving a partition up in a rebalance. Records handled after the
// last commit are handled again after a crash: delivery is at-least-once,
// made effectively-once by the Idempotency middleware keyed by [EventID]
// over a [eventbus.ProcessedStore] (its in-memory record does not outlive
// the process), one that every process of the group shares for the
// records that a partition's next owner gets again (see [EventID]).
//
// # Configuration
//
// Each part takes an options struct whose zero values are safe defaults;
// Brokers come from the caller, and further franz-go options (TLS, SASL,
// logging) go in the Client field. The bridge creates no topics: writing
// to one that Kafka does not have fails (kerr.UnknownTopicOrPartition),
// and a Consumer waits, silently, for a routed one until it is created.
package kafka
