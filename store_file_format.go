package eventbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// The on-disk format of a [FileStore].
//
// A store is a directory of segment files named seg-<16 hex digits>.log by
// their sequence number. Every segment starts with a 32-byte header:
//
//	magic "EVBUSLOG" | version u16 | reserved u16 | crc u32 | seq u64 | first position u64
//
// where crc is the CRC-32C (Castagnoli) of the header with the crc field
// zeroed. Frames follow, back to back, each one record:
//
//	length u32 | crc u32 | payload (length bytes)
//
// with crc the CRC-32C of the payload. Every integer is little-endian or an
// unsigned varint (uv). A payload starts with its kind:
//
//	1 events:   uv parts, each: uv len, stream, uv n, n entries
//	            entry: uv len, then uv position, uv revision, i64 unix ns,
//	            id [16], correlation [16], causation [16], uv schema version,
//	            uv len, type, uv len, encoding, uv n, n × (uv len, key, uv len,
//	            value), uv len, data
//	2 delete:   uv len, stream, u8 tombstone (0 or 1)
//	3 metadata: uv len, stream, uv max count, uv max age in ns
//	4 state:    uv n, n × (uv len, stream, uv next revision, uv start,
//	            u8 flags, uv max count, uv max age in ns)
//
// One Append or AppendMulti is one frame, so it is on disk entirely or not
// at all. State frames carry the state of streams whose history retention
// removed: under retention, each segment starts with the state of every
// stream, 16,384 streams a frame but in the last, which holds fewer (none
// if need be), so that a segment whose last ones were cut is known.
// Retention names the segment the store starts at in the file START:
//
//	seq in decimal | " " | CRC-32C of those digits in 8 hex digits | "\n"
//
// (stores written before the checksum have the number and "\n" alone).
// The file LAST, in the same form, names the store's last segment: the
// store writes it once a new segment's file is on disk, before any
// record goes there, and when it opens, so that a store whose last
// segments are gone fails to open. Stores written before it have none
// until opened for writing; after a crash, segments may follow the one
// it names. Both files are replaced whole (written under a temporary
// name, synced, renamed), never written in place.
const (
	segMagic      = "EVBUSLOG"
	segVersion    = 1
	segHeaderSize = 32
	frameHeader   = 8

	// maxRecord is the largest frame payload, which bounds what a hostile
	// length field can make a reader allocate.
	maxRecord = 64 << 20

	kindEvents   = 1
	kindDelete   = 2
	kindMetadata = 3
	kindState    = 4

	// entryFixed is the size of an entry's fixed fields: time and 3 IDs.
	entryFixed = 8 + 3*16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CorruptionError reports damage to the files of a [FileStore]: a segment
// file that does not hold what was written (a checksum mismatch or a
// malformed record anywhere but in an incomplete final record), a segment
// missing, a START file (where retention records the segment the store
// starts at) that names none the store has, or a LAST file (where the
// store records its last segment) that names one past those it has: the
// last segments are missing, with their events. Use errors.As to read
// where; see [RepairFileStore].
type CorruptionError struct {
	// Path is the damaged file: a segment file, the one after a missing
	// segment (at Offset 0), or the START or LAST file.
	Path string
	// Offset is the byte offset of the bad header or record in the file.
	Offset int64
	// Reason says what is wrong.
	Reason string
}

// Error implements the error interface. A nil *CorruptionError reads as
// the zero one.
func (e *CorruptionError) Error() string {
	if e == nil {
		e = &CorruptionError{}
	}
	return fmt.Sprintf("eventbus: file store corrupted: %s at offset %d: %s", e.Path, e.Offset, e.Reason)
}

// errMalformed is what the decoders return; callers turn it into a
// CorruptionError with the file and offset.
var errMalformed = errors.New("malformed record")

// segHeader is the header of a segment file.
type segHeader struct {
	seq, firstPos uint64
}

func (h segHeader) encode() []byte {
	b := make([]byte, segHeaderSize)
	copy(b, segMagic)
	binary.LittleEndian.PutUint16(b[8:], segVersion)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint64(b[24:], h.firstPos)
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b, castagnoli))
	return b
}

