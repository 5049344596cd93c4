package apify

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A base URL typed without its scheme ("127.0.0.1:18080", which url.Parse
// refuses, or "localhost:8080", which it reads as scheme "localhost") says
// what to add, whatever url.Parse made of it.
func TestBaseURLWithoutSchemeSaysToAddOne(t *testing.T) {
	for raw, suggestion := range map[string]string{
		"127.0.0.1:18080":        `"http://127.0.0.1:18080"`,
		"localhost:8080":         `"http://localhost:8080"`,
		"api.apify.com":          `"http://api.apify.com"`,
		"//api.apify.com/v2":     `"http://api.apify.com/v2"`,
		"[::1]:8080/proxy":       `"http://[::1]:8080/proxy"`,
		"127.0.0.1:1?token=abcd": `"http://127.0.0.1:1?…"`, // never the query, where a token may be
	} {
		t.Run(raw, func(t *testing.T) {
			c, err := NewClient(WithBaseURL(raw))
			require.Error(t, err)
			assert.Nil(t, c)
			assert.True(t, errors.Is(err, ErrInvalidOption))
			assert.Contains(t, err.Error(), "WithBaseURL: ")
			assert.Contains(t, err.Error(), "it has no scheme; add http:// or https:// (such as "+suggestion+")")
			assert.NotContains(t, err.Error(), "abcd")
			assert.NotContains(t, err.Error(), "first path segment", "not url.Parse's message")
		})
	}
	// With a scheme, the same addresses are fine.
	for _, raw := range []string{"http://127.0.0.1:18080", "https://localhost:8080", "HTTP://api.apify.com"} {
		_, err := NewClient(WithBaseURL(raw))
		assert.NoError(t, err, raw)
	}
}
