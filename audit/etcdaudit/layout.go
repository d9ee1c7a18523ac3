package etcdaudit

import (
	"fmt"
	"strconv"
	"strings"
)

// Layout under the prefix P:
//
//	P audit/head                      -> seq of the last entry, 20 decimal digits
//	P audit/entries/<20-digit seq>    -> the entry's export line (audit.MarshalEntry)
//	P audit/checkpoints/<20-digit seq> -> the checkpoint's export line
//
// Zero-padded decimal sequence numbers sort in Seq order, so a range read
// returns entries already ordered; 20 digits hold every uint64. The head
// key is what Append compares: one key to test instead of "no key sorts
// after mine", which a compare cannot say cheaply. Storing the export line
// means the bytes a SIEM receives are the bytes that were stored, and
// reading back goes through audit's strict parser.
const (
	dirAudit       = "audit/"
	keyHead        = dirAudit + "head"
	dirEntries     = dirAudit + "entries/"
	dirCheckpoints = dirAudit + "checkpoints/"
	seqDigits      = 20
)

type layout struct{ prefix string }

func (l layout) head() string                 { return l.prefix + keyHead }
func (l layout) entries() string              { return l.prefix + dirEntries }
func (l layout) entry(seq uint64) string      { return l.entries() + formatSeq(seq) }
func (l layout) checkpoints() string          { return l.prefix + dirCheckpoints }
func (l layout) checkpoint(seq uint64) string { return l.checkpoints() + formatSeq(seq) }

func formatSeq(seq uint64) string { return fmt.Sprintf("%0*d", seqDigits, seq) }

// parseSeq reads a sequence number written by formatSeq, and nothing else:
// a key or head value an operator wrote by hand in another form must not
// alias a real one.
func parseSeq(s string) (uint64, bool) {
	if len(s) != seqDigits || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil
}

// seqOf is the sequence number a key under dir names.
func seqOf(key []byte, dir string) (uint64, bool) {
	rest, found := strings.CutPrefix(string(key), dir)
	if !found {
		return 0, false
	}
	return parseSeq(rest)
}
