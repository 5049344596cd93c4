package apify

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fuzz targets for everything the client decodes from the network. Their
// seeds live in testdata/fuzz/<FuzzName>/ (the "go test fuzz v1" format), so
// a plain `go test` runs each target on its seeds, in CI too. To fuzz one:
//
//	go test -run '^$' -fuzz '^FuzzUnlockResponse$' -fuzztime 2m .
//
// The properties checked are the client's promises about hostile input: no
// panic, never (nil result, nil error), error messages short, valid UTF-8 and
// one line, a 2xx is either a non-negative count or ErrUnexpectedResponse,
// and no negative wait.

// checkText fails when s could not go into a one-line log record as is.
func checkText(t *testing.T, what, s string, maxLen int) {
	t.Helper()
	if maxLen >= 0 && len(s) > maxLen {
		t.Fatalf("%s is %d bytes, over %d: %q", what, len(s), maxLen, s)
	}
	if !utf8.ValidString(s) {
		t.Fatalf("%s is not valid UTF-8: %q", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			t.Fatalf("%s holds a control character %U: %q", what, r, s)
		}
	}
}

// checkAPIError checks the promises of an APIError built from any response.
func checkAPIError(t *testing.T, e *APIError) {
	t.Helper()
	checkText(t, "APIError.Message", e.Message, maxMessageBytes)
	checkText(t, "APIError.Type", e.Type, 128)
	if e.RetryAfter < 0 {
		t.Fatalf("negative RetryAfter %v", e.RetryAfter)
	}
	checkText(t, "APIError.Error()", e.Error(), -1)
}

// fuzzStatus maps any int onto a status line net/http could have parsed.
func fuzzStatus(n int) int {
	if n >= 100 && n <= 999 {
		return n
	}
	return 100 + int(uint(n)%900)
}

// parseHeaderBlock turns "Key: value" lines into a header, the way a fuzzer
// can write any header set (repeated keys, empty values, junk lines).
func parseHeaderBlock(block string) http.Header {
	h := http.Header{}
	for _, line := range strings.Split(block, "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found || k == "" {
			continue
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h
}

func FuzzNewAPIError(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, retryAfter, location string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		if location != "" {
			h.Set("Location", location)
		}
		e := newAPIError("POST", "/v2/request-queues/q/requests/unlock", status, h, body, 1)
		if e == nil {
			t.Fatal("nil APIError")
		}
		if e.StatusCode != status {
			t.Fatalf("StatusCode %d, want %d", e.StatusCode, status)
		}
		checkAPIError(t, e)
		if got, want := errors.Is(e, ErrUnexpectedResponse), status < 400; got != want {
			t.Fatalf("errors.Is(ErrUnexpectedResponse) = %v for status %d", got, status)
		}
	})
}

func FuzzClip(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = int(uint(n) % 1024)
		out := clip(s, n)
		checkText(t, "clip", out, n)
		if strings.TrimSpace(out) != out {
			t.Fatalf("clip(%q, %d) = %q is not trimmed", s, n, out)
		}
		if again := clip(out, n); again != out {
			t.Fatalf("clip is not idempotent: %q then %q", out, again)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string, nowUnix int64, retry int) {
		now := time.Unix(nowUnix%(1<<40), 0) // years -32000..36000 or so
		d, ok := parseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, negative", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v without a hint", v, d)
		}
		if ok && isDigits(strings.TrimSpace(v)) && d != time.Duration(math.MaxInt64) && d%time.Second != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, not whole seconds", v, d)
		}

		// Whatever the header says, the wait before a retry stays within the
		// Client's bounds, on every status that honours it.
		const waitMin, waitMax = 10 * time.Millisecond, 50 * time.Millisecond
		c, err := NewClient(WithRetryWait(waitMin, waitMax))
		if err != nil {
			t.Fatal(err)
		}
		c.randN = func(n int64) int64 { return n - 1 }
		for _, status := range []int{429, 503, 500} {
			resp := &http.Response{StatusCode: status, Header: http.Header{"Retry-After": {v}}}
			if w := c.retryWait(int(uint(retry)%100), resp); w < waitMin || w > waitMax {
				t.Fatalf("retryWait with Retry-After %q on %d = %v, outside [%v, %v]", v, status, w, waitMin, waitMax)
			}
		}
	})
}

// fuzzResponder is the in-memory server of the end-to-end fuzz targets: it
// answers every request with whatever the current input says. Calls of one
// fuzz process are sequential, so one Client serves them all.
type fuzzResponder struct {
	respond func(r *http.Request) (*http.Response, error)
}

