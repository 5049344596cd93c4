package apify

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// redacted is what formatting shows in place of a token.
const redacted = "[REDACTED]"

// secret holds the API token as the ready Authorization header value.
//
// The token leaves this struct only as that header, and only on a request:
// never in a URL (Apify also accepts ?token=, which ends up in access logs),
// never in an error, never in a log record. The methods below cover direct
// printing. Reflection-based printing of a struct that holds the *secret (a
// Client value, *c, say) cannot call them: it shows the pointer under %v,
// but under any other verb (%s, %q, %d, %x) fmt prints what the pointer
// points to. So the header is kept behind a func, which fmt only ever shows
// as an address.
type secret struct {
	header func() []string // returns {"Bearer <token>"}, shared read-only by every request
}

func newSecret(token string) *secret {
	h := []string{"Bearer " + token}
	return &secret{header: func() []string { return h }}
}

func (*secret) String() string               { return redacted }
func (*secret) GoString() string             { return redacted }
func (*secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (*secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (*secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// token returns the token itself, for redaction.
func (s *secret) token() string { return strings.TrimPrefix(s.header()[0], "Bearer ") }

// redact replaces every occurrence of the token in text with [REDACTED]: a
// server or proxy that echoes the request's Authorization header in its
// error page must not put the token into an error string.
func (s *secret) redact(text string) string {
	if s == nil || !strings.Contains(text, s.token()) {
		return text
	}
	return strings.ReplaceAll(text, s.token(), redacted)
}

// redactBytes is redact for a body; it returns b itself (no copy) when the
// token is not in it.
func (s *secret) redactBytes(b []byte) []byte {
	if s == nil || !bytes.Contains(b, []byte(s.token())) {
		return b
	}
	return bytes.ReplaceAll(b, []byte(s.token()), []byte(redacted))
}

// redactHeader returns a copy of a response's header with the token
// redacted in every name and value; nil for nil.
func (s *secret) redactHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for name, vals := range h {
		red := make([]string, len(vals))
		for i, v := range vals {
			red[i] = s.redact(v)
		}
		out[s.redact(name)] = red
	}
	return out
}
