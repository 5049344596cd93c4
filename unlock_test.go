package apify

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. Construction -------------------------------------------------------

// The defaults, as a caller sees them: the API's address, no token, 5
// attempts with waits of DefaultRetryWaitMin doubling (full jitter) up to
// DefaultRetryWaitMax, and each attempt bounded by DefaultTimeout. (Nothing
// is logged: TestNothingIsPrintedWithoutALogger; redirects are not
// followed: TestRedirectsAreNotFollowed; the Client's own pool keeps a
// connection per concurrent caller: TestNoNewConnectionsOnceWarm.)
func TestNewClientDefaults(t *testing.T) {
	c, err := NewClient()
	require.NoError(t, err)
	assert.Equal(t, "https://api.apify.com", c.BaseURL())
	assert.Equal(t, "apify.Client{baseURL: https://api.apify.com, token: none, maxRetries: 4, retryWait: 500ms..30s, timeout: 30s}", c.String())

	t.Run("retries and waits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeAPI{replies: statuses(503)}
			c := memClient(t, f)                           // WithHTTPClient changes the transport, nothing else
			c.randN = func(n int64) int64 { return n - 1 } // the top of each jitter range
			_, err := unlock(c, "q", "k")
			require.ErrorIs(t, err, ErrServerError)
			assert.Equal(t, 1+DefaultMaxRetries, f.hits())
			assert.Equal(t, []time.Duration{2 * DefaultRetryWaitMin, 4 * DefaultRetryWaitMin, 8 * DefaultRetryWaitMin, 16 * DefaultRetryWaitMin}, f.waits())
			assert.Empty(t, f.requests()[0].Header.Values("Authorization"), "no token by default: public queues work anonymously")
		})
	})

	t.Run("attempt timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone), WithMaxRetries(0))
			start := time.Now()
			_, err := unlock(c, "q", "k")
			assert.Equal(t, DefaultTimeout, time.Since(start))
			require.ErrorIs(t, err, ErrAttemptTimeout)
		})
	})
}

func TestNewClientRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want []string // each must appear in the error
	}{
		{"negative retries", []Option{WithMaxRetries(-1)}, []string{"WithMaxRetries", "-1 is negative"}},
		{"min wait above max", []Option{WithRetryWait(2*time.Second, time.Second)}, []string{"WithRetryWait", "min 2s is greater than max 1s"}},
		{"negative wait", []Option{WithRetryWait(-time.Second, time.Second)}, []string{"WithRetryWait", "negative"}},
		{"zero min wait with a positive max", []Option{WithRetryWait(0, 30*time.Second)}, []string{"WithRetryWait", "min is 0 with max 30s", "every wait would be 0"}},
		{"zero timeout", []Option{WithTimeout(0)}, []string{"WithTimeout", "0s is not positive"}},
		{"negative timeout", []Option{WithTimeout(-time.Second)}, []string{"WithTimeout", "-1s is not positive"}},
		{"ftp base URL", []Option{WithBaseURL("ftp://h")}, []string{"WithBaseURL", `"ftp://h" is not an absolute http or https URL`}},
		{"relative base URL", []Option{WithBaseURL("api.apify.com")}, []string{"WithBaseURL", "not an absolute http or https URL"}},
		{"base URL without host", []Option{WithBaseURL("http://")}, []string{"WithBaseURL", "has no host"}},
		{"base URL with user info", []Option{WithBaseURL("http://user:pw@h")}, []string{"WithBaseURL", "user info"}},
		{"base URL with query", []Option{WithBaseURL("http://h/?token=x")}, []string{"WithBaseURL", "has a query"}},
		{"base URL with fragment", []Option{WithBaseURL("http://h/#x")}, []string{"WithBaseURL", "has a fragment"}},
		{"unparsable base URL", []Option{WithBaseURL("http://h/%zz")}, []string{"WithBaseURL", "does not parse"}},
		// A token put in the base URL by mistake is never echoed: the
		// messages show the URL without its query, fragment and user info.
		{"base URL with a token in its query", []Option{WithBaseURL("http://h/?token=abcdef")}, []string{"WithBaseURL", `"http://h/?…" has a query`, "WithToken"}},
		{"base URL with a token in its fragment", []Option{WithBaseURL("http://h/#token=abcdef")}, []string{"WithBaseURL", `"http://h/#…" has a fragment`}},
		{"unparsable base URL with a token in its query", []Option{WithBaseURL("http://h/%zz?token=abcdef")}, []string{"WithBaseURL", `"http://h/%zz?…" does not parse`}},
		{"unparsable base URL with user info", []Option{WithBaseURL("http://u:abcdef@h/%zz")}, []string{"WithBaseURL", `"http://…@h/%zz" does not parse`}},
		{"ftp base URL with a token in its query", []Option{WithBaseURL("ftp://h/?token=abcdef")}, []string{"WithBaseURL", `"ftp://h/?…" is not`}},
		{"base URL without host, with a token", []Option{WithBaseURL("http://?token=abcdef")}, []string{"WithBaseURL", "has no host"}},
		{"empty token", []Option{WithToken("")}, []string{"WithToken", "empty"}},
		{"token with space", []Option{WithToken("abc def")}, []string{"WithToken", "whitespace or a control character"}},
		{"token with newline", []Option{WithToken("abc\ndef")}, []string{"WithToken", "whitespace or a control character"}},
		{"token with NUL", []Option{WithToken("abc\x00def")}, []string{"WithToken", "whitespace or a control character"}},
		{"token not UTF-8", []Option{WithToken("abc\xffdef")}, []string{"WithToken", "not valid UTF-8"}},
		{"nil HTTP client", []Option{WithHTTPClient(nil)}, []string{"WithHTTPClient", "nil"}},
		{"user agent with CR", []Option{WithUserAgent("x\r\nX-Evil: 1")}, []string{"WithUserAgent", "control character"}},
		{"every bad option is reported", []Option{WithMaxRetries(-2), WithTimeout(0)}, []string{"WithMaxRetries", "WithTimeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.opts...)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, ErrInvalidOption)
			assert.True(t, strings.HasPrefix(err.Error(), "apify: NewClient: invalid option: "), err.Error())
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "def", "a token is never echoed")
		})
	}
}

func TestBaseURLPathPrefix(t *testing.T) {
	tests := []struct{ suffix, wantURI string }{
		{"", "/v2/request-queues/q/requests/unlock"},
		{"/", "/v2/request-queues/q/requests/unlock"},
		{"/v2", "/v2/request-queues/q/requests/unlock"},
		{"/v2/", "/v2/request-queues/q/requests/unlock"},
		{"/proxy", "/proxy/v2/request-queues/q/requests/unlock"},
		{"/proxy/", "/proxy/v2/request-queues/q/requests/unlock"},
		{"/proxy/v2", "/proxy/v2/request-queues/q/requests/unlock"},
		{"/proxy/v2//", "/proxy/v2/request-queues/q/requests/unlock"},
		{"/a%20b/", "/a%20b/v2/request-queues/q/requests/unlock"},
		{"/v2x", "/v2x/v2/request-queues/q/requests/unlock"},
	}
	for _, tt := range tests {
		t.Run(tt.suffix, func(t *testing.T) {
			var got atomic.Value
			c := memClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Store(r.URL.RequestURI())
				_, _ = io.WriteString(w, `{"data":{"unlockedCount":1}}`)
			}), WithBaseURL("http://h"+tt.suffix))
			_, err := unlock(c, "q", "")
			require.NoError(t, err)
			assert.Equal(t, tt.wantURI, got.Load())
		})
	}
}

