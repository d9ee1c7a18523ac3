package ohttp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	stdhpke "crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"

	"github.com/attested-kms/attested-kms/hpke"
	circl "github.com/cloudflare/circl/hpke"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// RFC 9458 Appendix A: X25519/HKDF-SHA256 with AES-128-GCM (the key
// configuration offers AES-128-GCM and ChaCha20Poly1305). The appendix gives
// the ephemeral private key rather than a DeriveKeyPair seed, so the client
// side of the request cannot be reproduced byte for byte through an HPKE
// library that derives ephemeral keys from seeds; the gateway side and the
// whole response are.
const (
	a9458SkR        = "3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a"
	a9458KeyConfig  = "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003"
	a9458Request    = "00034745540568747470730b6578616d706c652e636f6d012f"
	a9458SkE        = "bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73"
	a9458PkE        = "4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472"
	a9458Info       = "6d6573736167652f626874747020726571756573740001002000010001"
	a9458EncRequest = "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472" +
		"6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525"
	a9458Response      = "0140c8"
	a9458Secret        = "62d87a6ba569ee81014c2641f52bea36"
	a9458ResponseNonce = "c789e7151fcba46158ca84b04464910d"
	a9458AEADKey       = "5d0172a080e428b16d298c4ea0db620d"
	a9458AEADNonce     = "f6bf1aeb88d6df87007fa263"
	a9458EncResponse   = "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f857fbd"
)

var (
	aes128 = SymmetricAlgorithm{KDFID: 1, AEADID: 1}
	chacha = SymmetricAlgorithm{KDFID: 1, AEADID: 3}
)

