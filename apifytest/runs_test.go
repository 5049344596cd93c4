package apifytest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rqkit/apify"
)

// An Actor run's default queue is served under
// /v2/actor-runs/{runId}/request-queue: the SDK's RunRequestQueue works on
// it end to end, and it is the queue RunQueue names.
func TestRunDefaultQueueThroughTheSDK(t *testing.T) {
	s := Start(t, WithToken("tok"), WithRunToken("run-tok", "RUN1"))
	ctx := context.Background()
	rq := s.Client().RunRequestQueue("RUN1")
	if _, err := rq.AddRequest(ctx, apify.Request{URL: "https://a.test/1", UniqueKey: "1"}, apify.RequestOptions{ClientKey: "k"}); err != nil {
		t.Fatal(err)
	}
	head, err := rq.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, ClientKey: "k"})
	if err != nil || len(head.Items) != 1 {
		t.Fatalf("head/lock: %+v, %v", head, err)
	}
	if _, err := rq.MarkHandled(ctx, head.Items[0].ID, apify.RequestOptions{ClientKey: "k"}); err != nil {
		t.Fatal(err)
	}
	info, err := rq.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := s.RunQueue("RUN1")
	if info.ID != id || info.Name != "" || info.HandledRequestCount != 1 {
		t.Errorf("the run's queue: %+v, RunQueue says %s", info, id)
	}
	if got := s.Handled(id); len(got) != 1 || got[0].URL != "https://a.test/1" {
		t.Errorf("handled in %s: %+v", id, got)
	}
	if s.RunQueue("RUN1") != id {
		t.Error("RunQueue made a second queue for the same run")
	}
	// The run's own token reaches it too, and the queue ID does.
	n := 0
	for _, err := range s.Client(apify.WithToken("run-tok")).RequestQueue(id).ListRequests(ctx, apify.ListRequestsOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("listed %d requests by ID", n)
	}
}

func TestRunDefaultQueueOverHTTP(t *testing.T) {
	s := Start(t, WithToken("tok"), WithRunToken("run-tok", "RUN1"))
	c := raw(t, s).withToken("tok")
	rp := "/v2/actor-runs/RUN1/request-queue"

	// Every route of a queue is there, answering as the spec says.
	expectStatus(t, c.do(OpGetQueue, "GET", rp, nil), 200)
	expectStatus(t, c.do(OpAddRequest, "POST", rp+"/requests?clientKey=k", map[string]any{"url": "https://a.test/1", "uniqueKey": "1"}), 201)
	expectStatus(t, c.do(OpBatchAddRequests, "POST", rp+"/requests/batch?clientKey=k", []any{map[string]any{"url": "https://a.test/2", "uniqueKey": "2"}}), 201)
	expectStatus(t, c.do(OpListRequests, "GET", rp+"/requests?clientKey=k", nil), 200)
	expectStatus(t, c.do(OpGetHead, "GET", rp+"/head?clientKey=k", nil), 200)
	locked := c.do(OpListAndLockHead, "POST", rp+"/head/lock?lockSecs=60&limit=2&clientKey=k", nil)
	expectStatus(t, locked, 201)
	ids := locked.ids(t)
	expectStatus(t, c.do(OpProlongRequestLock, "PUT", rp+"/requests/"+ids[0]+"/lock?lockSecs=60&clientKey=k", nil), 200)
	expectStatus(t, c.do(OpDeleteRequestLock, "DELETE", rp+"/requests/"+ids[0]+"/lock?clientKey=k", nil), 204)
	expectStatus(t, c.do(OpUnlockRequests, "POST", rp+"/requests/unlock?clientKey=k", nil), 200)
	expectStatus(t, c.do(OpGetRequest, "GET", rp+"/requests/"+ids[0], nil), 200)
	expectStatus(t, c.do(OpUpdateRequest, "PUT", rp+"/requests/"+ids[0]+"?clientKey=k", map[string]any{"url": "https://a.test/1", "uniqueKey": "1", "handledAt": "2026-01-01T00:00:00.000Z"}), 200)
	expectStatus(t, c.do(OpDeleteRequest, "DELETE", rp+"/requests/"+ids[1]+"?clientKey=k", nil), 204)
	expectStatus(t, c.do(OpBatchDeleteRequests, "DELETE", rp+"/requests/batch?clientKey=k", []any{map[string]any{"uniqueKey": "1"}}), 200)
	expectStatus(t, c.do(OpUpdateQueue, "PUT", rp, map[string]any{"name": "renamed"}), 200)
	if got := c.do(OpGetQueue, "GET", "/v2/request-queues/~renamed", nil).data(t)["id"]; got != s.RunQueue("RUN1") {
		t.Errorf("the run's queue is %v by name, %s by RunQueue", got, s.RunQueue("RUN1"))
	}

	// The calls are the operations' calls: counted, and faults apply.
	if n := s.Calls(OpUpdateQueue); n != 1 {
		t.Errorf("Calls(OpUpdateQueue) = %d", n)
	}
	s.FailNext(OpGetQueue, 1, Fault{Status: 503})
	expectError(t, c.do(OpGetQueue, "GET", rp, nil), 503, "internal-server-error", "Injected fault")

	// Authentication comes first; then a run the emulator does not know is 404.
	expectError(t, raw(t, s).do(OpGetQueue, "GET", "/v2/actor-runs/NOPE/request-queue", nil), 401, "token-not-provided")
	expectError(t, c.do(OpGetQueue, "GET", "/v2/actor-runs/NOPE/request-queue", nil), 404, "record-not-found", `Actor run "NOPE" was not found`, "Server.RunQueue")
	expectError(t, c.do(OpListAndLockHead, "POST", "/v2/actor-runs/NOPE/request-queue/head/lock?lockSecs=60", nil), 404, "record-not-found", "Actor run")

	// RunQueue makes a run known; deleting its queue leaves the run with none.
	id := s.RunQueue("NEW")
	if got := c.do(OpGetQueue, "GET", "/v2/actor-runs/NEW/request-queue", nil).data(t)["id"]; got != id {
		t.Errorf("NEW's queue: %v, want %s", got, id)
	}
	expectStatus(t, c.do(OpDeleteQueue, "DELETE", "/v2/actor-runs/NEW/request-queue", nil), 204)
	expectError(t, c.do(OpGetQueue, "GET", "/v2/actor-runs/NEW/request-queue", nil), 404, "record-not-found")
}

