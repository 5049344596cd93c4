package apifytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rqkit/apify"
)

// Server is a request-queue emulator. Start one with [NewServer] (or
// [Start] in a test), point clients at URL, and read or seed its state with
// its methods. It is safe for concurrent use.
type Server struct {
	// URL is the base URL of the running server, such as
	// "http://127.0.0.1:53417", without a trailing slash and without /v2.
	// It is "" until the server is started.
	URL string

	store   *store
	faults  faults
	tokens  map[string]tokenInfo
	plain   string // the token Client uses: the first WithToken token, else a user token, else a run token
	limiter rateLimiter
	limits  HTTPLimits
	conns   atomic.Int64 // open connections of every HTTPServer
	handler http.Handler
	// platform holds the Actor runs, reboots and event connections (events.go).
	platform platform

	mu      sync.Mutex
	srv     *http.Server
	done    chan struct{}
	started bool
}

// tokenInfo is who a token belongs to.
type tokenInfo struct {
	user  string
	runID string
}

type config struct {
	tokens map[string]tokenInfo
	plain  string
	clock  Clock
	queues []string
	errs   []string
	// rateLimits is set by WithRateLimits.
	rateLimits *RateLimits
	httpLimits HTTPLimits
	events     bool // WithPlatformEvents
}

// Option configures a [Server].
type Option func(*config)

func (c *config) addToken(opt, token string, ti tokenInfo) {
	switch old, dup := c.tokens[token]; {
	case token == "":
		c.errs = append(c.errs, opt+": the token is empty")
	case strings.ContainsAny(token, " \t\r\n"):
		c.errs = append(c.errs, opt+": the token contains whitespace")
	case dup && old != ti:
		c.errs = append(c.errs, opt+": the token was already given to another user or run")
	default:
		c.tokens[token] = ti
	}
}

// WithToken adds an API token of the default user ([DefaultUser]). Once
// any token is configured (by this option, [WithUserToken] or
// [WithRunToken]) every call needs a valid one, sent as "Authorization:
// Bearer <token>" or "?token=": a missing token gets 401
// token-not-provided, an unknown one 401 invalid-token. It may be repeated.
func WithToken(token string) Option {
	return func(c *config) {
		c.addToken("WithToken", token, tokenInfo{user: DefaultUser})
		if c.plain == "" && token != "" {
			c.plain = token
		}
	}
}

// WithUserToken adds an API token of the named user, for tests of
// "username~queue-name" and of queues owned by different users.
func WithUserToken(token, username string) Option {
	return func(c *config) {
		if username == "" || strings.ContainsAny(username, "~/") {
			c.errs = append(c.errs, fmt.Sprintf("WithUserToken: the username %q is empty or holds '~' or '/'", username))
			return
		}
		c.addToken("WithUserToken", token, tokenInfo{user: username})
	}
}

// WithRunToken adds a token of the default user whose calls come from
// inside the Actor run runID, the way the token Apify gives an Actor run
// does: locks taken with it belong to the run, and the run may prolong,
// delete and bulk-unlock them with or without the clientKey that took them.
func WithRunToken(token, runID string) Option {
	return func(c *config) {
		if runID == "" {
			c.errs = append(c.errs, "WithRunToken: the run ID is empty")
			return
		}
		c.addToken("WithRunToken", token, tokenInfo{user: DefaultUser, runID: runID})
	}
}

// WithClock makes the server read time from clock, such as a
// [ManualClock], instead of time.Now.
func WithClock(clock Clock) Option {
	return func(c *config) {
		if clock == nil {
			c.errs = append(c.errs, "WithClock: the clock is nil")
			return
		}
		c.clock = clock
	}
}

// WithQueue creates a queue of the default user with this name when the
// server is made; [Server.CreateQueue] returns its ID. It may be repeated.
func WithQueue(name string) Option {
	return func(c *config) {
		if err := validateQueueName(name); err != nil || name == "" {
			c.errs = append(c.errs, fmt.Sprintf("WithQueue: %q is not a valid queue name (letters, digits, and hyphens inside)", name))
			return
		}
		c.queues = append(c.queues, name)
	}
}

