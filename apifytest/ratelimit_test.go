package apifytest

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
)

// Every response carries its class's X-RateLimit-Limit, with the model on
// or off, and nothing is refused while it is off.
func TestRateLimitHeaderIsAlwaysSent(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want [3]string // request CRUD, batch, other
	}{
		{"model off: the documented limits", nil, [3]string{"400", "40", "60"}},
		{"model on with custom limits", []Option{WithRateLimits(RateLimits{RequestCRUD: 7, Batch: 5, Other: 3})}, [3]string{"7", "5", "3"}},
		{"zero fields mean the default", []Option{WithRateLimits(RateLimits{Batch: 5})}, [3]string{"400", "5", "60"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, q, ids := newQueue(t, 2, tc.opts...)
			c := raw(t, s)
			check := func(r resp, want string) {
				t.Helper()
				if got := r.Header.Get("X-RateLimit-Limit"); got != want {
					t.Errorf("status %d: X-RateLimit-Limit = %q, want %q", r.Status, got, want)
				}
			}
			qp := "/v2/request-queues/" + q
			check(c.do(OpGetRequest, "GET", qp+"/requests/"+ids[0], nil), tc.want[0])
			check(c.do(OpAddRequest, "POST", qp+"/requests", map[string]any{"url": "https://x.test/", "uniqueKey": "x"}), tc.want[0])
			check(c.do(OpProlongRequestLock, "PUT", qp+"/requests/"+ids[0]+"/lock?lockSecs=60&clientKey=k", nil), tc.want[0]) // a 403 too
			check(c.do(OpListAndLockHead, "POST", qp+"/head/lock?lockSecs=60&limit=1&clientKey=k", nil), tc.want[1])
			check(c.do(OpBatchAddRequests, "POST", qp+"/requests/batch", []any{}), tc.want[1])
			check(c.do(OpGetHead, "GET", qp+"/head", nil), tc.want[2])
			check(c.do(OpUnlockRequests, "POST", qp+"/requests/unlock?clientKey=k", nil), tc.want[2])
			check(c.do(OpGetQueue, "GET", qp, nil), tc.want[2])
			check(c.do("", "GET", "/v2/nothing-here", nil), tc.want[2])
			check(c.do(OpGetQueue, "GET", "/v2/request-queues/unknown", nil), tc.want[2])
			s.FailNext(OpGetRequest, 1, Fault{Status: 503})
			check(c.do(OpGetRequest, "GET", qp+"/requests/"+ids[0], nil), tc.want[0])
		})
	}
	t.Run("model off refuses nothing", func(t *testing.T) {
		s, _, q, _ := newQueue(t, 0)
		h := s.Handler()
		for i := range 200 { // 5 times the batch limit in one instant of a ManualClock
			r := (&rawClient{t: t, h: h}).do(OpListAndLockHead, "POST", headLock(q, 60, 1, "k"+strconv.Itoa(i%10)), nil)
			expectStatus(t, r, 201)
		}
		if n := s.RateLimited(OpListAndLockHead); n != 0 {
			t.Errorf("RateLimited = %d", n)
		}
	})
}