func (fr *fuzzResponder) RoundTrip(r *http.Request) (*http.Response, error) { return fr.respond(r) }

// fuzzClient returns a Client that makes one attempt per call and talks to fr.
func fuzzClient(f *testing.F, fr *fuzzResponder) *RequestQueueClient {
	c, err := NewClient(WithBaseURL("http://api.test"), WithHTTPClient(&http.Client{Transport: fr}),
		WithMaxRetries(0), WithTimeout(5*time.Second))
	if err != nil {
		f.Fatal(err)
	}
	return c.RequestQueue("q")
}

// checkUnlockOutcome checks one UnlockRequests outcome against the response
// status (-1 when no response was parsed; net/http parses "000" as 0).
func checkUnlockOutcome(t *testing.T, status int, res *UnlockRequestsResult, err error) {
	t.Helper()
	if (res == nil) == (err == nil) {
		t.Fatalf("result %v and error %v: exactly one must be set", res, err)
	}
	if err != nil {
		checkText(t, "the error", err.Error(), -1)
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			checkAPIError(t, apiErr)
		}
	}
	var bodyErr *bodyReadError
	if status != -1 && errors.As(err, &bodyErr) {
		return // the body's framing was broken: a failed attempt, whatever the status
	}
	switch {
	case status == -1:
		var reqErr *RequestError
		if err == nil || !errors.As(err, &reqErr) {
			t.Fatalf("no response parsed, yet %v, %v", res, err)
		}
	case status >= 200 && status <= 299:
		if err == nil && res.UnlockedCount < 0 {
			t.Fatalf("negative count %d", res.UnlockedCount)
		}
		if err != nil && !errors.Is(err, ErrUnexpectedResponse) {
			t.Fatalf("a %d gave %v, not ErrUnexpectedResponse", status, err)
		}
	default:
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("a %d gave %v, %v, not an *APIError", status, res, err)
		}
		if apiErr.StatusCode != status || apiErr.Attempts != 1 {
			t.Fatalf("APIError %+v for status %d", apiErr, status)
		}
	}
}

// FuzzUnlockResponse runs UnlockRequests against an in-memory server that
// answers with any status, any headers ("Key: value" lines) and any body.
func FuzzUnlockResponse(f *testing.F) {
	var cur struct {
		status int
		header http.Header
		body   []byte
	}
	q := fuzzClient(f, &fuzzResponder{respond: func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: cur.status, Header: cur.header, Request: r,
			ContentLength: int64(len(cur.body)), Body: io.NopCloser(bytes.NewReader(cur.body))}, nil
	}})
	f.Fuzz(func(t *testing.T, status int, headers string, body []byte) {
		cur.status, cur.header, cur.body = fuzzStatus(status), parseHeaderBlock(headers), body
		res, err := q.UnlockRequests(context.Background(), "k")
		checkUnlockOutcome(t, cur.status, res, err)
	})
}

// FuzzUnlockWire runs UnlockRequests against raw response bytes, parsed by
// net/http's own HTTP/1.1 reader: chunked and malformed framing, duplicate
// and broken headers, and gzip bodies (decoded as net/http's transport does
// when the server sends Content-Encoding: gzip).
func FuzzUnlockWire(f *testing.F) {
	var raw []byte
	q := fuzzClient(f, &fuzzResponder{respond: func(r *http.Request) (*http.Response, error) {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), r)
		if err != nil {
			return nil, err
		}
		if resp.Header.Get("Content-Encoding") == "gzip" {
			resp.Header.Del("Content-Encoding")
			resp.ContentLength = -1
			resp.Body = &lazyGzip{body: resp.Body}
		}
		return resp, nil
	}})
	f.Fuzz(func(t *testing.T, in []byte) {
		raw = in
		status := -1
		if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), nil); err == nil {
			status = resp.StatusCode
		}
		res, err := q.UnlockRequests(context.Background(), "k")
		checkUnlockOutcome(t, status, res, err)
	})
}

// lazyGzip decodes a gzip body on first read, as net/http's transport does.
type lazyGzip struct {
	body io.ReadCloser
	zr   *gzip.Reader
	err  error
}

func (g *lazyGzip) Read(p []byte) (int, error) {
	if g.zr == nil && g.err == nil {
		g.zr, g.err = gzip.NewReader(g.body)
	}
	if g.err != nil {
		return 0, g.err
	}
	return g.zr.Read(p)
}

func (g *lazyGzip) Close() error { return g.body.Close() }
