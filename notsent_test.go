package apify

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// silentServer accepts TCP connections on loopback, reads whatever comes and
// never answers: a TLS client times out in its handshake, an HTTP client
// waiting for response headers times out after sending its request.
type silentServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	got   []string // what each connection sent, by accept order (its start)
	wg    sync.WaitGroup
}

func startSilentServer(t *testing.T) *silentServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &silentServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			i := len(s.conns)
			s.conns = append(s.conns, conn)
			s.got = append(s.got, "")
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				buf := make([]byte, 512)
				for {
					n, err := conn.Read(buf)
					s.mu.Lock()
					if len(s.got[i]) < 64 {
						s.got[i] += string(buf[:n])
					}
					s.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *silentServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// A request that never left (here: its TLS handshake timed out) is retried
// even by a call that must not be repeated once the API may have seen it;
// one that left is not. Idempotent calls retry any timeout. net/http's own
// trace tells the two apart, not a list of error types.
func TestTimeoutsOfRequestsNeverSentAreRetried(t *testing.T) {
	lockHead := func(q *RequestQueueClient) error {
		_, err := q.ListAndLockHead(context.Background(), LockHeadOptions{ClientKey: "k"})
		return err
	}
	getRequest := func(q *RequestQueueClient) error {
		_, err := q.GetRequest(context.Background(), "r1")
		return err
	}
	tests := []struct {
		name         string
		scheme       string
		transport    func() *http.Transport
		call         func(q *RequestQueueClient) error
		wantAttempts int
		wantMsg      string
		wantSent     bool
	}{
		{"TLS handshake timeout, head/lock (never sent: retried)", "https", tlsTimeoutTransport, lockHead, 3, "TLS handshake timeout", false},
		{"TLS handshake timeout, GET request (idempotent: retried)", "https", tlsTimeoutTransport, getRequest, 3, "TLS handshake timeout", false},
		{"no response headers, head/lock (sent: not retried)", "http", headerTimeoutTransport, lockHead, 1, "timeout awaiting response headers", true},
		{"no response headers, GET request (idempotent: retried)", "http", headerTimeoutTransport, getRequest, 3, "timeout awaiting response headers", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSilentServer(t)
			tr := tt.transport()
			t.Cleanup(tr.CloseIdleConnections)
			c, err := NewClient(WithBaseURL(tt.scheme+"://"+s.ln.Addr().String()), WithHTTPClient(&http.Client{Transport: tr}),
				WithRetryWait(time.Millisecond, 2*time.Millisecond), WithMaxRetries(2))
			require.NoError(t, err)

			err = tt.call(c.RequestQueue("q"))
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, tt.wantAttempts, reqErr.Attempts)
			assert.True(t, reqErr.Timeout())
			assert.Contains(t, err.Error(), tt.wantMsg)
			got := s.received()
			require.Len(t, got, tt.wantAttempts, "one connection per attempt")
			for _, g := range got {
				assert.Equal(t, tt.wantSent, strings.HasPrefix(g, "POST ") || strings.HasPrefix(g, "GET "), "request line sent: %q", g)
			}
		})
	}
}

func tlsTimeoutTransport() *http.Transport {
	return &http.Transport{TLSHandshakeTimeout: 50 * time.Millisecond}
}

func headerTimeoutTransport() *http.Transport {
	return &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}
}

// timeoutError is a net.Error timeout of no type the retry policy lists.
type timeoutError struct{}

func (timeoutError) Error() string   { return "some transport: timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// With a Transport that is not net/http's there is no trace to say whether a
// request left: a timeout is retried for idempotent calls only.
func TestTimeoutsOfAnotherTransport(t *testing.T) {
	for _, idempotent := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			var calls int
			c := rtClient(t, rtFunc(func(*http.Request) (*http.Response, error) {
				calls++
				return nil, timeoutError{}
			}))
			q := c.RequestQueue("q")
			var err error
			if idempotent {
				_, err = q.UnlockRequests(context.Background(), "k")
			} else {
				_, err = q.ListAndLockHead(context.Background(), LockHeadOptions{})
			}
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.ErrorIs(t, err, timeoutError{})
			want := 1
			if idempotent {
				want = 1 + DefaultMaxRetries
			}
			assert.Equal(t, want, calls, "idempotent %v", idempotent)
			assert.Equal(t, want, reqErr.Attempts)
		})
	}
}
