package tdx_test

import (
	"bytes"
	"encoding/pem"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

// layout gives offsets of a simulated quote's regions.
type layout struct {
	body, sigData, sig, attKey, certType, qeReport, qeSig, auth, pckType, chain int
}

func layoutOf(version, bodyType int) layout {
	var l layout
	l.body = 48
	bodyLen := 584
	if version == 5 {
		l.body += 6
		if bodyType == 3 {
			bodyLen = 648
		}
	}
	l.sigData = l.body + bodyLen
	l.sig = l.sigData + 4
	l.attKey = l.sig + 64
	l.certType = l.attKey + 64
	l.qeReport = l.certType + 6
	l.qeSig = l.qeReport + 384
	l.auth = l.qeSig + 64 + 2
	l.pckType = l.auth + 32
	l.chain = l.pckType + 6
	return l
}

func TestByteFlips(t *testing.T) {
	intel := fixtureIntel(t)
	col := collateral(t, intel, simulate.CollateralOptions{})
	for _, qt := range []struct {
		name              string
		version, bodyType int
	}{{"v4", 4, 0}, {"v5 TDX 1.0", 5, 2}, {"v5 TDX 1.5", 5, 3}} {
		orig := quote(t, intel, simulate.QuoteFields{Version: qt.version, BodyType: qt.bodyType})
		l := layoutOf(qt.version, qt.bodyType)
		type flip struct {
			name string
			off  int
			want attestation.Reason
			mask byte // 0 means 1
		}
		flips := []flip{
			{"version", 0, attestation.ReasonUnsupported, 0x08},
			{"attestation key type", 2, attestation.ReasonUnsupported, 0},
			{"TEE type", 4, attestation.ReasonUnsupported, 0},
			{"header QE SVN", 10, attestation.ReasonSignature, 0},
			{"header QE vendor ID", 20, attestation.ReasonSignature, 0},
			{"header user data", 40, attestation.ReasonSignature, 0},
			{"body TEE TCB SVN", l.body + 15, attestation.ReasonSignature, 0},
			{"body TD attributes", l.body + 120, attestation.ReasonSignature, 0},
			{"body MRTD", l.body + 136, attestation.ReasonSignature, 0},
			{"body RTMR3", l.body + 328 + 3*48, attestation.ReasonSignature, 0},
			{"body report data", l.body + 520 + 63, attestation.ReasonSignature, 0},
			{"signature data length", l.sigData + 1, attestation.ReasonMalformed, 0},
			{"quote signature r", l.sig, attestation.ReasonSignature, 0},
			{"quote signature s", l.sig + 63, attestation.ReasonSignature, 0},
			{"attestation key", l.attKey + 10, attestation.ReasonSignature, 0},
			{"certification data type", l.certType, attestation.ReasonUnsupported, 0},
			{"certification data size", l.certType + 2, attestation.ReasonMalformed, 0},
			{"QE report CPUSVN", l.qeReport, attestation.ReasonSignature, 0},
			{"QE report MRENCLAVE", l.qeReport + 64, attestation.ReasonSignature, 0},
			{"QE report MRSIGNER", l.qeReport + 128, attestation.ReasonSignature, 0},
			{"QE report ISVSVN", l.qeReport + 258, attestation.ReasonSignature, 0},
			{"QE report data", l.qeReport + 320, attestation.ReasonSignature, 0},
			{"QE report data padding", l.qeReport + 383, attestation.ReasonSignature, 0},
			{"QE report signature", l.qeSig + 40, attestation.ReasonSignature, 0},
			{"QE auth data length", l.auth - 1, attestation.ReasonMalformed, 0x80},
			{"QE auth data", l.auth + 5, attestation.ReasonSignature, 0},
			{"PCK chain data type", l.pckType, attestation.ReasonUnsupported, 0},
			{"PCK chain PEM armor", l.chain + 3, attestation.ReasonMalformed, 0},
		}
		if qt.version == 5 {
			flips = append(flips,
				flip{"body type", 48, attestation.ReasonUnsupported, 0x08},
				flip{"body size", 50, attestation.ReasonMalformed, 0})
		}
		for _, f := range flips {
			t.Run(qt.name+"/"+f.name, func(t *testing.T) {
				q := bytes.Clone(orig)
				mask := f.mask
				if mask == 0 {
					mask = 1
				}
				q[f.off] ^= mask
				_, err := verify(t, simVerifier(t, intel, col, simTime), q)
				wantReason(t, err, f.want)
			})
		}
		// Certificates in the chain: flip a byte of each certificate's
		// signature (the last DER byte) and re-encode, keeping the layout.
		for i, name := range []string{"PCK certificate", "PCK CA certificate", "root certificate"} {
			t.Run(qt.name+"/"+name+" signature", func(t *testing.T) {
				q := bytes.Clone(orig)
				chain := q[l.chain:]
				var blocks []*pem.Block
				for rest := chain; ; {
					var b *pem.Block
					if b, rest = pem.Decode(rest); b == nil {
						break
					}
					blocks = append(blocks, b)
				}
				blocks[i].Bytes[len(blocks[i].Bytes)-1] ^= 1
				var buf bytes.Buffer
				for _, b := range blocks {
					_ = pem.Encode(&buf, b)
				}
				if buf.Len() != len(chain) {
					t.Fatal("re-encoded chain changed length")
				}
				copy(chain, buf.Bytes())
				_, err := verify(t, simVerifier(t, intel, col, simTime), q)
				wantReason(t, err, attestation.ReasonUntrustedRoot)
			})
		}
		t.Run(qt.name+"/trailing bytes ignored", func(t *testing.T) {
			c, err := verify(t, simVerifier(t, intel, col, simTime), append(bytes.Clone(orig), "padding"...))
			if err != nil || c.TDX.TCBStatus != "UpToDate" {
				t.Fatalf("%v %v", c, err)
			}
		})
		t.Run(qt.name+"/truncated", func(t *testing.T) {
			for _, n := range []int{0, 1, 47, 48, l.sigData, l.sigData + 3, l.qeReport + 100, len(orig) - 1} {
				_, err := verify(t, simVerifier(t, intel, col, simTime), orig[:n])
				wantReason(t, err, attestation.ReasonMalformed)
			}
		})
	}
}
