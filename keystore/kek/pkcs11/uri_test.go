package pkcs11

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/internal/hsm"
)

func TestParseURI(t *testing.T) {
	slot := uint(7)
	for _, tc := range []struct {
		in   string
		want URI
	}{
		{
			"pkcs11:token=kms;object=kek;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kms/hsm.pin",
			URI{Token: "kms", Object: "kek", Type: "secret-key", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file:/etc/kms/hsm.pin"},
		},
		{
			// RFC 7512 section 3 style: percent-encoded id and spaces.
			"PKCS11:token=My%20token%25%3B;id=%01%02%AB;object=a&b;serial=DECC0401648;manufacturer=Snake%20Oil,%20Inc.?module-name=softhsm2&pin-value=1234",
			URI{Token: "My token%;", ID: []byte{1, 2, 0xab}, Object: "a&b", Serial: "DECC0401648", Manufacturer: "Snake Oil, Inc.", ModuleName: "softhsm2", PINValue: "1234"},
		},
		{
			"pkcs11:slot-id=7;slot-description=Sun%20Metaslot;slot-manufacturer=x;library-manufacturer=Snake%20Oil;library-description=d;library-version=1.2;model=m;object=k?pin-source=/run/pin&x-vendor=ignored",
			URI{SlotID: &slot, SlotDescription: "Sun Metaslot", SlotManufacturer: "x", LibraryManufacturer: "Snake Oil", LibraryDescription: "d", LibraryVersion: "1.2", Model: "m", Object: "k", PINSource: "/run/pin"},
		},
		{"pkcs11:", URI{}},
		{"pkcs11:object=", URI{}},
		{"pkcs11:object=a=b", URI{Object: "a=b"}},
	} {
		got, err := ParseURI(tc.in)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseURI(%q) =\n%+v, want\n%+v", tc.in, *got, tc.want)
		}
	}
}

func TestParseURIRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"pkcs11",
		"file:/etc/kek",
		"pkcs11://token=kms",
		"pkcs11:token=kms;token=other",
		"pkcs11:token",
		"pkcs11:=kms",
		"pkcs11:token=a;;object=b",
		"pkcs11:token=a b",
		"pkcs11:token=%zz",
		"pkcs11:token=%4",
		"pkcs11:object=k;type=secret",
		"pkcs11:object=k;slot-id=-1",
		"pkcs11:object=k;slot-id=x",
		"pkcs11:object=k;library-version=1.2.3",
		"pkcs11:object=k;unknown=1",
		"pkcs11:object=k;x-vendor=1",
		"pkcs11:object=k#frag",
		"pkcs11:object=k?pin-source=/a&pin-value=b",
		"pkcs11:object=k?module-path=/a&module-name=b",
		"pkcs11:object=k?module-path=relative/lib.so",
		"pkcs11:object=k?module-name=../lib",
		"pkcs11:object=k?pin-source=/a&pin-source=/b",
		"pkcs11:object=k?bogus=1",
		"pkcs11:object=k?pin-value",
		"pkcs11:object=k?module-path=/a;b",
	} {
		if u, err := ParseURI(in); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want an error", in, u)
		} else if !errors.Is(err, kek.ErrUnsupported) {
			t.Errorf("ParseURI(%q): %v does not wrap ErrUnsupported", in, err)
		}
	}
}

