package apifytest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// env is what each table case runs against: a server with a ManualClock at
// t0 and a queue "q" holding u0, u1, u2 in that order.
type env struct {
	s     *Server
	clock *ManualClock
	q     string
	ids   []string
	c     *rawClient
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	s, clock, q, ids := newQueue(t, 3, opts...)
	return &env{s: s, clock: clock, q: q, ids: ids, c: raw(t, s)}
}

// expand replaces {q} with the queue ID and {r0}, {r1}, ... with request IDs.
func (e *env) expand(path string) string {
	path = strings.ReplaceAll(path, "{q}", e.q)
	for i, id := range e.ids {
		path = strings.ReplaceAll(path, "{r"+itoa(i)+"}", id)
	}
	return path
}

// lock takes n locks from the head for clientKey.
func (e *env) lock(t *testing.T, clientKey string, n int) []string {
	t.Helper()
	r := e.c.do(OpListAndLockHead, "POST", "/v2/request-queues/"+e.q+"/head/lock?lockSecs=60&limit="+itoa(n)+"&clientKey="+clientKey, nil)
	expectStatus(t, r, http.StatusCreated)
	return r.ids(t)
}

type opCase struct {
	name    string
	op      Operation
	method  string
	path    string
	body    any
	header  []string
	setup   func(t *testing.T, e *env)
	status  int
	errType string
	msg     []string
	check   func(t *testing.T, e *env, r resp)
}

func runCases(t *testing.T, cases []opCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			body := tc.body
			switch b := body.(type) {
			case nil, []byte:
			case string:
				body = e.expand(b)
			default:
				j, err := json.Marshal(b)
				if err != nil {
					t.Fatal(err)
				}
				body = e.expand(string(j))
			}
			r := e.c.do(tc.op, tc.method, e.expand(tc.path), body, tc.header...)
			if tc.errType != "" {
				expectError(t, r, tc.status, tc.errType, tc.msg...)
			} else {
				expectStatus(t, r, tc.status)
			}
			if tc.check != nil && !t.Failed() {
				tc.check(t, e, r)
			}
		})
	}
}

const qp = "/v2/request-queues/{q}"

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

