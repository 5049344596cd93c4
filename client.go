package apify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-retryablehttp"
)

// Version is the version of this module, sent in the User-Agent header.
const Version = "0.2.0"

// DefaultBaseURL is the Apify API's address, used when no base URL is given.
const DefaultBaseURL = "https://api.apify.com"

// Defaults of a [Client]; each has an [Option] that changes it.
const (
	// DefaultMaxRetries is how many times a failed call is retried (so 5 attempts in all).
	DefaultMaxRetries = 4
	// DefaultRetryWaitMin is the shortest wait before a retry.
	DefaultRetryWaitMin = 500 * time.Millisecond
	// DefaultRetryWaitMax is the longest wait before a retry, Retry-After included.
	DefaultRetryWaitMax = 30 * time.Second
	// DefaultTimeout bounds each attempt: connecting, sending, and reading the whole response.
	DefaultTimeout = 30 * time.Second
)

// maxBodyBytes bounds how much of a response body is read. Apify's
// request-queue responses are a few kilobytes at most, but for listings.
const maxBodyBytes = 1 << 20

// maxListBodyBytes bounds a page of a listing (ListRequests,
// ListRequestQueues): up to 10,000 requests, each with its own userData,
// fit in it; a server that sends more still cannot make a call read
// without end.
const maxListBodyBytes = 32 << 20

// bodyLimitKey carries an apiRequest's maxBody to the attempt transport.
type bodyLimitKey struct{}

// Client calls the Apify API. Create one with [NewClient] or
// [NewClientFromEnv] and share it: it is safe for concurrent use, keeps a pool
// of connections, and never changes after it is made.
//
// Formatting a Client with fmt or log/slog never shows its token.
type Client struct {
	scheme, host string
	basePath     string // unescaped base path prefix, "" or "/proxy" (no trailing slash)
	baseRawPath  string // the same, escaped as on the wire

	token     *secret // nil when calls are anonymous
	userAgent []string
	hc        *http.Client // our own copy: attempt transport, redirects off
	// closeIdle empties the pool the Client made itself; nil with a caller's
	// Transport. A func, not the *http.Transport: fmt shows a func as an
	// address under every verb, and must never walk a live transport.
	closeIdle func()

	maxRetries       int
	waitMin, waitMax time.Duration
	timeout          time.Duration
	logger           *slog.Logger

	// randN returns a random int64 in [0, n); tests make it deterministic.
	randN func(n int64) int64
}

// settings collects what the options say, before NewClient checks them together.
type settings struct {
	baseURL    string
	token      string
	tokenSet   bool
	hc         *http.Client
	maxRetries int
	waitMin    time.Duration
	waitMax    time.Duration
	timeout    time.Duration
	logger     *slog.Logger
	uaSuffix   string
}

// Option configures a [Client]. Options are applied in order; an option given
// a bad value makes [NewClient] fail with an error that names the option.
type Option func(*settings) error

// WithToken authenticates every call with the API token, sent as
// "Authorization: Bearer <token>" (never in the URL). Without it calls are
// anonymous, which is enough for public queues.
func WithToken(token string) Option {
	return func(s *settings) error {
		if token == "" {
			return errors.New("WithToken: the token is empty (leave WithToken out for anonymous calls)")
		}
		for _, r := range token {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return errors.New("WithToken: the token contains whitespace or a control character")
			}
		}
		if !utf8.ValidString(token) {
			return errors.New("WithToken: the token is not valid UTF-8")
		}
		s.token, s.tokenSet = token, true
		return nil
	}
}

// WithBaseURL sets the API's address, for a proxy, a local emulator, or a test
// server. It must be an absolute http or https URL without user info, query or
// fragment. A path prefix is kept ("http://h/proxy" sends "/proxy/v2/..."); a
// trailing "/" or "/v2" is dropped so it is never doubled.
func WithBaseURL(rawURL string) Option {
	return func(s *settings) error {
		s.baseURL = rawURL
		return nil
	}
}

// WithHTTPClient makes the Client send its requests through hc's Transport and
// Jar. hc itself is never modified: the Client works on a copy whose redirects
// are turned off (a POST is never replayed as a GET, and the token never
// follows a redirect to another host). A non-zero hc.Timeout, when shorter
// than [WithTimeout], bounds each attempt instead. The Client never closes
// idle connections of hc's Transport, so a shared pool survives failures.
func WithHTTPClient(hc *http.Client) Option {
	return func(s *settings) error {
		if hc == nil {
			return errors.New("WithHTTPClient: the client is nil")
		}
		s.hc = hc
		return nil
	}
}

