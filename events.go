package apify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The names of the events the Apify platform sends an Actor run. Other
// names reach [PlatformEvents.C] too, untouched.
const (
	// PlatformEventMigrating: the run is moving to another server; the
	// process is killed when [PlatformEvent.TimeRemaining] runs out, and
	// the run restarts there with the same run ID and storages.
	PlatformEventMigrating = "migrating"
	// PlatformEventAborting: a graceful abort (by a user, the run's cost
	// cap, Standby idle, or a worker shutdown); the platform force-stops
	// the run about 30 s later.
	PlatformEventAborting = "aborting"
	// PlatformEventPersistState: save state now; [PlatformEvent.IsMigrating]
	// says whether a migration follows.
	PlatformEventPersistState = "persistState"
	// PlatformEventSystemInfo: the run's resource usage, about once a
	// second; its figures are in [PlatformEvent.Data].
	PlatformEventSystemInfo = "systemInfo"
)

var (
	// ErrMigrating matches the error [RequestQueueClient.Consume] returns
	// when a migrating platform event ended the crawl: the platform is
	// about to kill this process and restart the run on another server
	// with the same run ID and storages. Save what must survive and exit
	// with a non-zero code (or call [Client.RebootRun]): a process that
	// exits 0 while migrating ends the run SUCCEEDED, and the platform
	// does not restart it, so the rest of the crawl is silently lost.
	ErrMigrating = errors.New("the Actor run is migrating to another server")
	// ErrAborting matches the error [RequestQueueClient.Consume] returns
	// when an aborting platform event ended the crawl: the run was aborted
	// gracefully and the platform force-stops it about 30 s after the
	// event. The run ends ABORTED whatever the exit code.
	ErrAborting = errors.New("the Actor run is being aborted")
)

// PlatformEvent is one event the Apify platform sent the Actor run.
type PlatformEvent struct {
	// Name is "migrating", "aborting", "persistState", "systemInfo", or any
	// other name the platform sends, passed through as it came.
	Name string
	// CreatedAt is the event's createdAt; zero when the message had none
	// or it was not an RFC 3339 time.
	CreatedAt time.Time
	// TimeRemaining is, for migrating, data.timeRemainingSecs: how long
	// before the platform kills the process. Zero when absent, negative
	// or not a number (the time left is then unknown, not zero).
	TimeRemaining time.Duration
	// IsMigrating is, for persistState, data.isMigrating.
	IsMigrating bool
	// Data is the event's data exactly as it came, nil when the message
	// had none (or null). Each subscriber gets its own copy.
	Data json.RawMessage
}

// PlatformEventsOptions configures [SubscribePlatformEvents].
type PlatformEventsOptions struct {
	// URL is the WebSocket to read events from, ws:// or wss://. Empty
	// means the variable ACTOR_EVENTS_WEBSOCKET_URL, else the older
	// APIFY_ACTOR_EVENTS_WS_URL, as Apify sets them in an Actor run. With
	// neither (outside Apify) the stream never delivers anything, and
	// nothing is dialled.
	URL string
	// Logger receives the records of the connection (connected, dropped,
	// reconnecting, closed for good) and of messages skipped or events
	// dropped. They never hold the URL's query or user info. Nil logs
	// nothing.
	Logger *slog.Logger
}

// PlatformEvents is one subscription to the platform's events. Make one
// with [SubscribePlatformEvents], read [PlatformEvents.C], and Close it
// when done. It is safe for concurrent use.
type PlatformEvents struct {
	hub    *eventHub // nil: a stream that never delivers
	logger *slog.Logger
	ch     chan PlatformEvent
	stop   chan struct{} // closed by Close
	fwd    chan struct{} // closed when the forwarder has ended (nil without one)
	once   sync.Once

	mu     sync.Mutex
	queue  []PlatformEvent // events waiting for the reader, oldest first
	wake   chan struct{}   // 1-buffered: the queue grew
	closed bool
}

// maxQueuedEvents is how many events may wait for a subscriber that does
// not read before ordinary events are dropped (see SubscribePlatformEvents).
const maxQueuedEvents = 256

