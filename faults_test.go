package apify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The fault matrix: UnlockRequests against a raw TCP server on loopback that
// misbehaves on purpose, with handwritten HTTP/1.1 bytes. Every case runs
// with a 2 s ctx deadline, WithTimeout(300ms), WithRetryWait(10ms, 50ms) and
// WithMaxRetries(2) (3 attempts) unless it says otherwise, and checks
//
//   - the error kind, with errors.Is / errors.As;
//   - the attempts made (as the server counted them, and as the error says);
//   - the wall time: never more than the ctx deadline plus a small margin;
//   - the memory: the heap allocated during the call (TotalAlloc, which
//     bounds the peak) stays under a few MiB, even for a 2 GB body;
//   - no goroutine is left behind once the server and pool are closed.
//
// Recorded on the 2-core dev machine (`go test -race -run TestFaultMatrix -v`;
// the rows are the t.Logf lines of each case):
//
//	case                              error kind                          attempts  wall     allocated
//	connection refused                RequestError, ECONNREFUSED          3         ~50 ms   23 KiB
//	reset before the status line      RequestError, ECONNRESET            3         ~50 ms   76 KiB
//	reset mid-headers                 RequestError, io.ErrUnexpectedEOF   3         ~80 ms   71 KiB
//	reset mid-body                    RequestError, ECONNRESET            3         ~90 ms   73 KiB
//	one byte then silence             RequestError, ErrAttemptTimeout     3         ~950 ms  74 KiB
//	Content-Length > bytes sent       RequestError, io.ErrUnexpectedEOF   3         ~45 ms   74 KiB
//	gzip-encoded garbage              RequestError, ErrUnexpectedResponse 1         ~2 ms    34 KiB
//	2 GB body                         ErrUnexpectedResponse (> 1 MiB)     1 (*)     ~140 ms  5.2 MiB
//	HTML 502                          APIError 502, ErrServerError        3         ~50 ms   60 KiB
//	302, Location does not parse      APIError 302, ErrUnexpectedResponse 1         ~2 ms    30 KiB
//	Retry-After: 999999               APIError 429, ErrRateLimited        3         ~105 ms  54 KiB
//	Retry-After: 999999, default wait DeadlineExceeded + APIError 429     1         ~2 ms    29 KiB
//	429 storm, 16 callers at once     APIError 429, ErrRateLimited        3 each    ~150 ms  0.7 MiB (all 16)
//	accepts, never answers            RequestError, ErrAttemptTimeout     3         ~945 ms  69 KiB
//	never answers, ctx 500 ms         RequestError, DeadlineExceeded      2         ~500 ms  46 KiB
//
// (*) counted by the server: a 2xx that is not the documented envelope is a
// plain error wrapping ErrUnexpectedResponse, without an attempt count. The
// server of that case manages to write only a few MiB of its 2 GB before the
// client hangs up: the body is neither buffered nor drained.
//
// (The wall times are what the run above measured; the test asserts only
// the upper bound, deadline + faultMargin, so a loaded machine cannot flake it.)

const (
	faultDeadline = 2 * time.Second
	faultTimeout  = 300 * time.Millisecond
	// faultMargin is how far past its ctx deadline a call may return.
	faultMargin = 250 * time.Millisecond
	// faultMemory bounds the heap a call may allocate, whatever the server sends.
	faultMemory = 8 << 20
)

// rawServer is a loopback TCP server that hands each request to behave,
// which writes raw bytes and says whether to keep the connection.
type rawServer struct {
	ln        net.Listener
	behave    func(conn *net.TCPConn, req *http.Request, n int) (keep bool)
	requests  atomic.Int32
	conns     atomic.Int32
	bodyBytes atomic.Int64 // what the 2 GB body case managed to send
	done      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
	mu        sync.Mutex
	open      []net.Conn
}

func startRaw(t *testing.T, behave func(conn *net.TCPConn, req *http.Request, n int) bool) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawServer{ln: ln, behave: behave, done: make(chan struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *rawServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		s.open = append(s.open, conn)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(conn.(*net.TCPConn))
	}
}

