package apifytest

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Query strings are parsed strictly: what is not plainly a whole number, a
// query that does not parse, and a repeated parameter are 400s, and nothing
// happens.
func TestStrictQueryParsing(t *testing.T) {
	s, _, q, _ := newQueue(t, 3)
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	for _, tc := range []struct {
		path string
		msg  []string
	}{
		{qp + "/head/lock?lockSecs=60&clientKey=k&limit=0x1p1", []string{`"limit"`, "decimal digits", "0x1p1"}},
		{qp + "/head/lock?lockSecs=6e1&clientKey=k", []string{`"lockSecs"`, "6e1"}},
		{qp + "/head/lock?lockSecs=60&clientKey=k&limit=1_0", []string{`"limit"`}},
		{qp + "/head/lock?lockSecs=60&clientKey=k&limit=2.5", []string{`"limit"`, "whole number"}},
		{qp + "/head/lock?lockSecs=60&clientKey=k&limit=1&limit=2", []string{`"limit"`, "2 times"}},
		{qp + "/head/lock?lockSecs=60&clientKey=k&clientKey=j", []string{`"clientKey"`, "2 times"}},
		{qp + "/head/lock?lockSecs=60;clientKey=k", []string{"cannot be parsed"}},
		{qp + "/head/lock?lockSecs=60&clientKey=%%%", []string{"cannot be parsed"}},
	} {
		expectError(t, c.do(OpListAndLockHead, "POST", tc.path, nil), 400, "invalid-input", tc.msg...)
	}
	if n := len(s.Locked(q)); n != 0 {
		t.Errorf("%d requests were locked by refused calls", n)
	}
	expectError(t, c.do(OpListRequests, "GET", qp+"/requests?cursor=%%%", nil), 400, "invalid-input", "cannot be parsed")
	expectError(t, c.do(OpGetHead, "GET", qp+"/head?limit=+0x10", nil), 400, "invalid-input", `"limit"`)
	// What is plain still works: "60.0" and a sign are numbers the spec allows.
	r := c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60.0&limit=%2B2&clientKey=k", nil)
	expectStatus(t, r, 201)
	if n := len(r.items(t)); n != 2 {
		t.Errorf("locked %d, want 2", n)
	}
}

