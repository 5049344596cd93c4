package apifytest_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// A crawler locks work, "crashes", and on restart releases its locks in one
// call; the test reads the queue's state directly.
func ExampleNewServer() {
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	srv.AddRequests(queueID,
		apifytest.Request{URL: "https://example.com/a"},
		apifytest.Request{URL: "https://example.com/b"},
		apifytest.Request{URL: "https://example.com/c"},
	)

	// Any HTTP client can talk to the emulator; here, plain net/http.
	resp, err := http.Post(srv.URL+"/v2/request-queues/"+queueID+"/head/lock?lockSecs=60&limit=2&clientKey=worker-1", "", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("head/lock:", resp.Status)
	for _, r := range srv.LockedBy(queueID, "worker-1") {
		fmt.Println("locked by worker-1:", r.URL)
	}

	// The SDK client comes pointed at the server, with short retry waits.
	srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Status: http.StatusServiceUnavailable})
	res, err := srv.Client().RequestQueue(queueID).UnlockRequests(context.Background(), "worker-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unlocked:", res.UnlockedCount, "in", srv.Calls(apifytest.OpUnlockRequests), "calls")
	for _, r := range srv.Pending(queueID) {
		fmt.Println("pending:", r.URL)
	}
	// Output:
	// head/lock: 201 Created
	// locked by worker-1: https://example.com/a
	// locked by worker-1: https://example.com/b
	// unlocked: 2 in 2 calls
	// pending: https://example.com/a
	// pending: https://example.com/b
	// pending: https://example.com/c
}

// With a ManualClock, a test makes locks expire without sleeping.
func ExampleManualClock() {
	clock := apifytest.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := apifytest.NewServer(apifytest.WithClock(clock))
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://example.com/a"})

	resp, err := http.Post(srv.URL+"/v2/request-queues/"+queueID+"/head/lock?lockSecs=30&clientKey=w", "", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("lock expires at", srv.Locked(queueID)[0].Lock.ExpiresAt.Format(time.TimeOnly))
	clock.Advance(30 * time.Second)
	fmt.Println("locked:", len(srv.Locked(queueID)), "pending:", len(srv.Pending(queueID)))
	// Output:
	// lock expires at 00:00:30
	// locked: 0 pending: 1
}

// Inside an Actor run, the run's token unlocks every lock the run holds,
// whatever clientKey took them.
func ExampleWithRunToken() {
	srv := apifytest.NewServer(apifytest.WithRunToken("run-token", "RUN-1"))
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://example.com/a"}, apifytest.Request{URL: "https://example.com/b"})
	for _, key := range []string{"old-process", "new-process"} {
		req, _ := http.NewRequest("POST", srv.URL+"/v2/request-queues/"+queueID+"/head/lock?lockSecs=60&limit=1&clientKey="+key, nil)
		req.Header.Set("Authorization", "Bearer run-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
	}
	client := srv.Client(apify.WithToken("run-token"))
	res, err := client.RequestQueue(queueID).UnlockRequests(context.Background(), "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unlocked:", res.UnlockedCount)
	// Output:
	// unlocked: 2
}

// The rate-limit model refuses the call over a queue's budget with 429 and
// Retry-After; with a ManualClock the budget refills only when the test
// moves the clock.
func ExampleWithRateLimits() {
	clock := apifytest.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := apifytest.NewServer(apifytest.WithClock(clock),
		apifytest.WithRateLimits(apifytest.RateLimits{Batch: 2})) // the others as documented
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	lock := func() {
		resp, err := http.Post(srv.URL+"/v2/request-queues/"+queueID+"/head/lock?lockSecs=60&clientKey=k", "", nil)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Printf("%s; X-RateLimit-Limit %s; Retry-After %q\n", resp.Status, resp.Header.Get("X-RateLimit-Limit"), resp.Header.Get("Retry-After"))
	}
	lock()
	lock()
	lock()
	clock.Advance(500 * time.Millisecond) // half a second refills one call of 2 per second
	lock()
	fmt.Println("refused:", srv.RateLimited(apifytest.OpListAndLockHead))
	// Output:
	// 201 Created; X-RateLimit-Limit 2; Retry-After ""
	// 201 Created; X-RateLimit-Limit 2; Retry-After ""
	// 429 Too Many Requests; X-RateLimit-Limit 2; Retry-After "1"
	// 201 Created; X-RateLimit-Limit 2; Retry-After ""
	// refused: 1
}

// A flaky network between a crawler and the API: the answer of every 2nd
// add is lost after the request was added. The SDK retries the call, and
// the retry finds the request already there.
func ExampleServer_InjectFault() {
	srv := apifytest.NewUnstartedServer() // its Client serves it in memory
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	remove := srv.InjectFault(apifytest.OpAddRequest, apifytest.Fault{DropResponse: true, Every: 2})
	defer remove()

	q := srv.Client().RequestQueue(queueID)
	for _, u := range []string{"https://example.com/a", "https://example.com/b"} {
		reg, err := q.AddRequest(context.Background(), apify.Request{URL: u, UniqueKey: u}, apify.RequestOptions{})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(u, "was already present:", reg.WasAlreadyPresent)
	}
	fmt.Println("calls:", srv.Calls(apifytest.OpAddRequest), "requests:", len(srv.Requests(queueID)))
	// Output:
	// https://example.com/a was already present: false
	// https://example.com/b was already present: true
	// calls: 3 requests: 2
}

// A slow answer: the API locks the request as the call arrives, but its
// answer takes an hour. The caller gives up after 20 ms without an answer,
// yet the request is locked under its key: a consumer must count a lock
// from when it sent the call, not from when the answer came.
func ExampleFault_responseDelay() {
	srv := apifytest.NewUnstartedServer() // its Client serves it in memory
	defer srv.Close()
	queueID := srv.CreateQueue("crawl")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://example.com/a"})
	srv.FailNext(apifytest.OpListAndLockHead, 1, apifytest.Fault{ResponseDelay: time.Hour})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	q := srv.Client(apify.WithMaxRetries(0)).RequestQueue(queueID)
	_, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, ClientKey: "impatient"})
	fmt.Println("gave up:", errors.Is(err, context.DeadlineExceeded))
	for _, r := range srv.Locked(queueID) {
		fmt.Println(r.URL, "is locked by", r.Lock.ClientKey)
	}
	fmt.Println("faulted calls:", srv.Faulted(apifytest.OpListAndLockHead))
	// Output:
	// gave up: true
	// https://example.com/a is locked by impatient
	// faulted calls: 1
}
