package apify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/rqkit/apify"
)

// A stand-in for the Apify API, so the examples run offline.
func fakeAPI(status int, body string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
}

func ExampleRequestQueueClient_UnlockRequests() {
	api := fakeAPI(http.StatusOK, `{"data":{"unlockedCount":10}}`)
	defer api.Close()

	c, err := apify.NewClient(apify.WithBaseURL(api.URL), apify.WithToken("my-apify-token"))
	if err != nil {
		fmt.Println(err)
		return
	}

	// At shutdown: release every lock this crawler holds, within 5 seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.RequestQueue("WkzbQMuFYuamGv3YF").UnlockRequests(ctx, "crawler-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("unlocked", res.UnlockedCount)
	// Output: unlocked 10
}

func ExampleAPIError() {
	api := fakeAPI(http.StatusNotFound, `{"error":{"type":"record-not-found","message":"Queue was not found"}}`)
	defer api.Close()

	c, _ := apify.NewClient(apify.WithBaseURL(api.URL))
	_, err := c.RequestQueue("abc").UnlockRequests(context.Background(), "crawler-1")

	var apiErr *apify.APIError
	if errors.As(err, &apiErr) {
		fmt.Println("status:", apiErr.StatusCode)
		fmt.Println("type:", apiErr.Type)
		fmt.Println("attempts:", apiErr.Attempts)
	}
	fmt.Println("not found:", errors.Is(err, apify.ErrNotFound))
	fmt.Println(err)
	// Output:
	// status: 404
	// type: record-not-found
	// attempts: 1
	// not found: true
	// apify: POST /v2/request-queues/abc/requests/unlock: 404 record-not-found: Queue was not found
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
