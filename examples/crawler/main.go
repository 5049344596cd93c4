// Command crawler is a small but real consumer of an Apify request queue:
// it locks a batch of requests, processes each one, marks it handled,
// prolongs the locks it still holds while the work runs long, and on SIGINT
// or SIGTERM stops taking work and releases every lock it holds before it
// exits, within a bounded time.
//
// The "work" here is a pause of --work per request (a real crawler would
// fetch and parse the URL), so the example runs anywhere.
//
// Configuration comes from the environment Apify sets in an Actor run
// (APIFY_TOKEN, APIFY_API_BASE_URL, ACTOR_RUN_ID) and from flags:
//
//	crawler --queue QUEUE_ID [--client-key K] [--batch 10] [--lock 60s] [--work 200ms] [--shutdown-timeout 5s]
//
// Try it offline against the emulator:
//
//	go run ./cmd/apify-rq serve --queue demo   # prints the base URL and the queue ID
//	APIFY_API_BASE_URL=http://127.0.0.1:8080 go run ./examples/crawler --queue QUEUE_ID
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/rqkit/apify"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	queueID         string
	clientKey       string
	batch           int
	lock            time.Duration
	work            time.Duration
	shutdownTimeout time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg := config{}
	fs := flag.NewFlagSet("crawler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.queueID, "queue", os.Getenv("APIFY_QUEUE_ID"), "queue ID or username~queue-name (default $APIFY_QUEUE_ID)")
	fs.StringVar(&cfg.clientKey, "client-key", apify.DefaultClientKey(), "clientKey to lock under (default: the Actor run ID, else random)")
	fs.IntVar(&cfg.batch, "batch", 10, "requests to lock at a time (1 to 25)")
	fs.DurationVar(&cfg.lock, "lock", time.Minute, "lock duration")
	fs.DurationVar(&cfg.work, "work", 200*time.Millisecond, "simulated work per request")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 5*time.Second, "time allowed to release the locks at exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.queueID == "" {
		fmt.Fprintln(stderr, "crawler: --queue (or APIFY_QUEUE_ID) is required")
		return 2
	}

	c, err := apify.NewClientFromEnv()
	if err != nil {
		fmt.Fprintln(stderr, "crawler:", err)
		return 2
	}
	q := c.RequestQueue(cfg.queueID)

	// SIGINT or SIGTERM cancels ctx: the crawler stops taking work.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(stdout, "crawler: consuming queue %s as client %s\n", cfg.queueID, cfg.clientKey)
	handled, crawlErr := crawl(ctx, q, cfg, stdout)

	// Always release what we still hold, even though ctx may be cancelled:
	// UnlockAtShutdown runs detached from it, under its own deadline.
	res, unlockErr := q.UnlockAtShutdown(ctx, cfg.clientKey, cfg.shutdownTimeout)
	switch {
	case unlockErr != nil:
		fmt.Fprintf(stderr, "crawler: releasing locks failed (they expire after %v): %v\n", cfg.lock, unlockErr)
	case ctx.Err() != nil:
		fmt.Fprintf(stdout, "crawler: stopped by signal after %d requests; released %d locks\n", handled, res.UnlockedCount)
	default:
		fmt.Fprintf(stdout, "crawler: queue finished after %d requests; released %d locks\n", handled, res.UnlockedCount)
	}
	if crawlErr != nil {
		fmt.Fprintln(stderr, "crawler:", crawlErr)
		return 1
	}
	if unlockErr != nil {
		return 1
	}
	return 0
}

// crawl consumes the queue until it is finished or ctx is cancelled, and
// returns how many requests it handled.
func crawl(ctx context.Context, q *apify.RequestQueueClient, cfg config, out io.Writer) (int, error) {
	held := newHeldLocks()
	stopProlonging := held.prolongEvery(ctx, q, cfg)
	defer stopProlonging()

	handled := 0
	idle := 100 * time.Millisecond
	for ctx.Err() == nil {
		head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: cfg.batch, LockDuration: cfg.lock, ClientKey: cfg.clientKey})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return handled, err
		}
		if len(head.Items) == 0 {
			if !head.QueueHasLockedRequests {
				return handled, nil // nothing pending, nothing in progress anywhere: done
			}
			sleep(ctx, idle) // others hold the rest; their locks may come back
			continue
		}
		held.add(head.Items)
		for _, it := range head.Items {
			if ctx.Err() != nil {
				break // stop taking work; the rest of the batch is released at exit
			}
			if err := process(ctx, q, cfg, it); err != nil {
				if ctx.Err() != nil {
					break
				}
				return handled, err
			}
			held.remove(it.ID)
			handled++
			fmt.Fprintf(out, "crawler: handled %s\n", it.URL)
		}
	}
	return handled, nil
}

// process does the work for one request and marks it handled. Marking it
// handled releases its lock.
func process(ctx context.Context, q *apify.RequestQueueClient, cfg config, it apify.LockedRequest) error {
	req, err := q.GetRequest(ctx, it.ID) // the whole request: UpdateRequest writes it back
	if err != nil {
		return err
	}
	if !sleep(ctx, cfg.work) { // the work; a real crawler fetches req.URL here
		return ctx.Err()
	}
	req.HandledAt = time.Now().UTC() // handled: this also releases the lock
	_, err = q.UpdateRequest(ctx, *req, apify.RequestOptions{ClientKey: cfg.clientKey})
	return err
}

// heldLocks is the set of requests locked but not yet handled. Work on one
// request can outlast the locks of the others in its batch, so they are all
// prolonged at half the lock duration.
type heldLocks struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func newHeldLocks() *heldLocks { return &heldLocks{ids: map[string]struct{}{}} }

func (h *heldLocks) add(items []apify.LockedRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, it := range items {
		h.ids[it.ID] = struct{}{}
	}
}

func (h *heldLocks) remove(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.ids, id)
}

func (h *heldLocks) snapshot() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.ids))
	for id := range h.ids {
		ids = append(ids, id)
	}
	return ids
}

// prolongEvery keeps the held locks alive until ctx ends or the returned
// stop function is called (which waits for the prolonging to finish).
func (h *heldLocks) prolongEvery(ctx context.Context, q *apify.RequestQueueClient, cfg config) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(cfg.lock/2, 500*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, id := range h.snapshot() {
				_, err := q.ProlongRequestLock(ctx, id, apify.ProlongLockOptions{LockDuration: cfg.lock, ClientKey: cfg.clientKey})
				if err != nil && !errors.Is(err, context.Canceled) {
					// The request was handled meanwhile, or its lock is gone:
					// either way there is nothing more to keep.
					h.remove(id)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// sleep waits for d or until ctx ends, and reports whether it waited it all.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
