package eventbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// segmentName returns the file name of segment seq.
func segmentName(seq uint64) string { return fmt.Sprintf("seg-%016x.log", seq) }

// startFile names the file in which retention records the segment that
// the store starts at: what is left of older segments is not read.
const startFile = "START"

// lastFile names the file in which the store records its last segment,
// when it starts one and when it opens: a store whose last segments are
// gone (deleted, or left out of a restored copy) then fails to open,
// instead of reading the segments left as the whole store and giving the
// positions of the events lost to later appends. The segments may go on
// past the one it names: a crash can stop a new segment's start between
// its file and this one.
const lastFile = "LAST"

// listSegments returns the sequence numbers of the segments in dir, in
// order, from the one the start file names if there is one, which it
// returns too (else 0), and those of what is left of older segments,
// dropped by retention. Unless readOnly, it removes what is left of
// files half-created by a crash (a segment, START), and no other file.
func listSegments(dir string, fs fileSystem, readOnly bool) (seqs []uint64, start uint64, older []uint64, err error) {
	start, err = readSeqFile(dir, startFile, "open file store")
	if err != nil {
		return nil, 0, nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("eventbus: open file store: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if tmp, ok := strings.CutSuffix(name, ".tmp"); ok {
			// Only the store's own (see createFile): others are not
			// its to delete.
			if _, seg := parseSegmentName(tmp); (seg || tmp == startFile || tmp == lastFile) && !readOnly {
				if err := fs.Remove(filepath.Join(dir, name)); err != nil {
					return nil, 0, nil, fmt.Errorf("eventbus: open file store: %w", err)
				}
			}
			continue
		}
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	if start == 0 {
		return seqs, 0, nil, nil
	}
	i, found := slices.BinarySearch(seqs, start)
	if !found {
		return nil, 0, nil, &CorruptionError{Path: filepath.Join(dir, startFile), Offset: 0, Reason: fmt.Sprintf("the store starts at segment %s, which is missing", segmentName(start))}
	}
	return seqs[i:], start, seqs[:i], nil
}

// parseSegmentName returns the sequence number of the segment named
// name, and whether name is one: exactly as segmentName writes it, so that
// upper-case digits, a name the store never writes, are no segment's.
func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(strings.TrimPrefix(name, "seg-"), ".log")
	if !ok || len(hex) != 16 || !strings.HasPrefix(name, "seg-") {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil && segmentName(seq) == name
}

// readSeqFile returns the segment that the file name of dir (START or
// LAST) names, or 0 if there is none. It fails with a *CorruptionError for
// a damaged file, else with the error of its read, wrapped for op.
func readSeqFile(dir, name, op string) (uint64, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventbus: %s: %w", op, err)
	}
	num, _, checked := strings.Cut(strings.TrimSuffix(string(b), "\n"), " ")
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil || seq == 0 {
		return 0, &CorruptionError{Path: path, Offset: 0, Reason: fmt.Sprintf("%q names no segment", b)}
	}
	// Without a checksum, as START files written before it have it.
	if checked && string(seqContent(seq)) != string(b) {
		return 0, &CorruptionError{Path: path, Offset: 0, Reason: fmt.Sprintf("%q: checksum mismatch", b)}
	}
	return seq, nil
}

// seqContent returns what the file START or LAST holds to name segment
// seq: the number and its CRC-32C, so that a flipped bit, which could
// name another segment that exists, is reported instead: a START naming
// a later one would have opening delete those before it, a LAST naming an
// earlier one would let a missing segment pass.
func seqContent(seq uint64) []byte {
	n := strconv.FormatUint(seq, 10)
	return fmt.Appendf(nil, "%s %08x\n", n, crc32.Checksum([]byte(n), castagnoli))
}

// missingLast returns a *CorruptionError for the file LAST of dir if it
// names recorded, a segment past last, the store's last segment (0 if it
// has none): that segment, and those between, are missing. Else it
// returns nil.
func missingLast(dir string, recorded, last uint64) error {
	if recorded <= last {
		return nil
	}
	reason := fmt.Sprintf("the store's last segment, %s, is missing: the events it held are lost", segmentName(recorded))
	switch {
	case last == 0:
		reason = fmt.Sprintf("the store's last segment is %s, and none of its segments is left: the events they held are lost", segmentName(recorded))
	case last+1 < recorded:
		reason = fmt.Sprintf("the store's last segment is %s, and %s to it are missing: the events they held are lost", segmentName(recorded), segmentName(last+1))
	}
	return &CorruptionError{Path: filepath.Join(dir, lastFile), Offset: 0, Reason: reason}
}

// missingStart returns the *CorruptionError for the store's first
// segment, seq at path, which starts at position first without the state
// of the streams: the segments before it are missing, with the events
// before first and what they changed of the streams. [RepairFileStore]
// makes the store start there.
func missingStart(path string, seq, first uint64) error {
	missing := "the segments before it are missing"
	switch {
	case seq == 2:
		missing = fmt.Sprintf("segment %s is missing", segmentName(1))
	case seq > 2:
		missing = fmt.Sprintf("segments %s to %s are missing", segmentName(1), segmentName(seq-1))
	}
	if first > 0 { // else they held no event, only changes to streams
		missing += fmt.Sprintf(", with the events before position %d", first)
	}
	return &CorruptionError{Path: path, Offset: 0, Reason: missing + ": the store starts at this segment, without the state of the streams"}
}

// scanSegment checks the frames of segment file b from the end of its
// header and calls each for every frame, with its offset and payload. It
// returns the offset where the complete frames end. When the last frame is
// incomplete, which only a crash in the middle of a write leaves, it
// returns its offset and torn; any other damage is a [*CorruptionError]. A
// last frame is incomplete when it is cut short (its length reaches past
// the end, by no single flipped bit, and no complete frame follows: see
// lengthFlipped and recordAfter), or when its checksum fails and a crash
// left a sector of it unwritten (see unwritten), or when a crash left
// unwritten a sector that holds part of its length (see headUnwritten):
// the one that holds its start, which reads as zeros from there, its
// length zero or, if the length ends in the next sector, wrong; or that
// next sector, its length short; and no complete frame follows (see
// recordAfter).
func scanSegment(b []byte, path string, each func(off int, payload []byte) error) (end int, torn bool, err error) {
	return scanFrom(b, segHeaderSize, path, each)
}

