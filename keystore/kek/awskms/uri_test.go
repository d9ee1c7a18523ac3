package awskms_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/awskms"
)

const (
	testKeyARN   = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	testAliasARN = "arn:aws:kms:eu-west-1:111122223333:alias/attested-kms/kek"
	testRoleARN  = "arn:aws:iam::111122223333:role/path/attested-kms-kek"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want awskms.KeyURI
	}{
		{"aws-kms://" + testKeyARN, awskms.KeyURI{ARN: testKeyARN, Partition: "aws", Region: "eu-west-1", Account: "111122223333", KeyID: "1234abcd-12ab-34cd-56ef-1234567890ab"}},
		{"aws-kms://" + testAliasARN, awskms.KeyURI{ARN: testAliasARN, Partition: "aws", Region: "eu-west-1", Account: "111122223333", Alias: true, KeyID: "attested-kms/kek"}},
		{"aws-kms://arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
			awskms.KeyURI{ARN: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", Partition: "aws-us-gov", Region: "us-gov-west-1", Account: "111122223333", KeyID: "mrk-1234abcd12ab34cd56ef1234567890ab"}},
		{"aws-kms://" + testKeyARN + "?external_id=ext-1&role_arn=" + testRoleARN,
			awskms.KeyURI{ARN: testKeyARN, Partition: "aws", Region: "eu-west-1", Account: "111122223333", KeyID: "1234abcd-12ab-34cd-56ef-1234567890ab", RoleARN: testRoleARN, ExternalID: "ext-1"}},
	} {
		got, err := awskms.ParseURI(tc.uri)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.uri, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, want %+v", tc.uri, got, tc.want)
		}
		again, err := awskms.ParseURI(got.String())
		if err != nil || again != got {
			t.Errorf("String() %q does not parse back: %+v, %v", got.String(), again, err)
		}
	}
}

func TestParseURIRejects(t *testing.T) {
	for _, uri := range []string{
		"",
		testKeyARN,
		"aws-kms:/" + testKeyARN,
		"AWS-KMS://" + testKeyARN,
		"aws-kms://1234abcd-12ab-34cd-56ef-1234567890ab",
		"aws-kms://alias/kek",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:key/",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:key/not-a-uuid",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:key/1234ABCD-12AB-34CD-56EF-1234567890AB",
		"aws-kms://arn:aws:kms:eu-west-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"aws-kms://arn:aws:kms::111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"aws-kms://arn:aws:s3:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:grant/1234abcd-12ab-34cd-56ef-1234567890ab",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:alias/aws/ebs",
		"aws-kms://arn:aws:kms:eu-west-1:111122223333:alias/bad name",
		"aws-kms://" + testKeyARN + "#frag",
		"aws-kms://" + testKeyARN + "?",
		"aws-kms://" + testKeyARN + "?role_arn=",
		"aws-kms://" + testKeyARN + "?external_id=abc",
		"aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&role_arn=" + testRoleARN,
		"aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&region=us-east-1",
		"aws-kms://" + testKeyARN + "?role_arn=arn:aws:iam::111122223333:user/x",
		"aws-kms://" + testKeyARN + "?role_arn=arn:aws-cn:iam::111122223333:role/x",
		"aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&external_id=a",
		"aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&external_id=" + strings.Repeat("a", 1225),
		"aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&external_id=no%20spaces",
		"aws-kms://" + testKeyARN + "?role_arn=%zz",
	} {
		if k, err := awskms.ParseURI(uri); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want an error", uri, k)
		}
	}
	if _, err := awskms.ParseURI("gcp-kms://x"); !errors.Is(err, kek.ErrUnsupported) {
		t.Errorf("other scheme: err = %v, want ErrUnsupported", err)
	}
}

// FuzzParseURI: whatever parses has a canonical form that parses to the
// same key, names an ARN inside the URI, and never panics.
func FuzzParseURI(f *testing.F) {
	f.Add("aws-kms://" + testKeyARN)
	f.Add("aws-kms://" + testAliasARN)
	f.Add("aws-kms://" + testKeyARN + "?role_arn=" + testRoleARN + "&external_id=ext:1/2")
	f.Add("aws-kms://arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
	f.Fuzz(func(t *testing.T, uri string) {
		k, err := awskms.ParseURI(uri)
		if err != nil {
			return
		}
		if !strings.HasPrefix(uri, "aws-kms://"+k.ARN) || !strings.HasPrefix(k.ARN, "arn:"+k.Partition+":kms:"+k.Region+":"+k.Account+":") {
			t.Fatalf("ParseURI(%q) = %+v: fields do not come from the URI", uri, k)
		}
		again, err := awskms.ParseURI(k.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", k.String(), uri, err)
		}
		if again != k {
			t.Fatalf("canonical form %q parses to %+v, want %+v", k.String(), again, k)
		}
		if again.String() != k.String() {
			t.Fatalf("String is not stable: %q then %q", k.String(), again.String())
		}
	})
}
