package apify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// A crawler is a handler: Consume locks requests, runs the handler on each
// (here 4 at a time), keeps their locks alive, records results and retries,
// and releases everything at exit. It returns when the queue is done, or
// when ctx ends (SIGTERM, say).
func ExampleRequestQueueClient_Consume() {
	srv := apifytest.NewServer() // a stand-in for the Apify API
	defer srv.Close()
	queueID := srv.CreateQueue("shop")
	srv.AddRequests(queueID,
		apifytest.Request{URL: "https://shop.test/p/1"},
		apifytest.Request{URL: "https://shop.test/p/2"},
		apifytest.Request{URL: "https://shop.test/gone"})
	c := srv.Client() // in an Actor: apify.NewClientFromEnv()
	defer c.CloseIdleConnections()

	stats, err := c.RequestQueue(queueID).Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
		if strings.HasSuffix(req.URL, "/gone") {
			return fmt.Errorf("404 at %s: %w", req.URL, apify.ErrNoRetry) // fails at once, recorded on the request
		}
		// Fetch req.URL with ctx here; what the handler puts in UserData is saved.
		req.UserData, _ = json.Marshal(map[string]string{"title": "Product " + req.URL[len(req.URL)-1:]})
		return nil
	}, apify.ConsumeOptions{ClientKey: "crawler-1", Concurrency: 4, LockDuration: time.Minute})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Println("crawler failed:", err)
		return
	}
	fmt.Printf("handled %d, failed %d\n", stats.Handled, stats.Failed)
	// Output: handled 2, failed 1
}