func TestNewClientFromEnv(t *testing.T) {
	f, _, srv := setup(t, nil)
	t.Setenv("APIFY_TOKEN", "env-token")
	t.Setenv("APIFY_API_BASE_URL", srv.URL+testPrefix+"/v2")

	c, err := NewClientFromEnv()
	require.NoError(t, err)
	_, err = unlock(c, "q", "k")
	require.NoError(t, err)
	require.Equal(t, 1, f.hits())
	assert.Equal(t, "Bearer env-token", f.requests()[0].Header.Get("Authorization"))

	// Options win over the environment.
	c, err = NewClientFromEnv(WithToken("option-token"))
	require.NoError(t, err)
	_, err = unlock(c, "q", "k")
	require.NoError(t, err)
	assert.Equal(t, "Bearer option-token", f.requests()[1].Header.Get("Authorization"))

	// A bad environment is reported like a bad option.
	t.Setenv("APIFY_API_BASE_URL", "not a url")
	_, err = NewClientFromEnv()
	assert.ErrorIs(t, err, ErrInvalidOption)
	assert.Contains(t, err.Error(), "WithBaseURL")

	// Empty variables mean "not set".
	t.Setenv("APIFY_TOKEN", "")
	t.Setenv("APIFY_API_BASE_URL", "")
	c, err = NewClientFromEnv()
	require.NoError(t, err)
	assert.Equal(t, DefaultBaseURL, c.BaseURL())
	assert.Contains(t, c.String(), "token: none")
}

// ---- 2. Validation before any I/O ------------------------------------------

func TestUnlockRequestsValidatesBeforeIO(t *testing.T) {
	tests := []struct {
		name, queueID, clientKey string
		want                     error
		wantMsg                  string
	}{
		{"empty queue ID", "", "k", ErrInvalidQueueID, "apify: invalid queue ID: the queue ID is empty"},
		{"dot queue ID", ".", "k", ErrInvalidQueueID, "dot segment"},
		{"dot-dot queue ID", "..", "k", ErrInvalidQueueID, "dot segment"},
		{"queue ID with NUL", "a\x00b", "k", ErrInvalidQueueID, "control character (U+0000) at byte 1"},
		{"queue ID with newline", "a\nb", "k", ErrInvalidQueueID, "control character (U+000A) at byte 1"},
		{"queue ID with DEL", "ab\x7f", "k", ErrInvalidQueueID, "control character (U+007F) at byte 2"},
		{"queue ID not UTF-8", "a\xffb", "k", ErrInvalidQueueID, "not valid UTF-8"},
		{"clientKey of 33 ASCII characters", "q", strings.Repeat("k", 33), ErrInvalidClientKey, "apify: invalid clientKey: the clientKey has 33 characters; the API accepts 1 to 32"},
		{"clientKey of 33 runes", "q", strings.Repeat("é", 33), ErrInvalidClientKey, "has 33 characters"},
		{"clientKey not UTF-8", "q", "k\xff", ErrInvalidClientKey, "not valid UTF-8"},
		{"clientKey with tab", "q", "a\tb", ErrInvalidClientKey, "control character (U+0009) at byte 1"},
		{"clientKey with newline", "q", "ab\n", ErrInvalidClientKey, "control character (U+000A) at byte 2"},
	}
	f, c, _ := setup(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := unlock(c, tt.queueID, tt.clientKey)
			assert.Nil(t, res)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.wantMsg)
			var apiErr *APIError
			assert.False(t, errors.As(err, &apiErr), "a validation error is not an API error")
			assert.Zero(t, f.hits(), "rejected before any I/O")
		})
	}

	t.Run("nil context", func(t *testing.T) {
		_, err := c.RequestQueue("q").UnlockRequests(nilContext(), "k")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "nil Context")
		assert.Zero(t, f.hits())
	})

	t.Run("limits are inclusive", func(t *testing.T) {
		for _, key := range []string{"", "k", strings.Repeat("é", 32), strings.Repeat("k", 32)} {
			_, err := unlock(c, "q", key)
			require.NoError(t, err, "clientKey %q", key)
		}
		assert.Equal(t, 4, f.hits())
	})
}

// nilContext hides a nil Context from vet and staticcheck.
func nilContext() context.Context { return nil }

func TestRequestQueueDoesNoIO(t *testing.T) {
	f, c, _ := setup(t, nil)
	q := c.RequestQueue("user~queue")
	assert.Equal(t, "user~queue", q.ID())
	_ = c.RequestQueue("")
	assert.Zero(t, f.hits())
}

// ---- 3. The wire ------------------------------------------------------------

func TestUnlockRequestsWire(t *testing.T) {
	tests := []struct {
		name, queueID, clientKey, wantURI string
	}{
		{"plain ID", "WkzbQMuFYuamGv3YF", "client-abc", "/v2/request-queues/WkzbQMuFYuamGv3YF/requests/unlock?clientKey=client-abc"},
		{"named queue stays as is", "username~queue-name", "k", "/v2/request-queues/username~queue-name/requests/unlock?clientKey=k"},
		{"own named queue", "~queue-name", "k", "/v2/request-queues/~queue-name/requests/unlock?clientKey=k"},
		{"no clientKey: parameter omitted", "q", "", "/v2/request-queues/q/requests/unlock"},
		{"slash is escaped", "a/b", "k", "/v2/request-queues/a%2Fb/requests/unlock?clientKey=k"},
		{"question mark cannot start the query", "a?clientKey=x", "k", "/v2/request-queues/a%3FclientKey=x/requests/unlock?clientKey=k"},
		{"hash cannot cut the path", "a#b", "k", "/v2/request-queues/a%23b/requests/unlock?clientKey=k"},
		{"space", "a b", "k", "/v2/request-queues/a%20b/requests/unlock?clientKey=k"},
		{"non-ASCII", "fronta-ř", "k", "/v2/request-queues/fronta-%C5%99/requests/unlock?clientKey=k"},
		{"percent is escaped, never decoded", "a%2Fb", "k", "/v2/request-queues/a%252Fb/requests/unlock?clientKey=k"},
		{"dots inside an ID", "a..b", "k", "/v2/request-queues/a..b/requests/unlock?clientKey=k"},
		{"clientKey is query-escaped", "q", "k 1&token=x#y", "/v2/request-queues/q/requests/unlock?clientKey=k+1%26token%3Dx%23y"},
		{"clientKey non-ASCII", "q", "klíč", "/v2/request-queues/q/requests/unlock?clientKey=kl%C3%AD%C4%8D"},
	}
	for _, withToken := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/token=%v", tt.name, withToken), func(t *testing.T) {
				var opts []Option
				if withToken {
					opts = append(opts, WithToken("s3cr3t-token"))
				}
				f, c, _ := setup(t, []reply{ok(7)}, opts...)
				res, err := unlock(c, tt.queueID, tt.clientKey)
				require.NoError(t, err)
				assert.Equal(t, &UnlockRequestsResult{UnlockedCount: 7}, res)

				reqs := f.requests()
				require.Len(t, reqs, 1)
				r := reqs[0]
				assert.Equal(t, http.MethodPost, r.Method)
				assert.Equal(t, testPrefix+tt.wantURI, r.RequestURI)
				assert.Empty(t, r.Body)
				assert.Equal(t, int64(0), r.ContentLength)
				assert.Equal(t, "0", r.Header.Get("Content-Length"))
				assert.Empty(t, r.TransferEnc, "no chunked encoding for an empty body")
				assert.Equal(t, "application/json", r.Header.Get("Accept"))
				assert.Empty(t, r.Header.Values("Content-Type"), "no body, so no Content-Type")
				assert.Equal(t, wantUserAgent(false, ""), r.Header.Get("User-Agent"))
				if withToken {
					assert.Equal(t, []string{"Bearer s3cr3t-token"}, r.Header.Values("Authorization"))
				} else {
					assert.Empty(t, r.Header.Values("Authorization"))
				}
				assert.NotContains(t, r.RequestURI, "token=s3cr3t", "the token never goes in the URL")
			})
		}
	}
}