// scanFrom is scanSegment from the frame at off on.
func scanFrom(b []byte, off int, path string, each func(off int, payload []byte) error) (end int, torn bool, err error) {
	for off < len(b) {
		rest := b[off:]
		if len(rest) < frameHeader {
			return off, true, nil
		}
		size := binary.LittleEndian.Uint32(rest)
		switch {
		case size == 0 || size > maxRecord:
			// A file extended by a crash but never written, or a last
			// record whose first sector was left unwritten, its length
			// with it, by a crash that wrote later ones.
			if allZero(rest) || size == 0 && headUnwritten(b, off) && !recordAfter(b, off, true) {
				return off, true, nil
			}
			return off, false, &CorruptionError{Path: path, Offset: int64(off), Reason: fmt.Sprintf("bad record length %d", size)}
		case uint64(size) > uint64(len(rest)-frameHeader):
			// A length that reaches past the end is a crash's, cutting the
			// last record short, unless damage made it so: one bit of it
			// flipped, or a complete record follows where this one would
			// end if its length were sound.
			if lengthFlipped(rest, size) || recordAfter(b, off, false) {
				return off, false, &CorruptionError{Path: path, Offset: int64(off), Reason: fmt.Sprintf("bad record length %d", size)}
			}
			return off, true, nil
		}
		payload := rest[frameHeader : frameHeader+int(size)]
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(rest[4:]) {
			after := rest[frameHeader+int(size):]
			if allZero(after) && unwritten(b, off+frameHeader, off+frameHeader+int(size), binary.LittleEndian.Uint32(rest[4:])) {
				return off, true, nil
			}
			// A last record whose first sector was left unwritten while
			// its length ends in the next one, which was written: the
			// length reads short, and its own bytes follow what it
			// covers. A last record whose length reads right is
			// followed by zeros alone, and left to the check above.
			if !allZero(after) && headUnwritten(b, off) && !recordAfter(b, off, true) {
				return off, true, nil
			}
			return off, false, &CorruptionError{Path: path, Offset: int64(off), Reason: "checksum mismatch"}
		}
		if err := replay(each, off, payload, path); err != nil {
			return off, false, err
		}
		off += frameHeader + int(size)
	}
	return off, false, nil
}

// replay calls each, if not nil, for the sound frame at off, and makes its
// error a *CorruptionError at off, unless it is one.
func replay(each func(off int, payload []byte) error, off int, payload []byte, path string) error {
	if each == nil {
		return nil
	}
	err := each(off, payload)
	if err != nil {
		var ce *CorruptionError // escapes: declared where it is needed
		if !errors.As(err, &ce) {
			err = &CorruptionError{Path: path, Offset: int64(off), Reason: err.Error()}
		}
	}
	return err
}

// openWindow is how much of a segment file an open reads at a time: it
// checks and replays the frames while they are in the processor's caches,
// and holds a window, not a whole segment.
const openWindow = 4 << 20

// segmentReader reads a segment file a window at a time, for scanFile.
type segmentReader struct {
	f    storeFile
	path string
	size int    // of the file
	buf  []byte // the window, of the file's bytes from at; kept for the next file
	at   int
	wide int // the window's size, unless a frame needs more
}

// from returns the file's bytes from off on: at least n of them, unless
// the file ends first, and as many more as the window holds.
func (r *segmentReader) from(off, n int) ([]byte, error) {
	n = min(n, r.size-off)
	if off >= r.at && off+n <= r.at+len(r.buf) {
		return r.buf[off-r.at:], nil
	}
	size := min(max(n, r.wide), r.size-off)
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	r.buf, r.at = r.buf[:size], off
	if k, err := r.f.ReadAt(r.buf, int64(off)); k < size {
		r.buf = r.buf[:0]
		return nil, fmt.Errorf("eventbus: open file store: read %s: %w", r.path, err)
	}
	return r.buf, nil
}

// scanFile is scanSegment over the file of r, read a window at a time: it
// replays sound frames as they come, and hands the first other one to
// scanFrom, over the whole file, which tells a torn last frame from damage
// by what follows it.
func scanFile(r *segmentReader, each func(off int, payload []byte) error) (end int, torn bool, err error) {
	off := segHeaderSize
	for off < r.size {
		rest, err := r.from(off, frameHeader)
		if err != nil {
			return off, false, err
		}
		if len(rest) >= frameHeader {
			if size := int(binary.LittleEndian.Uint32(rest)); size > 0 && size <= maxRecord {
				if rest, err = r.from(off, frameHeader+size); err != nil {
					return off, false, err
				}
				if len(rest) >= frameHeader+size {
					payload := rest[frameHeader : frameHeader+size]
					if crc32.Checksum(payload, castagnoli) == binary.LittleEndian.Uint32(rest[4:]) {
						if err := replay(each, off, payload, r.path); err != nil {
							return off, false, err
						}
						off += frameHeader + size
						continue
					}
				}
			}
		}
		b, err := r.from(0, r.size) // the whole file, in a window that large
		if err != nil {
			return off, false, err
		}
		return scanFrom(b, off, r.path, each)
	}
	return off, false, nil
}

// lengthFlipped reports whether the frame at the start of b, whose length
// size reaches past the end of b, is whole once one bit of size is
// cleared: then a flipped bit made a complete record look incomplete, and
// cutting it (and every record after it) would lose acknowledged events.
// A record cut short by a crash passes this check only by a checksum
// collision. It costs a checksum per bit set, on the rare torn path only.
func lengthFlipped(b []byte, size uint32) bool {
	sum := binary.LittleEndian.Uint32(b[4:])
	for bit := uint32(1); bit != 0 && bit <= size; bit <<= 1 {
		n := size &^ bit
		if size&bit == 0 || n == 0 || uint64(n) > uint64(len(b)-frameHeader) {
			continue
		}
		if crc32.Checksum(b[frameHeader:frameHeader+int(n)], castagnoli) == sum {
			return true
		}
	}
	return false
}

// headUnwritten reports whether a crash left unwritten a sector that holds
// part of the length of the frame at off, which then reads wrong: the
// sector that holds the frame's start, if it reads as zeros from there
// (what it holds before off, of earlier frames, was written before; the
// frame's part in it may end within its length); or, for a length that
// ends in the next sector, that one, if it reads as zeros in whole (up to
// the end of b), which no complete frame's does: it holds the frame's
// kind, never zero.
func headUnwritten(b []byte, off int) bool {
	next := (off/sectorSize + 1) * sectorSize
	if allZero(b[off:min(len(b), next)]) {
		return true
	}
	// The length is 4 bytes.
	return off+4 > next && next < len(b) && allZero(b[next:min(len(b), next+sectorSize)])
}

