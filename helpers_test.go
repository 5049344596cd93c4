package apify

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testPrefix is where setup serves the fake API. Clients made by setup have
// it as their base path, so a request built with a wrong path misses it and
// fails the test loudly.
const testPrefix = "/api-prefix"

// seen is one request as the fake API received it.
type seen struct {
	Method        string
	RequestURI    string // the request target exactly as sent: escaped path and query
	Header        http.Header
	Body          []byte
	ContentLength int64
	TransferEnc   []string
	At            time.Time
}

// reply is one response of the fake API.
type reply struct {
	status int
	header map[string]string
	body   string
}

func ok(n int) reply {
	return reply{status: 200, body: `{"data":{"unlockedCount":` + strconv.Itoa(n) + `}}`}
}

func apiErr(status int, typ, msg string) reply {
	return reply{status: status, body: `{"error":{"type":"` + typ + `","message":"` + msg + `"}}`}
}

// fakeAPI is the one scripted fake API of these tests, served on loopback
// by setup or in memory by memClient (inside a testing/synctest bubble, its
// clock is the bubble's). It records every request as it came and answers
// with replies, in order; the last reply repeats, and no replies at all
// means ok(0).
type fakeAPI struct {
	mu      sync.Mutex
	reqs    []seen
	replies []reply
	first   int // the request replies[0] answers (see script)

	newConns atomic.Int64 // connections the loopback server accepted (setup only)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil { // a client's request, served in memory, may have none
		body, _ = io.ReadAll(r.Body)
	}
	uri := r.RequestURI
	if uri == "" { // served in memory: the request as the client built it
		uri = r.URL.RequestURI()
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, seen{
		Method: r.Method, RequestURI: uri, Header: r.Header.Clone(), Body: body,
		ContentLength: r.ContentLength, TransferEnc: r.TransferEncoding, At: time.Now(),
	})
	rep := ok(0)
	if n := len(f.replies); n > 0 {
		rep = f.replies[min(len(f.reqs)-1-f.first, n-1)]
	}
	f.mu.Unlock()
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status == 0 {
		rep.status = 200
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// script replaces the replies; the next request gets the first of them.
func (f *fakeAPI) script(replies ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replies, f.first = replies, len(f.reqs)
}

func (f *fakeAPI) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

// hits is how many requests (attempts) the fake API received.
func (f *fakeAPI) hits() int { return len(f.requests()) }

// waits returns the time between consecutive requests: the backoff waits.
func (f *fakeAPI) waits() []time.Duration {
	reqs := f.requests()
	var out []time.Duration
	for i := 1; i < len(reqs); i++ {
		out = append(out, reqs[i].At.Sub(reqs[i-1].At))
	}
	return out
}

// setup starts a loopback fake API that serves replies under testPrefix and
// returns it with a Client pointed at it (short retry waits, so real-network
// retry tests stay fast). Requests outside the prefix fail the test.
func setup(t *testing.T, replies []reply, opts ...Option) (*fakeAPI, *Client, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{replies: replies}
	mux := http.NewServeMux()
	mux.Handle(testPrefix+"/v2/", f)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request outside %s: %s %s", testPrefix, r.Method, r.RequestURI)
		http.Error(w, "wrong path", http.StatusTeapot)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.newConns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	base := []Option{WithBaseURL(srv.URL + testPrefix), WithRetryWait(time.Millisecond, 4*time.Millisecond)}
	c, err := NewClient(append(base, opts...)...)
	require.NoError(t, err)
	return f, c, srv
}

// handlerTransport serves requests in memory with an http.Handler: no
// sockets, so it works inside a testing/synctest bubble, where time is fake
// and backoff waits take no real time. A handler that blocks until the
// request's context ends models a server that never answers.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// rtFunc is a RoundTripper made of a function, for faults a handler cannot make.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// memClient returns a Client whose requests go to h in memory.
//
// Tests that need the backoff jitter to be deterministic set the Client's
// randN, its injected random source: the one private field tests touch,
// since no public option should let callers fix the jitter.
func memClient(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	return rtClient(t, handlerTransport{h}, opts...)
}

func rtClient(t *testing.T, rt http.RoundTripper, opts ...Option) *Client {
	t.Helper()
	base := []Option{WithBaseURL("http://api.test" + testPrefix), WithHTTPClient(&http.Client{Transport: rt})}
	c, err := NewClient(append(base, opts...)...)
	require.NoError(t, err)
	return c
}

// blockUntilDone is a handler for a server that accepts a request and never answers.
func blockUntilDone(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func unlock(c *Client, queueID, clientKey string) (*UnlockRequestsResult, error) {
	return c.RequestQueue(queueID).UnlockRequests(context.Background(), clientKey)
}

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }
