// Package hsm holds the PKCS#11 plumbing shared by the PKCS#11 KEK provider
// and its test helpers: loading a module once per process, finding a token,
// logging in, and lending sessions to one operation at a time.
//
// It speaks github.com/miekg/pkcs11 directly rather than crypto11, because
// the provider must see the token's CK_RV codes to tell the owner's off
// switch from an outage from tampering, and crypto11 flattens them into
// strings (and panics in AEAD.Seal when the token refuses).
package hsm

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

// Errors that are not CK_RV codes. Callers classify them.
var (
	// ErrModuleLoad: the PKCS#11 library could not be loaded or initialized.
	ErrModuleLoad = errors.New("pkcs11: module could not be loaded")
	// ErrTokenNotFound: no token matches the selection (not plugged in,
	// partition not assigned, or a typo in the URI).
	ErrTokenNotFound = errors.New("pkcs11: no matching token present")
	// ErrTokenAmbiguous: several tokens match the selection.
	ErrTokenAmbiguous = errors.New("pkcs11: several tokens match")
	// ErrClosed: the Token was closed.
	ErrClosed = errors.New("pkcs11: token handle closed")
)

// module is one loaded and initialized PKCS#11 library.
type module struct {
	path string
	ctx  *pkcs11.Ctx
	refs int
	// owned is false when someone else in the process (crypto11, another
	// library) had already called C_Initialize: then only they may call
	// C_Finalize.
	owned bool
}

// registry tracks the modules loaded by this process. PKCS#11 allows one
// C_Initialize per library per process and C_Finalize ends it for every
// user, so loaded modules are necessarily process-wide state; the registry
// reference-counts them so the last user finalizes (which also lets a test
// point SoftHSM2 at a new token directory after every earlier user closed).
var registry = struct {
	sync.Mutex
	modules map[string]*module
}{modules: map[string]*module{}}

func openModule(path string) (*module, error) {
	// One library reached through two paths (a symlink) is one module:
	// key the registry by the real file.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	registry.Lock()
	defer registry.Unlock()
	if m, ok := registry.modules[path]; ok {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: load module %s: %w", path, ErrModuleLoad)
	}
	owned := true
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("pkcs11: initialize module %s: %w", path, errors.Join(ErrModuleLoad, err))
		}
		owned = false
	}
	m := &module{path: path, ctx: ctx, refs: 1, owned: owned}
	registry.modules[path] = m
	return m, nil
}

func (m *module) release() {
	registry.Lock()
	defer registry.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(registry.modules, m.path)
	if m.owned {
		_ = m.ctx.Finalize() // nothing useful to do with a failure at teardown
	}
	m.ctx.Destroy()
}

// Loaded reports whether this process holds the module at path open, for
// test helpers that must create tokens before the module reads its
// configuration.
func Loaded(path string) bool {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	registry.Lock()
	defer registry.Unlock()
	_, ok := registry.modules[path]
	return ok
}

// Selector chooses the token. Every non-empty field must match.
type Selector struct {
	Label, Manufacturer, Serial, Model string
	SlotDescription, SlotManufacturer  string
	SlotID                             *uint
	LibraryManufacturer                string
	LibraryDescription                 string
	// LibraryVersion is "major" or "major.minor".
	LibraryVersion string
}

// Config describes a token to open.
type Config struct {
	ModulePath string
	Select     Selector
	// PIN returns the user PIN. It is called for every login so a PIN
	// rotated in its source is picked up without a restart. nil means the
	// token needs no login.
	PIN func() (string, error)
	// MaxSessions bounds the sessions open at once (default 16).
	MaxSessions int
}

// Session is a session lent to one operation. It must not be kept after
// the operation returns.
type Session struct {
	Ctx    *pkcs11.Ctx
	Handle pkcs11.SessionHandle
}