func TestRFC9458AppendixA(t *testing.T) {
	skR := mustHex(t, a9458SkR)
	var cfg KeyConfig
	if err := cfg.UnmarshalBinary(mustHex(t, a9458KeyConfig)); err != nil {
		t.Fatal(err)
	}
	if cfg.KeyID != 1 || cfg.KEMID != 0x20 || len(cfg.Algorithms) != 2 || cfg.Algorithms[0] != aes128 || cfg.Algorithms[1] != chacha {
		t.Fatalf("parsed config = %+v", cfg)
	}
	if pub, _ := hpke.PublicFromPrivate(skR); !bytes.Equal(pub, cfg.PublicKey) {
		t.Fatal("skR does not give the configuration's public key")
	}
	if pkE, _ := hpke.PublicFromPrivate(mustHex(t, a9458SkE)); hex.EncodeToString(pkE) != a9458PkE {
		t.Fatal("skE does not give pkE")
	}
	if b, err := cfg.MarshalBinary(); err != nil || hex.EncodeToString(b) != a9458KeyConfig {
		t.Fatalf("MarshalBinary = %x, %v", b, err)
	}
	list, err := MarshalKeyConfigs([]KeyConfig{cfg})
	if err != nil || hex.EncodeToString(list) != "002d"+a9458KeyConfig {
		t.Fatalf("MarshalKeyConfigs = %x, %v", list, err)
	}
	if cfgs, err := ParseKeyConfigs(list); err != nil || len(cfgs) != 1 || cfgs[0].KeyID != 1 {
		t.Fatalf("ParseKeyConfigs = %+v, %v", cfgs, err)
	}

	alg, _ := newAlgorithm(aes128)
	if _, info := alg.header(1); hex.EncodeToString(info) != a9458Info {
		t.Fatalf("info = %x", info)
	}

	gw, err := NewGatewayKeyForConfig(cfg, skR)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := PeekKeyID(mustHex(t, a9458EncRequest)); err != nil || id != 1 {
		t.Fatalf("PeekKeyID = %d, %v", id, err)
	}
	req, rc, err := gw.DecapsulateRequest(mustHex(t, a9458EncRequest))
	if err != nil || hex.EncodeToString(req) != a9458Request {
		t.Fatalf("DecapsulateRequest = %x, %v", req, err)
	}
	if secret := rc.ctx.Export([]byte(responseLabel), 16); hex.EncodeToString(secret) != a9458Secret {
		t.Fatalf("exported secret = %x", secret)
	}
	aead, nonce, err := rc.alg.responseAEAD(mustHex(t, a9458Secret), mustHex(t, a9458PkE), mustHex(t, a9458ResponseNonce))
	if err != nil || hex.EncodeToString(nonce) != a9458AEADNonce {
		t.Fatalf("response nonce = %x, %v", nonce, err)
	}
	// The derived key is internal to cipher.AEAD; check it by sealing with
	// the published key through crypto/aes directly.
	block, _ := aes.NewCipher(mustHex(t, a9458AEADKey))
	ref, _ := cipher.NewGCM(block)
	if !bytes.Equal(aead.Seal(nil, nonce, []byte("x"), nil), ref.Seal(nil, nonce, []byte("x"), nil)) {
		t.Fatal("response AEAD key differs from the published one")
	}

	// response_nonce comes from the reader, so the response is reproducible.
	resp, err := rc.SealResponse(bytes.NewReader(mustHex(t, a9458ResponseNonce)), mustHex(t, a9458Response))
	if err != nil || hex.EncodeToString(resp) != a9458EncResponse {
		t.Fatalf("SealResponse = %x, %v\nwant             %s", resp, err, a9458EncResponse)
	}

	// The client of the appendix, reconstructed from its exported secret.
	client := &ClientContext{alg: alg, enc: mustHex(t, a9458PkE), secret: mustHex(t, a9458Secret)}
	if got, err := client.OpenResponse(mustHex(t, a9458EncResponse)); err != nil || hex.EncodeToString(got) != a9458Response {
		t.Fatalf("OpenResponse = %x, %v", got, err)
	}

	// A gateway that offers only the KMS suite refuses the AES-128-GCM request.
	strict, err := NewGatewayKey(1, skR)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := strict.DecapsulateRequest(mustHex(t, a9458EncRequest)); !errors.Is(err, ErrUnsupportedSuite) {
		t.Fatalf("KMS-suite gateway: %v, want ErrUnsupportedSuite", err)
	}
	// And a client holding the appendix configuration cannot use the KMS
	// suite with it, but the parameterised path runs the appendix suites.
	if _, _, err := EncapsulateRequest(nil, cfg, []byte("x")); !errors.Is(err, ErrUnsupportedSuite) {
		t.Fatalf("EncapsulateRequest to the appendix config: %v, want ErrUnsupportedSuite", err)
	}
	for _, a := range cfg.Algorithms {
		enc, cc, err := encapsulate(nil, cfg, a, mustHex(t, a9458Request))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc[:7], append([]byte{1, 0, 0x20}, byte(a.KDFID>>8), byte(a.KDFID), byte(a.AEADID>>8), byte(a.AEADID))) {
			t.Fatalf("header = %x", enc[:7])
		}
		req, rc, err := gw.DecapsulateRequest(enc)
		if err != nil || hex.EncodeToString(req) != a9458Request {
			t.Fatalf("%+v: DecapsulateRequest = %x, %v", a, req, err)
		}
		resp, _ := rc.SealResponse(nil, mustHex(t, a9458Response))
		if got, err := cc.OpenResponse(resp); err != nil || hex.EncodeToString(got) != a9458Response {
			t.Fatalf("%+v: OpenResponse = %x, %v", a, got, err)
		}
	}
}

func newTestGateway(tb testing.TB, keyID uint8) (*GatewayKey, *hpke.KeyPair) {
	tb.Helper()
	kp, err := hpke.GenerateKeyPair(nil)
	if err != nil {
		tb.Fatal(err)
	}
	gw, err := NewGatewayKey(keyID, kp.Private)
	if err != nil {
		tb.Fatal(err)
	}
	return gw, kp
}