// The locks extension says who holds each lock and until when.
func TestLocksExtension(t *testing.T) {
	clock := NewManualClock(t0)
	s := Start(t, WithClock(clock), WithToken("tok"), WithRunToken("run-tok", "RUN1"))
	q := s.CreateQueue("locks")
	ids := s.AddRequests(q, Request{URL: "https://a.test/1"}, Request{URL: "https://a.test/2"}, Request{URL: "https://a.test/3"}, Request{URL: "https://a.test/4"})
	c := raw(t, s).withToken("tok")
	expectStatus(t, c.do(OpListAndLockHead, "POST", headLock(q, 120, 1, "alpha"), nil), 201)
	expectStatus(t, raw(t, s).withToken("run-tok").do(OpListAndLockHead, "POST", headLock(q, 60, 1, ""), nil), 201)
	expectStatus(t, c.do(OpListAndLockHead, "POST", headLock(q, 90, 1, "beta"), nil), 201)
	calls := s.Calls(OpListRequests)

	path := strings.Replace(LocksPath, "{queueId}", q, 1)
	r := plainGet(t, s.URL+path, "tok")
	expectStatus(t, r, 200)
	want := []map[string]any{
		{"id": ids[1], "runId": "RUN1", "lockExpiresAt": "2026-03-14T15:10:26.000Z", "forefront": true},
		{"id": ids[2], "clientKey": "beta", "lockExpiresAt": "2026-03-14T15:10:56.000Z", "forefront": true},
		{"id": ids[0], "clientKey": "alpha", "lockExpiresAt": "2026-03-14T15:11:26.000Z", "forefront": true},
	}
	got := r.items(t)
	if len(got) != len(want) {
		t.Fatalf("items: %s", r.Raw)
	}
	for i := range want {
		if !jsonEqual(got[i], want[i]) {
			t.Errorf("item %d: %v, want %v", i, got[i], want[i])
		}
	}
	if s.Calls(OpListRequests) != calls {
		t.Error("the extension counted as a listing")
	}
	// By name too; expired locks are gone.
	clock.Advance(100 * time.Second)
	if got := plainGet(t, s.URL+strings.Replace(LocksPath, "{queueId}", "~locks", 1), "tok").ids(t); len(got) != 1 || got[0] != ids[0] {
		t.Errorf("after 100 s: %v", got)
	}
	expectError(t, plainGet(t, s.URL+path, ""), 401, "token-not-provided")
	expectError(t, plainGet(t, s.URL+strings.Replace(LocksPath, "{queueId}", "NoSuchQueue", 1), "tok"), 404, "record-not-found")
}

