// Package audit is the KMS's tamper-evident audit log: an append-only,
// hash-chained sequence of entries (every key release decision, rotation,
// state or policy change, admin call and KEK event) with periodic
// checkpoints signed by an Ed25519 audit key.
//
// A Log assigns each entry the next sequence number (Seq, starting at 1) and
// the previous entry's hash (PrevHash; 32 zero bytes for Seq 1), computes its
// Hash, and stores it through a Backend whose Append is a compare-and-swap on
// the last sequence number, so no two entries ever share a Seq and the chain
// never forks. Every CheckpointEvery entries, and on demand, the Log signs a
// Checkpoint over (Seq, Hash, Time). Verify walks a chain offline and names
// the first entry that was altered, removed, reordered, cut off after a
// checkpoint, or covered by a checkpoint with a bad signature. Export and
// Decoder move a log to and from JSON lines for a SIEM and for offline
// verification.
//
// # Entry hash
//
// Hash = SHA-256(E), where E is the concatenation, in this order, of
//
//	"attested-kms/v1 audit entry" 0x00
//	u64be(Seq)
//	i64be(Time seconds since the Unix epoch) u32be(Time nanoseconds, 0..999999999)
//	str(Kind) str(Actor) str(KeySet) str(KID) str(Outcome) str(Reason) str(ClaimsDigest)
//	u32be(number of Details) then, for each detail in ascending byte order of
//	    its key: str(key) str(value)
//	str(PrevHash)
//
// with str(x) = u32be(len(x)) || x for a string's UTF-8 bytes or a hash's 32
// raw bytes, and uNNbe / i64be big-endian integers. The time zone is not
// part of the hash (times are kept in UTC). Every variable-length field
// carries its length, so no two different entries share an encoding; Go map
// iteration order and JSON field order play no part.
//
// # Checkpoint signature
//
// Signature = Ed25519(audit key, C), where C is
//
//	"attested-kms/v1 audit checkpoint" 0x00
//	u64be(Seq) Hash(32 raw bytes)
//	i64be(Time seconds) u32be(Time nanoseconds)
//
// and Hash is the Hash of the entry at Seq.
//
// # Export format
//
// One JSON object per line, each line exactly as Export writes it (a
// Decoder rejects any other spelling of the same values, so a line cannot
// say one thing to a SIEM and another to the verifier). Entries:
//
//	{"record":"entry","seq":1,"time":"2026-01-02T03:04:05.123456789Z","kind":"release",
//	 "actor":"...","keyset":"default","kid":"...","outcome":"granted","reason":"...",
//	 "claims_digest":"<64 hex>","details":{},"prev_hash":"<64 hex>","hash":"<64 hex>"}
//
// checkpoints (written after the entry they cover):
//
//	{"record":"checkpoint","seq":1000,"time":"...","hash":"<64 hex>","signature":"<base64>"}
//
// What the chain cannot show: entries cut off after the last checkpoint, or a
// whole log replaced by someone holding the audit key. Checkpoint often and
// keep copies of checkpoints outside the KMS (the SIEM) to narrow both.
package audit