// recordAfter reports whether a complete frame, its checksum sound, starts
// in b after the frame at off, which looks like the last write, torn by a
// crash: its start reads as zeros (see headUnwritten), or its length
// reaches past the end of b. Then that frame is not the last one, and its
// zeros or its length are damage to be reported, not a crash's (a false
// alarm needs a payload holding a whole frame, checksum and all, and costs
// a repair with RepairFileStore, not lost events). What one frame holds
// after its start is at most maxRecord bytes, so more (but for zeros at the
// end, a file extended by a crash) holds another frame. It costs a checksum
// at each offset that could start a frame, on the torn path only, and gives
// up past a budget of bytes to checksum that a long run of false starts
// (data crafted to look like frame headers) would exceed, reporting spent:
// one found for a zeroed start, a rare crash; none for a length past the
// end, the common one, so that data crafted so cannot make every crash in
// the middle of its append need a repair.
func recordAfter(b []byte, off int, spent bool) bool {
	end := len(b)
	for end > off && b[end-1] == 0 {
		end--
	}
	if end-off > frameHeader+maxRecord {
		return true
	}
	budget := 16*(end-off) + 1<<20
	// A frame starts with its length and checksum, then its kind, never
	// zero: none starts in the zeros at the end.
	for at := off + frameHeader + 1; at+frameHeader < end; at++ {
		size := int(binary.LittleEndian.Uint32(b[at:]))
		if size == 0 || size > len(b)-at-frameHeader {
			continue
		}
		if kind := b[at+frameHeader]; kind == 0 || kind > kindState {
			continue
		}
		if budget -= size; budget < 0 {
			return spent
		}
		if crc32.Checksum(b[at+frameHeader:at+frameHeader+size], castagnoli) == binary.LittleEndian.Uint32(b[at+4:]) {
			return true
		}
	}
	return false
}

// sectorSize is the unit in which a disk writes: a power loss during a
// write that grew the file can leave any of its sectors unwritten, and
// such a sector reads as zeros.
const sectorSize = 512

// unwritten reports whether the record b[from:to], whose checksum (sum)
// fails, holds a sector that a crash left unwritten: zeros over all of the
// record that a sector holds. The first byte of a record is its kind, never
// zero, so a complete record with a flipped bit passes for torn only if its
// own data holds such zeros, over a whole sector or to its end.
//
// A few zeros at its end are weak evidence: the format ends many records
// with zero bytes (the length of an empty field, a flag), so a record
// whose last bytes fall in a sector of their own would pass for torn
// whatever was flipped in it. A share of its last sector of at most
// maxGuessed bytes counts only if some other value of those bytes makes
// the checksum sound, as the bytes a crash left unwritten do; of the
// records with a bit flipped, about one in 256 has such a value for 3
// bytes, one in 65,536 for 2, and one in 16 million for 1.
func unwritten(b []byte, from, to int, sum uint32) bool {
	for at := from / sectorSize * sectorSize; at < to; at += sectorSize {
		part := b[max(at, from):min(at+sectorSize, to)]
		if !allZero(part) {
			continue
		}
		if at+sectorSize < to || len(part) > maxGuessed || tailFits(b[from:to-len(part)], len(part), sum) {
			return true
		}
	}
	return false
}

// maxGuessed is the most zeros at a record's end that tailFits tries every
// other value of: 3 bytes, 16 million checksum steps, on the rare torn path
// only. With 4 or more, some value always fits a 32-bit checksum.
const maxGuessed = 3

