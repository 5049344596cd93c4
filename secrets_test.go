package apify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

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

// leakCollector gathers every text a caller could see: error strings, each
// error of the chain and every exported value under %v, %+v, %#v, %s and %q,
// and the records of a JSON log handler at Debug.
type leakCollector struct {
	mu    sync.Mutex
	texts map[string]string // scenario: what it showed
	logs  bytes.Buffer
	log   *slog.Logger // writes to logs; the Clients log with it too
}

func newLeakCollector() *leakCollector {
	lc := &leakCollector{texts: map[string]string{}}
	lc.log = slog.New(slog.NewJSONHandler(&lockedWriter{mu: &lc.mu, w: &lc.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return lc
}

// formatAll prints v every way fmt can.
func formatAll(v any) string {
	return fmt.Sprintf("%v|%+v|%#v|%s|%q", v, v, v, v, v)
}

// errorChain returns err and everything it wraps.
func errorChain(err error) []error {
	if err == nil {
		return nil
	}
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		out = append(out, errorChain(u.Unwrap())...)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, errorChain(e)...)
		}
	}
	return out
}

// record collects what one call left for its caller to see.
func (lc *leakCollector) record(scenario string, c *Client, res *UnlockRequestsResult, err error) {
	var b strings.Builder
	b.WriteString(formatAll(c))
	b.WriteString(formatAll(*c))
	q := c.RequestQueue("q")
	b.WriteString(formatAll(q))
	b.WriteString(formatAll(*q))
	b.WriteString(formatAll(res))
	if res != nil {
		b.WriteString(formatAll(*res))
	}
	if err != nil {
		b.WriteString(err.Error())
		for _, e := range errorChain(err) {
			b.WriteString(formatAll(e))
			var apiErr *APIError
			if errors.As(e, &apiErr) {
				b.WriteString(formatAll(*apiErr))
			}
			var reqErr *RequestError
			if errors.As(e, &reqErr) {
				b.WriteString(formatAll(*reqErr))
			}
		}
	}
	// What an application would log about the call.
	lc.log.Error("unlock failed", "err", err, "client", c, "queue", q, "result", res)
	lc.mu.Lock()
	lc.texts[scenario] = b.String()
	lc.mu.Unlock()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestSecretNeverSurfaces(t *testing.T) {
	lc := newLeakCollector()
	opts := []Option{WithToken(leakToken), WithLogger(lc.log)}

	// Every case of the fault matrix, at once: most of them wait on
	// timeouts, and only TestFaultMatrix measures their times.
	t.Run("faults", func(t *testing.T) {
		for _, fc := range faultCases() {
			t.Run(fc.name, func(t *testing.T) {
				t.Parallel()
				s, url := fc.start(t)
				c := faultClient(t, url, append(append([]Option(nil), fc.opts...), opts...)...)
				o := measure(c, fc.ctxDeadline())
				require.Error(t, o.err)
				lc.record(fc.name, c, o.res, o.err)
				if s != nil {
					s.close()
				}
			})
		}
	})

	// The fake API's answers: success, 4xx, 5xx until retries run out, a
	// redirect, a 2xx that is not the envelope, an attempt timeout.
	replies := map[string][]reply{
		"success":          {ok(1)},
		"404":              {apiErr(404, "record-not-found", "Queue was not found")},
		"401":              {apiErr(401, "invalid-token", "Authentication token is not valid")},
		"503 exhausted":    {{status: 503, body: "busy"}},
		"429 then success": {{status: 429, header: map[string]string{"Retry-After": "0"}}, ok(2)},
		"redirect":         {{status: 307, header: map[string]string{"Location": "http://elsewhere.test/v2/x"}}},
		"bad 2xx body":     {{status: 200, body: `{"data":{"unlockedCount":"many"}}`}},
		"2xx without data": {{status: 200, body: `{}`}},
	}
	for name, rs := range replies {
		t.Run(name, func(t *testing.T) {
			f, c, _ := setup(t, rs, append(opts, WithMaxRetries(2))...)
			closeIdle(t, c)
			res, err := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
			lc.record(name, c, res, err)
			for _, r := range f.requests() {
				assert.NotContains(t, r.RequestURI, leakMarker, "the token never goes in the URL")
				assert.Equal(t, "Bearer "+leakToken, r.Header.Get("Authorization"), "the token does go in the header")
			}
		})
	}

	t.Run("attempt timeout", func(t *testing.T) {
		_, c, srv := setup(t, nil, append(opts, WithTimeout(50*time.Millisecond), WithMaxRetries(1))...)
		closeIdle(t, c)
		release := make(chan struct{})
		srv.Config.Handler = http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		res, err := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
		require.ErrorIs(t, err, ErrAttemptTimeout)
		lc.record("attempt timeout", c, res, err)
	})

	t.Run("ctx cancelled mid-call", func(t *testing.T) {
		_, c, srv := setup(t, nil, opts...)
		closeIdle(t, c)
		srv.Config.Handler = http.HandlerFunc(blockUntilDone)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		lc.record("ctx cancelled mid-call", c, res, err)
	})

	t.Run("ctx cancelled during a backoff wait", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 503, body: "busy"}}, append(opts, WithRetryWait(time.Second, time.Second))...)
		closeIdle(t, c)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
		require.ErrorIs(t, err, context.Canceled)
		lc.record("ctx cancelled during a backoff wait", c, res, err)
	})

	t.Run("ctx already cancelled", func(t *testing.T) {
		c, err := NewClient(append(opts, WithBaseURL("http://127.0.0.1:1"))...)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
		require.ErrorIs(t, err, context.Canceled)
		lc.record("ctx already cancelled", c, res, err)
	})

	t.Run("invalid input", func(t *testing.T) {
		c, err := NewClient(append(opts, WithBaseURL("http://127.0.0.1:1"))...)
		require.NoError(t, err)
		res, err := c.RequestQueue("..").UnlockRequests(context.Background(), strings.Repeat("k", 40))
		require.Error(t, err)
		lc.record("invalid input", c, res, err)
	})

	require.NotEmpty(t, lc.texts)
	require.Contains(t, lc.logs.String(), `"msg":"apify: attempt"`, "the Debug records were collected")
	require.Contains(t, lc.logs.String(), `"msg":"apify: retrying"`, "the Warn records were collected")
	for scenario, text := range lc.texts {
		assert.NotContains(t, text, leakMarker, "the token surfaced in %q", scenario)
		assert.NotEmpty(t, text, scenario)
	}
	assert.NotContains(t, lc.logs.String(), leakMarker, "the token surfaced in a log record")
}

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

