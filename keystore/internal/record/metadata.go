package record

import (
	"encoding/json"
	"fmt"
)

type metadataRecord struct {
	Value []byte `json:"value"`
	// Revision: see keySetRecord.
	Revision *uint64 `json:"revision,omitempty"`
}

// EncodeMetadata returns the record of a metadata value, with or without rev
// as for EncodeKeySet.
func EncodeMetadata(value []byte, rev uint64, withRevision bool) ([]byte, error) {
	b, err := json.Marshal(metadataRecord{Value: value, Revision: optRevision(rev, withRevision)})
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return b, nil
}

// DecodeMetadata parses a metadata record (outside bytes), returning the
// value and the record's revision, 0 if it has none.
func DecodeMetadata(b []byte) ([]byte, uint64, error) {
	var r metadataRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("decode metadata record: %w", err)
	}
	return r.Value, revisionOf(r.Revision), nil
}