func TestRoundTrip(t *testing.T) {
	gw, kp := newTestGateway(t, 7)
	cfg := gw.Config()
	if cfg.KeyID != 7 || cfg.KEMID != hpke.KEMID || !bytes.Equal(cfg.PublicKey, kp.Public) || len(cfg.Algorithms) != 1 || cfg.Algorithms[0] != DefaultAlgorithm() {
		t.Fatalf("Config = %+v", cfg)
	}
	cfg.PublicKey[0] ^= 1 // Config must hand out a copy
	if gw.Config().PublicKey[0] == cfg.PublicKey[0] {
		t.Fatal("Config aliases the gateway's public key")
	}

	request := bytes.Repeat([]byte("GET /v1/thing "), 50)
	enc, cc, err := EncapsulateRequest(nil, gw.Config(), request)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != 7+32+len(request)+16 {
		t.Fatalf("encapsulated request is %d bytes", len(enc))
	}
	req, rc, err := gw.DecapsulateRequest(enc)
	if err != nil || !bytes.Equal(req, request) {
		t.Fatalf("DecapsulateRequest: %v", err)
	}
	response := []byte("HTTP/1.1 200 OK")
	resp, err := rc.SealResponse(nil, response)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) != 32+len(response)+16 {
		t.Fatalf("response is %d bytes; response_nonce must be max(Nn, Nk) = 32 for AES-256-GCM", len(resp))
	}
	if got, err := cc.OpenResponse(resp); err != nil || !bytes.Equal(got, response) {
		t.Fatalf("OpenResponse = %q, %v", got, err)
	}

	// Tampering anywhere in the request fails, with the error for the part hit.
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 0x01
		_, _, err := gw.DecapsulateRequest(bad)
		var want error
		switch {
		case i == 0:
			want = ErrUnknownKeyID
		case i < 7:
			want = ErrUnsupportedSuite
		default:
			want = ErrDecrypt
		}
		if !errors.Is(err, want) {
			t.Fatalf("request byte %d flipped: %v, want %v", i, err, want)
		}
	}
	for i := range resp {
		bad := bytes.Clone(resp)
		bad[i] ^= 0x01
		if _, err := cc.OpenResponse(bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("response byte %d flipped: %v", i, err)
		}
	}
	if _, err := cc.OpenResponse(resp[:47]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short response: %v", err)
	}
	// A response to one request does not open as the response to another.
	_, cc2, _ := EncapsulateRequest(nil, gw.Config(), request)
	if _, err := cc2.OpenResponse(resp); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("cross-request response: %v", err)
	}
	// Another gateway key with the same key ID cannot open it.
	other, _ := newTestGateway(t, 7)
	if _, _, err := other.DecapsulateRequest(enc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other key: %v", err)
	}
	// Low-order ephemeral keys are refused, not decrypted with a zero secret.
	for _, e := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...)} {
		bad := append(append(bytes.Clone(enc[:7]), e...), enc[39:]...)
		if _, _, err := gw.DecapsulateRequest(bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("low-order enc: %v", err)
		}
	}
	for _, n := range []int{0, 6, 7, 38, 54} {
		if _, _, err := gw.DecapsulateRequest(enc[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%d-byte request: %v, want ErrMalformed", n, err)
		}
	}
	if _, err := PeekKeyID(enc[:6]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("PeekKeyID(short): %v", err)
	}
}

func TestEncapsulateRequestRejects(t *testing.T) {
	gw, _ := newTestGateway(t, 1)
	cfg := gw.Config()
	low := cfg
	low.PublicKey = make([]byte, 32)
	if _, _, err := EncapsulateRequest(nil, low, []byte("x")); !errors.Is(err, hpke.ErrLowOrderKey) {
		t.Errorf("low-order key: %v", err)
	}
	otherKEM := cfg
	otherKEM.KEMID = 0x10
	if _, _, err := EncapsulateRequest(nil, otherKEM, []byte("x")); !errors.Is(err, ErrUnsupportedSuite) {
		t.Errorf("P-256 KEM: %v", err)
	}
	noSuite := cfg
	noSuite.Algorithms = []SymmetricAlgorithm{aes128}
	if _, _, err := EncapsulateRequest(nil, noSuite, []byte("x")); !errors.Is(err, ErrUnsupportedSuite) {
		t.Errorf("AES-128 only: %v", err)
	}
	if _, err := NewGatewayKeyForConfig(noSuite, make([]byte, 32)); err == nil {
		t.Error("private key that does not match the configuration accepted")
	}
	if _, err := NewGatewayKey(1, make([]byte, 31)); !errors.Is(err, hpke.ErrInvalidKey) {
		t.Errorf("31-byte private key: %v", err)
	}
	kp, _ := hpke.GenerateKeyPair(nil)
	exportOnly := KeyConfig{KeyID: 1, KEMID: hpke.KEMID, PublicKey: kp.Public, Algorithms: []SymmetricAlgorithm{{1, 0xffff}}}
	if _, err := NewGatewayKeyForConfig(exportOnly, kp.Private); !errors.Is(err, ErrUnsupportedSuite) {
		t.Errorf("export-only AEAD: %v", err)
	}
}