func TestQueueOperations(t *testing.T) {
	runCases(t, []opCase{
		{name: "create a new named queue", op: OpGetOrCreateQueue, method: "POST", path: "/v2/request-queues?name=fresh", status: 201,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				if d["name"] != "fresh" || d["totalRequestCount"].(interface{ String() string }).String() != "0" {
					t.Errorf("data = %v", d)
				}
				if loc := r.Header.Get("Location"); loc != e.s.URL+"/v2/request-queues/"+d["id"].(string) {
					t.Errorf("Location = %q", loc)
				}
				if len(d["id"].(string)) != 17 {
					t.Errorf("queue ID %q is not 17 characters", d["id"])
				}
			}},
		{name: "get an existing named queue", op: OpGetOrCreateQueue, method: "POST", path: "/v2/request-queues?name=q", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if d := r.data(t); d["id"] != e.q || d["totalRequestCount"].(interface{ String() string }).String() != "3" {
					t.Errorf("data = %v", d)
				}
			}},
		{name: "create an unnamed queue", op: OpGetOrCreateQueue, method: "POST", path: "/v2/request-queues", status: 201,
			check: func(t *testing.T, e *env, r resp) {
				if d := r.data(t); d["name"] != nil || d["id"] == e.q {
					t.Errorf("data = %v", d)
				}
			}},
		{name: "create with an invalid name", op: OpGetOrCreateQueue, method: "POST", path: "/v2/request-queues?name=no%20spaces", status: 400,
			errType: "invalid-input", msg: []string{`"no spaces"`}},
		{name: "get by ID", op: OpGetQueue, method: "GET", path: qp, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				for k, want := range map[string]string{"totalRequestCount": "3", "handledRequestCount": "0", "pendingRequestCount": "3"} {
					if got := d[k].(interface{ String() string }).String(); got != want {
						t.Errorf("%s = %s, want %s", k, got, want)
					}
				}
				if d["createdAt"] != "2026-03-14T15:09:26.000Z" || d["hadMultipleClients"] != false {
					t.Errorf("data = %v", d)
				}
			}},
		{name: "get ~name", op: OpGetQueue, method: "GET", path: "/v2/request-queues/~q", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["id"] != e.q {
					t.Errorf("resolved to %v", r.data(t)["id"])
				}
			}},
		{name: "get username~name", op: OpGetQueue, method: "GET", path: "/v2/request-queues/apifytest~q", status: 200},
		{name: "get username~name of an unknown user", op: OpGetQueue, method: "GET", path: "/v2/request-queues/nobody~q", status: 404,
			errType: "record-not-found", msg: []string{`"nobody"`}},
		{name: "get ~name that does not exist", op: OpGetQueue, method: "GET", path: "/v2/request-queues/~nope", status: 404, errType: "record-not-found"},
		{name: "get an unknown ID", op: OpGetQueue, method: "GET", path: "/v2/request-queues/AAAAAAAAAAAAAAAAA", status: 404,
			errType: "record-not-found", msg: []string{"AAAAAAAAAAAAAAAAA"}},
		{name: "rename", op: OpUpdateQueue, method: "PUT", path: qp, body: map[string]any{"name": "renamed"}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				expectStatus(t, e.c.do(OpGetQueue, "GET", "/v2/request-queues/~renamed", nil), 200)
				expectError(t, e.c.do(OpGetQueue, "GET", "/v2/request-queues/~q", nil), 404, "record-not-found")
			}},
		{name: "set general access", op: OpUpdateQueue, method: "PUT", path: qp, body: map[string]any{"generalAccess": "RESTRICTED"}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["generalAccess"] != "RESTRICTED" || r.data(t)["name"] != "q" {
					t.Errorf("data = %v", r.data(t))
				}
			}},
		{name: "rename to a name in use", op: OpUpdateQueue, method: "PUT", path: qp, body: map[string]any{"name": "other"},
			setup: func(t *testing.T, e *env) { e.s.CreateQueue("other") }, status: 400, errType: "name-not-unique", msg: []string{`"other"`}},
		{name: "update with a bad generalAccess", op: OpUpdateQueue, method: "PUT", path: qp, body: map[string]any{"generalAccess": "EVERYONE"},
			status: 400, errType: "invalid-input", msg: []string{"generalAccess", "EVERYONE"}},
		{name: "update with malformed JSON", op: OpUpdateQueue, method: "PUT", path: qp, body: `{"name":`, status: 400,
			errType: "invalid-input", msg: []string{"not valid JSON"}},
		{name: "update with an array", op: OpUpdateQueue, method: "PUT", path: qp, body: `[]`, status: 400,
			errType: "invalid-input", msg: []string{"must be a JSON object", "an array"}},
		{name: "delete", op: OpDeleteQueue, method: "DELETE", path: qp, status: 204,
			check: func(t *testing.T, e *env, r resp) {
				expectError(t, e.c.do(OpGetQueue, "GET", e.expand(qp), nil), 404, "record-not-found")
				if e.s.Requests(e.q) != nil {
					t.Error("Requests of a deleted queue is not nil")
				}
			}},
		{name: "delete an unknown queue", op: OpDeleteQueue, method: "DELETE", path: "/v2/request-queues/nope", status: 404, errType: "record-not-found"},
	})
}

