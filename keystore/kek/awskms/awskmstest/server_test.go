package awskmstest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/attested-kms/attested-kms/keystore/kek/awskms/awskmstest"
)

// call sends one KMS request, signed as the SDK signs it unless tamper
// changes the request after signing, and returns the status and __type.
func call(t *testing.T, s *awskmstest.Server, creds aws.Credentials, target string, body any, at time.Time, tamper func(*http.Request)) (int, string, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.URL+"/", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+target)
	sum := sha256.Sum256(b)
	if creds.AccessKeyID != "" {
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", awskmstest.Region, at); err != nil {
			t.Fatal(err)
		}
	}
	if tamper != nil {
		tamper(req)
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response is not JSON: %q", raw)
	}
	typ, _ := out["__type"].(string)
	return resp.StatusCode, typ, out
}

func TestSigV4(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey}
	body := map[string]any{"KeyId": key.ARN(), "Plaintext": base64.StdEncoding.EncodeToString([]byte("data key"))}
	now := time.Now()

	if status, typ, out := call(t, s, creds, "Encrypt", body, now, nil); status != 200 || typ != "" || out["KeyId"] != key.ARN() {
		t.Fatalf("signed request: %d %q %v", status, typ, out)
	}
	for name, tc := range map[string]struct {
		creds  aws.Credentials
		at     time.Time
		tamper func(*http.Request)
		want   string
	}{
		"unsigned":       {want: "MissingAuthenticationTokenException"},
		"wrong secret":   {creds: aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: "x"}, at: now, want: "InvalidSignatureException"},
		"unknown key id": {creds: aws.Credentials{AccessKeyID: "AKIAOTHER", SecretAccessKey: "x"}, at: now, want: "UnrecognizedClientException"},
		"stale date":     {creds: creds, at: now.Add(-10 * time.Minute), want: "InvalidSignatureException"},
		"body changed": {creds: creds, at: now, tamper: func(r *http.Request) {
			b := []byte(`{"KeyId":"` + key.ARN() + `","Plaintext":"b3RoZXI="}`)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}, want: "InvalidSignatureException"},
		"target changed": {creds: creds, at: now, tamper: func(r *http.Request) {
			r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
		}, want: "InvalidSignatureException"},
		"malformed header": {creds: creds, at: now, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
		}, want: "IncompleteSignatureException"},
	} {
		if status, typ, _ := call(t, s, tc.creds, "Encrypt", body, tc.at, tc.tamper); status != 400 || typ != tc.want {
			t.Errorf("%s: %d %q, want 400 %q", name, status, typ, tc.want)
		}
	}
	if n := s.Calls("Encrypt"); n != 1 {
		t.Fatalf("unauthenticated requests counted as calls: %d", n)
	}
}

func TestKMSSemantics(t *testing.T) {
	s := awskmstest.NewServer(t)
	key, other := s.CreateKey(t), s.CreateKey(t)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey}
	now := time.Now()
	ec := map[string]string{"associatedData": "00ff"}
	_, _, out := call(t, s, creds, "Encrypt", map[string]any{"KeyId": key.ARN(), "Plaintext": base64.StdEncoding.EncodeToString([]byte("dek")), "EncryptionContext": ec}, now, nil)
	blob := out["CiphertextBlob"].(string)

	decrypt := func(body map[string]any) (int, string, map[string]any) {
		return call(t, s, creds, "Decrypt", body, now, nil)
	}
	// Without KeyId KMS finds the key in the blob.
	if status, _, out := decrypt(map[string]any{"CiphertextBlob": blob, "EncryptionContext": ec}); status != 200 || out["Plaintext"] != base64.StdEncoding.EncodeToString([]byte("dek")) {
		t.Fatalf("decrypt: %d %v", status, out)
	}
	for name, tc := range map[string]struct {
		body map[string]any
		want string
	}{
		"no context":    {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": blob}, "InvalidCiphertextException"},
		"other context": {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": blob, "EncryptionContext": map[string]string{"associatedData": "00fe"}}, "InvalidCiphertextException"},
		"extra context": {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": blob, "EncryptionContext": map[string]string{"associatedData": "00ff", "x": ""}}, "InvalidCiphertextException"},
		"other key":     {map[string]any{"KeyId": other.ARN(), "CiphertextBlob": blob, "EncryptionContext": ec}, "IncorrectKeyException"},
		"unknown key":   {map[string]any{"KeyId": "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-000000000000", "CiphertextBlob": blob, "EncryptionContext": ec}, "NotFoundException"},
		"other region":  {map[string]any{"KeyId": "arn:aws:kms:us-east-1:111122223333:key/" + key.ID(), "CiphertextBlob": blob, "EncryptionContext": ec}, "NotFoundException"},
		"garbage":       {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": base64.StdEncoding.EncodeToString([]byte("not a blob")), "EncryptionContext": ec}, "InvalidCiphertextException"},
		"RSA algorithm": {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": blob, "EncryptionContext": ec, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, "InvalidKeyUsageException"},
		"empty blob":    {map[string]any{"KeyId": key.ARN(), "CiphertextBlob": "", "EncryptionContext": ec}, "ValidationException"},
	} {
		if status, typ, _ := decrypt(tc.body); status != 400 || typ != tc.want {
			t.Errorf("%s: %d %q, want 400 %q", name, status, typ, tc.want)
		}
	}

	key.Disable(t)
	if _, typ, _ := decrypt(map[string]any{"KeyId": key.ARN(), "CiphertextBlob": blob, "EncryptionContext": ec}); typ != "DisabledException" {
		t.Errorf("disabled key: %q", typ)
	}
	key.Enable(t)
	key.ScheduleDeletion(t)
	if _, typ, _ := decrypt(map[string]any{"CiphertextBlob": blob, "EncryptionContext": ec}); typ != "KMSInvalidStateException" {
		t.Errorf("key pending deletion: %q", typ)
	}
	key.CancelDeletion(t)
	key.Enable(t)
	key.RevokeAccess(t)
	if _, typ, _ := decrypt(map[string]any{"CiphertextBlob": blob, "EncryptionContext": ec}); typ != "AccessDeniedException" {
		t.Errorf("access revoked: %q", typ)
	}
	key.GrantAccess(t)
	key.DeleteNow(t)
	if _, typ, _ := decrypt(map[string]any{"CiphertextBlob": blob, "EncryptionContext": ec}); typ != "NotFoundException" {
		t.Errorf("deleted key: %q", typ)
	}
}