// The model is a token bucket per queue and class that refills with the
// server's clock: limit calls at once, then one per 1/limit seconds.
func TestRateLimitModel(t *testing.T) {
	s, clock, q, ids := newQueue(t, 3, WithRateLimits(RateLimits{RequestCRUD: 4, Batch: 2, Other: 10}))
	other := s.CreateQueue("other")
	h := s.Handler()
	c := &rawClient{t: t, h: h}
	get := func(queue string) resp {
		return c.do(OpGetRequest, "GET", "/v2/request-queues/"+queue+"/requests/"+ids[0], nil)
	}
	for range 4 {
		expectStatus(t, get(q), 200)
	}
	r := get(q)
	expectError(t, r, 429, "rate-limit-exceeded", "4 requests per second")
	if ra := r.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if got := r.Header.Get("X-RateLimit-Limit"); got != "4" {
		t.Errorf("X-RateLimit-Limit on the 429 = %q", got)
	}
	// Other classes and other queues have their own budgets.
	expectStatus(t, c.do(OpGetHead, "GET", "/v2/request-queues/"+q+"/head", nil), 200)
	expectStatus(t, c.do(OpListAndLockHead, "POST", headLock(q, 60, 1, "k"), nil), 201)
	expectStatus(t, c.do(OpListAndLockHead, "POST", headLock(q, 60, 1, "k"), nil), 201)
	expectError(t, c.do(OpListAndLockHead, "POST", headLock(q, 60, 1, "k"), nil), 429, "rate-limit-exceeded", "2 requests per second")
	for range 4 { // no such request there, and within its own budget
		expectError(t, get(other), 404, "record-not-found")
	}
	for range 5 { // no such queue: a 404, never limited
		expectError(t, get("NoSuchQueue"), 404, "record-not-found")
	}
	// "~q" is the same queue as its ID.
	expectError(t, get("~q"), 429, "rate-limit-exceeded")
	// A 429 changes nothing: the lock was not taken.
	if n := len(s.LockedBy(q, "k")); n != 2 {
		t.Errorf("%d locks, want 2", n)
	}

	// A quarter second refills one call of 4 per second; a second refills all.
	clock.Advance(249 * time.Millisecond)
	expectError(t, get(q), 429, "rate-limit-exceeded")
	clock.Advance(time.Millisecond)
	expectStatus(t, get(q), 200)
	expectError(t, get(q), 429, "rate-limit-exceeded")
	clock.Advance(time.Second)
	for range 4 {
		expectStatus(t, get(q), 200)
	}
	expectError(t, get(q), 429, "rate-limit-exceeded")
	// A quiet queue does not bank more than one second's worth.
	clock.Advance(time.Hour)
	for range 4 {
		expectStatus(t, get(q), 200)
	}
	expectError(t, get(q), 429, "rate-limit-exceeded")

	if got := s.RateLimited(OpGetRequest); got != 6 {
		t.Errorf("RateLimited(OpGetRequest) = %d, want 6", got)
	}
	if got := s.RateLimited(OpListAndLockHead); got != 1 {
		t.Errorf("RateLimited(OpListAndLockHead) = %d, want 1", got)
	}
	if got := s.Calls(OpGetRequest); got != 28 {
		t.Errorf("Calls(OpGetRequest) = %d, want 28 (429s included)", got)
	}
	// Deleting a queue forgets its budgets.
	expectStatus(t, c.do(OpDeleteQueue, "DELETE", "/v2/request-queues/"+q, nil), 204)
	for k := range s.limiter.tat {
		if k.queueID == q {
			t.Errorf("bucket %v outlived its queue", k)
		}
	}
}

// Concurrent callers share one budget: of many simultaneous calls at one
// instant, exactly limit pass.
func TestRateLimitUnderConcurrency(t *testing.T) {
	s, _, q, _ := newQueue(t, 0, WithRateLimits(RateLimits{Other: 25}))
	h := s.Handler()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range 100 {
		wg.Go(func() {
			r := (&rawClient{t: t, h: h}).do(OpUnlockRequests, "POST", "/v2/request-queues/"+q+"/requests/unlock?clientKey=k"+strconv.Itoa(i), nil)
			mu.Lock()
			codes[r.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 25 || codes[429] != 75 {
		t.Errorf("statuses %v, want 25 × 200 and 75 × 429", codes)
	}
}

// Inside a synctest bubble the default clock is fake time, so a client that
// honours Retry-After gets through after a second of it.
func TestRateLimitWithTheSDKInSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewUnstartedServer(WithQueue("q"), WithRateLimits(RateLimits{Batch: 1}))
		q := s.CreateQueue("q")
		s.AddRequests(q, Request{URL: "https://a.test/"}, Request{URL: "https://b.test/"})
		c := s.Client(apify.WithRetryWait(10*time.Millisecond, 10*time.Second)).RequestQueue(q)
		ctx := context.Background()
		start := time.Now()
		for range 2 {
			h, err := c.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: "k"})
			if err != nil || len(h.Items) != 1 {
				t.Fatalf("%+v, %v", h, err)
			}
		}
		if waited := time.Since(start); waited < time.Second || waited > 2*time.Second {
			t.Errorf("waited %v of fake time, want the one second of Retry-After", waited)
		}
		if s.RateLimited(OpListAndLockHead) != 1 || s.Calls(OpListAndLockHead) != 3 {
			t.Errorf("RateLimited %d, Calls %d; want 1 and 3", s.RateLimited(OpListAndLockHead), s.Calls(OpListAndLockHead))
		}
	})
}