func TestRequestOperations(t *testing.T) {
	lockU0ByOther := func(t *testing.T, e *env) { e.lock(t, "other", 1) }
	runCases(t, []opCase{
		{name: "add", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"url": "https://x.test/", "uniqueKey": "x"}, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				if d["requestId"] != RequestID("x") || d["wasAlreadyPresent"] != false || d["wasAlreadyHandled"] != false {
					t.Errorf("data = %v", d)
				}
				equalIDs(t, idsOf(e.s.Pending(e.q)), append(slices.Clone(e.ids), RequestID("x")), "pending order (added at the back)")
			}},
		{name: "add with forefront", op: OpAddRequest, method: "POST", path: qp + "/requests?forefront=true", body: map[string]any{"url": "https://x.test/", "uniqueKey": "x"}, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, idsOf(e.s.Pending(e.q)), append([]string{RequestID("x")}, e.ids...), "pending order (added at the front)")
			}},
		{name: "add a duplicate", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"url": "https://other.test/", "uniqueKey": "u1"}, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				if d := r.data(t); d["requestId"] != e.ids[1] || d["wasAlreadyPresent"] != true || d["wasAlreadyHandled"] != false {
					t.Errorf("data = %v", d)
				}
				if st, _ := e.s.Request(e.q, e.ids[1]); st.URL != "https://example.com/1" {
					t.Errorf("the duplicate replaced the URL: %q", st.URL)
				}
			}},
		{name: "add a gzip-encoded body", op: OpAddRequest, method: "POST", path: qp + "/requests",
			body: gzipped(`{"url":"https://x.test/","uniqueKey":"x"}`), header: []string{"Content-Encoding", "gzip"}, status: 201},
		{name: "add with an unsupported encoding", op: OpAddRequest, method: "POST", path: qp + "/requests",
			body: `{}`, header: []string{"Content-Encoding", "zstd"}, status: 415, errType: "unsupported-content-encoding", msg: []string{`"zstd"`}},
		{name: "add without uniqueKey", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"url": "https://x.test/"}, status: 400,
			errType: "invalid-input", msg: []string{`"uniqueKey" is required`}},
		{name: "add without url", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"uniqueKey": "x"}, status: 400,
			errType: "invalid-input", msg: []string{`"url" is required`}},
		{name: "add with a numeric url", op: OpAddRequest, method: "POST", path: qp + "/requests", body: `{"uniqueKey":"x","url":5}`, status: 400,
			errType: "invalid-input", msg: []string{`"url" must be a string`, "a number"}},
		{name: "add with an unknown method", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"uniqueKey": "x", "url": "u", "method": "FETCH"}, status: 400,
			errType: "invalid-input", msg: []string{`"method"`, "FETCH"}},
		{name: "add with a negative retryCount", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"uniqueKey": "x", "url": "u", "retryCount": -1}, status: 400,
			errType: "invalid-input", msg: []string{`"retryCount"`}},
		{name: "add with an id", op: OpAddRequest, method: "POST", path: qp + "/requests", body: map[string]any{"uniqueKey": "x", "url": "u", "id": "abc"}, status: 400,
			errType: "invalid-input", msg: []string{`must not have an "id"`}},
		{name: "add malformed JSON", op: OpAddRequest, method: "POST", path: qp + "/requests", body: `{"url": "a",}`, status: 400,
			errType: "invalid-input", msg: []string{"not valid JSON", "at byte"}},
		{name: "add an empty body", op: OpAddRequest, method: "POST", path: qp + "/requests", body: ``, status: 400,
			errType: "invalid-input", msg: []string{"empty"}},
		{name: "add an array", op: OpAddRequest, method: "POST", path: qp + "/requests", body: `[{"url":"a","uniqueKey":"a"}]`, status: 400,
			errType: "invalid-input", msg: []string{"must be a JSON object", "an array"}},
		{name: "add with a text Content-Type", op: OpAddRequest, method: "POST", path: qp + "/requests", body: `{"url":"a","uniqueKey":"a"}`,
			header: []string{"Content-Type", "text/plain"}, status: 400, errType: "invalid-content-type-header", msg: []string{"application/json", "text/plain"}},
		{name: "add with a bad forefront", op: OpAddRequest, method: "POST", path: qp + "/requests?forefront=maybe", body: map[string]any{"url": "a", "uniqueKey": "a"},
			status: 400, errType: "invalid-input", msg: []string{`"forefront"`, "maybe"}},
		{name: "add with a 33-character clientKey", op: OpAddRequest, method: "POST", path: qp + "/requests?clientKey=" + strings.Repeat("k", 33),
			body: map[string]any{"url": "a", "uniqueKey": "a"}, status: 400, errType: "invalid-client-key", msg: []string{"32", "33"}},
		{name: "add to an unknown queue", op: OpAddRequest, method: "POST", path: "/v2/request-queues/nope/requests", body: map[string]any{"url": "a", "uniqueKey": "a"},
			status: 404, errType: "record-not-found"},
		{name: "get", op: OpGetRequest, method: "GET", path: qp + "/requests/{r1}", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				if d["id"] != e.ids[1] || d["uniqueKey"] != "u1" || d["url"] != "https://example.com/1" || d["method"] != "GET" || d["handledAt"] != nil {
					t.Errorf("data = %v", d)
				}
			}},
		{name: "get an unknown request", op: OpGetRequest, method: "GET", path: qp + "/requests/nope", status: 404,
			errType: "record-not-found", msg: []string{`"nope"`}},
		{name: "round trip of every RequestBase field", op: OpAddRequest, method: "POST", path: qp + "/requests",
			body: `{"uniqueKey":"full","url":"https://f.test/","method":"POST","retryCount":2,"loadedUrl":"https://f.test/x","payload":"p=1",` +
				`"headers":{"A":"b"},"userData":{"label":"DETAIL","n":[1,2]},"noRetry":true,"errorMessages":["boom"],"handledAt":null,"unknownField":1}`,
			status: 201,
			check: func(t *testing.T, e *env, r resp) {
				g := e.c.do(OpGetRequest, "GET", e.expand(qp)+"/requests/"+RequestID("full"), nil)
				expectStatus(t, g, 200)
				want := `{"data":{"id":"` + RequestID("full") + `","uniqueKey":"full","url":"https://f.test/","method":"POST","retryCount":2,` +
					`"loadedUrl":"https://f.test/x","payload":"p=1","headers":{"A":"b"},"userData":{"label":"DETAIL","n":[1,2]},"noRetry":true,"errorMessages":["boom"]}}`
				if strings.TrimSpace(string(g.Raw)) != want {
					t.Errorf("GET returned\n%s\nwant\n%s", g.Raw, want)
				}
			}},
		{name: "mark handled", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}",
			body: map[string]any{"id": "{r0}", "uniqueKey": "u0", "url": "https://example.com/0", "handledAt": "2026-03-14T15:10:00.123Z"}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if d := r.data(t); d["requestId"] != e.ids[0] || d["wasAlreadyPresent"] != true || d["wasAlreadyHandled"] != false {
					t.Errorf("data = %v", d)
				}
				h := e.s.Handled(e.q)
				if len(h) != 1 || !h[0].HandledAt.Equal(time.Date(2026, 3, 14, 15, 10, 0, 123e6, time.UTC)) {
					t.Errorf("Handled = %+v", h)
				}
				g := e.c.do(OpGetQueue, "GET", e.expand(qp), nil)
				if d := g.data(t); d["handledRequestCount"].(interface{ String() string }).String() != "1" {
					t.Errorf("queue = %v", d)
				}
				again := e.c.do(OpUpdateRequest, "PUT", e.expand(qp+"/requests/{r0}"), map[string]any{"uniqueKey": "u0", "url": "https://example.com/0", "handledAt": "2026-03-14T15:11:00Z"})
				if again.data(t)["wasAlreadyHandled"] != true {
					t.Errorf("second update: %s", again.Raw)
				}
			}},
		{name: "update with a different id in the body", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}",
			body: map[string]any{"id": "{r1}", "uniqueKey": "u0", "url": "u"}, status: 400, errType: "id-does-not-match"},
		{name: "update changing the uniqueKey", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}",
			body: map[string]any{"uniqueKey": "changed", "url": "u"}, status: 400, errType: "invalid-input", msg: []string{"cannot be changed"}},
		{name: "update with a bad handledAt", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}",
			body: map[string]any{"uniqueKey": "u0", "url": "u", "handledAt": "yesterday"}, status: 400, errType: "invalid-input", msg: []string{`"handledAt"`, "RFC 3339"}},
		{name: "update an unknown request", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/nope",
			body: map[string]any{"uniqueKey": "u0", "url": "u"}, status: 404, errType: "record-not-found"},
		{name: "mark handled a request someone else locked", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}?clientKey=me", setup: lockU0ByOther,
			body: map[string]any{"uniqueKey": "u0", "url": "u", "handledAt": "2026-03-14T15:10:00Z"}, status: 403,
			errType: "request-handled-or-locked", msg: []string{"mark as handled", "locked by another client"}},
		{name: "update without handledAt a request someone else locked", op: OpUpdateRequest, method: "PUT", path: qp + "/requests/{r0}?clientKey=me", setup: lockU0ByOther,
			body: map[string]any{"uniqueKey": "u0", "url": "u", "retryCount": 1}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				st, _ := e.s.Request(e.q, e.ids[0])
				if st.RetryCount != 1 || st.Lock == nil || st.Lock.ClientKey != "other" {
					t.Errorf("state = %+v", st)
				}
			}},
		{name: "delete", op: OpDeleteRequest, method: "DELETE", path: qp + "/requests/{r1}", status: 204,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, idsOf(e.s.Requests(e.q)), []string{e.ids[0], e.ids[2]}, "requests left")
				expectError(t, e.c.do(OpGetRequest, "GET", e.expand(qp+"/requests/{r1}"), nil), 404, "record-not-found")
			}},
		{name: "delete an unknown request", op: OpDeleteRequest, method: "DELETE", path: qp + "/requests/nope", status: 404, errType: "record-not-found"},
		{name: "delete a request someone else locked", op: OpDeleteRequest, method: "DELETE", path: qp + "/requests/{r0}?clientKey=me", setup: lockU0ByOther,
			status: 403, errType: "request-handled-or-locked", msg: []string{"delete", "locked by another client"}},
		{name: "delete a request I locked", op: OpDeleteRequest, method: "DELETE", path: qp + "/requests/{r0}?clientKey=other", setup: lockU0ByOther, status: 204,
			check: func(t *testing.T, e *env, r resp) {
				if len(e.s.Locked(e.q)) != 0 {
					t.Error("the lock outlived its request")
				}
			}},
	})
}