// Go's crypto/hpke is the independent peer; the response side is computed
// here from RFC 9458 section 4.4 with crypto/hkdf and crypto/aes.
func TestStdlibInterop(t *testing.T) {
	kem := stdhpke.DHKEM(ecdh.X25519())
	sk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := sk.Bytes()
	gw, err := NewGatewayKey(0x2a, priv)
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{0x2a, 0x00, 0x20, 0x00, 0x01, 0x00, 0x02}
	info := append([]byte("message/bhttp request\x00"), hdr...)
	request, response := []byte("a binary HTTP request"), []byte("a binary HTTP response")

	stdResponseKey := func(t *testing.T, secret, enc, nonce []byte) (cipher.AEAD, []byte) {
		t.Helper()
		salt := append(bytes.Clone(enc), nonce...)
		prk, err := hkdf.Extract(sha256.New, secret, salt)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := hkdf.Expand(sha256.New, prk, "key", 32)
		aeadNonce, _ := hkdf.Expand(sha256.New, prk, "nonce", 12)
		block, _ := aes.NewCipher(key)
		aead, _ := cipher.NewGCM(block)
		return aead, aeadNonce
	}

	t.Run("ours to stdlib", func(t *testing.T) {
		encReq, cc, err := EncapsulateRequest(nil, gw.Config(), request)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encReq[:7], hdr) {
			t.Fatalf("header = %x", encReq[:7])
		}
		enc := encReq[7:39]
		r, err := stdhpke.NewRecipient(enc, sk, stdhpke.HKDFSHA256(), stdhpke.AES256GCM(), info)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Open(nil, encReq[39:])
		if err != nil || !bytes.Equal(got, request) {
			t.Fatalf("stdlib Open = %q, %v", got, err)
		}
		secret, _ := r.Export("message/bhttp response", 32)
		nonce := bytes.Repeat([]byte{0x99}, 32)
		aead, aeadNonce := stdResponseKey(t, secret, enc, nonce)
		encResp := aead.Seal(nonce, aeadNonce, response, nil)
		if got, err := cc.OpenResponse(encResp); err != nil || !bytes.Equal(got, response) {
			t.Fatalf("OpenResponse = %q, %v", got, err)
		}
	})
	t.Run("stdlib to ours", func(t *testing.T) {
		enc, s, err := stdhpke.NewSender(sk.PublicKey(), stdhpke.HKDFSHA256(), stdhpke.AES256GCM(), info)
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := s.Seal(nil, request)
		got, rc, err := gw.DecapsulateRequest(append(append(bytes.Clone(hdr), enc...), ct...))
		if err != nil || !bytes.Equal(got, request) {
			t.Fatalf("DecapsulateRequest = %q, %v", got, err)
		}
		encResp, err := rc.SealResponse(nil, response)
		if err != nil {
			t.Fatal(err)
		}
		secret, _ := s.Export("message/bhttp response", 32)
		aead, aeadNonce := stdResponseKey(t, secret, enc, encResp[:32])
		if got, err := aead.Open(nil, aeadNonce, encResp[32:], nil); err != nil || !bytes.Equal(got, response) {
			t.Fatalf("stdlib open of our response = %q, %v", got, err)
		}
	})
}

