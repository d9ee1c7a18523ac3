package simulate

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Response is a collateral document as Intel's PCS serves it.
type Response struct {
	Header map[string][]string
	Body   []byte
}

// TCBComponents are the SVNs of one TCB level.
type TCBComponents struct {
	SGX    [16]byte
	PCESVN uint16
	TDX    [16]byte
}

// TCBLevel is one level of a TCB info, best first.
type TCBLevel struct {
	TCB        TCBComponents
	Date       time.Time
	Status     string // "UpToDate", "OutOfDate", ...
	Advisories []string
}

// ModuleLevel is one TCB level of a TDX module identity.
type ModuleLevel struct {
	ISVSVN     uint8
	Date       time.Time
	Status     string
	Advisories []string
}

// DefaultTCBLevels returns the simulated platform's TCB levels: UpToDate
// (matches the default PCK and TEE_TCB_SVN), OutOfDate (matched by a
// TEE_TCB_SVN of 3,0,2 or SGX SVNs of 2,2,2,2,3,1,0,5), and an older
// OutOfDate level.
func DefaultTCBLevels() []TCBLevel {
	return []TCBLevel{
		{
			TCB:    TCBComponents{SGX: [16]byte{4, 4, 2, 2, 4, 1, 0, 5}, PCESVN: 13, TDX: [16]byte{5, 0, 3}},
			Date:   time.Date(2025, 2, 12, 0, 0, 0, 0, time.UTC),
			Status: "UpToDate",
		},
		{
			TCB:        TCBComponents{SGX: [16]byte{2, 2, 2, 2, 3, 1, 0, 5}, PCESVN: 13, TDX: [16]byte{3, 0, 2}},
			Date:       time.Date(2024, 3, 13, 0, 0, 0, 0, time.UTC),
			Status:     "OutOfDate",
			Advisories: []string{"INTEL-SA-SIM-0001", "INTEL-SA-SIM-0002"},
		},
		{
			TCB:        TCBComponents{SGX: [16]byte{2, 2, 2, 2, 3, 1, 0, 3}, PCESVN: 5, TDX: [16]byte{1, 0, 1}},
			Date:       time.Date(2018, 1, 4, 0, 0, 0, 0, time.UTC),
			Status:     "OutOfDate",
			Advisories: []string{"INTEL-SA-SIM-0001", "INTEL-SA-SIM-0002", "INTEL-SA-SIM-0003"},
		},
	}
}

// DefaultModuleLevels returns the levels of TDX module identity TDX_01
// (TEE_TCB_SVN[1] = 1, TDX 1.5 modules): SVN 6 UpToDate, 4 OutOfDate.
func DefaultModuleLevels() []ModuleLevel {
	return []ModuleLevel{
		{ISVSVN: 6, Date: time.Date(2025, 2, 12, 0, 0, 0, 0, time.UTC), Status: "UpToDate"},
		{ISVSVN: 4, Date: time.Date(2024, 3, 13, 0, 0, 0, 0, time.UTC), Status: "OutOfDate", Advisories: []string{"INTEL-SA-SIM-0004"}},
	}
}

// CollateralOptions select what Collateral serves.
type CollateralOptions struct {
	// FMSPCs get a TCB info each; nil means DefaultFMSPC only.
	FMSPCs []string
	// TCBLevels replaces DefaultTCBLevels; ModuleLevels replaces
	// DefaultModuleLevels.
	TCBLevels    []TCBLevel
	ModuleLevels []ModuleLevel
	// Validity is how long documents and CRLs stay current after now;
	// 0 means 30 days, as Intel's.
	Validity time.Duration
	// RevokedPCKs are PCK serial numbers (PCKSerial) on the PCK CRL.
	RevokedPCKs []*big.Int
	// RevokePCKCA and RevokeTCBSigning put those certificates on the root
	// CA CRL.
	RevokePCKCA, RevokeTCBSigning bool
	// QEOutOfDate makes DefaultQESVN an OutOfDate QE level.
	QEOutOfDate bool
}

