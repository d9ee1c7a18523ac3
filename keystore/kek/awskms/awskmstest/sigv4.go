package awskmstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sigV4 is a parsed "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
// Signature=..." Authorization header.
type sigV4 struct {
	accessKeyID   string
	date          string // yyyymmdd
	region        string
	service       string
	signedHeaders []string
	signature     string
}

const sigV4Algorithm = "AWS4-HMAC-SHA256"

func parseSigV4(h string) (sigV4, bool) {
	rest, ok := strings.CutPrefix(h, sigV4Algorithm+" ")
	if !ok {
		return sigV4{}, false
	}
	var s sigV4
	var cred, signed string
	for part := range strings.SplitSeq(rest, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return sigV4{}, false
		}
		switch name {
		case "Credential":
			cred = val
		case "SignedHeaders":
			signed = val
		case "Signature":
			s.signature = val
		default:
			return sigV4{}, false
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || signed == "" || len(s.signature) != 64 {
		return sigV4{}, false
	}
	s.accessKeyID, s.date, s.region, s.service = scope[0], scope[1], scope[2], scope[3]
	s.signedHeaders = strings.Split(signed, ";")
	if !slices.IsSorted(s.signedHeaders) {
		return sigV4{}, false
	}
	return s, true
}

func (s sigV4) scope() string {
	return s.date + "/" + s.region + "/" + s.service + "/aws4_request"
}

// expectedSignature recomputes the signature of r and body under secret,
// following the SigV4 canonical request rules for non-S3 services.
func (s sigV4) expectedSignature(r *http.Request, body []byte, amzDate, secret string) string {
	var cr strings.Builder
	cr.WriteString(r.Method + "\n")
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	cr.WriteString(path + "\n")
	cr.WriteString(canonicalQuery(r.URL.Query()) + "\n")
	for _, name := range s.signedHeaders {
		cr.WriteString(name + ":" + headerValue(r, name) + "\n")
	}
	cr.WriteString("\n" + strings.Join(s.signedHeaders, ";") + "\n")
	sum := sha256.Sum256(body)
	cr.WriteString(hex.EncodeToString(sum[:]))

	crSum := sha256.Sum256([]byte(cr.String()))
	toSign := sigV4Algorithm + "\n" + amzDate + "\n" + s.scope() + "\n" + hex.EncodeToString(crSum[:])
	key := hmacSHA256([]byte("AWS4"+secret), s.date)
	key = hmacSHA256(key, s.region)
	key = hmacSHA256(key, s.service)
	key = hmacSHA256(key, "aws4_request")
	return hex.EncodeToString(hmacSHA256(key, toSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// headerValue is the canonical value of a signed header: Go's server keeps
// Host and Content-Length out of r.Header.
func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		if v := r.Header.Get("Content-Length"); v != "" {
			return v
		}
		return strconv.FormatInt(r.ContentLength, 10)
	}
	vals := r.Header.Values(name)
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

func canonicalQuery(q url.Values) string {
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k)+"="+uriEncode(v))
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "&")
}

func uriEncode(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(url.QueryEscape(s), "+", "%20"), "%7E", "~")
}

// checkTime verifies X-Amz-Date: well formed, matching the credential scope
// date, and within the five minutes of skew AWS allows.
func checkTime(amzDate, scopeDate string, now time.Time) bool {
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, scopeDate) {
		return false
	}
	d := now.Sub(t)
	return d < 5*time.Minute && d > -5*time.Minute
}
