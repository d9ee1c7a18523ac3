package simulate

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"

	"github.com/google/go-tdx-guest/pcs"
)

// sgxExtension builds the SGX extension (OID 1.2.840.113741.1.13.1) of a
// PCK certificate as Intel's PCK certificate specification lays it out:
// a SEQUENCE of (OID, value) pairs for the PPID, the TCB (16 component
// SVNs, PCESVN and CPUSVN), the PCE ID, the FMSPC and the SGX type.
func sgxExtension(p PCK) (pkix.Extension, error) {
	fmspc, err := hex.DecodeString(p.FMSPC)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("simulate: FMSPC: %w", err)
	}
	type pair struct {
		ID    asn1.ObjectIdentifier
		Value any
	}
	var tcb []pair
	for n, svn := range p.CPUSVN {
		tcb = append(tcb, pair{append(append(asn1.ObjectIdentifier{}, pcs.OidTCB...), n+1), int(svn)})
	}
	tcb = append(tcb, pair{pcs.OidPCESvn, int(p.PCESVN)}, pair{pcs.OidCPUSvn, p.CPUSVN})
	sgxType := asn1.Enumerated(0) // Standard
	oidSgxType := append(append(asn1.ObjectIdentifier{}, pcs.OidSgxExtension...), 4+1)
	value, err := asn1.Marshal([]pair{
		{pcs.OidPPID, p.PPID},
		{pcs.OidTCB, tcb},
		{pcs.OidPCEID, []byte{0, 0}},
		{pcs.OidFMSPC, fmspc},
		{oidSgxType, sgxType},
	})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("simulate: SGX extension: %w", err)
	}
	return pkix.Extension{Id: pcs.OidSgxExtension, Value: value}, nil
}
