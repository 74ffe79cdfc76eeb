package benchmarks

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/seed-a6f1faae/eventbus"
)

// storeEvent is the event every store peer keeps: a stream name, an ID, a
// type and a payload, plus what the store assigns when it commits.
type storeEvent struct {
	Stream string
	ID     [16]byte
	Type   string
	Data   []byte
	// Set by the store: the event's place in its stream and in the store,
	// from 0, and the commit time in Unix nanoseconds.
	Revision, Position uint64
	Time               int64
}

// A store is an open instance of a store peer in a directory of its own.
type store interface {
	// Append commits evs atomically, each as the next event of its
	// Stream, and returns once they are as durable as the peer promises.
	// It is safe for concurrent use.
	Append(evs []storeEvent) error
	// Read yields the events of stream in revision order or, for "",
	// every event in position order. The caller may keep the events.
	Read(stream string) iter.Seq2[storeEvent, error]
	// Close closes the store and stops every goroutine it started.
	Close() error
}

// A storePeer is one store, and one configuration of it.
type storePeer struct {
	name string
	open func(dir string) (store, error)
	// appendOnly marks a configuration that reads like another peer and
	// is left out of the read workloads.
	appendOnly bool
}

var storePeers = []storePeer{
	{name: "eventbus", open: openFileStore(eventbus.SyncAlways)},
	{name: "eventbus-nosync", open: openFileStore(eventbus.SyncNever), appendOnly: true},
	{name: "bbolt", open: openBolt(false, false)},
	{name: "bbolt-batch", open: openBolt(true, false), appendOnly: true},
	{name: "bbolt-nosync", open: openBolt(false, true), appendOnly: true},
	{name: "sqlite", open: openSQLite("FULL")},
	{name: "sqlite-nosync", open: openSQLite("OFF"), appendOnly: true},
}

// fileStore is eventbus.FileStore: SyncAlways fsyncs before an append
// returns, sharing one write and one fsync among concurrent appends. It
// keeps the policy it was opened with, which the store does not tell, for
// TestStorePeersDurable.
type fileStore struct {
	s    *eventbus.FileStore
	sync eventbus.SyncPolicy
}

func openFileStore(sync eventbus.SyncPolicy) func(string) (store, error) {
	return func(dir string) (store, error) {
		opts := &eventbus.FileStoreOptions{Sync: sync}
		s, err := eventbus.OpenFileStore(dir, opts)
		return fileStore{s, opts.Sync}, err // as opened, not as asked for
	}
}

func (f fileStore) Append(evs []storeEvent) error {
	ctx := context.Background()
	if len(evs) == 1 {
		_, err := f.s.Append(ctx, evs[0].Stream, eventbus.Any, eventData(&evs[0]))
		return err
	}
	as := make([]eventbus.StreamAppend, len(evs))
	for i := range evs {
		as[i] = eventbus.StreamAppend{Stream: evs[i].Stream, Expected: eventbus.Any, Events: []eventbus.EventData{eventData(&evs[i])}}
	}
	_, err := f.s.AppendMulti(ctx, as...)
	return err
}

func eventData(e *storeEvent) eventbus.EventData {
	return eventbus.EventData{ID: e.ID, Type: e.Type, Data: e.Data}
}

func (f fileStore) Read(stream string) iter.Seq2[storeEvent, error] {
	return func(yield func(storeEvent, error) bool) {
		ctx := context.Background()
		events := f.s.ReadAll(ctx, nil)
		if stream != "" {
			events = f.s.ReadStream(ctx, stream, nil)
		}
		for e, err := range events {
			se := storeEvent{Stream: e.Stream, ID: e.ID, Type: e.Type, Data: e.Data, Revision: e.Revision, Position: e.Position, Time: e.Time.UnixNano()}
			if !yield(se, err) || err != nil {
				return
			}
		}
	}
}

func (f fileStore) Close() error { return f.s.Close() }