func TestListOperations(t *testing.T) {
	runCases(t, []opCase{
		{name: "list all", op: OpListRequests, method: "GET", path: qp + "/requests", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, r.ids(t), e.ids, "items")
				if r.data(t)["limit"].(interface{ String() string }).String() != "100" || r.data(t)["nextCursor"] != nil {
					t.Errorf("data = %v", r.data(t))
				}
			}},
		{name: "paginate with a cursor", op: OpListRequests, method: "GET", path: qp + "/requests?limit=2", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, r.ids(t), e.ids[:2], "page 1")
				cur := r.data(t)["nextCursor"].(string)
				p2 := e.c.do(OpListRequests, "GET", e.expand(qp)+"/requests?limit=2&cursor="+cur, nil)
				expectStatus(t, p2, 200)
				equalIDs(t, p2.ids(t), e.ids[2:], "page 2")
				if p2.data(t)["nextCursor"] != nil || p2.data(t)["cursor"] != cur {
					t.Errorf("page 2 data = %v", p2.data(t))
				}
			}},
		{name: "paginate with exclusiveStartId", op: OpListRequests, method: "GET", path: qp + "/requests?exclusiveStartId={r0}", status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[1:], "items") }},
		{name: "filter locked", op: OpListRequests, method: "GET", path: qp + "/requests?filter=locked",
			setup: func(t *testing.T, e *env) { e.lock(t, "k", 1) }, status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[:1], "items") }},
		{name: "filter pending", op: OpListRequests, method: "GET", path: qp + "/requests?filter=pending",
			setup: func(t *testing.T, e *env) {
				e.lock(t, "k", 1)
				e.c.do(OpUpdateRequest, "PUT", e.expand(qp+"/requests/{r2}"), map[string]any{"uniqueKey": "u2", "url": "u", "handledAt": "2026-01-01T00:00:00Z"})
			}, status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[1:2], "items") }},
		{name: "filter locked,pending", op: OpListRequests, method: "GET", path: qp + "/requests?filter=locked,pending",
			setup: func(t *testing.T, e *env) {
				e.lock(t, "k", 1)
				e.c.do(OpUpdateRequest, "PUT", e.expand(qp+"/requests/{r2}"), map[string]any{"uniqueKey": "u2", "url": "u", "handledAt": "2026-01-01T00:00:00Z"})
			}, status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[:2], "items") }},
		{name: "filter unknown", op: OpListRequests, method: "GET", path: qp + "/requests?filter=handled", status: 400,
			errType: "invalid-input", msg: []string{`"filter"`, "handled"}},
		{name: "filter with exclusiveStartId", op: OpListRequests, method: "GET", path: qp + "/requests?filter=locked&exclusiveStartId={r0}", status: 400,
			errType: "invalid-input", msg: []string{"exclusiveStartId"}},
		{name: "limit 0", op: OpListRequests, method: "GET", path: qp + "/requests?limit=0", status: 400, errType: "invalid-input", msg: []string{`"limit"`, "at least 1"}},
		{name: "limit not a number", op: OpListRequests, method: "GET", path: qp + "/requests?limit=ten", status: 400, errType: "invalid-input", msg: []string{`"limit"`, "ten"}},
		{name: "limit above the maximum is capped", op: OpListRequests, method: "GET", path: qp + "/requests?limit=99999", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["limit"].(interface{ String() string }).String() != "10000" {
					t.Errorf("limit = %v", r.data(t)["limit"])
				}
			}},
		{name: "a forged cursor", op: OpListRequests, method: "GET", path: qp + "/requests?cursor=%21%21", status: 400, errType: "invalid-input", msg: []string{"cursor"}},
		{name: "head", op: OpGetHead, method: "GET", path: qp + "/head", status: 200,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, r.ids(t), e.ids, "head")
				if it := r.items(t)[0]; it["uniqueKey"] != "u0" || it["url"] != "https://example.com/0" || it["method"] != "GET" {
					t.Errorf("item = %v", it)
				}
			}},
		{name: "head with a limit", op: OpGetHead, method: "GET", path: qp + "/head?limit=1", status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[:1], "head") }},
		{name: "head hides locked requests", op: OpGetHead, method: "GET", path: qp + "/head",
			setup: func(t *testing.T, e *env) { e.lock(t, "k", 2) }, status: 200,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, r.ids(t), e.ids[2:], "head") }},
		{name: "head limit 0", op: OpGetHead, method: "GET", path: qp + "/head?limit=0", status: 400, errType: "invalid-input", msg: []string{`"limit"`}},
		{name: "head of an unknown queue", op: OpGetHead, method: "GET", path: "/v2/request-queues/nope/head", status: 404, errType: "record-not-found"},
	})
}