// A server or proxy that echoes the request's Authorization header back in
// its error page (debug proxies and some gateways do) must not put the token
// into an APIError, even when the echo straddles the 512-byte Message limit.
func TestEchoedTokenIsRedacted(t *testing.T) {
	echoes := map[string]func(w http.ResponseWriter, auth string){
		"in the error envelope": func(w http.ResponseWriter, auth string) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"type":"invalid-token %s","message":"token %s is not valid"}}`, auth, auth)
		},
		"in an HTML 502, retried": func(w http.ResponseWriter, auth string) {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "<html><pre>Authorization: %s</pre></html>", auth)
		},
		"across the Message limit": func(w http.ResponseWriter, auth string) {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "%s%s", strings.Repeat(".", maxMessageBytes-12), auth)
		},
		"in a redirect's Location": func(w http.ResponseWriter, auth string) {
			w.Header().Set("Location", "http://elsewhere.test/?auth="+url.QueryEscape(auth)+"&raw="+auth)
			w.WriteHeader(http.StatusFound)
		},
		"in a redirect's Location that does not parse": func(w http.ResponseWriter, auth string) {
			w.Header().Set("Location", "%zz "+auth)
			w.WriteHeader(http.StatusMovedPermanently)
		},
		"in a 2xx that is not the envelope": func(w http.ResponseWriter, auth string) {
			fmt.Fprintf(w, `{"data":{"unlockedCount":"%s"}}`, auth)
		},
	}
	for name, echo := range echoes {
		t.Run(name, func(t *testing.T) {
			_, c, srv := setup(t, nil, WithToken(leakToken), WithMaxRetries(1))
			closeIdle(t, c)
			srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				echo(w, r.Header.Get("Authorization"))
			})
			_, err := c.RequestQueue("q").UnlockRequests(context.Background(), "k")
			require.Error(t, err)
			text := err.Error() + formatAll(err)
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				text += formatAll(*apiErr)
				assert.Contains(t, apiErr.Error(), "[REDA", "the echo is still reported, redacted")
			}
			assert.NotContains(t, text, leakMarker)
		})
	}
}