// boltStore keeps each event in the bucket "events" under its position
// and, in a bucket per stream inside "streams", its position under its
// revision. Every commit is fsynced (bbolt's default) unless noSync sets
// DB.NoSync. Appends run in one DB.Update each or, batched, through
// DB.Batch, bbolt's group commit.
type boltStore struct {
	db    *bolt.DB
	batch bool
}

var (
	boltEvents  = []byte("events")
	boltStreams = []byte("streams")
)

func openBolt(batch, noSync bool) func(string) (store, error) {
	return func(dir string) (store, error) {
		db, err := bolt.Open(filepath.Join(dir, "events.db"), 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			return nil, err
		}
		db.NoSync = noSync
		// Create the buckets only in a new file: an Update commits, and a
		// commit writes and syncs, which would make every timed reopen a
		// durable write.
		var exists bool
		err = db.View(func(tx *bolt.Tx) error {
			exists = tx.Bucket(boltEvents) != nil && tx.Bucket(boltStreams) != nil
			return nil
		})
		if err == nil && !exists {
			err = db.Update(func(tx *bolt.Tx) error {
				_, err1 := tx.CreateBucketIfNotExists(boltEvents)
				_, err2 := tx.CreateBucketIfNotExists(boltStreams)
				return errors.Join(err1, err2)
			})
		}
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
		return &boltStore{db: db, batch: batch}, nil
	}
}

func (s *boltStore) Append(evs []storeEvent) error {
	update := s.db.Update
	if s.batch {
		update = s.db.Batch
	}
	// Batch may run fn twice; it assigns everything anew each time.
	return update(func(tx *bolt.Tx) error {
		events, streams := tx.Bucket(boltEvents), tx.Bucket(boltStreams)
		now := time.Now().UnixNano()
		for i := range evs {
			e := evs[i]
			sb, err := streams.CreateBucketIfNotExists([]byte(e.Stream))
			if err != nil {
				return err
			}
			p, _ := events.NextSequence()
			r, _ := sb.NextSequence()
			e.Position, e.Revision, e.Time = p-1, r-1, now
			// bbolt keeps keys and values until the commit.
			keys := make([]byte, 16)
			pos, rev := keys[:8], keys[8:]
			binary.BigEndian.PutUint64(pos, e.Position)
			binary.BigEndian.PutUint64(rev, e.Revision)
			if err := events.Put(pos, encodeEvent(&e)); err != nil {
				return err
			}
			if err := sb.Put(rev, pos); err != nil {
				return err
			}
		}
		return nil
	})
}

// encodeEvent lays e out as revision, time, ID, the lengths of stream and
// type, stream, type and data.
func encodeEvent(e *storeEvent) []byte {
	b := make([]byte, 0, 8+8+16+4+len(e.Stream)+len(e.Type)+len(e.Data))
	b = binary.BigEndian.AppendUint64(b, e.Revision)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	b = append(b, e.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Stream)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Type)))
	b = append(b, e.Stream...)
	b = append(b, e.Type...)
	return append(b, e.Data...)
}

// decodeEvent reverses encodeEvent, copying out of b, which bbolt owns.
func decodeEvent(pos, b []byte) (storeEvent, error) {
	const fixed = 8 + 8 + 16 + 4
	if len(pos) != 8 || len(b) < fixed {
		return storeEvent{}, fmt.Errorf("bbolt: malformed event at key %x", pos)
	}
	ns, nt := int(binary.BigEndian.Uint16(b[32:])), int(binary.BigEndian.Uint16(b[34:]))
	if len(b) < fixed+ns+nt {
		return storeEvent{}, fmt.Errorf("bbolt: malformed event at key %x", pos)
	}
	e := storeEvent{
		Position: binary.BigEndian.Uint64(pos),
		Revision: binary.BigEndian.Uint64(b),
		Time:     int64(binary.BigEndian.Uint64(b[8:])),
		Stream:   string(b[fixed : fixed+ns]),
		Type:     string(b[fixed+ns : fixed+ns+nt]),
		Data:     append([]byte(nil), b[fixed+ns+nt:]...),
	}
	copy(e.ID[:], b[16:32])
	return e, nil
}

