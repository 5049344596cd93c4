package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// served is a serve command running in-process.
type served struct {
	base           string
	stdout, stderr *syncBuffer
	stop           func() int // stops it and returns its exit code
}

// startServe runs serve with args (plus --addr 127.0.0.1:0) until the test ends.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	sv := &served{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), pw, sv.stderr)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		cancel()
		t.Fatalf("serve printed nothing; stderr: %s", sv.stderr.String())
	}
	first := sc.Text()
	sv.stdout.Write([]byte(first + "\n"))
	sv.base = strings.TrimPrefix(first, "apify-rq: serving the request-queue emulator at ")
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(sv.stdout, pr)
	}()
	var once sync.Once
	code := 0
	sv.stop = func() int {
		once.Do(func() {
			cancel()
			code = <-done
			<-copied // every line serve printed is in sv.stdout
		})
		return code
	}
	t.Cleanup(func() { sv.stop() })
	return sv
}

func call(t *testing.T, method, url string, body io.Reader, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServeRateLimits(t *testing.T) {
	for _, tc := range []struct {
		flag      string
		lockLimit string
		statuses  []int
	}{
		{"", "40", []int{201, 201, 201}},
		{"off", "40", []int{201, 201, 201}},
		{"batch=2", "2", []int{201, 201, 429}},
		{"on", "40", []int{201, 201, 201}},
	} {
		t.Run("--rate-limits="+tc.flag, func(t *testing.T) {
			args := []string{"--queue", "q"}
			if tc.flag != "" {
				args = append(args, "--rate-limits", tc.flag)
			}
			sv := startServe(t, args...)
			defer func() {
				sv.stop()
				if announced := strings.Contains(sv.stdout.String(), "apify-rq: rate limits per queue: "+map[string]string{
					"batch=2": "400 calls/s of request CRUD, 2 of head/lock", "on": "400 calls/s of request CRUD, 40 of head/lock",
				}[tc.flag]); announced != (tc.flag == "batch=2" || tc.flag == "on") {
					t.Errorf("stdout:\n%s", sv.stdout.String())
				}
			}()
			for i, want := range tc.statuses {
				resp, body := call(t, "POST", sv.base+"/v2/request-queues/~q/head/lock?lockSecs=60&clientKey=k", nil)
				if resp.StatusCode != want || resp.Header.Get("X-RateLimit-Limit") != tc.lockLimit {
					t.Errorf("call %d: %d, X-RateLimit-Limit %q; want %d, %s; %s", i, resp.StatusCode, resp.Header.Get("X-RateLimit-Limit"), want, tc.lockLimit, body)
				}
				if want == 429 && (resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, `"rate-limit-exceeded"`)) {
					t.Errorf("429 without Retry-After 1 or its type: %v %s", resp.Header, body)
				}
			}
		})
	}
	for _, bad := range []string{"crud=0", "batch=x", "speed=3", "crud", "crud=-1"} {
		var stderr bytes.Buffer
		if code := serve(context.Background(), []string{"--addr", "127.0.0.1:0", "--rate-limits", bad}, io.Discard, &stderr); code != exitUsage ||
			!strings.Contains(stderr.String(), "--rate-limits") {
			t.Errorf("--rate-limits %s: exit %d, %s", bad, code, stderr.String())
		}
	}
}

// --log prints one line per call, never a token or the query; the server's
// errors go to the command's stderr, not the default logger.
func TestServeLogs(t *testing.T) {
	var std bytes.Buffer
	log.SetOutput(&std)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	sv := startServe(t, "--log", "--queue", "q", "--token", "s3cret-tok", "--max-conns", "2", "--idle-timeout", "200ms", "--read-timeout", "300ms")
	resp, _ := call(t, "POST", sv.base+"/v2/request-queues/~q/head/lock?lockSecs=60&clientKey=k&token=s3cret-tok", nil)
	if resp.StatusCode != 201 {
		t.Fatalf("head/lock: %d", resp.StatusCode)
	}
	resp, _ = call(t, "GET", sv.base+"/v2/request-queues/~q", nil, "Authorization", "Bearer s3cret-tok")
	if resp.StatusCode != 200 {
		t.Fatalf("get: %d", resp.StatusCode)
	}
	resp, _ = call(t, "GET", sv.base+"/v2/request-queues/~q?token=wrong-tok", nil)
	if resp.StatusCode != 401 {
		t.Fatalf("get with a wrong token: %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	// Over --max-conns: the third connection is closed and the refusal logged.
	for range 3 {
		c, err := net.Dial("tcp", strings.TrimPrefix(sv.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(sv.stderr.String(), "the limit is 2") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code := sv.stop(); code != 0 {
		t.Errorf("exit %d", code)
	}
	out, errs := sv.stdout.String(), sv.stderr.String()
	lines := regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (\S+) (\d{3}) \S+$`).FindAllStringSubmatch(out, -1)
	if len(lines) != 3 || lines[0][1] != "POST" || !strings.HasSuffix(lines[0][2], "/v2/request-queues/~q/head/lock") || lines[0][3] != "201" ||
		lines[1][3] != "200" || lines[2][3] != "401" {
		t.Errorf("log lines %q in:\n%s", lines, out)
	}
	if strings.Contains(out+errs, "s3cret-tok") || strings.Contains(out+errs, "wrong-tok") || strings.Contains(out, "lockSecs") {
		t.Errorf("a token or query was printed:\n%s\n%s", out, errs)
	}
	if !strings.Contains(errs, "apify-rq serve: ") || !strings.Contains(errs, "the limit is 2") {
		t.Errorf("stderr lacks the refused connection:\n%s", errs)
	}
	if std.Len() != 0 {
		t.Errorf("the default logger got: %s", std.String())
	}
}

// A client sending its body a byte at a time is cut off after
// --read-timeout; an idle keep-alive connection after --idle-timeout.
func TestServeCutsOffSlowAndIdleClients(t *testing.T) {
	sv := startServe(t, "--queue", "q", "--read-timeout", "150ms", "--idle-timeout", "100ms")
	waitClosed := func(c net.Conn) time.Duration {
		t.Helper()
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("still open after 10 s")
				}
				return time.Since(start)
			}
		}
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(sv.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /v2/request-queues/~q/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n")
	go func() {
		for range 500 {
			time.Sleep(50 * time.Millisecond)
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	waitClosed(c)

	idle, err := net.Dial("tcp", strings.TrimPrefix(sv.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET /v2/request-queues/~q HTTP/1.1\r\nHost: x\r\n\r\n")
	waitClosed(idle)
}