func wantUserAgent(atHome bool, suffix string) string {
	ua := fmt.Sprintf("rqkit-apify-go/%s (%s; %s); isAtHome/%v", Version, runtime.GOOS, runtime.Version(), atHome)
	if suffix != "" {
		ua += "; " + suffix
	}
	return ua
}

func TestUserAgent(t *testing.T) {
	tests := []struct {
		name, atHome, suffix string
		want                 string
	}{
		{"outside Apify", "", "", wantUserAgent(false, "")},
		{"inside an Actor run", "1", "", wantUserAgent(true, "")},
		{"with a suffix", "", "my-crawler/1.2", wantUserAgent(false, "my-crawler/1.2")},
		{"both", "true", "sdk/3", wantUserAgent(true, "sdk/3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("APIFY_IS_AT_HOME", tt.atHome)
			f, c, _ := setup(t, nil, WithUserAgent(tt.suffix))
			_, err := unlock(c, "q", "k")
			require.NoError(t, err)
			assert.Equal(t, tt.want, f.requests()[0].Header.Get("User-Agent"))
		})
	}
	assert.Equal(t, "rqkit-apify-go/0.2.0 (linux; go1.2.3); isAtHome/true; x", strings.Replace(
		userAgent(true, "x"), runtime.GOOS+"; "+runtime.Version(), "linux; go1.2.3", 1))
}

// ---- 4. Success and malformed 2xx --------------------------------------------

func TestUnlockRequestsSuccess(t *testing.T) {
	tests := []struct {
		body string
		want int
	}{
		{`{"data":{"unlockedCount":0}}`, 0},
		{`{"data":{"unlockedCount":10}}`, 10},
		{`{"data":{"unlockedCount":2147483648}}`, 2147483648},
		{` {"data": {"unlockedCount": 25, "extra": true}, "more": [1,2]} `, 25},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			_, c, _ := setup(t, []reply{{status: 200, body: tt.body}})
			res, err := unlock(c, "q", "k")
			require.NoError(t, err)
			assert.Equal(t, tt.want, res.UnlockedCount)
		})
	}
}

func TestUnlockRequestsUnexpectedSuccessBody(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"empty body", 200, ``, "the body is not the documented JSON"},
		{"not JSON", 200, `<html>ok</html>`, "the body is not the documented JSON"},
		{"no data", 200, `{}`, "no data object"},
		{"data null", 200, `{"data":null}`, "no data object"},
		{"data not an object", 200, `{"data":3}`, "the body is not the documented JSON"},
		{"no unlockedCount", 200, `{"data":{}}`, "data.unlockedCount is missing"},
		{"unlockedCount null", 200, `{"data":{"unlockedCount":null}}`, "data.unlockedCount is missing"},
		{"unlockedCount a string", 200, `{"data":{"unlockedCount":"3"}}`, "the body is not the documented JSON"},
		{"unlockedCount a fraction", 200, `{"data":{"unlockedCount":3.5}}`, "the body is not the documented JSON"},
		{"unlockedCount in exponent form", 200, `{"data":{"unlockedCount":1e3}}`, "the body is not the documented JSON"},
		{"unlockedCount negative", 200, `{"data":{"unlockedCount":-1}}`, "data.unlockedCount is negative (-1)"},
		{"unlockedCount overflows", 200, `{"data":{"unlockedCount":99999999999999999999}}`, "the body is not the documented JSON"},
		{"trailing garbage", 200, `{"data":{"unlockedCount":1}} {}`, "the body is not the documented JSON"},
		{"204 without a body", 204, ``, "the body is not the documented JSON"},
		{"body over 1 MiB", 200, `{"data":{"unlockedCount":1},"pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`, "the body is larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c, _ := setup(t, []reply{{status: tt.status, body: tt.body}})
			res, err := unlock(c, "q", "k")
			assert.Nil(t, res, "never a silent zero")
			require.ErrorIs(t, err, ErrUnexpectedResponse)
			assert.Contains(t, err.Error(), tt.want)
			assert.True(t, strings.HasPrefix(err.Error(),
				fmt.Sprintf("apify: POST %s/v2/request-queues/q/requests/unlock: %d response: unexpected response: ", testPrefix, tt.status)), err.Error())
			assert.Equal(t, 1, f.hits(), "a malformed success is not retried")
		})
	}
}

// ---- 5. Errors -----------------------------------------------------------------

var allSentinels = []error{
	ErrInvalidInput, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrRateLimited, ErrServerError,
	ErrInvalidClientKey, ErrInvalidQueueID, ErrUnexpectedResponse, ErrAttemptTimeout, ErrInvalidOption,
}