// WithMaxRetries sets how many times a failed call is retried after its first
// attempt: 0 makes one attempt only. The default is [DefaultMaxRetries].
func WithMaxRetries(n int) Option {
	return func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("WithMaxRetries: %d is negative (0 means no retries)", n)
		}
		s.maxRetries = n
		return nil
	}
}

// WithRetryWait sets the range of the wait before a retry. The wait before
// retry n (from 0) is drawn at random from [min, min·2^(n+1)], capped at max;
// a Retry-After header on a 429 or 503 replaces it, clamped to [min, max].
// The defaults are [DefaultRetryWaitMin] and [DefaultRetryWaitMax].
//
// WithRetryWait(0, 0) retries without waiting. A zero min with a positive max
// is an error: the backoff doubles min, so every wait would be zero and max
// would mean nothing.
func WithRetryWait(min, max time.Duration) Option {
	return func(s *settings) error {
		if min < 0 || max < 0 {
			return fmt.Errorf("WithRetryWait: waits must not be negative (min %v, max %v)", min, max)
		}
		if min > max {
			return fmt.Errorf("WithRetryWait: min %v is greater than max %v", min, max)
		}
		if min == 0 && max > 0 {
			return fmt.Errorf("WithRetryWait: min is 0 with max %v: the backoff doubles min, so every wait would be 0; give a positive min, or max 0 to retry without waiting", max)
		}
		s.waitMin, s.waitMax = min, max
		return nil
	}
}

// WithTimeout bounds each attempt: connecting, sending the request, and
// reading the whole response. The context passed to a call bounds the whole
// call, retries and waits included. The default is [DefaultTimeout].
func WithTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d <= 0 {
			return fmt.Errorf("WithTimeout: %v is not positive", d)
		}
		s.timeout = d
		return nil
	}
}

// WithLogger makes the Client log one Debug record per attempt (method, path,
// attempt, status, duration) and one Warn record per retry (reason, wait),
// each carrying the call's context. Records never hold headers, bodies or the
// token. Without it (or with nil) the Client logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) error {
		s.logger = l
		return nil
	}
}

// WithUserAgent appends suffix to the User-Agent header, after "; ", to name
// the application or SDK that embeds this client.
func WithUserAgent(suffix string) Option {
	return func(s *settings) error {
		for _, r := range suffix {
			if unicode.IsControl(r) {
				return errors.New("WithUserAgent: the suffix contains a control character")
			}
		}
		if !utf8.ValidString(suffix) {
			return errors.New("WithUserAgent: the suffix is not valid UTF-8")
		}
		s.uaSuffix = suffix
		return nil
	}
}

// NewClient returns a Client configured by opts. Without options it calls
// [DefaultBaseURL] anonymously, retries 429, 5xx (but 501) and network errors
// [DefaultMaxRetries] times, and bounds each attempt by [DefaultTimeout].
// Every bad option is reported, each by name.
func NewClient(opts ...Option) (*Client, error) {
	s := settings{
		baseURL:    DefaultBaseURL,
		maxRetries: DefaultMaxRetries,
		waitMin:    DefaultRetryWaitMin,
		waitMax:    DefaultRetryWaitMax,
		timeout:    DefaultTimeout,
	}
	var errs []error
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&s); err != nil {
			errs = append(errs, err)
		}
	}
	c := &Client{
		maxRetries: s.maxRetries,
		waitMin:    s.waitMin,
		waitMax:    s.waitMax,
		timeout:    s.timeout,
		logger:     s.logger,
		randN:      rand.Int64N,
	}
	if err := c.setBaseURL(s.baseURL); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		return nil, fmt.Errorf("apify: NewClient: %w: %s", ErrInvalidOption, strings.Join(msgs, "; "))
	}
	if s.tokenSet {
		c.token = newSecret(s.token)
	}
	c.userAgent = []string{userAgent(os.Getenv("APIFY_IS_AT_HOME") != "", s.uaSuffix)}
	c.hc = c.httpClient(s.hc)
	return c, nil
}

// NewClientFromEnv is [NewClient] configured from the environment Apify sets
// in an Actor run: APIFY_TOKEN (the token) and APIFY_API_BASE_URL (the base
// URL), each used when non-empty. opts are applied after them, so they win.
func NewClientFromEnv(opts ...Option) (*Client, error) {
	var env []Option
	if t := os.Getenv("APIFY_TOKEN"); t != "" {
		env = append(env, WithToken(t))
	}
	if u := os.Getenv("APIFY_API_BASE_URL"); u != "" {
		env = append(env, WithBaseURL(u))
	}
	return NewClient(append(env, opts...)...)
}

