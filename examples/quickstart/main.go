// Command quickstart is the crawler of the README's quick start, on
// [apify.RequestQueueClient.Consume]: it seeds a queue with start URLs,
// fetches each page, adds the links it finds (same site, up to --depth
// levels down, the depth carried in each request's userData), and saves
// what it found of each page.
//
// Without APIFY_TOKEN it runs offline: the apifytest emulator in-process
// stands in for the Apify API, and, unless --seed names other start URLs,
// a small demo site on a loopback port for the web:
//
//	go run ./examples/quickstart
//
// With APIFY_TOKEN set it crawls the --seed URLs with a queue on the Apify
// API (or APIFY_API_BASE_URL): --queue, else APIFY_QUEUE_ID, else inside an
// Actor run the run's default queue. It saves each page as a line of JSON
// on stdout and, inside an Actor run (ACTOR_DEFAULT_DATASET_ID set), to the
// run's default dataset too, with Client.Do:
//
//	APIFY_TOKEN=... go run ./examples/quickstart --queue QUEUE_ID --seed https://example.com/ [--depth 2]
//
// SIGINT or SIGTERM stops it cleanly: Consume releases every lock first.
// Exit codes: 0 the queue is done (or a signal stopped it), 1 failure, 2
// usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var seeds urlList
	fs.Var(&seeds, "seed", "start `URL` (repeatable, or comma-separated); offline, the default is the demo site")
	depth := fs.Int("depth", 2, "follow links this many levels down from the start URLs")
	queueID := fs.String("queue", defaultQueueID(), "the queue's ID (with APIFY_TOKEN; default $APIFY_QUEUE_ID, else the Actor run's default queue)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *depth < 0 {
		fmt.Fprintln(stderr, "quickstart: start URLs go in --seed, and --depth is 0 or more")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var c *apify.Client
	var out sync.Mutex // handlers save from several goroutines
	save := func(_ context.Context, p Page) error {
		line, _ := json.Marshal(p)
		out.Lock()
		defer out.Unlock()
		_, err := fmt.Fprintf(stdout, "%s\n", line)
		return err
	}
	if os.Getenv("APIFY_TOKEN") == "" {
		srv := apifytest.NewServer()
		defer srv.Close()
		c, *queueID = srv.Client(), srv.CreateQueue("quickstart")
		if len(seeds) == 0 {
			site := httptest.NewServer(demoSite())
			defer site.Close()
			seeds = urlList{site.URL + "/"}
		}
		fmt.Fprintf(stdout, "APIFY_TOKEN is not set: crawling %s offline, the in-process emulator as the queue\n", strings.Join(seeds, ", "))
	} else {
		var err error
		if c, err = apify.NewClientFromEnv(); err != nil {
			fmt.Fprintln(stderr, "quickstart:", err)
			return 2
		}
		if *queueID == "" || len(seeds) == 0 {
			fmt.Fprintln(stderr, "quickstart: with APIFY_TOKEN set, give --queue (or APIFY_QUEUE_ID) and at least one --seed URL")
			return 2
		}
		if ds := os.Getenv("ACTOR_DEFAULT_DATASET_ID"); ds != "" {
			toStdout := save
			save = func(ctx context.Context, p Page) error { // and to the run's dataset, an endpoint this module does not wrap
				if err := c.Do(ctx, http.MethodPost, "/datasets/"+ds+"/items", nil, p, nil); err != nil {
					return err
				}
				return toStdout(ctx, p)
			}
		}
	}
	defer c.CloseIdleConnections()

	stats, err := crawlQueue(ctx, c, *queueID, seeds, *depth, save)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "crawled %d pages, failed %d, in queue %s (%d queue calls)\n", stats.Handled, stats.Failed, *queueID, stats.APICalls)
		return 0
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintf(stdout, "stopped by a signal after %d pages; every lock released\n", stats.Handled)
		return 0
	}
	fmt.Fprintln(stderr, "quickstart:", err)
	return 1
}

// README: seed and consume

// crawlQueue adds the start URLs to the queue and crawls it until it is done.
func crawlQueue(ctx context.Context, c *apify.Client, queueID string, seeds []string, maxDepth int,
	save func(context.Context, Page) error) (*apify.ConsumeStats, error) {
	q := c.RequestQueue(queueID)
	key := apify.DefaultClientKey() // in an Actor run, the run's ID: a restarted run takes its locks back
	for _, u := range seeds {
		start := apify.Request{URL: u, UniqueKey: u, UserData: json.RawMessage(`{"depth":0}`)}
		if _, err := q.AddRequest(ctx, start, apify.RequestOptions{ClientKey: key}); err != nil {
			return nil, err
		}
	}
	return q.Consume(ctx, crawl(q, key, maxDepth, save), apify.ConsumeOptions{ClientKey: key})
}

// README: end

// urlList is a flag of URLs, repeated or comma-separated.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }

func (l *urlList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%q is not an http or https URL", s)
		}
		*l = append(*l, s)
	}
	return nil
}

// defaultQueueID is $APIFY_QUEUE_ID, else the Actor run's default queue.
func defaultQueueID() string {
	if id := os.Getenv("APIFY_QUEUE_ID"); id != "" {
		return id
	}
	return apify.DefaultRequestQueueID()
}

// demoSite is a small shop to crawl offline: a home page, 3 categories
// with 2 products each, links back and forth, one to another site, and in
// each category one to a product that is not there (404).
func demoSite() http.Handler {
	page := func(w http.ResponseWriter, title string, links ...string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body>\n", title)
		for _, l := range links {
			fmt.Fprintf(w, "<a href=\"%s\">%s</a>\n", l, l)
		}
		fmt.Fprint(w, "</body></html>\n")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		page(w, "Demo shop", "/c/1", "/c/2", "/c/3#top", "https://example.com/elsewhere")
	})
	mux.HandleFunc("GET /c/{n}", func(w http.ResponseWriter, r *http.Request) {
		n := r.PathValue("n")
		page(w, "Category "+n, "/", "/p/"+n+"1", "/p/"+n+"2", "/p/"+n+"9")
	})
	mux.HandleFunc("GET /p/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if len(id) != 2 || !strings.Contains("123", id[:1]) || !strings.Contains("12", id[1:]) {
			http.NotFound(w, r)
			return
		}
		page(w, "Product "+id, "/c/"+id[:1], "/")
	})
	return mux
}