// SubscribePlatformEvents subscribes to the Apify platform's events for
// this Actor run and returns the subscription; read its channel
// [PlatformEvents.C].
//
// # One connection
//
// The platform accepts one connection per run (a second one is closed with
// code 1008), so every subscription in the process to the same URL shares
// one WebSocket connection: the first dials, the others join it, each with
// its own channel, and the connection closes when the last subscription is
// closed. Subscribing again afterwards dials anew.
//
// # Reconnecting
//
// A connection that drops is dialled again in the background: at once when
// it had stayed up at least 1 s, else after a wait that doubles from 100 ms
// up to 5 s (with jitter) while attempts keep failing. A close with code
// 1008 (policy violation: an unknown run, or too many connections for it),
// 1002, 1003, 1007 or 1010 is permanent, as in Apify's Python SDK: the
// connection is not dialled again while any subscription to the URL is
// open (subscribing again then joins the closed connection and dials
// nothing), the channels stay open but deliver nothing more,
// [PlatformEvents.Err] says why, and an Error record is logged. Only a
// subscription made after every one of them is closed dials again. A live
// connection is pinged every
// 30 s, and one that does not answer within 15 s is dropped and dialled
// again.
//
// # Delivery
//
// Events are delivered in the order they came. The shared reader never
// waits for a subscriber: each has a queue in front of its channel. While
// the subscriber does not read, a newer systemInfo (or cpuInfo) replaces the
// one still waiting, migrating, aborting and persistState events are always
// kept, and past 256 waiting events the oldest of the others (unknown
// names) is dropped, with a Warn record. So a subscriber that reads late
// still gets every lifecycle event, and one that never reads costs little.
//
// # Errors and ctx
//
// A URL (given, or from the variable) that is not ws:// or wss:// with a
// host is an error wrapping [ErrInvalidInput], before any I/O. Otherwise
// SubscribePlatformEvents waits for the shared connection's first attempt,
// bounded by ctx, so that events sent once it returns are not missed. When
// that attempt fails (the server is down, say), it still returns the
// subscription, with no error: the connection is dialled again in the
// background and a Warn record says why it failed. When ctx ends first, it
// returns an error wrapping ctx's error and leaves nothing behind. ctx
// bounds only this wait: the subscription lives until Close.
func SubscribePlatformEvents(ctx context.Context, opts PlatformEventsOptions) (*PlatformEvents, error) {
	if ctx == nil {
		return nil, errors.New("apify: SubscribePlatformEvents: nil Context")
	}
	raw, err := platformEventsURL(opts.URL)
	if err != nil {
		return nil, err
	}
	e := &PlatformEvents{logger: opts.Logger, ch: make(chan PlatformEvent), stop: make(chan struct{})}
	if raw == "" {
		return e, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apify: SubscribePlatformEvents: %w", err)
	}
	e.wake, e.fwd = make(chan struct{}, 1), make(chan struct{})
	go e.forward()

	eventsMu.Lock()
	h := eventHubs[raw]
	start := h == nil
	if start {
		h = newEventHub(raw, eventsTimings)
		eventHubs[raw] = h
	}
	h.subs = append(h.subs, e)
	e.hub = h
	eventsMu.Unlock()
	if start {
		go h.run()
	}

	select {
	case <-h.attempted:
		return e, nil
	case <-ctx.Done():
	}
	select {
	case <-h.attempted:
		return e, nil
	default:
	}
	_ = e.Close()
	return nil, fmt.Errorf("apify: SubscribePlatformEvents: %w before the first connection to %s was made", ctx.Err(), h.shown)
}

// C returns the channel events are delivered on. Close closes it; nothing
// else does (after a permanent close it simply delivers nothing more).
func (e *PlatformEvents) C() <-chan PlatformEvent { return e.ch }

// Err returns why the shared connection was closed for good (a close with
// code 1008, 1002, 1003, 1007 or 1010), or nil while events may still come.
// It is nil for the stream of a process outside Apify.
func (e *PlatformEvents) Err() error {
	if e.hub == nil {
		return nil
	}
	eventsMu.Lock()
	defer eventsMu.Unlock()
	return e.hub.err
}

// Close ends the subscription and closes its channel; events still waiting
// are discarded. Closing the last subscription to a URL closes the shared
// connection (at once with a server that answers the close handshake, at
// most about 10 s with one that does not) and waits until every goroutine
// of the subscription and of the connection has ended. Close may be called
// more than once and from several goroutines; it always returns nil.
func (e *PlatformEvents) Close() error {
	e.once.Do(func() {
		e.mu.Lock()
		e.closed, e.queue = true, nil
		e.mu.Unlock()
		close(e.stop)
		if e.hub != nil {
			e.hub.unsubscribe(e)
		}
		if e.fwd != nil {
			<-e.fwd // the forwarder closes e.ch
		} else {
			close(e.ch)
		}
	})
	return nil
}