// NewServer starts an emulator on a loopback port and returns it. Close it
// when done. It panics on a bad option or when it cannot listen, like
// httptest.NewServer; [New] returns the error instead.
func NewServer(opts ...Option) *Server {
	s := NewUnstartedServer(opts...)
	s.Start()
	return s
}

// TB is the part of testing.TB that [Start] needs; *testing.T, *testing.B
// and *testing.F satisfy it. (Taking this rather than testing.TB keeps the
// testing package out of programs that embed the emulator, such as apify-rq.)
type TB interface {
	// Helper marks the calling function as a test helper, as
	// testing.TB's Helper does.
	Helper()
	// Cleanup registers a function to call when the test ends, as
	// testing.TB's Cleanup does.
	Cleanup(func())
}

// Start is [NewServer] for tests: it closes the server when tb's test ends.
func Start(tb TB, opts ...Option) *Server {
	tb.Helper()
	s := NewServer(opts...)
	tb.Cleanup(s.Close)
	return s
}

// NewUnstartedServer returns an emulator that does not listen yet: serve it
// with [Server.Handler] in memory (inside a testing/synctest bubble, say, or
// behind your own http.Server), or call [Server.Start]. It panics on a bad
// option; [New] returns the error instead.
func NewUnstartedServer(opts ...Option) *Server {
	s, err := New(opts...)
	if err != nil {
		panic(err.Error())
	}
	return s
}

// New is [NewUnstartedServer] for programs: it returns an emulator that
// does not listen yet, or an error naming every bad option.
func New(opts ...Option) (*Server, error) {
	cfg := config{tokens: map[string]tokenInfo{}, clock: systemClock{}}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	if len(cfg.errs) > 0 {
		return nil, errors.New("apifytest: " + strings.Join(cfg.errs, "; "))
	}
	s := &Server{
		store:   newStore(cfg.clock),
		faults:  faults{calls: map[Operation]int{}, limited: map[Operation]int{}, faulted: map[Operation]int{}, pending: map[Operation][]pendingFault{}},
		tokens:  cfg.tokens,
		plain:   cfg.plain,
		limiter: rateLimiter{limits: DefaultRateLimits, tat: map[rateKey]time.Time{}},
		limits:  cfg.httpLimits.withDefaults(),
	}
	if cfg.rateLimits != nil {
		s.limiter.limits, s.limiter.on = *cfg.rateLimits, true
	}
	if s.plain == "" && len(cfg.tokens) > 0 { // Client needs a token: a user's, else a run's
		toks := slices.Sorted(maps.Keys(cfg.tokens))
		s.plain = toks[0]
		for _, tok := range toks {
			if cfg.tokens[tok].runID == "" {
				s.plain = tok
				break
			}
		}
	}
	var runIDs []string
	s.store.runs[DefaultRunID] = "" // the run the emulator always knows (see DefaultRunID)
	for _, ti := range cfg.tokens {
		if ti.runID != "" {
			runIDs = append(runIDs, ti.runID)
			s.store.runs[ti.runID] = "" // known; its default queue is made on first use
		}
	}
	s.platform.init(cfg.events, runIDs, s.store.now())
	s.handler = s.routes()
	for _, name := range cfg.queues {
		s.CreateQueue(name)
	}
	return s, nil
}

// HTTPLimits bound what clients can cost a listening emulator ([Server.Start]
// or [Server.HTTPServer]). Zero fields take the defaults.
type HTTPLimits struct {
	// ReadTimeout is how long a client may take to send one call, body
	// included (default 30 s); the headers alone get at most 10 s. A
	// client that sends its body a byte a second is cut off.
	ReadTimeout time.Duration
	// WriteTimeout is how long a client may take to read an answer
	// (default 30 s).
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next call before it is closed (default 60 s).
	IdleTimeout time.Duration
	// MaxConns is how many connections may be open at once (default 512);
	// a connection over the limit is closed as soon as it is accepted.
	MaxConns int
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 30 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 60 * time.Second
	}
	if l.MaxConns <= 0 {
		l.MaxConns = 512
	}
	return l
}