func TestURIString(t *testing.T) {
	u, err := ParseURI("pkcs11:type=secret-key;object=my%20kek;token=kms;id=%00%FF?pin-value=secret-pin&module-path=/lib/p11.so")
	if err != nil {
		t.Fatal(err)
	}
	const want = "pkcs11:token=kms;type=secret-key;object=my%20kek;id=%00%FF?module-path=/lib/p11.so"
	if got := u.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func TestPINSourcePath(t *testing.T) {
	for in, want := range map[string]string{
		"file:/etc/pin": "/etc/pin", "file:///etc/pin": "/etc/pin", "file://localhost/etc/pin": "/etc/pin",
		"/etc/pin": "/etc/pin", "/etc/../etc/pin": "/etc/pin",
	} {
		if got, err := pinSourcePath(in); err != nil || got != want {
			t.Errorf("pinSourcePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"file:pin", "pin", "file://host/etc/pin", "env:PIN", "https://x/pin"} {
		if _, err := pinSourcePath(in); err == nil {
			t.Errorf("pinSourcePath(%q) accepted", in)
		}
	}
}

func TestErrorsHidePINValue(t *testing.T) {
	const pin = "S3CRET-PIN-VALUE"
	for _, in := range []string{
		"pkcs11:object=k?pin-value=" + pin + "%zz",
		"pkcs11:object=k?pin-value=" + pin + " x",
		"pkcs11:object=k?pin-value=" + pin + "&pin-source=/x",
		"pkcs11:object=k?pin-value=" + pin + "&pin-value=" + pin,
		"pkcs11:object=k?" + pin,
		"pkcs11:object=k?pin-value=" + pin + "&bogus",
	} {
		_, err := ParseURI(in)
		if err == nil {
			t.Errorf("ParseURI(%q) accepted", in)
			continue
		}
		if strings.Contains(err.Error(), pin) {
			t.Errorf("ParseURI error shows the PIN: %v", err)
		}
	}
}

// TestClassTable pins the CK_RV to kek class mapping, including the codes
// SoftHSM2 cannot be made to return (device errors, removal).
func TestClassTable(t *testing.T) {
	for rv, want := range map[pkcs11.Error]error{
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED: kek.ErrKeyDisabled,
		pkcs11.CKR_KEY_HANDLE_INVALID:         kek.ErrKeyDisabled,
		pkcs11.CKR_OBJECT_HANDLE_INVALID:      kek.ErrKeyDisabled,
		pkcs11.CKR_PIN_INCORRECT:              kek.ErrKeyDisabled,
		pkcs11.CKR_PIN_LOCKED:                 kek.ErrKeyDisabled,
		pkcs11.CKR_PIN_EXPIRED:                kek.ErrKeyDisabled,
		pkcs11.CKR_KEY_UNEXTRACTABLE:          kek.ErrKeyDisabled,
		pkcs11.CKR_DEVICE_ERROR:               kek.ErrUnavailable,
		pkcs11.CKR_DEVICE_REMOVED:             kek.ErrUnavailable,
		pkcs11.CKR_DEVICE_MEMORY:              kek.ErrUnavailable,
		pkcs11.CKR_TOKEN_NOT_PRESENT:          kek.ErrUnavailable,
		pkcs11.CKR_SESSION_HANDLE_INVALID:     kek.ErrUnavailable,
		pkcs11.CKR_SESSION_CLOSED:             kek.ErrUnavailable,
		pkcs11.CKR_SESSION_COUNT:              kek.ErrUnavailable,
		pkcs11.CKR_GENERAL_ERROR:              kek.ErrUnavailable,
		pkcs11.CKR_FUNCTION_FAILED:            kek.ErrUnavailable,
		pkcs11.CKR_USER_NOT_LOGGED_IN:         kek.ErrUnavailable,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:   kek.ErrUnavailable,
		pkcs11.Error(0x8000_1234):             kek.ErrUnavailable, // vendor code
		pkcs11.CKR_ENCRYPTED_DATA_INVALID:     kek.ErrAuthentication,
		pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:   kek.ErrAuthentication,
		ckrAEADDecryptFailed:                  kek.ErrAuthentication,
		pkcs11.CKR_MECHANISM_INVALID:          kek.ErrUnsupported,
		pkcs11.CKR_MECHANISM_PARAM_INVALID:    kek.ErrUnsupported,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT:      kek.ErrUnsupported,
	} {
		if got := Class(rv); got != want {
			t.Errorf("Class(%v) = %v, want %v", rv, got, want)
		}
		// classify keeps exactly one class and the code.
		err := classify("op", fmt.Errorf("C_Something: %w", rv))
		n := 0
		for _, c := range []error{kek.ErrKeyDisabled, kek.ErrUnavailable, kek.ErrAuthentication, kek.ErrUnsupported} {
			if errors.Is(err, c) {
				n++
			}
		}
		if n != 1 || !errors.Is(err, want) || !errors.Is(err, rv) {
			t.Errorf("classify(%v) = %v: want exactly %v and the code", rv, err, want)
		}
	}
	for err, want := range map[error]error{
		errKeyNotFound:                                   kek.ErrKeyDisabled,
		hsm.ErrModuleLoad:                                kek.ErrUnavailable,
		hsm.ErrTokenNotFound:                             kek.ErrUnavailable,
		hsm.ErrClosed:                                    kek.ErrUnavailable,
		hsm.ErrTokenAmbiguous:                            kek.ErrUnsupported,
		errors.New("context deadline exceeded"):          kek.ErrUnavailable,
		fmt.Errorf("already: %w", kek.ErrAuthentication): kek.ErrAuthentication,
		errors.Join(kek.ErrUnavailable, errors.New("read file")): kek.ErrUnavailable,
	} {
		if got := classify("op", err); !errors.Is(got, want) {
			t.Errorf("classify(%v) = %v, want %v", err, got, want)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=kms;object=kek;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kms/hsm.pin",
		"pkcs11:token=My%20token;id=%01%02?module-name=softhsm2&pin-value=1234",
		"pkcs11:slot-id=7;library-version=1.2;object=a&b?x-y=z",
		"pkcs11:",
		"pkcs11:object=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, kek.ErrUnsupported) {
				t.Fatalf("error %v does not wrap ErrUnsupported", err)
			}
			return
		}
		// The canonical form parses back to the same URI minus pin-value,
		// so it never carries a PIN.
		c := u.String()
		v, err := ParseURI(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, s, err)
		}
		want := *u
		want.PINValue = ""
		if !reflect.DeepEqual(*v, want) {
			t.Fatalf("round trip of %q via %q:\n%+v\n%+v", s, c, *v, want)
		}
		if c2 := v.String(); c2 != c {
			t.Fatalf("canonical form is not stable: %q then %q", c, c2)
		}
	})
}
