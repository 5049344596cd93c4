package apifytest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
)

func TestTokens(t *testing.T) {
	s, _, q, _ := newQueue(t, 1, WithToken("good"), WithToken("also-good"))
	path := "/v2/request-queues/" + q
	cases := []struct {
		name    string
		header  []string
		query   string
		status  int
		errType string
	}{
		{"no token", nil, "", 401, "token-not-provided"},
		{"wrong token", []string{"Authorization", "Bearer bad"}, "", 401, "invalid-token"},
		{"not a bearer token", []string{"Authorization", "Basic Z29vZA=="}, "", 401, "invalid-token"},
		{"good token in the header", []string{"Authorization", "Bearer good"}, "", 200, ""},
		{"second token, lower-case scheme", []string{"Authorization", "bearer also-good"}, "", 200, ""},
		{"good token in the query", nil, "?token=good", 200, ""},
		{"wrong token in the query", nil, "?token=bad", 401, "invalid-token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := raw(t, s).do(OpGetQueue, "GET", path+tc.query, nil, tc.header...)
			if tc.errType != "" {
				expectError(t, r, tc.status, tc.errType)
			} else {
				expectStatus(t, r, tc.status)
			}
		})
	}
	// Client uses the first token; an option overrides it.
	if _, err := s.Client().RequestQueue(q).UnlockRequests(context.Background(), "k"); err != nil {
		t.Errorf("Client(): %v", err)
	}
	_, err := s.Client(apify.WithToken("bad")).RequestQueue(q).UnlockRequests(context.Background(), "k")
	var apiErr *apify.APIError
	if !errors.Is(err, apify.ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.Type != "invalid-token" {
		t.Errorf("Client(WithToken(bad)): %v", err)
	}
}

func TestWithoutTokensAnyTokenIsTheDefaultUser(t *testing.T) {
	s := Start(t, WithQueue("q"))
	r := raw(t, s).withToken("whatever").do(OpGetQueue, "GET", "/v2/request-queues/~q", nil)
	expectStatus(t, r, 200)
	r = raw(t, s).do(OpGetQueue, "GET", "/v2/request-queues/"+DefaultUser+"~q", nil)
	expectStatus(t, r, 200)
}

func TestUsers(t *testing.T) {
	s := Start(t, WithUserToken("alice-token", "alice"), WithUserToken("bob-token", "bob"))
	alice, bob := raw(t, s).withToken("alice-token"), raw(t, s).withToken("bob-token")
	r := alice.do(OpGetOrCreateQueue, "POST", "/v2/request-queues?name=shared", nil)
	expectStatus(t, r, 201)
	id := r.data(t)["id"].(string)
	expectStatus(t, alice.do(OpGetQueue, "GET", "/v2/request-queues/~shared", nil), 200)
	expectStatus(t, alice.do(OpGetQueue, "GET", "/v2/request-queues/alice~shared", nil), 200)
	expectStatus(t, bob.do(OpGetQueue, "GET", "/v2/request-queues/"+id, nil), 200) // the ID is the capability
	expectError(t, bob.do(OpGetQueue, "GET", "/v2/request-queues/alice~shared", nil), 403, "insufficient-permissions", "use its ID")
	expectError(t, bob.do(OpGetQueue, "GET", "/v2/request-queues/~shared", nil), 404, "record-not-found")
	expectError(t, bob.do(OpGetQueue, "GET", "/v2/request-queues/carol~shared", nil), 404, "record-not-found", `"carol"`)
	// Same name, different users: different queues.
	r = bob.do(OpGetOrCreateQueue, "POST", "/v2/request-queues?name=shared", nil)
	expectStatus(t, r, 201)
	if r.data(t)["id"] == id || r.data(t)["userId"] == alice.do(OpGetQueue, "GET", "/v2/request-queues/"+id, nil).data(t)["userId"] {
		t.Errorf("bob's queue = %v", r.data(t))
	}
}