func TestBatchOperations(t *testing.T) {
	many := make([]map[string]any, 26)
	for i := range many {
		many[i] = map[string]any{"url": "https://b.test/" + itoa(i), "uniqueKey": "b" + itoa(i)}
	}
	runCases(t, []opCase{
		{name: "add a batch with forefront: the batch's order, in front", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch?forefront=true",
			body: []map[string]any{{"url": "https://x.test/", "uniqueKey": "x"}, {"url": "https://y.test/", "uniqueKey": "y"}, {"url": "u", "uniqueKey": "u1"}}, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				// u1 was already there: it keeps its place.
				equalIDs(t, idsOf(e.s.Pending(e.q)), append([]string{RequestID("x"), RequestID("y")}, e.ids...), "pending order")
			}},
		{name: "add a batch", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch",
			body: []map[string]any{{"url": "https://n.test/", "uniqueKey": "n"}, {"url": "u", "uniqueKey": "u1"}, {"url": "https://n.test/", "uniqueKey": "n"}}, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				proc := d["processedRequests"].([]any)
				if len(proc) != 3 || len(d["unprocessedRequests"].([]any)) != 0 {
					t.Fatalf("data = %v", d)
				}
				for i, want := range []struct {
					id, key string
					present bool
				}{{RequestID("n"), "n", false}, {e.ids[1], "u1", true}, {RequestID("n"), "n", true}} {
					p := proc[i].(map[string]any)
					if p["requestId"] != want.id || p["uniqueKey"] != want.key || p["wasAlreadyPresent"] != want.present {
						t.Errorf("processed[%d] = %v", i, p)
					}
				}
				if n := len(e.s.Requests(e.q)); n != 4 {
					t.Errorf("%d requests, want 4", n)
				}
			}},
		{name: "add a batch of 25", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch", body: many[:25], status: 201},
		{name: "add a batch of 26", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch", body: many, status: 400,
			errType: "invalid-input", msg: []string{"26", "at most 25"}},
		{name: "add a batch with a bad item", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch",
			body: []map[string]any{{"url": "a", "uniqueKey": "a"}, {"uniqueKey": "b"}}, status: 400, errType: "invalid-input", msg: []string{"index 1", `"url"`},
			check: nil},
		{name: "add a batch that is an object", op: OpBatchAddRequests, method: "POST", path: qp + "/requests/batch", body: map[string]any{"url": "a"}, status: 400,
			errType: "invalid-input", msg: []string{"JSON array", "an object"}},
		{name: "delete a batch by id and uniqueKey", op: OpBatchDeleteRequests, method: "DELETE", path: qp + "/requests/batch",
			body: []map[string]any{{"id": "{r0}"}, {"uniqueKey": "u1"}, {"uniqueKey": "never-added"}}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				if len(d["processedRequests"].([]any)) != 3 || len(d["unprocessedRequests"].([]any)) != 0 {
					t.Errorf("data = %v", d)
				}
				equalIDs(t, idsOf(e.s.Requests(e.q)), e.ids[2:], "requests left")
			}},
		{name: "delete a batch holding a request someone else locked", op: OpBatchDeleteRequests, method: "DELETE", path: qp + "/requests/batch?clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "other", 1) },
			body:  []map[string]any{{"id": "{r0}"}, {"id": "{r1}"}}, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				un := d["unprocessedRequests"].([]any)
				if len(d["processedRequests"].([]any)) != 1 || len(un) != 1 || un[0].(map[string]any)["uniqueKey"] != "u0" {
					t.Errorf("data = %v", d)
				}
			}},
		{name: "delete a batch of 26", op: OpBatchDeleteRequests, method: "DELETE", path: qp + "/requests/batch", body: many, status: 400,
			errType: "invalid-input", msg: []string{"at most 25"}},
		{name: "delete a batch item without id or uniqueKey", op: OpBatchDeleteRequests, method: "DELETE", path: qp + "/requests/batch",
			body: []map[string]any{{"url": "x"}}, status: 400, errType: "invalid-input", msg: []string{"index 0", `"id"`, `"uniqueKey"`}},
		{name: "delete a batch without Content-Type", op: OpBatchDeleteRequests, method: "DELETE", path: qp + "/requests/batch",
			body: `[{"id":"x"}]`, header: []string{"Content-Type", ""}, status: 400, errType: "invalid-content-type-header"},
	})
}