// A web page in the developer's browser cannot change a tokenless
// emulator's state: the headers browsers send on cross-site requests get
// 403, with or without the ?method= override. Programs send none of them.
func TestCrossSiteBrowserRequestsAreRefused(t *testing.T) {
	s, _, q, _ := newQueue(t, 2)
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	expectStatus(t, c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&clientKey=k", nil), 201)
	host := strings.TrimPrefix(s.URL, "http://")
	for _, tc := range []struct {
		name   string
		method string
		path   string
		header []string
	}{
		{"img tag: GET ?method=POST, cross-site", "GET", qp + "/requests/unlock?method=POST&clientKey=k",
			[]string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "image", "Referer", "https://evil.example/"}},
		{"old browser: GET ?method=POST with only a Referer", "GET", qp + "/requests/unlock?method=POST&clientKey=k",
			[]string{"Referer", "https://evil.example/page?token=leaky-secret"}},
		{"form POST, cross-site", "POST", qp + "/requests/unlock?clientKey=k",
			[]string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"}},
		{"form POST from a sibling subdomain", "POST", qp + "/requests/unlock?clientKey=k",
			[]string{"Sec-Fetch-Site", "same-site"}},
		{"fetch from a sandboxed page", "POST", qp + "/requests/unlock?clientKey=k", []string{"Origin", "null"}},
		{"fetch DELETE, foreign Origin only", "DELETE", qp, []string{"Origin", "http://localhost:3000"}},
		// To a plain-http address that is not loopback (serve --addr
		// 0.0.0.0:8080, called at its LAN address), browsers send no
		// Sec-Fetch-*, and an img tag with referrerpolicy=no-referrer no
		// Referer: only the browser's User-Agent is left.
		{"img tag with no-referrer: GET ?method=POST, browser User-Agent only", "GET", qp + "/requests/unlock?method=POST&clientKey=k",
			[]string{"User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15", "Accept", "image/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do("", tc.method, tc.path, nil, tc.header...)
			expectError(t, r, 403, "insufficient-permissions", "another site")
			if strings.Contains(r.errMessage(), "leaky-secret") {
				t.Errorf("the message holds the Referer's query: %s", r.errMessage())
			}
		})
	}
	if n := len(s.LockedBy(q, "k")); n != 2 {
		t.Errorf("%d locks left, want 2: a refused call unlocked", n)
	}
	if s.Requests(q) == nil {
		t.Fatal("the queue was deleted")
	}
	// Reads from anywhere, and writes from the emulator's own origin or
	// from a program, still work.
	expectStatus(t, c.do(OpGetHead, "GET", qp+"/head", nil, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"), 200)
	expectStatus(t, c.do(OpUnlockRequests, "POST", qp+"/requests/unlock?clientKey=k", nil, "Origin", "http://"+host, "Sec-Fetch-Site", "same-origin"), 200)
	expectStatus(t, c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&clientKey=k", nil, "Sec-Fetch-Site", "none"), 201)
	// A URL with ?method= typed into the browser's address bar.
	expectStatus(t, c.do(OpUnlockRequests, "GET", qp+"/requests/unlock?method=POST&clientKey=k", nil,
		"User-Agent", "Mozilla/5.0 (X11; Linux x86_64)", "Sec-Fetch-Site", "none", "Sec-Fetch-Mode", "navigate"), 200)
	expectStatus(t, c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&clientKey=k", nil), 201)
	r := c.do(OpUnlockRequests, "GET", qp+"/requests/unlock?method=POST&clientKey=k", nil)
	expectStatus(t, r, 200)
	if fmt.Sprint(r.data(t)["unlockedCount"]) != "2" {
		t.Errorf("the override from a program: %s", r.Raw)
	}
}

// countingClock counts its readings.
type countingClock struct {
	*ManualClock
	reads atomic.Int64
}

func (c *countingClock) Now() time.Time {
	c.reads.Add(1)
	return c.ManualClock.Now()
}

// Each call reads the clock once, so all of it happens at one instant: a
// prolong cannot find a lock live at one reading and renew it from a later.
func TestOneCallReadsTheClockOnce(t *testing.T) {
	clock := &countingClock{ManualClock: NewManualClock(t0)}
	s := Start(t, WithClock(clock), WithQueue("q"), WithRateLimits(DefaultRateLimits))
	q := s.CreateQueue("q")
	ids := s.AddRequests(q, Request{URL: "https://a.test/"}, Request{URL: "https://b.test/"})
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	for _, call := range []struct {
		op           Operation
		method, path string
		body         any
	}{
		{OpListAndLockHead, "POST", qp + "/head/lock?lockSecs=60&clientKey=k", nil},
		{OpProlongRequestLock, "PUT", qp + "/requests/" + ids[0] + "/lock?lockSecs=60&clientKey=k", nil},
		{OpDeleteRequestLock, "DELETE", qp + "/requests/" + ids[1] + "/lock?clientKey=k", nil},
		{OpUpdateRequest, "PUT", qp + "/requests/" + ids[0] + "?clientKey=k", map[string]any{"url": "https://a.test/", "uniqueKey": "https://a.test/", "handledAt": "2026-01-01T00:00:00Z"}},
		{OpAddRequest, "POST", qp + "/requests", map[string]any{"url": "https://c.test/", "uniqueKey": "c"}},
		{OpGetHead, "GET", qp + "/head", nil},
		{OpUnlockRequests, "POST", qp + "/requests/unlock?clientKey=k", nil},
		{OpGetQueue, "GET", "/v2/request-queues/~q", nil},
		{OpGetOrCreateQueue, "POST", "/v2/request-queues?name=q2", nil},
	} {
		before := clock.reads.Load()
		r := c.do(call.op, call.method, call.path, call.body)
		if r.Status >= 300 {
			t.Fatalf("%s: %d %s", call.op, r.Status, r.Raw)
		}
		if n := clock.reads.Load() - before; n != 1 {
			t.Errorf("%s read the clock %d times", call.op, n)
		}
	}
}

// A few huge requests cannot make one response huge: uniqueKey and url are
// capped on write, and head, head/lock and list stop at about 8 MiB,
// leaving the rest for the next call.
func TestResponsesAreBounded(t *testing.T) {
	s, _, q, _ := newQueue(t, 0)
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	huge := strings.Repeat("k", MaxKeyBytes+1)
	expectError(t, c.do(OpAddRequest, "POST", qp+"/requests", map[string]any{"url": "https://x.test/", "uniqueKey": huge}), 400, "invalid-input", `"uniqueKey"`, "16384")
	expectError(t, c.do(OpBatchAddRequests, "POST", qp+"/requests/batch", []any{map[string]any{"url": "https://x.test/" + huge, "uniqueKey": "x"}}),
		400, "invalid-input", "index 0", `"url"`)
	expectStatus(t, c.do(OpAddRequest, "POST", qp+"/requests", map[string]any{"url": "https://x.test/", "uniqueKey": huge[1:]}), 201)

	// Seeded directly (the API would refuse them): 20 requests of 256 KiB
	// each, against a budget lowered from 8 MiB to 1 MiB to keep the test
	// quick (the same as 20 of 9 MB against 8 MiB).
	defer func(old int) { maxResponseBytes = old }(maxResponseBytes)
	maxResponseBytes = 1 << 20
	big := make([]Request, 20)
	for i := range big {
		big[i] = Request{URL: "https://x.test/" + itoa(i), UniqueKey: itoa(i) + strings.Repeat("u", 256<<10)}
	}
	s.AddRequests(q, big...)
	c = &rawClient{t: t, h: s.Handler()}
	r := c.do(OpGetHead, "GET", qp+"/head?limit=1000", nil)
	expectStatus(t, r, 200)
	if n := len(r.items(t)); n < 2 || n > 5 || len(r.Raw) > 5<<18 {
		t.Errorf("GET head returned %d items in %d bytes", n, len(r.Raw))
	}
	r = c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&limit=25&clientKey=k", nil)
	expectStatus(t, r, 201)
	if n := len(r.items(t)); n < 2 || n > 5 || len(r.Raw) > 5<<18 || len(s.LockedBy(q, "k")) != n {
		t.Errorf("head/lock returned %d items in %d bytes and locked %d", n, len(r.Raw), len(s.LockedBy(q, "k")))
	}
	// Listing pages through all 21, each page bounded.
	seen, cursor := 0, ""
	for page := 0; ; page++ {
		path := qp + "/requests?limit=10000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r = c.do(OpListRequests, "GET", path, nil)
		expectStatus(t, r, 200)
		if len(r.Raw) > 5<<18 {
			t.Errorf("page %d has %d bytes", page, len(r.Raw))
		}
		seen += len(r.items(t))
		next, _ := r.data(t)["nextCursor"].(string)
		if next == "" || page > 30 {
			break
		}
		cursor = next
	}
	if seen != 21 {
		t.Errorf("listed %d requests, want 21", seen)
	}
}

// A page on a host name the attacker controls, re-pointed at 127.0.0.1
// (DNS rebinding), is "same-origin" with the emulator as far as the
// browser can tell: its calls carry browser headers, under a Host that is a
// DNS name rather than an IP address or localhost. They are refused (reads
// too, when they carry Origin or Sec-Fetch-Site); a program calling the
// emulator by a DNS name (docker compose, say) sends no browser headers and
// is served, and so is a URL typed into the browser.
func TestDNSRebindingIsRefused(t *testing.T) {
	s, _, q, _ := newQueue(t, 2)
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	expectStatus(t, c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&clientKey=k", nil), 201)
	call := func(method, host, path string, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://"+host+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	const rebound = "rebind.attacker.example:8080"
	for _, tc := range []struct {
		name, method, path string
		header             []string
	}{
		{"fetch POST, same-origin", "POST", qp + "/requests/unlock?clientKey=k",
			[]string{"Origin", "http://" + rebound, "Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors"}},
		{"old browser fetch POST, Origin only", "POST", qp + "/requests/unlock?clientKey=k", []string{"Origin", "http://" + rebound}},
		{"img tag: GET ?method=POST, same-origin", "GET", qp + "/requests/unlock?method=POST&clientKey=k",
			[]string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Dest", "image", "Referer", "http://" + rebound + "/page"}},
		{"old browser img tag, Referer only", "GET", qp + "/requests/unlock?method=POST&clientKey=k", []string{"Referer", "http://" + rebound + "/page"}},
		{"fetch GET reading the queue", "GET", qp + "/requests", []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors"}},
		// Browsers send no Sec-Fetch-* to a plain-http DNS name, and an img
		// tag with referrerpolicy=no-referrer sends no Referer: what is
		// left is the browser's User-Agent, which a page cannot change.
		{"img tag with no-referrer: GET ?method=POST", "GET", qp + "/requests/unlock?method=POST&clientKey=k",
			[]string{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36", "Accept", "image/avif,image/webp,*/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := call(tc.method, rebound, tc.path, tc.header...)
			why := `"rebind.attacker.example", which may have been re-pointed at this machine (DNS rebinding)`
			if strings.HasPrefix(tc.name, "img tag with no-referrer") {
				why = "without Sec-Fetch-Site or Referer" // refused as cross-site, whatever the host
			}
			var e struct {
				Error struct{ Type, Message string }
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != 403 || e.Error.Type != "insufficient-permissions" || !strings.Contains(e.Error.Message, why) {
				t.Errorf("%d %s", rec.Code, rec.Body.String())
			}
		})
	}
	if n := len(s.LockedBy(q, "k")); n != 2 {
		t.Fatalf("%d locks left, want 2: a refused call unlocked", n)
	}
	// Served: a program by a DNS name; a browser by IP address or localhost,
	// or a URL the user typed.
	for _, tc := range []struct {
		name, host string
		header     []string
	}{
		{"program, DNS name", "emulator:8080", []string{"User-Agent", "ApifyClient/2.25.0 (linux; Node/v22.0.0); isAtHome/false"}},
		{"browser, localhost", "localhost:8080", []string{"Origin", "http://localhost:8080", "Sec-Fetch-Site", "same-origin"}},
		{"browser, a localhost subdomain", "app.localhost:8080", []string{"Origin", "http://app.localhost:8080", "Sec-Fetch-Site", "same-origin"}},
		{"browser, IPv4", "127.0.0.1:8080", []string{"Origin", "http://127.0.0.1:8080", "Sec-Fetch-Site", "same-origin"}},
		{"browser, IPv6", "[::1]:8080", []string{"Origin", "http://[::1]:8080", "Sec-Fetch-Site", "same-origin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rec := call("GET", tc.host, qp+"/head", tc.header...); rec.Code != 200 {
				t.Errorf("head: %d %s", rec.Code, rec.Body.String())
			}
		})
	}
	if rec := call("GET", "emulator.example:8080", qp+"/head", "User-Agent", "Mozilla/5.0 (X11; Linux x86_64)", "Accept", "text/html"); rec.Code != 200 {
		t.Errorf("a typed URL: %d %s", rec.Code, rec.Body.String())
	}
	if rec := call("POST", "emulator:8080", qp+"/requests/unlock?clientKey=k"); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"unlockedCount":2`) {
		t.Errorf("a program's unlock by a DNS name: %d %s", rec.Code, rec.Body.String())
	}
}
