package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's main command, offline: the demo site, crawled to depth 2.
func TestOffline(t *testing.T) {
	t.Setenv("APIFY_TOKEN", "")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(nil, &out, &errOut), errOut.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 12, out.String())
	assert.Regexp(t, `^APIFY_TOKEN is not set: crawling http://127\.0\.0\.1:\d+/ offline, the in-process emulator as the queue$`, lines[0])
	titles := map[string]int{}
	for _, l := range lines[1:11] {
		var p Page
		require.NoError(t, json.Unmarshal([]byte(l), &p), l)
		titles[p.Title] = p.Depth
	}
	assert.Equal(t, map[string]int{"Demo shop": 0, "Category 1": 1, "Category 2": 1, "Category 3": 1,
		"Product 11": 2, "Product 12": 2, "Product 21": 2, "Product 22": 2, "Product 31": 2, "Product 32": 2}, titles)
	assert.Regexp(t, `^crawled 10 pages, failed 3, in queue [A-Za-z0-9]{17} \(\d+ queue calls\)$`, lines[11])
	assert.Empty(t, errOut.String())
}

// With a token: the Apify API (here the emulator, behind a fake of the
// dataset endpoint), the queue given, the pages saved to the run's dataset
// with Client.Do, the queue one client throughout.
func TestOnline(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithToken("qs-token"))
	queueID := srv.CreateQueue("online")
	var mu sync.Mutex
	var pushed []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/datasets/ds-1/items" {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			pushed = append(pushed, r.Method+" "+r.Header.Get("Authorization")+" "+string(body))
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	defer api.Close()
	site := httptest.NewServer(demoSite())
	defer site.Close()

	t.Setenv("APIFY_TOKEN", "qs-token")
	t.Setenv("APIFY_API_BASE_URL", api.URL)
	t.Setenv("APIFY_QUEUE_ID", queueID)
	t.Setenv("ACTOR_DEFAULT_DATASET_ID", "ds-1")
	t.Setenv("ACTOR_RUN_ID", "RUN-quickstart")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"--seed", site.URL + "/c/1", "--depth", "1"}, &out, &errOut), errOut.String())
	assert.Regexp(t, `(?m)^crawled 4 pages, failed 1, in queue `+queueID+` `, out.String())
	require.Len(t, pushed, 4) // /c/1 and its links /, /p/11, /p/12 (/p/19 is not there)
	for _, p := range pushed {
		assert.Regexp(t, `^POST Bearer qs-token \{"url":"`+regexp.QuoteMeta(site.URL)+`/([cp]/\d+)?","depth":\d,"title":"[^"]+","links":\d\}$`, p)
	}
	info, err := srv.Client().RequestQueue(queueID).Get(context.Background())
	require.NoError(t, err)
	assert.False(t, info.HadMultipleClients, "seeded, and links added, with the consumer's clientKey")
	assert.Equal(t, 5, info.TotalRequestCount)
	assert.Empty(t, srv.Locked(queueID))
	assert.NotContains(t, out.String()+errOut.String(), "qs-token")
}

// The handler's errors: a page that is not there fails at once, a 5xx is
// tried again, a request whose userData is not the crawler's fails at once.
func TestHandlerFailures(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		n := hits[r.URL.Path]
		mu.Unlock()
		switch {
		case r.URL.Path == "/flaky" && n == 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case r.URL.Path == "/gone":
			http.NotFound(w, r)
		default:
			io.WriteString(w, "<title>ok</title>")
		}
	}))
	defer site.Close()
	srv := apifytest.Start(t)
	queueID := srv.CreateQueue("failures")
	ids := srv.AddRequests(queueID, apifytest.Request{URL: site.URL + "/gone"}, apifytest.Request{URL: site.URL + "/flaky"},
		apifytest.Request{URL: site.URL + "/odd", UserData: json.RawMessage(`{"depth":"deep"}`)}, apifytest.Request{URL: site.URL + "/plain"})
	q := srv.Client().RequestQueue(queueID)
	save := func(context.Context, Page) error { return nil }
	stats, err := q.Consume(t.Context(), crawl(q, "k", 1, save), apify.ConsumeOptions{ClientKey: "k", Concurrency: 4, Prefetch: -1})
	require.NoError(t, err)
	assert.Equal(t, 2, stats.Handled)
	assert.Equal(t, 2, stats.Failed)
	assert.Equal(t, 1, stats.Retried)

	gone, _ := srv.Request(queueID, ids[0])
	assert.Equal(t, 0, gone.RetryCount)
	assert.Len(t, gone.ErrorMessages, 1)
	assert.Contains(t, gone.ErrorMessages[0], "404 Not Found")
	flaky, _ := srv.Request(queueID, ids[1])
	assert.Equal(t, 1, flaky.RetryCount)
	assert.True(t, flaky.Handled())
	odd, _ := srv.Request(queueID, ids[2])
	assert.Contains(t, odd.ErrorMessages[0], `bad userData {"depth":"deep"}`)
	assert.Zero(t, hits["/odd"], "not fetched")
	plain, _ := srv.Request(queueID, ids[3])
	assert.True(t, plain.Handled(), "no userData: a start URL, depth 0")
	assert.Empty(t, plain.ErrorMessages)
}

func TestUsage(t *testing.T) {
	t.Setenv("APIFY_TOKEN", "some-token")
	t.Setenv("APIFY_QUEUE_ID", "")
	t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", "")
	for _, args := range [][]string{
		{"--seed", "https://example.com/"},        // no queue
		{"--queue", "q"},                          // no seed
		{"--queue", "q", "--seed", "example.com"}, // not a URL
		{"--queue", "q", "https://example.com/"},  // a seed without --seed
		{"--queue", "q", "--depth", "-1", "--seed", "https://example.com/"},
	} {
		var out, errOut bytes.Buffer
		assert.Equal(t, 2, run(args, &out, &errOut), "%v: %s", args, errOut.String())
		assert.NotEmpty(t, errOut.String(), args)
	}
}