func (s *rawServer) serve(conn *net.TCPConn) {
	defer s.wg.Done()
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		n := int(s.requests.Add(1))
		if !s.behave(conn, req, n) {
			return
		}
	}
}

// hang blocks until the server is closed: a peer that stays silent.
func (s *rawServer) hang() { <-s.done }

func (s *rawServer) close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// refusedURL returns the address of a port nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr
}

// reset aborts the connection with a TCP RST instead of a FIN.
func reset(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}

// response is a handwritten HTTP/1.1 response with a Content-Length.
func response(status, headers, body string) string {
	return "HTTP/1.1 " + status + "\r\n" + headers + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func write(conn *net.TCPConn, s string) bool {
	_, err := io.WriteString(conn, s)
	return err == nil
}

// closeIdle empties the Client's own pool when the test ends, so that no
// keep-alive connection (and its two goroutines) outlives the test.
func closeIdle(t *testing.T, c *Client) {
	t.Helper()
	t.Cleanup(c.CloseIdleConnections)
}

// noLeaks checks, after every other cleanup of the test, that the test left
// no goroutine behind.
func noLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// faultClient returns a Client for the fault matrix, pointed at baseURL.
func faultClient(t *testing.T, baseURL string, opts ...Option) *Client {
	t.Helper()
	base := []Option{WithBaseURL(baseURL), WithTimeout(faultTimeout), WithRetryWait(10*time.Millisecond, 50*time.Millisecond),
		WithMaxRetries(2), WithToken("apify_api_FAULTS")}
	c, err := NewClient(append(base, opts...)...)
	require.NoError(t, err)
	closeIdle(t, c)
	return c
}

// outcome is one measured call.
type outcome struct {
	res      *UnlockRequestsResult
	err      error
	wall     time.Duration
	deadline time.Duration
	alloc    uint64 // bytes allocated by the whole process during the call
}

func measure(c *Client, deadline time.Duration) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
	wall := time.Since(start)
	runtime.ReadMemStats(&after)
	return outcome{res: res, err: err, wall: wall, deadline: deadline, alloc: after.TotalAlloc - before.TotalAlloc}
}

// errKind names an error for the matrix's record.
func errKind(err error) string {
	var apiErr *APIError
	var reqErr *RequestError
	kinds := []struct {
		target error
		name   string
	}{
		{ErrAttemptTimeout, "ErrAttemptTimeout"}, {context.DeadlineExceeded, "DeadlineExceeded"},
		{syscall.ECONNREFUSED, "ECONNREFUSED"}, {syscall.ECONNRESET, "ECONNRESET"},
		{io.ErrUnexpectedEOF, "io.ErrUnexpectedEOF"}, {io.EOF, "io.EOF"}, {ErrUnexpectedResponse, "ErrUnexpectedResponse"},
		{ErrServerError, "ErrServerError"}, {ErrRateLimited, "ErrRateLimited"},
	}
	var names []string
	switch {
	case err == nil:
		return "no error"
	case errors.As(err, &apiErr) && !errors.As(err, &reqErr):
		names = append(names, fmt.Sprintf("APIError %d", apiErr.StatusCode))
	case errors.As(err, &reqErr):
		names = append(names, "RequestError")
	}
	for _, k := range kinds {
		if errors.Is(err, k.target) {
			names = append(names, k.name)
		}
	}
	return strings.Join(names, ", ")
}

// checkBounds asserts what every case of the matrix promises.
func checkBounds(t *testing.T, o outcome) {
	t.Helper()
	assert.LessOrEqual(t, o.wall, o.deadline+faultMargin, "the call overran its ctx deadline")
	assert.Less(t, o.alloc, uint64(faultMemory), "the call allocated %d bytes", o.alloc)
	assert.True(t, (o.res == nil) != (o.err == nil), "exactly one of result and error")
	if o.err != nil {
		assert.NotContains(t, o.err.Error(), "FAULTS", "the token is in the error")
	}
}