// forward hands the queued events to the channel, one at a time, until Close.
func (e *PlatformEvents) forward() {
	defer close(e.fwd)
	defer close(e.ch)
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.mu.Unlock()
			select {
			case <-e.wake:
				continue
			case <-e.stop:
				return
			}
		}
		ev := e.queue[0]
		e.queue[0] = PlatformEvent{}
		e.queue = e.queue[1:]
		e.mu.Unlock()
		select {
		case e.ch <- ev:
		case <-e.stop:
			return
		}
	}
}

// enqueue adds ev to the subscriber's queue without ever waiting (see
// "Delivery" in SubscribePlatformEvents).
func (e *PlatformEvents) enqueue(ev PlatformEvent) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if coalescedEvent(ev.Name) {
		e.queue = slices.DeleteFunc(e.queue, func(q PlatformEvent) bool { return q.Name == ev.Name })
	}
	e.queue = append(e.queue, ev)
	dropped := ""
	if len(e.queue) > maxQueuedEvents {
		if i := slices.IndexFunc(e.queue, func(q PlatformEvent) bool { return !lifecycleEvent(q.Name) }); i >= 0 {
			dropped = e.queue[i].Name
			e.queue = slices.Delete(e.queue, i, i+1)
		}
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	if dropped != "" && e.logger != nil {
		e.logger.Warn("apify: platform events: dropped an event nobody read",
			slog.String("event", dropped), slog.Int("waiting", maxQueuedEvents))
	}
}

// coalescedEvent: only the newest event of this name needs to wait.
func coalescedEvent(name string) bool { return name == PlatformEventSystemInfo || name == "cpuInfo" }

// lifecycleEvent: an event of this name is never dropped.
func lifecycleEvent(name string) bool {
	switch name {
	case PlatformEventMigrating, PlatformEventAborting, PlatformEventPersistState:
		return true
	}
	return false
}

// platformEventsURL returns the URL to dial, "" for none, or why it is
// not one.
func platformEventsURL(given string) (string, error) {
	raw, source := given, "PlatformEventsOptions.URL"
	if raw == "" {
		for _, name := range []string{"ACTOR_EVENTS_WEBSOCKET_URL", "APIFY_ACTOR_EVENTS_WS_URL"} {
			if v := os.Getenv(name); v != "" {
				raw, source = v, name
				break
			}
		}
		if raw == "" {
			return "", nil
		}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", fmt.Errorf("apify: SubscribePlatformEvents: %w: %s %q does not parse", ErrInvalidInput, source, shownURL(raw))
	case u.Scheme != "ws" && u.Scheme != "wss":
		return "", fmt.Errorf("apify: SubscribePlatformEvents: %w: %s %q is not a ws:// or wss:// URL", ErrInvalidInput, source, shownURL(raw))
	case u.Host == "":
		return "", fmt.Errorf("apify: SubscribePlatformEvents: %w: %s %q has no host", ErrInvalidInput, source, shownURL(raw))
	}
	return raw, nil
}

// eventTimings are the waits of the events connection; tests shorten them
// (export_test.go).
type eventTimings struct {
	backoffMin, backoffMax time.Duration // the wait before a reconnect after a failure
	healthyAfter           time.Duration // a connection up this long reconnects at once
	dialTimeout            time.Duration // bounds one handshake
	pingEvery, pingTimeout time.Duration // keepalive
}

var defaultEventTimings = eventTimings{
	backoffMin:   100 * time.Millisecond,
	backoffMax:   5 * time.Second,
	healthyAfter: time.Second,
	dialTimeout:  10 * time.Second,
	pingEvery:    30 * time.Second,
	pingTimeout:  15 * time.Second,
}

var (
	// eventsMu guards eventHubs, eventsTimings, and every hub's subs and err.
	eventsMu sync.Mutex
	// eventHubs holds the shared connection of each URL while it has
	// subscribers, closed for good or not.
	eventHubs     = map[string]*eventHub{}
	eventsTimings = defaultEventTimings
)

// eventHub is the one connection to an events URL, shared by its subscribers.
type eventHub struct {
	key    string // the URL as given: the registry key and what is dialled
	shown  string // the URL as logs and errors show it
	query  string // the raw query, scrubbed from error texts
	t      eventTimings
	client *http.Client
	ctx    context.Context // ends when the last subscriber leaves
	cancel context.CancelFunc

	attempted chan struct{} // closed once the first attempt has ended
	done      chan struct{} // closed when run has returned

	// Guarded by eventsMu.
	subs []*PlatformEvents
	err  error // why the connection was closed for good
}

