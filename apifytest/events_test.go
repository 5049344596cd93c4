package apifytest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsDial connects a raw WebSocket client to url, closed when the test ends.
func wsDial(t *testing.T, url string, header ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dialling %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// readMsg reads one message within 5 s.
func readMsg(t *testing.T, c *websocket.Conn) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	return b, err
}

// waitFor polls cond every millisecond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func post(t *testing.T, url, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST %s: %d body is not JSON: %s", url, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

func errTypeOf(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func TestSendEventReachesEveryConnectionWithTheServersClock(t *testing.T) {
	clock := NewManualClock(t0.Add(1234 * time.Microsecond))
	s := Start(t, WithPlatformEvents(), WithClock(clock), WithRunToken("run-tok", "OtherRun")) // OtherRun is known through its token
	if got := s.EventsURL(); got != "ws"+strings.TrimPrefix(s.URL, "http")+"/_emulator/events/"+DefaultRunID {
		t.Fatalf("EventsURL = %q", got)
	}
	a := wsDial(t, s.EventsURL())
	b := wsDial(t, s.RunEventsURL("OtherRun"))
	waitFor(t, "two connections", func() bool { return s.EventConnections() == 2 })

	if err := s.SendEvent("migrating", map[string]any{"timeRemainingSecs": 12.5}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{a, b} {
		msg, err := readMsg(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"name":"migrating","createdAt":"2026-03-14T15:09:26.001Z","data":{"timeRemainingSecs":12.5}}`; string(msg) != want {
			t.Errorf("got %s, want %s", msg, want)
		}
	}
	// nil data leaves "data" out; a RawMessage goes as it is.
	if err := s.SendEvent("aborting", nil); err != nil {
		t.Fatal(err)
	}
	if msg, _ := readMsg(t, a); string(msg) != `{"name":"aborting","createdAt":"2026-03-14T15:09:26.001Z"}` {
		t.Errorf("aborting: got %s", msg)
	}
	if err := s.SendEvent("custom", json.RawMessage(`{"x":[1,2]}`)); err != nil {
		t.Fatal(err)
	}
	if msg, _ := readMsg(t, a); !strings.HasSuffix(string(msg), `"data":{"x":[1,2]}}`) {
		t.Errorf("custom: got %s", msg)
	}
	if s.EventConnectionAttempts() != 2 {
		t.Errorf("EventConnectionAttempts = %d, want 2", s.EventConnectionAttempts())
	}
}

func TestSendEventRefusesWhatWouldTestNothing(t *testing.T) {
	off := Start(t)
	if err := off.SendEvent("migrating", nil); err == nil || !strings.Contains(err.Error(), "WithPlatformEvents") {
		t.Errorf("without WithPlatformEvents: %v", err)
	}
	func() {
		defer func() {
			if p := recover(); p == nil || !strings.Contains(p.(string), "WithPlatformEvents") {
				t.Errorf("EventsURL without WithPlatformEvents: panic %v", p)
			}
		}()
		off.EventsURL()
	}()
	if got := NewUnstartedServer(WithPlatformEvents()).EventsURL(); got != "" {
		t.Errorf("EventsURL of an unstarted server = %q, want \"\"", got)
	}

	s := Start(t, WithPlatformEvents())
	if err := s.SendEvent("migrating", nil); !errors.Is(err, ErrNoEventConnections) {
		t.Errorf("nobody connected: %v, want ErrNoEventConnections", err)
	}
	wsDial(t, s.EventsURL())
	waitFor(t, "a connection", func() bool { return s.EventConnections() == 1 })
	if err := s.SendEvent("", nil); err == nil {
		t.Error("an empty name was sent")
	}
	if err := s.SendEvent("x", func() {}); err == nil || !strings.Contains(err.Error(), "JSON") {
		t.Errorf("data that is no JSON: %v", err)
	}
}

func TestEventsOneConnectionPerRun(t *testing.T) {
	s := Start(t, WithPlatformEvents())
	first := wsDial(t, s.EventsURL())
	waitFor(t, "the first connection", func() bool { return s.EventConnections() == 1 })

	start := time.Now()
	second := wsDial(t, s.EventsURL())
	_, err := readMsg(t, second)
	if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
		t.Fatalf("second connection for the run: %v (code %d), want a close with 1008", err, code)
	}
	if waited := time.Since(start); waited < sameRunGrace {
		t.Errorf("refused after %v, before the grace of %v", waited, sameRunGrace)
	}
	// The first connection is untouched.
	if err := s.SendEvent("persistState", map[string]bool{"isMigrating": false}); err != nil {
		t.Fatal(err)
	}
	if msg, err := readMsg(t, first); err != nil || !strings.Contains(string(msg), `"persistState"`) {
		t.Fatalf("first connection after the second was refused: %s, %v", msg, err)
	}
	if s.EventConnections() != 1 || s.EventConnectionAttempts() != 2 {
		t.Errorf("connections %d, attempts %d; want 1 and 2", s.EventConnections(), s.EventConnectionAttempts())
	}

	// A client that closes its connection and dials again at once is let in.
	if err := first.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	wsDial(t, s.EventsURL())
	waitFor(t, "the new connection", func() bool { return s.EventConnections() == 1 })
	if err := s.SendEvent("aborting", nil); err != nil {
		t.Fatal(err)
	}
}

func TestEventsUnknownRunIsClosedWith1008(t *testing.T) {
	s := Start(t, WithPlatformEvents())
	c := wsDial(t, s.RunEventsURL("NoSuchRun"))
	_, err := readMsg(t, c)
	if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
		t.Fatalf("unknown run: %v, want a close with 1008", err)
	}
	if s.EventConnections() != 0 {
		t.Errorf("EventConnections = %d", s.EventConnections())
	}
}

func TestEventsRefuseAnotherSitesPage(t *testing.T) {
	s := Start(t, WithPlatformEvents())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, s.EventsURL(), &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site handshake: %v, %v; want 403", err, resp)
	}
	if s.EventConnections() != 0 {
		t.Error("a cross-site page connected")
	}
	// The server's own origin is fine (a page it served, or a test's client).
	wsDial(t, s.EventsURL(), "Origin", s.URL)
}

func TestDropAndCloseEventConnections(t *testing.T) {
	s := Start(t, WithPlatformEvents())
	c := wsDial(t, s.EventsURL())
	waitFor(t, "a connection", func() bool { return s.EventConnections() == 1 })
	if n := s.DropEventConnections(); n != 1 {
		t.Errorf("DropEventConnections = %d, want 1", n)
	}
	if s.EventConnections() != 0 {
		t.Error("a dropped connection still counts")
	}
	_, err := readMsg(t, c)
	if err == nil || websocket.CloseStatus(err) != -1 {
		t.Errorf("dropped: %v; want a failure without a close frame", err)
	}

	c = wsDial(t, s.EventsURL()) // at once: the dropped one is gone
	waitFor(t, "a new connection", func() bool { return s.EventConnections() == 1 })
	read := make(chan error, 1)
	go func() { // the client answers the close handshake as it reads
		_, _, err := c.Read(context.Background())
		read <- err
	}()
	if n := s.CloseEventConnections(1008); n != 1 {
		t.Errorf("CloseEventConnections = %d, want 1", n)
	}
	if err := <-read; websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("closed with 1008: %v", err)
	}
	for _, bad := range []int{999, 1005, 1006, 1015, 2000, 5000} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("CloseEventConnections(%d) did not panic", bad)
				}
			}()
			s.CloseEventConnections(bad)
		}()
	}
}

func TestCloseEndsEventConnections(t *testing.T) {
	s := NewServer(WithPlatformEvents())
	c := wsDial(t, s.EventsURL())
	waitFor(t, "a connection", func() bool { return s.EventConnections() == 1 })
	done := make(chan struct{})
	go func() { defer close(done); s.Close() }()
	_, err := readMsg(t, c)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("server closed: %v, want 1001 going away", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	s.platform.mu.Lock()
	closed := s.platform.closed
	s.platform.mu.Unlock()
	if !closed || s.EventConnections() != 0 {
		t.Error("Close left the events endpoint open")
	}
}

func TestSendEventOverHTTP(t *testing.T) {
	s := Start(t, WithPlatformEvents(), WithToken("tok"))
	url := s.URL + "/_emulator/events"
	auth := []string{"Authorization", "Bearer tok"}

	if st, m := post(t, url, `{"name":"migrating","data":{"timeRemainingSecs":3}}`); st != 401 || errTypeOf(m) != "token-not-provided" {
		t.Errorf("without a token: %d %v", st, m)
	}
	if st, m := post(t, url, `{"name":"migrating"}`, auth...); st != 409 || errTypeOf(m) != "no-event-connections" {
		t.Errorf("nobody connected: %d %v", st, m)
	}
	c := wsDial(t, s.EventsURL())
	waitFor(t, "a connection", func() bool { return s.EventConnections() == 1 })
	for _, bad := range []string{`{"data":{}}`, `{"name":""}`, `[1]`, `{"name":3}`} {
		if st, m := post(t, url, bad, auth...); st != 400 || errTypeOf(m) != "invalid-input" {
			t.Errorf("body %s: %d %v", bad, st, m)
		}
	}
	if st, m := post(t, url, `{"name":"migrating"}`, append(auth, "Sec-Fetch-Site", "cross-site")...); st != 403 {
		t.Errorf("from another site's page: %d %v", st, m)
	}
	st, m := post(t, url, `{"name":"migrating","data":{"timeRemainingSecs":3}}`, auth...)
	if d, _ := m["data"].(map[string]any); st != 200 || d["name"] != "migrating" || d["connections"] != 1.0 {
		t.Fatalf("send: %d %v", st, m)
	}
	msg, err := readMsg(t, c)
	if err != nil || !strings.HasPrefix(string(msg), `{"name":"migrating","createdAt":"`) || !strings.HasSuffix(string(msg), `"data":{"timeRemainingSecs":3}}`) {
		t.Errorf("the client got %s, %v", msg, err)
	}
	// Without WithPlatformEvents there is no such endpoint.
	off := Start(t)
	if st, m := post(t, off.URL+"/_emulator/events", `{"name":"migrating"}`); st != 404 || errTypeOf(m) != "page-not-found" {
		t.Errorf("events off: %d %v", st, m)
	}
}

func TestRebootRun(t *testing.T) {
	clock := NewManualClock(t0)
	s := Start(t, WithClock(clock), WithToken("tok"), WithRunToken("run-tok", "RunFromToken01"), WithUserToken("other-tok", "someone"))
	url := func(run string) string { return s.URL + "/v2/actor-runs/" + run + "/reboot" }

	st, m := post(t, url(DefaultRunID), "", "Authorization", "Bearer tok")
	d, _ := m["data"].(map[string]any)
	if st != 200 || d["id"] != DefaultRunID || d["status"] != "RUNNING" || d["startedAt"] != "2026-03-14T15:09:26.000Z" || d["userId"] == "" {
		t.Fatalf("reboot: %d %v", st, m)
	}
	if stats, _ := d["stats"].(map[string]any); stats["rebootCount"] != 1.0 {
		t.Errorf("stats: %v", d["stats"])
	}
	if st, _ := post(t, url("RunFromToken01"), "", "Authorization", "Bearer run-tok"); st != 200 {
		t.Errorf("a run token rebooting its own run: %d", st)
	}
	if st, m := post(t, url("NoSuchRun"), "", "Authorization", "Bearer tok"); st != 404 || errTypeOf(m) != "record-not-found" {
		t.Errorf("unknown run: %d %v", st, m)
	}
	if st, m := post(t, url(DefaultRunID), ""); st != 401 {
		t.Errorf("no token: %d %v", st, m)
	}
	if st, m := post(t, url(DefaultRunID), "", "Authorization", "Bearer other-tok"); st != 403 || errTypeOf(m) != "insufficient-permissions" {
		t.Errorf("another user: %d %v", st, m)
	}
	if got := s.Reboots(); len(got) != 2 || got[0] != DefaultRunID || got[1] != "RunFromToken01" {
		t.Errorf("Reboots = %v, want the two accepted, in order", got)
	}
	if s.Calls(opRebootRun) != 5 {
		t.Errorf("Calls = %d, want 5", s.Calls(opRebootRun))
	}
}

// A second connection for a run waits for the first to go, up to
// sameRunGrace, and takes its place at once when it goes; one that stays
// gets the second refused with 1008.
func TestSecondConnectionWaitsForTheFirstToGo(t *testing.T) {
	var p platform
	p.init(true, nil, t0)
	first := &eventConn{runID: DefaultRunID, ready: make(chan struct{}), gone: make(chan struct{})}
	if code, why := p.register(first); why != "" {
		t.Fatalf("first: %d %s", code, why)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		p.unregister(first)
	}()
	start := time.Now()
	second := &eventConn{runID: DefaultRunID, ready: make(chan struct{}), gone: make(chan struct{})}
	if code, why := p.register(second); why != "" {
		t.Fatalf("second, after the first went: %d %s", code, why)
	}
	if took := time.Since(start); took >= sameRunGrace*3/4 {
		t.Errorf("the second waited %v: it should take the place as soon as the first goes", took)
	}
	start = time.Now()
	third := &eventConn{runID: DefaultRunID, ready: make(chan struct{}), gone: make(chan struct{})}
	code, why := p.register(third)
	if code != websocket.StatusPolicyViolation || !strings.Contains(why, "too many connections") {
		t.Errorf("third, while the second stays: %d %q", code, why)
	}
	if took := time.Since(start); took < sameRunGrace {
		t.Errorf("refused after %v, before the grace", took)
	}
	p.unregister(second)
	p.wg.Done() // the handlers of the first and second, which this test plays
	p.wg.Done()
	p.shutdown(true)
}

// GET /v2/actor-runs/{runId} answers with the run object Apify's SDKs read
// (Actor.init of the JS SDK reads it): the run's default queue is the one
// served under its path. A run made known by RunQueue can be read and
// rebooted too.
func TestGetRun(t *testing.T) {
	clock := NewManualClock(t0)
	s := Start(t, WithClock(clock), WithToken("tok"), WithUserToken("other-tok", "someone"))
	get := func(run, token string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, s.URL+"/v2/actor-runs/"+run, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("GET run %s: %d, not JSON: %v", run, resp.StatusCode, err)
		}
		return resp.StatusCode, m
	}
	st, m := get(DefaultRunID, "tok")
	d, _ := m["data"].(map[string]any)
	if st != 200 || d["id"] != DefaultRunID || d["status"] != "RUNNING" || d["startedAt"] != "2026-03-14T15:09:26.000Z" {
		t.Fatalf("get run: %d %v", st, m)
	}
	if d["defaultRequestQueueId"] != s.RunQueue(DefaultRunID) {
		t.Errorf("defaultRequestQueueId %v, RunQueue %s", d["defaultRequestQueueId"], s.RunQueue(DefaultRunID))
	}
	for _, field := range []string{"actId", "userId", "buildId", "buildNumber", "defaultKeyValueStoreId", "defaultDatasetId", "containerUrl", "options", "meta", "stats"} {
		if d[field] == nil || d[field] == "" {
			t.Errorf("the run object has no %s: %v", field, d)
		}
	}
	if st, m := get("NoSuchRun", "tok"); st != 404 || errTypeOf(m) != "record-not-found" {
		t.Errorf("unknown run: %d %v", st, m)
	}
	if st, m := get(DefaultRunID, "other-tok"); st != 403 || errTypeOf(m) != "insufficient-permissions" {
		t.Errorf("another user: %d %v", st, m)
	}
	if st, _ := get(DefaultRunID, ""); st != 401 {
		t.Errorf("no token: %d", st)
	}
	q := s.RunQueue("RunFromRunQueue")
	if st, m := get("RunFromRunQueue", "tok"); st != 200 || m["data"].(map[string]any)["defaultRequestQueueId"] != q {
		t.Errorf("a run made known by RunQueue: %d %v", st, m)
	}
	if st, _ := post(t, s.URL+"/v2/actor-runs/RunFromRunQueue/reboot", "", "Authorization", "Bearer tok"); st != 200 {
		t.Errorf("rebooting a run made known by RunQueue: %d", st)
	}
	if s.Calls(opGetRun) != 5 {
		t.Errorf("Calls(opGetRun) = %d, want 5", s.Calls(opGetRun))
	}
}
