package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func seedQueue(t *testing.T, srv *apifytest.Server, n int) string {
	t.Helper()
	queueID := srv.CreateQueue("crawl")
	reqs := make([]apifytest.Request, n)
	for i := range reqs {
		reqs[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/p/%d", i)}
	}
	srv.AddRequests(queueID, reqs...)
	return queueID
}

// binaries builds the crawler and apify-rq once for the package's tests, in
// a directory TestMain removes.
var binaries struct {
	once            sync.Once
	dir             string
	crawler, server string
	err             error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		_ = os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

// built returns the paths of the built crawler and apify-rq.
func built(t *testing.T) (crawler, server string) {
	t.Helper()
	binaries.once.Do(func() {
		if binaries.dir, binaries.err = os.MkdirTemp("", "crawler-test-"); binaries.err != nil {
			return
		}
		if binaries.crawler, binaries.err = build(binaries.dir, "crawler", "."); binaries.err != nil {
			return
		}
		binaries.server, binaries.err = build(binaries.dir, "apify-rq", "../../cmd/apify-rq")
	})
	require.NoError(t, binaries.err)
	return binaries.crawler, binaries.server
}

// build compiles a command of this module into dir.
func build(dir, name, pkg string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command(gobin, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// process is a running command whose stdout is read line by line.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	seen   []string
}

func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(bin, args...), lines: make(chan string, 10000)}
	p.cmd.Env = env
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// waitFor reads lines until one matches re, n times; it fails after 30 s.
func (p *process) waitFor(re *regexp.Regexp, n int) []string {
	p.t.Helper()
	deadline := time.After(30 * time.Second)
	var m []string
	for n > 0 {
		select {
		case l, ok := <-p.lines:
			if !ok {
				_ = p.cmd.Wait()
				p.t.Fatalf("%s exited early:\n%s\n%s", p.cmd.Path, strings.Join(p.seen, "\n"), p.stderr.String())
			}
			p.seen = append(p.seen, l)
			if m = re.FindStringSubmatch(l); m != nil {
				n--
			}
		case <-deadline:
			p.t.Fatalf("%s: no %q in 30 s:\n%s", p.cmd.Path, re, strings.Join(p.seen, "\n"))
		}
	}
	return m
}

// rest reads the remaining lines until the process closes stdout.
func (p *process) rest() []string {
	for l := range p.lines {
		p.seen = append(p.seen, l)
	}
	return p.seen
}

var (
	handledLine = regexp.MustCompile(`^crawler: handled `)
	summaryLine = regexp.MustCompile(`^crawler: (queue finished|stopped by signal|stopped by migrating|stopped by aborting): handled (\d+), failed (\d+), retried (\d+), locks lost (\d+); recovered (\d+) locks at start, released (\d+) at exit; (\d+) queue calls$`)
)

// The built crawler, against the built emulator (apify-rq serve): SIGTERM
// mid-run makes it drain, release every lock and exit 0 within its budget;
// a SIGKILL'd run leaves locks that the next run with the same clientKey
// takes back at once.
func TestCrawlerProcessSignals(t *testing.T) {
	t.Parallel() // each its own emulator; both mostly wait
	if testing.Short() {
		t.Skip("builds and runs the crawler and apify-rq binaries")
	}
	crawlerBin, serverBin := built(t)

	const token = "crawler-token"
	server := start(t, serverBin, nil, "serve", "--addr", "127.0.0.1:0", "--queue", "crawl", "--token", token)
	baseURL := server.waitFor(regexp.MustCompile(`at (http://\S+)$`), 1)[1]
	queueID := server.waitFor(regexp.MustCompile(`^apify-rq: queue "crawl" has ID (\S+)$`), 1)[1]

	c, err := apify.NewClient(apify.WithBaseURL(baseURL), apify.WithToken(token))
	require.NoError(t, err)
	q := c.RequestQueue(queueID)
	ctx := context.Background()
	const n = 300
	for i := 0; i < n; i += apify.MaxBatchSize {
		batch := make([]apify.Request, 0, apify.MaxBatchSize)
		for j := i; j < i+apify.MaxBatchSize && j < n; j++ {
			batch = append(batch, apify.Request{URL: fmt.Sprintf("https://shop.test/p/%d", j), UniqueKey: strconv.Itoa(j)})
		}
		res, err := q.BatchAddRequests(ctx, batch, apify.RequestOptions{})
		require.NoError(t, err)
		require.Empty(t, res.Unprocessed)
	}
	// countPending counts the requests in the queue's head (an error, for
	// a condition polled in a goroutine of require.Eventually's, which must
	// not call require); pending is it for the (sub)test t's own goroutine.
	countPending := func() (int, error) {
		head, err := q.ListHead(ctx, apify.ListHeadOptions{Limit: 1000})
		if err != nil {
			return 0, err
		}
		return len(head.Items), nil
	}
	pending := func(t *testing.T) int {
		t.Helper()
		n, err := countPending()
		require.NoError(t, err)
		return n
	}
	env := []string{"APIFY_API_BASE_URL=" + baseURL, "APIFY_TOKEN=" + token}

	t.Run("SIGTERM", func(t *testing.T) {
		// Handlers of 1 s, 4 at a time: when the first 4 are handled, the
		// next 4 have just started, and outlast the drain of 100 ms, so the
		// final unlock must release them (and the prefetched ones are
		// released while they drain).
		const drain, shutdown = 100 * time.Millisecond, 2 * time.Second
		p := start(t, crawlerBin, env, "--queue", queueID, "--client-key", "sigterm-test", "--concurrency", "4",
			"--lock", "10m", "--work", "1s", "--drain-timeout", drain.String(), "--shutdown-timeout", shutdown.String())
		p.waitFor(handledLine, 4)
		// Once handlers are measured, a batch is prefetched for them.
		require.Eventually(t, func() bool { p, err := countPending(); return err == nil && n-p > 8 }, 5*time.Second, 10*time.Millisecond, "mid-run: handled and held requests are out of the head")

		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		signalled := time.Now()
		lines := p.rest()
		require.NoError(t, p.cmd.Wait(), "exit status 0; stderr: %s", p.stderr.String())
		assert.Less(t, time.Since(signalled), drain+shutdown*3/2+time.Second, "exits within its budget")

		m := summaryLine.FindStringSubmatch(lines[len(lines)-1])
		require.NotNil(t, m, "last line: %q", lines[len(lines)-1])
		assert.Equal(t, "stopped by signal", m[1])
		handled, _ := strconv.Atoi(m[2])
		released, _ := strconv.Atoi(m[7])
		assert.Positive(t, released, "the prefetched requests were released")
		assert.Equal(t, strings.Count(strings.Join(lines, "\n"), "crawler: handled "), handled)

		res, err := q.UnlockRequests(ctx, "sigterm-test")
		require.NoError(t, err)
		assert.Zero(t, res.UnlockedCount, "no lock left behind")
		assert.Equal(t, n-handled, pending(t), "every request not handled is pending again, at once")
		assert.NotContains(t, p.stderr.String()+strings.Join(lines, "\n"), token)
	})

	t.Run("SIGKILL then restart", func(t *testing.T) {
		before := pending(t)
		p := start(t, crawlerBin, env, "--queue", queueID, "--client-key", "kill-test", "--concurrency", "4",
			"--lock", "10m", "--work", "300ms")
		p.waitFor(handledLine, 8) // the first 4 measured the handlers, so more were prefetched
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
		_ = p.cmd.Wait()
		killedHandled := strings.Count(strings.Join(p.rest(), "\n"), "crawler: handled ")
		// Requests neither handled nor pending are locked by the dead run
		// (a few more, if it printed "handled" but died before recording it).
		stranded := before - killedHandled - pending(t)
		require.Positive(t, stranded, "the killed run left locks for 10 minutes")

		// The same clientKey: the new run takes them back first thing, and
		// finishes the queue long before the 10-minute locks would expire.
		again := start(t, crawlerBin, env, "--queue", queueID, "--client-key", "kill-test", "--concurrency", "16", "--work", "1ms")
		m := again.waitFor(summaryLine, 1)
		require.NoError(t, again.cmd.Wait(), again.stderr.String())
		assert.Equal(t, "queue finished", m[1])
		recovered, _ := strconv.Atoi(m[6])
		assert.GreaterOrEqual(t, recovered, stranded, "every stranded lock recovered at start")
		assert.LessOrEqual(t, recovered, stranded+4)
		assert.Zero(t, pending(t))
		res, err := q.UnlockRequests(ctx, "kill-test")
		require.NoError(t, err)
		assert.Zero(t, res.UnlockedCount)
	})
}

// The built crawler as an Actor run, against the built emulator serving the
// run's platform events: a migrating event with 5 s left, sent mid-run with
// apify-rq event. The crawler exits 3 on its own, and by the time the
// platform would SIGKILL it, exactly 5 s after the event, every lock of its
// key and run is released.
func TestCrawlerMigrating(t *testing.T) {
	t.Parallel() // each its own emulator; both mostly wait
	if testing.Short() {
		t.Skip("builds and runs the crawler and apify-rq binaries")
	}
	crawlerBin, serverBin := built(t)

	const runToken, runID, remaining = "run-s3cret", "RUN-MIGRATES", 5 * time.Second
	server := start(t, serverBin, nil, "serve", "--addr", "127.0.0.1:0", "--queue", "crawl", "--run-token", runToken+"="+runID, "--events")
	baseURL := server.waitFor(regexp.MustCompile(`at (http://\S+)$`), 1)[1]
	queueID := server.waitFor(regexp.MustCompile(`^apify-rq: queue "crawl" has ID (\S+)$`), 1)[1]
	eventsURL := server.waitFor(regexp.MustCompile(`^apify-rq: platform events of run `+runID+` at (ws://\S+)$`), 1)[1]

	c, err := apify.NewClient(apify.WithBaseURL(baseURL), apify.WithToken(runToken))
	require.NoError(t, err)
	q := c.RequestQueue(queueID)
	ctx := context.Background()
	reqs := make([]apify.Request, 300)
	for i := range reqs {
		reqs[i] = apify.Request{URL: fmt.Sprintf("https://shop.test/p/%d", i), UniqueKey: strconv.Itoa(i)}
	}
	_, err = q.BatchAddRequests(ctx, reqs, apify.RequestOptions{ClientKey: runID})
	require.NoError(t, err)
	// countLocked counts the locked requests, or returns an error: it is
	// also polled in a goroutine of require.Eventually's, which must not
	// call require.
	countLocked := func() (int, error) {
		n := 0
		for _, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: apify.FilterLocked}) {
			if err != nil {
				return 0, err
			}
			n++
		}
		return n, nil
	}
	locked := func() int {
		t.Helper()
		n, err := countLocked()
		require.NoError(t, err)
		return n
	}

	env := []string{"APIFY_API_BASE_URL=" + baseURL, "APIFY_TOKEN=" + runToken, "ACTOR_RUN_ID=" + runID, "ACTOR_EVENTS_WEBSOCKET_URL=" + eventsURL}
	p := start(t, crawlerBin, env, "--queue", queueID, "--concurrency", "16", "--lock", "10m", "--work", "2s")
	p.waitFor(handledLine, 16) // the first 16 are handled: more are locked for the next round
	require.Eventually(t, func() bool { n, err := countLocked(); return err == nil && n > 16 }, 5*time.Second, 10*time.Millisecond, "16 running and some prefetched")

	out, err := exec.Command(serverBin, "event", "migrating", "--time-remaining", remaining.String(), "--base-url", baseURL, "--token", runToken).CombinedOutput()
	require.NoError(t, err, string(out))
	sent := time.Now()
	type exit struct {
		lines []string
		err   error
	}
	exited := make(chan exit, 1)
	go func() {
		lines := p.rest() // to the end of its stdout, then its exit status
		exited <- exit{lines, p.cmd.Wait()}
	}()
	var x exit
	select {
	case x = <-exited:
	case <-time.After(time.Until(sent.Add(remaining))):
		_ = p.cmd.Process.Signal(syscall.SIGKILL) // the platform's kill, on time
		x = <-exited
		t.Errorf("the crawler was still running %v after migrating", remaining)
	}
	exitedAfter := time.Since(sent)
	time.Sleep(time.Until(sent.Add(remaining))) // the moment of the kill
	assert.Zero(t, locked(), "no lock left when the platform kills the process")

	var exitErr *exec.ExitError
	require.ErrorAs(t, x.err, &exitErr)
	assert.Equal(t, 3, exitErr.ExitCode(), "non-zero on migration; stderr: %s", p.stderr.String())
	lines := x.lines
	m := summaryLine.FindStringSubmatch(lines[len(lines)-1])
	require.NotNil(t, m, "last line: %q", lines[len(lines)-1])
	assert.Equal(t, "stopped by migrating", m[1])
	t.Logf("the crawler exited %v after migrating (%v left)", exitedAfter.Round(time.Millisecond), remaining)
	assert.NotContains(t, p.stderr.String()+strings.Join(lines, "\n"), runToken)
}

