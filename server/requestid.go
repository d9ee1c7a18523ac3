package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// RequestIDHeader is the HTTP header and gRPC metadata key carrying the
// request id (gRPC metadata keys are lower case; HTTP's are not case
// sensitive).
const RequestIDHeader = "x-request-id"

// maxRequestIDLen bounds an accepted id: long enough for a UUID or a
// trace id, short enough that a caller cannot bloat every log line.
const maxRequestIDLen = 64

type requestIDKey struct{}

// RequestID returns the request id the interceptor or middleware put in
// ctx, or "" outside a request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// validRequestID reports whether a caller's id may be used as is: 1 to 64
// of [A-Za-z0-9._-], so it can go into logs and headers unescaped and
// cannot forge log fields or lines.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// requestIDFor keeps a valid incoming id, so a request can be followed
// across the caller's logs and ours, and otherwise makes a new one.
func requestIDFor(incoming string) string {
	if validRequestID(incoming) {
		return incoming
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand aborts the process instead
	return hex.EncodeToString(b[:])
}

// UnaryRequestID returns a gRPC unary interceptor that gives every call a
// request id (the caller's x-request-id if valid, else a fresh one), puts
// it in the handler's context and sends it back in the response header
// metadata, errors included.
func UnaryRequestID() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var incoming string
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get(RequestIDHeader); len(v) > 0 {
				incoming = v[0]
			}
		}
		id := requestIDFor(incoming)
		// SetHeader only fails if headers were already sent, which cannot
		// happen before the handler runs.
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id))
		return handler(withRequestID(ctx, id), req)
	}
}

// RequestIDMiddleware is the HTTP counterpart of UnaryRequestID: it sets
// the X-Request-Id response header and the id in the request's context.
func RequestIDMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestIDFor(r.Header.Get(RequestIDHeader))
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(withRequestID(r.Context(), id)))
	})
}

// WithRequestIDs wraps h so every record logged with a request's context
// carries a request_id attribute. Attributes join the innermost open
// group, so after Logger.WithGroup the id is logged inside that group.
func WithRequestIDs(h slog.Handler) slog.Handler {
	return requestIDHandler{inner: h}
}

type requestIDHandler struct{ inner slog.Handler }

func (h requestIDHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		// Clone: the record may be shared with sibling handlers (a fan-out),
		// which must not see our attribute appended to their copy.
		r = r.Clone()
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.inner.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{inner: h.inner.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{inner: h.inner.WithGroup(name)}
}