func TestFailNextThroughTheSDK(t *testing.T) {
	s := Start(t, WithQueue("q"))
	q := s.CreateQueue("q")
	c := s.Client()

	s.FailNext(OpUnlockRequests, 2, Fault{Status: 503, RetryAfter: "0"})
	res, err := c.RequestQueue(q).UnlockRequests(context.Background(), "k")
	if err != nil || res.UnlockedCount != 0 {
		t.Fatalf("after 2 faults: %+v, %v", res, err)
	}
	if n := s.Calls(OpUnlockRequests); n != 3 {
		t.Errorf("Calls = %d, want 3 (two 503s, then success)", n)
	}

	s.FailNext(OpUnlockRequests, 1, Fault{DropConnection: true})
	if _, err := c.RequestQueue(q).UnlockRequests(context.Background(), "k"); err != nil {
		t.Errorf("after a dropped connection: %v", err)
	}
	if n := s.Calls(OpUnlockRequests); n != 5 {
		t.Errorf("Calls = %d, want 5", n)
	}

	s.FailNext(OpUnlockRequests, 3, Fault{Status: 500, Type: "internal-server-error", Message: "disk on fire"})
	_, err = s.Client(apify.WithMaxRetries(2)).RequestQueue(q).UnlockRequests(context.Background(), "k")
	var apiErr *apify.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || apiErr.Message != "disk on fire" || apiErr.Attempts != 3 {
		t.Errorf("retries exhausted: %v", err)
	}

	// A 400 is not retried.
	s.FailNext(OpUnlockRequests, 1, Fault{Status: 400, Type: "invalid-input", Message: "no"})
	before := s.Calls(OpUnlockRequests)
	_, err = c.RequestQueue(q).UnlockRequests(context.Background(), "k")
	if !errors.Is(err, apify.ErrInvalidInput) || s.Calls(OpUnlockRequests) != before+1 {
		t.Errorf("400: %v after %d calls", err, s.Calls(OpUnlockRequests)-before)
	}
}

func TestFailNextOverRawHTTP(t *testing.T) {
	e := newEnv(t)
	e.s.FailNext(OpListAndLockHead, 1, Fault{Status: 429, RetryAfter: "7"})
	e.s.FailNext(OpListAndLockHead, 1, Fault{Status: 503, Type: "internal-server-error", Message: "try later", RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"})
	r := e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, "a"), nil)
	expectError(t, r, 429, "rate-limit-exceeded", "Injected fault", string(OpListAndLockHead))
	if got := r.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After = %q", got)
	}
	r = e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, "a"), nil)
	expectError(t, r, 503, "internal-server-error", "try later")
	if got := r.Header.Get("Retry-After"); got != "Wed, 21 Oct 2015 07:28:00 GMT" {
		t.Errorf("Retry-After = %q", got)
	}
	if n := len(e.s.Locked(e.q)); n != 0 {
		t.Errorf("a failed call locked %d requests", n)
	}
	expectStatus(t, e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, "a"), nil), 201)
	if n := e.s.Calls(OpListAndLockHead); n != 3 {
		t.Errorf("Calls = %d, want 3", n)
	}

	// Faults answer before authentication; other operations are unaffected.
	e.s.FailNext(OpGetHead, 1, Fault{DropConnection: true})
	expectStatus(t, e.c.do(OpGetQueue, "GET", "/v2/request-queues/"+e.q, nil), 200)
	// A fresh connection: net/http silently retries an idempotent request
	// whose reused keep-alive connection closes before any response.
	fresh := &http.Client{Transport: &http.Transport{}}
	_, err := fresh.Get(e.s.URL + "/v2/request-queues/" + e.q + "/head")
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "EOF")) {
		t.Errorf("dropped connection: err = %v", err)
	}
	expectStatus(t, e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head", nil), 200)
}

func TestFailNextRejectsNonsense(t *testing.T) {
	s := NewUnstartedServer()
	for name, f := range map[string]func(){
		"unknown op":    func() { s.FailNext("requestQueue_teleport", 1, Fault{Status: 500}) },
		"negative n":    func() { s.FailNext(OpGetHead, -1, Fault{Status: 500}) },
		"status 200":    func() { s.FailNext(OpGetHead, 1, Fault{Status: 200}) },
		"status absent": func() { s.FailNext(OpGetHead, 1, Fault{}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if p := recover(); p == nil || !strings.Contains(p.(string), "FailNext") {
					t.Errorf("recovered %v", p)
				}
			}()
			f()
		})
	}
	s.FailNext(OpGetHead, 0, Fault{}) // n = 0 does nothing, whatever the fault
}