func attemptsOf(err error) int {
	var reqErr *RequestError
	if errors.As(err, &reqErr) {
		return reqErr.Attempts
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Attempts
	}
	return 0
}

// faultCase is one row of the matrix: how the server misbehaves (or refused:
// no server at all), and what the call must return.
type faultCase struct {
	name         string
	behave       func(s *rawServer, conn *net.TCPConn, req *http.Request, n int) bool
	refused      bool
	opts         []Option
	deadline     time.Duration // 0: faultDeadline
	wantAttempts int
	check        func(t *testing.T, err error)
}

// start serves the case on loopback (or finds a refusing port) and returns
// the server (nil when refused) and the base URL.
func (fc faultCase) start(t *testing.T) (*rawServer, string) {
	t.Helper()
	if fc.refused {
		return nil, refusedURL(t)
	}
	s := startRaw(t, nil)
	s.behave = func(conn *net.TCPConn, req *http.Request, n int) bool { return fc.behave(s, conn, req, n) }
	return s, s.url()
}

func (fc faultCase) ctxDeadline() time.Duration {
	if fc.deadline > 0 {
		return fc.deadline
	}
	return faultDeadline
}

func faultCases() []faultCase {
	const okBody = `{"data":{"unlockedCount":1}}`
	garbage := make([]byte, 512)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(r.UintN(256))
	}
	garbage[0] = 'x' // not the gzip magic number

	return []faultCase{
		{
			name: "connection refused", refused: true, wantAttempts: 3,
			check: func(t *testing.T, err error) {
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				assert.ErrorIs(t, err, syscall.ECONNREFUSED)
			},
		},
		{
			name: "reset before the status line", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool { reset(conn); return false },
			check:  wantNetworkFailure,
		},
		{
			name: "reset mid-headers", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				write(conn, "HTTP/1.1 200 OK\r\nContent-Type: appl")
				time.Sleep(10 * time.Millisecond) // let the bytes leave before the RST
				reset(conn)
				return false
			},
			check: wantNetworkFailure,
		},
		{
			name: "reset mid-body", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n{\"data\":{")
				time.Sleep(10 * time.Millisecond)
				reset(conn)
				return false
			},
			check: func(t *testing.T, err error) {
				wantNetworkFailure(t, err)
				assert.Contains(t, err.Error(), "reading response body")
			},
		},
		{
			name: "one byte then silence", wantAttempts: 3,
			behave: func(s *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n{")
				s.hang()
				return false
			},
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, ErrAttemptTimeout)
				assert.NotErrorIs(t, err, context.DeadlineExceeded)
			},
		},
		{
			name: "Content-Length larger than the body", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"+okBody)
				return false // a FIN: the body ends 972 bytes early
			},
			check: func(t *testing.T, err error) {
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
			},
		},
		{
			name: "gzip-encoded garbage", wantAttempts: 1,
			behave: func(_ *rawServer, conn *net.TCPConn, req *http.Request, _ int) bool {
				if req.Header.Get("Accept-Encoding") != "gzip" {
					panic("net/http did not ask for gzip: " + req.Header.Get("Accept-Encoding"))
				}
				return write(conn, response("200 OK", "Content-Encoding: gzip\r\n", string(garbage)))
			},
			check: func(t *testing.T, err error) {
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				assert.ErrorIs(t, err, ErrUnexpectedResponse, "no retry can fix a corrupt encoding")
				assert.Contains(t, err.Error(), "gzip: invalid header")
			},
		},
		{
			name: "2 GB body", wantAttempts: 1,
			behave: func(s *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				const size = 2 << 30
				write(conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
				chunk := []byte(strings.Repeat(" ", 64<<10)) // JSON whitespace, forever
				sent := 0
				for sent < size {
					n, err := conn.Write(chunk)
					sent += n
					if err != nil {
						break
					}
				}
				s.bodyBytes.Store(int64(sent))
				return false
			},
			check: func(t *testing.T, err error) {
				var apiErr *APIError
				assert.False(t, errors.As(err, &apiErr))
				assert.ErrorIs(t, err, ErrUnexpectedResponse)
				assert.Contains(t, err.Error(), "the body is larger than 1048576 bytes")
			},
		},
		{
			name: "HTML 502", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				return write(conn, response("502 Bad Gateway", "Content-Type: text/html\r\n",
					"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center></body>\r\n</html>\r\n"))
			},
			check: func(t *testing.T, err error) {
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, 502, apiErr.StatusCode)
				assert.ErrorIs(t, err, ErrServerError)
				assert.Empty(t, apiErr.Type)
				// One line: each CR and LF became a space.
				assert.True(t, strings.HasPrefix(apiErr.Message, "<html>  <head><title>502 Bad Gateway"), apiErr.Message)
			},
		},
		{
			name: "302 with a Location that does not parse", wantAttempts: 1,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				return write(conn, response("302 Found", "Location: %zz/elsewhere\r\n", ""))
			},
			check: func(t *testing.T, err error) {
				// A redirect like any other, though net/http cannot parse
				// its Location (it would fail the request, quoting it).
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, 302, apiErr.StatusCode)
				assert.ErrorIs(t, err, ErrUnexpectedResponse)
				assert.Contains(t, err.Error(), ": 302: redirect not followed (Location: %zz/elsewhere)")
			},
		},
		{
			name: "Retry-After: 999999", wantAttempts: 3,
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				return write(conn, response("429 Too Many Requests", "Retry-After: 999999\r\n",
					`{"error":{"type":"rate-limit-exceeded","message":"slow down"}}`))
			},
			check: func(t *testing.T, err error) {
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				assert.ErrorIs(t, err, ErrRateLimited)
				assert.Equal(t, 999999*time.Second, apiErr.RetryAfter, "the hint is reported as sent")
			},
		},
		{
			name: "Retry-After: 999999 with the default waits", wantAttempts: 1,
			opts: []Option{WithRetryWait(DefaultRetryWaitMin, DefaultRetryWaitMax)},
			behave: func(_ *rawServer, conn *net.TCPConn, _ *http.Request, _ int) bool {
				return write(conn, response("429 Too Many Requests", "Retry-After: 999999\r\n", ""))
			},
			check: func(t *testing.T, err error) {
				// The capped wait (30 s) outlasts the 2 s deadline: the call
				// reports the deadline at once, with the 429, instead of
				// sleeping into the deadline.
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				assert.ErrorIs(t, err, ErrRateLimited)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Equal(t, 30*time.Second, min(apiErr.RetryAfter, DefaultRetryWaitMax))
			},
		},
		{
			name: "accepts, never answers", wantAttempts: 3,
			behave: func(s *rawServer, _ *net.TCPConn, _ *http.Request, _ int) bool { s.hang(); return false },
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, ErrAttemptTimeout)
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				assert.True(t, reqErr.Timeout())
			},
		},
		{
			name: "never answers, ctx shorter than the attempts", wantAttempts: 2, deadline: 500 * time.Millisecond,
			behave: func(s *rawServer, _ *net.TCPConn, _ *http.Request, _ int) bool { s.hang(); return false },
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				var reqErr *RequestError
				require.ErrorAs(t, err, &reqErr)
				assert.Equal(t, context.DeadlineExceeded, reqErr.Err, "the caller's deadline, not an attempt's, ended the call")
				// The deadline cut the retry short: the first attempt's
				// timeout, the failure being retried, is reported with it.
				assert.ErrorIs(t, err, ErrAttemptTimeout)
				assert.Contains(t, err.Error(), ": context deadline exceeded (")
				assert.True(t, strings.HasSuffix(err.Error(), "last error: attempt timed out after 300ms)"), err.Error())
			},
		},
	}
}