func TestUnlockRequestsAPIErrors(t *testing.T) {
	const path = testPrefix + "/v2/request-queues/abc/requests/unlock"
	html := "<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"
	long := strings.Repeat("é", 400) // 800 bytes
	tests := []struct {
		name     string
		reply    reply
		want     APIError
		wantIs   []error
		wantText string
	}{
		{
			name:     "400 invalid input",
			reply:    apiErr(400, "invalid-input", "Invalid input: limit"),
			want:     APIError{StatusCode: 400, Type: "invalid-input", Message: "Invalid input: limit"},
			wantIs:   []error{ErrInvalidInput},
			wantText: "apify: POST " + path + ": 400 invalid-input: Invalid input: limit",
		},
		{
			name:     "400 invalid client key",
			reply:    apiErr(400, "invalid-client-key", "Client key is invalid"),
			want:     APIError{StatusCode: 400, Type: "invalid-client-key", Message: "Client key is invalid"},
			wantIs:   []error{ErrInvalidInput, ErrInvalidClientKey},
			wantText: "apify: POST " + path + ": 400 invalid-client-key: Client key is invalid",
		},
		{
			name:     "401",
			reply:    apiErr(401, "invalid-token", "Authentication token is not valid."),
			want:     APIError{StatusCode: 401, Type: "invalid-token", Message: "Authentication token is not valid."},
			wantIs:   []error{ErrUnauthorized},
			wantText: "apify: POST " + path + ": 401 invalid-token: Authentication token is not valid.",
		},
		{
			name:   "403",
			reply:  apiErr(403, "insufficient-permissions", "No."),
			want:   APIError{StatusCode: 403, Type: "insufficient-permissions", Message: "No."},
			wantIs: []error{ErrForbidden},
		},
		{
			name:     "404",
			reply:    apiErr(404, "record-not-found", "Queue was not found"),
			want:     APIError{StatusCode: 404, Type: "record-not-found", Message: "Queue was not found"},
			wantIs:   []error{ErrNotFound},
			wantText: "apify: POST " + path + ": 404 record-not-found: Queue was not found",
		},
		{
			name:   "405 matches no sentinel",
			reply:  apiErr(405, "method-not-allowed", "Only GET"),
			want:   APIError{StatusCode: 405, Type: "method-not-allowed", Message: "Only GET"},
			wantIs: nil,
		},
		{
			name:     "501 is not retried",
			reply:    reply{status: 501, body: ""},
			want:     APIError{StatusCode: 501},
			wantIs:   []error{ErrServerError},
			wantText: "apify: POST " + path + ": 501 Not Implemented",
		},
		{
			name:     "a proxy's HTML page",
			reply:    reply{status: 418, body: html},
			want:     APIError{StatusCode: 418, Message: "<html><body><h1>502 Bad Gateway</h1> <p>nginx</p></body></html>"},
			wantText: "apify: POST " + path + ": 418: <html><body><h1>502 Bad Gateway</h1> <p>nginx</p></body></html>",
		},
		{
			name:  "a long body is cut to 512 bytes on a rune boundary",
			reply: reply{status: 409, body: long},
			want:  APIError{StatusCode: 409, Message: strings.Repeat("é", 256)},
		},
		{
			name:  "an envelope without type",
			reply: reply{status: 409, body: `{"error":{"message":"conflict"}}`},
			want:  APIError{StatusCode: 409, Message: "conflict"},
		},
		{
			name:  "a JSON body that is not the envelope",
			reply: reply{status: 409, body: `{"error":"conflict"}`},
			want:  APIError{StatusCode: 409, Message: `{"error":"conflict"}`},
		},
		{
			name:   "Retry-After on a non-retried status is still reported",
			reply:  reply{status: 403, header: map[string]string{"Retry-After": "7"}, body: `{"error":{"type":"x","message":"y"}}`},
			want:   APIError{StatusCode: 403, Type: "x", Message: "y", RetryAfter: 7 * time.Second},
			wantIs: []error{ErrForbidden},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c, _ := setup(t, []reply{tt.reply})
			res, err := unlock(c, "abc", "k")
			assert.Nil(t, res)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			want := tt.want
			want.Method, want.Path, want.Attempts = "POST", path, 1
			assert.Equal(t, &want, withoutHeader(apiErr))
			for _, s := range allSentinels {
				assert.Equal(t, containsErr(tt.wantIs, s), errors.Is(err, s), "errors.Is(err, %v)", s)
			}
			if tt.wantText != "" {
				assert.Equal(t, tt.wantText, err.Error())
			}
			assert.LessOrEqual(t, len(apiErr.Message), maxMessageBytes)
			assert.Equal(t, 1, f.hits(), "not retried")
		})
	}
}

func containsErr(errs []error, target error) bool {
	for _, e := range errs {
		if e == target {
			return true
		}
	}
	return false
}

func TestAPIErrorText(t *testing.T) {
	e := &APIError{StatusCode: 503, Type: "server-error", Message: "busy", Method: "POST", Path: "/v2/x", Attempts: 5}
	assert.Equal(t, "apify: POST /v2/x: 503 server-error: busy (after 5 attempts)", e.Error())
	e = &APIError{StatusCode: 500, Method: "POST", Path: "/v2/x", Attempts: 1}
	assert.Equal(t, "apify: POST /v2/x: 500 Internal Server Error", e.Error())
	assert.True(t, (&APIError{StatusCode: 429}).Temporary())
	assert.False(t, (&APIError{StatusCode: 501}).Temporary())
}

// Error bodies are read to the end and closed, so every call reuses the one
// keep-alive connection: a failure costs no new TCP connection.
func TestErrorResponsesKeepTheConnection(t *testing.T) {
	big := `{"error":{"type":"record-not-found","message":"` + strings.Repeat("x", 100_000) + `"}}`
	f, c, _ := setup(t, []reply{{status: 404, body: big}})
	for range 20 {
		_, err := unlock(c, "q", "k")
		require.ErrorIs(t, err, ErrNotFound)
	}
	f2, c2, _ := setup(t, []reply{{status: 503, body: "busy"}}, WithMaxRetries(3))
	for range 5 {
		_, err := unlock(c2, "q", "k")
		require.ErrorIs(t, err, ErrServerError)
	}
	assert.Equal(t, 20, f.hits())
	assert.Equal(t, int64(1), f.newConns.Load(), "404s reuse the connection")
	assert.Equal(t, 20, f2.hits())
	assert.Equal(t, int64(1), f2.newConns.Load(), "retried 503s reuse the connection")
}

// ---- 6. Retries ------------------------------------------------------------------

func statuses(codes ...int) []reply {
	out := make([]reply, len(codes))
	for i, code := range codes {
		if code == 200 {
			out[i] = ok(3)
		} else {
			out[i] = reply{status: code, body: fmt.Sprintf(`{"error":{"type":"t%d","message":"m"}}`, code)}
		}
	}
	return out
}

func TestRetryPolicyForStatuses(t *testing.T) {
	tests := []struct {
		name         string
		codes        []int
		opts         []Option
		wantAttempts int
		wantStatus   int // 0: success
	}{
		{"429 then success", []int{429, 200}, nil, 2, 0},
		{"each retryable 5xx", []int{500, 502, 503, 504, 200}, nil, 5, 0},
		{"503 until retries run out", []int{503}, nil, 5, 503},
		{"429 until retries run out", []int{429}, nil, 5, 429},
		{"501 is never retried", []int{501, 200}, nil, 1, 501},
		{"505 is never retried", []int{505, 200}, nil, 1, 505},
		{"400 is never retried", []int{400, 200}, nil, 1, 400},
		{"401 is never retried", []int{401, 200}, nil, 1, 401},
		{"404 is never retried", []int{404, 200}, nil, 1, 404},
		{"409 is never retried", []int{409, 200}, nil, 1, 409},
		{"no retries", []int{503, 200}, []Option{WithMaxRetries(0)}, 1, 503},
		{"two retries", []int{503}, []Option{WithMaxRetries(2)}, 3, 503},
		{"a non-retryable error ends the retries", []int{503, 404, 200}, nil, 2, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &fakeAPI{replies: statuses(tt.codes...)}
				c := memClient(t, s, tt.opts...)
				res, err := unlock(c, "q", "k")
				assert.Equal(t, tt.wantAttempts, s.hits())
				if tt.wantStatus == 0 {
					require.NoError(t, err)
					assert.Equal(t, 3, res.UnlockedCount)
					return
				}
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr, "the last response is decoded, not a bare 'giving up'")
				assert.Equal(t, &APIError{
					StatusCode: tt.wantStatus, Type: fmt.Sprintf("t%d", tt.wantStatus), Message: "m",
					Method: "POST", Path: testPrefix + "/v2/request-queues/q/requests/unlock", Attempts: tt.wantAttempts,
				}, withoutHeader(apiErr))
			})
		})
	}
}

// netErr builds the errors net/http returns for network failures.
func netErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
}

// failingBody yields some bytes and then an error, like a connection cut mid-body.
type failingBody struct {
	data []byte
	err  error
}

func (b *failingBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	return 0, b.err
}
func (b *failingBody) Close() error { return nil }