// Token is an open, logged-in token with a bounded pool of read-write
// sessions. It is safe for concurrent use.
type Token struct {
	mod *module
	cfg Config
	// slots bounds concurrently open sessions; a slot is held from
	// checkout until the session is back in idle or closed.
	slots chan struct{}
	// done is closed by Close so callers waiting for a slot give up.
	done chan struct{}

	mu     sync.Mutex
	slot   uint
	stale  bool // slot must be looked up (first use, or the token was removed)
	idle   []pkcs11.SessionHandle
	closed bool
	// badPIN is the digest of the last PIN the token rejected. Logging in
	// again with it would only count towards the token's lockout, so it is
	// not retried until the PIN source changes.
	badPIN []byte
}

// Open loads the module, finds the token and logs in, so a wrong PIN or a
// missing token is reported now rather than at the first operation.
func Open(ctx context.Context, cfg Config) (*Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 16
	}
	mod, err := openModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	t := &Token{mod: mod, cfg: cfg, slots: make(chan struct{}, cfg.MaxSessions), done: make(chan struct{}), stale: true}
	if err := t.Do(ctx, func(Session) error { return nil }); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Close closes the pooled sessions and releases the module. Operations in
// flight finish first.
func (t *Token) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.done)
	t.mu.Unlock()
	// Take every slot so no operation is running, then close idle sessions.
	for range cap(t.slots) {
		t.slots <- struct{}{}
	}
	t.mu.Lock()
	for _, s := range t.idle {
		_ = t.mod.ctx.CloseSession(s)
	}
	t.idle = nil
	t.mu.Unlock()
	t.mod.release()
}

// Do runs f with a logged-in session of its own. If ctx ends first Do
// returns at once (a PKCS#11 call cannot be interrupted; it finishes in the
// background and its session goes back to the pool or is closed). f's
// errors are returned unchanged, wrapped only by Do's own context.
func (t *Token) Do(ctx context.Context, f func(Session) error) error {
	select {
	case t.slots <- struct{}{}:
	case <-t.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("pkcs11: waiting for a session: %w", ctx.Err())
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-t.slots }()
		done <- t.run(f)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("pkcs11: token did not answer in time: %w", ctx.Err())
	}
}

// run executes f on a session; the caller holds a slot.
func (t *Token) run(f func(Session) error) error {
	s, err := t.checkout()
	if err != nil {
		return err
	}
	err = f(Session{Ctx: t.mod.ctx, Handle: s})
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
		// The login lapsed (every session of the application was closed,
		// or the token was reset): log in again and retry once. f did
		// nothing the first time, so the retry cannot duplicate an effect.
		if lerr := t.login(s); lerr != nil {
			t.checkin(s, lerr)
			return lerr
		}
		err = f(Session{Ctx: t.mod.ctx, Handle: s})
	}
	t.checkin(s, err)
	return err
}

func (t *Token) checkout() (pkcs11.SessionHandle, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return 0, ErrClosed
	}
	if n := len(t.idle); n > 0 {
		s := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return s, nil
	}
	slot, stale := t.slot, t.stale
	t.mu.Unlock()

	if stale {
		var err error
		if slot, err = t.findSlot(); err != nil {
			return 0, err
		}
	}
	s, err := t.mod.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil && !stale && isSlotGone(err) {
		// The token moved (re-inserted, HSM partition re-assigned): look
		// it up again once.
		if slot, err = t.findSlot(); err != nil {
			return 0, err
		}
		s, err = t.mod.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	}
	if err != nil {
		return 0, fmt.Errorf("pkcs11: open session: %w", err)
	}
	t.mu.Lock()
	t.slot, t.stale = slot, false
	t.mu.Unlock()
	info, err := t.mod.ctx.GetSessionInfo(s)
	if err != nil {
		_ = t.mod.ctx.CloseSession(s)
		return 0, fmt.Errorf("pkcs11: session info: %w", err)
	}
	if info.State == pkcs11.CKS_RW_PUBLIC_SESSION || info.State == pkcs11.CKS_RO_PUBLIC_SESSION {
		if err := t.login(s); err != nil {
			_ = t.mod.ctx.CloseSession(s)
			return 0, err
		}
	}
	return s, nil
}

