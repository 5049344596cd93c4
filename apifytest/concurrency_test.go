package apifytest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// 32 clients share one queue: each locks from the head, then prolongs,
// handles, or gives back what it holds, sometimes bulk-unlocks, while the
// clock jumps forward so that locks also expire under their feet. Run with
// -race. At the end every request was handled exactly once, nobody handled
// a request it did not hold, and the queue's counters agree with its state.
// (A client whose lock expired may still mark the request handled after
// someone else did, once nobody holds it: the response says
// wasAlreadyHandled, and that is not a second first handling.)
func TestConcurrentClients(t *testing.T) {
	const (
		clients  = 32
		requests = 2000
		rounds   = 400 // per client, an upper bound
	)
	clock := NewManualClock(t0)
	s := Start(t, WithClock(clock))
	q := s.CreateQueue("busy")
	seed := make([]Request, requests)
	for i := range seed {
		seed[i] = Request{URL: fmt.Sprintf("https://example.com/%d", i)}
	}
	s.AddRequests(q, seed...)

	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport}
	var handledBy sync.Map // request ID -> the clientKey that handled it first
	var late, unexpected atomic.Int64
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := workerTB{t} // this goroutine is not the test's: no t.Fatal here
			key := fmt.Sprintf("client-%02d", w)
			c := &rawClient{t: t, base: s.URL, hc: hc}
			sdk := s.Client()
			for round := 0; round < rounds; round++ {
				r := c.do(OpListAndLockHead, "POST", headLock(q, 30, 1+w%5, key), nil)
				if r.Status != http.StatusCreated {
					unexpected.Add(1)
					return
				}
				items := r.items(t)
				if len(items) == 0 && len(s.Locked(q)) == 0 {
					return // nothing pending, nothing locked: done
				}
				for i, it := range items {
					id, uk := it["id"].(string), it["uniqueKey"].(string)
					switch (round + i + w) % 7 {
					case 0: // give it back
						r := c.do(OpDeleteRequestLock, "DELETE", reqPath(q, id, "/lock", "clientKey="+key+"&forefront=true"), nil)
						if r.Status != http.StatusNoContent && r.errType() != "request-handled-or-locked" {
							unexpected.Add(1)
						}
					case 1: // prolong, then handle
						c.do(OpProlongRequestLock, "PUT", reqPath(q, id, "/lock", "lockSecs=30&clientKey="+key), nil)
						fallthrough
					default: // handle
						r := c.do(OpUpdateRequest, "PUT", reqPath(q, id, "", "clientKey="+key),
							map[string]any{"uniqueKey": uk, "url": it["url"], "handledAt": "2026-03-14T16:00:00Z"})
						switch {
						case r.Status == http.StatusOK && r.data(t)["wasAlreadyHandled"] == true:
							// Our lock expired, someone else took and handled the
							// request, and it is unlocked: marking it again is
							// allowed and reported.
							late.Add(1)
						case r.Status == http.StatusOK:
							if prev, loaded := handledBy.LoadOrStore(id, key); loaded {
								t.Errorf("%s handled %s after %s did", key, id, prev)
							}
						case r.errType() == "request-handled-or-locked":
							// the lock expired and someone else took it: fine
						default:
							unexpected.Add(1)
						}
					}
				}
				switch {
				case w == 0 && round%10 == 0:
					clock.Advance(31 * time.Second) // every lock held now expires
				case round%13 == 5:
					if _, err := sdk.RequestQueue(q).UnlockRequests(context.Background(), key); err != nil {
						unexpected.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected responses", n)
	}
	t.Logf("%d late re-handlings of requests handled by another client", late.Load())
	// Finish what is left with one client, then check the books.
	clock.Advance(time.Hour)
	c := raw(t, s)
	for {
		r := c.do(OpListAndLockHead, "POST", headLock(q, 30, 25, "closer"), nil)
		if len(r.items(t)) == 0 {
			break
		}
		for _, it := range r.items(t) {
			expectStatus(t, c.do(OpUpdateRequest, "PUT", reqPath(q, it["id"].(string), "", "clientKey=closer"),
				map[string]any{"uniqueKey": it["uniqueKey"], "url": it["url"], "handledAt": "2026-03-14T17:00:00Z"}), 200)
			handledBy.Store(it["id"], "closer")
		}
	}
	count := 0
	handledBy.Range(func(any, any) bool { count++; return true })
	d := c.do(OpGetQueue, "GET", "/v2/request-queues/"+q, nil).data(t)
	if count != requests || len(s.Handled(q)) != requests || len(s.Pending(q)) != 0 || len(s.Locked(q)) != 0 ||
		fmt.Sprint(d["handledRequestCount"]) != fmt.Sprint(requests) || fmt.Sprint(d["pendingRequestCount"]) != "0" {
		t.Errorf("handled %d (state %d), pending %d, locked %d; queue %v",
			count, len(s.Handled(q)), len(s.Pending(q)), len(s.Locked(q)), d)
	}
	if d["hadMultipleClients"] != true {
		t.Error("hadMultipleClients is false after 33 clients")
	}
}
