package apifytest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
)

// Limits of the API the emulator enforces (see the package documentation).
const (
	// MaxLockSecs is the longest lock, in seconds, that head/lock and
	// prolong accept: one day.
	MaxLockSecs = 24 * 60 * 60
	// MaxBatchSize is how many requests a batch add or delete takes.
	MaxBatchSize = 25
	// MaxClientKeyLength is the longest clientKey accepted, in characters.
	MaxClientKeyLength = 32
	// MaxKeyBytes is the longest uniqueKey, and the longest url, that a
	// request may have, in bytes.
	MaxKeyBytes = 16 << 10

	maxHeadLockLimit     = 25
	defaultHeadLockLimit = 25
	defaultHeadLimit     = 100
	maxHeadLimit         = 1000
	defaultListLimit     = 100
	maxListLimit         = 10000
	maxBodyBytes         = 9437184 // the spec's example of the API's body limit
)

// opFunc serves one operation for an authenticated caller.
type opFunc func(w http.ResponseWriter, r *http.Request, c caller) error

// routes returns the emulator's handler: every operation on its Go 1.22
// ServeMux pattern, behind a router that answers unknown paths and methods
// with the API's error envelope.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	const q = "/v2/request-queues/{queueId}"
	for _, rt := range []struct {
		pattern string
		op      Operation
		f       opFunc
	}{
		{"POST /v2/request-queues", OpGetOrCreateQueue, s.serveCreateQueue},
		{"GET /v2/request-queues", OpListQueues, s.serveListQueues},
		{"GET " + q, OpGetQueue, s.serveGetQueue},
		{"PUT " + q, OpUpdateQueue, s.serveUpdateQueue},
		{"DELETE " + q, OpDeleteQueue, s.serveDeleteQueue},
		{"GET " + q + "/requests", OpListRequests, s.serveListRequests},
		{"POST " + q + "/requests", OpAddRequest, s.serveAddRequest},
		{"POST " + q + "/requests/batch", OpBatchAddRequests, s.serveBatchAdd},
		{"DELETE " + q + "/requests/batch", OpBatchDeleteRequests, s.serveBatchDelete},
		{"POST " + q + "/requests/unlock", OpUnlockRequests, s.serveUnlock},
		{"GET " + q + "/requests/{requestId}", OpGetRequest, s.serveGetRequest},
		{"PUT " + q + "/requests/{requestId}", OpUpdateRequest, s.serveUpdateRequest},
		{"DELETE " + q + "/requests/{requestId}", OpDeleteRequest, s.serveDeleteRequest},
		{"PUT " + q + "/requests/{requestId}/lock", OpProlongRequestLock, s.serveProlongLock},
		{"DELETE " + q + "/requests/{requestId}/lock", OpDeleteRequestLock, s.serveDeleteLock},
		{"GET " + q + "/head", OpGetHead, s.serveHead},
		{"POST " + q + "/head/lock", OpListAndLockHead, s.serveListAndLockHead},
	} {
		mux.HandleFunc(rt.pattern, s.operation(rt.op, rt.f))
		// An Actor run's default queue: the same operations, below its path.
		if method, path, _ := strings.Cut(rt.pattern, " "); strings.HasPrefix(path, q) {
			mux.HandleFunc(method+" "+runQueuePrefix+strings.TrimPrefix(path, q), s.operation(rt.op, rt.f))
		}
	}
	s.platformRoutes(mux)
	mux.HandleFunc("GET "+LocksPath, s.serveLocks)
	return router{mux, strconv.Itoa(s.limiter.limits.Other)}
}

// operation wraps an opFunc: it sets X-RateLimit-Limit, counts the call,
// applies an injected fault if one is due, and serves the call (see serve).
func (s *Server) operation(op Operation, f opFunc) http.HandlerFunc {
	class := classOf(op)
	limit := strconv.Itoa(s.limiter.limits.of(class))
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Limit", limit)
		if fault, ok := s.faults.next(op, r.PathValue("requestId")); ok {
			s.faults.inject(w, r, op, fault, func(w http.ResponseWriter) { s.serve(w, r, op, class, f) })
			return
		}
		s.serve(w, r, op, class, f)
	}
}

// serve serves a call of op with f: it reads the clock (the call's only
// reading), authenticates the caller, applies the rate-limit model, and
// writes any error.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, op Operation, class rateClass, f opFunc) {
	now := s.store.now()
	c, err := s.authenticate(r)
	if err == nil {
		c.now = now
		if knownOperation(op) { // the request-queue operations, not the runs' own
			err = s.servedRunQueue(r, c)
		}
	}
	if err == nil {
		err = s.rateLimit(w, r, op, class, c)
	}
	if err == nil {
		err = f(w, r, c)
	}
	if err != nil {
		writeError(w, err)
	}
}

