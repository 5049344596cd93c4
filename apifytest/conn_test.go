package apifytest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func dial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// getOn sends one keep-alive GET on c and returns its status.
func getOn(t *testing.T, c net.Conn, br *bufio.Reader, path string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closedWithin waits until the server closes c, for at most d.
func closedWithin(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	for {
		_, err := br.ReadByte()
		if err == nil {
			continue // a response; keep reading until the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection is still open after %v", d)
		}
		return time.Since(start)
	}
}

func TestSlowClientsAreCutOff(t *testing.T) {
	s := Start(t, WithQueue("q"), WithHTTPLimits(HTTPLimits{ReadTimeout: 150 * time.Millisecond}))
	c := dial(t, s)
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "POST /v2/request-queues/~q/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 50 ms: 50 s for the body
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	if took := closedWithin(t, c, br, 10*time.Second); took > 8*time.Second {
		t.Errorf("cut off after %v", took)
	}
	if len(s.Requests(s.CreateQueue("q"))) != 0 {
		t.Error("the slow call added a request")
	}
	// A slow client sending its headers is cut off too.
	hc := dial(t, s)
	_, _ = io.WriteString(hc, "GET /v2/request-queues/~q HTTP/1.1\r\nHost: x\r\n")
	closedWithin(t, hc, bufio.NewReader(hc), 10*time.Second)
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	s := Start(t, WithQueue("q"), WithHTTPLimits(HTTPLimits{IdleTimeout: 100 * time.Millisecond}))
	c := dial(t, s)
	br := bufio.NewReader(c)
	if code := getOn(t, c, br, "/v2/request-queues/~q"); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	if code := getOn(t, c, br, "/v2/request-queues/~q"); code != 200 { // kept alive
		t.Fatalf("second GET: %d", code)
	}
	closedWithin(t, c, br, 10*time.Second)
}

func TestOpenConnectionsAreCapped(t *testing.T) {
	s := Start(t, WithQueue("q"), WithHTTPLimits(HTTPLimits{MaxConns: 3}))
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 3 {
		c := dial(t, s)
		br := bufio.NewReader(c)
		if code := getOn(t, c, br, "/v2/request-queues/~q"); code != 200 {
			t.Fatalf("GET: %d", code)
		}
		conns, readers = append(conns, c), append(readers, br)
	}
	extra := dial(t, s)
	closedWithin(t, extra, bufio.NewReader(extra), 10*time.Second)
	// The three still work; once one closes, a new connection is served.
	for i, c := range conns {
		if code := getOn(t, c, readers[i], "/v2/request-queues/~q"); code != 200 {
			t.Fatalf("GET on connection %d: %d", i, code)
		}
	}
	conns[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/v2/request-queues/~q")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new connection served 10 s after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
