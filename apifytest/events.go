package apifytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// DefaultRunID is the Actor run the emulator always knows, besides the
// runs of [WithRunToken] tokens: [Server.EventsURL] is its events URL,
// POST /v2/actor-runs/{runId}/reboot accepts it, and it has a default queue
// ([Server.RunQueue]).
const DefaultRunID = "EmulatorRun000001"

// EventsPathPrefix is where a server made [WithPlatformEvents] serves the
// platform events of a run: the WebSocket of run R is at
// EventsPathPrefix + R (R escaped as one path segment), and a POST of
// {"name": ..., "data": ...} to "/_emulator/events" sends an event (see
// [WithPlatformEvents]).
const EventsPathPrefix = "/_emulator/events/"

// sendEventsPath is the emulator's own endpoint that sends an event, for
// apify-rq event.
const sendEventsPath = "/_emulator/events"

// ErrNoEventConnections matches the error of [Server.SendEvent] when no
// client is connected to the events endpoint, so the event would reach
// nobody.
var ErrNoEventConnections = errors.New("apifytest: no client is connected to the platform events endpoint")

// sameRunGrace is how long a second connection for a run waits for the
// first to go before it is refused with 1008: a client that closes its
// connection and dials again at once must not find its own closing
// connection in the way.
const sameRunGrace = 200 * time.Millisecond

// opRebootRun is the operation of POST /v2/actor-runs/{runId}/reboot.
const opRebootRun Operation = "actorRun_reboot_post"

// opGetRun is the operation of GET /v2/actor-runs/{runId}.
const opGetRun Operation = "actorRun_get"

// WithPlatformEvents makes the server serve the Apify platform's events
// the way the platform serves an Actor run, for testing code that reacts
// to migrating, aborting and persistState:
//
//   - GET EventsPathPrefix + runID ("/_emulator/events/{runId}") is the
//     run's WebSocket, which an Actor reads from ACTOR_EVENTS_WEBSOCKET_URL;
//     [Server.EventsURL] and [Server.RunEventsURL] give its ws:// URL. It
//     takes no token (the platform's URL is the run's own address). As on
//     the platform, a connection for a run the server does not know
//     ([DefaultRunID] and the runs of [WithRunToken]) is closed with code
//     1008, and so is a second connection for a run that already has one
//     (after waiting up to 200 ms for the first to go, so a client that
//     closes and dials again is not refused). Web pages of other sites may
//     not connect (their Origin is refused).
//   - [Server.SendEvent] sends every connected client an event
//     {"name", "createdAt", "data"}, createdAt from the server's [Clock].
//     So does POST /_emulator/events with the JSON body {"name": "...",
//     "data": ...} (what apify-rq event sends): 200 {"data": {"name",
//     "connections"}}, 409 no-event-connections when nobody is connected,
//     400 invalid-input for a bad body. It needs one of the server's tokens
//     when it has any, and like every call that changes state it is
//     refused to a web page of another site.
//   - [Server.DropEventConnections] and [Server.CloseEventConnections] end
//     the connections, to test reconnecting and a close for good;
//     [Server.EventConnections] and [Server.EventConnectionAttempts] count
//     them.
//
// POST /v2/actor-runs/{runId}/reboot is served with or without this
// option (see [Server.Reboots]).
func WithPlatformEvents() Option {
	return func(c *config) { c.events = true }
}

// platform is the emulator's model of Actor runs: the runs it knows, the
// reboots asked for, and the event connections.
type platform struct {
	events bool // WithPlatformEvents

	mu       sync.Mutex
	runs     map[string]*actorRun
	reboots  []string
	conns    map[string]*eventConn // the open connection of each run
	attempts int                   // WebSocket handshakes received
	closed   bool                  // Server.Close: no more connections
	wg       sync.WaitGroup        // one per connection handler
}

type actorRun struct {
	startedAt time.Time
	reboots   int
}

// eventConn is one events connection. It holds its run's place from
// before the handshake's answer is written, so that a client that has
// connected is always found by SendEvent; conn is set, and ready closed,
// once the handshake is over (conn stays nil when it failed).
type eventConn struct {
	runID string
	ready chan struct{}
	conn  *websocket.Conn // read only after ready is closed
	gone  chan struct{}   // closed when the connection is no longer the run's
	once  sync.Once
}

func (c *eventConn) release() { c.once.Do(func() { close(c.gone) }) }

// accepted returns the connection once the handshake is over, nil when it failed.
func (c *eventConn) accepted() *websocket.Conn {
	<-c.ready
	return c.conn
}

func (p *platform) init(events bool, runIDs []string, now time.Time) {
	p.events = events
	p.runs = map[string]*actorRun{DefaultRunID: {startedAt: now}}
	for _, id := range runIDs {
		p.runs[id] = &actorRun{startedAt: now}
	}
	p.conns = map[string]*eventConn{}
}

