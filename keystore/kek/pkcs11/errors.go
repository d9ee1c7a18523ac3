package pkcs11

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/internal/hsm"
)

// ckrAEADDecryptFailed is PKCS#11 3.0's CKR_AEAD_DECRYPT_FAILED, which
// github.com/miekg/pkcs11 v1.1.1 does not define yet.
const ckrAEADDecryptFailed = pkcs11.Error(0x35)

// errKeyNotFound: no key object matches the URI. To the KMS a deleted key
// and a key never created look the same, and both are the owner's doing.
var errKeyNotFound = errors.New("pkcs11: key object not found")

// Class returns the kek error class for a CK_RV code: ErrKeyDisabled for
// what the key's owner controls (key deleted or its use revoked, PIN
// changed or locked), ErrAuthentication for data that does not decrypt,
// ErrUnsupported for mechanisms or key types the token does not offer, and
// ErrUnavailable for everything else (the token is down, removed, busy or
// failing), so an unknown code is retried rather than treated as final.
func Class(rv pkcs11.Error) error {
	switch rv {
	case pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_PIN_INVALID,
		pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_USER_PIN_NOT_INITIALIZED,
		pkcs11.CKR_KEY_UNEXTRACTABLE, pkcs11.CKR_KEY_NOT_WRAPPABLE:
		return kek.ErrKeyDisabled
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, ckrAEADDecryptFailed:
		return kek.ErrAuthentication
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_SIZE_RANGE, pkcs11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
		pkcs11.CKR_WRAPPING_KEY_SIZE_RANGE, pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_TEMPLATE_INCOMPLETE,
		pkcs11.CKR_ATTRIBUTE_VALUE_INVALID, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID:
		return kek.ErrUnsupported
	default:
		// CKR_DEVICE_*, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_*, CKR_GENERAL_ERROR,
		// CKR_FUNCTION_FAILED, CKR_HOST_MEMORY, CKR_CRYPTOKI_NOT_INITIALIZED,
		// CKR_USER_NOT_LOGGED_IN (login lapsed and could not be redone) ...
		return kek.ErrUnavailable
	}
}

// classify wraps err with its kek class. op names the failed step. Errors
// that already carry a kek class (URI and PIN-source errors) are returned
// as they are.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, c := range []error{kek.ErrKeyDisabled, kek.ErrAuthentication, kek.ErrUnavailable, kek.ErrUnsupported} {
		if errors.Is(err, c) {
			return fmt.Errorf("pkcs11: %s: %w", op, err)
		}
	}
	var rv pkcs11.Error
	var class error
	switch {
	case errors.As(err, &rv):
		class = Class(rv)
	case errors.Is(err, errKeyNotFound):
		class = kek.ErrKeyDisabled
	case errors.Is(err, hsm.ErrModuleLoad), errors.Is(err, hsm.ErrTokenNotFound), errors.Is(err, hsm.ErrClosed):
		class = kek.ErrUnavailable
	case errors.Is(err, hsm.ErrTokenAmbiguous):
		class = kek.ErrUnsupported // a configuration problem; retrying will not help
	default:
		// Context deadline or cancellation while waiting on the token.
		class = kek.ErrUnavailable
	}
	return fmt.Errorf("pkcs11: %s: %w", op, errors.Join(class, err))
}
