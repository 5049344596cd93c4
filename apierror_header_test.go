package apify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withoutHeader is e without its Header, for tests that compare the other
// fields whole.
func withoutHeader(e *APIError) *APIError {
	if e == nil {
		return nil
	}
	c := *e
	c.Header = nil
	return &c
}

// APIError.Header is the response's header: the rate-limit headers a caller
// backs off by are there, the request's own headers (the token's above all)
// are not, and a token a proxy echoes back in a header reads [REDACTED].
func TestAPIErrorHeaderIsTheResponses(t *testing.T) {
	f, c, _ := setup(t, []reply{{status: 429, header: map[string]string{
		"X-RateLimit-Limit": "40",
		"Retry-After":       "0",
		"X-Request-Id":      "req-7",
		"X-Echo":            "Bearer " + leakToken + " from " + leakToken,
		"Content-Type":      "application/json",
	}, body: `{"error":{"type":"rate-limit-exceeded","message":"slow down"}}`}}, WithToken(leakToken), WithMaxRetries(1), WithUserAgent("probe-agent"))
	closeIdle(t, c)
	_, err := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 2, f.hits())
	assert.Equal(t, "40", apiErr.Header.Get("X-RateLimit-Limit"))
	assert.Equal(t, "0", apiErr.Header.Get("Retry-After"))
	assert.Equal(t, "req-7", apiErr.Header.Get("X-Request-Id"))
	assert.Equal(t, "Bearer [REDACTED] from [REDACTED]", apiErr.Header.Get("X-Echo"))
	for _, name := range []string{"Authorization", "User-Agent", "Accept"} {
		assert.Empty(t, apiErr.Header.Values(name), "the request's %s is not the response's", name)
	}
	shown := formatAll(*apiErr) + formatAll(apiErr) + err.Error()
	assert.NotContains(t, shown, leakMarker)
	assert.NotContains(t, shown, "probe-agent")
	assert.NotContains(t, err.Error(), "X-Request-Id", "Error() does not print the header")

	// The header belongs to the error: changing it changes no other error.
	apiErr.Header.Set("X-RateLimit-Limit", "changed")
	_, err2 := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
	var apiErr2 *APIError
	require.ErrorAs(t, err2, &apiErr2)
	assert.Equal(t, "40", apiErr2.Header.Get("X-RateLimit-Limit"))
}

// The APIError a RequestError holds as Last (the ctx ended, or would have,
// during the wait before a retry) carries the header of that response.
func TestRequestErrorLastHasTheHeader(t *testing.T) {
	_, c, _ := setup(t, []reply{{status: 503, header: map[string]string{"Retry-After": "30", "X-RateLimit-Limit": "60"}}},
		WithRetryWait(time.Second, time.Minute))
	closeIdle(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
	var reqErr *RequestError
	require.ErrorAs(t, err, &reqErr)
	require.True(t, errors.Is(err, context.DeadlineExceeded))
	require.NotNil(t, reqErr.Last)
	assert.Equal(t, "60", reqErr.Last.Header.Get("X-RateLimit-Limit"))
	assert.Equal(t, "30", reqErr.Last.Header.Get("Retry-After"))
}

// A redirect's Location, which the transport takes out of the header (see
// holdRedirect), is back in APIError.Header, redacted.
func TestAPIErrorHeaderKeepsARedirectsLocation(t *testing.T) {
	_, c, srv := setup(t, nil, WithToken(leakToken), WithMaxRetries(0))
	closeIdle(t, c)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://elsewhere.test/?auth="+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	_, err := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "http://elsewhere.test/?auth=[REDACTED]", apiErr.Header.Get("Location"))
	assert.NotContains(t, fmt.Sprintf("%+v", *apiErr), leakMarker)
}
