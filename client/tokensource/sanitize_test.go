package tokensource

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	long := strings.Repeat("é", maxDescriptionBytes) // 2 bytes per rune
	got := sanitize(long, nil)
	if !utf8.ValidString(got) || len(got) > maxDescriptionBytes+len("…") {
		t.Errorf("truncation: len %d, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
	got = sanitize("bad assertion hunter2 and eyJhbGc.eyJzdWIi.c2ln\r\nInjected: yes", []string{"hunter2"})
	if strings.Contains(got, "hunter2") || strings.Contains(got, "eyJ") || strings.ContainsAny(got, "\r\n") {
		t.Errorf("sanitize left a secret or control character: %q", got)
	}
}