// rateLimit applies the rate-limit model, when it is on, to a call of op
// by c: calls on one queue share a budget per class; get-or-create, which
// names no queue, counts against the caller's user. Calls on a queue that
// does not exist are not limited (they get 404).
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request, op Operation, class rateClass, c caller) error {
	if !s.limiter.on {
		return nil
	}
	key := "user " + c.user
	if op != OpGetOrCreateQueue {
		if key = s.store.queueID(c, r.PathValue("queueId")); key == "" {
			return nil
		}
	}
	ok, wait := s.limiter.allow(key, class, c.now)
	if ok {
		return nil
	}
	s.faults.countLimited(op)
	w.Header().Set("Retry-After", retryAfter(wait))
	return errRateLimited(class, s.limiter.limits.of(class))
}

// router applies the API's method override (?method=POST), serves routed
// calls with the mux, and answers the rest: OPTIONS with the allowed
// methods, a known path with a wrong method with 405 method-not-allowed, and
// anything else with 404 page-not-found.
type router struct {
	mux        *http.ServeMux
	otherLimit string // X-RateLimit-Limit of calls outside any operation
}

func (rt router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-RateLimit-Limit", rt.otherLimit)
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, errInvalidInput("The query string cannot be parsed: each parameter must be name=value, "+
			"separated by '&' (not ';'), with '%%' only as in %%2F"))
		return
	}
	for name, vals := range query {
		if len(vals) > 1 {
			writeError(w, errInvalidInput("Query parameter %q is given %d times; give each parameter at most once", clip(name), len(vals)))
			return
		}
	}
	overridden := false
	if m := query.Get("method"); m != "" {
		r = r.Clone(r.Context())
		r.Method, overridden = strings.ToUpper(m), r.Method != strings.ToUpper(m)
	}
	if why := crossSite(r, overridden); why != "" {
		writeError(w, errInsufficientPermissions("Refused a %s from a web page of another site (%s): a browser must not change the emulator's state; "+
			"call it from a program, which sends no Origin or Sec-Fetch-Site", r.Method, why))
		return
	}
	if host := rebound(r, overridden); host != "" {
		writeError(w, errInsufficientPermissions("Refused a %s from a web page under the host name %q, which may have been re-pointed at this machine "+
			"(DNS rebinding): from a browser, call the emulator at an IP address or localhost; a program, which sends no Origin or "+
			"Sec-Fetch-Site, may use any host name", r.Method, host))
		return
	}
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status != http.StatusMethodNotAllowed {
		writeError(w, newAPIError(http.StatusNotFound, "page-not-found",
			"There is no API endpoint at %s %s; the emulator serves the request-queue API under /v2/request-queues "+
				"and /v2/actor-runs/{runId}/request-queue",
			r.Method, r.URL.EscapedPath()))
		return
	}
	allowed := []string{http.MethodOptions}
	for _, m := range strings.Split(probe.header.Get("Allow"), ",") {
		if m = strings.TrimSpace(m); m != "" && m != http.MethodHead && m != http.MethodOptions {
			allowed = append(allowed, m)
		}
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, newAPIError(http.StatusMethodNotAllowed, "method-not-allowed",
		"This API end-point can only be accessed using the following HTTP methods: %s", strings.Join(allowed, ",")))
}

// crossSite says why a state-changing call looks like one a web page of
// another site made the browser send, or "" when it does not: the browser's
// Sec-Fetch-Site is cross-site or same-site, or its Origin (or, for a GET
// turned into another method by ?method=, its Referer) is not this server.
// Programs send none of these headers. Reading calls are not checked: the
// emulator sends no CORS headers, so another site cannot read the answers.
func crossSite(r *http.Request, overridden bool) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return ""
	}
	switch site := strings.ToLower(r.Header.Get("Sec-Fetch-Site")); site {
	case "", "same-origin", "none":
	default:
		return "Sec-Fetch-Site: " + clip(site)
	}
	foreign := func(header string) string {
		v := r.Header.Get(header)
		if v == "" {
			return ""
		}
		if u, err := url.Parse(v); err != nil || !strings.EqualFold(u.Host, r.Host) {
			host := "an unparsable URL"
			if err == nil && u.Host != "" {
				host = clip(u.Host) // never the whole URL: its query may hold a token
			} else if v == "null" {
				host = "null"
			}
			return header + " from " + host
		}
		return ""
	}
	if why := foreign("Origin"); why != "" {
		return why
	}
	if !overridden {
		return ""
	}
	if why := foreign("Referer"); why != "" {
		return why
	}
	// Browsers send no Sec-Fetch-* to a plain-http address that is not
	// loopback, and an img tag can drop its Referer: a browser's GET that
	// ?method= turns into a change, with neither, is refused (one typed into
	// the address bar says Sec-Fetch-Site: none, where browsers send it).
	if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Referer") == "" &&
		strings.HasPrefix(r.Header.Get("User-Agent"), "Mozilla/") {
		return "a browser's GET with ?method=, without Sec-Fetch-Site or Referer"
	}
	return ""
}

