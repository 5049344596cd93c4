package apify

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// leakToken is recognisable anywhere it could surface; leakMarker is a part
// of it that no other text in these tests contains, so a token cut in two by
// a length limit is caught too.
const (
	leakToken  = "apify_api_LEAKCHECK_7f3a"
	leakMarker = "LEAKCHECK"
)

// Reflection-based printing cannot call the Client's own Format method on a
// Client value (a dereferenced *Client, or a struct holding one), and under
// any verb but %v fmt prints what an unexported pointer field points to.
// The token must survive every verb all the same.
func TestTokenInNoVerbOfAClientValue(t *testing.T) {
	c, err := NewClient(WithToken(leakToken))
	require.NoError(t, err)
	type app struct {
		Name   string
		Client Client
		Queue  RequestQueueClient
	}
	values := []any{*c, app{Name: "crawler", Client: *c, Queue: *c.RequestQueue("q")}, *c.RequestQueue("q")}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%p"} {
			out := fmt.Sprintf(verb, v)
			assert.NotContains(t, out, leakMarker, "%s of %T", verb, v)
			assert.NotContains(t, out, strings.ToLower(fmt.Sprintf("%x", leakMarker)), "%s of %T (hex)", verb, v)
		}
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("values", "c", *c, "app", values[1])
	slog.New(slog.NewJSONHandler(&js, nil)).Info("values", "c", *c, "app", values[1])
	assert.NotContains(t, text.String(), leakMarker)
	assert.NotContains(t, js.String(), leakMarker)
}