// decodeSegHeader decodes the header at the start of b. A sound header of
// another format version, which a later version of this package may
// write, is no damage: its error wraps ErrInvalid, so that opening does
// not report it as a CorruptionError, which RepairFileStore cuts.
func decodeSegHeader(b []byte) (segHeader, error) {
	if len(b) < segHeaderSize || string(b[:8]) != segMagic {
		return segHeader{}, errors.New("not an eventbus segment: bad magic number")
	}
	var c [segHeaderSize]byte
	copy(c[:], b)
	clear(c[12:16])
	if crc32.Checksum(c[:], castagnoli) != binary.LittleEndian.Uint32(b[12:]) {
		return segHeader{}, errors.New("segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != segVersion {
		return segHeader{}, fmt.Errorf("%w: segment format version %d, which this version of package eventbus does not read (it reads version %d)", ErrInvalid, v, segVersion)
	}
	return segHeader{seq: binary.LittleEndian.Uint64(b[16:]), firstPos: binary.LittleEndian.Uint64(b[24:])}, nil
}

// beginFrame appends a frame header to b, to be completed by endFrame, and
// returns b and the frame's offset in it.
func beginFrame(b []byte, kind byte) ([]byte, int) {
	start := len(b)
	return append(b, 0, 0, 0, 0, 0, 0, 0, 0, kind), start
}

// endFrame fills in the length and checksum of the frame at start.
func endFrame(b []byte, start int) {
	payload := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendBody appends the part of an entry that does not depend on where
// the event is committed; see the format above.
func appendBody(b []byte, e *EventData) []byte {
	b = append(b, e.ID[:]...)
	b = append(b, e.CorrelationID[:]...)
	b = append(b, e.CausationID[:]...)
	v := e.SchemaVersion
	if v == 0 {
		v = 1
	}
	b = binary.AppendUvarint(b, uint64(v))
	b = appendString(b, e.Type)
	b = appendString(b, e.Encoding)
	b = binary.AppendUvarint(b, uint64(len(e.Metadata)))
	for k, v := range e.Metadata {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Data)))
	return append(b, e.Data...)
}

// appendEntry appends an entry whose body is body.
func appendEntry(b []byte, pos, rev uint64, t int64, body []byte) []byte {
	var head [2*binary.MaxVarintLen64 + 8]byte
	h := binary.AppendUvarint(head[:0], pos)
	h = binary.AppendUvarint(h, rev)
	h = binary.LittleEndian.AppendUint64(h, uint64(t))
	b = binary.AppendUvarint(b, uint64(len(h)+len(body)))
	b = append(b, h...)
	return append(b, body...)
}

// decoder reads the fields of a payload; the first failure sticks and
// every later read returns zero values.
type decoder struct {
	b   []byte
	off int
	bad bool
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.off += n
	return v
}