// rebound returns the host name of a call that a web page made the browser
// send to a Host that is a DNS name, neither an IP address nor localhost, or
// "" for any other call. Such a page may be the attacker's, its name
// re-pointed at this machine after it loaded (DNS rebinding): to the
// browser it is then same-origin with the emulator, so crossSite lets it
// through. The signs of a page are an Origin, a Sec-Fetch-Site of
// same-origin or same-site, and, for a GET turned into another method by
// ?method=, a Referer. (Browsers send no Sec-Fetch-* to a plain-http DNS
// name, and an img tag can drop its Referer: crossSite refuses a browser's
// ?method= GET that has neither.) Programs send none of these, so they may
// call the emulator by any name (a docker compose service, say); a URL
// typed into the browser is served too.
func rebound(r *http.Request, overridden bool) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") || net.ParseIP(host) != nil {
		return ""
	}
	switch strings.ToLower(r.Header.Get("Sec-Fetch-Site")) {
	case "same-origin", "same-site":
		return clip(host)
	}
	if r.Header.Get("Origin") != "" || overridden && r.Header.Get("Referer") != "" {
		return clip(host)
	}
	return ""
}

// clip shortens a client's string for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// probeWriter records what the mux's fallback handler would answer.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// authenticate finds who calls. Without configured tokens everybody is the
// default user; with them, a valid token is required.
func (s *Server) authenticate(r *http.Request) (caller, error) {
	if len(s.tokens) == 0 {
		return caller{user: DefaultUser}, nil
	}
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return caller{}, newAPIError(http.StatusUnauthorized, "invalid-token",
				"Authentication token is not valid: the Authorization header must be \"Bearer <token>\"")
		}
		tok = strings.TrimSpace(rest)
	}
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		return caller{}, newAPIError(http.StatusUnauthorized, "token-not-provided", "Authentication token was not provided")
	}
	ti, ok := s.tokens[tok]
	if !ok {
		return caller{}, newAPIError(http.StatusUnauthorized, "invalid-token", "Authentication token is not valid")
	}
	return caller{user: ti.user, runID: ti.runID}, nil
}

// withClientKey reads the clientKey query parameter into c: 1 to 32
// characters; an empty one counts as none.
func withClientKey(r *http.Request, c caller) (caller, error) {
	key := r.URL.Query().Get("clientKey")
	switch n := utf8.RuneCountInString(key); {
	case !utf8.ValidString(key):
		return c, newAPIError(http.StatusBadRequest, "invalid-client-key", "clientKey is not valid UTF-8")
	case n > MaxClientKeyLength:
		return c, newAPIError(http.StatusBadRequest, "invalid-client-key",
			"clientKey must be 1 to %d characters long; it has %d", MaxClientKeyLength, n)
	}
	for _, ch := range key {
		if unicode.IsControl(ch) {
			return c, newAPIError(http.StatusBadRequest, "invalid-client-key", "clientKey must not contain control characters")
		}
	}
	c.clientKey = key
	return c, nil
}

// wholeParam parses an optional whole-number query parameter ("25" or
// "25.0", as the spec types it a number) within [lo, hi]; with clamp, a
// value above hi becomes hi.
func wholeParam(r *http.Request, name string, def, lo, hi int, clamp bool) (int, error) {
	raw, ok := r.URL.Query()[name]
	if !ok || raw[0] == "" {
		return def, nil
	}
	v, err := strconv.ParseFloat(raw[0], 64)
	switch {
	case err != nil || math.IsNaN(v) || math.IsInf(v, 0):
		return 0, errInvalidInput("Query parameter %q must be a number; got %q", name, clip(raw[0]))
	case !wholeNumber.MatchString(raw[0]):
		return 0, errInvalidInput("Query parameter %q must be a whole number in decimal digits, such as 25; got %q", name, clip(raw[0]))
	case v < float64(lo):
		return 0, errInvalidInput("Query parameter %q must be at least %d; got %q", name, lo, raw[0])
	case v > float64(hi) && clamp:
		return hi, nil
	case v > float64(hi):
		return 0, errInvalidInput("Query parameter %q must be at most %d; got %q", name, hi, raw[0])
	}
	return int(v), nil
}

// wholeNumber is how a whole-number query parameter may be written: decimal
// digits, optionally signed, optionally with a zero fraction ("60.0").
var wholeNumber = regexp.MustCompile(`^[-+]?[0-9]{1,15}(\.0+)?$`)

// lockSecsParam parses the required lockSecs.
func lockSecsParam(r *http.Request) (int, error) {
	if r.URL.Query().Get("lockSecs") == "" {
		return 0, errInvalidInput("Query parameter \"lockSecs\" is required: how many seconds to lock for, 1 to %d", MaxLockSecs)
	}
	return wholeParam(r, "lockSecs", 0, 1, MaxLockSecs, false)
}

// boolParam parses an optional boolean query parameter such as forefront.
func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); strings.ToLower(v) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, errInvalidInput("Query parameter %q must be \"true\" or \"false\"; got %q", name, v)
	}
}

