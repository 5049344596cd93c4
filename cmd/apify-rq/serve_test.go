package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
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
	go func() { _, _ = io.Copy(sv.stdout, pr) }()
	var once sync.Once
	code := 0
	sv.stop = func() int {
		once.Do(func() {
			cancel()
			code = <-done
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
