package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rqkit/apify/apifytest"
)

const serveSynopsis = "[--addr 127.0.0.1:8080] [--token T]... [--run-token T=RUN_ID]... [--queue NAME]... [--rate-limits on] [--events] [--log] [--read-timeout 30s] [--idle-timeout 60s] [--max-conns 512]"

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", serveSynopsis, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "`host:port` to listen on; port 0 picks a free port")
	var tokens, runTokens secretFlags
	var queues repeated
	fs.Var(&tokens, "token", "require API `token`s: once any is given, every call needs a valid one (repeatable)")
	fs.Var(&runTokens, "run-token", "a `T=RUN_ID` token whose calls count as inside Actor run RUN_ID (repeatable)")
	fs.Var(&queues, "queue", "create a queue with this `name` and print its ID (repeatable)")
	rateLimits := fs.String("rate-limits", "off", "model Apify's per-queue rate limits: `off`, on (400 request CRUD, 40 batch and head/lock, 60 other calls per second), "+
		"or some of crud=N,batch=N,other=N (the rest as on); a call over its limit gets 429 rate-limit-exceeded")
	events := fs.Bool("events", false, "serve the Apify platform's events of an Actor run over WebSocket, and print its URL (for ACTOR_EVENTS_WEBSOCKET_URL); "+
		"send one with apify-rq event")
	logCalls := fs.Bool("log", false, "print one line per call: time, method, path (never the query, which may hold a token), status, duration")
	readTimeout := fs.Duration("read-timeout", 30*time.Second, "cut off a client that takes longer than this to send one call, body included")
	idleTimeout := fs.Duration("idle-timeout", 60*time.Second, "close a keep-alive connection idle for this long")
	maxConns := fs.Int("max-conns", 512, "close connections over this many open at once")
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if *readTimeout <= 0 || *idleTimeout <= 0 || *maxConns <= 0 {
		fmt.Fprintln(stderr, "apify-rq serve: --read-timeout, --idle-timeout and --max-conns must be positive, such as 30s, 60s and 512")
		return exitUsage
	}
	opts := []apifytest.Option{apifytest.WithHTTPLimits(apifytest.HTTPLimits{ReadTimeout: *readTimeout, IdleTimeout: *idleTimeout, MaxConns: *maxConns})}
	limits, limited, err := parseRateLimits(*rateLimits)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq serve: --rate-limits: %v\n", err)
		return exitUsage
	}
	if limited {
		opts = append(opts, apifytest.WithRateLimits(limits))
	}
	for _, t := range tokens.repeated {
		opts = append(opts, apifytest.WithToken(t))
	}
	for _, rt := range runTokens.repeated {
		i := strings.LastIndex(rt, "=")
		if i <= 0 || i == len(rt)-1 {
			fmt.Fprintln(stderr, "apify-rq serve: --run-token must be TOKEN=RUN_ID, such as --run-token my-token=HG7ML7M8z78YcAPEB")
			return exitUsage
		}
		opts = append(opts, apifytest.WithRunToken(rt[:i], rt[i+1:]))
	}
	for _, q := range queues {
		opts = append(opts, apifytest.WithQueue(q))
	}
	if *events {
		opts = append(opts, apifytest.WithPlatformEvents())
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		fmt.Fprintf(stderr, "apify-rq serve: --addr must be host:port, such as 127.0.0.1:8080 (port 0 picks a free one); got %q\n", *addr)
		return exitUsage
	}
	emu, err := apifytest.New(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq serve: %v\n", err)
		return exitUsage
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq serve: cannot listen on %s: %v (is the port in use? --addr 127.0.0.1:0 picks a free port)\n", *addr, err)
		return exitFailure
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "apify-rq: serving the request-queue emulator at %s\n", base)
	for _, q := range queues {
		fmt.Fprintf(stdout, "apify-rq: queue %q has ID %s\n", q, emu.CreateQueue(q))
	}
	if n := len(tokens.repeated) + len(runTokens.repeated); n > 0 {
		fmt.Fprintf(stdout, "apify-rq: every call needs one of the %d configured tokens\n", n)
	}
	if limited {
		l := emu.RateLimits()
		fmt.Fprintf(stdout, "apify-rq: rate limits per queue: %d calls/s of request CRUD, %d of head/lock and batches, %d of the rest\n",
			l.RequestCRUD, l.Batch, l.Other)
	}
	if *events {
		runs := []string{apifytest.DefaultRunID}
		for _, rt := range runTokens.repeated {
			if run := rt[strings.LastIndex(rt, "=")+1:]; !slices.Contains(runs, run) {
				runs = append(runs, run)
			}
		}
		for _, run := range runs {
			fmt.Fprintf(stdout, "apify-rq: platform events of run %s at ws://%s%s%s\n", run, ln.Addr(), apifytest.EventsPathPrefix, url.PathEscape(run))
		}
		fmt.Fprintf(stdout, "apify-rq: set ACTOR_EVENTS_WEBSOCKET_URL to one; send events with apify-rq event NAME --base-url %s\n", base)
	}
	fmt.Fprintf(stdout, "apify-rq: point clients at it with APIFY_API_BASE_URL=%s; stop with Ctrl-C\n", base)

	srv := emu.HTTPServer()
	srv.ErrorLog = log.New(stderr, "apify-rq serve: ", log.LstdFlags)
	if *logCalls {
		srv.Handler = logged(srv.Handler, stdout)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		fmt.Fprintf(stderr, "apify-rq serve: the server stopped: %v\n", err)
		return exitFailure
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "apify-rq: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		fmt.Fprintln(stderr, "apify-rq serve: calls still in flight after 5s were cut off")
	}
	emu.Close() // ends the events connections, which Shutdown leaves alone
	return exitOK
}

// logged wraps h to print one line per call to out: the time, the method,
// the path (never the query: it may hold ?token=), the status ("dropped"
// for a dropped connection) and how long the call took.
func logged(h http.Handler, out io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			status := strconv.Itoa(rec.status)
			switch {
			case rec.hijacked:
				status = "dropped"
			case rec.status == 0:
				status = "200"
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(out, "%s %s %s %s %v\n", start.UTC().Format("2006-01-02T15:04:05.000Z"),
				r.Method, r.URL.EscapedPath(), status, time.Since(start).Round(10*time.Microsecond))
		}()
		h.ServeHTTP(rec, r)
	})
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Hijack lets the emulator's injected faults drop the connection.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.hijacked = true
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

// parseRateLimits parses --rate-limits: off, on, or crud=N,batch=N,other=N
// (any of them; the others take Apify's documented limits).
func parseRateLimits(v string) (apifytest.RateLimits, bool, error) {
	var l apifytest.RateLimits
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "off", "false":
		return l, false, nil
	case "on", "true", "default":
		return apifytest.DefaultRateLimits, true, nil
	}
	for _, part := range strings.Split(v, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(val)
		if !ok || err != nil || n < 1 || n > 1_000_000 {
			return l, false, fmt.Errorf("%q is not NAME=N with N a whole number from 1 to 1000000 (want off, on, or some of crud=400,batch=40,other=60)", part)
		}
		switch strings.ToLower(name) {
		case "crud":
			l.RequestCRUD = n
		case "batch":
			l.Batch = n
		case "other":
			l.Other = n
		default:
			return l, false, fmt.Errorf("unknown class %q (want crud, batch or other)", name)
		}
	}
	return l, true, nil
}