func TestKeyConfigParsing(t *testing.T) {
	good := mustHex(t, a9458KeyConfig)
	gw, _ := newTestGateway(t, 9)
	mine, _ := gw.Config().MarshalBinary()
	prefixed := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, byte(len(p)>>8), byte(len(p)))
			out = append(out, p...)
		}
		return out
	}
	withByte := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	p256 := append([]byte{3, 0x00, 0x10}, make([]byte, 65+2+4)...)

	single := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"trailing byte", append(bytes.Clone(good), 0), ErrMalformed},
		{"no algorithms", append(bytes.Clone(good[:35]), 0, 0), ErrMalformed},
		{"odd algorithm length", withByte(good, 36, 6), ErrMalformed},
		{"unknown KEM", withByte(good, 2, 0x21), ErrUnsupportedSuite},
		{"low-order key", append(append(bytes.Clone(good[:3]), make([]byte, 32)...), good[35:]...), hpke.ErrLowOrderKey},
	}
	for _, c := range single {
		var cfg KeyConfig
		if err := cfg.UnmarshalBinary(c.b); !errors.Is(err, c.want) {
			t.Errorf("UnmarshalBinary(%s) = %v, want %v", c.name, err, c.want)
		}
	}

	lists := []struct {
		name string
		b    []byte
		ids  []uint8
		want error
	}{
		{"two", prefixed(good, mine), []uint8{1, 9}, nil},
		{"unknown KEM skipped", prefixed(p256, mine), []uint8{9}, nil},
		{"only unknown KEMs", prefixed(p256), nil, ErrUnsupportedSuite},
		{"empty", nil, nil, ErrMalformed},
		{"odd byte", []byte{0}, nil, ErrMalformed},
		{"prefix overruns", append([]byte{0, 46}, good...), nil, ErrMalformed},
		{"trailing byte", append(prefixed(good), 0), nil, ErrMalformed},
		{"one bad of two", prefixed(mine, good[:40]), nil, ErrMalformed},
		{"zero-length entry", prefixed(mine, nil), nil, ErrMalformed},
	}
	for _, c := range lists {
		cfgs, err := ParseKeyConfigs(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("ParseKeyConfigs(%s) = %v, want %v", c.name, err, c.want)
			continue
		}
		var ids []uint8
		for _, cfg := range cfgs {
			ids = append(ids, cfg.KeyID)
		}
		if !bytes.Equal(ids, c.ids) {
			t.Errorf("ParseKeyConfigs(%s) key IDs = %v, want %v", c.name, ids, c.ids)
		}
	}

	if b, err := MarshalKeyConfigs(nil); err != nil || len(b) != 0 {
		t.Errorf("MarshalKeyConfigs(nil) = %x, %v", b, err)
	}
	bad := gw.Config()
	bad.Algorithms = nil
	if _, err := MarshalKeyConfigs([]KeyConfig{gw.Config(), bad}); !errors.Is(err, ErrMalformed) {
		t.Errorf("config without algorithms marshalled: %v", err)
	}
	bad = gw.Config()
	bad.PublicKey = bad.PublicKey[:31]
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("short public key marshalled: %v", err)
	}
}

