package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rqkit/apify/apifytest"
)

// lockSome makes clientKey lock n requests of a fresh queue on s, over HTTP.
func lockSome(t *testing.T, s *apifytest.Server, token, clientKey string, n int) string {
	t.Helper()
	q := s.CreateQueue("")
	for i := range n {
		s.AddRequests(q, apifytest.Request{URL: "https://example.com/" + string(rune('a'+i))})
	}
	req, _ := http.NewRequest("POST", s.URL+"/v2/request-queues/"+q+"/head/lock?lockSecs=60&limit=25&clientKey="+clientKey, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || len(s.LockedBy(q, clientKey)) != n {
		t.Fatalf("locking: %d, %d locked", resp.StatusCode, len(s.LockedBy(q, clientKey)))
	}
	return q
}

// neverAnswers is a loopback server that accepts calls and never answers.
func neverAnswers(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func closedServerURL(t *testing.T) string {
	t.Helper()
	s := apifytest.NewServer()
	s.Close()
	return s.URL
}

func TestUnlock(t *testing.T) {
	open := apifytest.Start(t)
	openQ := lockSome(t, open, "", "k", 3)
	secured := apifytest.Start(t, apifytest.WithToken("s3cret-token"))
	securedQ := lockSome(t, secured, "s3cret-token", "k", 2)
	securedQ2 := lockSome(t, secured, "s3cret-token", "k", 1)

	cases := []struct {
		name         string
		args         []string
		env          map[string]string
		code         int
		stdout       string
		stdoutPrefix bool
		stderrHas    []string
		stderrLacks  []string
	}{
		{name: "unlocks and prints the count", args: []string{"--base-url", open.URL, "--queue", openQ, "--client-key", "k"}, code: 0, stdout: "unlocked 3 requests\n"},
		{name: "nothing left to unlock", args: []string{"--base-url", open.URL, "--queue", openQ, "--client-key", "k"}, code: 0, stdout: "unlocked 0 requests\n"},
		{name: "token and base URL from the environment", args: []string{"--queue", securedQ, "--client-key", "k"},
			env: map[string]string{"APIFY_TOKEN": "s3cret-token", "APIFY_API_BASE_URL": secured.URL}, code: 0, stdout: "unlocked 2 requests\n"},
		{name: "flags win over the environment", args: []string{"--queue", securedQ2, "--client-key", "k", "--token", "s3cret-token", "--base-url", secured.URL},
			env: map[string]string{"APIFY_TOKEN": "wrong", "APIFY_API_BASE_URL": closedServerURL(t)}, code: 0, stdout: "unlocked 1 request\n"},
		{name: "--quiet prints the bare number", args: []string{"--base-url", open.URL, "--queue", lockSome(t, open, "", "k", 4), "--client-key", "k", "--quiet"}, code: 0, stdout: "4\n"},
		{name: "-q too", args: []string{"-q", "--base-url", open.URL, "--queue", openQ, "--client-key", "k"}, code: 0, stdout: "0\n"},
		{name: "unknown queue: API error", args: []string{"--base-url", open.URL, "--queue", "NoSuchQueue", "--client-key", "k"}, code: 3,
			stderrHas: []string{"404 record-not-found", "check --queue"}},
		{name: "wrong token: API error", args: []string{"--base-url", secured.URL, "--queue", securedQ, "--token", "wrong-token"}, code: 3,
			stderrHas: []string{"401 invalid-token", "check --token or APIFY_TOKEN"}},
		{name: "no token: API error", args: []string{"--base-url", secured.URL, "--queue", securedQ}, code: 3,
			stderrHas: []string{"401 token-not-provided"}},
		{name: "connection refused: network error", args: []string{"--base-url", closedServerURL(t), "--queue", "q", "--timeout", "1s"}, code: 4,
			stderrHas: []string{"connection refused", "could not reach", "check --base-url"}, stderrLacks: []string{"raise it"}},
		{name: "no answer: timeout", args: []string{"--base-url", neverAnswers(t), "--queue", "q", "--timeout", "300ms"}, code: 4,
			stderrHas: []string{"--timeout 300ms"}},
		{name: "missing --queue", args: []string{"--client-key", "k"}, code: 2,
			stderrHas: []string{"--queue is required (a queue ID or username~queue-name)"}},
		{name: "client key too long", args: []string{"--base-url", open.URL, "--queue", openQ, "--client-key", strings.Repeat("k", 33)}, code: 2,
			stderrHas: []string{"--client-key", "33 characters", "1 to 32"}},
		{name: "bad base URL", args: []string{"--base-url", "ftp://example.com", "--queue", "q"}, code: 2,
			stderrHas: []string{"check --base-url", "ftp://example.com"}},
		{name: "unknown flag", args: []string{"--queue", "q", "--force"}, code: 2, stderrHas: []string{"-force"}},
		{name: "stray argument", args: []string{"--queue", "q", "extra"}, code: 2, stderrHas: []string{`unexpected argument "extra"`}},
		{name: "bad timeout", args: []string{"--queue", "q", "--timeout", "-1s"}, code: 2, stderrHas: []string{"--timeout must be positive"}},
		{name: "help", args: []string{"--help"}, code: 0, stdout: "Usage:\n  apify-rq unlock --queue ID", stdoutPrefix: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := func(k string) string { return tc.env[k] }
			code := run(append([]string{"unlock"}, tc.args...), &stdout, &stderr, env)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if tc.stdoutPrefix && !strings.HasPrefix(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q, want it to start with %q", stdout.String(), tc.stdout)
			} else if !tc.stdoutPrefix && tc.stdout != "" && stdout.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			for _, want := range tc.stderrHas {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
				}
			}
			for _, unwanted := range tc.stderrLacks {
				if strings.Contains(stderr.String(), unwanted) {
					t.Errorf("stderr says %q:\n%s", unwanted, stderr.String())
				}
			}
			for _, secret := range []string{"s3cret-token", "wrong-token"} {
				if strings.Contains(stdout.String()+stderr.String(), secret) {
					t.Errorf("a token was printed:\n%s%s", stdout.String(), stderr.String())
				}
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	cases := []struct {
		args      []string
		code      int
		stderrHas string
	}{
		{nil, 2, "a command is required"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, ""},
		{[]string{"serve", "--run-token", "no-equals-sign"}, 2, "--run-token must be TOKEN=RUN_ID"},
		{[]string{"serve", "--run-token", "tok="}, 2, "--run-token must be TOKEN=RUN_ID"},
		{[]string{"serve", "--queue", "no spaces"}, 2, "WithQueue"},
		{[]string{"serve", "--addr", "127.0.0.1:99999"}, 1, "cannot listen on 127.0.0.1:99999"},
		{[]string{"serve", "--addr", "nope"}, 2, `--addr must be host:port, such as 127.0.0.1:8080 (port 0 picks a free one); got "nope"`},
		{[]string{"serve", "stray"}, 2, `unexpected argument "stray"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr, func(string) string { return "" })
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("exit %d (want %d), stderr:\n%s", code, tc.code, stderr.String())
			}
		})
	}
}

// serve runs in-process until its context ends.
func TestServeStopsWhenItsContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, []string{"--addr", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatal("serve printed nothing")
	}
	base := strings.TrimPrefix(sc.Text(), "apify-rq: serving the request-queue emulator at ")
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	resp, err := http.Post(base+"/v2/request-queues?name=x", "", nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create a queue: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// The built binary serves over HTTP and stops cleanly on SIGTERM.
func TestServeSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binary with")
	}
	bin := filepath.Join(t.TempDir(), "apify-rq")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--queue", "alpha", "--token", "tok-1", "--run-token", "tok-2=RUN9")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("serve exited early; stderr:\n%s", stderr.String())
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatal("serve printed nothing for 30 s")
		}
		return ""
	}
	var all []string
	first := next()
	all = append(all, first)
	base, ok := strings.CutPrefix(first, "apify-rq: serving the request-queue emulator at ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || strings.HasSuffix(base, ":0") {
		t.Fatalf("first line %q", first)
	}
	second := next()
	all = append(all, second)
	queueID, ok := strings.CutPrefix(second, `apify-rq: queue "alpha" has ID `)
	if !ok || len(queueID) != 17 {
		t.Fatalf("second line %q", second)
	}

	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/v2/request-queues/~alpha", "tok-1"); code != 200 || !strings.Contains(body, `"id":"`+queueID+`"`) {
		t.Errorf("GET ~alpha: %d %s", code, body)
	}
	if code, body := get("/v2/request-queues/~alpha", ""); code != 401 || !strings.Contains(body, "token-not-provided") {
		t.Errorf("GET without a token: %d %s", code, body)
	}
	// The same binary's unlock talks to it.
	out, err := exec.Command(bin, "unlock", "-q", "--base-url", base, "--queue", "~alpha", "--token", "tok-2").Output()
	if err != nil || string(out) != "0\n" {
		t.Errorf("apify-rq unlock: %q, %v", out, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		all = append(all, l)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("serve exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit within 30 s of SIGTERM")
	}
	output := strings.Join(all, "\n")
	if !strings.Contains(output, "apify-rq: shutting down") {
		t.Errorf("output:\n%s", output)
	}
	if strings.Contains(output+stderr.String(), "tok-1") || strings.Contains(output+stderr.String(), "tok-2") {
		t.Errorf("a token was printed:\n%s\n%s", output, stderr.String())
	}
}
