package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"time"
)

// Record is one line of an export: exactly one of Entry and Checkpoint is
// set.
type Record struct {
	Entry      *Entry
	Checkpoint *Checkpoint
}

// entryLine and checkpointLine fix the export's field names and order.
// They are the SIEM's schema: add fields only at the end, never rename.
type entryLine struct {
	Record       string            `json:"record"`
	Seq          uint64            `json:"seq"`
	Time         time.Time         `json:"time"`
	Kind         Kind              `json:"kind"`
	Actor        string            `json:"actor"`
	KeySet       string            `json:"keyset"`
	KID          string            `json:"kid"`
	Outcome      Outcome           `json:"outcome"`
	Reason       string            `json:"reason"`
	ClaimsDigest string            `json:"claims_digest"`
	Details      map[string]string `json:"details"`
	PrevHash     Hash              `json:"prev_hash"`
	Hash         Hash              `json:"hash"`
}

type checkpointLine struct {
	Record    string    `json:"record"`
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Hash      Hash      `json:"hash"`
	Signature []byte    `json:"signature"`
}

const (
	recordEntry      = "entry"
	recordCheckpoint = "checkpoint"
)

// MaxLineBytes bounds one export line. Log.Append's field limits keep
// every entry well below it.
const MaxLineBytes = 1 << 20

// MarshalEntry is e as one export line, without the newline.
func MarshalEntry(e *Entry) ([]byte, error) {
	d := e.Details
	if d == nil {
		d = map[string]string{} // "details":{} rather than null: a stable schema
	}
	b, err := json.Marshal(entryLine{
		Record: recordEntry, Seq: e.Seq, Time: e.Time.UTC(), Kind: e.Kind, Actor: e.Actor,
		KeySet: e.KeySet, KID: e.KID, Outcome: e.Outcome, Reason: e.Reason,
		ClaimsDigest: e.ClaimsDigest, Details: d, PrevHash: e.PrevHash, Hash: e.Hash,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: encode entry seq %d: %w", e.Seq, err)
	}
	return b, nil
}

// MarshalCheckpoint is c as one export line, without the newline.
func MarshalCheckpoint(c *Checkpoint) ([]byte, error) {
	b, err := json.Marshal(checkpointLine{
		Record: recordCheckpoint, Seq: c.Seq, Time: c.Time.UTC(), Hash: c.Hash, Signature: c.Signature,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: encode checkpoint seq %d: %w", c.Seq, err)
	}
	return b, nil
}

// ParseLine parses one export line (without its newline). It accepts only
// the bytes MarshalEntry or MarshalCheckpoint would write for the values it
// reads: encoding/json alone would take duplicate keys (last wins), keys in
// any letter case and unknown fields, any of which could show a SIEM one
// outcome while the verifier checks another.
func ParseLine(line []byte) (Record, error) {
	var head struct {
		Record string `json:"record"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var (
		rec   Record
		canon []byte
		err   error
	)
	switch head.Record {
	case recordEntry:
		var l entryLine
		if err := json.Unmarshal(line, &l); err != nil {
			return Record{}, fmt.Errorf("%w: entry: %v", ErrMalformed, err)
		}
		e := &Entry{
			Seq: l.Seq, Time: l.Time, Kind: l.Kind, Actor: l.Actor, KeySet: l.KeySet, KID: l.KID,
			Outcome: l.Outcome, Reason: l.Reason, ClaimsDigest: l.ClaimsDigest, Details: l.Details,
			PrevHash: l.PrevHash, Hash: l.Hash,
		}
		if len(e.Details) == 0 {
			e.Details = nil
		}
		rec.Entry = e
		canon, err = MarshalEntry(e)
	case recordCheckpoint:
		var l checkpointLine
		if err := json.Unmarshal(line, &l); err != nil {
			return Record{}, fmt.Errorf("%w: checkpoint: %v", ErrMalformed, err)
		}
		c := &Checkpoint{Seq: l.Seq, Time: l.Time, Hash: l.Hash, Signature: l.Signature}
		rec.Checkpoint = c
		canon, err = MarshalCheckpoint(c)
	default:
		return Record{}, fmt.Errorf("%w: unknown record type %q", ErrMalformed, head.Record)
	}
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(canon, line) {
		return Record{}, fmt.Errorf("%w: not in canonical form (reformatted, duplicate or unknown fields)", ErrMalformed)
	}
	return rec, nil
}

// Export writes entries as JSON lines, each checkpoint right after the
// entry at its Seq (checkpoints before the first entry come first, those
// beyond the last one at the end). It returns the number of entries
// written.
func Export(w io.Writer, entries iter.Seq2[Entry, error], checkpoints []Checkpoint) (uint64, error) {
	checkpoints = slices.Clone(checkpoints)
	slices.SortStableFunc(checkpoints, func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	bw := bufio.NewWriter(w)
	var n uint64
	next := 0
	writeCheckpoints := func(upTo uint64) error {
		for ; next < len(checkpoints) && checkpoints[next].Seq <= upTo; next++ {
			b, err := MarshalCheckpoint(&checkpoints[next])
			if err != nil {
				return err
			}
			if err := writeLine(bw, b); err != nil {
				return err
			}
		}
		return nil
	}
	for e, err := range entries {
		if err != nil {
			return n, fmt.Errorf("audit: export: read entries: %w", err)
		}
		if e.Seq > 0 {
			if err := writeCheckpoints(e.Seq - 1); err != nil {
				return n, err
			}
		}
		b, err := MarshalEntry(&e)
		if err != nil {
			return n, err
		}
		if err := writeLine(bw, b); err != nil {
			return n, err
		}
		n++
		if err := writeCheckpoints(e.Seq); err != nil {
			return n, err
		}
	}
	if err := writeCheckpoints(^uint64(0)); err != nil {
		return n, err
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("audit: export: %w", err)
	}
	return n, nil
}

func writeLine(w *bufio.Writer, b []byte) error {
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// Decoder reads the records of an export.
type Decoder struct {
	s    *bufio.Scanner
	line int
}

// NewDecoder reads export lines from r.
func NewDecoder(r io.Reader) *Decoder {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	return &Decoder{s: s}
}

// Next returns the next record, or io.EOF after the last. Errors name the
// line number and wrap ErrMalformed for a bad line.
func (d *Decoder) Next() (Record, error) {
	if !d.s.Scan() {
		if err := d.s.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				return Record{}, fmt.Errorf("audit: line %d: longer than %d bytes: %w", d.line+1, MaxLineBytes, ErrMalformed)
			}
			return Record{}, fmt.Errorf("audit: line %d: %w", d.line+1, err)
		}
		return Record{}, io.EOF
	}
	d.line++
	rec, err := ParseLine(d.s.Bytes())
	if err != nil {
		return Record{}, fmt.Errorf("audit: line %d: %w", d.line, err)
	}
	return rec, nil
}

// Entries yields the entries of an export in file order, skipping
// checkpoints; a bad line ends it with an error.
func Entries(r io.Reader) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		d := NewDecoder(r)
		for {
			rec, err := d.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(Entry{}, err)
				return
			}
			if rec.Entry != nil && !yield(*rec.Entry, nil) {
				return
			}
		}
	}
}

// ReadCheckpoints returns the checkpoints of an export, skipping entries.
func ReadCheckpoints(r io.Reader) ([]Checkpoint, error) {
	var out []Checkpoint
	d := NewDecoder(r)
	for {
		rec, err := d.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if rec.Checkpoint != nil {
			out = append(out, *rec.Checkpoint)
		}
	}
}