// bytes returns the next n bytes, sharing d's buffer.
func (d *decoder) bytes(n uint64) []byte {
	if d.bad || n > uint64(len(d.b)-d.off) {
		d.bad = true
		return nil
	}
	b := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

func (d *decoder) str() []byte { return d.bytes(d.uvarint()) }

func (d *decoder) byte() byte {
	b := d.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// entry is an event entry decoded without copying: its slices share the
// buffer it was decoded from.
type entry struct {
	pos, rev      uint64
	time          int64
	id, corr, cau ID
	version       uint64
	typ, enc      []byte
	meta          [][2][]byte
	data          []byte
}

// decodeEntry decodes the entry b, reusing e.meta.
func decodeEntry(b []byte, e *entry) error {
	d := decoder{b: b}
	e.pos = d.uvarint()
	e.rev = d.uvarint()
	fixed := d.bytes(entryFixed)
	if fixed != nil {
		e.time = int64(binary.LittleEndian.Uint64(fixed))
		copy(e.id[:], fixed[8:])
		copy(e.corr[:], fixed[24:])
		copy(e.cau[:], fixed[40:])
	}
	e.version = d.uvarint()
	e.typ = d.str()
	e.enc = d.str()
	n := d.uvarint()
	if n > uint64(len(b)) { // each pair takes 2 bytes at least
		return errMalformed
	}
	e.meta = e.meta[:0]
	for range n {
		k, v := d.str(), d.str()
		if d.bad {
			break
		}
		e.meta = append(e.meta, [2][]byte{k, v})
	}
	e.data = d.str()
	if d.bad || d.off != len(b) || e.version == 0 || e.version > maxSchemaVersion || e.id.IsZero() || len(e.typ) == 0 || len(e.typ) > maxNameLen {
		return errMalformed
	}
	return nil
}

// recorded builds the RecordedEvent of e in stream. Data shares e's
// buffer; types and encodings are interned in names.
func (e *entry) recorded(stream string, names map[string]string) RecordedEvent {
	r := RecordedEvent{
		EventData: EventData{
			ID: e.id, Type: intern(names, e.typ), SchemaVersion: int(e.version), Encoding: intern(names, e.enc),
			CorrelationID: e.corr, CausationID: e.cau,
		},
		Stream: stream, Revision: e.rev, Position: e.pos, Time: time.Unix(0, e.time),
	}
	if len(e.data) > 0 {
		r.Data = e.data[:len(e.data):len(e.data)]
	}
	if len(e.meta) > 0 {
		r.Metadata = make(Metadata, len(e.meta))
		for _, kv := range e.meta {
			r.Metadata[string(kv[0])] = string(kv[1])
		}
	}
	return r
}

// intern returns b as a string, allocating once per distinct value.
func intern(names map[string]string, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(names) < 4096 {
		names[s] = s
	}
	return s
}

// record is one decoded frame payload other than events.
type record struct {
	kind      byte
	stream    []byte
	tombstone bool
	md        StreamMetadata
	states    []streamRecord
}

// streamRecord is the persisted state of one stream in a state frame.
type streamRecord struct {
	stream     []byte
	next       uint64
	start      uint64
	deleted    bool
	tombstoned bool
	md         StreamMetadata
}

// decodeFrame checks the payload p of a frame and calls entry for each
// entry of an events frame, with its stream, the offset in p of its
// length prefix and its
// fields decoded into e, which is reused between calls. For other kinds it
// returns the decoded record.
func decodeFrame(p []byte, e *entry, each func(stream []byte, off int, e *entry) error) (record, error) {
	if len(p) == 0 {
		return record{}, errMalformed
	}
	d := decoder{b: p, off: 1}
	r := record{kind: p[0]}
	switch r.kind {
	case kindEvents:
		parts := d.uvarint()
		if parts == 0 || parts > uint64(len(p)) {
			return r, errMalformed
		}
		for range parts {
			stream := d.str()
			n := d.uvarint()
			if d.bad || len(stream) == 0 || n == 0 || n > uint64(len(p)) {
				return r, errMalformed
			}
			for range n {
				start := d.off
				b := d.bytes(d.uvarint())
				if d.bad {
					return r, errMalformed
				}
				if err := decodeEntry(b, e); err != nil {
					return r, err
				}
				if each != nil {
					if err := each(stream, start, e); err != nil {
						return r, err
					}
				}
			}
		}
	case kindDelete:
		r.stream = d.str()
		switch d.byte() {
		case 0:
		case 1:
			r.tombstone = true
		default:
			return r, errMalformed
		}
	case kindMetadata:
		r.stream = d.str()
		r.md = StreamMetadata{MaxCount: d.uvarint(), MaxAge: time.Duration(d.uvarint())}
	case kindState:
		n := d.uvarint()
		if n > uint64(len(p)) {
			return r, errMalformed
		}
		for range n {
			s := streamRecord{stream: d.str(), next: d.uvarint(), start: d.uvarint()}
			flags := d.byte()
			s.deleted, s.tombstoned = flags&1 != 0, flags&2 != 0
			s.md = StreamMetadata{MaxCount: d.uvarint(), MaxAge: time.Duration(d.uvarint())}
			if d.bad || len(s.stream) == 0 || flags > 3 || s.start > s.next || s.md.MaxAge < 0 {
				return r, errMalformed
			}
			r.states = append(r.states, s)
		}
	default:
		return r, errMalformed
	}
	if d.bad || d.off != len(p) || r.md.MaxAge < 0 || (r.kind != kindEvents && r.kind != kindState && len(r.stream) == 0) {
		return r, errMalformed
	}
	return r, nil
}
