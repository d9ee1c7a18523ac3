package awskms

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Scheme is the URI scheme of AWS KMS keys.
const Scheme = "aws-kms"

const schemePrefix = Scheme + "://"

// Query parameters of a key URI. They are named after the AWS shared config
// file's keys so operators recognise them.
const (
	paramRoleARN    = "role_arn"
	paramExternalID = "external_id"
)

// KeyURI is a parsed aws-kms:// URI.
type KeyURI struct {
	// ARN is the key or alias ARN, e.g.
	// arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab.
	ARN       string
	Partition string
	Region    string
	Account   string
	// Alias is true for alias ARNs (arn:...:alias/name); KeyID then holds
	// the alias name without the "alias/" prefix.
	Alias bool
	KeyID string
	// RoleARN and ExternalID, when set, make the provider assume that IAM
	// role (with that external id) before calling KMS.
	RoleARN    string
	ExternalID string
}

// String returns the canonical form: the ARN, then role_arn and
// external_id in that order when set. Parsing it gives back the same KeyURI.
func (k KeyURI) String() string {
	s := schemePrefix + k.ARN
	if k.RoleARN == "" {
		return s
	}
	// The ARN and external id alphabets need no escaping except for the
	// characters url.QueryEscape rewrites; escape them anyway so the URI
	// always parses back.
	s += "?" + paramRoleARN + "=" + url.QueryEscape(k.RoleARN)
	if k.ExternalID != "" {
		s += "&" + paramExternalID + "=" + url.QueryEscape(k.ExternalID)
	}
	return s
}

var (
	// Partitions are "aws", "aws-cn", "aws-us-gov", "aws-iso-b", ...
	partitionRE = `aws(?:-[a-z]+)*`
	keyARNRE    = regexp.MustCompile(`^arn:(` + partitionRE + `):kms:([a-z]{2}(?:-[a-z]+)+-[0-9]+):([0-9]{12}):(key|alias)/(.+)$`)
	// Single-region keys have UUID ids; multi-Region keys "mrk-" and 32 hex.
	keyIDRE = regexp.MustCompile(`^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	// AWS alias names: letters, digits, '/', '_' and '-', at most 256
	// characters including the "alias/" prefix.
	aliasRE   = regexp.MustCompile(`^[A-Za-z0-9/_-]{1,250}$`)
	roleARNRE = regexp.MustCompile(`^arn:` + partitionRE + `:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,576}$`)
	// STS ExternalId: 2 to 1224 characters of [\w+=,.@:/-].
	externalIDRE = regexp.MustCompile(`^[A-Za-z0-9_+=,.@:/-]+$`)
)

// ParseURI parses aws-kms://<key or alias ARN>[?role_arn=<role ARN>[&external_id=<id>]].
// Errors wrap kek.ErrUnsupported when the URI is not an aws-kms URI at all.
func ParseURI(uri string) (KeyURI, error) {
	rest, ok := strings.CutPrefix(uri, schemePrefix)
	if !ok {
		return KeyURI{}, fmt.Errorf("awskms: URI does not start with %q: %w", schemePrefix, kek.ErrUnsupported)
	}
	arn, query, hasQuery := strings.Cut(rest, "?")
	if strings.ContainsAny(rest, "#") {
		return KeyURI{}, errors.New("awskms: URI must not have a fragment")
	}
	m := keyARNRE.FindStringSubmatch(arn)
	if m == nil {
		return KeyURI{}, errors.New("awskms: URI must be aws-kms://arn:<partition>:kms:<region>:<account>:key/<key-id> or :alias/<name>")
	}
	k := KeyURI{ARN: arn, Partition: m[1], Region: m[2], Account: m[3], Alias: m[4] == "alias", KeyID: m[5]}
	if k.Alias {
		if !aliasRE.MatchString(k.KeyID) {
			return KeyURI{}, errors.New("awskms: invalid alias name in URI")
		}
		// AWS managed keys (alias/aws/...) have key policies the customer
		// cannot change, so they cannot be a KEK the customer controls.
		if strings.HasPrefix(k.KeyID, "aws/") {
			return KeyURI{}, errors.New("awskms: AWS managed keys (alias/aws/...) cannot be used as a KEK; use a customer managed key")
		}
	} else if !keyIDRE.MatchString(k.KeyID) {
		return KeyURI{}, errors.New("awskms: invalid key id in URI (want a UUID or mrk-<32 hex>)")
	}
	if !hasQuery {
		return k, nil
	}
	vals, err := url.ParseQuery(query)
	if err != nil {
		return KeyURI{}, fmt.Errorf("awskms: parse URI query: %w", err)
	}
	for name, v := range vals {
		switch name {
		case paramRoleARN, paramExternalID:
			if len(v) != 1 {
				return KeyURI{}, fmt.Errorf("awskms: URI query parameter %q given %d times", name, len(v))
			}
		default:
			return KeyURI{}, fmt.Errorf("awskms: unknown URI query parameter %q (known: %s, %s)", name, paramRoleARN, paramExternalID)
		}
	}
	k.RoleARN, k.ExternalID = vals.Get(paramRoleARN), vals.Get(paramExternalID)
	if err := validateRole(k.RoleARN, k.ExternalID); err != nil {
		return KeyURI{}, err
	}
	if k.RoleARN == "" {
		// "?" alone or "?role_arn=" says nothing; reject so a URI has one
		// canonical spelling.
		return KeyURI{}, errors.New("awskms: URI query given without role_arn")
	}
	if k.Partition != partitionOf(k.RoleARN) {
		return KeyURI{}, errors.New("awskms: role ARN and key ARN are in different partitions")
	}
	return k, nil
}

func validateRole(roleARN, externalID string) error {
	if roleARN != "" && !roleARNRE.MatchString(roleARN) {
		return errors.New("awskms: invalid role ARN (want arn:<partition>:iam::<account>:role/<name>)")
	}
	if externalID != "" {
		if roleARN == "" {
			return errors.New("awskms: external id given without a role ARN")
		}
		if len(externalID) < 2 || len(externalID) > 1224 || !externalIDRE.MatchString(externalID) {
			return errors.New("awskms: invalid external id (2 to 1224 characters of letters, digits and +=,.@:/-_)")
		}
	}
	return nil
}

func partitionOf(arn string) string {
	parts := strings.SplitN(arn, ":", 3)
	if len(parts) < 3 {
		return ""
	}
	return parts[1]
}
