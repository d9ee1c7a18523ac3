package collateral

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Bounds on what is read from a collateral directory or a response.
const (
	// DefaultMaxDocumentSize bounds a document body. Intel's largest TCB
	// info and PCK CRLs are tens of kilobytes; AMD's are smaller.
	DefaultMaxDocumentSize = 1 << 20
	// maxHeadersSize bounds a .headers.json file and the kept headers.
	maxHeadersSize = 64 << 10
	dirPerm        = 0o755
	filePerm       = 0o644
)

// keepHeader reports whether a response header is kept with the document:
// the Intel issuer chains (TCB-Info-Issuer-Chain, SGX-TCB-Info-Issuer-Chain,
// SGX-Enclave-Identity-Issuer-Chain, SGX-PCK-CRL-Issuer-Chain, ...) that
// verifiers need to check the body's signature. Everything else (cookies,
// dates, request ids) is transport noise and would only make fixtures
// differ between runs.
func keepHeader(canonicalKey string) bool {
	return strings.HasSuffix(canonicalKey, "-Issuer-Chain")
}

// filterHeader returns the kept headers of h with canonical keys, or nil.
func filterHeader(h map[string][]string) http.Header {
	var out http.Header
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if !keepHeader(ck) || len(vs) == 0 {
			continue
		}
		if out == nil {
			out = make(http.Header)
		}
		out[ck] = append(out[ck], vs...)
	}
	return out
}

func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		n += len(k)
		for _, v := range vs {
			n += len(v) + 8
		}
	}
	return n
}

// WriteDocument stores body, and those headers of header that verifiers
// need, in the collateral directory dir under the name PathFor(u). Files
// are replaced atomically (temporary file, then rename) and directories are
// created with mode 0755: collateral is public. Fixture generators and
// `kms collateral fetch` use it, so that the store reads what they write.
func WriteDocument(dir, u string, header http.Header, body []byte) error {
	d, err := parseDocURL(u)
	if err != nil {
		return err
	}
	if dir == "" {
		return errors.New("collateral: no directory")
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	defer root.Close()
	return writeDocument(root, d.rel, filterHeader(header), body)
}

// writeDocument writes the headers file first and the body last, so a
// reader that finds the new body also finds its headers.
func writeDocument(root *os.Root, rel string, header http.Header, body []byte) error {
	if err := root.MkdirAll(path.Dir(rel), dirPerm); err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	hname := rel + headersSuffix
	if len(header) > 0 {
		hj, err := marshalHeader(header)
		if err != nil {
			return err
		}
		if err := writeAtomic(root, hname, hj); err != nil {
			return err
		}
	} else if err := root.Remove(hname); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("collateral: %w", err)
	}
	return writeAtomic(root, rel, body)
}

// marshalHeader encodes h as {"Header-Name": ["value", ...]}, keys sorted
// so that the file is reproducible.
func marshalHeader(h http.Header) ([]byte, error) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, k := range keys {
		kj, _ := json.Marshal(k)
		vj, err := json.Marshal(h[k])
		if err != nil {
			return nil, fmt.Errorf("collateral: headers: %w", err)
		}
		fmt.Fprintf(&b, "  %s: %s", kj, vj)
		if i < len(keys)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

func writeAtomic(root *os.Root, name string, data []byte) (err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(name), tempFilePrefix+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	defer func() {
		if err != nil {
			_ = root.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("collateral: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("collateral: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	if err := root.Rename(tmp, name); err != nil {
		return fmt.Errorf("collateral: %w", err)
	}
	return nil
}

// stored is a document as read from a collateral directory.
type stored struct {
	body    []byte
	header  http.Header
	modTime time.Time
}

// readDocument reads rel and its headers file from root. A missing body is
// fs.ErrNotExist; a missing headers file means no headers. os.Root keeps
// symbolic links inside the directory from leading out of it.
func readDocument(root *os.Root, rel string, maxSize int64) (*stored, error) {
	body, mod, err := readBounded(root, rel, maxSize)
	if err != nil {
		return nil, err
	}
	hj, _, err := readBounded(root, rel+headersSuffix, maxHeadersSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &stored{body: body, modTime: mod}, nil
	case err != nil:
		return nil, err
	}
	var raw map[string][]string
	if err := json.Unmarshal(hj, &raw); err != nil {
		return nil, fmt.Errorf("collateral: %s%s: %w", rel, headersSuffix, err)
	}
	return &stored{body: body, header: filterHeader(raw), modTime: mod}, nil
}

// ErrTooLarge is returned for a document (or its headers) over the
// configured size bound, from the network or from the directory.
var ErrTooLarge = errors.New("collateral: document too large")

func readBounded(root *os.Root, name string, max int64) ([]byte, time.Time, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("collateral: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, time.Time{}, fmt.Errorf("collateral: %s is not a regular file", name)
	}
	if fi.Size() > max {
		return nil, time.Time{}, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, name, fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("collateral: %w", err)
	}
	if int64(len(b)) > max {
		return nil, time.Time{}, fmt.Errorf("%w: %s grew past %d bytes", ErrTooLarge, name, max)
	}
	return b, fi.ModTime(), nil
}