func TestRetryPolicyForNetworkErrors(t *testing.T) {
	gzipped := func() []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(`{"data":{"unlockedCount":1}}`))
		_ = zw.Close()
		return b.Bytes()
	}()
	tests := []struct {
		name      string
		fail      func(r *http.Request) (*http.Response, error)
		retried   bool
		wantIs    error
		wantInMsg string
	}{
		{"connection refused", func(*http.Request) (*http.Response, error) {
			return nil, netErr("dial", syscall.ECONNREFUSED)
		}, true, syscall.ECONNREFUSED, "connection refused"},
		{"connection reset", func(*http.Request) (*http.Response, error) {
			return nil, netErr("read", syscall.ECONNRESET)
		}, true, syscall.ECONNRESET, "connection reset by peer"},
		{"closed before the status line", func(*http.Request) (*http.Response, error) {
			return nil, io.EOF
		}, true, io.EOF, "EOF"},
		{"body cut off mid-read", func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: 100, Request: r,
				Body: &failingBody{data: []byte(`{"data":{"unlo`), err: io.ErrUnexpectedEOF}}, nil
		}, true, io.ErrUnexpectedEOF, "reading response body: unexpected EOF"},
		{"body reset mid-read", func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Request: r,
				Body: &failingBody{data: []byte(`{"da`), err: netErr("read", syscall.ECONNRESET)}}, nil
		}, true, syscall.ECONNRESET, "reading response body"},
		{"a body that is not gzip", func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Request: r,
				Body: &failingBody{err: gzip.ErrHeader}}, nil
		}, false, ErrUnexpectedResponse, "gzip: invalid header"},
		{"a gzip body with a bad checksum", func(r *http.Request) (*http.Response, error) {
			zr, err := gzip.NewReader(bytes.NewReader(append(gzipped[:len(gzipped)-8:len(gzipped)-8], 1, 2, 3, 4, 5, 6, 7, 8)))
			if err != nil {
				return nil, err
			}
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Request: r, Body: zr}, nil
		}, false, ErrUnexpectedResponse, "gzip: invalid checksum"},
		{"unknown certificate authority", func(*http.Request) (*http.Response, error) {
			return nil, x509.UnknownAuthorityError{}
		}, false, nil, "x509: certificate signed by unknown authority"},
		{"host not found", func(*http.Request) (*http.Response, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.test", IsNotFound: true}}
		}, false, nil, "no such host"},
		{"temporary DNS failure", func(*http.Request) (*http.Response, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "api.test", IsTemporary: true}}
		}, true, nil, "server misbehaving"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
					calls.Add(1)
					return tt.fail(r)
				}))
				_, err := unlock(c, "q", "k")
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				want := 1
				if tt.retried {
					want = 5
				}
				assert.Equal(t, int32(want), calls.Load())
				assert.Equal(t, want, reqErr.Attempts)
				assert.Equal(t, "POST", reqErr.Method)
				assert.Equal(t, testPrefix+"/v2/request-queues/q/requests/unlock", reqErr.Path)
				if tt.wantIs != nil {
					assert.ErrorIs(t, err, tt.wantIs)
				}
				assert.Contains(t, err.Error(), tt.wantInMsg)
				assert.NotContains(t, err.Error(), "http://api.test", "net/http's url.Error layer is dropped")
				var apiErr *APIError
				assert.False(t, errors.As(err, &apiErr))
			})
		})
	}

	t.Run("recovers after transient failures", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
				switch calls.Add(1) {
				case 1:
					return nil, netErr("dial", syscall.ECONNREFUSED)
				case 2:
					return nil, netErr("read", syscall.ECONNRESET)
				}
				return &http.Response{StatusCode: 200, Header: http.Header{}, Request: r, ContentLength: -1,
					Body: io.NopCloser(strings.NewReader(`{"data":{"unlockedCount":4}}`))}, nil
			}))
			res, err := unlock(c, "q", "k")
			require.NoError(t, err)
			assert.Equal(t, 4, res.UnlockedCount)
			assert.Equal(t, int32(3), calls.Load())
		})
	})
}

func TestBackoffIsExponentialWithFullJitter(t *testing.T) {
	tests := []struct {
		name   string
		randN  func(n int64) int64
		opts   []Option
		waits  []time.Duration
		bounds string
	}{
		{"jitter at its top", func(n int64) int64 { return n - 1 }, nil,
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}, "[min, min·2^(n+1)]"},
		{"jitter at its bottom", func(int64) int64 { return 0 }, nil,
			[]time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}, "min"},
		{"capped at the max wait", func(n int64) int64 { return n - 1 }, []Option{WithRetryWait(time.Second, 3*time.Second)},
			[]time.Duration{2 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}, "max"},
		{"min equal to max", func(n int64) int64 { return n - 1 }, []Option{WithRetryWait(time.Second, time.Second)},
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}, "fixed"},
		{"no wait", func(n int64) int64 { return n - 1 }, []Option{WithRetryWait(0, 0)},
			[]time.Duration{0, 0, 0, 0}, "zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &fakeAPI{replies: statuses(503)}
				c := memClient(t, s, tt.opts...)
				c.randN = tt.randN
				_, err := unlock(c, "q", "k")
				require.ErrorIs(t, err, ErrServerError)
				assert.Equal(t, tt.waits, s.waits())
			})
		})
	}

	t.Run("huge retry counts never overflow", func(t *testing.T) {
		// No call can make 2^30 retries: retryWait itself is asked.
		c, err := NewClient(WithRetryWait(time.Millisecond, time.Hour))
		require.NoError(t, err)
		c.randN = func(n int64) int64 { return n - 1 }
		for _, n := range []int{0, 10, 40, 61, 62, 63, 64, 100, 1 << 30} {
			w := c.retryWait(n, nil)
			assert.GreaterOrEqual(t, w, time.Millisecond, "retry %d", n)
			assert.LessOrEqual(t, w, time.Hour, "retry %d", n)
		}
	})
}

func TestRetryAfterIsHonouredAndCapped(t *testing.T) {
	start := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // synctest's clock starts here
	tests := []struct {
		name     string
		status   int
		after    string
		wantWait time.Duration
	}{
		{"seconds on a 429", 429, "2", 2 * time.Second},
		{"seconds on a 503", 503, "7", 7 * time.Second},
		{"an HTTP date", 503, start.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		{"a date in the past waits the min", 429, start.Add(-time.Hour).Format(http.TimeFormat), 500 * time.Millisecond},
		{"zero waits the min", 429, "0", 500 * time.Millisecond},
		{"an absurd delay is capped at the max", 429, "999999", 30 * time.Second},
		{"an overflowing delay is capped at the max", 429, "99999999999999999999999", 30 * time.Second},
		{"garbage falls back to backoff", 429, "soon", time.Second},
		{"negative falls back to backoff", 429, "-5", time.Second},
		{"ignored on a 500", 500, "9", time.Second},
		{"ignored on a 502", 502, "9", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &fakeAPI{replies: []reply{
					{status: tt.status, header: map[string]string{"Retry-After": tt.after}, body: `{"error":{"type":"x","message":"y"}}`},
					ok(1),
				}}
				c := memClient(t, s)
				c.randN = func(n int64) int64 { return n - 1 }
				_, err := unlock(c, "q", "k")
				require.NoError(t, err)
				assert.Equal(t, []time.Duration{tt.wantWait}, s.waits())
			})
		})
	}

	t.Run("the final error carries the hint", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: []reply{{status: 429, header: map[string]string{"Retry-After": "3"}}}}
			c := memClient(t, s, WithMaxRetries(1))
			_, err := unlock(c, "q", "k")
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 3*time.Second, apiErr.RetryAfter)
			assert.Equal(t, 2, apiErr.Attempts)
			assert.ErrorIs(t, err, ErrRateLimited)
		})
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"  12 ", 12 * time.Second, true},
		{"9223372036", time.Duration(9223372036) * time.Second, true},
		{"9223372037", time.Duration(1<<63 - 1), true},
		{"1e3", 0, false},
		{"1.5", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Sunday, 29-Nov-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Sun Nov 29 12:00:45 2026", 45 * time.Second, true},       // asctime
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		got, gotOK := parseRetryAfter(tt.in, now)
		assert.Equal(t, tt.ok, gotOK, "%q", tt.in)
		assert.Equal(t, tt.want, got, "%q", tt.in)
	}
}