// knowRun makes a run known to the platform's endpoints (reboot, events).
func (p *platform) knowRun(runID string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runs[runID] == nil {
		p.runs[runID] = &actorRun{startedAt: now}
	}
}

// platformRoutes adds the platform's endpoints to the mux.
func (s *Server) platformRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/actor-runs/{runId}/reboot", s.operation(opRebootRun, s.serveReboot))
	mux.HandleFunc("GET /v2/actor-runs/{runId}", s.operation(opGetRun, s.serveGetRun))
	if s.platform.events {
		mux.HandleFunc("GET "+EventsPathPrefix+"{runId}", s.serveEvents)
		mux.HandleFunc("POST "+sendEventsPath, s.serveSendEvent)
	}
}

// runJSON is the part of Apify's run object the emulator fills in: what
// Apify's clients and SDKs read of it (Actor.init reads the run; a reboot
// answers with it).
type runJSON struct {
	ID                     string  `json:"id"`
	ActID                  string  `json:"actId"`
	UserID                 string  `json:"userId"`
	StartedAt              string  `json:"startedAt"`
	FinishedAt             *string `json:"finishedAt"`
	Status                 string  `json:"status"`
	StatusMessage          string  `json:"statusMessage"`
	BuildID                string  `json:"buildId"`
	BuildNumber            string  `json:"buildNumber"`
	DefaultKeyValueStoreID string  `json:"defaultKeyValueStoreId"`
	DefaultDatasetID       string  `json:"defaultDatasetId"`
	DefaultRequestQueueID  string  `json:"defaultRequestQueueId"`
	ContainerURL           string  `json:"containerUrl"`
	Meta                   struct {
		Origin    string `json:"origin"`
		UserAgent string `json:"userAgent"`
	} `json:"meta"`
	Options struct {
		Build        string `json:"build"`
		TimeoutSecs  int    `json:"timeoutSecs"`
		MemoryMbytes int    `json:"memoryMbytes"`
		DiskMbytes   int    `json:"diskMbytes"`
	} `json:"options"`
	Stats struct {
		RebootCount    int `json:"rebootCount"`
		MigrationCount int `json:"migrationCount"`
		RestartCount   int `json:"restartCount"`
		ResurrectCount int `json:"resurrectCount"`
	} `json:"stats"`
}

// runObject returns the run object of a known run, its default queue made
// if it had none; ok is false for a run the emulator does not know. The
// runs belong to the default user: another user gets 403.
func (s *Server) runObject(runID string, c caller, reboot bool) (runJSON, error) {
	p := &s.platform
	p.mu.Lock()
	run := p.runs[runID]
	switch {
	case run == nil:
		p.mu.Unlock()
		return runJSON{}, errRecordNotFound("Actor run %q was not found", clip(runID))
	case c.user != DefaultUser:
		p.mu.Unlock()
		verb := "read"
		if reboot {
			verb = "reboot"
		}
		return runJSON{}, errInsufficientPermissions("You (user %q) may not %s Actor run %q of user %q", c.user, verb, runID, DefaultUser)
	}
	if reboot {
		run.reboots++
		p.reboots = append(p.reboots, runID)
	}
	out := runJSON{ID: runID, ActID: "apifytestActor001", StartedAt: formatTime(run.startedAt),
		Status: "RUNNING", StatusMessage: "Running in the apifytest emulator",
		BuildID: "apifytestBuild001", BuildNumber: "0.0.1",
		DefaultKeyValueStoreID: "apifytestKvs" + runID, DefaultDatasetID: "apifytestDataset" + runID,
		ContainerURL: "http://127.0.0.1/"}
	if reboot {
		out.StatusMessage = "Rebooted by the apifytest emulator"
	}
	out.Meta.Origin, out.Meta.UserAgent = "API", "apifytest"
	out.Options.Build, out.Options.TimeoutSecs, out.Options.MemoryMbytes, out.Options.DiskMbytes = "latest", 3600, 1024, 2048
	out.Stats.RebootCount = run.reboots
	p.mu.Unlock()
	out.DefaultRequestQueueID, _ = s.store.runQueue(c, runID, true)
	s.store.mu.Lock()
	out.UserID = s.store.userNamed(DefaultUser).id
	s.store.mu.Unlock()
	return out, nil
}

// serveReboot records a reboot and answers with the run, as Apify does.
func (s *Server) serveReboot(w http.ResponseWriter, r *http.Request, c caller) error {
	out, err := s.runObject(r.PathValue("runId"), c, true)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, out)
	return nil
}