// An unstarted server serves its Client in memory, so it works inside a
// synctest bubble, where the SDK's backoff waits take no real time.
func TestInMemoryInsideSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewUnstartedServer(WithQueue("q"))
		q := s.CreateQueue("q")
		s.AddRequests(q, Request{URL: "https://a.test/"}, Request{URL: "https://b.test/"})
		c := s.Client(apify.WithRetryWait(time.Second, 10*time.Second))

		r := (&rawClient{t: t, h: s.Handler()}).do(OpListAndLockHead, "POST", headLock(q, 60, 2, "k"), nil)
		expectStatus(t, r, 201)

		s.FailNext(OpUnlockRequests, 2, Fault{Status: 503, RetryAfter: "5"})
		s.FailNext(OpUnlockRequests, 1, Fault{DropConnection: true})
		start := time.Now()
		res, err := c.RequestQueue(q).UnlockRequests(context.Background(), "k")
		if err != nil || res.UnlockedCount != 2 {
			t.Fatalf("%+v, %v", res, err)
		}
		if s.Calls(OpUnlockRequests) != 4 {
			t.Errorf("Calls = %d, want 4", s.Calls(OpUnlockRequests))
		}
		if waited := time.Since(start); waited < 10*time.Second {
			t.Errorf("waited %v of fake time, want at least the two Retry-After: 5", waited)
		}
		// Locks expire with synctest's fake clock, the default Clock.
		r = (&rawClient{t: t, h: s.Handler()}).do(OpListAndLockHead, "POST", headLock(q, 60, 2, "k"), nil)
		expectStatus(t, r, 201)
		time.Sleep(time.Minute)
		if n := len(s.Locked(q)); n != 0 {
			t.Errorf("%d locks after their minute", n)
		}
	})
}

func TestOptionsAreChecked(t *testing.T) {
	cases := map[string][]Option{
		"empty token":        {WithToken("")},
		"token with a space": {WithToken("a b")},
		"token bound twice":  {WithToken("t"), WithRunToken("t", "RUN")},
		"empty run ID":       {WithRunToken("t", "")},
		"bad username":       {WithUserToken("t", "a~b")},
		"nil clock":          {WithClock(nil)},
		"bad queue name":     {WithQueue("no spaces")},
		"empty queue name":   {WithQueue("")},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if p := recover(); p == nil || !strings.HasPrefix(p.(string), "apifytest: With") {
					t.Errorf("recovered %v", p)
				}
			}()
			NewUnstartedServer(opts...)
		})
	}
	// The same token given twice to the same user is fine.
	NewUnstartedServer(WithToken("t"), WithToken("t"))
}

func TestLifecycle(t *testing.T) {
	s := NewServer(WithQueue("a"), WithQueue("b"))
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") && !strings.HasPrefix(s.URL, "http://[::1]:") {
		t.Errorf("URL = %q", s.URL)
	}
	a := s.CreateQueue("a")
	if a == s.CreateQueue("b") || a != s.CreateQueue("a") || len(a) != 17 {
		t.Errorf("queue IDs: %q, %q", a, s.CreateQueue("b"))
	}
	if u1, u2 := s.CreateQueue(""), s.CreateQueue(""); u1 == u2 {
		t.Error("two unnamed queues share an ID")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Start on a started server did not panic")
			}
		}()
		s.Start()
	}()
	s.Close()
	s.Close()
	if _, err := http.Get(s.URL + "/v2/request-queues/" + a); err == nil {
		t.Error("the server still answers after Close")
	}
	NewUnstartedServer().Close() // closing a server never started is fine
}

