package apify_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// benchDrain is how many requests one iteration of BenchmarkConsume drains.
const benchDrain = 10_000

// BenchmarkConsume drains a queue of 10,000 requests with a no-op handler,
// from an apifytest server over loopback, 16 at a time, two ways in the same
// run and on the same kind of client (see bench/README.md):
//
//	impl=loop     a minimal hand-written loop: 16 goroutines, each locks 25
//	              with head/lock, then GetRequest and UpdateRequest (handled)
//	              for each; nothing else (no prolong, no retries, no release)
//	impl=consume  RequestQueueClient.Consume, Concurrency 16
//
// Each reports handled/s (from the first call to the moment the last
// request's handler returned, so Consume's one-second end-of-queue check and
// its start and exit unlocks are not counted; ns/op counts everything) and
// calls/req (queue calls the emulator received per handled request).
func BenchmarkConsume(b *testing.B) {
	for _, impl := range []string{"loop", "consume"} {
		b.Run("impl="+impl, func(b *testing.B) {
			srv := apifytest.Start(b)
			c := srv.Client(apify.WithRetryWait(apify.DefaultRetryWaitMin, apify.DefaultRetryWaitMax))
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			var busy time.Duration
			calls := 0
			for i := range b.N {
				b.StopTimer()
				q := c.RequestQueue(seedBench(srv, fmt.Sprintf("bench-%d", i), benchDrain))
				before := totalCalls(srv)
				b.StartTimer()
				start := time.Now()
				last := drain(b, impl, q)
				busy += last.Sub(start)
				b.StopTimer()
				calls += totalCalls(srv) - before
				if got := len(srv.Handled(q.ID())); got != benchDrain {
					b.Fatalf("%s handled %d of %d", impl, got, benchDrain)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*benchDrain)/busy.Seconds(), "handled/s")
			b.ReportMetric(float64(calls)/float64(b.N*benchDrain), "calls/req")
		})
	}
}

// BenchmarkConsumeRateLimited is BenchmarkConsume with the emulator's model
// of Apify's rate limits on (400 request-CRUD calls/s, 40 head/lock, 60
// other, per queue) and four consumers of Concurrency 16 sharing one queue
// of 2,000 requests. The sustained ceiling is 400 CRUD calls/s / 2 calls per
// request = 200 handled/s; the model's bucket starts full (one second's
// worth of calls), so over a run of T seconds the limits allow at most
// (400 + 400·T) / 2 handled requests. It reports handled/s and of-ceiling,
// the handled requests as a fraction of what the limits allowed in the run
// (to the last handler's return). One iteration takes about 10 s.
func BenchmarkConsumeRateLimited(b *testing.B) {
	const n, consumers = 2000, 4
	srv := apifytest.Start(b, apifytest.WithRateLimits(apifytest.DefaultRateLimits))
	c := srv.Client(apify.WithRetryWait(apify.DefaultRetryWaitMin, apify.DefaultRetryWaitMax))
	defer c.CloseIdleConnections()
	var busy time.Duration
	refused := 0
	for i := range b.N {
		b.StopTimer()
		queueID := seedBench(srv, fmt.Sprintf("limited-%d", i), n)
		time.Sleep(2 * time.Second) // the buckets refill after the last iteration
		limitedBefore := 0
		for _, op := range apifytest.Operations() {
			limitedBefore += srv.RateLimited(op)
		}
		b.StartTimer()
		start := time.Now()
		var lastNanos atomic.Int64
		var wg sync.WaitGroup
		for k := range consumers {
			wg.Go(func() {
				stats, err := c.RequestQueue(queueID).Consume(context.Background(), func(context.Context, *apify.Request) error {
					lastNanos.Store(time.Now().UnixNano())
					return nil
				}, apify.ConsumeOptions{ClientKey: fmt.Sprintf("consumer-%d", k), Concurrency: 16})
				if err != nil || stats.Failed+stats.Retried > 0 {
					b.Errorf("consumer %d: %v, %+v", k, err, stats)
				}
			})
		}
		wg.Wait()
		busy += time.Unix(0, lastNanos.Load()).Sub(start)
		b.StopTimer()
		if got := len(srv.Handled(queueID)); got != n {
			b.Fatalf("handled %d of %d", got, n)
		}
		for _, op := range apifytest.Operations() {
			refused += srv.RateLimited(op)
		}
		refused -= limitedBefore
		b.StartTimer()
	}
	secs := busy.Seconds() / float64(b.N)
	b.ReportMetric(float64(n)/secs, "handled/s")
	b.ReportMetric(float64(n)/rateCeiling(secs), "of-ceiling")
	b.ReportMetric(float64(refused)/float64(b.N*n), "429s/req")
}

// rateCeiling is how many requests Apify's limits allow to be handled in a
// run of secs seconds that starts with full buckets: 400 request-CRUD calls
// at once plus 400 a second, 2 calls per request.
func rateCeiling(secs float64) float64 {
	crud := float64(apifytest.DefaultRateLimits.RequestCRUD)
	return (crud + crud*secs) / 2
}

// seedBench creates a queue of n requests and returns its ID.
func seedBench(srv *apifytest.Server, name string, n int) string {
	queueID := srv.CreateQueue(name)
	reqs := make([]apifytest.Request, n)
	for i := range reqs {
		reqs[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/%s/%d", name, i)}
	}
	srv.AddRequests(queueID, reqs...)
	return queueID
}

// drain empties the queue one way and returns when the last request's
// handler (or the loop's work step) returned.
func drain(b *testing.B, impl string, q *apify.RequestQueueClient) time.Time {
	ctx := context.Background()
	var last atomic.Int64
	work := func() { last.Store(time.Now().UnixNano()) } // the no-op handler
	switch impl {
	case "consume":
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { work(); return nil },
			apify.ConsumeOptions{ClientKey: "consume", Concurrency: 16})
		if err != nil || stats.Handled != benchDrain {
			b.Fatalf("consume: %v, %+v", err, stats)
		}
	case "loop":
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for {
					head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 25, LockDuration: time.Minute, ClientKey: "loop"})
					if err != nil {
						b.Error(err)
						return
					}
					if len(head.Items) == 0 {
						if !head.QueueHasLockedRequests {
							return
						}
						time.Sleep(10 * time.Millisecond) // others finish their batches
						continue
					}
					for _, it := range head.Items {
						req, err := q.GetRequest(ctx, it.ID)
						if err != nil {
							b.Error(err)
							return
						}
						work()
						req.HandledAt = time.Now()
						if _, err := q.UpdateRequest(ctx, *req, apify.RequestOptions{ClientKey: "loop", Forefront: false}); err != nil {
							b.Error(err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
	}
	return time.Unix(0, last.Load())
}
