package oidcissuer

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
)

// IMDS contract (the subset of Azure's instance metadata managed-identity
// endpoint that Azure SDKs and the enclave client use):
//
//	GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<aud>
//	Metadata: true
//
// Optional client_id, object_id, msi_res_id (or mi_res_id) must name the one
// configured identity. Success is 200 with
//
//	{"access_token","client_id","expires_in","expires_on","ext_expires_in",
//	 "not_before","resource","token_type":"Bearer"}
//
// where the times are decimal strings, as Azure sends them. Failures are
// 400 {"error","error_description"} (405 for other methods), including a
// missing Metadata header and any X-Forwarded-For header: Azure rejects
// proxied requests so that a server-side request forgery cannot fetch tokens.

func (i *Issuer) handleIMDS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		imdsError(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
		return
	}
	if r.Header.Get("Metadata") != "true" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Request with X-Forwarded-For header is not allowed")
		return
	}
	q := r.URL.Query()
	switch v := q.Get("api-version"); {
	case v == "":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
		return
	case v != "2018-02-01" && v != "2019-08-01":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Invalid api-version")
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
		return
	}
	for _, p := range []struct{ name, want string }{
		{"client_id", i.opts.AppID},
		{"object_id", i.opts.ObjectID},
		{"msi_res_id", i.opts.ManagedIdentityResourceID},
		{"mi_res_id", i.opts.ManagedIdentityResourceID},
	} {
		if got := q.Get(p.name); got != "" && got != p.want {
			imdsError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
			return
		}
	}

	now := i.opts.Now()
	tok, err := i.MintManagedIdentity(resource)
	if err != nil {
		imdsError(w, http.StatusInternalServerError, "server_error", "minting failed")
		return
	}
	life := strconv.FormatInt(int64(i.opts.TokenLifetime.Seconds()), 10)
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token":   tok,
		"client_id":      i.opts.AppID,
		"expires_in":     life,
		"ext_expires_in": life,
		"expires_on":     strconv.FormatInt(now.Add(i.opts.TokenLifetime).Unix(), 10),
		"not_before":     strconv.FormatInt(now.Unix(), 10),
		"resource":       resource,
		"token_type":     "Bearer",
	})
}

// MintManagedIdentity mints a token shaped like an AAD managed-identity
// access token for audience resource: v1 (appid, appidacr, idp, ver 1.0)
// or v2 (azp, azpacr, ver 2.0) after Options.Form.
func (i *Issuer) MintManagedIdentity(resource string, opts ...MintOption) (string, error) {
	c := map[string]any{
		"aud":       resource,
		"sub":       i.opts.ObjectID, // app-only tokens: sub is the principal's object ID
		"oid":       i.opts.ObjectID,
		"tid":       i.opts.TenantID,
		"idtyp":     "app",
		"xms_mirid": i.opts.ManagedIdentityResourceID,
		"aio":       randomID(),
		"rh":        randomID(),
		"uti":       randomID(),
	}
	if i.opts.Form == FormV2 {
		c["azp"], c["azpacr"], c["ver"] = i.opts.AppID, "2", "2.0"
	} else {
		c["appid"], c["appidacr"], c["ver"], c["idp"] = i.opts.AppID, "2", "1.0", i.issuer
	}
	return i.Mint(c, opts...)
}

func imdsError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