// GatewayKey promises concurrent use; run with -race to check it.
func TestGatewayKeyConcurrent(t *testing.T) {
	gw, _ := newTestGateway(t, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				enc, cc, err := EncapsulateRequest(nil, gw.Config(), []byte("req"))
				if err != nil {
					t.Error(err)
					return
				}
				_, rc, err := gw.DecapsulateRequest(enc)
				if err != nil {
					t.Error(err)
					return
				}
				resp, _ := rc.SealResponse(nil, []byte("resp"))
				if _, err := cc.OpenResponse(resp); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzParseKeyConfigs(f *testing.F) {
	f.Add(append([]byte{0, 45}, mustHex(f, a9458KeyConfig)...))
	f.Add([]byte{})
	f.Add([]byte{0, 3, 1, 0, 0x10})
	f.Fuzz(func(t *testing.T, b []byte) {
		cfgs, err := ParseKeyConfigs(b)
		if err != nil {
			return
		}
		// What parses must marshal, and marshal to something that parses to
		// the same configurations.
		out, err := MarshalKeyConfigs(cfgs)
		if err != nil {
			t.Fatalf("parsed configs do not marshal: %v", err)
		}
		again, err := ParseKeyConfigs(out)
		if err != nil || len(again) != len(cfgs) {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range cfgs {
			x, _ := cfgs[i].MarshalBinary()
			y, _ := again[i].MarshalBinary()
			if !bytes.Equal(x, y) {
				t.Fatalf("config %d changed: %x != %x", i, x, y)
			}
		}
	})
}

func FuzzDecapsulateRequest(f *testing.F) {
	kp, err := hpke.GenerateKeyPair(bytes.NewReader(bytes.Repeat([]byte{3}, 32)))
	if err != nil {
		f.Fatal(err)
	}
	cfg := KeyConfig{KeyID: 1, KEMID: hpke.KEMID, PublicKey: kp.Public, Algorithms: []SymmetricAlgorithm{DefaultAlgorithm(), aes128, chacha}}
	gw, err := NewGatewayKeyForConfig(cfg, kp.Private)
	if err != nil {
		f.Fatal(err)
	}
	for _, a := range cfg.Algorithms {
		enc, _, err := encapsulate(nil, cfg, a, []byte("GET / HTTP/1.1"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add(mustHex(f, a9458EncRequest))
	f.Add([]byte{1, 0, 0x20, 0, 1, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, perr := PeekKeyID(b)
		req, rc, err := gw.DecapsulateRequest(b)
		if err != nil {
			if req != nil || rc != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if perr != nil || id != 1 {
			t.Fatalf("decapsulated but PeekKeyID = %d, %v", id, perr)
		}
		if _, err := rc.SealResponse(nil, req); err != nil {
			t.Fatal(err)
		}
	})
}

func benchRequest(b *testing.B) (*GatewayKey, *hpke.KeyPair, []byte) {
	gw, kp := newTestGateway(b, 1)
	// A typical inference request body.
	enc, _, err := EncapsulateRequest(nil, gw.Config(), bytes.Repeat([]byte{'x'}, 1024))
	if err != nil {
		b.Fatal(err)
	}
	return gw, kp, enc
}

// BenchmarkBareHPKEOpen is the floor DecapsulateRequest is measured against:
// circl's open with an already parsed key, on the same message.
func BenchmarkBareHPKEOpen(b *testing.B) {
	_, kp, enc := benchRequest(b)
	suite := circl.NewSuite(circl.KEM_X25519_HKDF_SHA256, circl.KDF_HKDF_SHA256, circl.AEAD_AES256GCM)
	sk, err := circl.KEM_X25519_HKDF_SHA256.Scheme().UnmarshalBinaryPrivateKey(kp.Private)
	if err != nil {
		b.Fatal(err)
	}
	sk.Public()
	info := append([]byte("message/bhttp request\x00"), enc[:7]...)
	for b.Loop() {
		r, err := suite.NewReceiver(sk, info)
		if err != nil {
			b.Fatal(err)
		}
		o, err := r.Setup(enc[7:39])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := o.Open(enc[39:], nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecapsulateRequest(b *testing.B) {
	gw, _, enc := benchRequest(b)
	for b.Loop() {
		if _, _, err := gw.DecapsulateRequest(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncapsulateRequest(b *testing.B) {
	gw, _, _ := benchRequest(b)
	cfg, req := gw.Config(), bytes.Repeat([]byte{'x'}, 1024)
	for b.Loop() {
		if _, _, err := EncapsulateRequest(nil, cfg, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealResponse(b *testing.B) {
	gw, _, enc := benchRequest(b)
	_, rc, err := gw.DecapsulateRequest(enc)
	if err != nil {
		b.Fatal(err)
	}
	resp := bytes.Repeat([]byte{'y'}, 1024)
	for b.Loop() {
		if _, err := rc.SealResponse(nil, resp); err != nil {
			b.Fatal(err)
		}
	}
}