// Collateral returns the documents a verifier fetches, keyed by the URL it
// fetches them from: TCB info (pcs.TcbInfoURL), QE identity
// (pcs.QeIdentityURL), PCK CRL (pcs.PckCrlURL("platform")) with Intel's
// issuer-chain headers, and the root CA CRL (RootCRLURL). All are issued
// at now.
func (i *Intel) Collateral(now time.Time, opts CollateralOptions) (map[string]Response, error) {
	now = now.UTC().Truncate(time.Second)
	validity := opts.Validity
	if validity == 0 {
		validity = 30 * 24 * time.Hour
	}
	next := now.Add(validity)
	out := make(map[string]Response)
	signingChain := escapeChain(i.tcbSigning, i.root)

	fmspcs := opts.FMSPCs
	if fmspcs == nil {
		fmspcs = []string{DefaultFMSPC}
	}
	levels := opts.TCBLevels
	if levels == nil {
		levels = DefaultTCBLevels()
	}
	modLevels := opts.ModuleLevels
	if modLevels == nil {
		modLevels = DefaultModuleLevels()
	}
	for _, fmspc := range fmspcs {
		body, err := i.signedJSON("tcbInfo", tcbInfoJSON(fmspc, now, next, levels, modLevels))
		if err != nil {
			return nil, err
		}
		out[pcs.TcbInfoURL(fmspc)] = Response{Header: map[string][]string{pcs.TcbInfoIssuerChainPhrase: {signingChain}}, Body: body}
	}
	body, err := i.signedJSON("enclaveIdentity", qeIdentityJSON(now, next, opts.QEOutOfDate))
	if err != nil {
		return nil, err
	}
	out[pcs.QeIdentityURL()] = Response{Header: map[string][]string{pcs.SgxQeIdentityIssuerChainPhrase: {signingChain}}, Body: body}

	pckCRL, err := i.crl(now, next, i.pckCA, "pck-ca", opts.RevokedPCKs)
	if err != nil {
		return nil, err
	}
	out[pcs.PckCrlURL("platform")] = Response{
		Header: map[string][]string{pcs.SgxPckCrlIssuerChainPhrase: {escapeChain(i.pckCA, i.root)}},
		Body:   pckCRL,
	}
	var rootRevoked []*big.Int
	if opts.RevokePCKCA {
		rootRevoked = append(rootRevoked, i.pckCA.SerialNumber)
	}
	if opts.RevokeTCBSigning {
		rootRevoked = append(rootRevoked, i.tcbSigning.SerialNumber)
	}
	rootCRL, err := i.crl(now, next, i.root, "root", rootRevoked)
	if err != nil {
		return nil, err
	}
	out[RootCRLURL] = Response{Body: rootCRL}
	return out, nil
}

// escapeChain encodes certificates as Intel's issuer-chain headers do:
// URL-escaped concatenated PEM.
func escapeChain(certs ...*x509.Certificate) string {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return url.QueryEscape(b.String())
}

func (i *Intel) crl(now, next time.Time, issuer *x509.Certificate, issuerRole string, revoked []*big.Int) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:             big.NewInt(1),
		ThisUpdate:         now,
		NextUpdate:         next,
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(nil, tmpl, issuer, i.keys[issuerRole])
	if err != nil {
		return nil, fmt.Errorf("simulate: CRL of %s: %w", issuer.Subject.CommonName, err)
	}
	return der, nil
}

// signedJSON returns {"<field>":<value>,"signature":"<hex r||s>"}, the
// signature by the TCB signing key over the exact bytes of value.
func (i *Intel) signedJSON(field string, value any) ([]byte, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("simulate: %s: %w", field, err)
	}
	sig, err := i.keys["tcb-signing"].signRaw(raw)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `{"%s":%s,"signature":"%s"}`, field, raw, hex.EncodeToString(sig)), nil
}

// JSON layouts of Intel's TDX TCB info (version 3) and QE identity
// (version 2), field order as Intel serves them.
type (
	tcbComponent struct {
		SVN uint8 `json:"svn"`
	}
	tcbJSON struct {
		SGX    []tcbComponent `json:"sgxtcbcomponents,omitempty"`
		PCESVN *uint16        `json:"pcesvn,omitempty"`
		TDX    []tcbComponent `json:"tdxtcbcomponents,omitempty"`
		ISVSVN *uint16        `json:"isvsvn,omitempty"`
	}
	tcbLevelJSON struct {
		TCB        tcbJSON  `json:"tcb"`
		Date       string   `json:"tcbDate"`
		Status     string   `json:"tcbStatus"`
		Advisories []string `json:"advisoryIDs,omitempty"`
	}
	tdxModuleJSON struct {
		MRSigner       string `json:"mrsigner"`
		Attributes     string `json:"attributes"`
		AttributesMask string `json:"attributesMask"`
	}
	tdxModuleIdentityJSON struct {
		ID string `json:"id"`
		tdxModuleJSON
		TCBLevels []tcbLevelJSON `json:"tcbLevels"`
	}
	tcbInfoBody struct {
		ID                  string                  `json:"id"`
		Version             int                     `json:"version"`
		IssueDate           string                  `json:"issueDate"`
		NextUpdate          string                  `json:"nextUpdate"`
		FMSPC               string                  `json:"fmspc"`
		PCEID               string                  `json:"pceId"`
		TCBType             int                     `json:"tcbType"`
		TCBEvaluation       int                     `json:"tcbEvaluationDataNumber"`
		TDXModule           tdxModuleJSON           `json:"tdxModule"`
		TDXModuleIdentities []tdxModuleIdentityJSON `json:"tdxModuleIdentities"`
		TCBLevels           []tcbLevelJSON          `json:"tcbLevels"`
	}
	qeIdentityBody struct {
		ID             string         `json:"id"`
		Version        int            `json:"version"`
		IssueDate      string         `json:"issueDate"`
		NextUpdate     string         `json:"nextUpdate"`
		TCBEvaluation  int            `json:"tcbEvaluationDataNumber"`
		MiscSelect     string         `json:"miscselect"`
		MiscSelectMask string         `json:"miscselectMask"`
		Attributes     string         `json:"attributes"`
		AttributesMask string         `json:"attributesMask"`
		MRSigner       string         `json:"mrsigner"`
		ISVProdID      int            `json:"isvprodid"`
		TCBLevels      []tcbLevelJSON `json:"tcbLevels"`
	}
)