func TestFaultMatrix(t *testing.T) {
	for _, tt := range faultCases() {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			s, url := tt.start(t)
			c := faultClient(t, url, tt.opts...)
			o := measure(c, tt.ctxDeadline())
			t.Logf("| %-45s | %-45s | %d | %v | alloc %d KiB |", tt.name, errKind(o.err), attemptsOf(o.err), o.wall.Round(time.Millisecond), o.alloc>>10)
			checkBounds(t, o)
			require.Error(t, o.err)
			tt.check(t, o.err)
			switch {
			case tt.deadline != 0:
				assert.GreaterOrEqual(t, attemptsOf(o.err), 1)
			case errors.Is(o.err, ErrUnexpectedResponse) && attemptsOf(o.err) == 0:
				// A 2xx that is not the documented envelope is a plain error
				// wrapping ErrUnexpectedResponse, with no attempt count:
				// only the server's count below applies.
			default:
				assert.Equal(t, tt.wantAttempts, attemptsOf(o.err), "attempts, as the error says")
			}
			if s != nil {
				// The attempt cut off by the caller's deadline may not have
				// reached the server yet; every other count is exact.
				assert.LessOrEqual(t, int(s.requests.Load()), tt.wantAttempts, "attempts, as the server counted them")
				if tt.deadline == 0 {
					assert.Equal(t, tt.wantAttempts, int(s.requests.Load()), "attempts, as the server counted them")
				}
				if tt.name == "2 GB body" {
					s.close() // wait for the writer to give up
					sent := s.bodyBytes.Load()
					t.Logf("2 GB body: the server could send %d MiB before the client hung up", sent>>20)
					assert.Less(t, sent, int64(64<<20), "the body was not drained")
				}
			}
		})
	}
}