func TestStateSnapshots(t *testing.T) {
	e := newEnv(t)
	e.lock(t, "a", 1)
	locked := e.s.LockedBy(e.q, "a")
	locked[0].Lock.ExpiresAt = time.Time{}
	locked[0].URL = "changed"
	st, ok := e.s.Request(e.q, e.ids[0])
	if !ok || st.URL != "https://example.com/0" || !st.Lock.ExpiresAt.Equal(t0.Add(time.Minute)) || st.Handled() {
		t.Errorf("state changed through a snapshot: %+v %+v", st, st.Lock)
	}
	if _, ok := e.s.Request(e.q, "nope"); ok {
		t.Error("Request found a request that does not exist")
	}
	for name, got := range map[string][]RequestState{
		"Requests": e.s.Requests("nope"), "Pending": e.s.Pending("nope"), "Locked": e.s.Locked("nope"),
		"LockedBy": e.s.LockedBy("nope", "a"), "LockedByRun": e.s.LockedByRun("nope", "R"), "Handled": e.s.Handled("nope"),
	} {
		if got != nil {
			t.Errorf("%s of an unknown queue = %v, want nil", name, got)
		}
	}
	if got := e.s.Handled(e.q); got == nil || len(got) != 0 {
		t.Errorf("Handled of a queue with none = %#v, want empty", got)
	}
	ids := e.s.AddRequests(e.q, Request{URL: "https://p.test/", Method: "post"}, Request{URL: "https://example.com/0", UniqueKey: "u0"})
	if ids[0] != RequestID("https://p.test/") || ids[1] != e.ids[0] {
		t.Errorf("AddRequests = %v", ids)
	}
	if st, _ := e.s.Request(e.q, ids[0]); st.Method != "POST" || st.UniqueKey != "https://p.test/" {
		t.Errorf("seeded request = %+v", st)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("AddRequests to an unknown queue did not panic")
			}
		}()
		e.s.AddRequests("nope", Request{URL: "x"})
	}()
}

