package apify_test

import (
	"context"
	"fmt"
	"net/url"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// Do reaches an endpoint this package does not wrap (here, to stay offline,
// one the emulator serves) with the Client's token, retries and errors.
func ExampleClient_Do() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("shop")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://shop.test/"})
	c := srv.Client()
	defer c.CloseIdleConnections()

	var queue struct {
		Name         string `json:"name"`
		PendingCount int    `json:"pendingRequestCount"`
	}
	if err := c.Do(context.Background(), "GET", "/request-queues/"+queueID, nil, nil, &queue); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %d pending\n", queue.Name, queue.PendingCount)

	err := c.Do(context.Background(), "GET", "/request-queues/"+queueID, url.Values{"token": {"t"}}, nil, &queue)
	fmt.Println(err)
	// Output:
	// shop: 1 pending
	// apify: Do: invalid input: the query has a "token" parameter; the token never goes in the URL: give it with WithToken, which sends it in the Authorization header
}

// RunRequestQueue addresses an Actor run's default queue by the run.
func ExampleClient_RunRequestQueue() {
	srv := apifytest.NewServer(apifytest.WithRunToken("run-token", "HG7ML7M8z78YcAPEB"))
	defer srv.Close()
	c := srv.Client()
	defer c.CloseIdleConnections()

	q := c.RunRequestQueue("HG7ML7M8z78YcAPEB") // GET, POST ... /v2/actor-runs/HG7ML7M8z78YcAPEB/request-queue/...
	if _, err := q.AddRequest(context.Background(), apify.Request{URL: "https://shop.test/", UniqueKey: "home"}, apify.RequestOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(srv.Pending(srv.RunQueue("HG7ML7M8z78YcAPEB"))), "pending in the run's queue")
	// Output: 1 pending in the run's queue
}