// readJSONBody reads a request body that must be JSON: Content-Type
// application/json, at most maxBodyBytes both on the wire and decoded, in
// the content codings of decodeBody.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		if ct == "" {
			ct = "none"
		}
		return nil, newAPIError(http.StatusBadRequest, "invalid-content-type-header",
			"The request has a JSON body, so its Content-Type header must be \"application/json\"; got %s", strconv.Quote(ct))
	}
	body, err := decodeBody(http.MaxBytesReader(w, r.Body, maxBodyBytes), r.Header.Values("Content-Encoding"))
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, newAPIError(http.StatusRequestEntityTooLarge, "request-too-large",
			"The request body is too large (limit: %d bytes, as sent).", maxBodyBytes)
	case len(data) > maxBodyBytes:
		return nil, newAPIError(http.StatusRequestEntityTooLarge, "request-too-large",
			"The request body is too large (limit: %d bytes, once decoded).", maxBodyBytes)
	case err != nil:
		return nil, errInvalidInput("The request body could not be read or decoded (Content-Encoding %q): %v",
			strings.Join(r.Header.Values("Content-Encoding"), ", "), err)
	case len(bytes.TrimSpace(data)) == 0:
		return nil, errInvalidInput("The request body is empty; it must be JSON")
	}
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, errInvalidInput("The request body is not valid JSON: %s", jsonErrorText(err))
	}
	return data, nil
}

// maxCodings is how many content codings other than identity one body may
// have.
const maxCodings = 3

// decodeBody undoes the content codings of a body, as listed by its
// Content-Encoding headers: br, gzip (or x-gzip), deflate (zlib, as HTTP
// defines it) and identity, comma-separated and in the order they were
// applied, so the last is undone first. Decoding streams: it reads as the
// caller reads, so the caller's limit bounds the work and the memory.
func decodeBody(body io.Reader, headers []string) (io.Reader, error) {
	var codings []string
	for _, h := range headers {
		for _, c := range strings.Split(h, ",") {
			switch c = strings.ToLower(strings.TrimSpace(c)); c {
			case "", "identity":
			case "br", "gzip", "x-gzip", "deflate":
				codings = append(codings, c)
			default:
				return nil, newAPIError(http.StatusUnsupportedMediaType, "unsupported-content-encoding",
					"Content-Encoding %q is not supported; use br, gzip, deflate or identity.", c)
			}
		}
	}
	if len(codings) > maxCodings {
		return nil, newAPIError(http.StatusUnsupportedMediaType, "unsupported-content-encoding",
			"Content-Encoding lists %d codings; at most %d are supported on one body.", len(codings), maxCodings)
	}
	for i := len(codings) - 1; i >= 0; i-- {
		var err error
		switch codings[i] {
		case "br":
			body = brotli.NewReader(body)
		case "gzip", "x-gzip":
			body, err = gzip.NewReader(body)
		case "deflate":
			body, err = zlib.NewReader(body)
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, newAPIError(http.StatusRequestEntityTooLarge, "request-too-large",
				"The request body is too large (limit: %d bytes, as sent).", maxBodyBytes)
		}
		if err != nil {
			return nil, errInvalidInput("The %s-encoded request body is corrupt: %v", codings[i], err)
		}
	}
	return body, nil
}

func jsonErrorText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	return err.Error()
}

// jsonKind names the JSON type of a raw value.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true,
}

