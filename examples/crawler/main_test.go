package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// The built crawler gets SIGTERM in the middle of a batch: it stops taking
// work, releases every lock it holds, and exits within its shutdown budget.
func TestSIGTERMReleasesLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the crawler binary")
	}
	srv := apifytest.Start(t, apifytest.WithToken("crawler-token"))
	queueID := seedQueue(t, srv, 200)

	gobin, err := exec.LookPath("go")
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "crawler")
	out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))

	const shutdownTimeout = 3 * time.Second
	cmd := exec.Command(bin, "--queue", queueID, "--client-key", "sigterm-test", "--batch", "10",
		"--lock", "10m", "--work", "20ms", "--shutdown-timeout", shutdownTimeout.String())
	cmd.Env = []string{"APIFY_API_BASE_URL=" + srv.URL, "APIFY_TOKEN=crawler-token"}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Wait for three handled requests: the first batch of ten is in progress.
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var transcript []string
	handled := 0
	for handled < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait() // stderr is complete once the process is reaped
				t.Fatalf("crawler exited early: %s\n%s", strings.Join(transcript, "\n"), stderr.String())
			}
			transcript = append(transcript, l)
			if strings.HasPrefix(l, "crawler: handled ") {
				handled++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no progress in 30 s: %s", strings.Join(transcript, "\n"))
		}
	}
	require.NotEmpty(t, srv.LockedBy(queueID, "sigterm-test"), "mid-batch: the crawler holds locks")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	signalled := time.Now()
	for l := range lines {
		transcript = append(transcript, l)
	}
	require.NoError(t, cmd.Wait(), "exit status; stderr: %s", stderr.String())
	assert.Less(t, time.Since(signalled), shutdownTimeout+2*time.Second, "exits within its shutdown budget")

	last := transcript[len(transcript)-1]
	m := regexp.MustCompile(`^crawler: stopped by signal after (\d+) requests; released (\d+) locks$`).FindStringSubmatch(last)
	require.NotNil(t, m, "last line: %q", last)
	nHandled, _ := strconv.Atoi(m[1])
	nReleased, _ := strconv.Atoi(m[2])
	assert.Positive(t, nReleased, "the rest of the batch was released")

	assert.Empty(t, srv.LockedBy(queueID, "sigterm-test"), "no lock left behind")
	assert.Empty(t, srv.Locked(queueID))
	assert.Len(t, srv.Handled(queueID), nHandled)
	assert.Len(t, srv.Pending(queueID), 200-nHandled, "every request not handled is pending again, at once")
	assert.NotContains(t, stderr.String()+strings.Join(transcript, "\n"), "crawler-token")
}

func TestCrawlerFinishesTheQueue(t *testing.T) {
	srv := apifytest.Start(t)
	queueID := seedQueue(t, srv, 12)
	t.Setenv("APIFY_API_BASE_URL", srv.URL)
	t.Setenv("APIFY_TOKEN", "")

	var out, errOut bytes.Buffer
	code := run([]string{"--queue", queueID, "--client-key", "finisher", "--batch", "5", "--work", "1ms"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "crawler: queue finished after 12 requests; released 0 locks\n")
	assert.Equal(t, 12, strings.Count(out.String(), "crawler: handled https://shop.test/p/"))
	assert.Len(t, srv.Handled(queueID), 12)
	assert.Empty(t, srv.Locked(queueID))
}

// Work that outlasts the lock keeps the batch's locks alive.
func TestCrawlerProlongsLongWork(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds of real time")
	}
	srv := apifytest.Start(t)
	queueID := seedQueue(t, srv, 2)
	t.Setenv("APIFY_API_BASE_URL", srv.URL)

	var out, errOut bytes.Buffer
	code := run([]string{"--queue", queueID, "--client-key", "slow", "--batch", "2", "--lock", "1s", "--work", "1200ms"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Len(t, srv.Handled(queueID), 2)
	assert.GreaterOrEqual(t, srv.Calls(apifytest.OpProlongRequestLock), 2, "locks prolonged every half lock")
}

func TestCrawlerUsage(t *testing.T) {
	t.Setenv("APIFY_QUEUE_ID", "")
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(nil, &out, &errOut))
	assert.Contains(t, errOut.String(), "--queue (or APIFY_QUEUE_ID) is required")
	assert.Equal(t, 2, run([]string{"--batch", "x"}, io.Discard, &errOut))
}
