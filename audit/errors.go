package audit

import "errors"

var (
	// ErrConflict is returned by Backend.Append when the entry's Seq does
	// not follow the last stored one (another writer got there first), and
	// by Backend.PutCheckpoint when a checkpoint at that Seq exists.
	ErrConflict = errors.New("audit: conflicting write")
	// ErrInvalidEntry marks an entry Log.Append refuses (unknown kind or
	// outcome, oversized or non-UTF-8 field).
	ErrInvalidEntry = errors.New("audit: invalid entry")
	// ErrInvalidArgument marks a bad argument to New or Verify.
	ErrInvalidArgument = errors.New("audit: invalid argument")
	// ErrCheckpoint marks a failure to sign or store a checkpoint after the
	// entry itself was appended.
	ErrCheckpoint = errors.New("audit: checkpoint failed")
	// ErrEmpty is returned by Log.Checkpoint on a log with no entries.
	ErrEmpty = errors.New("audit: log is empty")
	// ErrMalformed marks an export line that is not exactly what Export
	// writes.
	ErrMalformed = errors.New("audit: malformed record")
)