// ---- 7. Time -------------------------------------------------------------------

func TestContextBoundsTheWholeCall(t *testing.T) {
	t.Run("cancelled during a request", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone))
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, time.Second, time.Since(start))
			require.ErrorIs(t, err, context.Canceled)
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, 1, reqErr.Attempts)
		})
	})

	t.Run("deadline during a request", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, 2*time.Second, time.Since(start))
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.NotErrorIs(t, err, ErrAttemptTimeout)
		})
	})

	t.Run("cancelled during a backoff wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: statuses(503)}
			c := memClient(t, s)
			c.randN = func(n int64) int64 { return n - 1 } // first wait: 1s
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, 300*time.Millisecond, time.Since(start))
			assert.Equal(t, 1, s.hits(), "no attempt after the ctx is done")
			require.ErrorIs(t, err, context.Canceled)
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, 1, reqErr.Attempts)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr, "the response being retried stays reachable")
			assert.Equal(t, 503, apiErr.StatusCode)
			assert.Equal(t, reqErr.Last, apiErr)
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context canceled (last response 503 t503)", err.Error())
		})
	})

	t.Run("a wait that would outlast the deadline is not started", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: statuses(502, 502, 502)}
			c := memClient(t, s)
			c.randN = func(n int64) int64 { return n - 1 } // waits 1s, 2s, ...
			ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, time.Second, time.Since(start), "the 1s wait is taken; the 2s one, ending at 3s, is not")
			assert.Equal(t, 2, s.hits())
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, ErrServerError)
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, context.DeadlineExceeded, reqErr.Err, "the same Err as a deadline passing during the wait")
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded (after 2 attempts; last response 502 t502)", err.Error())
		})
	})

	t.Run("a Retry-After that would outlast the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: []reply{{status: 429, header: map[string]string{"Retry-After": "10"},
				body: `{"error":{"type":"rate-limit-exceeded","message":"slow down"}}`}, ok(1)}}
			c := memClient(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Zero(t, time.Since(start), "returns at once with the API's answer")
			assert.Equal(t, 1, s.hits())
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, ErrRateLimited)
			var timeout interface{ Timeout() bool }
			require.ErrorAs(t, err, &timeout)
			assert.True(t, timeout.Timeout())
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, &APIError{StatusCode: 429, Type: "rate-limit-exceeded", Message: "slow down", Method: "POST",
				Path: testPrefix + "/v2/request-queues/q/requests/unlock", Attempts: 1, RetryAfter: 10 * time.Second}, withoutHeader(apiErr))
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded (last response 429 rate-limit-exceeded)", err.Error())
		})
	})

	t.Run("a wait that ends exactly at the deadline is not started", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: []reply{{status: 503, header: map[string]string{"Retry-After": "2"}}, ok(1)}}
			c := memClient(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, 1, s.hits(), "an attempt at the deadline could not succeed")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, ErrServerError)
		})
	})

	t.Run("a wait that ends before the deadline is taken", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: []reply{{status: 429, header: map[string]string{"Retry-After": "2"}}, ok(4)}}
			c := memClient(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second+time.Millisecond)
			defer cancel()
			res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			require.NoError(t, err)
			assert.Equal(t, 4, res.UnlockedCount)
			assert.Equal(t, []time.Duration{2 * time.Second}, s.waits())
		})
	})

	t.Run("a network failure is kept when the deadline cuts the retries short", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			c := rtClient(t, rtFunc(func(*http.Request) (*http.Response, error) {
				calls.Add(1)
				return nil, netErr("dial", syscall.ECONNREFUSED)
			}))
			c.randN = func(n int64) int64 { return n - 1 } // first wait: 1s
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, int32(1), calls.Load())
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "the cause is not lost")
			var apiErr *APIError
			assert.False(t, errors.As(err, &apiErr))
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded (last error: dial tcp: dial: connection refused)", err.Error())
		})
	})

	t.Run("a deadline during a retry keeps the failure retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			c := memClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				blockUntilDone(w, r) // the retry hangs until the deadline
			}))
			c.randN = func(int64) int64 { return 0 } // a 500ms wait
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			// The same error as a deadline during the wait would give: the
			// hanging retry has nothing newer to report than the 503.
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 503, apiErr.StatusCode)
			assert.Equal(t, 2, apiErr.Attempts, "every attempt started, the one cut off included")
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded (after 2 attempts; last response 503)", err.Error())
		})
	})

	t.Run("no retries left: the answer itself, not a deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: []reply{{status: 429, header: map[string]string{"Retry-After": "10"}}}}
			c := memClient(t, s, WithMaxRetries(0))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Same(t, apiErr, err, "a bare *APIError: no wait was ever going to happen")
			assert.NotErrorIs(t, err, context.DeadlineExceeded)
		})
	})

	t.Run("already cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: statuses(200)}
			c := memClient(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			require.ErrorIs(t, err, context.Canceled)
			assert.Zero(t, s.hits())
		})
	})

	t.Run("a success that races the cancel is still a success", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := handlerTransport{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.WriteString(w, `{"data":{"unlockedCount":9}}`)
				})}.RoundTrip(r)
				cancel() // the caller gives up just as the answer arrives
				return resp, err
			}))
			res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			require.NoError(t, err, "the locks were released: say so")
			assert.Equal(t, 9, res.UnlockedCount)
		})
	})
}