// serveGetRun answers GET /v2/actor-runs/{runId} with the run object.
func (s *Server) serveGetRun(w http.ResponseWriter, r *http.Request, c caller) error {
	out, err := s.runObject(r.PathValue("runId"), c, false)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, out)
	return nil
}

// Reboots returns the run ID of every reboot the server accepted (POST
// /v2/actor-runs/{runId}/reboot answered 200), in the order they came. A
// reboot is only recorded: the run keeps its state and its event
// connection.
func (s *Server) Reboots() []string {
	s.platform.mu.Lock()
	defer s.platform.mu.Unlock()
	return slices.Clone(s.platform.reboots)
}

// serveEvents serves a run's events WebSocket.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	p := &s.platform
	runID := r.PathValue("runId")
	p.mu.Lock()
	p.attempts++
	p.mu.Unlock()
	c := &eventConn{runID: runID, ready: make(chan struct{}), gone: make(chan struct{})}
	code, why := p.register(c)
	conn, err := websocket.Accept(w, r, nil) // refuses an Origin other than the Host
	if why != "" {
		if err == nil {
			_ = conn.Close(code, why)
		}
		return
	}
	if err == nil {
		c.conn = conn
	}
	close(c.ready)
	defer p.wg.Done()
	defer p.unregister(c)
	if err != nil {
		return
	}
	// Clients send nothing the emulator needs; reading answers pings and
	// close frames, and tells when the client has gone.
	for {
		if _, _, err := conn.Read(context.Background()); err != nil {
			return
		}
	}
}

// register makes c its run's connection, or returns the close code and
// reason it must be refused with.
func (p *platform) register(c *eventConn) (websocket.StatusCode, string) {
	waited := false
	for {
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return websocket.StatusGoingAway, "the emulator is shutting down"
		case p.runs[c.runID] == nil:
			p.mu.Unlock()
			return websocket.StatusPolicyViolation, "unknown Actor run ID"
		}
		old := p.conns[c.runID]
		if old == nil {
			p.conns[c.runID] = c
			p.wg.Add(1)
			p.mu.Unlock()
			return 0, ""
		}
		p.mu.Unlock()
		if waited {
			return websocket.StatusPolicyViolation, "too many connections for this Actor run"
		}
		waited = true
		t := time.NewTimer(sameRunGrace)
		select {
		case <-old.gone:
		case <-t.C:
		}
		t.Stop()
	}
}

// unregister removes c, if it is still its run's connection.
func (p *platform) unregister(c *eventConn) {
	p.mu.Lock()
	if p.conns[c.runID] == c {
		delete(p.conns, c.runID)
	}
	p.mu.Unlock()
	c.release()
}

// take removes every connection and returns them.
func (p *platform) take() []*eventConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*eventConn, 0, len(p.conns))
	for _, c := range p.conns {
		out = append(out, c)
	}
	clear(p.conns)
	return out
}

// shutdown closes every connection with 1001 going away and refuses new
// ones; wait says to wait for their handlers to end.
func (p *platform) shutdown(wait bool) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	closeAll(p.take(), websocket.StatusGoingAway, "the emulator is shutting down")
	if wait {
		p.wg.Wait()
	}
}

// closeAll closes the connections at once, each with a close handshake.
func closeAll(conns []*eventConn, code websocket.StatusCode, reason string) {
	var wg sync.WaitGroup
	for _, c := range conns {
		c.release()
		wg.Go(func() {
			if conn := c.accepted(); conn != nil {
				_ = conn.Close(code, reason)
			}
		})
	}
	wg.Wait()
}

// EventsURL returns the ws:// URL of the platform events of [DefaultRunID],
// for ACTOR_EVENTS_WEBSOCKET_URL or apify.PlatformEventsOptions.URL. It
// returns "" for a server that was not started (an in-memory server cannot
// serve a WebSocket), and panics when the server was made without
// [WithPlatformEvents].
func (s *Server) EventsURL() string { return s.RunEventsURL(DefaultRunID) }

// RunEventsURL is [Server.EventsURL] for the run runID. A run the server
// does not know gets a URL all the same: connecting to it gets the close
// code 1008, as on the platform.
func (s *Server) RunEventsURL(runID string) string {
	if !s.platform.events {
		panic("apifytest: EventsURL: the server serves no platform events; make it with WithPlatformEvents()")
	}
	s.mu.Lock()
	base := s.URL
	s.mu.Unlock()
	if base == "" {
		return ""
	}
	return "ws" + strings.TrimPrefix(base, "http") + EventsPathPrefix + url.PathEscape(runID)
}