func TestCrawlerFinishesTheQueue(t *testing.T) {
	srv := apifytest.Start(t)
	queueID := seedQueue(t, srv, 12)
	t.Setenv("APIFY_API_BASE_URL", srv.URL)
	t.Setenv("APIFY_TOKEN", "")

	var out, errOut bytes.Buffer
	code := run([]string{"--queue", queueID, "--client-key", "finisher", "--concurrency", "5", "--work", "1ms"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Regexp(t, `(?m)^crawler: queue finished: handled 12, failed 0, retried 0, locks lost 0; recovered 0 locks at start, released 0 at exit; \d+ queue calls$`, out.String())
	assert.Equal(t, 12, strings.Count(out.String(), "crawler: handled https://shop.test/p/"))
	assert.Len(t, srv.Handled(queueID), 12)
	assert.Empty(t, srv.Locked(queueID))
}

// A queue the crawler may not use is a failure, reported as one: exit 1, the
// API's error on stderr, and never "queue finished".
func TestCrawlerReportsFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string
		fault *apifytest.Fault
		want  string
	}{
		{"403", "good", &apifytest.Fault{Status: 403, Type: "insufficient-permissions", Message: "You may not write to this queue"}, "403 insufficient-permissions"},
		{"401", "wrong", nil, "401 invalid-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := apifytest.Start(t, apifytest.WithToken("good"))
			queueID := seedQueue(t, srv, 3)
			if tc.fault != nil {
				srv.FailNext(apifytest.OpUnlockRequests, 1, *tc.fault)
			}
			t.Setenv("APIFY_API_BASE_URL", srv.URL)
			t.Setenv("APIFY_TOKEN", tc.token)
			var out, errOut bytes.Buffer
			code := run([]string{"--queue", queueID, "--client-key", "denied"}, &out, &errOut)
			assert.Equal(t, 1, code)
			assert.Contains(t, errOut.String(), "crawler: failed: ")
			assert.Contains(t, errOut.String(), tc.want)
			assert.NotContains(t, out.String(), "queue finished")
			assert.Len(t, srv.Pending(queueID), 3)
		})
	}
}

func TestCrawlerUsage(t *testing.T) {
	t.Setenv("APIFY_QUEUE_ID", "")
	t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", "")
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(nil, &out, &errOut))
	assert.Contains(t, errOut.String(), "--queue (or ACTOR_DEFAULT_REQUEST_QUEUE_ID or APIFY_QUEUE_ID) is required")
	assert.Equal(t, 2, run([]string{"--concurrency", "x"}, io.Discard, &errOut))
}
