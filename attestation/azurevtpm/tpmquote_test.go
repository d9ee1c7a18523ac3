package azurevtpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
)

// attest builds a TPMS_ATTEST quote over the given SHA-256 selection
// bitmap and digest.
func attest(extra []byte, alg uint16, bitmap []byte, digest []byte) []byte {
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.BigEndian, v) }
	w(uint32(tpmGeneratedValue))
	w(uint16(tpmSTAttestQuote))
	w(uint16(0)) // qualified signer
	w(uint16(len(extra)))
	b.Write(extra)
	b.Write(make([]byte, 17+8)) // clock info, firmware version
	w(uint32(1))
	w(alg)
	w(uint8(len(bitmap)))
	b.Write(bitmap)
	w(uint16(len(digest)))
	b.Write(digest)
	return b.Bytes()
}

func TestQuotedPCRsForms(t *testing.T) {
	// PCRs 0, 7 and 14 selected.
	bitmap := []byte{0x81, 0x40, 0x00}
	all := make([][]byte, NumPCRs)
	for i := range all {
		all[i] = bytes.Repeat([]byte{byte(i)}, 32)
	}
	h := sha256.New()
	for _, i := range []int{0, 7, 14} {
		h.Write(all[i])
	}
	q, err := parseQuoteAttest(attest([]byte("nonce"), tpmAlgSHA256, bitmap, h.Sum(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 7, 14}; len(q.pcrs) != 3 || q.pcrs[0] != 0 || q.pcrs[1] != 7 || q.pcrs[2] != 14 {
		t.Fatalf("pcrs = %v, want %v", q.pcrs, want)
	}
	for name, values := range map[string][][]byte{
		"selected only": {all[0], all[7], all[14]},
		"all 24":        all,
	} {
		got, err := quotedPCRs(q, values)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(got) != 3 || !bytes.Equal(got[7], all[7]) || !bytes.Equal(got[14], all[14]) {
			t.Errorf("%s: map = %x", name, got)
		}
	}
	// Selected values in the wrong order, or a wrong unselected-count.
	if _, err := quotedPCRs(q, [][]byte{all[7], all[0], all[14]}); !errors.Is(err, errPCRDigest) {
		t.Errorf("reordered values: %v, want digest mismatch", err)
	}
	if _, err := quotedPCRs(q, all[:4]); err == nil || errors.Is(err, errPCRDigest) {
		t.Errorf("4 values: %v, want a count error", err)
	}
	// With all 24 values, an unselected PCR is not covered and may differ.
	changed := append([][]byte(nil), all...)
	changed[1] = make([]byte, 32)
	if _, err := quotedPCRs(q, changed); err != nil {
		t.Errorf("unselected PCR changed: %v", err)
	}
}

func TestParseQuoteAttestRejects(t *testing.T) {
	digest := make([]byte, 32)
	sel := []byte{0xff, 0xff, 0xff}
	for name, msg := range map[string][]byte{
		"SHA-1 bank":      attest(nil, 0x0004, sel, digest),
		"PCR 24":          attest(nil, tpmAlgSHA256, []byte{0, 0, 0, 1}, digest),
		"no PCRs":         attest(nil, tpmAlgSHA256, []byte{0, 0, 0}, digest),
		"short digest":    attest(nil, tpmAlgSHA256, sel, digest[:20]),
		"trailing bytes":  append(attest(nil, tpmAlgSHA256, sel, digest), 0),
		"truncated":       attest(nil, tpmAlgSHA256, sel, digest)[:50],
		"long extra data": attest(make([]byte, 65), tpmAlgSHA256, sel, digest),
		"too big":         make([]byte, maxAttestSize+1),
	} {
		if _, err := parseQuoteAttest(msg); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestParseSignature(t *testing.T) {
	sig := bytes.Repeat([]byte{7}, 256)
	s, err := parseSignature(MarshalRSASSASignature(sig))
	if err != nil || s.pss || !bytes.Equal(s.sig, sig) {
		t.Fatalf("RSASSA: %v %+v", err, s)
	}
	pss := MarshalRSASSASignature(sig)
	pss[1] = tpmAlgRSAPSS
	if s, err := parseSignature(pss); err != nil || !s.pss {
		t.Fatalf("RSAPSS: %v", err)
	}
	sha1 := MarshalRSASSASignature(sig)
	sha1[3] = 0x04
	for name, b := range map[string][]byte{
		"SHA-1":    sha1,
		"ECDSA":    append([]byte{0, 0x18}, MarshalRSASSASignature(sig)[2:]...),
		"trailing": append(MarshalRSASSASignature(sig), 0),
		"short":    MarshalRSASSASignature(sig)[:100],
	} {
		if _, err := parseSignature(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestCheckUserData(t *testing.T) {
	full := bytes.Repeat([]byte{9}, 64)
	if err := checkUserData(full, full); err != nil {
		t.Error(err)
	}
	// A 48-byte nonce, zero-padded into the user data (CoCo attester).
	padded := append(bytes.Repeat([]byte{9}, 48), make([]byte, 16)...)
	if err := checkUserData(padded, padded[:48]); err != nil {
		t.Error(err)
	}
	if err := checkUserData(full, full[:48]); err == nil {
		t.Error("short qualifying data matched non-zero user data tail")
	}
	if err := checkUserData(nil, full); err == nil {
		t.Error("missing user-data matched")
	}
	if err := checkUserData(make([]byte, 64), nil); err == nil {
		t.Error("empty qualifying data matched zero user data")
	}
}