// WithHTTPLimits sets the limits of the emulator's listening servers.
func WithHTTPLimits(l HTTPLimits) Option {
	return func(c *config) {
		if l.ReadTimeout < 0 || l.WriteTimeout < 0 || l.IdleTimeout < 0 || l.MaxConns < 0 {
			c.errs = append(c.errs, fmt.Sprintf("WithHTTPLimits: a limit is negative in %+v; use 0 for the default", l))
			return
		}
		c.httpLimits = l
	}
}

// HTTPServer returns an http.Server that serves the emulator within its
// [HTTPLimits]: timeouts for slow and idle clients, and a cap on open
// connections. Its ErrorLog discards; set it to log the server's errors
// (and the connections refused over the cap) where you want them. Serve it
// on a listener of your choice; every HTTPServer of a Server shares its
// state and its cap.
func (s *Server) HTTPServer() *http.Server {
	l := s.limits
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: min(10*time.Second, l.ReadTimeout),
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			if n := s.conns.Add(1); n > int64(l.MaxConns) {
				srv.ErrorLog.Printf("closed a connection from %s: %d are open, the limit is %d", c.RemoteAddr(), n-1, l.MaxConns)
				_ = c.Close()
			}
		case http.StateClosed, http.StateHijacked:
			s.conns.Add(-1)
		}
	}
	return srv
}

// Start makes the server listen on a loopback port and sets URL. It panics
// when it cannot listen or was already started.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("apifytest: Start: the server was already started")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if ln, err = net.Listen("tcp6", "[::1]:0"); err != nil {
			panic("apifytest: cannot listen on a loopback port: " + err.Error())
		}
	}
	s.started = true
	s.URL = "http://" + ln.Addr().String()
	srv := s.HTTPServer()
	done := make(chan struct{})
	s.srv, s.done = srv, done
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// Close stops the server: it stops listening, drops the calls an injected
// Delay, Hang or ResponseDelay holds, waits (up to 5 seconds) for other
// calls in flight, and closes every connection, platform events connections
// included (with code 1001 going away, waiting for their handlers to end).
// It may be called more than once, and on a server never started (whose
// held calls it drops too); a server served by [Server.HTTPServer] should be
// closed too, after its http.Server, to end its events connections.
func (s *Server) Close() {
	s.faults.release() // calls held by a Delay, a Hang or a ResponseDelay end now
	defer s.platform.shutdown(true)
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
	<-done
}

// String describes the server by its URL and how many tokens it takes,
// never the tokens themselves.
func (s *Server) String() string {
	if s == nil {
		return "apifytest.Server(nil)"
	}
	s.mu.Lock()
	url := s.URL
	s.mu.Unlock()
	if url == "" {
		url = "not started"
	}
	return fmt.Sprintf("apifytest.Server{URL: %s, tokens: %d}", url, len(s.tokens))
}

// Format makes every fmt verb (%v, %+v, %#v, %s, ...) print
// [Server.String], so a test that logs the server cannot leak its tokens.
func (s *Server) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// GoString implements fmt.GoStringer like [Server.String].
func (s *Server) GoString() string { return s.String() }

// LogValue implements slog.LogValuer like [Server.String].
func (s *Server) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Handler returns the emulator's http.Handler, to serve it in memory or
// behind your own server. Every handler of a Server shares its state.
func (s *Server) Handler() http.Handler { return s.handler }

