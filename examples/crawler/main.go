// Command crawler consumes an Apify request queue with
// [apify.RequestQueueClient.Consume]: it runs a handler on every request,
// several at a time, keeps their locks alive while they run, retries
// failures, and when it must stop, lets running handlers finish, releases
// every lock it holds, and exits, within a bounded time. Started again with
// the same clientKey (an Actor run keeps its ID across restarts and
// migrations), it first takes back whatever an earlier, killed run left
// locked.
//
// It stops through one path, whatever asks: SIGINT or SIGTERM (which
// cancel Consume's ctx), or, inside an Actor run, the platform's migrating
// and aborting events (which Consume hears by itself: the platform sets
// ACTOR_EVENTS_WEBSOCKET_URL). Consume then releases the prefetched requests
// at once, lets running handlers finish within the time the platform leaves
// (migrating says how long; aborting leaves about 30 s), cancels the rest,
// and releases every lock of its clientKey and run with one unlock call
// before the platform kills the process.
//
// The "work" here is a pause of --work per request (a real crawler would
// fetch and parse the URL, and add the links it finds), so the example runs
// anywhere.
//
// Configuration comes from the environment Apify sets in an Actor run
// (APIFY_TOKEN, APIFY_API_BASE_URL, ACTOR_RUN_ID,
// ACTOR_DEFAULT_REQUEST_QUEUE_ID, ACTOR_EVENTS_WEBSOCKET_URL) and from flags:
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
// ("~demo" is the queue named demo; serve also prints its ID.) To see a
// migration, serve with --events and a run token, run the crawler as that
// run, and send the event:
//
//	go run ./cmd/apify-rq serve --queue demo --events --run-token secret=RUN1
//	APIFY_API_BASE_URL=http://127.0.0.1:8080 APIFY_TOKEN=secret ACTOR_RUN_ID=RUN1 \
//	  ACTOR_EVENTS_WEBSOCKET_URL=ws://127.0.0.1:8080/_emulator/events/RUN1 \
//	  go run ./examples/crawler --queue '~demo' --seed https://example.com/ --work 2s
//	go run ./cmd/apify-rq event migrating --time-remaining 10s
//
// # Exit codes, and what they mean to the platform
//
//   - 0: the queue is done (the run ends SUCCEEDED), or, outside an Actor
//     run, SIGINT or SIGTERM stopped it cleanly.
//   - 1: the queue is unusable (a 401, 403 or 404, say): the run ends FAILED.
//   - 2: usage error.
//   - 3: inside an Actor run, stopped before the queue was done: by
//     migrating, aborting, or a bare SIGTERM (which the platform also
//     sends, and which is treated like aborting). Never 0 here: a run that
//     exits 0 while migrating ends SUCCEEDED and is not restarted, silently
//     losing the rest of the crawl. After migrating the platform restarts
//     the run on another server, which resumes the crawl with the same
//     clientKey; after an abort the run ends ABORTED whatever the code.
//
// A failure to release the locks at exit is logged (they then expire on
// their own, or the next start with the same key takes them).
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
	// The queue is this crawler's whole state; one that keeps more (counts,
	// a cursor) saves it here, and once more when Consume returns.
	opts.OnPersistState = func(_ context.Context, isMigrating bool) {
		fmt.Fprintf(stdout, "crawler: persistState (migrating: %t): the queue holds all the state\n", isMigrating)
	}

	// SIGINT or SIGTERM cancels ctx; inside an Actor run, Consume also hears
	// the platform's migrating and aborting events (opts.Events is nil:
	// it subscribes by itself). Either way Consume stops taking work,
	// drains, and releases every lock before it returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	inRun := apify.CurrentRunID() != ""

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
	case errors.Is(err, apify.ErrMigrating), errors.Is(err, apify.ErrAborting):
		// Every lock is released; the run is restarted elsewhere
		// (migrating) or ends ABORTED. Never exit 0 here.
		fmt.Fprintf(stdout, "crawler: stopped by %s: %s\n", stats.StoppedBy, summary)
		return 3
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintf(stdout, "crawler: stopped by signal: %s\n", summary)
		if inRun {
			return 3 // a bare SIGTERM from the platform: like aborting
		}
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