// parseRequest checks one request object against the spec's
// RequestWithoutId and returns its content and its "id" field, if any.
// Fields outside RequestBase are dropped; null fields count as absent.
func parseRequest(raw json.RawMessage, where string) (requestData, string, error) {
	if k := jsonKind(raw); k != "object" {
		return requestData{}, "", errInvalidInput("%s must be a JSON object; got %s", where, aOrAn(k))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return requestData{}, "", errInvalidInput("%s is not valid JSON: %s", where, jsonErrorText(err))
	}
	for k, v := range m {
		if jsonKind(v) == "null" {
			delete(m, k)
		}
	}
	str := func(name string) (string, bool, error) {
		v, ok := m[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if jsonKind(v) != "string" || json.Unmarshal(v, &s) != nil {
			return "", true, errInvalidInput("%s: field %q must be a string; got %s", where, name, aOrAn(jsonKind(v)))
		}
		return s, true, nil
	}
	d := requestData{method: http.MethodGet}
	var err error
	var ok bool
	if d.uniqueKey, ok, err = str("uniqueKey"); err != nil {
		return d, "", err
	} else if !ok || d.uniqueKey == "" {
		return d, "", errInvalidInput("%s: field \"uniqueKey\" is required and must not be empty (the request's ID is derived from it)", where)
	}
	if d.url, ok, err = str("url"); err != nil {
		return d, "", err
	} else if !ok || d.url == "" {
		return d, "", errInvalidInput("%s: field \"url\" is required and must not be empty", where)
	}
	for _, f := range []struct{ name, v string }{{"uniqueKey", d.uniqueKey}, {"url", d.url}} {
		if len(f.v) > MaxKeyBytes {
			return d, "", errInvalidInput("%s: field %q has %d bytes; at most %d are stored", where, f.name, len(f.v), MaxKeyBytes)
		}
	}
	if meth, ok, err := str("method"); err != nil {
		return d, "", err
	} else if ok {
		if !httpMethods[meth] {
			return d, "", errInvalidInput("%s: field \"method\" must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH; got %q", where, meth)
		}
		d.method = meth
	}
	if v, ok := m["retryCount"]; ok {
		var n int
		if jsonKind(v) != "number" || json.Unmarshal(v, &n) != nil || n < 0 {
			return d, "", errInvalidInput("%s: field \"retryCount\" must be a whole number, 0 or more; got %s", where, v)
		}
		d.retryCount = n
	}
	if s, ok, err := str("handledAt"); err != nil {
		return d, "", err
	} else if ok {
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			return d, "", errInvalidInput("%s: field \"handledAt\" must be an RFC 3339 date-time such as \"2024-05-01T12:00:00.000Z\", or null; got %q", where, s)
		}
		d.handledAt = t.UTC().Truncate(time.Millisecond)
		if d.handledAt.IsZero() {
			d.handledAt = time.Unix(0, 0).UTC() // the zero time means "not handled"
		}
	}
	if _, ok, err := str("loadedUrl"); err != nil {
		return d, "", err
	} else if ok {
		d.setExtra("loadedUrl", m["loadedUrl"])
	}
	for _, f := range []struct {
		name, kinds, want string
	}{
		{"payload", "string object", "a string or an object"},
		{"headers", "object", "an object"},
		{"userData", "object", "an object"},
		{"noRetry", "boolean", "a boolean"},
		{"errorMessages", "array", "an array of strings"},
	} {
		v, ok := m[f.name]
		if !ok {
			continue
		}
		if k := jsonKind(v); !strings.Contains(f.kinds, k) {
			return d, "", errInvalidInput("%s: field %q must be %s, or null; got %s", where, f.name, f.want, aOrAn(k))
		}
		if f.name == "errorMessages" {
			var msgs []string
			if json.Unmarshal(v, &msgs) != nil {
				return d, "", errInvalidInput("%s: field \"errorMessages\" must be an array of strings", where)
			}
		}
		d.setExtra(f.name, v)
	}
	id, _, err := str("id")
	if err != nil {
		return d, "", err
	}
	return d, id, nil
}

func (d *requestData) setExtra(name string, v json.RawMessage) {
	if d.extra == nil {
		d.extra = map[string]json.RawMessage{}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) == nil {
		v = buf.Bytes()
	}
	d.extra[name] = v
}

func aOrAn(kind string) string {
	switch kind {
	case "object", "array":
		return "an " + kind
	case "null", "nothing":
		return kind
	}
	return "a " + kind
}

// Response bodies.

type envelope struct {
	Data any `json:"data"`
}

type errorBody struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"type":"internal-server-error","message":"apifytest could not encode its response"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeData(w http.ResponseWriter, status int, data any) { writeJSON(w, status, envelope{data}) }

func writeError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = newAPIError(http.StatusInternalServerError, "internal-server-error", "%v", err)
	}
	var body errorBody
	body.Error.Type, body.Error.Message = e.Type, e.Message
	writeJSON(w, e.Status, body)
}

type queueJSON struct {
	ID                  string  `json:"id"`
	Name                *string `json:"name"`
	UserID              string  `json:"userId"`
	CreatedAt           string  `json:"createdAt"`
	ModifiedAt          string  `json:"modifiedAt"`
	AccessedAt          string  `json:"accessedAt"`
	TotalRequestCount   int     `json:"totalRequestCount"`
	HandledRequestCount int     `json:"handledRequestCount"`
	PendingRequestCount int     `json:"pendingRequestCount"`
	HadMultipleClients  bool    `json:"hadMultipleClients"`
	ConsoleURL          string  `json:"consoleUrl"`
	GeneralAccess       string  `json:"generalAccess"`
}

func queueBody(r *http.Request, q queueInfo) queueJSON {
	out := queueJSON{
		ID: q.ID, UserID: q.UserID,
		CreatedAt: formatTime(q.CreatedAt), ModifiedAt: formatTime(q.ModifiedAt), AccessedAt: formatTime(q.AccessedAt),
		TotalRequestCount: q.Total, HandledRequestCount: q.Handled, PendingRequestCount: q.Total - q.Handled,
		HadMultipleClients: q.HadMultipleClients, GeneralAccess: q.GeneralAccess,
		ConsoleURL: baseURL(r) + "/v2/request-queues/" + q.ID,
	}
	if q.Name != "" {
		out.Name = &q.Name
	}
	return out
}

// baseURL is this server's address as the caller reached it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// requestJSON is a full Request object: its fixed fields, then the other
// RequestBase fields as the client sent them, then handledAt.
type requestJSON requestView