// Another user may read a queue by ID (as its generalAccess allows) but
// never change it: 403 insufficient-permissions, and nothing changes.
func TestOnlyTheOwnerChangesAQueue(t *testing.T) {
	s := Start(t, WithUserToken("alice-token", "alice"), WithUserToken("bob-token", "bob"))
	alice, bob := raw(t, s).withToken("alice-token"), raw(t, s).withToken("bob-token")
	r := alice.do(OpGetOrCreateQueue, "POST", "/v2/request-queues?name=shared", nil)
	expectStatus(t, r, 201)
	qp := "/v2/request-queues/" + r.data(t)["id"].(string)
	expectStatus(t, alice.do(OpAddRequest, "POST", qp+"/requests", map[string]any{"url": "https://a.test/", "uniqueKey": "a"}), 201)
	expectStatus(t, alice.do(OpAddRequest, "POST", qp+"/requests", map[string]any{"url": "https://b.test/", "uniqueKey": "b"}), 201)
	expectStatus(t, alice.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&limit=1&clientKey=k", nil), 201)
	a := RequestID("a")

	for _, read := range []struct {
		op           Operation
		method, path string
	}{
		{OpGetQueue, "GET", qp}, {OpListRequests, "GET", qp + "/requests"}, {OpGetHead, "GET", qp + "/head"},
		{OpGetRequest, "GET", qp + "/requests/" + a},
	} {
		expectStatus(t, bob.do(read.op, read.method, read.path, nil), 200)
	}
	for _, write := range []struct {
		op           Operation
		method, path string
		body         any
	}{
		{OpUpdateQueue, "PUT", qp, map[string]any{"name": "mine-now"}},
		{OpDeleteQueue, "DELETE", qp, nil},
		{OpAddRequest, "POST", qp + "/requests", map[string]any{"url": "https://c.test/", "uniqueKey": "c"}},
		{OpBatchAddRequests, "POST", qp + "/requests/batch", []any{map[string]any{"url": "https://c.test/", "uniqueKey": "c"}}},
		{OpBatchDeleteRequests, "DELETE", qp + "/requests/batch", []any{map[string]any{"uniqueKey": "b"}}},
		{OpUnlockRequests, "POST", qp + "/requests/unlock?clientKey=k", nil},
		{OpUpdateRequest, "PUT", qp + "/requests/" + RequestID("b"), map[string]any{"url": "https://b.test/", "uniqueKey": "b", "handledAt": "2026-01-01T00:00:00.000Z"}},
		{OpDeleteRequest, "DELETE", qp + "/requests/" + RequestID("b"), nil},
		{OpProlongRequestLock, "PUT", qp + "/requests/" + a + "/lock?lockSecs=600&clientKey=k", nil},
		{OpDeleteRequestLock, "DELETE", qp + "/requests/" + a + "/lock?clientKey=k", nil},
		{OpListAndLockHead, "POST", qp + "/head/lock?lockSecs=60", nil},
	} {
		expectError(t, bob.do(write.op, write.method, write.path, write.body), 403, "insufficient-permissions", "Only its owner", `"bob"`)
	}
	q := strings.TrimPrefix(qp, "/v2/request-queues/")
	if n, l := len(s.Requests(q)), s.LockedBy(q, "k"); n != 2 || len(l) != 1 || !l[0].Lock.ExpiresAt.Equal(s.Requests(q)[0].Lock.ExpiresAt) || len(s.Handled(q)) != 0 {
		t.Errorf("bob changed the queue: %d requests, locks %+v", n, l)
	}
	expectStatus(t, alice.do(OpGetQueue, "GET", "/v2/request-queues/~shared", nil), 200)

	// RESTRICTED: not even readable by ID; ANYONE_WITH_NAME_CAN_READ: by name too.
	expectStatus(t, alice.do(OpUpdateQueue, "PUT", qp, map[string]any{"generalAccess": "RESTRICTED"}), 200)
	expectError(t, bob.do(OpGetQueue, "GET", qp, nil), 403, "insufficient-permissions", "RESTRICTED")
	expectError(t, bob.do(OpGetHead, "GET", qp+"/head", nil), 403, "insufficient-permissions")
	expectStatus(t, alice.do(OpUpdateQueue, "PUT", qp, map[string]any{"generalAccess": "ANYONE_WITH_NAME_CAN_READ"}), 200)
	expectStatus(t, bob.do(OpGetQueue, "GET", "/v2/request-queues/alice~shared", nil), 200)
	expectError(t, bob.do(OpUnlockRequests, "POST", "/v2/request-queues/alice~shared/requests/unlock?clientKey=k", nil), 403, "insufficient-permissions")
}

// New returns an error where NewUnstartedServer panics.
func TestNewReturnsErrors(t *testing.T) {
	s, err := New(WithToken(""), WithQueue("-bad"), WithRateLimits(RateLimits{Batch: -1}), WithHTTPLimits(HTTPLimits{MaxConns: -1}))
	if s != nil || err == nil {
		t.Fatalf("New = %v, %v", s, err)
	}
	for _, want := range []string{"WithToken", "WithQueue", "WithRateLimits", "WithHTTPLimits"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
	s, err = New(WithQueue("q"))
	if err != nil || s.URL != "" || s.CreateQueue("q") == "" {
		t.Fatalf("New = %v, %v", s, err)
	}
}

// Client works with whatever tokens the server has.
func TestClientUsesAConfiguredToken(t *testing.T) {
	for name, opts := range map[string][]Option{
		"user tokens only": {WithUserToken("u-2", "zed"), WithUserToken("u-1", "amy")},
		"run tokens only":  {WithRunToken("r-1", "RUN1")},
		"run and user":     {WithRunToken("a-run", "RUN1"), WithUserToken("b-user", "bob")},
		"WithToken wins":   {WithUserToken("a-user", "amy"), WithToken("z-plain")},
	} {
		t.Run(name, func(t *testing.T) {
			s := Start(t, opts...)
			q, err := s.Client().RequestQueue("~mine").UnlockRequests(context.Background(), "k")
			if err == nil || !strings.Contains(err.Error(), "404") {
				t.Fatalf("unlock on a missing queue: %+v, %v (want 404, not 401)", q, err)
			}
		})
	}
	s := Start(t, WithRunToken("r-1", "RUN1"), WithUserToken("b-user", "bob"))
	if s.plain != "b-user" {
		t.Errorf("Client uses %q, want the user token", s.plain)
	}
}