// Client returns an SDK client pointed at the server, with retry waits of 1
// to 20 ms suited to tests. When the server has tokens, it uses the first
// WithToken token, or else a WithUserToken token, or else a WithRunToken
// one (the first in byte order), so that it is never refused with 401.
// opts are applied after those, so they win. On a server that was not
// started, the client calls [Server.Handler] in memory, with no sockets
// (for testing/synctest). It panics when opts are invalid.
func (s *Server) Client(opts ...apify.Option) *apify.Client {
	s.mu.Lock()
	base := s.URL
	s.mu.Unlock()
	o := []apify.Option{apify.WithRetryWait(time.Millisecond, 20*time.Millisecond)}
	if base == "" {
		o = append(o, apify.WithBaseURL("http://apifytest.invalid"),
			apify.WithHTTPClient(&http.Client{Transport: memoryTransport{s.handler}}))
	} else {
		o = append(o, apify.WithBaseURL(base))
	}
	if s.plain != "" {
		o = append(o, apify.WithToken(s.plain))
	}
	c, err := apify.NewClient(append(o, opts...)...)
	if err != nil {
		panic("apifytest: Client: " + err.Error())
	}
	return c
}

// memoryTransport serves requests with a handler in memory.
type memoryTransport struct{ h http.Handler }

