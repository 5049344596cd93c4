package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// cliIn is cli with stdin.
func cliIn(t *testing.T, s *apifytest.Server, token, input string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	old := stdin
	stdin = strings.NewReader(input)
	defer func() { stdin = old }()
	return cli(t, s, token, args...)
}

// apiOnly serves s as Apify's API would: without the emulator's own
// extension, whose path gets the API's 404.
func apiOnly(t *testing.T, s *apifytest.Server) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/x-apifytest/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"type":"page-not-found","message":"Page not found"}}`)
			return
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func multipleClients(t *testing.T, s *apifytest.Server, q string) bool {
	t.Helper()
	info, err := s.Client().RequestQueue(q).Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.HadMultipleClients
}

func TestAdd(t *testing.T) {
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("adds")

	code, out, errOut := cli(t, s, "cli-s3cret", "add", "--queue", q, "--client-key", "crawler", "https://a.test/1", "https://a.test/2")
	if code != 0 || out != "added 2 requests: 2 new, 0 already in the queue\n" || errOut != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	reqs := s.Requests(q)
	if len(reqs) != 2 || reqs[0].URL != "https://a.test/1" || reqs[0].UniqueKey != "https://a.test/1" || reqs[1].Method != "GET" {
		t.Errorf("the queue: %+v", reqs)
	}
	// The requests were added as the crawler: it locking them is one client.
	if _, err := s.Client().RequestQueue(q).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, ClientKey: "crawler"}); err != nil {
		t.Fatal(err)
	}
	if multipleClients(t, s, q) {
		t.Error("added with --client-key crawler, then locked by crawler: hadMultipleClients")
	}

	s.AddRequests(q, apifytest.Request{URL: "https://a.test/done", HandledAt: time.Now()})
	code, out, _ = cli(t, s, "cli-s3cret", "add", "--queue", q, "--client-key", "crawler", "https://a.test/1", "https://a.test/done", "https://a.test/3")
	if code != 0 || out != "added 3 requests: 1 new, 2 already in the queue (1 of them handled)\n" {
		t.Errorf("again: exit %d, %q", code, out)
	}
	code, out, _ = cli(t, s, "cli-s3cret", "add", "-q", "--queue", q, "https://a.test/3", "https://a.test/4")
	if code != 0 || out != "1\n" {
		t.Errorf("-q: exit %d, %q", code, out)
	}
	if !multipleClients(t, s, q) {
		t.Error("added without a clientKey: that is another client")
	}
}

// From stdin: a URL or a JSON request a line, more than one batch, all in
// their order.
func TestAddFromStdin(t *testing.T) {
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("stdin")
	var in strings.Builder
	in.WriteString("# start URLs\n\n")
	for i := range 60 {
		if i%2 == 0 {
			fmt.Fprintf(&in, "  https://a.test/%d  \n", i)
		} else {
			fmt.Fprintf(&in, `{"url":"https://a.test/%d","uniqueKey":"k%d","method":"POST","userData":{"depth":%d}}`+"\n", i, i, i)
		}
	}
	code, out, errOut := cliIn(t, s, "cli-s3cret", in.String(), "add", "--queue", "~stdin", "--forefront")
	if code != 0 || out != "added 60 requests: 60 new, 0 already in the queue\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := s.Calls(apifytest.OpBatchAddRequests); n != 3 {
		t.Errorf("%d batch calls, want 3 (25 a call)", n)
	}
	reqs := s.Pending(q) // in the head's order
	if len(reqs) != 60 || reqs[0].URL != "https://a.test/0" || reqs[1].UniqueKey != "k1" || reqs[1].Method != "POST" ||
		string(reqs[59].UserData) != `{"depth":59}` || reqs[58].UserData != nil {
		t.Errorf("the queue: %d requests, %+v %+v", len(reqs), reqs[1], reqs[59])
	}
}

// Bad input is refused before anything is sent, naming the argument or line.
func TestAddRefusesBadInputBeforeIO(t *testing.T) {
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("bad")
	for _, tc := range []struct {
		name, input string
		args        []string
		want        string
	}{
		{"ftp URL", "", []string{"https://a.test/ok", "ftp://a.test/x"}, `apify-rq add: URL 2: "ftp://a.test/x" is not an http or https URL`},
		{"no scheme", "", []string{"a.test/x"}, `URL 1: "a.test/x" is not an http or https URL`},
		{"flag after the URLs", "", []string{"https://a.test/1", "--forefront"}, `"--forefront" looks like a flag after the URLs`},
		{"bad JSON line", "https://a.test/1\n\n{\"url\": \n", nil, "apify-rq add: stdin: line 3: not a request as JSON"},
		{"unknown field", `{"url":"https://a.test/1","usrData":{}}`, nil, `line 1: not a request as JSON`},
		{"no url", `{"uniqueKey":"x"}`, nil, `line 1: the request has no "url"`},
		{"an id", `{"url":"https://a.test/1","id":"abc"}`, nil, `line 1: the request has an "id"`},
		{"two values", `{"url":"https://a.test/1"} {"url":"https://a.test/2"}`, nil, "line 1: more than one JSON value"},
		{"bad line URL", "https://a.test/1\nmailto:x@y\n", nil, `line 2: "mailto:x@y" is not an http or https URL`},
		{"nothing", "# only a comment\n\n", nil, "no requests: give URLs as arguments, or one URL or JSON request a line on stdin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cliIn(t, s, "cli-s3cret", tc.input, append([]string{"add", "--queue", q}, tc.args...)...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tc.want)
			}
		})
	}
	if n := s.Calls(apifytest.OpBatchAddRequests); n != 0 {
		t.Errorf("%d batch calls: bad input must be refused before any", n)
	}
	code, _, errOut := cli(t, s, "cli-s3cret", "add", "https://a.test/1")
	if code != 2 || !strings.Contains(errOut, "--queue is required") {
		t.Errorf("no --queue: exit %d, %q", code, errOut)
	}
}

// Requests the API refuses to take are listed, and the exit code says so.
func TestAddReportsUnprocessed(t *testing.T) {
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("refused")
	s.FailNext(apifytest.OpBatchAddRequests, 1, apifytest.Fault{Status: 403, Type: "insufficient-permissions", Message: "No."})
	code, out, errOut := cli(t, s, "cli-s3cret", "add", "--queue", q, "https://a.test/1", "https://a.test/2")
	if code != 3 || out != "added 0 requests: 0 new, 0 already in the queue\n" ||
		!strings.Contains(errOut, "2 requests not added:\n  https://a.test/1\n  https://a.test/2\n") || !strings.Contains(errOut, "403 insufficient-permissions") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// show counts the failed among the handled, says that pending includes the
// locked, and its own reading does not make the queue "multiple clients".
func TestShowInWords(t *testing.T) {
	s, q, _ := seeded(t) // 1 handled, 2 locked by "k", 2 waiting
	now := time.Now()
	s.AddRequests(q,
		apifytest.Request{URL: "https://o.test/gave-up", HandledAt: now, RetryCount: 3, ErrorMessages: []string{"a", "b", "c", "d"}},
		apifytest.Request{URL: "https://o.test/no-retry", HandledAt: now, NoRetry: true, ErrorMessages: []string{"404"}},
		apifytest.Request{URL: "https://o.test/err-no-retry", HandledAt: now, ErrorMessages: []string{"gone"}},
		apifytest.Request{URL: "https://o.test/ok-after-2", HandledAt: now, RetryCount: 2, ErrorMessages: []string{"a", "b"}},
		apifytest.Request{URL: "https://o.test/retrying", RetryCount: 1, ErrorMessages: []string{"a"}})
	for range 2 { // the second look sees what the first did not change
		code, out, errOut := cli(t, s, "cli-s3cret", "show", "--queue", q)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{
			"total:            10\n",
			"handled:          5, of which 3 failed (given up on, with errors)\n",
			"pending:          5 not handled yet: 2 locked (taken by a client) and 3 waiting to be taken\n",
			"multiple clients: no: one client at most (calls with one clientKey)\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("show does not print %q:\n%s", want, out)
			}
		}
	}

	code, out, _ := cli(t, s, "cli-s3cret", "show", "--queue", q, "--json")
	var got map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["failedRequestCount"] != 3.0 || got["waitingRequestCount"] != 3.0 || got["lockedRequestCount"] != 2.0 {
		t.Errorf("--json: %s", out)
	}

	lists := s.Calls(apifytest.OpListRequests)
	code, out, _ = cli(t, s, "cli-s3cret", "show", "--queue", q, "--failed=false")
	if code != 0 || !strings.Contains(out, "handled:          5\n") || s.Calls(apifytest.OpListRequests) != lists+1 {
		t.Errorf("--failed=false: exit %d, %d listings\n%s", code, s.Calls(apifytest.OpListRequests)-lists, out)
	}
	_, out, _ = cli(t, s, "cli-s3cret", "show", "--queue", q, "--failed=false", "--json")
	if !strings.Contains(out, `"failedRequestCount":null`) {
		t.Errorf("--failed=false --json: %s", out)
	}

	if _, err := s.Client().RequestQueue(q).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, ClientKey: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, out, _ = cli(t, s, "cli-s3cret", "show", "--queue", q); !strings.Contains(out, "multiple clients: yes: calls with more than one clientKey") {
		t.Errorf("after a second clientKey:\n%s", out)
	}
}

// The failed count is Consume's: the requests it gave up on, not those that
// succeeded after retries. Consume runs in simulated time (its polls wait
// seconds), on an emulator in memory; the queue it leaves is then served
// over HTTP, copied field by field, for the CLI.
func TestShowCountsWhatConsumeFailed(t *testing.T) {
	// With MaxRetries 11, a request that failed every time has more retries
	// than the 10 error messages Consume keeps: it must still read as failed.
	for _, maxRetries := range []int{2, 11} {
		t.Run(fmt.Sprintf("MaxRetries=%d", maxRetries), func(t *testing.T) { showCountsWhatConsumeFailed(t, maxRetries) })
	}
}

func showCountsWhatConsumeFailed(t *testing.T, maxRetries int) {
	var states []apifytest.RequestState
	var stats *apify.ConsumeStats
	synctest.Test(t, func(t *testing.T) {
		mem := apifytest.NewUnstartedServer()
		q := mem.CreateQueue("consumed")
		mem.AddRequests(q, apifytest.Request{URL: "https://o.test/ok"}, apifytest.Request{URL: "https://o.test/flaky"},
			apifytest.Request{URL: "https://o.test/broken"}, apifytest.Request{URL: "https://o.test/gone"})
		var mu sync.Mutex
		tries := map[string]int{}
		var err error
		stats, err = mem.Client().RequestQueue(q).Consume(context.Background(), func(_ context.Context, r *apify.Request) error {
			mu.Lock()
			tries[r.URL]++
			n := tries[r.URL]
			mu.Unlock()
			switch {
			case strings.HasSuffix(r.URL, "/flaky") && n < 3:
				return fmt.Errorf("flaky %d", n)
			case strings.HasSuffix(r.URL, "/broken"):
				return fmt.Errorf("broken %d", n)
			case strings.HasSuffix(r.URL, "/gone"):
				return fmt.Errorf("404: %w", apify.ErrNoRetry)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "c", Concurrency: 4, MaxRetries: maxRetries})
		if err != nil {
			t.Fatal(err)
		}
		states = mem.Requests(q)
	})
	if stats.Failed != 2 || stats.Handled != 2 {
		t.Fatalf("Consume: %+v", stats)
	}
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("consumed")
	for _, st := range states {
		s.AddRequests(q, apifytest.Request{URL: st.URL, UniqueKey: st.UniqueKey, Method: st.Method, UserData: st.UserData,
			NoRetry: st.NoRetry, RetryCount: st.RetryCount, ErrorMessages: st.ErrorMessages, HandledAt: st.HandledAt})
	}
	_, out, _ := cli(t, s, "cli-s3cret", "show", "--queue", q)
	if !strings.Contains(out, "handled:          4, of which 2 failed") {
		t.Errorf("show:\n%s", out)
	}
	_, out, _ = cli(t, s, "cli-s3cret", "list", "--queue", q, "--filter", "all")
	for url, state := range map[string]string{"ok": "handled", "flaky": "handled", "broken": "failed", "gone": "failed"} {
		if !strings.Contains(out, "\thttps://o.test/"+url+"\t"+state+"\n") {
			t.Errorf("list says %s is not %s:\n%s", url, state, out)
		}
	}
}

// list says who holds each lock and until when, where the server says.
func TestListSaysWhoHoldsEachLock(t *testing.T) {
	clock := apifytest.NewManualClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	s := apifytest.Start(t, apifytest.WithClock(clock), apifytest.WithToken("cli-s3cret"), apifytest.WithRunToken("run-token", "RUN9"))
	q := s.CreateQueue("holders")
	ids := s.AddRequests(q, apifytest.Request{URL: "https://h.test/0", HandledAt: clock.Now()},
		apifytest.Request{URL: "https://h.test/1", HandledAt: clock.Now(), ErrorMessages: []string{"x"}},
		apifytest.Request{URL: "https://h.test/2"}, apifytest.Request{URL: "https://h.test/3"},
		apifytest.Request{URL: "https://h.test/4"}, apifytest.Request{URL: "https://h.test/5"})
	lock := func(token, key string, secs time.Duration) {
		t.Helper()
		if _, err := s.Client(apify.WithToken(token)).RequestQueue(q).ListAndLockHead(context.Background(),
			apify.LockHeadOptions{Limit: 1, LockDuration: secs, ClientKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	lock("cli-s3cret", "alpha", 2*time.Minute)
	lock("run-token", "", time.Minute)
	lock("run-token", "beta", 90*time.Second)

	code, out, errOut := cli(t, s, "cli-s3cret", "list", "--queue", q, "--filter", "all")
	want := ids[0] + "\tGET\thttps://h.test/0\thandled\n" +
		ids[1] + "\tGET\thttps://h.test/1\tfailed\n" +
		ids[2] + "\tGET\thttps://h.test/2\tlocked by clientKey \"alpha\" until 2026-11-29T10:02:00.000Z\n" +
		ids[3] + "\tGET\thttps://h.test/3\tlocked by run RUN9 until 2026-11-29T10:01:00.000Z\n" +
		ids[4] + "\tGET\thttps://h.test/4\tlocked by clientKey \"beta\" in run RUN9 until 2026-11-29T10:01:30.000Z\n" +
		ids[5] + "\tGET\thttps://h.test/5\tpending\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	_, out, _ = cli(t, s, "cli-s3cret", "list", "--queue", q, "--filter", "locked", "--json")
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil ||
		!jsonEq(first["lock"], map[string]any{"clientKey": "alpha", "expiresAt": "2026-11-29T10:02:00.000Z"}) || first["url"] != "https://h.test/2" {
		t.Errorf("--json: %s", out)
	}

	// Apify's API says which requests are locked, not by whom.
	env := func(k string) string {
		return map[string]string{"APIFY_API_BASE_URL": apiOnly(t, s), "APIFY_TOKEN": "cli-s3cret"}[k]
	}
	var stdout, stderr bytes.Buffer
	code = run([]string{"list", "--queue", q}, &stdout, &stderr, env)
	want = ids[2] + "\tGET\thttps://h.test/2\tlocked\n" + ids[3] + "\tGET\thttps://h.test/3\tlocked\n" +
		ids[4] + "\tGET\thttps://h.test/4\tlocked\n" + ids[5] + "\tGET\thttps://h.test/5\tpending\n"
	if code != 0 || stdout.String() != want || !strings.Contains(stderr.String(), "the API does not say who holds a lock") {
		t.Errorf("on the API: exit %d, stderr %q, stdout:\n%s", code, stderr.String(), stdout.String())
	}
	stdout.Reset()
	run([]string{"list", "--queue", q, "--filter", "locked", "--json"}, &stdout, &stderr, env)
	if !strings.Contains(stdout.String(), `"lock":{}`) {
		t.Errorf("--json on the API: %s", stdout.String())
	}
}

func jsonEq(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// unlock says how many requests stay locked by other clients, and by whom
// where the server says; a key that held nothing gets a hint.
func TestUnlockSaysWhatStaysLocked(t *testing.T) {
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("others")
	for i := range 5 {
		s.AddRequests(q, apifytest.Request{URL: fmt.Sprintf("https://u.test/%d", i)})
	}
	c := s.Client().RequestQueue(q)
	for key, n := range map[string]int{"alpha": 3, "beta": 2} {
		if _, err := c.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: n, ClientKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := cli(t, s, "cli-s3cret", "unlock", "--queue", q, "--client-key", "gamma")
	if code != 0 || out != "unlocked 0 requests; 5 requests stay locked by other clients (clientKey \"alpha\": 3, clientKey \"beta\": 2)\n" ||
		!strings.Contains(errOut, `clientKey "gamma" held none of them; check --client-key (apify-rq list --queue `+q+` --filter locked`) {
		t.Errorf("a key that holds nothing: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ = cli(t, s, "cli-s3cret", "unlock", "-q", "--queue", q, "--client-key", "gamma"); code != 0 || out != "0\n" {
		t.Errorf("-q: exit %d, %q", code, out)
	}
	code, out, errOut = cli(t, s, "cli-s3cret", "unlock", "--queue", q, "--client-key", "alpha")
	if code != 0 || out != "unlocked 3 requests; 2 requests stay locked by other clients (clientKey \"beta\": 2)\n" || errOut != "" {
		t.Errorf("alpha: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// On Apify's API: how many, not whose.
	var stdout, stderr bytes.Buffer
	env := map[string]string{"APIFY_API_BASE_URL": apiOnly(t, s), "APIFY_TOKEN": "cli-s3cret"}
	code = run([]string{"unlock", "--queue", q, "--client-key", "alpha"}, &stdout, &stderr, func(k string) string { return env[k] })
	if code != 0 || stdout.String() != "unlocked 0 requests; 2 requests stay locked by other clients\n" {
		t.Errorf("on the API: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if code, out, _ = cli(t, s, "cli-s3cret", "unlock", "--queue", q, "--client-key", "beta"); code != 0 || out != "unlocked 2 requests\n" {
		t.Errorf("the last holder: exit %d, %q", code, out)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut, func(string) string { return "" })
		if code != 0 || !strings.HasPrefix(out.String(), "apify-rq "+apify.Version+" (go") || errOut.Len() > 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"version", "extra"}, &out, &errOut, func(string) string { return "" }); code != 2 {
		t.Errorf("version extra: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"help"}, &out, &errOut, func(string) string { return "" }); code != 0 ||
		!strings.Contains(out.String(), "\n  apify-rq version\n") || !strings.Contains(out.String(), "\n  apify-rq add    --queue ID") {
		t.Errorf("help does not name add and version:\n%s", out.String())
	}
}