func TestLockOperations(t *testing.T) {
	runCases(t, []opCase{
		{name: "lock the head", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&limit=2&clientKey=me", status: 201,
			check: func(t *testing.T, e *env, r resp) {
				d := r.data(t)
				equalIDs(t, r.ids(t), e.ids[:2], "locked")
				if d["lockSecs"].(interface{ String() string }).String() != "60" || d["limit"].(interface{ String() string }).String() != "2" ||
					d["queueHasLockedRequests"] != true || d["clientKey"] != "me" {
					t.Errorf("data = %v", d)
				}
				for _, it := range r.items(t) {
					if it["lockExpiresAt"] != "2026-03-14T15:10:26.000Z" {
						t.Errorf("lockExpiresAt = %v", it["lockExpiresAt"])
					}
				}
				equalIDs(t, idsOf(e.s.LockedBy(e.q, "me")), e.ids[:2], "LockedBy")
			}},
		{name: "lock with the default limit", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60", status: 201,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["limit"].(interface{ String() string }).String() != "25" || len(r.items(t)) != 3 {
					t.Errorf("data = %v", r.data(t))
				}
				if _, ok := r.data(t)["clientKey"]; ok {
					t.Error("clientKey echoed though none was sent")
				}
			}},
		{name: "lock an empty head", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "other", 3) }, status: 201,
			check: func(t *testing.T, e *env, r resp) {
				if len(r.items(t)) != 0 || r.data(t)["queueHasLockedRequests"] != true {
					t.Errorf("data = %v", r.data(t))
				}
			}},
		{name: "lock with lockSecs written as 60.0", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60.0&limit=1", status: 201},
		{name: "lock without lockSecs", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?limit=1", status: 400,
			errType: "invalid-input", msg: []string{`"lockSecs" is required`}},
		{name: "lock with lockSecs 0", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=0", status: 400,
			errType: "invalid-input", msg: []string{`"lockSecs"`, "at least 1"}},
		{name: "lock with negative lockSecs", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=-5", status: 400,
			errType: "invalid-input", msg: []string{`"lockSecs"`, "at least 1", "-5"}},
		{name: "lock with fractional lockSecs", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=1.5", status: 400,
			errType: "invalid-input", msg: []string{"whole number"}},
		{name: "lock with lockSecs over a day", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=86401", status: 400,
			errType: "invalid-input", msg: []string{"at most 86400"}},
		{name: "lock with limit 26", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&limit=26", status: 400,
			errType: "invalid-input", msg: []string{`"limit"`, "at most 25"}},
		{name: "lock with limit 0", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&limit=0", status: 400,
			errType: "invalid-input", msg: []string{`"limit"`, "at least 1"}},
		{name: "lock with a 33-character clientKey", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&clientKey=" + strings.Repeat("é", 33), status: 400,
			errType: "invalid-client-key", msg: []string{"32", "33"}},
		{name: "lock with a 32-character clientKey", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&limit=1&clientKey=" + strings.Repeat("é", 32), status: 201},
		{name: "lock with a control character in the clientKey", op: OpListAndLockHead, method: "POST", path: qp + "/head/lock?lockSecs=60&clientKey=a%0Ab", status: 400,
			errType: "invalid-client-key", msg: []string{"control"}},
		{name: "prolong", op: OpProlongRequestLock, method: "PUT", path: qp + "/requests/{r0}/lock?lockSecs=300&clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 1); e.clock.Advance(30 * time.Second) }, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if got := r.data(t)["lockExpiresAt"]; got != "2026-03-14T15:14:56.000Z" { // t0 + 30 s + 300 s: counted from now
					t.Errorf("lockExpiresAt = %v", got)
				}
			}},
		{name: "prolong without lockSecs", op: OpProlongRequestLock, method: "PUT", path: qp + "/requests/{r0}/lock?clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 1) }, status: 400, errType: "invalid-input", msg: []string{`"lockSecs" is required`}},
		{name: "prolong someone else's lock", op: OpProlongRequestLock, method: "PUT", path: qp + "/requests/{r0}/lock?lockSecs=60&clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "other", 1) }, status: 403, errType: "request-handled-or-locked", msg: []string{"prolong", "locked by another client"}},
		{name: "prolong an unlocked request", op: OpProlongRequestLock, method: "PUT", path: qp + "/requests/{r0}/lock?lockSecs=60&clientKey=me",
			status: 403, errType: "request-handled-or-locked", msg: []string{"not locked"}},
		{name: "prolong an unknown request", op: OpProlongRequestLock, method: "PUT", path: qp + "/requests/nope/lock?lockSecs=60&clientKey=me",
			status: 404, errType: "record-not-found"},
		{name: "delete a lock", op: OpDeleteRequestLock, method: "DELETE", path: qp + "/requests/{r0}/lock?clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 1) }, status: 204,
			check: func(t *testing.T, e *env, r resp) {
				equalIDs(t, idsOf(e.s.Pending(e.q)), []string{e.ids[1], e.ids[2], e.ids[0]}, "pending (the spec's default forefront=false: back)")
			}},
		{name: "delete a lock with forefront", op: OpDeleteRequestLock, method: "DELETE", path: qp + "/requests/{r0}/lock?clientKey=me&forefront=true",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 1) }, status: 204,
			check: func(t *testing.T, e *env, r resp) { equalIDs(t, idsOf(e.s.Pending(e.q)), e.ids, "pending (front)") }},
		{name: "delete someone else's lock", op: OpDeleteRequestLock, method: "DELETE", path: qp + "/requests/{r0}/lock?clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "other", 1) }, status: 403, errType: "request-handled-or-locked", msg: []string{"locked by another client"}},
		{name: "delete the lock of an unknown request", op: OpDeleteRequestLock, method: "DELETE", path: qp + "/requests/nope/lock?clientKey=me",
			status: 404, errType: "record-not-found"},
		{name: "unlock", op: OpUnlockRequests, method: "POST", path: qp + "/requests/unlock?clientKey=me",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 2) }, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["unlockedCount"].(interface{ String() string }).String() != "2" {
					t.Errorf("data = %v", r.data(t))
				}
			}},
		{name: "unlock without a clientKey outside a run", op: OpUnlockRequests, method: "POST", path: qp + "/requests/unlock",
			setup: func(t *testing.T, e *env) { e.lock(t, "me", 2) }, status: 200,
			check: func(t *testing.T, e *env, r resp) {
				if r.data(t)["unlockedCount"].(interface{ String() string }).String() != "0" || len(e.s.Locked(e.q)) != 2 {
					t.Errorf("data = %v; locked %d", r.data(t), len(e.s.Locked(e.q)))
				}
			}},
		{name: "unlock with a 33-character clientKey", op: OpUnlockRequests, method: "POST", path: qp + "/requests/unlock?clientKey=" + strings.Repeat("k", 33),
			status: 400, errType: "invalid-client-key"},
		{name: "unlock an unknown queue", op: OpUnlockRequests, method: "POST", path: "/v2/request-queues/nope/requests/unlock?clientKey=me",
			status: 404, errType: "record-not-found"},
	})
}