func (v requestJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	field := func(name string, val any) {
		if b.Len() > 0 {
			b.WriteByte(',')
		} else {
			b.WriteByte('{')
		}
		k, _ := json.Marshal(name)
		b.Write(k)
		b.WriteByte(':')
		if raw, ok := val.(json.RawMessage); ok {
			b.Write(raw)
			return
		}
		j, _ := json.Marshal(val)
		b.Write(j)
	}
	field("id", v.ID)
	field("uniqueKey", v.uniqueKey)
	field("url", v.url)
	field("method", v.method)
	field("retryCount", v.retryCount)
	for _, name := range extraFields {
		if raw, ok := v.extra[name]; ok {
			field(name, raw)
		}
	}
	if !v.handledAt.IsZero() {
		field("handledAt", formatTime(v.handledAt))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type headItemJSON struct {
	ID            string `json:"id"`
	UniqueKey     string `json:"uniqueKey"`
	URL           string `json:"url"`
	Method        string `json:"method"`
	RetryCount    int    `json:"retryCount"`
	LockExpiresAt string `json:"lockExpiresAt,omitempty"`
}

func headItems(views []requestView, locked bool) []headItemJSON {
	out := make([]headItemJSON, len(views))
	for i, v := range views {
		out[i] = headItemJSON{ID: v.ID, UniqueKey: v.uniqueKey, URL: v.url, Method: v.method, RetryCount: v.retryCount}
		if locked && v.Lock != nil {
			out[i].LockExpiresAt = formatTime(v.Lock.ExpiresAt)
		}
	}
	return out
}

type registrationJSON struct {
	RequestID         string `json:"requestId"`
	WasAlreadyPresent bool   `json:"wasAlreadyPresent"`
	WasAlreadyHandled bool   `json:"wasAlreadyHandled"`
}

type addedJSON struct {
	RequestID         string `json:"requestId"`
	UniqueKey         string `json:"uniqueKey"`
	WasAlreadyPresent bool   `json:"wasAlreadyPresent"`
	WasAlreadyHandled bool   `json:"wasAlreadyHandled"`
}

type draftJSON struct {
	ID        string `json:"id,omitempty"`
	UniqueKey string `json:"uniqueKey"`
	URL       string `json:"url"`
	Method    string `json:"method,omitempty"`
}

type deletedJSON struct {
	ID        string `json:"id"`
	UniqueKey string `json:"uniqueKey,omitempty"`
}

// The operations.

func (s *Server) serveCreateQueue(w http.ResponseWriter, r *http.Request, c caller) error {
	info, created, err := s.store.createQueue(c, r.URL.Query().Get("name"))
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", baseURL(r)+"/v2/request-queues/"+info.ID)
	}
	writeData(w, status, queueBody(r, info))
	return nil
}

func (s *Server) serveGetQueue(w http.ResponseWriter, r *http.Request, c caller) error {
	info, err := s.store.getQueue(c, r.PathValue("queueId"))
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, queueBody(r, info))
	return nil
}

var generalAccessValues = map[string]bool{
	"ANYONE_WITH_ID_CAN_READ": true, "ANYONE_WITH_NAME_CAN_READ": true, "FOLLOW_USER_SETTING": true, "RESTRICTED": true,
}

func (s *Server) serveUpdateQueue(w http.ResponseWriter, r *http.Request, c caller) error {
	body, err := readJSONBody(w, r)
	if err != nil {
		return err
	}
	if k := jsonKind(body); k != "object" {
		return errInvalidInput("The request body must be a JSON object such as {\"name\":\"new-name\"}; got %s", aOrAn(k))
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	var name *string
	if v, ok := m["name"]; ok {
		var n string
		switch jsonKind(v) {
		case "null":
		case "string":
			_ = json.Unmarshal(v, &n)
		default:
			return errInvalidInput("Field \"name\" must be a string or null; got %s", aOrAn(jsonKind(v)))
		}
		name = &n
	}
	access := ""
	if v, ok := m["generalAccess"]; ok {
		if json.Unmarshal(v, &access) != nil || !generalAccessValues[access] {
			return errInvalidInput("Field \"generalAccess\" must be one of ANYONE_WITH_ID_CAN_READ, ANYONE_WITH_NAME_CAN_READ, FOLLOW_USER_SETTING, RESTRICTED; got %s", v)
		}
	}
	info, err := s.store.updateQueue(c, r.PathValue("queueId"), name, access)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, queueBody(r, info))
	return nil
}