func newEventHub(raw string, t eventTimings) *eventHub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &eventHub{
		key: raw, shown: shownURL(raw), t: t, ctx: ctx, cancel: cancel,
		attempted: make(chan struct{}), done: make(chan struct{}),
		// Its own pool, emptied when the hub ends. HTTP/1.1 only: the
		// WebSocket handshake is an HTTP/1.1 Upgrade.
		client: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: t.dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: t.dialTimeout,
		}},
	}
	if u, err := url.Parse(raw); err == nil {
		h.query = u.RawQuery
	}
	return h
}

// unsubscribe removes e; the last subscriber stops the hub and waits for it.
func (h *eventHub) unsubscribe(e *PlatformEvents) {
	eventsMu.Lock()
	h.subs = slices.DeleteFunc(h.subs, func(s *PlatformEvents) bool { return s == e })
	last := len(h.subs) == 0
	if last && eventHubs[h.key] == h {
		delete(eventHubs, h.key)
	}
	eventsMu.Unlock()
	if last {
		h.cancel()
		<-h.done
	}
}

// run dials, reads, and dials again, until the last subscriber leaves or
// the server closes the connection for good.
func (h *eventHub) run() {
	defer close(h.done)
	defer h.client.CloseIdleConnections()
	first := true
	markAttempted := func() {
		if first {
			first = false
			close(h.attempted)
		}
	}
	defer markAttempted()
	failures := 0 // consecutive attempts that failed or did not last
	for h.ctx.Err() == nil {
		conn, err := h.dial()
		markAttempted()
		up := time.Duration(0)
		if err != nil {
			if h.ctx.Err() != nil {
				return
			}
			h.log(slog.LevelWarn, "apify: platform events: cannot connect",
				slog.String("url", h.shown), slog.String("error", h.scrub(err)), slog.Int("attempt", failures+1))
		} else {
			h.log(slog.LevelDebug, "apify: platform events: connected", slog.String("url", h.shown))
			start := time.Now()
			err = h.read(conn)
			up = time.Since(start)
			if h.ctx.Err() != nil {
				return
			}
			code := websocket.CloseStatus(err) // -1: no close frame
			if permanentClose(code) {
				h.fail(code, err)
				return
			}
			h.log(slog.LevelWarn, "apify: platform events: the connection dropped",
				slog.String("url", h.shown), slog.Int("code", int(code)), slog.String("error", h.scrub(err)), slog.Duration("up", up))
		}
		if up >= h.t.healthyAfter {
			failures = 0
			continue // it was healthy: reconnect at once
		}
		wait := h.backoff(failures)
		failures++
		h.log(slog.LevelDebug, "apify: platform events: reconnecting", slog.String("url", h.shown), slog.Duration("wait", wait))
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-h.ctx.Done():
			timer.Stop()
			return
		}
	}
}

// permanentClose reports the close codes after which the connection is
// never dialled again: 1008 policy violation (the platform's answer to an
// unknown run or a second connection) and the protocol and data errors
// 1002, 1003, 1007, 1010, which another attempt would meet again.
func permanentClose(code websocket.StatusCode) bool {
	switch code {
	case websocket.StatusPolicyViolation, websocket.StatusProtocolError, websocket.StatusUnsupportedData,
		websocket.StatusInvalidFramePayloadData, websocket.StatusMandatoryExtension:
		return true
	}
	return false
}

// fail records that the connection was closed for good.
func (h *eventHub) fail(code websocket.StatusCode, err error) {
	perm := fmt.Errorf("apify: platform events: the server closed the connection with code %d, which is permanent: not reconnecting: %s",
		int(code), h.scrub(err))
	eventsMu.Lock()
	h.err = perm
	eventsMu.Unlock()
	h.log(slog.LevelError, "apify: platform events: closed for good; no more events will come",
		slog.String("url", h.shown), slog.Int("code", int(code)), slog.String("error", h.scrub(err)))
}

// backoff is the wait after n consecutive failures: from backoffMin,
// doubling, at most backoffMax, the upper half drawn at random.
func (h *eventHub) backoff(n int) time.Duration {
	upper := h.t.backoffMax
	if n < 30 && h.t.backoffMin<<n < upper {
		upper = h.t.backoffMin << n
	}
	if upper <= 0 {
		return 0
	}
	return upper/2 + rand.N(upper/2+1)
}

func (h *eventHub) dial() (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(h.ctx, h.t.dialTimeout)
	defer cancel()
	hdr := http.Header{"User-Agent": {userAgent(os.Getenv("APIFY_IS_AT_HOME") != "", "")}}
	conn, _, err := websocket.Dial(ctx, h.key, &websocket.DialOptions{HTTPClient: h.client, HTTPHeader: hdr})
	return conn, err
}