// wantNetworkFailure accepts the ways a kernel reports a connection cut by
// a RST: ECONNRESET, or an EOF when the RST raced the read.
func wantNetworkFailure(t *testing.T, err error) {
	t.Helper()
	var reqErr *RequestError
	require.ErrorAs(t, err, &reqErr)
	var apiErr *APIError
	assert.False(t, errors.As(err, &apiErr))
	assert.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF),
		"not a connection failure: %v", err)
}

// A 429 storm: 16 callers at once, every answer a 429 with Retry-After. Each
// caller makes exactly its 3 attempts, waits within the Client's bounds, gets
// ErrRateLimited, and the pool survives: the storm dials no more connections
// than there are callers.
func TestFaultMatrix429Storm(t *testing.T) {
	noLeaks(t)
	s := startRaw(t, func(conn *net.TCPConn, _ *http.Request, _ int) bool {
		return write(conn, response("429 Too Many Requests", "Retry-After: 1\r\n",
			`{"error":{"type":"rate-limit-exceeded","message":"Rate limit exceeded"}}`))
	})
	c := faultClient(t, s.url())
	const callers = 16
	outs := make([]outcome, callers)
	var wg sync.WaitGroup
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), faultDeadline)
			defer cancel()
			t0 := time.Now()
			res, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			outs[i] = outcome{res: res, err: err, wall: time.Since(t0), deadline: faultDeadline}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("| %-45s | %-45s | %d each | %v | alloc %d KiB |", "429 storm, 16 callers", errKind(outs[0].err), attemptsOf(outs[0].err), wall.Round(time.Millisecond), alloc>>10)
	for _, o := range outs {
		checkBounds(t, o)
		var apiErr *APIError
		require.ErrorAs(t, o.err, &apiErr)
		assert.ErrorIs(t, o.err, ErrRateLimited)
		assert.Equal(t, 3, apiErr.Attempts)
		assert.Equal(t, time.Second, apiErr.RetryAfter)
	}
	assert.Less(t, alloc, uint64(callers*faultMemory/8), "16 calls allocated %d bytes", alloc)
	assert.Equal(t, int32(3*callers), s.requests.Load())
	assert.LessOrEqual(t, s.conns.Load(), int32(callers), "429s keep their connections")
}