func (t memoryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	type result struct {
		rec   *httptest.ResponseRecorder
		panic any
	}
	// The handler runs on its own, so that a caller that gives up returns
	// at once, as over a network, while a call the server goes on with
	// (Fault.ServeAfterCallerGone) is still carried out.
	done := make(chan result, 1)
	go func() {
		rec := httptest.NewRecorder()
		defer func() {
			p := recover()
			if p == http.ErrAbortHandler {
				rec, p = nil, nil // the handler dropped the connection
			}
			done <- result{rec, p}
		}()
		t.h.ServeHTTP(rec, r)
	}()
	var res result
	select {
	case res = <-done:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	if res.panic != nil {
		panic(res.panic)
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	if res.rec == nil {
		return nil, io.ErrUnexpectedEOF
	}
	resp := res.rec.Result()
	resp.Request = r
	return resp, nil
}

// Request is a request to seed a queue with, for [Server.AddRequests]: the
// fields of the API's request, checked as the API checks an added one
// (except URL, UniqueKey and Method: see URL).
type Request struct {
	// URL is the request's url: required (AddRequests panics without one)
	// and otherwise not checked, nor are UniqueKey and Method, so that a
	// test may seed a request the API would refuse (one over
	// [MaxKeyBytes], say).
	URL string
	// UniqueKey defaults to URL.
	UniqueKey string
	// Method defaults to GET.
	Method string
	// UserData is the request's userData: a JSON object, such as
	// json.RawMessage(`{"depth":0}`), or nil for none.
	UserData json.RawMessage
	// Headers is a JSON object of HTTP headers; Payload a JSON string or
	// object; nil for none.
	Headers, Payload json.RawMessage
	// LoadedURL is the request's loadedUrl, the URL a crawler finally
	// loaded; "" for none.
	LoadedURL string
	// NoRetry is the request's noRetry: true seeds a request whose failed
	// attempts are not to be retried.
	NoRetry bool
	// RetryCount and ErrorMessages seed a request that has failed before:
	// RetryCount is its retryCount, 0 or more.
	RetryCount int
	// ErrorMessages is the request's errorMessages, the errors of its
	// failed attempts, oldest first; nil for none.
	ErrorMessages []string
	// HandledAt, when not zero, adds the request already handled.
	HandledAt time.Time
}

// RequestState is a snapshot of a request in a queue.
type RequestState struct {
	// ID, UniqueKey, URL and Method are the request's id, uniqueKey, url
	// and method, as stored: Method in upper case, GET when none was given.
	ID, UniqueKey, URL, Method string
	// RetryCount is the request's retryCount: how many times it has been
	// put back after a failed attempt, as the clients wrote it.
	RetryCount int
	// ErrorMessages are the errors recorded by failed attempts, as the
	// clients wrote them.
	ErrorMessages []string
	// UserData, Headers and Payload are the request's JSON, as stored
	// (compacted); nil when it has none.
	UserData, Headers, Payload json.RawMessage
	// LoadedURL is the request's loadedUrl, as the clients wrote it; ""
	// when it has none.
	LoadedURL string
	// NoRetry is the request's noRetry, as the clients wrote it; false
	// when it has none.
	NoRetry bool
	// HandledAt is when the request was handled; zero while it is not.
	HandledAt time.Time
	// Lock is the request's live lock; nil when it is not locked.
	Lock *LockState
}

// Handled reports whether the request was handled.
func (r RequestState) Handled() bool { return !r.HandledAt.IsZero() }

// LockState is a snapshot of a lock.
type LockState struct {
	// ClientKey and RunID say who holds the lock: the clientKey it was
	// taken with ("" for none) and the Actor run of the token that took it
	// ("" outside a run).
	ClientKey, RunID string
	// ExpiresAt is when the lock ends unless prolonged.
	ExpiresAt time.Time
	// Forefront says where the request goes when the lock expires: the
	// front of the queue (true) or the back.
	Forefront bool
}

func (v requestView) state() RequestState {
	st := RequestState{
		ID: v.ID, UniqueKey: v.uniqueKey, URL: v.url, Method: v.method,
		RetryCount: v.retryCount, HandledAt: v.handledAt,
		UserData: slices.Clone(v.extra["userData"]), Headers: slices.Clone(v.extra["headers"]), Payload: slices.Clone(v.extra["payload"]),
	}
	// The stored JSON was checked when it was added: these decode.
	_ = json.Unmarshal(v.extra["errorMessages"], &st.ErrorMessages)
	_ = json.Unmarshal(v.extra["loadedUrl"], &st.LoadedURL)
	_ = json.Unmarshal(v.extra["noRetry"], &st.NoRetry)
	if v.Lock != nil {
		l := LockState(*v.Lock)
		st.Lock = &l
	}
	return st
}

// CreateQueue returns the ID of the default user's queue with this name,
// creating the queue if needed; an empty name creates a new unnamed queue.
// It panics on an invalid name.
func (s *Server) CreateQueue(name string) string {
	info, _, err := s.store.createQueue(caller{user: DefaultUser, now: s.store.now()}, name)
	if err != nil {
		panic("apifytest: CreateQueue: " + err.Error())
	}
	return info.ID
}

// AddRequests adds requests to the back of the queue, skipping those whose
// uniqueKey is already there, and returns their IDs. It panics when there
// is no queue with that ID or a request has no URL.
func (s *Server) AddRequests(queueID string, reqs ...Request) []string {
	items := make([]requestData, len(reqs))
	for i, r := range reqs {
		if r.URL == "" {
			panic(fmt.Sprintf("apifytest: AddRequests: request %d has no URL", i))
		}
		d, err := r.data()
		if err != nil {
			panic(fmt.Sprintf("apifytest: AddRequests: request %d: %v", i, err))
		}
		items[i] = d
	}
	var out []addResult
	if !s.store.snapshot(queueID, func(q *queue, now time.Time) { out = s.store.add(q, items, false, now) }) {
		panic(fmt.Sprintf("apifytest: AddRequests: there is no queue with ID %q", queueID))
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.RequestID
	}
	return ids
}

// Requests returns every request of the queue, in the order they were
// added; nil when there is no such queue.
func (s *Server) Requests(queueID string) []RequestState {
	return s.collect(queueID, func(q *queue, out *[]RequestState) {
		for _, r := range q.order {
			if r != nil {
				*out = append(*out, r.view().state())
			}
		}
	})
}

// Request returns one request of the queue.
func (s *Server) Request(queueID, requestID string) (RequestState, bool) {
	var st RequestState
	found := false
	s.store.snapshot(queueID, func(q *queue, _ time.Time) {
		if r := q.reqs[requestID]; r != nil {
			st, found = r.view().state(), true
		}
	})
	return st, found
}

// Pending returns the requests that are neither locked nor handled, in the
// order GET head returns them.
func (s *Server) Pending(queueID string) []RequestState {
	return s.collect(queueID, func(q *queue, out *[]RequestState) {
		for e := q.pending.Front(); e != nil; e = e.Next() {
			*out = append(*out, e.Value.(*request).view().state())
		}
	})
}

// Locked returns the queue's locked requests, soonest expiry first.
func (s *Server) Locked(queueID string) []RequestState {
	return s.lockedWhere(queueID, func(*lock) bool { return true })
}

// LockedBy returns the requests locked with clientKey, soonest expiry first.
func (s *Server) LockedBy(queueID, clientKey string) []RequestState {
	return s.lockedWhere(queueID, func(l *lock) bool { return l.clientKey == clientKey })
}

// LockedByRun returns the requests locked from inside the Actor run runID,
// soonest expiry first.
func (s *Server) LockedByRun(queueID, runID string) []RequestState {
	return s.lockedWhere(queueID, func(l *lock) bool { return l.runID == runID })
}

// Handled returns the queue's handled requests, in the order they were added.
func (s *Server) Handled(queueID string) []RequestState {
	return s.collect(queueID, func(q *queue, out *[]RequestState) {
		for _, r := range q.order {
			if r != nil && r.handled() {
				*out = append(*out, r.view().state())
			}
		}
	})
}

func (s *Server) lockedWhere(queueID string, keep func(*lock) bool) []RequestState {
	return s.collect(queueID, func(q *queue, out *[]RequestState) {
		ls := make([]*lock, 0, len(q.locks))
		for _, l := range q.locks {
			if keep(l) {
				ls = append(ls, l)
			}
		}
		sortLocks(ls)
		for _, l := range ls {
			*out = append(*out, l.req.view().state())
		}
	})
}

func (s *Server) collect(queueID string, f func(q *queue, out *[]RequestState)) []RequestState {
	var out []RequestState
	if !s.store.snapshot(queueID, func(q *queue, _ time.Time) {
		out = []RequestState{}
		f(q, &out)
	}) {
		return nil
	}
	return out
}

// sortLocks orders locks by expiry, then by when they were taken.
func sortLocks(ls []*lock) {
	slices.SortFunc(ls, func(a, b *lock) int {
		if c := a.expiresAt.Compare(b.expiresAt); c != 0 {
			return c
		}
		return cmpUint(a.seq, b.seq)
	})
}

// data returns what the queue stores for r. Its JSON fields, retry count
// and error messages are checked as the API checks an added request (they
// go through the same parser); its URL, uniqueKey and method are taken as
// they are, so that a test may seed requests the API would refuse (a
// uniqueKey over MaxKeyBytes, say).
func (r Request) data() (requestData, error) {
	m := map[string]any{"url": "u", "uniqueKey": "u"}
	for name, raw := range map[string]json.RawMessage{"userData": r.UserData, "headers": r.Headers, "payload": r.Payload} {
		if raw == nil {
			continue
		}
		if !json.Valid(raw) {
			return requestData{}, fmt.Errorf("its %s is not valid JSON", name)
		}
		m[name] = raw
	}
	if r.LoadedURL != "" {
		m["loadedUrl"] = r.LoadedURL
	}
	if r.NoRetry {
		m["noRetry"] = true
	}
	if r.RetryCount != 0 {
		m["retryCount"] = r.RetryCount
	}
	if r.ErrorMessages != nil {
		m["errorMessages"] = r.ErrorMessages
	}
	if !r.HandledAt.IsZero() {
		m["handledAt"] = formatTime(r.HandledAt)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return requestData{}, err
	}
	d, _, err := parseRequest(raw, "The request")
	if err != nil {
		var e *apiError
		if errors.As(err, &e) {
			return requestData{}, errors.New(e.Message)
		}
		return requestData{}, err
	}
	d.url, d.uniqueKey, d.method = r.URL, r.UniqueKey, strings.ToUpper(r.Method)
	if d.uniqueKey == "" {
		d.uniqueKey = r.URL
	}
	if d.method == "" {
		d.method = http.MethodGet
	}
	return d, nil
}