// shownURL is a base URL as an error message may show it: without its
// query or fragment ("?…", "#…") and user info ("…@"), where a token put in
// the URL by mistake (?token=, user:token@) would be.
func shownURL(raw string) string {
	rest := ""
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw, rest = raw[:i], raw[i:i+1]+"…"
	}
	if i := strings.Index(raw, "://"); i >= 0 {
		authority := raw[i+3:]
		if j := strings.IndexByte(authority, '/'); j >= 0 {
			authority = authority[:j]
		}
		if k := strings.LastIndexByte(authority, '@'); k >= 0 {
			raw = raw[:i+3] + "…" + raw[i+3+k:]
		}
	}
	return raw + rest
}

func (c *Client) setBaseURL(raw string) error {
	shown := shownURL(raw)
	if !strings.Contains(raw, "://") {
		// "127.0.0.1:8080" does not parse, and "localhost:8080" parses with
		// "localhost" as its scheme: either way the scheme is missing.
		return fmt.Errorf("WithBaseURL: %q is not an absolute http or https URL: it has no scheme; add http:// or https:// (such as %q)",
			shown, "http://"+strings.TrimLeft(shown, "/"))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("WithBaseURL: %q does not parse: %w", shown, errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("WithBaseURL: %q is not an absolute http or https URL", shown)
	case u.Host == "":
		return fmt.Errorf("WithBaseURL: %q has no host", shown)
	case u.User != nil:
		return errors.New("WithBaseURL: the URL holds user info; pass the token with WithToken")
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("WithBaseURL: %q has a query; pass the token with WithToken, never in the URL", shown)
	case u.Fragment != "":
		return fmt.Errorf("WithBaseURL: %q has a fragment", shown)
	}
	c.scheme, c.host = u.Scheme, u.Host
	p, rp := strings.TrimRight(u.Path, "/"), strings.TrimRight(u.EscapedPath(), "/")
	if strings.HasSuffix(p, "/v2") && strings.HasSuffix(rp, "/v2") {
		p, rp = strings.TrimRight(p[:len(p)-3], "/"), strings.TrimRight(rp[:len(rp)-3], "/")
	}
	c.basePath, c.baseRawPath = p, rp
	return nil
}

// BaseURL returns the API address calls go to, without the /v2 prefix.
func (c *Client) BaseURL() string {
	return c.scheme + "://" + c.host + c.baseRawPath
}

func userAgent(atHome bool, suffix string) string {
	ua := fmt.Sprintf("rqkit-apify-go/%s (%s; %s); isAtHome/%t", Version, runtime.GOOS, runtime.Version(), atHome)
	if suffix != "" {
		ua += "; " + suffix
	}
	return ua
}

// httpClient returns the http.Client the Client sends through: a copy of the
// caller's (never the caller's own) or a new one with its own pool.
func (c *Client) httpClient(user *http.Client) *http.Client {
	hc := &http.Client{}
	var base http.RoundTripper
	if user != nil {
		*hc = *user
		base = user.Transport
		if user.Timeout > 0 && user.Timeout < c.timeout {
			c.timeout = user.Timeout
		}
	}
	if base == nil {
		pool := newPooledTransport()
		c.closeIdle, base = pool.CloseIdleConnections, pool
	}
	// The attempt transport bounds each attempt itself; a Client.Timeout would
	// add a timer and a goroutine per request for nothing.
	hc.Timeout = 0
	hc.Transport = &attemptTransport{base: base, timeout: c.timeout}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc
}

// CloseIdleConnections closes the idle keep-alive connections of the pool
// the Client made for itself, as at the end of a program or a test. Calls
// made afterwards open new connections. A Transport given with
// [WithHTTPClient] belongs to the caller and is left alone.
func (c *Client) CloseIdleConnections() {
	if c.closeIdle != nil {
		c.closeIdle()
	}
}

// newPooledTransport is http.DefaultTransport's configuration with room for
// enough idle connections per host that concurrent callers reuse them instead
// of dialing (net/http keeps only 2 per host by default).
func newPooledTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

// String describes the Client's configuration, without its token.
func (c *Client) String() string {
	if c == nil {
		return "apify.Client(nil)"
	}
	tok := "none"
	if c.token != nil {
		tok = redacted
	}
	return fmt.Sprintf("apify.Client{baseURL: %s, token: %s, maxRetries: %d, retryWait: %v..%v, timeout: %v}",
		c.BaseURL(), tok, c.maxRetries, c.waitMin, c.waitMax, c.timeout)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, ...) print [Client.String],
// so the token cannot leak through formatting.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// GoString implements fmt.GoStringer like [Client.String].
func (c *Client) GoString() string { return c.String() }

// LogValue implements slog.LogValuer like [Client.String].
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// endpoint is a request path in both forms url.URL wants: unescaped, and
// escaped as it goes on the wire (which is also what errors and logs show).
type endpoint struct {
	path, rawPath string
}

// apiRequest is one API call, before it is sent.
type apiRequest struct {
	method string
	ep     endpoint
	query  string // encoded, without "?"
	body   []byte // JSON, or nil for no body
	// idempotent says a repeat does no harm, so the call is retried after any
	// transient failure. Otherwise it is retried only when the request cannot
	// have been processed (429, or it never left: no connection could be
	// made, or the TLS handshake timed out).
	idempotent bool
	// maxBody bounds the response body; 0 means maxBodyBytes.
	maxBody int
}

// apiResponse is a 2xx response, its body already read.
type apiResponse struct {
	method, path string
	status       int
	body         []byte
}

// decodeData unmarshals the API's success envelope {"data": ...} and returns
// its data, which must be present.
func decodeData[T any](r apiResponse) (*T, error) {
	var env struct {
		Data *T `json:"data"`
	}
	if err := r.decode(&env); err != nil {
		return nil, err
	}
	if env.Data == nil {
		return nil, r.unexpected("no data object")
	}
	return env.Data, nil
}

// decode unmarshals the body into dst.
func (r apiResponse) decode(dst any) error {
	if err := json.Unmarshal(r.body, dst); err != nil {
		return r.unexpected("the body is not the documented JSON (" + clip(err.Error(), 200) + ")")
	}
	return nil
}

// unexpected reports a 2xx response that is not what the API documents.
func (r apiResponse) unexpected(detail string) error {
	return fmt.Errorf("apify: %s %s: %d response: %w: %s", r.method, r.path, r.status, ErrUnexpectedResponse, detail)
}

// do sends r, retrying as the Client is configured, and returns its 2xx
// response. Anything else becomes an *APIError or a *RequestError.
func (c *Client) do(ctx context.Context, r apiRequest) (apiResponse, error) {
	if ctx == nil {
		return apiResponse{}, fmt.Errorf("apify: %s %s: nil Context", r.method, r.ep.rawPath)
	}
	if err := ctx.Err(); err != nil {
		return apiResponse{}, &RequestError{Method: r.method, Path: r.ep.rawPath, Err: err}
	}
	u := &url.URL{Scheme: c.scheme, Host: c.host, Path: r.ep.path, RawQuery: r.query}
	if r.ep.rawPath != r.ep.path {
		u.RawPath = r.ep.rawPath
	}
	h := make(http.Header, 4)
	h["Accept"] = jsonMediaType
	h["User-Agent"] = c.userAgent
	if c.token != nil {
		h["Authorization"] = c.token.header()
	}
	if r.body != nil {
		h["Content-Type"] = jsonMediaType
	}
	cl := c.newCall(ctx, r)
	defer cl.release()
	reqCtx := ctx
	if !r.idempotent {
		// Only net/http can tell a request that never left, safe to retry,
		// from one the API may have acted on.
		reqCtx = cl.traced(ctx)
	}
	limit := maxBodyBytes
	if r.maxBody > 0 {
		limit = r.maxBody
		reqCtx = context.WithValue(reqCtx, bodyLimitKey{}, limit)
	}
	hreq := (&http.Request{
		Method:     r.method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       c.host,
	}).WithContext(reqCtx)

	rreq := &retryablehttp.Request{Request: hreq}
	if r.body != nil {
		// retryablehttp replays a []byte body on every attempt.
		if err := rreq.SetBody(r.body); err != nil {
			return apiResponse{}, err
		}
	}
	resp, err := cl.rc.Do(rreq)
	var body []byte
	if resp != nil {
		body = responseBody(resp)
	}
	if err != nil {
		return apiResponse{}, cl.requestError(err, resp, body)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiResponse{}, cl.apiError(resp, body)
	}
	out := apiResponse{method: r.method, path: r.ep.rawPath, status: resp.StatusCode, body: body}
	if bodyTruncated(resp) {
		return apiResponse{}, out.unexpected(fmt.Sprintf("the body is larger than %d bytes", limit))
	}
	return out, nil
}

// jsonMediaType is the Accept and Content-Type value, shared read-only by every request.
var jsonMediaType = []string{"application/json"}

// keepLastResponse is the ErrorHandler: when retries run out, the last
// response (its body already read by the attempt transport) and error go back
// to Client.do, which turns them into an *APIError or a *RequestError.
func keepLastResponse(resp *http.Response, err error, _ int) (*http.Response, error) {
	return resp, err
}