// tailFits reports whether some n bytes, not all zeros, after prefix give
// the checksum sum: the record's last bytes, had a crash not left them
// unwritten. It steps the checksum as crc32's reference loop does, a byte
// at a time through castagnoli's table.
func tailFits(prefix []byte, n int, sum uint32) bool {
	crc := ^crc32.Update(0, castagnoli, prefix)
	for v := 1; v < 1<<(8*n); v++ {
		c := crc
		for i := range n {
			c = castagnoli[byte(c)^byte(v>>(8*i))] ^ c>>8
		}
		if ^c == sum {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// recover opens the segments of s, cutting an incomplete final record,
// and rebuilds its indexes.
func (s *FileStore) recover() error {
	seqs, start, older, err := listSegments(s.dir, s.fs, s.opts.ReadOnly)
	if err != nil {
		return err
	}
	s.w.recorded = start
	if s.w.last, err = readSeqFile(s.dir, lastFile, "open file store"); err != nil {
		return err
	}
	var last uint64
	if len(seqs) > 0 {
		last = seqs[len(seqs)-1]
	}
	if err := missingLast(s.dir, s.w.last, last); err != nil {
		return err
	}
	if !s.opts.ReadOnly {
		// Dropped by retention already: removeDropped deletes them
		// below, and reports a failure in Stats, as the store that
		// dropped them did, until a new segment deletes them.
		for _, seq := range older {
			s.w.dropped = append(s.w.dropped, &segment{seq: seq, path: filepath.Join(s.dir, segmentName(seq))})
		}
	}
	var total int64
	sizes := make([]int64, len(seqs))
	for i, seq := range seqs {
		fi, err := os.Stat(filepath.Join(s.dir, segmentName(seq)))
		if err != nil {
			return fmt.Errorf("eventbus: open file store: %w", err)
		}
		sizes[i] = fi.Size()
		total += fi.Size()
	}
	if !s.opts.ReadOnly {
		// Events take 60 bytes at least: room for most of their IDs up
		// front saves growing the slice while reading.
		s.w.pending = make([]uint64, 0, total/128)
	}
	var done int64
	r := segmentReader{buf: make([]byte, 0, s.opts.window)}
	for i, seq := range seqs {
		path := filepath.Join(s.dir, segmentName(seq))
		if i > 0 && seq != seqs[i-1]+1 {
			return &CorruptionError{Path: path, Offset: 0, Reason: fmt.Sprintf("segment %s is missing", segmentName(seqs[i-1]+1))}
		}
		last := i == len(seqs)-1
		flag := os.O_RDONLY
		if last && !s.opts.ReadOnly {
			flag = os.O_RDWR | os.O_APPEND
		}
		f, err := s.fs.OpenFile(path, flag, 0)
		if err != nil {
			return fmt.Errorf("eventbus: open file store: %w", err)
		}
		seg := &segment{seq: seq, path: path, f: f}
		s.segs = append(s.segs, seg)
		r = segmentReader{f: f, path: path, size: int(sizes[i]), buf: r.buf[:0], wide: s.opts.window}
		b, err := r.from(0, segHeaderSize)
		if err != nil {
			return err
		}
		h, err := decodeSegHeader(b)
		if err == nil && h.seq != seq {
			err = fmt.Errorf("header says segment %d", h.seq)
		}
		if err == nil && i > 0 && h.firstPos != s.w.log.n {
			err = fmt.Errorf("segment starts at position %d, want %d", h.firstPos, s.w.log.n)
		}
		if errors.Is(err, ErrInvalid) {
			return fmt.Errorf("eventbus: open file store: %s: %w", path, err)
		}
		if err != nil {
			return &CorruptionError{Path: path, Offset: 0, Reason: err.Error()}
		}
		seg.firstPos = h.firstPos
		if i == 0 {
			s.w.log.first, s.w.log.n = h.firstPos, h.firstPos
			s.w.log.skip = h.firstPos / logChunk
		}
		each := s.replayFrame(seg)
		// Retention starts the store only at a segment that starts with
		// the state of every stream (see retain): without it, what older
		// segments held is gone, and reading on would lose it without a
		// word, or fail at the first event of a stream they held, with a
		// reason that does not say why. Checked before the frame is
		// replayed, for that reason.
		headless := i == 0 && (seq > 1 || h.firstPos > 0)
		if headless {
			replayFrame := each
			each = func(off int, p []byte) error {
				if off == segHeaderSize && p[0] != kindState {
					return missingStart(path, seq, h.firstPos)
				}
				return replayFrame(off, p)
			}
		}
		end, torn, err := scanFile(&r, each)
		if err != nil {
			return err
		}
		if torn && !last {
			return &CorruptionError{Path: path, Offset: int64(end), Reason: "incomplete record before the last segment"}
		}
		if headless && end == segHeaderSize {
			return missingStart(path, seq, h.firstPos)
		}
		if last && !s.opts.ReadOnly {
			if torn {
				if err := f.Truncate(int64(end)); err != nil {
					return fmt.Errorf("eventbus: open file store: cut the incomplete record of %s: %w", path, err)
				}
			}
			// A process that crashed may have left events written but
			// not synced (SyncInterval, SyncNever, a failed store):
			// they are committed from now on, read and built upon, so
			// they must survive a power loss. Earlier segments were
			// synced before the next one started.
			if err := f.Sync(); err != nil {
				return fmt.Errorf("eventbus: open file store: %w", err)
			}
		}
		s.w.size, seg.size = int64(end), int64(end)
		s.w.log.bytes += int64(end)
		done += sizes[i]
		if s.opts.Progress != nil {
			s.opts.Progress(done, total)
		}
	}
	if len(s.segs) == 0 && !s.opts.ReadOnly {
		seg, err := s.createSegment(1, 0)
		if err != nil {
			return err
		}
		s.segs = append(s.segs, seg)
		s.w.size = segHeaderSize
		s.w.log.bytes = segHeaderSize
	}
	if len(s.segs) > 0 {
		s.w.active = s.segs[len(s.segs)-1]
	}
	if !s.opts.ReadOnly {
		if err := s.indexIDs(); err != nil {
			return err
		}
		// A store written before LAST, or one whose last start of a
		// segment a crash stopped, has it name its last segment from now
		// on.
		if err := s.recordLast(); err != nil {
			return err
		}
	}
	// Commit times go on from the latest on disk (see commitClock).
	var newest int64
	for _, seg := range s.segs {
		newest = max(newest, seg.newest)
	}
	s.w.clock.now = s.opts.now
	if newest > 0 {
		s.w.clock.last = time.Unix(0, newest)
	}
	s.log, s.committed = s.w.log, len(s.byID)
	for _, st := range s.byID {
		st.r = st.w
	}
	s.removeDropped()
	return nil
}

// replayFrame returns the function that applies the frames of seg to the
// write side of s, while recovering.
func (s *FileStore) replayFrame(seg *segment) func(off int, payload []byte) error {
	var e entry
	var cur *fileStream
	var leading int64 // bytes of the state frames the segment starts with
	return func(off int, p []byte) error {
		cur = nil
		lead := p[0] == kindState && int64(off) == segHeaderSize+leading
		r, err := decodeFrame(p, &e, func(stream []byte, at int, e *entry) error {
			if cur == nil || cur.name != string(stream) {
				// Only this goroutine uses s while it recovers; looking a
				// known stream up by its bytes allocates nothing.
				if cur = s.streams[string(stream)]; cur == nil {
					name := string(stream)
					if err := checkStream(name); err != nil {
						return err
					}
					cur = s.stream(name, true)
				}
				if cur.w.deleted {
					s.w.restart(cur)
				}
			}
			st := &cur.w
			if e.pos != s.w.log.n || e.rev != st.next() {
				return fmt.Errorf("event at position %d, revision %d of %q, want %d, %d", e.pos, e.rev, cur.name, s.w.log.n, st.next())
			}
			s.w.log.append(loc{seg: uint32(seg.seq), off: uint32(off + frameHeader + at), stream: cur.id})
			seg.newest = max(seg.newest, e.time)
			st.positions = append(st.positions, e.pos)
			if !s.opts.ReadOnly { // which appends nothing
				s.w.pendID(cur.id, e.id, e.pos)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if lead {
			leading += int64(frameHeader + len(p))
			// Every state frame but the last holds stateFrame streams:
			// the segment starts with the state of every stream once
			// one holds fewer. Until then (a crash or a failed write
			// cut the others) retention must not start the store here.
			if len(r.states) < stateFrame {
				seg.states = leading
			}
		}
		switch r.kind {
		case kindDelete, kindMetadata:
			if err := checkStream(string(r.stream)); err != nil {
				return err
			}
			st := &s.stream(string(r.stream), true).w
			if r.kind == kindMetadata {
				st.md = r.md
			} else {
				st.deleted, st.tombstoned = true, r.tombstone
			}
		case kindState:
			for _, x := range r.states {
				if err := checkStream(string(x.stream)); err != nil {
					return err
				}
				st := &s.stream(string(x.stream), true).w
				if n := st.next(); n > x.next {
					return fmt.Errorf("state of %q at revision %d, behind %d", x.stream, x.next, n)
				} else if n < x.next {
					st.positions, st.base = nil, x.next
				}
				st.start, st.deleted, st.tombstoned, st.md = x.start, x.deleted, x.tombstoned, x.md
			}
		}
		return nil
	}
}

// createSegment creates segment seq starting at position first, with a
// complete header (see createFile).
func (s *FileStore) createSegment(seq, first uint64) (*segment, error) {
	path := filepath.Join(s.dir, segmentName(seq))
	f, err := s.createFile(path, segHeader{seq: seq, firstPos: first}.encode())
	if err != nil {
		return nil, fmt.Errorf("eventbus: create segment: %w", err)
	}
	return &segment{seq: seq, firstPos: first, path: path, f: f}, nil
}

// createFile creates the file path holding b, open for appending: it
// writes and syncs it under a temporary name, renames it and syncs the
// directory, so that the file, once there, is whole.
func (s *FileStore) createFile(path string, b []byte) (storeFile, error) {
	f, err := s.fs.OpenFile(path+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	err = func() error {
		if _, err := f.Write(b); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := s.fs.Rename(path+".tmp", path); err != nil {
			return err
		}
		return s.syncDir()
	}()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// recordLast names the active segment in the file LAST, unless it does
// already, before any event is appended to it: from then on, a store
// without it fails to open. Only the committer and recovery call it.
func (s *FileStore) recordLast() error {
	w := &s.w
	if w.last == w.active.seq {
		return nil
	}
	f, err := s.createFile(filepath.Join(s.dir, lastFile), seqContent(w.active.seq))
	if err != nil {
		return fmt.Errorf("eventbus: record the last segment: %w", err)
	}
	w.last = w.active.seq
	return f.Close()
}

// syncDir syncs the directory of s, so that created, renamed and removed
// files stay so after a crash.
func (s *FileStore) syncDir() error { return syncPath(s.fs, s.dir) }

// stateFrame is the most streams that a state frame holds: at most
// 16 MiB.
const stateFrame = 1 << 14

// roll starts a new segment once the active one is full, and applies
// retention. Only the committer calls it.
func (s *FileStore) roll() error {
	w := &s.w
	if w.dirty {
		w.dirty = false
		if err := w.active.f.Sync(); err != nil {
			w.lost = fmt.Errorf("sync %s: %w", w.active.path, err)
			return w.lost
		}
	}
	seg, err := s.createSegment(w.active.seq+1, w.log.n)
	if err != nil {
		return err
	}
	w.active.size = w.size
	w.active, w.size = seg, segHeaderSize
	w.log.bytes += segHeaderSize
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	// Stats counts the segment with its bytes, also should the rest of
	// the roll, or the group's write, fail. The log differs from the one
	// published by its bytes alone: the group's appends come after.
	s.log = w.log
	s.mu.Unlock()
	// After the segment is in the store, for Verify, which reads LAST
	// first.
	if err := s.recordLast(); err != nil {
		return err
	}
	if s.opts.RetainAge <= 0 && s.opts.RetainSize <= 0 {
		s.removeDropped() // files an earlier run left, if any
		return nil
	}
	// The new segment starts with the state of every stream, so that the
	// segments before it can be deleted.
	w.buf = appendStates(w.buf[:0], s.byID)
	if err := s.write(w.buf); err != nil {
		return err
	}
	if w.dirty {
		// Retention may name this segment the store's start (see
		// removeDropped): its state frame must be on disk first.
		w.dirty = false
		if err := w.active.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", w.active.path, err)
		}
	}
	seg.states = w.size - segHeaderSize
	s.mu.Lock()
	s.log = w.log
	s.mu.Unlock()
	s.retain()
	return nil
}

// appendStates appends to b the state frames that hold the state (the
// write side) of streams: stateFrame streams a frame but in the last, which
// holds fewer, none if need be, so that recovery tells that it has them
// all.
func appendStates(b []byte, streams []*fileStream) []byte {
	for i, n := 0, stateFrame; n == stateFrame; i += n {
		var frame int
		b, frame = beginFrame(b, kindState)
		n = min(len(streams)-i, stateFrame)
		b = binary.AppendUvarint(b, uint64(n))
		for _, st := range streams[i : i+n] {
			b = appendString(b, st.name)
			b = binary.AppendUvarint(b, st.w.next())
			b = binary.AppendUvarint(b, st.w.start)
			var flags byte
			if st.w.deleted {
				flags |= 1
			}
			if st.w.tombstoned {
				flags |= 2
			}
			b = append(b, flags)
			b = binary.AppendUvarint(b, st.w.md.MaxCount)
			b = binary.AppendUvarint(b, uint64(st.w.md.MaxAge))
		}
		endFrame(b, frame)
	}
	return b
}

// retain drops the oldest segments as RetainAge and RetainSize say,
// keeping every segment from one that starts with a state frame, and
// deletes their files.
func (s *FileStore) retain() {
	w := &s.w
	segs := s.segs // only the committer changes s.segs
	total := w.log.bytes
	cutoff := time.Now().Add(-s.opts.RetainAge).UnixNano()
	k := 0
	for k < len(segs)-1 {
		old := s.opts.RetainAge > 0 && segs[k].newest < cutoff
		big := s.opts.RetainSize > 0 && total > s.opts.RetainSize
		if !old && !big {
			break
		}
		total -= segs[k].size
		k++
	}
	for k > 0 && segs[k].states == 0 {
		k--
		total += segs[k].size
	}
	if k > 0 {
		s.drop(segs, k, total)
	}
	s.removeDropped()
}

// drop takes the first k segments out of the store, which leaves total
// bytes, closes their files and forgets what they held.
func (s *FileStore) drop(segs []*segment, k int, total int64) {
	w := &s.w
	first := segs[k].firstPos
	// A new slice: the views of readers keep the old one.
	skip := first / logChunk
	chunks := slices.Clone(w.log.chunks[skip-w.log.skip:])
	w.log.chunks, w.log.skip, w.log.first, w.log.bytes = chunks, skip, first, total
	var trimmed []*fileStream
	for _, st := range s.byID {
		if st.w.forget(first) {
			w.trimLives(st)
			trimmed = append(trimmed, st)
		}
	}
	s.mu.Lock()
	s.segs = segs[k:]
	s.log = w.log
	for _, st := range trimmed {
		// Every change was published before the group that rolled, so
		// the read side differs from the write side only by the trim.
		st.r.positions, st.r.base = st.w.positions, st.w.base
	}
	s.mu.Unlock()
	if len(trimmed) > 0 {
		w.forgetIDs()
	}
	for _, seg := range segs[:k] {
		// Readers still using it skip its events from now on. It was
		// synced before the next segment started: a failed close loses
		// nothing.
		seg.removed.Store(true)
		_ = seg.f.Close()
	}
	w.dropped = append(w.dropped, segs[:k]...)
}

// removeDropped deletes the files of the segments that retention dropped.
// First it records durably which segment the store now starts at, so that
// opening the store ignores what is left of the others whatever happens
// next (a crash, a failed delete); without that, a segment left behind
// would be read as the store's start, wrongly. Failures do not fail the
// store, since every event it still holds is safe: removeDropped tries
// again when the next segment starts, and Stats reports the error.
func (s *FileStore) removeDropped() {
	w := &s.w
	if len(w.dropped) == 0 {
		return
	}
	start := s.segs[0].seq // only the committer changes s.segs
	var errs []error
	if w.recorded != start {
		if f, err := s.createFile(filepath.Join(s.dir, startFile), seqContent(start)); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, f.Close())
			w.recorded = start
		}
	}
	if w.recorded == start {
		// Oldest first, stopping at a failure: the files left then have
		// no gap, and a store whose START file is lost still opens.
		n := 0
		for _, seg := range w.dropped {
			if err := s.fs.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
				break
			}
			n++
		}
		w.dropped = slices.Delete(w.dropped, 0, n)
		errs = append(errs, s.syncDir())
	}
	err := errors.Join(errs...)
	if err != nil {
		err = fmt.Errorf("eventbus: retention: %w", err)
	}
	s.mu.Lock()
	s.retentionErr = err
	s.mu.Unlock()
}

// Verify reads every segment of the store again and checks every checksum
// and record, and the file START that retention writes, as opening does:
// it finds damage done to the files since the store was opened, a segment
// file deleted or replaced by another of its name among it, a segment
// file past the store's last, which the next open would read, a START
// that names a later segment than the store's first, from which the next
// open would start, and a LAST that names a later segment than the
// store's last, which the next open would find missing. It returns a
// [*CorruptionError] for the first damage found, and [ErrClosed] once the
// store is closed, also when Close closes the files it reads.
func (s *FileStore) Verify(ctx context.Context) error {
	if err := s.checkMade("Verify"); err != nil {
		return err
	}
	if err := checkContext(ctx, "Verify"); err != nil {
		return err
	}
	if err := interrupted(ctx, &s.closed); err != nil {
		return err
	}
	// Opening reads START first: a damaged one fails it. Retention
	// replaces the file whole (see createFile), so a read never sees a
	// part written.
	start, err := readSeqFile(s.dir, startFile, "verify")
	if err != nil {
		return err
	}
	// Read before the view: a roll adds its segment to the store before
	// it names it in LAST.
	last, err := readSeqFile(s.dir, lastFile, "verify")
	if err != nil {
		return err
	}
	v := s.view(0)
	// Opening would find the segments up to the one LAST names missing.
	var end uint64
	if len(v.segs) > 0 {
		end = v.segs[len(v.segs)-1].seq
	}
	if err := missingLast(s.dir, last, end); err != nil {
		return err
	}
	// Retention names a segment in START only once the store starts
	// there, so a later one is damage: opening would start there and
	// delete the segments before it.
	if start != 0 && (len(v.segs) == 0 || start > v.segs[0].seq) {
		return &CorruptionError{Path: filepath.Join(s.dir, startFile), Offset: 0, Reason: fmt.Sprintf("names segment %s, past the store's first", segmentName(start))}
	}
	// The files must hold every record the store has committed: the
	// whole of each older segment, whose size the committer set before it
	// published the next one, and the rest of the view's bytes for the
	// last.
	rest := v.log.bytes
	for _, seg := range v.segs[:max(len(v.segs)-1, 0)] {
		rest -= seg.size
	}
	var e entry
segments:
	for i, seg := range v.segs {
		// The next open reads what the name holds: a file deleted, or
		// replaced by another, since the store opened it is damage, which
		// reading through the store's handle would not show. Appends to a
		// replaced last segment go to the file the store has open, which
		// no name holds any more.
		fi, err := os.Stat(seg.path)
		if err == nil {
			var open os.FileInfo
			if open, err = seg.f.Stat(); err == nil && !os.SameFile(fi, open) {
				return &CorruptionError{Path: seg.path, Offset: 0, Reason: "the file is not the one the store has open: it was replaced"}
			}
		}
		switch {
		case err != nil && seg.removed.Load():
			continue // dropped by retention meanwhile
		case err != nil && s.closed.Load():
			return ErrClosed
		case errors.Is(err, fs.ErrNotExist):
			return &CorruptionError{Path: seg.path, Offset: 0, Reason: "the file is missing"}
		case err != nil:
			return fmt.Errorf("eventbus: verify: %w", err)
		}
		var b []byte
		chunk := make([]byte, 1<<20)
		for off := int64(0); ; {
			n, err := seg.f.ReadAt(chunk, off)
			b = append(b, chunk[:n]...)
			off += int64(n)
			if errors.Is(err, io.EOF) || err == nil && n == 0 {
				break
			}
			if err != nil && seg.removed.Load() {
				continue segments // dropped by retention meanwhile
			}
			if err != nil && s.closed.Load() {
				return ErrClosed
			}
			if err != nil {
				return fmt.Errorf("eventbus: verify %s: %w", seg.path, err)
			}
			if err := interrupted(ctx, &s.closed); err != nil {
				return err
			}
		}
		// As opening checks it: a sound header of another segment (a
		// file restored to the wrong name) is damage too.
		h, err := decodeSegHeader(b)
		if err == nil && (h.seq != seg.seq || h.firstPos != seg.firstPos) {
			err = fmt.Errorf("header says segment %d from position %d, want %d from %d", h.seq, h.firstPos, seg.seq, seg.firstPos)
		}
		if err != nil {
			return &CorruptionError{Path: seg.path, Offset: 0, Reason: err.Error()}
		}
		end, torn, err := scanSegment(b, seg.path, func(_ int, p []byte) error {
			_, err := decodeFrame(p, &e, nil)
			return err
		})
		if err != nil {
			return err
		}
		committed := rest
		if i < len(v.segs)-1 {
			committed = seg.size
		}
		switch {
		case torn && i < len(v.segs)-1:
			return &CorruptionError{Path: seg.path, Offset: int64(end), Reason: "incomplete record before the last segment"}
		case int64(end) < committed:
			return &CorruptionError{Path: seg.path, Offset: int64(end), Reason: fmt.Sprintf("records missing: the store committed %d bytes of this file", committed)}
		}
	}
	return s.verifyStray(v)
}

// verifyStray returns a [*CorruptionError] for a segment file in the
// store's directory past the last segment of v that the store does not
// know: the next open would read it as the store's. A segment that a roll
// has made but not yet added to the store (see roll) is the next one,
// holds its header alone, and starts at the position where the store's
// committed events end or later.
func (s *FileStore) verifyStray(v *view) error {
	if len(v.segs) == 0 {
		return nil
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("eventbus: verify: %w", err)
	}
	for _, e := range entries {
		seq, ok := parseSegmentName(e.Name())
		if !ok || seq <= v.segs[len(v.segs)-1].seq {
			continue
		}
		path := filepath.Join(s.dir, e.Name())
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("eventbus: verify: %w", err)
		}
		// Read after the file: a roll adds the segment before it writes
		// to it.
		now := s.view(0)
		if last := now.segs[len(now.segs)-1].seq; seq <= last {
			continue
		} else if h, err := decodeSegHeader(b); err == nil && seq == last+1 && h.seq == seq && h.firstPos >= now.log.n && len(b) == segHeaderSize {
			continue
		}
		return &CorruptionError{Path: path, Offset: 0, Reason: "a segment file past the last one the store has: the next open would read it"}
	}
	return nil
}

// RepairFileStore makes the store in dir open again after [OpenFileStore]
// reported a [*CorruptionError]: it cuts each segment at its first damaged
// record, and moves what it cuts, with every later segment, into a new
// subdirectory of dir named repair-<time>, whose path it returns ("" when
// there was nothing to repair). The events cut are lost to the store, so
// events committed after the damage are lost too: keep the subdirectory
// until they are recovered or known to be unneeded. Segment files missing
// at the end of the store cannot be cut back: RepairFileStore moves the
// file LAST, which names the last one, into the subdirectory, accepting
// the loss of their events. Segment files missing at its start (with no
// file START, which retention writes, saying that it starts later), or
// damaged before its first event (a first segment file emptied or cut
// short, or whose header is damaged, or a record before its first event,
// which it moves into the subdirectory), cost only their own events:
// RepairFileStore makes the store start at the first segment left, as
// retention does, keeping a copy of that file in the subdirectory,
// writing it again with the state of the streams first (the revision
// that each goes on from, as the events left show), and naming it in
// START. The events before it are lost, and so is what their segments
// changed of the streams not written since: metadata, deletions, and the
// streams themselves if no event of theirs is left; and a retried append
// of their events is no longer known as one, and may write them again.
// In every case the store then ends where the events kept end, and its
// next appends take the positions of the events lost: readers and checkpoints (of durable
// subscriptions, projections) past there must start again. What it cuts or
// writes again is on disk in the subdirectory before it is cut or written,
// so a failure or a crash part way through loses nothing: the store is
// left as it was or part repaired, and RepairFileStore can run again,
// keeping what it cuts then in another subdirectory. With such an error,
// it returns the path of the subdirectory too once it made one: what it
// cut so far is there. The store must not be open: it fails with an error
// wrapping [ErrLocked] if it is, and holds the store's lock until it
// returns, so that no [OpenFileStore] reads the store part repaired. A dir
// that does not exist, or holds no segment file nor START or LAST file
// (the parent of the store's directory, say), holds no store to repair:
// RepairFileStore then returns an error wrapping fs.ErrNotExist, and makes
// no store there as opening would; an empty dir names none, and gets an
// error wrapping [ErrInvalid].
func RepairFileStore(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%w: RepairFileStore: empty directory name", ErrInvalid)
	}
	return repairFileStore(dir, osFS{})
}

// repairFileStore is RepairFileStore through fs.
func repairFileStore(dir string, fs fileSystem) (string, error) {
	if err := holdsStore(dir); err != nil {
		return "", fmt.Errorf("eventbus: repair: %w", err)
	}
	// Held until the repair ends, so that no other process opens the store
	// while it is cut, nor a half repaired one.
	lock, err := lockDir(dir, false)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	var keep string
	for {
		s, err := OpenFileStore(dir, &FileStoreOptions{fs: fs, locked: true})
		if err == nil {
			return keep, s.Close()
		}
		var ce *CorruptionError
		if !errors.As(err, &ce) {
			return keep, err
		}
		if keep == "" {
			keep = filepath.Join(dir, "repair-"+time.Now().UTC().Format("20060102T150405.000000000"))
			if err := fs.Mkdir(keep, 0o755); err != nil {
				return "", fmt.Errorf("eventbus: repair: %w", err)
			}
			// What cutAt moves into keep is lost with keep unless dir
			// names it on disk.
			if err := syncPath(fs, dir); err != nil {
				return keep, fmt.Errorf("eventbus: repair: %w", err)
			}
		}
		if err := cutAt(fs, dir, keep, ce); err != nil {
			return keep, fmt.Errorf("eventbus: repair: %w", err)
		}
	}
}

// holdsStore returns an error wrapping os.ErrNotExist unless dir holds a
// segment file or a START or LAST file: opening would make a store in any
// other directory (a mistyped path, the parent of the store's), and a
// repair there would report nothing to repair, leaving the store it was
// meant for damaged.
func holdsStore(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := parseSegmentName(e.Name()); ok || e.Name() == startFile || e.Name() == lastFile {
			return nil
		}
	}
	return fmt.Errorf("%s holds no file store: no segment file (seg-<16 hex digits>.log) nor START or LAST file: %w", dir, os.ErrNotExist)
}

// cutAt copies the bytes of ce.Path from ce.Offset into keep, truncates it
// there, and moves every later segment into keep. The copy is on disk,
// whole and named in keep, before the bytes are cut: a crash or a failure
// at any step loses none of them, and leaves a store that opens or that
// RepairFileStore repairs again. The directory that holds keep was synced
// once keep was made.
func cutAt(fs fileSystem, dir, keep string, ce *CorruptionError) error {
	if base := filepath.Base(ce.Path); base == startFile || base == lastFile {
		// Without START, the store starts at its oldest segment; without
		// LAST, it ends at its newest, accepting the loss of those
		// missing after it.
		if err := fs.Rename(ce.Path, filepath.Join(keep, base)); err != nil {
			return err
		}
		return errors.Join(syncPath(fs, keep), syncPath(fs, dir))
	}
	// Older segments, dropped by retention, are left to opening.
	seqs, _, _, err := listSegments(dir, fs, false)
	if err != nil {
		return err
	}
	base := filepath.Base(ce.Path)
	if done, err := cutStart(fs, dir, keep, seqs, base, ce.Offset); done || err != nil {
		return err
	}
	for _, seq := range seqs {
		name := segmentName(seq)
		switch {
		case name < base:
			continue
		case name == base && ce.Offset > 0:
			b, err := os.ReadFile(ce.Path)
			if err != nil {
				return err
			}
			if ce.Offset > int64(len(b)) {
				return fmt.Errorf("%s is %d bytes, cut at %d", ce.Path, len(b), ce.Offset)
			}
			cut := filepath.Join(keep, fmt.Sprintf("%s.from-%d", name, ce.Offset))
			if err := copyFile(fs, cut, b[ce.Offset:]); err != nil {
				return fmt.Errorf("keep a copy of what %s holds from %d: %w", ce.Path, ce.Offset, err)
			}
			f, err := fs.OpenFile(ce.Path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			if err := errors.Join(f.Truncate(ce.Offset), f.Sync(), f.Close()); err != nil {
				return err
			}
		default:
			if err := fs.Rename(filepath.Join(dir, name), filepath.Join(keep, name)); err != nil {
				return err
			}
		}
	}
	return errors.Join(syncPath(fs, keep), syncPath(fs, dir))
}

// cutStart repairs damage at offset off of the segment name of dir, if no
// event of the store comes before it, and reports whether it did: damage
// at the start of name (off 0), if name is the first of seqs or those
// before it hold their header alone, or at a record of the first segment
// with no event before it (the state of the streams alone, say). Damage
// there costs only the segments it takes, not the later ones, which the
// store keeps by starting later, as retention makes it start: segments
// before name go into keep, and the next open finds name starting the
// store; damage at the start of a first segment whose header is sound is
// that it starts the store without the state of the streams (see
// missingStart), which startAt gives it; any other first segment goes into
// keep, unless it is the only one, which the cut moves or cuts as well.
func cutStart(fs fileSystem, dir, keep string, seqs []uint64, name string, off int64) (bool, error) {
	n := 0 // segments before name
	for ; n < len(seqs) && segmentName(seqs[n]) != name; n++ {
		if off > 0 { // damage in a record of a later segment
			return false, nil
		}
		if fi, err := os.Stat(filepath.Join(dir, segmentName(seqs[n]))); err != nil || fi.Size() != segHeaderSize {
			return false, err
		}
	}
	switch {
	case n == len(seqs):
		return false, nil
	case n == 0 && off > 0:
		if len(seqs) == 1 {
			return false, nil
		}
		if ok, err := eventless(filepath.Join(dir, name), off); !ok || err != nil {
			return false, err
		}
		n = 1
	case n == 0:
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return false, err
		}
		if h, err := decodeSegHeader(b); err == nil && h.seq == seqs[0] && (h.seq > 1 || h.firstPos > 0) {
			return true, startAt(fs, dir, keep, seqs, b)
		}
		if len(seqs) == 1 {
			return false, nil
		}
		n = 1
	}
	for _, seq := range seqs[:n] {
		if err := fs.Rename(filepath.Join(dir, segmentName(seq)), filepath.Join(keep, segmentName(seq))); err != nil {
			return true, err
		}
	}
	return true, errors.Join(syncPath(fs, keep), syncPath(fs, dir))
}

// eventless reports whether the records of the segment file path before
// off, which opening found sound, hold no event: a cut at off would keep
// none of the segment's events. It reads the start of each record alone.
func eventless(path string, off int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var head [frameHeader + 1]byte // and the record's kind
	at := int64(segHeaderSize)
	for ; at < off; at += frameHeader + int64(binary.LittleEndian.Uint32(head[:])) {
		if _, err := f.ReadAt(head[:], at); err != nil || head[frameHeader] == kindEvents {
			return false, nil // the cut reads the file again, and fails if it must
		}
	}
	return at == off, nil
}

// startAt makes the store in dir start at its first segment, seqs[0],
// whose file holds b, as retention makes a store start (see retain and
// removeDropped): the segments before it are missing (see missingStart),
// with the events before it and what they changed of the streams. It
// keeps a copy of the file in keep, writes it again with the state of the
// streams first, as firstRevisions gives it, and names the segment in
// START. Each file is whole on disk, named, before the next step: a crash
// or a failure part way leaves a store that RepairFileStore repairs again.
func startAt(fs fileSystem, dir, keep string, seqs []uint64, b []byte) error {
	streams, err := firstRevisions(dir, seqs, b)
	if err != nil {
		return err
	}
	name := segmentName(seqs[0])
	if err := copyFile(fs, filepath.Join(keep, name), b); err != nil {
		return fmt.Errorf("keep a copy of %s: %w", name, err)
	}
	if err := copyFile(fs, filepath.Join(dir, name), slices.Concat(b[:segHeaderSize], appendStates(nil, streams), b[segHeaderSize:])); err != nil {
		return err
	}
	return copyFile(fs, filepath.Join(dir, startFile), seqContent(seqs[0]))
}

// firstRevisions returns the streams that the segments seqs of dir, the
// first of which holds b, write events to before a state frame there
// gives their state, each at the revision of its first event there if that
// is not 0: the state of the streams that a store starting at seqs[0]
// needs, since what the segments before it held is gone. It reads up to a
// missing segment or the first damage, which opening reports next, and
// cuts with what follows.
func firstRevisions(dir string, seqs []uint64, b []byte) ([]*fileStream, error) {
	var streams []*fileStream
	known := make(map[string]bool)
	var e entry
	for i, seq := range seqs {
		path := filepath.Join(dir, segmentName(seq))
		if i > 0 {
			if seq != seqs[i-1]+1 {
				break
			}
			var err error
			if b, err = os.ReadFile(path); err != nil {
				return nil, err
			}
			if _, err := decodeSegHeader(b); err != nil {
				break
			}
		}
		_, _, err := scanSegment(b, path, func(_ int, p []byte) error {
			r, err := decodeFrame(p, &e, func(stream []byte, _ int, e *entry) error {
				if !known[string(stream)] {
					known[string(stream)] = true
					if e.rev > 0 {
						streams = append(streams, &fileStream{name: string(stream), w: streamState{base: e.rev}})
					}
				}
				return nil
			})
			for _, x := range r.states {
				known[string(x.stream)] = true
			}
			return err
		})
		if err != nil {
			break
		}
	}
	return streams, nil
}

// copyFile writes b to the new file path, under a temporary name until
// it is synced, and syncs the directory that names it, so that the file,
// once there, is whole and stays there.
func copyFile(fs fileSystem, path string, b []byte) error {
	f, err := fs.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err := errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := fs.Rename(path+".tmp", path); err != nil {
		return err
	}
	return syncPath(fs, filepath.Dir(path))
}

// makeDir makes dir and the parents it lacks, as os.MkdirAll does, and
// syncs the parent of each directory it makes: until then a power loss can
// take the new directory, with the store made in it and every event
// acknowledged as on stable storage.
func makeDir(fsys fileSystem, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := makeDir(fsys, parent); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncPath(fsys, parent)
}

// syncPath syncs a file or directory.
func syncPath(fs fileSystem, path string) error {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