const tcbEvaluationDataNumber = 17

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func components(svns [16]byte) []tcbComponent {
	out := make([]tcbComponent, len(svns))
	for n, s := range svns {
		out[n] = tcbComponent{SVN: s}
	}
	return out
}

// intelModule is the TDX module signer and attributes Intel publishes:
// zero MRSIGNERSEAM and SEAM attributes, under a full mask.
var intelModule = tdxModuleJSON{
	MRSigner:       strings.Repeat("0", 96),
	Attributes:     "0000000000000000",
	AttributesMask: "FFFFFFFFFFFFFFFF",
}

func tcbInfoJSON(fmspc string, now, next time.Time, levels []TCBLevel, modLevels []ModuleLevel) tcbInfoBody {
	ti := tcbInfoBody{
		ID: "TDX", Version: 3, IssueDate: stamp(now), NextUpdate: stamp(next),
		FMSPC: fmspc, PCEID: "0000", TCBType: 0, TCBEvaluation: tcbEvaluationDataNumber,
		TDXModule: intelModule,
	}
	mod := tdxModuleIdentityJSON{ID: "TDX_01", tdxModuleJSON: intelModule}
	for _, l := range modLevels {
		svn := uint16(l.ISVSVN)
		mod.TCBLevels = append(mod.TCBLevels, tcbLevelJSON{TCB: tcbJSON{ISVSVN: &svn}, Date: stamp(l.Date), Status: l.Status, Advisories: l.Advisories})
	}
	ti.TDXModuleIdentities = []tdxModuleIdentityJSON{mod}
	for _, l := range levels {
		pce := l.TCB.PCESVN
		ti.TCBLevels = append(ti.TCBLevels, tcbLevelJSON{
			TCB:  tcbJSON{SGX: components(l.TCB.SGX), PCESVN: &pce, TDX: components(l.TCB.TDX)},
			Date: stamp(l.Date), Status: l.Status, Advisories: l.Advisories,
		})
	}
	return ti
}

func qeIdentityJSON(now, next time.Time, outOfDate bool) qeIdentityBody {
	upToDate := DefaultQESVN
	if outOfDate {
		upToDate = DefaultQESVN + 1
	}
	old := uint16(2)
	return qeIdentityBody{
		ID: "TD_QE", Version: 2, IssueDate: stamp(now), NextUpdate: stamp(next), TCBEvaluation: tcbEvaluationDataNumber,
		MiscSelect: "00000000", MiscSelectMask: "FFFFFFFF",
		Attributes:     "11000000000000000000000000000000",
		AttributesMask: "FBFFFFFFFFFFFFFF0000000000000000",
		MRSigner:       strings.ToUpper(hex.EncodeToString(qeMRSigner)),
		ISVProdID:      qeProdID,
		TCBLevels: []tcbLevelJSON{
			{TCB: tcbJSON{ISVSVN: &upToDate}, Date: stamp(time.Date(2025, 2, 12, 0, 0, 0, 0, time.UTC)), Status: "UpToDate"},
			{TCB: tcbJSON{ISVSVN: &old}, Date: stamp(time.Date(2018, 1, 4, 0, 0, 0, 0, time.UTC)), Status: "OutOfDate", Advisories: []string{"INTEL-SA-SIM-0005"}},
		},
	}
}