func TestRouting(t *testing.T) {
	runCases(t, []opCase{
		{name: "unknown path", method: "GET", path: "/v2/datasets", status: 404, errType: "page-not-found", msg: []string{"/v2/datasets"}},
		{name: "trailing slash", method: "GET", path: qp + "/", status: 404, errType: "page-not-found"},
		{name: "wrong method on the queue", method: "PATCH", path: qp, status: 405, errType: "method-not-allowed", msg: []string{"OPTIONS,DELETE,GET,PUT"}},
		{name: "GET on unlock", op: OpGetRequest, method: "GET", path: qp + "/requests/unlock", status: 404, errType: "record-not-found"},
		{name: "wrong method on head/lock", method: "GET", path: qp + "/head/lock", status: 405, errType: "method-not-allowed", msg: []string{"OPTIONS,POST"}},
		{name: "OPTIONS", method: "OPTIONS", path: qp + "/requests", status: 204,
			check: func(t *testing.T, e *env, r resp) {
				if got := r.Header.Get("Allow"); got != "OPTIONS, GET, POST" {
					t.Errorf("Allow = %q", got)
				}
			}},
		{name: "method override", op: OpUnlockRequests, method: "GET", path: qp + "/requests/unlock?method=POST&clientKey=me", status: 200},
		{name: "HEAD of a queue", op: OpGetQueue, method: "HEAD", path: qp, status: 200},
	})
}