// SendEvent sends the event {"name": name, "createdAt": now, "data": data}
// to every client connected to the events endpoint, createdAt from the
// server's [Clock] and data as encoding/json encodes it (nil leaves "data"
// out; a json.RawMessage goes as it is). It returns once the event is
// written to every connection.
//
// It returns an error when the server was made without
// [WithPlatformEvents], when name is empty or data cannot be encoded, when
// writing to a connection fails, and (matching [ErrNoEventConnections])
// when no client is connected: an event sent to nobody is a test that
// tests nothing. To wait for a client, poll [Server.EventConnections].
func (s *Server) SendEvent(name string, data any) error {
	_, err := s.sendEvent(name, data)
	return err
}

func (s *Server) sendEvent(name string, data any) (int, error) {
	if !s.platform.events {
		return 0, errors.New("apifytest: SendEvent: the server serves no platform events; make it with WithPlatformEvents()")
	}
	if name == "" {
		return 0, errors.New("apifytest: SendEvent: the event name is empty")
	}
	msg := struct {
		Name      string `json:"name"`
		CreatedAt string `json:"createdAt"`
		Data      any    `json:"data,omitempty"`
	}{name, formatTime(s.store.now()), data}
	if raw, ok := data.(json.RawMessage); ok && len(raw) == 0 {
		msg.Data = nil
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return 0, fmt.Errorf("apifytest: SendEvent %q: the data cannot be encoded as JSON: %w", name, err)
	}
	p := &s.platform
	p.mu.Lock()
	conns := make([]*eventConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sent := 0
	var errs []error
	for _, c := range conns {
		conn := c.accepted()
		if conn == nil {
			continue // its handshake failed
		}
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", c.runID, err))
			continue
		}
		sent++
	}
	if len(errs) > 0 {
		return sent, fmt.Errorf("apifytest: SendEvent %q: %w", name, errors.Join(errs...))
	}
	if sent == 0 {
		return 0, fmt.Errorf("apifytest: SendEvent %q: %w", name, ErrNoEventConnections)
	}
	return sent, nil
}

// serveSendEvent is POST /_emulator/events: {"name": ..., "data": ...}.
func (s *Server) serveSendEvent(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authenticate(r); err != nil {
		writeError(w, err)
		return
	}
	body, err := readJSONBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var in struct {
		Name *string         `json:"name"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, errInvalidInput("The body must be a JSON object {\"name\": \"migrating\", \"data\": {...}}: %s", jsonErrorText(err)))
		return
	}
	if in.Name == nil || *in.Name == "" {
		writeError(w, errInvalidInput("Field \"name\" is required: the event's name, such as \"migrating\""))
		return
	}
	n, err := s.sendEvent(*in.Name, in.Data)
	switch {
	case errors.Is(err, ErrNoEventConnections):
		writeError(w, newAPIError(http.StatusConflict, "no-event-connections",
			"No client is connected to the platform events endpoint, so the event would reach nobody"))
		return
	case err != nil:
		writeError(w, newAPIError(http.StatusInternalServerError, "internal-server-error", "%v", err))
		return
	}
	writeData(w, http.StatusOK, struct {
		Name        string `json:"name"`
		Connections int    `json:"connections"`
	}{*in.Name, n})
}

// EventConnections returns how many clients are connected to the events
// endpoint now.
func (s *Server) EventConnections() int {
	s.platform.mu.Lock()
	defer s.platform.mu.Unlock()
	return len(s.platform.conns)
}

// EventConnectionAttempts returns how many WebSocket handshakes the events
// endpoint has received, refused ones included: the count that shows
// whether a client reconnects, and how often.
func (s *Server) EventConnectionAttempts() int {
	s.platform.mu.Lock()
	defer s.platform.mu.Unlock()
	return s.platform.attempts
}

// DropEventConnections cuts every events connection without a close
// handshake, as a network failure or a crashed platform would (the client
// sees an abnormal closure, code 1006, and may reconnect), and returns how
// many it cut. They stop counting in [Server.EventConnections] at once.
func (s *Server) DropEventConnections() int {
	conns := s.platform.take()
	for _, c := range conns {
		c.release()
		if conn := c.accepted(); conn != nil {
			_ = conn.CloseNow()
		}
	}
	return len(conns)
}

// CloseEventConnections closes every events connection with the close
// code, as the platform closes a run's connection with 1008 (policy
// violation), and returns how many it closed, once each close handshake has
// ended (a client that does not read its connection delays that, by at
// most about 10 s). It panics on a code that a close frame cannot carry (valid: 1000
// to 1003, 1007 to 1014, 3000 to 4999).
func (s *Server) CloseEventConnections(code int) int {
	if !(code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999) {
		panic(fmt.Sprintf("apifytest: CloseEventConnections: %d is not a close code a close frame may carry", code))
	}
	conns := s.platform.take()
	closeAll(conns, websocket.StatusCode(code), "closed by the apifytest emulator")
	return len(conns)
}