// read delivers the connection's messages until it ends, and returns why
// it ended. The last subscriber leaving closes it with 1000.
func (h *eventHub) read(conn *websocket.Conn) error {
	conn.SetReadLimit(1 << 20)
	closed := make(chan struct{})
	stopClose := context.AfterFunc(h.ctx, func() {
		defer close(closed)
		_ = conn.Close(websocket.StatusNormalClosure, "unsubscribed")
	})
	pingCtx, stopPing := context.WithCancel(h.ctx)
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		h.keepAlive(pingCtx, conn)
	}()
	var err error
	for {
		var data []byte
		if _, data, err = conn.Read(context.Background()); err != nil {
			break
		}
		h.dispatch(data)
	}
	stopPing()
	<-pinged
	if stopClose() {
		_ = conn.CloseNow()
	} else {
		<-closed
	}
	return err
}

// keepAlive pings the server, and drops a connection that stops answering.
func (h *eventHub) keepAlive(ctx context.Context, conn *websocket.Conn) {
	tick := time.NewTicker(h.t.pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, h.t.pingTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			h.log(slog.LevelWarn, "apify: platform events: the server stopped answering pings", slog.String("url", h.shown))
			_ = conn.CloseNow()
			return
		}
	}
}

// dispatch parses one message and hands the event to every subscriber.
func (h *eventHub) dispatch(data []byte) {
	ev, err := parsePlatformEvent(data)
	if err != nil {
		h.log(slog.LevelWarn, "apify: platform events: skipped a message that is not an event",
			slog.String("error", err.Error()), slog.Int("bytes", len(data)))
		return
	}
	eventsMu.Lock()
	subs := slices.Clone(h.subs)
	eventsMu.Unlock()
	for i, s := range subs {
		if i > 0 && ev.Data != nil {
			ev.Data = slices.Clone(ev.Data)
		}
		s.enqueue(ev)
	}
}

// parsePlatformEvent reads {"name": ..., "createdAt": ..., "data": {...}}.
func parsePlatformEvent(data []byte) (PlatformEvent, error) {
	var m struct {
		Name      *string         `json:"name"`
		CreatedAt json.RawMessage `json:"createdAt"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return PlatformEvent{}, fmt.Errorf("not a JSON event object: %s", clip(err.Error(), 200))
	}
	if m.Name == nil || *m.Name == "" {
		return PlatformEvent{}, errors.New("the event has no name")
	}
	ev := PlatformEvent{Name: *m.Name}
	var created string
	if json.Unmarshal(m.CreatedAt, &created) == nil {
		if t, err := time.Parse(time.RFC3339Nano, created); err == nil {
			ev.CreatedAt = t
		}
	}
	if len(m.Data) > 0 && string(m.Data) != "null" {
		ev.Data = m.Data
	}
	switch ev.Name {
	case PlatformEventMigrating:
		var d struct {
			TimeRemainingSecs float64 `json:"timeRemainingSecs"`
		}
		if json.Unmarshal(ev.Data, &d) == nil {
			ev.TimeRemaining = secondsDuration(d.TimeRemainingSecs)
		}
	case PlatformEventPersistState:
		var d struct {
			IsMigrating bool `json:"isMigrating"`
		}
		if json.Unmarshal(ev.Data, &d) == nil {
			ev.IsMigrating = d.IsMigrating
		}
	}
	return ev, nil
}

// secondsDuration converts seconds to a Duration: 0 for a negative or
// absurd value, at most a year.
func secondsDuration(secs float64) time.Duration {
	const maxSecs = 365 * 24 * 3600
	if !(secs > 0) || math.IsInf(secs, 0) {
		return 0
	}
	return time.Duration(math.Round(min(secs, maxSecs) * float64(time.Second)))
}

// scrub returns err's text without the URL's query, where a token may be.
func (h *eventHub) scrub(err error) string {
	if err == nil {
		return "closed"
	}
	s := err.Error()
	if h.query != "" {
		s = strings.ReplaceAll(s, h.query, "…")
	}
	return s
}

// log sends a record to the distinct loggers of the hub's subscribers.
func (h *eventHub) log(level slog.Level, msg string, attrs ...slog.Attr) {
	eventsMu.Lock()
	var loggers []*slog.Logger
	for _, s := range h.subs {
		if s.logger != nil && !slices.Contains(loggers, s.logger) {
			loggers = append(loggers, s.logger)
		}
	}
	eventsMu.Unlock()
	for _, l := range loggers {
		l.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
