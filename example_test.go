package apify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// The examples run against apifytest, the package's in-process emulator of
// the request-queue API, so they run offline; point the same code at the
// real API by leaving out the emulator.

// In an Actor run, Apify sets APIFY_TOKEN and APIFY_API_BASE_URL;
// NewClientFromEnv reads them. Here they point at the emulator.
func ExampleNewClientFromEnv() {
	srv := apifytest.NewServer(apifytest.WithToken("my-apify-token"))
	defer srv.Close()
	os.Setenv("APIFY_TOKEN", "my-apify-token")
	os.Setenv("APIFY_API_BASE_URL", srv.URL)
	defer os.Unsetenv("APIFY_TOKEN")
	defer os.Unsetenv("APIFY_API_BASE_URL")

	c, err := apify.NewClientFromEnv()
	if err != nil {
		fmt.Println(err)
		return
	}
	info, err := c.GetOrCreateRequestQueue(context.Background(), "my-crawl")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("queue:", info.Name)
	fmt.Println(c.BaseURL() == srv.URL)
	// Output:
	// queue: my-crawl
	// true
}

func ExampleClient_GetOrCreateRequestQueue() {
	srv := apifytest.NewServer()
	defer srv.Close()
	c := srv.Client()
	ctx := context.Background()

	// Inside an Actor run, apify.DefaultRequestQueueID() names the run's
	// default queue; anywhere, a queue can be found (or made) by name.
	info, err := c.GetOrCreateRequestQueue(ctx, "my-crawl")
	if err != nil {
		fmt.Println(err)
		return
	}
	queueID := info.ID
	q := c.RequestQueue(queueID)
	_, err = q.BatchAddRequests(ctx, []apify.Request{
		{URL: "https://example.com/", UniqueKey: "https://example.com/"},
		{URL: "https://example.com/about", UniqueKey: "https://example.com/about"},
	}, apify.RequestOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The same name finds the same queue.
	again, _ := c.GetOrCreateRequestQueue(ctx, "my-crawl")
	fmt.Println("same queue:", again.ID == queueID)
	fmt.Println("requests:", again.TotalRequestCount, "pending:", again.PendingRequestCount)
	// Output:
	// same queue: true
	// requests: 2 pending: 2
}

// A consumer's loop: lock a batch, work, mark each request handled by its
// ID. MarkHandled keeps what the request carries (UserData and the rest).
func ExampleRequestQueueClient_ListAndLockHead() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("my-crawl")
	srv.AddRequests(queueID,
		apifytest.Request{URL: "https://example.com/1"},
		apifytest.Request{URL: "https://example.com/2"},
		apifytest.Request{URL: "https://example.com/3"})
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()
	key := "crawler-1" // in an Actor run: apify.DefaultClientKey()

	for {
		head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 2, LockDuration: time.Minute, ClientKey: key})
		if err != nil {
			fmt.Println(err)
			return
		}
		if len(head.Items) == 0 {
			if !head.QueueHasLockedRequests {
				break // nothing pending, nothing in progress: done
			}
			time.Sleep(time.Second) // others still work; their failures come back
			continue
		}
		for _, it := range head.Items {
			fmt.Println("crawling", it.URL) // the work
			if _, err := q.MarkHandled(ctx, it.ID, apify.RequestOptions{ClientKey: key}); err != nil {
				fmt.Println(err)
				return
			}
		}
	}
	info, _ := q.Get(ctx)
	fmt.Println("handled:", info.HandledRequestCount, "of", info.TotalRequestCount)
	// Output:
	// crawling https://example.com/1
	// crawling https://example.com/2
	// crawling https://example.com/3
	// handled: 3 of 3
}

// At exit (SIGTERM, an abort, a migration), release every lock the crawler
// holds, so other crawlers can take the work at once instead of waiting for
// the locks to expire.
func ExampleRequestQueueClient_UnlockAtShutdown() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("my-crawl")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://example.com/1"}, apifytest.Request{URL: "https://example.com/2"})
	q := srv.Client().RequestQueue(queueID)
	key := "crawler-1"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 25, LockDuration: time.Hour, ClientKey: key}); err != nil {
		fmt.Println(err)
		return
	}
	cancel() // SIGTERM: the crawler's context is gone, its locks are not

	res, err := q.UnlockAtShutdown(ctx, key, 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("unlocked:", res.UnlockedCount)
	fmt.Println("pending again:", len(srv.Pending(queueID)))
	// Output:
	// unlocked: 2
	// pending again: 2
}

// List what is locked right now (by anyone), page by page.
func ExampleRequestQueueClient_ListRequests() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("my-crawl")
	for i := range 5 {
		srv.AddRequests(queueID, apifytest.Request{URL: fmt.Sprintf("https://example.com/%d", i)})
	}
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()
	_, _ = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 3, LockDuration: time.Minute, ClientKey: "crawler-1"})

	for req, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: apify.FilterLocked, PageSize: 2}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("locked:", req.URL)
	}
	// Output:
	// locked: https://example.com/0
	// locked: https://example.com/1
	// locked: https://example.com/2
}

func ExampleRequestQueueClient_UnlockRequests() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("my-crawl")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://example.com/"})
	q := srv.Client().RequestQueue(queueID)
	_, _ = q.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 10, LockDuration: time.Hour, ClientKey: "crawler-1"})

	// Release every lock this crawler holds, within 5 seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := q.UnlockRequests(ctx, "crawler-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("unlocked", res.UnlockedCount)
	// Output: unlocked 1
}

func ExampleRequestQueueClient_BatchAddRequests() {
	srv := apifytest.NewServer()
	defer srv.Close()
	q := srv.Client().RequestQueue(srv.CreateQueue("my-crawl"))

	reqs := make([]apify.Request, 60) // any number: sent 25 at a time
	for i := range reqs {
		url := fmt.Sprintf("https://example.com/page/%d", i)
		reqs[i] = apify.Request{URL: url, UniqueKey: url, UserData: json.RawMessage(`{"label":"PAGE"}`)}
	}
	res, err := q.BatchAddRequests(context.Background(), reqs, apify.RequestOptions{})
	if errors.Is(err, apify.ErrUnprocessed) {
		fmt.Println("not added:", len(res.Unprocessed)) // send them again later
	} else if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("added:", len(res.Processed))
	// Output: added: 60
}

func ExampleAPIError() {
	srv := apifytest.NewServer()
	defer srv.Close()

	_, err := srv.Client().RequestQueue("abc").UnlockRequests(context.Background(), "crawler-1")

	var apiErr *apify.APIError
	if errors.As(err, &apiErr) {
		fmt.Println("status:", apiErr.StatusCode)
		fmt.Println("type:", apiErr.Type)
		fmt.Println("attempts:", apiErr.Attempts)
	}
	fmt.Println("not found:", errors.Is(err, apify.ErrNotFound))
	// Output:
	// status: 404
	// type: record-not-found
	// attempts: 1
	// not found: true
}

func ExampleNewClient_invalidClientKey() {
	c, _ := apify.NewClient()
	// Rejected before any I/O: the API accepts clientKeys of 1 to 32 characters.
	_, err := c.RequestQueue("abc").UnlockRequests(context.Background(), "a-client-key-that-is-far-too-long-for-the-api")
	fmt.Println(errors.Is(err, apify.ErrInvalidClientKey))
	fmt.Println(err)
	// Output:
	// true
	// apify: invalid clientKey: the clientKey has 45 characters; the API accepts 1 to 32
}
