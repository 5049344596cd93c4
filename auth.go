package apify

import (
	"fmt"
	"log/slog"
)

// redacted is what formatting shows in place of a token.
const redacted = "[REDACTED]"

// secret holds the API token as the ready Authorization header value.
//
// The token leaves this struct only as that header, and only on a request:
// never in a URL (Apify also accepts ?token=, which ends up in access logs),
// never in an error, never in a log record. A Client keeps a *secret, so
// reflection-based printing of the Client (fmt on a struct that embeds it,
// say) shows a pointer, and the methods below cover direct printing.
type secret struct {
	header []string // {"Bearer <token>"}, shared read-only by every request
}

func newSecret(token string) *secret {
	return &secret{header: []string{"Bearer " + token}}
}

func (*secret) String() string               { return redacted }
func (*secret) GoString() string             { return redacted }
func (*secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (*secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (*secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
