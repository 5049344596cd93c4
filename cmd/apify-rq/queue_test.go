package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// cli runs apify-rq with the emulator's URL and token in the environment.
func cli(t *testing.T, s *apifytest.Server, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"APIFY_API_BASE_URL": s.URL, "APIFY_TOKEN": token}
	code = run(args, &out, &errOut, func(k string) string { return env[k] })
	if strings.Contains(out.String()+errOut.String(), token) && token != "" {
		t.Errorf("the token was printed:\n%s%s", out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

// seeded makes a queue of 5 requests: 1 handled, 2 locked by "k", 2 pending.
func seeded(t *testing.T) (*apifytest.Server, string, []string) {
	t.Helper()
	s := apifytest.Start(t, apifytest.WithToken("cli-s3cret"))
	q := s.CreateQueue("ops")
	ids := s.AddRequests(q,
		apifytest.Request{URL: "https://o.test/0"}, apifytest.Request{URL: "https://o.test/1"},
		apifytest.Request{URL: "https://o.test/2", Method: "POST"}, apifytest.Request{URL: "https://o.test/3"},
		apifytest.Request{URL: "https://o.test/4"})
	c := s.Client()
	rq := c.RequestQueue(q)
	head, err := rq.ListAndLockHead(t.Context(), lockOpts(3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rq.MarkHandled(t.Context(), head.Items[0].ID, reqOpts()); err != nil {
		t.Fatal(err)
	}
	return s, q, ids
}

func TestShow(t *testing.T) {
	s, q, _ := seeded(t)
	code, out, errOut := cli(t, s, "cli-s3cret", "show", "--queue", q)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"queue:            " + q + "\n", "name:             ops\n", "total:            5\n",
		"handled:          1, of which 0 failed", "pending:          4 not handled yet: 2 locked", "multiple clients: "} {
		if !strings.Contains(out, want) {
			t.Errorf("show does not print %q:\n%s", want, out)
		}
	}

	code, out, _ = cli(t, s, "cli-s3cret", "show", "--queue", "~ops", "--json")
	var got map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("exit %d, not JSON: %s", code, out)
	}
	if got["id"] != q || got["totalRequestCount"] != 5.0 || got["lockedRequestCount"] != 2.0 || got["pendingRequestCount"] != 4.0 {
		t.Errorf("--json: %s", out)
	}

	for _, tc := range []struct {
		token string
		args  []string
		code  int
		has   string
	}{
		{"cli-s3cret", []string{"show", "--queue", "NoSuchQueue"}, 3, "404 record-not-found"},
		{"wrong-token", []string{"show", "--queue", q}, 3, "check --token or APIFY_TOKEN"},
		{"cli-s3cret", []string{"show"}, 2, "--queue is required"},
		{"cli-s3cret", []string{"show", "--queue", q, "--base-url", closedServerURL(t), "--timeout", "1s"}, 4, "connection refused"},
	} {
		code, out, errOut := cli(t, s, tc.token, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.has) || out != "" {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr:\n%s", tc.args, code, tc.code, out, errOut)
		}
	}
}

func TestList(t *testing.T) {
	s, q, ids := seeded(t)
	lines := func(out string) []string { return strings.Split(strings.TrimSuffix(out, "\n"), "\n") }
	firstColumn := func(out string) []string {
		var col []string
		for _, l := range lines(out) {
			col = append(col, strings.SplitN(l, "\t", 2)[0])
		}
		return col
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--filter", "locked"}, ids[1:3]},
		{[]string{"--filter", "pending"}, ids[3:]},
		{nil, ids[1:]},
		{[]string{"--filter", "all"}, ids},
	} {
		code, out, errOut := cli(t, s, "cli-s3cret", append([]string{"list", "--queue", q}, tc.args...)...)
		if code != 0 || !slices.Equal(firstColumn(out), tc.want) {
			t.Errorf("list %v: exit %d, got %q, want IDs %v; stderr %s", tc.args, code, out, tc.want, errOut)
		}
	}
	_, out, _ := cli(t, s, "cli-s3cret", "list", "--queue", q, "--filter", "locked")
	if want := regexp.MustCompile(`\n` + ids[2] + "\tPOST\thttps://o.test/2\tlocked by clientKey \"k\" until \\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z\n$"); !want.MatchString(out) {
		t.Errorf("line format: %q, want it to match %q", out, want)
	}

	code, out, errOut := cli(t, s, "cli-s3cret", "list", "--queue", q, "--limit", "2")
	if code != 0 || len(lines(out)) != 2 || !strings.Contains(errOut, "stopped after 2 requests; --limit 0 lists them all") {
		t.Errorf("--limit 2: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = cli(t, s, "cli-s3cret", "list", "--queue", q, "--limit", "4")
	if code != 0 || len(lines(out)) != 4 || errOut != "" {
		t.Errorf("--limit 4 of 4: exit %d\n%s\n%s", code, out, errOut)
	}

	code, out, _ = cli(t, s, "cli-s3cret", "list", "--queue", q, "--filter", "locked", "--json")
	var first map[string]any
	if code != 0 || len(lines(out)) != 2 || json.Unmarshal([]byte(lines(out)[0]), &first) != nil || first["id"] != ids[1] || first["url"] != "https://o.test/1" {
		t.Errorf("--json: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		has  string
	}{
		{[]string{"list", "--queue", q, "--filter", "stuck"}, 2, `--filter: "stuck" is not locked, pending, locked,pending or all`},
		{[]string{"list", "--queue", q, "--limit", "-1"}, 2, "--limit must be 0 (all) or more"},
		{[]string{"list", "--queue", "NoSuchQueue"}, 3, "404 record-not-found"},
		{[]string{"list", "--queue", q, "--timeout", "0s"}, 2, "--timeout must be positive"},
	} {
		code, out, errOut := cli(t, s, "cli-s3cret", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.has) || out != "" {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr:\n%s", tc.args, code, tc.code, out, errOut)
		}
	}
}

// Every command prints its help to stdout and exits 0, both ways; its
// synopsis names exactly the flags it defines; the top-level usage shows
// the same synopsis.
func TestHelpAgreesWithTheFlags(t *testing.T) {
	none := func(string) string { return "" }
	var top bytes.Buffer
	if code := run([]string{"help"}, &top, &bytes.Buffer{}, none); code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	var dashHelp bytes.Buffer
	if code := run([]string{"--help"}, &dashHelp, &bytes.Buffer{}, none); code != 0 || dashHelp.String() != top.String() {
		t.Errorf("--help: exit %d, or not the same text as help", code)
	}
	flagToken := regexp.MustCompile(`(?:^|[\s\[|])(--?[a-z][a-z-]*)`)
	defined := regexp.MustCompile(`(?m)^  (-[a-z][a-z-]*)`)
	for _, cmd := range []string{"serve", "show", "list", "unlock", "add"} {
		var out1, err1, out2, err2 bytes.Buffer
		code1 := run([]string{cmd, "--help"}, &out1, &err1, none)
		code2 := run([]string{"help", cmd}, &out2, &err2, none)
		if code1 != 0 || code2 != 0 || err1.Len() > 0 || err2.Len() > 0 {
			t.Errorf("%s: exit %d and %d, stderr %q %q", cmd, code1, code2, err1.String(), err2.String())
		}
		if out1.String() != out2.String() {
			t.Errorf("%s --help and help %s differ:\n%s\n%s", cmd, cmd, out1.String(), out2.String())
		}
		text := out1.String()
		usageLine, _, _ := strings.Cut(strings.TrimPrefix(text, "Usage:\n"), "\n")
		usageLine = strings.TrimSpace(usageLine)
		if !strings.HasPrefix(usageLine, "apify-rq "+cmd+" ") {
			t.Fatalf("%s: usage line %q", cmd, usageLine)
		}
		var inSynopsis, inFlags []string
		for _, m := range flagToken.FindAllStringSubmatch(usageLine, -1) {
			inSynopsis = append(inSynopsis, strings.TrimLeft(m[1], "-"))
		}
		for _, m := range defined.FindAllStringSubmatch(text, -1) {
			inFlags = append(inFlags, strings.TrimLeft(m[1], "-"))
		}
		slices.Sort(inSynopsis)
		slices.Sort(inFlags)
		if !slices.Equal(slices.Compact(inSynopsis), inFlags) {
			t.Errorf("%s: the synopsis names %v, the flags are %v", cmd, inSynopsis, inFlags)
		}
		words := strings.Fields(usageLine)
		topLine := regexp.MustCompile(`(?m)^  apify-rq ` + cmd + ` .*$`).FindString(top.String())
		if strings.Join(strings.Fields(topLine), " ") != strings.Join(words, " ") {
			t.Errorf("%s: the top-level usage says %q, the command's help %q", cmd, strings.TrimSpace(topLine), usageLine)
		}
	}

	// A bad flag: the message and the usage go to stderr, exit 2.
	var out, errOut bytes.Buffer
	if code := run([]string{"list", "--nope"}, &out, &errOut, none); code != 2 || out.Len() > 0 ||
		!strings.Contains(errOut.String(), "flag provided but not defined: -nope") || !strings.Contains(errOut.String(), "Usage:") {
		t.Errorf("bad flag: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"help", "frobnicate"}, &out, &errOut, none); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("help of an unknown command: exit %d, stderr %q", code, errOut.String())
	}
}

func lockOpts(n int) apify.LockHeadOptions {
	return apify.LockHeadOptions{Limit: n, LockDuration: time.Minute, ClientKey: "k"}
}

func reqOpts() apify.RequestOptions { return apify.RequestOptions{ClientKey: "k"} }

func TestShowTimeKeepsMilliseconds(t *testing.T) {
	at := time.Date(2026, 11, 29, 16, 54, 8, 40*int(time.Millisecond), time.FixedZone("CET", 3600))
	if got, want := showTime(at), "2026-11-29T15:54:08.040Z"; got != want {
		t.Errorf("showTime = %q, want %q", got, want)
	}
	if got := showTime(time.Time{}); got != "-" {
		t.Errorf("showTime(zero) = %q, want -", got)
	}
}