// TestDeadlineErrorShapeNeverDependsOnJitter replays the same failing call
// under 200 seeds of the backoff jitter. The jitter changes how many
// attempts fit before the deadline, never the shape of the error: always a
// *RequestError wrapping context.DeadlineExceeded and the last response's
// *APIError, returned without sleeping into the deadline.
func TestDeadlineErrorShapeNeverDependsOnJitter(t *testing.T) {
	tests := []struct {
		name     string
		replies  []reply
		opts     []Option
		timeout  time.Duration
		status   int
		attempts []int // the attempt counts the seeds must produce between them
	}{
		{"503s, waits 1s to 10s, a 1.5s deadline", statuses(503), []Option{WithRetryWait(time.Second, 10*time.Second)},
			1500 * time.Millisecond, 503, []int{1, 2}},
		{"502s, default waits, a 3s deadline", statuses(502), nil, 3 * time.Second, 502, []int{3, 4}},
		{"429s, 10 retries of 100ms to 1s, a 2s deadline", statuses(429), []Option{WithRetryWait(100*time.Millisecond, time.Second), WithMaxRetries(10)},
			2 * time.Second, 429, []int{4, 5, 6, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[int]int{} // attempts -> seeds
			for seed := range uint64(200) {
				synctest.Test(t, func(t *testing.T) {
					s := &fakeAPI{replies: tt.replies}
					c := memClient(t, s, tt.opts...)
					c.randN = rand.New(rand.NewPCG(seed, 9)).Int64N // the only way to seed the jitter
					ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
					defer cancel()
					start := time.Now()
					_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
					elapsed := time.Since(start)

					n := s.hits()
					seen[n]++
					var sum time.Duration
					for _, w := range s.waits() {
						sum += w
					}
					require.ErrorIs(t, err, context.DeadlineExceeded, "seed %d", seed)
					var reqErr *RequestError
					require.ErrorAs(t, err, &reqErr, "seed %d", seed)
					assert.Equal(t, context.DeadlineExceeded, reqErr.Err, "seed %d", seed)
					assert.Equal(t, n, reqErr.Attempts, "seed %d", seed)
					var apiErr *APIError
					require.ErrorAs(t, err, &apiErr, "seed %d", seed)
					assert.Same(t, reqErr.Last, apiErr, "seed %d", seed)
					assert.Equal(t, tt.status, apiErr.StatusCode, "seed %d", seed)
					assert.Equal(t, fmt.Sprintf("t%d", tt.status), apiErr.Type, "seed %d", seed)
					assert.Equal(t, n, apiErr.Attempts, "seed %d", seed)
					assert.Less(t, elapsed, tt.timeout, "seed %d: returned before the deadline, not at it", seed)
					assert.Equal(t, sum, elapsed, "seed %d: no time passed but the waits taken", seed)
				})
			}
			t.Logf("attempts -> seeds: %v", seen)
			for _, n := range tt.attempts {
				assert.Positive(t, seen[n], "some seed made %d attempts: the jitter did vary", n)
			}
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	t.Run("each attempt is bounded and retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			c := memClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) < 3 {
					blockUntilDone(w, r)
					return
				}
				_, _ = io.WriteString(w, `{"data":{"unlockedCount":2}}`)
			}), WithTimeout(2*time.Second))
			c.randN = func(int64) int64 { return 0 } // waits of 500ms
			start := time.Now()
			res, err := unlock(c, "q", "k")
			require.NoError(t, err)
			assert.Equal(t, 2, res.UnlockedCount)
			assert.Equal(t, 2*(2*time.Second+500*time.Millisecond), time.Since(start))
		})
	})

	t.Run("all attempts time out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone), WithTimeout(time.Second), WithMaxRetries(2))
			c.randN = func(int64) int64 { return 0 }
			start := time.Now()
			_, err := unlock(c, "q", "k")
			assert.Equal(t, 3*time.Second+2*500*time.Millisecond, time.Since(start))
			require.ErrorIs(t, err, ErrAttemptTimeout)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's ctx did not end")
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, 3, reqErr.Attempts)
			assert.True(t, reqErr.Timeout())
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: attempt timed out after 1s (after 3 attempts)", err.Error())
		})
	})

	t.Run("a body that stops arriving", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
				pr, pw := io.Pipe()
				go func() {
					_, _ = pw.Write([]byte("{"))
					<-r.Context().Done()
					_ = pw.CloseWithError(r.Context().Err())
				}()
				return &http.Response{StatusCode: 200, Header: http.Header{}, Body: pr, ContentLength: -1, Request: r}, nil
			}), WithTimeout(time.Second), WithMaxRetries(1))
			c.randN = func(int64) int64 { return 0 }
			start := time.Now()
			_, err := unlock(c, "q", "k")
			assert.Equal(t, 2500*time.Millisecond, time.Since(start))
			require.ErrorIs(t, err, ErrAttemptTimeout)
		})
	})

	t.Run("the caller's deadline is shorter than an attempt", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone), WithTimeout(10*time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, 3*time.Second, time.Since(start))
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.NotErrorIs(t, err, ErrAttemptTimeout)
		})
	})

	t.Run("a shorter http.Client.Timeout bounds each attempt", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			hc := &http.Client{Transport: handlerTransport{http.HandlerFunc(blockUntilDone)}, Timeout: time.Second}
			c, err := NewClient(WithBaseURL("http://api.test"), WithHTTPClient(hc), WithMaxRetries(0))
			require.NoError(t, err)
			start := time.Now()
			_, err = unlock(c, "q", "k")
			assert.Equal(t, time.Second, time.Since(start))
			require.ErrorIs(t, err, ErrAttemptTimeout)
			assert.Equal(t, time.Second, hc.Timeout, "the caller's client is untouched")
		})
	})
}

// ---- 8. Redirects ----------------------------------------------------------------

func TestRedirectsAreNotFollowed(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			elsewhere, _, other := setup(t, nil)
			f, c, _ := setup(t, []reply{{status: code, header: map[string]string{"Location": other.URL + testPrefix + "/v2/x"}}},
				WithToken("tok-redirect"))
			_, err := unlock(c, "q", "k")
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, code, apiErr.StatusCode)
			assert.ErrorIs(t, err, ErrUnexpectedResponse)
			assert.Contains(t, err.Error(), fmt.Sprintf(": %d: redirect not followed (Location: %s%s/v2/x)", code, other.URL, testPrefix))
			assert.Equal(t, 1, f.hits())
			assert.Zero(t, elsewhere.hits(), "neither the POST nor the token goes anywhere else")
		})
	}
}

// ---- 9. Security -----------------------------------------------------------------

// countingTransport counts the calls a shared transport receives.
type countingTransport struct {
	base      http.RoundTripper
	requests  atomic.Int32
	idleClose atomic.Int32
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	return t.base.RoundTrip(r)
}

func (t *countingTransport) CloseIdleConnections() { t.idleClose.Add(1) }

func TestWithHTTPClientIsNotMutatedNorItsPoolEmptied(t *testing.T) {
	shared := &countingTransport{base: http.DefaultTransport}
	jar := &nullJar{}
	user := &http.Client{Transport: shared, Jar: jar}
	before := *user

	f, c, srv := setup(t, []reply{{status: 503}}, WithHTTPClient(user), WithMaxRetries(2))
	_, err := unlock(c, "q", "k")
	require.ErrorIs(t, err, ErrServerError)
	f.script(apiErr(404, "record-not-found", "no"))
	_, err = unlock(c, "q", "k")
	require.ErrorIs(t, err, ErrNotFound)
	srv.Close()
	_, err = unlock(c, "q", "k") // connection refused, retried, fails
	require.Error(t, err)

	assert.Equal(t, int32(3+1+3), shared.requests.Load(), "every attempt went through the caller's transport")
	assert.Zero(t, shared.idleClose.Load(), "a failure never empties the caller's pool")
	assert.Same(t, before.Transport, user.Transport)
	assert.Nil(t, user.CheckRedirect)
	assert.Same(t, jar, user.Jar)
	assert.Zero(t, user.Timeout)
}

type nullJar struct{}

func (*nullJar) SetCookies(*url.URL, []*http.Cookie) {}
func (*nullJar) Cookies(*url.URL) []*http.Cookie     { return nil }