// checkin returns s to the pool unless err says the session or the token
// is gone, in which case s is closed and the slot looked up again next time.
func (t *Token) checkin(s pkcs11.SessionHandle, err error) {
	gone := isSessionGone(err)
	t.mu.Lock()
	defer t.mu.Unlock()
	if gone || t.closed {
		if gone && isSlotGone(err) {
			t.stale = true
		}
		_ = t.mod.ctx.CloseSession(s)
		return
	}
	t.idle = append(t.idle, s)
}

func (t *Token) login(s pkcs11.SessionHandle) error {
	if t.cfg.PIN == nil {
		return nil
	}
	pin, err := t.cfg.PIN()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(pin))
	t.mu.Lock()
	known := t.badPIN != nil && subtle.ConstantTimeCompare(t.badPIN, sum[:]) == 1
	t.mu.Unlock()
	if known {
		return fmt.Errorf("pkcs11: login: PIN already rejected by the token, not retried until it changes: %w", pkcs11.Error(pkcs11.CKR_PIN_INCORRECT))
	}
	err = t.mod.ctx.Login(s, pkcs11.CKU_USER, pin)
	switch {
	case err == nil, errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
		t.mu.Lock()
		t.badPIN = nil
		t.mu.Unlock()
		return nil
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)):
		t.mu.Lock()
		t.badPIN = sum[:]
		t.mu.Unlock()
	}
	// The PIN itself is never part of the message.
	return fmt.Errorf("pkcs11: login: %w", err)
}

// findSlot scans the slots with a token present for the one the selector
// names.
func (t *Token) findSlot() (uint, error) {
	c := t.mod.ctx
	sel := t.cfg.Select
	if sel.LibraryManufacturer != "" || sel.LibraryDescription != "" || sel.LibraryVersion != "" {
		info, err := c.GetInfo()
		if err != nil {
			return 0, fmt.Errorf("pkcs11: library info: %w", err)
		}
		if !matches(sel.LibraryManufacturer, info.ManufacturerID) || !matches(sel.LibraryDescription, info.LibraryDescription) ||
			!versionMatches(sel.LibraryVersion, info.LibraryVersion) {
			return 0, fmt.Errorf("pkcs11: module %s does not match the URI's library attributes: %w", t.cfg.ModulePath, ErrTokenNotFound)
		}
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: list slots: %w", err)
	}
	var found []uint
	for _, slot := range slots {
		if sel.SlotID != nil && *sel.SlotID != slot {
			continue
		}
		if sel.SlotDescription != "" || sel.SlotManufacturer != "" {
			si, err := c.GetSlotInfo(slot)
			if err != nil || !matches(sel.SlotDescription, si.SlotDescription) || !matches(sel.SlotManufacturer, si.ManufacturerID) {
				continue
			}
		}
		ti, err := c.GetTokenInfo(slot)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if matches(sel.Label, ti.Label) && matches(sel.Manufacturer, ti.ManufacturerID) &&
			matches(sel.Serial, ti.SerialNumber) && matches(sel.Model, ti.Model) {
			found = append(found, slot)
		}
	}
	switch len(found) {
	case 0:
		return 0, ErrTokenNotFound
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("%w (%d tokens; name one by token=, serial= or slot-id=)", ErrTokenAmbiguous, len(found))
	}
}

func matches(want, got string) bool { return want == "" || want == got }

func versionMatches(want string, got pkcs11.Version) bool {
	if want == "" {
		return true
	}
	return want == fmt.Sprintf("%d", got.Major) || want == fmt.Sprintf("%d.%d", got.Major, got.Minor)
}

// isSessionGone reports errors after which a session cannot be reused.
func isSessionGone(err error) bool {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return true
	}
	return false
}

// isSlotGone reports errors that mean the slot no longer holds our token.
func isSlotGone(err error) bool {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}
	switch rv {
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
		return true
	}
	return false
}
