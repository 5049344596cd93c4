// Command crawler consumes an Apify request queue with
// [apify.RequestQueueClient.Consume]: it runs a handler on every request,
// several at a time, keeps their locks alive while they run, retries
// failures, and on SIGINT or SIGTERM lets running handlers finish, releases
// every lock it holds, and exits, within a bounded time. Started again with
// the same clientKey (an Actor run keeps its ID across restarts), it first
// takes back whatever an earlier, killed run left locked.
//
// The "work" here is a pause of --work per request (a real crawler would
// fetch and parse the URL, and add the links it finds), so the example runs
// anywhere.
//
// Configuration comes from the environment Apify sets in an Actor run
// (APIFY_TOKEN, APIFY_API_BASE_URL, ACTOR_RUN_ID,
// ACTOR_DEFAULT_REQUEST_QUEUE_ID) and from flags:
//
//	crawler --queue QUEUE_ID [--seed URL]... [--client-key K] [--concurrency 10] [--lock 1m] [--work 200ms]
//	        [--handler-timeout 1m] [--drain-timeout 10s] [--shutdown-timeout 5s] [--keep-alive]
//
// --seed (repeatable, or comma-separated URLs) adds start URLs when the
// queue is empty, under the crawler's own clientKey, so the queue reads as
// one client; a queue that has requests is left as it is.
//
// Try it offline against the emulator, in two terminals:
//
//	go run ./cmd/apify-rq serve --queue demo
//	APIFY_API_BASE_URL=http://127.0.0.1:8080 go run ./examples/crawler --queue '~demo' --seed https://example.com/
//
// ("~demo" is the queue named demo; serve also prints its ID.)
//
// Exit codes: 0 the queue is done, or the crawler was stopped by a signal
// and shut down cleanly; 1 the queue is unusable (a 401, 403 or 404, say);
// 2 usage error. A failure to release the locks at exit is logged (they
// then expire on their own, or the next start with the same key takes them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rqkit/apify"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	stdout = &syncWriter{w: stdout} // handlers print from several goroutines
	fs := flag.NewFlagSet("crawler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	queueID := fs.String("queue", defaultQueueID(), "queue ID or username~queue-name (default $ACTOR_DEFAULT_REQUEST_QUEUE_ID, else $APIFY_QUEUE_ID)")
	var opts apify.ConsumeOptions
	fs.StringVar(&opts.ClientKey, "client-key", apify.DefaultClientKey(), "clientKey to lock under: keep it across restarts (default: the Actor run ID, else random)")
	fs.IntVar(&opts.Concurrency, "concurrency", 10, "requests handled at once")
	fs.DurationVar(&opts.LockDuration, "lock", time.Minute, "lock duration (renewed while a request is held)")
	fs.DurationVar(&opts.HandlerTimeout, "handler-timeout", time.Minute, "time allowed to one request")
	fs.DurationVar(&opts.DrainTimeout, "drain-timeout", 10*time.Second, "at a signal, time running requests get to finish")
	fs.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "time allowed to release the locks at exit")
	fs.BoolVar(&opts.KeepAlive, "keep-alive", false, "wait for new requests instead of exiting when the queue is done")
	work := fs.Duration("work", 200*time.Millisecond, "simulated work per request")
	var seeds seedFlag
	fs.Var(&seeds, "seed", "start `URL` to add when the queue is empty (repeatable, or comma-separated)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "crawler: unexpected argument %q (start URLs go in --seed)\n", fs.Arg(0))
		return 2
	}
	if *queueID == "" {
		fmt.Fprintln(stderr, "crawler: --queue (or ACTOR_DEFAULT_REQUEST_QUEUE_ID or APIFY_QUEUE_ID) is required")
		return 2
	}
	c, err := apify.NewClientFromEnv()
	if err != nil {
		fmt.Fprintln(stderr, "crawler:", err)
		return 2
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// SIGINT or SIGTERM cancels ctx: Consume stops taking work, drains, and
	// releases every lock before it returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	q := c.RequestQueue(*queueID)
	if len(seeds) > 0 {
		if err := seed(ctx, q, seeds, opts.ClientKey, stdout); err != nil {
			fmt.Fprintln(stderr, "crawler: seeding the queue:", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "crawler: consuming queue %s as client %s\n", *queueID, opts.ClientKey)
	stats, err := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
		// The work; a real crawler fetches req.URL here with ctx, and adds
		// the links it finds with AddRequest.
		select {
		case <-time.After(*work):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		fmt.Fprintf(stdout, "crawler: handled %s\n", req.URL)
		return nil
	}, opts)

	summary := fmt.Sprintf("handled %d, failed %d, retried %d, locks lost %d; recovered %d locks at start, released %d at exit; %d queue calls",
		stats.Handled, stats.Failed, stats.Retried, stats.LocksLost, stats.RecoveredAtStart, stats.ReleasedAtExit, stats.APICalls)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "crawler: queue finished: %s\n", summary)
		return 0
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintf(stdout, "crawler: stopped by signal: %s\n", summary)
		return 0
	case errors.Is(err, apify.ErrInvalidInput) && stats.APICalls == 0:
		fmt.Fprintln(stderr, "crawler:", err) // a bad flag value
		return 2
	default:
		fmt.Fprintf(stderr, "crawler: failed: %v (%s)\n", err, summary)
		return 1
	}
}

// seedFlag is --seed: start URLs, the flag repeated or comma-separated.
type seedFlag []string

func (f *seedFlag) String() string { return strings.Join(*f, ",") }

func (f *seedFlag) Set(v string) error {
	for _, u := range strings.Split(v, ",") {
		u = strings.TrimSpace(u)
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%q is not an http or https URL", u)
		}
		*f = append(*f, u)
	}
	return nil
}

// seed adds the start URLs when the queue is empty, as clientKey, so that
// the queue reads as one client (a call without a clientKey counts as
// another client).
func seed(ctx context.Context, q *apify.RequestQueueClient, urls []string, clientKey string, out io.Writer) error {
	info, err := q.Get(ctx)
	if err != nil {
		return err
	}
	if info.TotalRequestCount > 0 {
		fmt.Fprintf(out, "crawler: the queue has %d requests; --seed adds nothing\n", info.TotalRequestCount)
		return nil
	}
	reqs := make([]apify.Request, len(urls))
	for i, u := range urls {
		reqs[i] = apify.Request{URL: u, UniqueKey: u}
	}
	if _, err := q.BatchAddRequests(ctx, reqs, apify.RequestOptions{ClientKey: clientKey}); err != nil {
		return err
	}
	noun := "start URLs"
	if len(urls) == 1 {
		noun = "start URL"
	}
	fmt.Fprintf(out, "crawler: the queue was empty; added %d %s\n", len(urls), noun)
	return nil
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// defaultQueueID is the Actor run's default queue, or APIFY_QUEUE_ID.
func defaultQueueID() string {
	if id := apify.DefaultRequestQueueID(); id != "" {
		return id
	}
	return os.Getenv("APIFY_QUEUE_ID")
}