// Every operation of the spec is served, under its operationId, at its
// path and method; and every Operation constant but get-or-create (which the
// spec's subset lacks) is in the spec.
func TestEverySpecOperationIsServed(t *testing.T) {
	s := loadSpec(t)
	if len(s.ops) != 15 {
		t.Errorf("the spec has %d operations, want 15", len(s.ops))
	}
	for id, op := range s.ops {
		if !knownOperation(Operation(id)) {
			t.Errorf("spec operation %s has no Operation constant", id)
			continue
		}
		e := newEnv(t)
		path := strings.ReplaceAll(strings.ReplaceAll(op.path, "{queueId}", e.q), "{requestId}", e.ids[0])
		r := e.c.do(Operation(id), op.method, path+"?lockSecs=60&clientKey=k", `[]`)
		if r.errType() == "page-not-found" || r.errType() == "method-not-allowed" {
			t.Errorf("%s %s (%s) is not routed: %s", op.method, op.path, id, r.Raw)
		}
		if got := e.s.Calls(Operation(id)); got != 1 {
			t.Errorf("%s: Calls = %d after one call", id, got)
		}
	}
	for _, op := range Operations() {
		if _, ok := s.ops[string(op)]; !ok && op != OpGetOrCreateQueue && op != OpListQueues {
			t.Errorf("Operation %s is not in the spec", op)
		}
	}
}

func TestRequestID(t *testing.T) {
	// Values from crawlee's uniqueKeyToRequestId, which matches the platform.
	for key, want := range map[string]string{"abc": "ungWv48BzpBQUDe", "test": "n4bQgYhMfWWaLqg"} {
		if got := RequestID(key); got != want {
			t.Errorf("RequestID(%q) = %q, want %q", key, got, want)
		}
	}
	for _, key := range []string{"", "https://example.com", strings.Repeat("x", 10000)} {
		if got := RequestID(key); len(got) != 15 || strings.ContainsAny(got, "+/=") {
			t.Errorf("RequestID(%q) = %q", key, got)
		}
	}
}