func (s *Server) serveDeleteQueue(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := s.store.deleteQueue(c, r.PathValue("queueId"))
	if err != nil {
		return err
	}
	s.limiter.forget(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listCursor is the opaque pagination cursor: a position in the queue's
// insertion order.
type listCursor struct {
	Position int `json:"position"`
}

func (s *Server) serveListRequests(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	limit, err := wholeParam(r, "limit", defaultListLimit, 1, maxListLimit, true)
	if err != nil {
		return err
	}
	query := r.URL.Query()
	cursor, startID := query.Get("cursor"), query.Get("exclusiveStartId")
	var f listFilter
	if raw := query.Get("filter"); raw != "" {
		if startID != "" {
			return errInvalidInput("Query parameter \"filter\" cannot be combined with the deprecated \"exclusiveStartId\"; use \"cursor\"")
		}
		for _, v := range strings.Split(raw, ",") {
			switch strings.TrimSpace(v) {
			case "locked":
				f.locked = true
			case "pending":
				f.pending = true
			default:
				return errInvalidInput("Query parameter \"filter\" takes \"locked\", \"pending\" or both, comma-separated; got %q", v)
			}
		}
	}
	if cursor != "" && startID != "" {
		return errInvalidInput("Use either \"cursor\" or the deprecated \"exclusiveStartId\", not both")
	}
	start := 0
	if cursor != "" {
		var lc listCursor
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || json.Unmarshal(raw, &lc) != nil || lc.Position < 0 {
			return errInvalidInput("Query parameter \"cursor\" %q is not a cursor this server returned (use a nextCursor)", cursor)
		}
		start = lc.Position
	}
	items, next, err := s.store.listRequests(c, r.PathValue("queueId"), limit, start, startID, f)
	if err != nil {
		return err
	}
	type listJSON struct {
		Items            []requestJSON `json:"items"`
		Limit            int           `json:"limit"`
		ExclusiveStartID string        `json:"exclusiveStartId,omitempty"`
		Cursor           string        `json:"cursor,omitempty"`
		NextCursor       string        `json:"nextCursor,omitempty"`
	}
	out := listJSON{Items: make([]requestJSON, len(items)), Limit: limit, ExclusiveStartID: startID, Cursor: cursor}
	for i, v := range items {
		out.Items[i] = requestJSON(v)
	}
	if next >= 0 {
		b, _ := json.Marshal(listCursor{Position: next})
		out.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	writeData(w, http.StatusOK, out)
	return nil
}

// readRequestBody reads the one request that the body of an add or an
// update holds, and the "id" it may carry.
func readRequestBody(w http.ResponseWriter, r *http.Request) (requestData, string, error) {
	body, err := readJSONBody(w, r)
	if err != nil {
		return requestData{}, "", err
	}
	return parseRequest(body, "The request")
}

func (s *Server) serveAddRequest(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	forefront, err := boolParam(r, "forefront")
	if err != nil {
		return err
	}
	d, id, err := readRequestBody(w, r)
	if err != nil {
		return err
	}
	if id != "" {
		return errInvalidInput("The request must not have an \"id\": the queue derives it from uniqueKey")
	}
	res, err := s.store.addRequests(c, r.PathValue("queueId"), []requestData{d}, forefront)
	if err != nil {
		return err
	}
	writeData(w, http.StatusCreated, registrationJSON{res[0].RequestID, res[0].WasAlreadyPresent, res[0].WasAlreadyHandled})
	return nil
}

// batchBody reads a batch body: a JSON array of 0 to MaxBatchSize items.
func batchBody(w http.ResponseWriter, r *http.Request) ([]json.RawMessage, error) {
	body, err := readJSONBody(w, r)
	if err != nil {
		return nil, err
	}
	if k := jsonKind(body); k != "array" {
		return nil, errInvalidInput("The request body must be a JSON array of requests; got %s", aOrAn(k))
	}
	var items []json.RawMessage
	_ = json.Unmarshal(body, &items)
	if len(items) > MaxBatchSize {
		return nil, errInvalidInput("The batch has %d requests; a batch takes at most %d", len(items), MaxBatchSize)
	}
	return items, nil
}

func (s *Server) serveBatchAdd(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	forefront, err := boolParam(r, "forefront")
	if err != nil {
		return err
	}
	raws, err := batchBody(w, r)
	if err != nil {
		return err
	}
	items := make([]requestData, len(raws))
	for i, raw := range raws {
		d, id, err := parseRequest(raw, fmt.Sprintf("Request at index %d", i))
		if err != nil {
			return err
		}
		if id != "" {
			return errInvalidInput("Request at index %d must not have an \"id\": the queue derives it from uniqueKey", i)
		}
		items[i] = d
	}
	res, err := s.store.addRequests(c, r.PathValue("queueId"), items, forefront)
	if err != nil {
		return err
	}
	out := struct {
		Processed   []addedJSON `json:"processedRequests"`
		Unprocessed []draftJSON `json:"unprocessedRequests"`
	}{Processed: make([]addedJSON, len(res)), Unprocessed: []draftJSON{}}
	for i, a := range res {
		out.Processed[i] = addedJSON(a)
	}
	writeData(w, http.StatusCreated, out)
	return nil
}

func (s *Server) serveBatchDelete(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	raws, err := batchBody(w, r)
	if err != nil {
		return err
	}
	items := make([]deleteItem, len(raws))
	for i, raw := range raws {
		var it struct {
			ID        *string `json:"id"`
			UniqueKey *string `json:"uniqueKey"`
		}
		if jsonKind(raw) != "object" || json.Unmarshal(raw, &it) != nil {
			return errInvalidInput("Request at index %d must be an object with a string \"id\" or \"uniqueKey\"", i)
		}
		if it.ID != nil {
			items[i].ID = *it.ID
		}
		if it.UniqueKey != nil {
			items[i].UniqueKey = *it.UniqueKey
		}
		if items[i].ID == "" && items[i].UniqueKey == "" {
			return errInvalidInput("Request at index %d needs an \"id\" or a \"uniqueKey\"", i)
		}
	}
	done, skipped, err := s.store.batchDelete(c, r.PathValue("queueId"), items)
	if err != nil {
		return err
	}
	out := struct {
		Processed   []deletedJSON `json:"processedRequests"`
		Unprocessed []draftJSON   `json:"unprocessedRequests"`
	}{Processed: make([]deletedJSON, len(done)), Unprocessed: make([]draftJSON, len(skipped))}
	for i, d := range done {
		out.Processed[i] = deletedJSON(d)
	}
	for i, v := range skipped {
		out.Unprocessed[i] = draftJSON{ID: v.ID, UniqueKey: v.uniqueKey, URL: v.url, Method: v.method}
	}
	writeData(w, http.StatusOK, out)
	return nil
}

func (s *Server) serveUnlock(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	n, err := s.store.unlock(c, r.PathValue("queueId"))
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, struct {
		UnlockedCount int `json:"unlockedCount"`
	}{n})
	return nil
}

func (s *Server) serveGetRequest(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := s.store.getRequest(c, r.PathValue("queueId"), r.PathValue("requestId"))
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, requestJSON(v))
	return nil
}

func (s *Server) serveUpdateRequest(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	forefront, err := boolParam(r, "forefront")
	if err != nil {
		return err
	}
	d, id, err := readRequestBody(w, r)
	if err != nil {
		return err
	}
	pathID := r.PathValue("requestId")
	if id != "" && id != pathID {
		return newAPIError(http.StatusBadRequest, "id-does-not-match",
			"The body's \"id\" %q does not match the request ID %q in the URL", id, pathID)
	}
	res, err := s.store.updateRequest(c, r.PathValue("queueId"), pathID, d, forefront)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, registrationJSON{res.RequestID, res.WasAlreadyPresent, res.WasAlreadyHandled})
	return nil
}

