package apifytest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// t0 is the start of every ManualClock in these tests.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// resp is a response as a raw HTTP client sees it.
type resp struct {
	Status int
	Header http.Header
	Raw    []byte
	Body   map[string]any // the decoded JSON object; nil without a body
}

// data returns the envelope's data object.
func (r resp) data(t testing.TB) map[string]any {
	t.Helper()
	d, ok := r.Body["data"].(map[string]any)
	if !ok {
		t.Fatalf("response %d has no data object: %s", r.Status, r.Raw)
	}
	return d
}

// workerTB is a testing.TB for a goroutine the test started (a worker),
// where t.Fatal must not be called: a fatal failure is reported with Errorf
// and ends that goroutine only (runtime.Goexit runs its defers, such as a
// WaitGroup's Done), never the test's own.
type workerTB struct{ testing.TB }

func (w workerTB) Fatal(args ...any) { w.Helper(); w.Error(args...); runtime.Goexit() }
func (w workerTB) Fatalf(format string, args ...any) {
	w.Helper()
	w.Errorf(format, args...)
	runtime.Goexit()
}
func (w workerTB) FailNow() { w.Fail(); runtime.Goexit() }

// items returns data.items.
func (r resp) items(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, it := range r.data(t)["items"].([]any) {
		out = append(out, it.(map[string]any))
	}
	return out
}

// ids returns the id of each of data.items.
func (r resp) ids(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, it := range r.items(t) {
		out = append(out, it["id"].(string))
	}
	return out
}

func (r resp) errType() string {
	e, _ := r.Body["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func (r resp) errMessage() string {
	e, _ := r.Body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

// rawClient makes raw net/http calls (no SDK) and checks every response
// against the spec: the status is one the operation declares, the body is
// JSON of the declared schema (or empty for 204), Content-Type is JSON.
type rawClient struct {
	t     testing.TB
	base  string
	h     http.Handler // serve in memory when set
	hc    *http.Client // http.DefaultClient when nil
	token string
}

func raw(t testing.TB, s *Server) *rawClient {
	return &rawClient{t: t, base: s.URL}
}

func (c *rawClient) withToken(tok string) *rawClient {
	cc := *c
	cc.token = tok
	return &cc
}

// do sends method path (path may hold a query) with body: nil for none, a
// string or []byte sent as is, anything else as JSON. header holds pairs of
// header names and values. op names the spec operation whose schemas apply
// ("" for calls no operation matches).
func (c *rawClient) do(op Operation, method, path string, body any, header ...string) resp {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	base := c.base
	if c.h != nil {
		base = "http://apifytest.invalid"
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	var hr *http.Response
	if c.h != nil {
		hr, err = memoryTransport{c.h}.RoundTrip(req)
	} else if c.hc != nil {
		hr, err = c.hc.Do(req)
	} else {
		hr, err = http.DefaultClient.Do(req)
	}
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer hr.Body.Close()
	rawBody, err := io.ReadAll(hr.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	r := resp{Status: hr.StatusCode, Header: hr.Header, Raw: rawBody}
	checkAgainstSpec(c.t, op, method, path, &r)
	return r
}

// checkAgainstSpec validates a response against the operation's declared
// responses, and decodes its body.
func checkAgainstSpec(t testing.TB, op Operation, method, path string, r *resp) {
	t.Helper()
	s := loadSpec(t)
	where := method + " " + path
	if method == http.MethodHead || r.Status == http.StatusNoContent {
		if len(r.Raw) != 0 {
			t.Errorf("%s: %d response has a body: %s", where, r.Status, r.Raw)
		}
		if r.Status == http.StatusNoContent && op != "" {
			if _, declared := s.responseSchema(string(op), 204); !declared {
				t.Errorf("%s: %s does not declare 204", where, op)
			}
		}
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type is %q, want application/json", where, ct)
	}
	v := decodeJSON(t, r.Raw)
	obj, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: body is not a JSON object: %s", where, r.Raw)
	}
	r.Body = obj
	var schema map[string]any
	switch {
	case op == OpGetOrCreateQueue || op == "":
		// Not in the spec's subset (or no operation): Apify's API reference
		// answers get-or-create with the RequestQueueResponse of requestQueue_get.
		schema = s.schema("ErrorResponse")
		if r.Status < 300 {
			schema = s.schema("RequestQueueResponse")
		}
	case r.Status >= 500:
		schema = s.schema("ErrorResponse") // injected faults: the spec declares no 5xx
	default:
		var declared bool
		schema, declared = s.responseSchema(string(op), r.Status)
		if !declared {
			t.Errorf("%s: status %d is not declared for %s (declared: %v); body %s",
				where, r.Status, op, s.declaredStatuses(string(op)), r.Raw)
			return
		}
		if schema == nil {
			t.Errorf("%s: %d response has a body the spec does not declare: %s", where, r.Status, r.Raw)
			return
		}
	}
	if errs := s.validate(schema, v); len(errs) > 0 {
		t.Errorf("%s: %d response does not match the spec's schema:\n  %s\nbody: %s",
			where, r.Status, strings.Join(errs, "\n  "), r.Raw)
	}
	if r.Status >= 400 && r.errMessage() == "" {
		t.Errorf("%s: error response without a message: %s", where, r.Raw)
	}
}

// expectError checks an error response's status and type, and that its
// message contains each of msgParts.
func expectError(t testing.TB, r resp, status int, typ string, msgParts ...string) {
	t.Helper()
	if r.Status != status || r.errType() != typ {
		t.Errorf("got %d %q, want %d %q; body %s", r.Status, r.errType(), status, typ, r.Raw)
		return
	}
	for _, p := range msgParts {
		if !strings.Contains(r.errMessage(), p) {
			t.Errorf("message %q does not contain %q", r.errMessage(), p)
		}
	}
}

func expectStatus(t testing.TB, r resp, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("got status %d, want %d; body %s", r.Status, status, r.Raw)
	}
}

// newQueue makes a server with a ManualClock and a queue holding n requests
// (uniqueKeys u0, u1, ...), returning the server, the clock, the queue ID and
// the request IDs.
func newQueue(t *testing.T, n int, opts ...Option) (*Server, *ManualClock, string, []string) {
	t.Helper()
	clock := NewManualClock(t0)
	s := Start(t, append([]Option{WithClock(clock)}, opts...)...)
	q := s.CreateQueue("q")
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{URL: "https://example.com/" + itoa(i), UniqueKey: "u" + itoa(i)}
	}
	return s, clock, q, s.AddRequests(q, reqs...)
}

func itoa(i int) string { return strconv.Itoa(i) }

// idsOf returns the IDs of snapshots.
func idsOf(states []RequestState) []string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = s.ID
	}
	return out
}

func equalIDs(t testing.TB, got, want []string, what string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}
