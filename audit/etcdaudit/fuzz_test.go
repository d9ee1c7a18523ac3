package etcdaudit

import "testing"

// FuzzParseSeq: key suffixes and head values come from etcd, which anyone
// with write access can fill; parseSeq must accept exactly formatSeq's
// output.
func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"00000000000000000001", "18446744073709551615", "18446744073709551616", "+0000000000000000001", "1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, ok := parseSeq(s)
		if ok != (formatSeq(seq) == s) {
			t.Fatalf("parseSeq(%q) = %d, %v, but formatSeq(%d) = %q", s, seq, ok, seq, formatSeq(seq))
		}
	})
}