func (s *boltStore) Read(stream string) iter.Seq2[storeEvent, error] {
	return func(yield func(storeEvent, error) bool) {
		stop := errors.New("stopped")
		err := s.db.View(func(tx *bolt.Tx) error {
			events := tx.Bucket(boltEvents)
			c := events.Cursor()
			if stream != "" {
				sb := tx.Bucket(boltStreams).Bucket([]byte(stream))
				if sb == nil {
					return nil
				}
				c = sb.Cursor()
			}
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if stream != "" {
					k, v = v, events.Get(v)
				}
				e, err := decodeEvent(k, v)
				if err != nil {
					return err
				}
				if !yield(e, nil) {
					return stop
				}
			}
			return nil
		})
		if err != nil && err != stop {
			yield(storeEvent{}, err)
		}
	}
}

func (s *boltStore) Close() error { return s.db.Close() }

// sqliteStore is one table in a SQLite database in WAL mode with
// synchronous=FULL, which fsyncs the WAL at every commit (or OFF, which
// never does). Each append is
// one transaction, begun IMMEDIATE so that it takes the write lock at
// once, through a pool of one connection: SQLite has one writer at a
// time, and Go's pool queues the appenders, where several connections
// would poll the lock in the busy handler.
type sqliteStore struct {
	db     *sql.DB
	insert *sql.Stmt
}

func openSQLite(synchronous string) func(string) (store, error) {
	return func(dir string) (store, error) { return openSQLiteIn(dir, synchronous) }
}

func openSQLiteIn(dir, synchronous string) (store, error) {
	dsn := "file:" + filepath.Join(dir, "events.db") +
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(" + synchronous + ")&_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	s := &sqliteStore{db: db}
	_, err = db.Exec(`CREATE TABLE IF NOT EXISTS events (
		position INTEGER PRIMARY KEY,
		stream   TEXT    NOT NULL,
		revision INTEGER NOT NULL,
		id       BLOB    NOT NULL,
		type     TEXT    NOT NULL,
		time     INTEGER NOT NULL,
		data     BLOB    NOT NULL,
		UNIQUE (stream, revision))`)
	if err == nil {
		// The position is the rowid, from 1; the revision follows the
		// stream's last one, found in the (stream, revision) index.
		s.insert, err = db.Prepare(`INSERT INTO events (stream, revision, id, type, time, data)
		SELECT ?1, coalesce(max(revision) + 1, 0), ?2, ?3, ?4, ?5 FROM events WHERE stream = ?1`)
	}
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return s, nil
}

func (s *sqliteStore) Append(evs []storeEvent) (err error) {
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, tx.Rollback())
		}
	}()
	ins := tx.Stmt(s.insert)
	now := time.Now().UnixNano()
	for i := range evs {
		e := &evs[i]
		if _, err := ins.Exec(e.Stream, e.ID[:], e.Type, now, e.Data); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *sqliteStore) Read(stream string) iter.Seq2[storeEvent, error] {
	return func(yield func(storeEvent, error) bool) {
		const cols = `SELECT position - 1, stream, revision, id, type, time, data FROM events `
		var rows *sql.Rows
		var err error
		if stream == "" {
			rows, err = s.db.Query(cols + `ORDER BY position`)
		} else {
			rows, err = s.db.Query(cols+`WHERE stream = ? ORDER BY revision`, stream)
		}
		if err != nil {
			yield(storeEvent{}, err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var e storeEvent
			var id []byte
			if err := rows.Scan(&e.Position, &e.Stream, &e.Revision, &id, &e.Type, &e.Time, &e.Data); err != nil {
				yield(storeEvent{}, err)
				return
			}
			copy(e.ID[:], id)
			if !yield(e, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(storeEvent{}, err)
		}
	}
}

func (s *sqliteStore) Close() error {
	return errors.Join(s.insert.Close(), s.db.Close())
}