// plainGet is a GET of a path outside the spec (so not checked against it).
func plainGet(t *testing.T, url, token string) resp {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	r := resp{Status: hr.StatusCode, Header: hr.Header}
	r.Raw, _ = io.ReadAll(hr.Body)
	if err := json.Unmarshal(r.Raw, &r.Body); err != nil {
		t.Fatalf("GET %s: %d, not JSON: %s", url, r.Status, r.Raw)
	}
	return r
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// A seeded request carries every field a test seeds with, as the API
// would store it; RequestState shows them, and is the test's to change.
func TestSeedingEveryField(t *testing.T) {
	s := Start(t)
	q := s.CreateQueue("seed")
	handledAt := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	ids := s.AddRequests(q,
		Request{URL: "https://a.test/1", UserData: json.RawMessage(`{ "depth": 2, "label": "DETAIL" }`),
			Headers: json.RawMessage(`{"Accept":"text/html"}`), Payload: json.RawMessage(`"a=1"`), Method: "post",
			LoadedURL: "https://a.test/1/", NoRetry: true, RetryCount: 3, ErrorMessages: []string{"boom", "bang"}},
		Request{URL: "https://a.test/2", HandledAt: handledAt})
	st, ok := s.Request(q, ids[0])
	if !ok {
		t.Fatal("not found")
	}
	if string(st.UserData) != `{"depth":2,"label":"DETAIL"}` || string(st.Headers) != `{"Accept":"text/html"}` || string(st.Payload) != `"a=1"` ||
		st.Method != "POST" || st.LoadedURL != "https://a.test/1/" || !st.NoRetry || st.RetryCount != 3 ||
		strings.Join(st.ErrorMessages, "|") != "boom|bang" || st.Handled() {
		t.Errorf("state: %+v", st)
	}
	// The API serves what was seeded.
	got := raw(t, s).do(OpGetRequest, "GET", reqPath(q, ids[0], "", ""), nil).data(t)
	if !jsonEqual(got["userData"], map[string]any{"depth": 2, "label": "DETAIL"}) || got["noRetry"] != true ||
		!jsonEqual(got["errorMessages"], []any{"boom", "bang"}) || got["payload"] != "a=1" {
		t.Errorf("GET: %v", got)
	}
	if h := s.Handled(q); len(h) != 1 || !h[0].HandledAt.Equal(handledAt) {
		t.Errorf("handled: %+v", h)
	}
	if p := s.Pending(q); len(p) != 1 || p[0].ID != ids[0] {
		t.Errorf("pending: %+v", p)
	}
	// A snapshot is a copy.
	st.UserData[2] = 'X'
	st.ErrorMessages[0] = "changed"
	if again, _ := s.Request(q, ids[0]); string(again.UserData) != `{"depth":2,"label":"DETAIL"}` || again.ErrorMessages[0] != "boom" {
		t.Errorf("changing a snapshot changed the queue: %+v", again)
	}

	for name, tc := range map[string]struct {
		req  Request
		want string
	}{
		"UserData an array":     {Request{URL: "https://a.test/x", UserData: json.RawMessage(`[1]`)}, `field "userData" must be an object`},
		"UserData not JSON":     {Request{URL: "https://a.test/x", UserData: json.RawMessage(`{`)}, "userData is not valid JSON"},
		"Headers a string":      {Request{URL: "https://a.test/x", Headers: json.RawMessage(`"x"`)}, `field "headers" must be an object`},
		"negative RetryCount":   {Request{URL: "https://a.test/x", RetryCount: -1}, `"retryCount" must be a whole number`},
		"Payload a number":      {Request{URL: "https://a.test/x", Payload: json.RawMessage(`7`)}, `field "payload" must be a string or an object`},
		"no URL":                {Request{UserData: json.RawMessage(`{}`)}, "request 0 has no URL"},
		"UserData null is none": {Request{URL: "https://a.test/null", UserData: json.RawMessage(`null`)}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				p := recover()
				msg, _ := p.(string)
				switch {
				case tc.want == "" && p != nil:
					t.Errorf("panicked: %v", p)
				case tc.want != "" && !strings.Contains(msg, "apifytest: AddRequests: ") || !strings.Contains(msg, tc.want):
					t.Errorf("panic %q, want %q", msg, tc.want)
				}
			}()
			s.AddRequests(q, tc.req)
		})
	}
}