func TestTokenNeverLeaks(t *testing.T) {
	const token = "apify_api_SECRETSECRETSECRET"
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	scenarios := map[string][]reply{
		"success":     {ok(1)},
		"404":         {apiErr(404, "record-not-found", "no")},
		"503 retried": {{status: 503, body: "down"}},
		"redirect":    {{status: 302, header: map[string]string{"Location": "http://evil.test/"}}},
		"bad body":    {{status: 200, body: "nope"}},
	}
	var outputs []string
	for name, replies := range scenarios {
		f, c, _ := setup(t, replies, WithToken(token), WithLogger(logger), WithMaxRetries(1))
		q := c.RequestQueue("q")
		_, err := q.UnlockRequests(context.Background(), "k")
		for _, r := range f.requests() {
			assert.NotContains(t, r.RequestURI, token, name)
			assert.Equal(t, "Bearer "+token, r.Header.Get("Authorization"), name)
		}
		if err != nil {
			outputs = append(outputs, err.Error(), fmt.Sprintf("%v|%+v|%#v|%s", err, err, err, err))
		}
		outputs = append(outputs,
			fmt.Sprintf("%v|%+v|%#v|%s|%q", c, c, c, c, c),
			fmt.Sprintf("%v|%+v|%#v|%s", q, q, q, q),
			fmt.Sprintf("%v|%+v", *c, *q), // even the dereferenced structs
			// The token's private holder itself: no public way reaches it,
			// but code of this package that formats it by mistake must not
			// leak either.
			fmt.Sprintf("%v|%+v|%#v", c.token, c.token, c.token))
	}
	_, err := NewClient(WithToken(token + " x"))
	outputs = append(outputs, err.Error())

	var text bytes.Buffer
	c, _ := NewClient(WithToken(token))
	slog.New(slog.NewTextHandler(&text, nil)).Info("client", "c", c, "q", c.RequestQueue("q"))
	slog.New(slog.NewJSONHandler(&text, nil)).Info("client", "c", c, "q", c.RequestQueue("q"))
	js, _ := json.Marshal(c.token)
	outputs = append(outputs, text.String(), logs.String(), string(js))

	require.NotEmpty(t, logs.String())
	for _, out := range outputs {
		assert.NotContains(t, out, "SECRET")
	}
	assert.Contains(t, fmt.Sprint(c), "token: [REDACTED]")
}

// ---- 10. Logging ------------------------------------------------------------------

// ctxHandler records every log record with a value from its context.
type ctxHandler struct {
	mu      sync.Mutex
	records []map[string]any
}

type ctxKey struct{}

func (h *ctxHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	m := map[string]any{"level": r.Level.String(), "msg": r.Message, "ctx": ctx.Value(ctxKey{})}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, m)
	h.mu.Unlock()
	return nil
}
func (h *ctxHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *ctxHandler) WithGroup(string) slog.Handler      { return h }

func TestLogging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &ctxHandler{}
		s := &fakeAPI{replies: []reply{{status: 503, body: "secret body"}, {status: 429, header: map[string]string{"Retry-After": "2"}}, ok(5)}}
		c := memClient(t, s, WithLogger(slog.New(h)), WithToken("tok-LOG"))
		c.randN = func(n int64) int64 { return n - 1 }
		ctx := context.WithValue(context.Background(), ctxKey{}, "call-42")
		_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
		require.NoError(t, err)

		path := testPrefix + "/v2/request-queues/q/requests/unlock"
		want := []map[string]any{
			{"level": "DEBUG", "msg": "apify: attempt", "ctx": "call-42", "method": "POST", "path": path, "attempt": int64(1), "status": int64(503), "duration": time.Duration(0)},
			{"level": "WARN", "msg": "apify: retrying", "ctx": "call-42", "method": "POST", "path": path, "attempt": int64(1), "reason": "server error (503)", "wait": time.Second},
			{"level": "DEBUG", "msg": "apify: attempt", "ctx": "call-42", "method": "POST", "path": path, "attempt": int64(2), "status": int64(429), "duration": time.Duration(0)},
			{"level": "WARN", "msg": "apify: retrying", "ctx": "call-42", "method": "POST", "path": path, "attempt": int64(2), "reason": "rate limited (429)", "wait": 2 * time.Second},
			{"level": "DEBUG", "msg": "apify: attempt", "ctx": "call-42", "method": "POST", "path": path, "attempt": int64(3), "status": int64(200), "duration": time.Duration(0)},
		}
		assert.Equal(t, want, h.records)
		assert.NotContains(t, fmt.Sprint(h.records), "secret body")
		assert.NotContains(t, fmt.Sprint(h.records), "tok-LOG")
	})

	t.Run("a network error is logged with its cause", func(t *testing.T) {
		h := &ctxHandler{}
		c := rtClient(t, rtFunc(func(*http.Request) (*http.Response, error) { return nil, netErr("dial", syscall.ECONNREFUSED) }),
			WithLogger(slog.New(h)), WithMaxRetries(0))
		_, err := unlock(c, "q", "k")
		require.Error(t, err)
		require.Len(t, h.records, 1)
		assert.Equal(t, "dial tcp: dial: connection refused", h.records[0]["error"])
		assert.Equal(t, int64(0), h.records[0]["status"])
	})
}

// The library never prints anything by itself: go-retryablehttp's default
// logger (a DEBUG line per request on stderr) is off, and nothing goes to
// slog.Default.
func TestNothingIsPrintedWithoutALogger(t *testing.T) {
	var defaultLog bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&defaultLog, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	r, w, err := os.Pipe()
	require.NoError(t, err)
	stderr := os.Stderr
	os.Stderr = w
	_, c, _ := setup(t, []reply{{status: 503}, apiErr(404, "x", "y")})
	_, callErr := unlock(c, "q", "k")
	os.Stderr = stderr
	require.NoError(t, w.Close())
	printed, _ := io.ReadAll(r)

	require.ErrorIs(t, callErr, ErrNotFound)
	assert.Empty(t, string(printed))
	assert.Empty(t, defaultLog.String())
}

// ---- 11. Concurrency ---------------------------------------------------------------

func TestConcurrentUse(t *testing.T) {
	srvCalls := atomic.Int32{}
	_, c, srv := setup(t, nil, WithToken("tok"))
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srvCalls.Add(1)
		// Echo the clientKey's length so each caller can check it got its own answer.
		fmt.Fprintf(w, `{"data":{"unlockedCount":%d}}`, len(r.URL.Query().Get("clientKey")))
	})
	q := c.RequestQueue("shared")
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := strings.Repeat("k", g%32+1)
			for range 25 {
				res, err := q.UnlockRequests(context.Background(), key)
				if assert.NoError(t, err) {
					assert.Equal(t, len(key), res.UnlockedCount)
				}
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(32*25), srvCalls.Load())
}

func TestCloseIdleConnections(t *testing.T) {
	f, c, _ := setup(t, nil)
	_, err := unlock(c, "q", "k")
	require.NoError(t, err)
	c.CloseIdleConnections()
	_, err = unlock(c, "q", "k")
	require.NoError(t, err)
	assert.Equal(t, int64(2), f.newConns.Load(), "the Client's own pool was emptied")

	shared := &countingTransport{base: http.DefaultTransport}
	_, c2, _ := setup(t, nil, WithHTTPClient(&http.Client{Transport: shared}))
	_, err = unlock(c2, "q", "k")
	require.NoError(t, err)
	c2.CloseIdleConnections()
	assert.Zero(t, shared.idleClose.Load(), "a caller's transport is the caller's to manage")
}

func TestClip(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  two\nlines\r\n", "two lines"},
		{"tab\there", "tab here"},
		{"bidi \u202Eevil\u202C override", "bidi  evil  override"},
		{"line\u2028separator\u2029paragraph", "line separator paragraph"},
		{"zero\u200Bwidth", "zero width"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{strings.Repeat("é", 300), strings.Repeat("é", 256)},
		{strings.Repeat("\xff", 600), "\uFFFD"}, // a run of bad bytes becomes one U+FFFD
		{strings.Repeat("a\xff", 300), strings.Repeat("a\uFFFD", 128)},
	}
	for _, tt := range tests {
		got := clip(tt.in, maxMessageBytes)
		assert.Equal(t, tt.want, got, "%q", tt.in)
		assert.LessOrEqual(t, len(got), maxMessageBytes)
	}
}
