package hcvault

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// TestClassify pins the mapping from Vault's answers (status and message,
// in Vault's wording) to exactly one kek class.
func TestClassify(t *testing.T) {
	classes := []error{kek.ErrUnavailable, kek.ErrAuthentication, kek.ErrUnsupported, kek.ErrKeyDisabled}
	for _, tc := range []struct {
		o      op
		status int
		msg    string
		want   error
	}{
		{opDecrypt, 403, "permission denied", kek.ErrKeyDisabled},
		{opEncrypt, 403, "permission denied", kek.ErrKeyDisabled},
		{opEncrypt, 401, "", kek.ErrKeyDisabled},
		{opEncrypt, 404, `no handler for route "transit/encrypt/k". route entry not found.`, kek.ErrKeyDisabled},
		{opDecrypt, 400, "encryption key not found", kek.ErrKeyDisabled},
		{opDecrypt, 400, "ciphertext or signature version is disallowed by policy (too old)", kek.ErrKeyDisabled},
		{opDecrypt, 400, "cipher: message authentication failed", kek.ErrAuthentication},
		{opDecrypt, 400, "chacha20poly1305: message authentication failed", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext: no prefix", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext: wrong number of fields", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext: version number could not be decoded", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext: version is too new", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext: could not decode base64", kek.ErrAuthentication},
		{opDecrypt, 400, "invalid ciphertext length", kek.ErrAuthentication},
		{opDecrypt, 400, "missing ciphertext to decrypt", kek.ErrAuthentication},
		{opDecrypt, 400, "'[0].associated_data' provided for non-AEAD cipher suite rsa-2048", kek.ErrUnsupported},
		{opEncrypt, 400, "'[0].associated_data' provided for non-AEAD cipher suite ed25519", kek.ErrUnsupported},
		{opEncrypt, 400, "message encryption not supported for key type ecdsa-p256", kek.ErrUnsupported},
		// Encrypt never reports tampering.
		{opEncrypt, 400, "invalid ciphertext: no prefix", kek.ErrUnavailable},
		{opEncrypt, 400, "something new", kek.ErrUnavailable},
		{opDecrypt, 429, `request path "transit/decrypt/k": rate limit quota exceeded`, kek.ErrUnavailable},
		{opDecrypt, 503, "Vault is sealed", kek.ErrUnavailable},
		{opDecrypt, 500, "internal error", kek.ErrUnavailable},
		{opDecrypt, 502, "", kek.ErrUnavailable},
		{opDecrypt, 412, "", kek.ErrUnavailable},
		{opLogin, 400, `invalid role name "kms"`, kek.ErrKeyDisabled},
		{opLogin, 403, "permission denied", kek.ErrKeyDisabled},
		{opLogin, 400, "missing jwt", kek.ErrUnavailable},
		{opLogin, 503, "Vault is sealed", kek.ErrUnavailable},
	} {
		err := classify(context.Background(), tc.o, "test", &api.ResponseError{StatusCode: tc.status, Errors: []string{tc.msg}})
		n := 0
		for _, c := range classes {
			if errors.Is(err, c) {
				n++
			}
		}
		if !errors.Is(err, tc.want) || n != 1 {
			t.Errorf("%s %d %q: %v, want only %v", tc.o, tc.status, tc.msg, err, tc.want)
		}
	}

	// Transport failures.
	err := classify(context.Background(), opDecrypt, "test", &url.Error{Op: "Put", URL: "https://v/v1/transit/decrypt/k", Err: syscall.ECONNREFUSED})
	if !errors.Is(err, kek.ErrUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connection refused: %v", err)
	}

	// Long or non-JSON bodies are not copied into errors.
	long := strings.Repeat("x", 10_000)
	err = classify(context.Background(), opDecrypt, "test", &api.ResponseError{StatusCode: 502, RawError: true, Errors: []string{"<html>" + long}})
	if strings.Contains(err.Error(), "<html>") {
		t.Errorf("raw body copied: %v", err)
	}
	err = classify(context.Background(), opDecrypt, "test", &api.ResponseError{StatusCode: 500, Errors: []string{long}})
	if len(err.Error()) > 2*maxDetail {
		t.Errorf("error not bounded: %d bytes", len(err.Error()))
	}
}

func TestCiphertextVersion(t *testing.T) {
	for ct, want := range map[string]string{
		"vault:v1:AAAA":           "1",
		"vault:v12:AAAA":          "12",
		"vault:v:AAAA":            "",
		"vault:v1:":               "",
		"vault:vx:AAAA":           "",
		"vault:v-1:AAAA":          "",
		"vault:v1":                "",
		"vault1:AAAA":             "",
		"":                        "",
		"vault:v99999999999:AAAA": "",
	} {
		got, ok := ciphertextVersion(ct)
		if got != want || ok != (want != "") {
			t.Errorf("ciphertextVersion(%q) = %q, %v; want %q", ct, got, ok, want)
		}
	}
}
