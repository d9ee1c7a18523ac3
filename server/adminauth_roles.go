package server

import (
	"net/url"
	"slices"
	"strings"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// AdminRole is what an authenticated admin caller may do. A caller may hold
// several roles; it may call a method when any of them allows it.
type AdminRole string

const (
	// RoleAdmin may call every Admin method.
	RoleAdmin AdminRole = "admin"
	// RoleOperator changes keys, key sets, policies and KEKs: rotate,
	// disable/enable/destroy, create key sets, set policies, rotate KEKs and
	// intermediate keys, import. It does not read: give a person who needs
	// both operator and auditor, so the two duties can also be separated.
	RoleOperator AdminRole = "operator"
	// RoleAuditor only reads: lists, gets and status.
	RoleAuditor AdminRole = "auditor"
)

// ParseAdminRole returns the role named s, exactly (case matters, as in
// certificate and token values an operator configures once).
func ParseAdminRole(s string) (AdminRole, bool) {
	switch r := AdminRole(s); r {
	case RoleAdmin, RoleOperator, RoleAuditor:
		return r, true
	}
	return "", false
}

// adminMethodRoles maps every Admin RPC to the roles allowed to call it.
// It is the whole policy: a method that is missing is refused to everyone,
// so a new RPC stays closed until someone decides who may call it (a test
// fails until then). It is never written after initialisation.
var adminMethodRoles = map[string][]AdminRole{
	kmsv1.Admin_CreateKeySet_FullMethodName:          {RoleAdmin, RoleOperator},
	kmsv1.Admin_UpdateKeySetSettings_FullMethodName:  {RoleAdmin, RoleOperator},
	kmsv1.Admin_RotateKeys_FullMethodName:            {RoleAdmin, RoleOperator},
	kmsv1.Admin_SetKeyState_FullMethodName:           {RoleAdmin, RoleOperator},
	kmsv1.Admin_SetPolicy_FullMethodName:             {RoleAdmin, RoleOperator},
	kmsv1.Admin_RollbackPolicy_FullMethodName:        {RoleAdmin, RoleOperator},
	kmsv1.Admin_RotateKEK_FullMethodName:             {RoleAdmin, RoleOperator},
	kmsv1.Admin_RotateIntermediateKey_FullMethodName: {RoleAdmin, RoleOperator},
	// GetImportKey is the first step of an import, and it creates the
	// import key on first use, so it belongs with ImportKey.
	kmsv1.Admin_GetImportKey_FullMethodName: {RoleAdmin, RoleOperator},
	kmsv1.Admin_ImportKey_FullMethodName:    {RoleAdmin, RoleOperator},

	kmsv1.Admin_ListKeySets_FullMethodName:      {RoleAdmin, RoleAuditor},
	kmsv1.Admin_ListKeys_FullMethodName:         {RoleAdmin, RoleAuditor},
	kmsv1.Admin_GetKey_FullMethodName:           {RoleAdmin, RoleAuditor},
	kmsv1.Admin_GetPolicy_FullMethodName:        {RoleAdmin, RoleAuditor},
	kmsv1.Admin_GetPolicyHistory_FullMethodName: {RoleAdmin, RoleAuditor},
	kmsv1.Admin_GetKEKStatus_FullMethodName:     {RoleAdmin, RoleAuditor},
	kmsv1.Admin_GetAuditKey_FullMethodName:      {RoleAdmin, RoleAuditor},
}

// AdminMethodRoles returns the roles allowed to call fullMethod
// ("/kms.v1.Admin/RotateKeys"), nil when no role is (the method is unknown).
// The slice is a copy.
func AdminMethodRoles(fullMethod string) []AdminRole {
	return slices.Clone(adminMethodRoles[fullMethod])
}

// allowed reports whether any of held may call fullMethod.
func allowed(fullMethod string, held []AdminRole) bool {
	return slices.ContainsFunc(adminMethodRoles[fullMethod], func(r AdminRole) bool {
		return slices.Contains(held, r)
	})
}

// certRoleScheme and certRolePrefix spell the URI SAN that carries a role
// in an operator certificate: attested-kms:role:<role>. A URI SAN rather
// than OU because OU is free text that CAs fill for their own purposes
// (and the CA/Browser Forum no longer allows it in public TLS
// certificates), whereas a URI in our own scheme cannot be mistaken for
// anything else, and one certificate can carry several roles as several
// URIs.
const (
	certRoleScheme = "attested-kms"
	certRolePrefix = "role:"
)

// rolesFromURIs reads roles from certificate URI SANs. Other URIs and
// unknown role names are ignored, so a CA may add roles this server does
// not know yet; a certificate with no known role authenticates but may
// call nothing.
func rolesFromURIs(uris []*url.URL) []AdminRole {
	var out []AdminRole
	for _, u := range uris {
		if u == nil || !strings.EqualFold(u.Scheme, certRoleScheme) {
			continue
		}
		// Only the opaque form: attested-kms://role/... or a query or
		// fragment would be a different spelling of the same claim, and one
		// claim should have one spelling.
		name, ok := strings.CutPrefix(u.Opaque, certRolePrefix)
		if !ok || u.Host != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			continue
		}
		if r, ok := ParseAdminRole(name); ok && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// rolesFromClaim maps a verified token's "roles" claim (Azure AD app roles:
// an array of strings) through mapping. Values without a mapping are
// ignored, like unknown certificate roles. ok is false when the claim is
// present but not an array of strings, which is the issuer's or the
// configuration's mistake and is reported as such.
func rolesFromClaim(claim any, mapping map[string]AdminRole) (roles []AdminRole, ok bool) {
	if claim == nil {
		return nil, true
	}
	list, isList := claim.([]any)
	if !isList {
		return nil, false
	}
	for _, v := range list {
		s, isString := v.(string)
		if !isString {
			return nil, false
		}
		if r, mapped := mapping[s]; mapped && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	return roles, true
}