func (s *Server) serveDeleteRequest(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	if err := s.store.deleteRequest(c, r.PathValue("queueId"), r.PathValue("requestId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) serveProlongLock(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	secs, err := lockSecsParam(r)
	if err != nil {
		return err
	}
	forefront, err := boolParam(r, "forefront")
	if err != nil {
		return err
	}
	exp, err := s.store.prolong(c, r.PathValue("queueId"), r.PathValue("requestId"), time.Duration(secs)*time.Second, forefront)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, struct {
		LockExpiresAt string `json:"lockExpiresAt"`
	}{formatTime(exp)})
	return nil
}

func (s *Server) serveDeleteLock(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	forefront, err := boolParam(r, "forefront")
	if err != nil {
		return err
	}
	if err := s.store.deleteLock(c, r.PathValue("queueId"), r.PathValue("requestId"), forefront); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) serveHead(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	limit, err := wholeParam(r, "limit", defaultHeadLimit, 1, maxHeadLimit, true)
	if err != nil {
		return err
	}
	res, err := s.store.head(c, r.PathValue("queueId"), limit)
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, struct {
		Limit              int            `json:"limit"`
		QueueModifiedAt    string         `json:"queueModifiedAt"`
		HadMultipleClients bool           `json:"hadMultipleClients"`
		Items              []headItemJSON `json:"items"`
	}{limit, formatTime(res.QueueModifiedAt), res.HadMultipleClients, headItems(res.Items, false)})
	return nil
}

func (s *Server) serveListAndLockHead(w http.ResponseWriter, r *http.Request, c caller) error {
	c, err := withClientKey(r, c)
	if err != nil {
		return err
	}
	secs, err := lockSecsParam(r)
	if err != nil {
		return err
	}
	limit, err := wholeParam(r, "limit", defaultHeadLockLimit, 1, maxHeadLockLimit, false)
	if err != nil {
		return err
	}
	res, err := s.store.listAndLockHead(c, r.PathValue("queueId"), limit, time.Duration(secs)*time.Second)
	if err != nil {
		return err
	}
	writeData(w, http.StatusCreated, struct {
		Limit                  int            `json:"limit"`
		QueueModifiedAt        string         `json:"queueModifiedAt"`
		HadMultipleClients     bool           `json:"hadMultipleClients"`
		LockSecs               int            `json:"lockSecs"`
		QueueHasLockedRequests bool           `json:"queueHasLockedRequests"`
		ClientKey              string         `json:"clientKey,omitempty"`
		Items                  []headItemJSON `json:"items"`
	}{limit, formatTime(res.QueueModifiedAt), res.HadMultipleClients, secs, res.QueueHasLocked, c.clientKey, headItems(res.Items, true)})
	return nil
}
