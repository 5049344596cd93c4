package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rqkit/apify/apifytest"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", "[--addr 127.0.0.1:8080] [--token T]... [--run-token T=RUN_ID]... [--queue NAME]...", stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "`host:port` to listen on; port 0 picks a free port")
	var tokens, runTokens secretFlags
	var queues repeated
	fs.Var(&tokens, "token", "require API `token`s: once any is given, every call needs a valid one (repeatable)")
	fs.Var(&runTokens, "run-token", "a `T=RUN_ID` token whose calls count as inside Actor run RUN_ID (repeatable)")
	fs.Var(&queues, "queue", "create a queue with this `name` and print its ID (repeatable)")
	rateLimits := fs.String("rate-limits", "off", "model Apify's per-queue rate limits: `off`, on (400 request CRUD, 40 batch and head/lock, 60 other calls per second), "+
		"or some of crud=N,batch=N,other=N (the rest as on); a call over its limit gets 429 rate-limit-exceeded")
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	opts := make([]apifytest.Option, 0, len(tokens.repeated)+len(runTokens.repeated)+len(queues)+1)
	if limits, on, err := parseRateLimits(*rateLimits); err != nil {
		fmt.Fprintf(stderr, "apify-rq serve: --rate-limits: %v\n", err)
		return exitUsage
	} else if on {
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
	emu, err := newEmulator(opts)
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
	fmt.Fprintf(stdout, "apify-rq: point clients at it with APIFY_API_BASE_URL=%s; stop with Ctrl-C\n", base)

	srv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
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
	return exitOK
}

// newEmulator makes the emulator, turning its panic on a bad option into an error.
func newEmulator(opts []apifytest.Option) (s *apifytest.Server, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return apifytest.NewUnstartedServer(opts...), nil
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
