package apify_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// Measurements of Consume (see bench/README.md for the commands and the
// recorded runs):
//
//   - BenchmarkConsume: drain and end-to-end rates against a hand-written
//     loop, in interleaved pairs in one process, over loopback;
//   - BenchmarkConsumeFinishTail: the time from the last handler's return
//     to Consume's return, over many small runs;
//   - BenchmarkConsumeRateLimited: the rate under the emulator's model of
//     Apify's rate limits;
//   - TestConsumeCallsTable (APIFY_SOAK set): queue calls per handled
//     request, by operation, in simulated time.

// benchConcurrency is the handlers (or loop goroutines) at once in
// BenchmarkConsume and BenchmarkConsumeFinishTail.
const benchConcurrency = 16

// BenchmarkConsume drains a queue of 10,000 (and of 20,000) requests with a
// no-op handler, from an apifytest server over loopback, 16 at a time, two
// ways on the same server and the same kind of client. Each iteration is a
// pair: both ways, one after the other, in alternating order, each on a
// fresh queue:
//
//	loop     a minimal hand-written loop: 16 goroutines, each locks 25 with
//	         head/lock, then GetRequest and UpdateRequest (handled) for
//	         each; nothing else (no prolong, no retries, no release, no
//	         start-up unlock); when the head is empty but locked elsewhere
//	         it sleeps 10 ms
//	consume  RequestQueueClient.Consume, Concurrency 16, other options at
//	         their defaults
//
// For each way it measures the drain rate (requests ÷ the time from the
// first handler's start to the last handler's return), the end-to-end rate
// (requests ÷ the time from the call to its return: Consume's start-up
// unlock, finish detection and final unlock included), the finish tail
// (from the last handler's return to the return), the queue calls per
// request, and the process's CPU time per request (the server's is in it,
// the same for both ways; other jobs on a shared machine disturb it less
// than the rates). It reports the medians over the pairs of Consume ÷ loop
// for both rates and for the CPU time, with their minimum and maximum, the
// medians of each way's rates, tails and CPU time, the calls, bytes and
// allocations per request of each way (the process's: the server's are in
// both), and logs every pair so that the spread can be read. ns/op, B/op and allocs/op are those of one pair.
func BenchmarkConsume(b *testing.B) {
	for _, n := range []int{10_000, 20_000} {
		b.Run(fmt.Sprintf("requests=%d", n), func(b *testing.B) {
			srv := apifytest.Start(b)
			b.ReportAllocs()
			var pairs []benchPair
			for b.Loop() {
				order := []string{"loop", "consume"}
				if len(pairs)%2 == 1 {
					order = []string{"consume", "loop"}
				}
				var p benchPair
				for _, impl := range order {
					r := benchDrainOnce(b, srv, impl, n, 0)
					if impl == "loop" {
						p.loop = r
					} else {
						p.consume = r
					}
				}
				pairs = append(pairs, p)
			}
			pick := func(f func(benchPair) float64) []float64 {
				out := make([]float64, len(pairs))
				for i, p := range pairs {
					out[i] = f(p)
				}
				return out
			}
			drainRatio := pick(func(p benchPair) float64 { return p.consume.drainRate(n) / p.loop.drainRate(n) })
			e2eRatio := pick(func(p benchPair) float64 { return p.consume.e2eRate(n) / p.loop.e2eRate(n) })
			b.ReportMetric(median(drainRatio), "drain-ratio")
			b.ReportMetric(slices.Min(drainRatio), "drain-ratio-min")
			b.ReportMetric(slices.Max(drainRatio), "drain-ratio-max")
			b.ReportMetric(median(e2eRatio), "e2e-ratio")
			b.ReportMetric(slices.Min(e2eRatio), "e2e-ratio-min")
			b.ReportMetric(slices.Max(e2eRatio), "e2e-ratio-max")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return p.loop.drainRate(n) })), "loop-drain/s")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return p.consume.drainRate(n) })), "consume-drain/s")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return p.loop.e2eRate(n) })), "loop-e2e/s")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return p.consume.e2eRate(n) })), "consume-e2e/s")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return inMS(p.loop.tail()) })), "loop-tail-ms")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return inMS(p.consume.tail()) })), "consume-tail-ms")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.loop.calls) / float64(n) })), "loop-calls/req")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.consume.calls) / float64(n) })), "consume-calls/req")
			if pairs[0].loop.cpu > 0 {
				cpuRatio := pick(func(p benchPair) float64 { return float64(p.consume.cpu) / float64(p.loop.cpu) })
				b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.loop.cpu.Microseconds()) / float64(n) })), "loop-cpu-µs/req")
				b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.consume.cpu.Microseconds()) / float64(n) })), "consume-cpu-µs/req")
				b.ReportMetric(median(cpuRatio), "cpu-ratio")
				b.ReportMetric(slices.Min(cpuRatio), "cpu-ratio-min")
				b.ReportMetric(slices.Max(cpuRatio), "cpu-ratio-max")
			}
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.loop.bytes) / float64(n) })), "loop-B/req")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.consume.bytes) / float64(n) })), "consume-B/req")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.loop.allocs) / float64(n) })), "loop-allocs/req")
			b.ReportMetric(median(pick(func(p benchPair) float64 { return float64(p.consume.allocs) / float64(n) })), "consume-allocs/req")
			// Every pair, one line per measure (the testing package keeps
			// only 10 lines of a benchmark's log).
			b.Logf("%d pairs, in order (odd: the loop first; even: Consume first):", len(pairs))
			for _, m := range []struct {
				name, format string
				f            func(benchPair) float64
			}{
				{"drain ratio", "%.3f", func(p benchPair) float64 { return p.consume.drainRate(n) / p.loop.drainRate(n) }},
				{"e2e ratio", "%.3f", func(p benchPair) float64 { return p.consume.e2eRate(n) / p.loop.e2eRate(n) }},
				{"cpu ratio", "%.3f", func(p benchPair) float64 { return float64(p.consume.cpu) / float64(p.loop.cpu) }},
				{"loop drain/s", "%.0f", func(p benchPair) float64 { return p.loop.drainRate(n) }},
				{"consume drain/s", "%.0f", func(p benchPair) float64 { return p.consume.drainRate(n) }},
				{"loop tail ms", "%.2f", func(p benchPair) float64 { return inMS(p.loop.tail()) }},
				{"consume tail ms", "%.2f", func(p benchPair) float64 { return inMS(p.consume.tail()) }},
				{"consume calls/req", "%.4f", func(p benchPair) float64 { return float64(p.consume.calls) / float64(n) }},
			} {
				var line strings.Builder
				for _, v := range pick(m.f) {
					fmt.Fprintf(&line, " "+m.format, v)
				}
				b.Logf("%s:%s", m.name, line.String())
			}
		})
	}
}

// BenchmarkConsumeFinishTail measures how long Consume takes to return once
// the queue is done: the time from the last handler's return to Consume's
// return, on a queue of 200 requests no other client holds locks on, 16 at
// a time, over loopback, one run per iteration; the hand-written loop of
// BenchmarkConsume runs in each iteration too (alternating order), as a
// baseline: its tail is its last update and its goroutines' last head/lock
// (and their 10 ms sleeps while others hold the last batches). Handlers are
// no-ops (handler=0) or sleep a random 0 to 2 ms (handler=0-2ms), so that
// the last ones end at scattered times. It reports the median, the 90th
// percentile and the maximum of both tails in milliseconds (issue 13:
// Consume's at most 100 ms), and logs every Consume tail, sorted.
func BenchmarkConsumeFinishTail(b *testing.B) {
	const n = 200
	for _, work := range []time.Duration{0, 2 * time.Millisecond} {
		name := "handler=0"
		if work > 0 {
			name = "handler=0-" + work.String()
		}
		b.Run(name, func(b *testing.B) {
			srv := apifytest.Start(b)
			var consumeTails, loopTails []float64
			i := 0
			for b.Loop() {
				order := []string{"loop", "consume"}
				if i%2 == 1 {
					order = []string{"consume", "loop"}
				}
				i++
				for _, impl := range order {
					r := benchDrainOnce(b, srv, impl, n, work)
					if impl == "loop" {
						loopTails = append(loopTails, inMS(r.tail()))
					} else {
						consumeTails = append(consumeTails, inMS(r.tail()))
					}
				}
			}
			b.ReportMetric(median(consumeTails), "consume-tail-ms")
			b.ReportMetric(quantile(consumeTails, 0.9), "consume-tail-p90-ms")
			b.ReportMetric(slices.Max(consumeTails), "consume-tail-max-ms")
			b.ReportMetric(median(loopTails), "loop-tail-ms")
			b.ReportMetric(quantile(loopTails, 0.9), "loop-tail-p90-ms")
			b.ReportMetric(slices.Max(loopTails), "loop-tail-max-ms")
			sorted := slices.Clone(consumeTails)
			slices.Sort(sorted)
			var s strings.Builder
			for _, t := range sorted {
				fmt.Fprintf(&s, " %.2f", t)
			}
			b.Logf("%d Consume tails (ms), sorted:%s", len(sorted), s.String())
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

// benchQueues numbers the queues the benchmarks create.
var benchQueues atomic.Int64

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

// drainRun is what one drain of a queue measured.
type drainRun struct {
	called, first, last, returned time.Time     // the call; the first handler's start; the last handler's return; the return
	calls                         int           // queue calls the emulator received
	bytes, allocs                 uint64        // allocated in the process (the server's too)
	cpu                           time.Duration // CPU time of the process (the server's too); 0 when unknown
}

// drainRate is handled requests per second while draining: from the first
// handler's start to the last handler's return.
func (r drainRun) drainRate(n int) float64 { return float64(n) / r.last.Sub(r.first).Seconds() }

// e2eRate is handled requests per second from the call to its return.
func (r drainRun) e2eRate(n int) float64 { return float64(n) / r.returned.Sub(r.called).Seconds() }

// tail is the time from the last handler's return to the return.
func (r drainRun) tail() time.Duration { return r.returned.Sub(r.last) }

// benchPair is one iteration of BenchmarkConsume.
type benchPair struct{ loop, consume drainRun }

// benchDrainOnce seeds a fresh queue of n requests (timer stopped), drains
// it one way (timer running) with a client of its own, checks that every
// request was handled, counts the calls and deletes the queue (timer
// stopped). Each drain has its own client, so that the goroutines of its
// connections carry its profiler label.
func benchDrainOnce(b *testing.B, srv *apifytest.Server, impl string, n int, work time.Duration) drainRun {
	b.StopTimer()
	c := srv.Client(apify.WithRetryWait(apify.DefaultRetryWaitMin, apify.DefaultRetryWaitMax))
	q := c.RequestQueue(seedBench(srv, fmt.Sprintf("bench-%d", benchQueues.Add(1)), n))
	before := totalCalls(srv)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	b.StartTimer()
	var r drainRun
	// The label tells the client's goroutines apart in a CPU profile
	// (go tool pprof -tagfocus impl=consume); the server's carry none.
	pprof.Do(context.Background(), pprof.Labels("impl", impl), func(context.Context) { r = drain(b, impl, q, n, work) })
	b.StopTimer()
	if cpu0 > 0 {
		r.cpu = processCPU() - cpu0
	}
	runtime.ReadMemStats(&m1)
	r.calls = totalCalls(srv) - before
	r.bytes, r.allocs = m1.TotalAlloc-m0.TotalAlloc, m1.Mallocs-m0.Mallocs
	if got := len(srv.Handled(q.ID())); got != n {
		b.Fatalf("%s handled %d of %d", impl, got, n)
	}
	if err := q.Delete(context.Background()); err != nil {
		b.Fatal(err)
	}
	c.CloseIdleConnections()
	b.StartTimer()
	return r
}

// drain empties the queue of n requests one way, with a handler that
// sleeps a random time up to work, or does nothing when work is 0 (for the
// loop: a work step between the get and the update), and returns when it
// began, when the first handler started, when the last handler returned,
// and when it returned.
func drain(b *testing.B, impl string, q *apify.RequestQueueClient, n int, work time.Duration) drainRun {
	ctx := context.Background()
	var first, last atomic.Int64
	handle := func() {
		first.CompareAndSwap(0, time.Now().UnixNano())
		if work > 0 {
			time.Sleep(rand.N(work))
		}
		last.Store(time.Now().UnixNano())
	}
	called := time.Now()
	switch impl {
	case "consume":
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { handle(); return nil },
			apify.ConsumeOptions{ClientKey: "consume", Concurrency: benchConcurrency})
		if err != nil || stats.Handled != n {
			b.Fatalf("consume: %v, %+v", err, stats)
		}
	case "loop":
		var wg sync.WaitGroup
		for range benchConcurrency {
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
						handle()
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
	return drainRun{called: called, first: time.Unix(0, first.Load()), last: time.Unix(0, last.Load()), returned: time.Now()}
}

// processCPU is the CPU time (user and system) this process has used, read
// from /proc/self/stat in clock ticks of 10 ms; 0 where there is no such
// file. The server's work is in it too: the same per call for both ways.
func processCPU() time.Duration {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The fields after the command name (in parentheses, which may hold
	// spaces): state, ppid, ..., utime (the 12th) and stime (the 13th).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// inMS is d in milliseconds.
func inMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median is the median of xs (not empty).
func median(xs []float64) float64 { return quantile(xs, 0.5) }

// quantile is the q-quantile of xs (not empty), interpolated between the
// two nearest samples.
func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

// callOps are the operations Consume calls, in the order of the calls table.
var callOps = []struct {
	name string
	op   apifytest.Operation
}{
	{"head/lock", apifytest.OpListAndLockHead},
	{"get", apifytest.OpGetRequest},
	{"update", apifytest.OpUpdateRequest},
	{"prolong", apifytest.OpProlongRequestLock},
	{"delete-lock", apifytest.OpDeleteRequestLock},
	{"unlock", apifytest.OpUnlockRequests},
}

// TestConsumeCallsTable prints the queue calls Consume makes per handled
// request, by operation, at Concurrency 1, 2, 16 and 200 with handlers of
// 0, 2 s, 25 s and 50 s under a 60 s lock, in simulated time
// (testing/synctest and the in-memory emulator: a 25 s handler costs nothing
// in real time), once with calls that take no time and once with every call
// taking 50 ms (a round trip to a distant API). Each row drains a queue of
// at least 5,000 requests (50 per handler slot), so that the fixed cost of a
// run (the unlocks at start and exit, the first head/lock, made before any
// handler was measured, and the two that find the queue done: 5 calls) is
// at most 0.001 per request; the table gives the total with and without
// those 5.
//
// Beside each row, with s the time per request (the handler's time plus
// the get's and the update's round trips) and p the prolongs a handler
// needs when it starts as soon as it is locked (one per further two thirds
// of the lock beyond the first two thirds):
//
//   - the bound Consume's documentation gives: 2 + p + 1 ÷ (requests per
//     head/lock), which takes about 1 + Concurrency × W ÷ (time per
//     request) (and at most 25), W the longest wait in prefetch: a third of
//     the lock, or less where a longer wait would cost the request a
//     renewal it would not need by itself;
//   - the floor for any consumer that makes no more prolongs than p: a
//     request locked with others waits while the slots work through those
//     ahead of it, and must start within (p+1) × lock − s of its lock, so a
//     head/lock can take at most Concurrency × (1 + ((p+1) × lock − s) ÷ s)
//     requests (and 25);
//   - the same floor for a consumer that also keeps issue 13's rule that a
//     request waits at most a third of its lock for a handler: at most
//     Concurrency × (1 + (lock/3) ÷ s) requests per head/lock;
//   - the goal of issue 13: 2.1 + p; impossible where the first floor is
//     above it.
//
// It fails a row that lost a lock, or a row with calls that take no time
// whose calls (without the fixed 5) exceed the goal where it is possible,
// or the documented bound where it is not. Rows with 50 ms calls that do
// are marked "missed" in the table: the goal is stated for the former
// (issue 13), and these rows show how far real round trips move it.
//
// It runs (seconds of CPU) only with APIFY_SOAK set (see long_test.go); see
// bench/README.md for the recorded table. It uses nothing newer than the
// previous release's API, so that it can run on that release's Consume for
// comparison.
func TestConsumeCallsTable(t *testing.T) {
	if full, _ := apify.LongMode(t, 0, 0); !full {
		t.Skip("the calls table takes seconds of CPU; set APIFY_SOAK=full (or a duration) to print it")
	}
	const lock = time.Minute
	type row struct {
		latency  time.Duration
		conc     int
		work     time.Duration
		requests int
		ops      []int
		total    int
		stats    *apify.ConsumeStats
	}
	var rows []*row
	for _, latency := range []time.Duration{0, 50 * time.Millisecond} {
		for _, work := range []time.Duration{0, 2 * time.Second, 25 * time.Second, 50 * time.Second} {
			for _, conc := range []int{1, 2, 16, 200} {
				rows = append(rows, &row{latency: latency, conc: conc, work: work, requests: max(5000, 50*conc)})
			}
		}
	}
	for _, r := range rows {
		t.Run(fmt.Sprintf("latency=%v/concurrency=%d/work=%v", r.latency, r.conc, r.work), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				srv := apifytest.NewUnstartedServer()
				queueID := seedBench(srv, "calls", r.requests)
				c := srv.Client()
				if r.latency > 0 {
					// Every call takes latency: half before the emulator serves
					// it, half before its answer comes back.
					for _, op := range apifytest.Operations() {
						srv.InjectFault(op, apifytest.Fault{Delay: r.latency / 2, ResponseDelay: r.latency - r.latency/2})
					}
				}
				stats, err := c.RequestQueue(queueID).Consume(context.Background(), func(context.Context, *apify.Request) error {
					time.Sleep(r.work)
					return nil
				}, apify.ConsumeOptions{ClientKey: "calls", Concurrency: r.conc, LockDuration: lock})
				if err != nil {
					t.Fatal(err)
				}
				if stats.Handled != r.requests || stats.LocksLost != 0 {
					t.Errorf("handled %d of %d, %d locks lost", stats.Handled, r.requests, stats.LocksLost)
				}
				for _, o := range callOps {
					r.ops = append(r.ops, srv.Calls(o.op))
				}
				r.total, r.stats = totalCalls(srv), stats
			})
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		var s strings.Builder
		fmt.Fprintf(&s, "calls per handled request, lock %v:\n", lock)
		fmt.Fprintf(&s, "| call latency | concurrency | handler | requests |")
		for _, o := range callOps {
			fmt.Fprintf(&s, " %s |", o.name)
		}
		fmt.Fprintf(&s, " total | total − 5 | documented bound | floor | floor, waits ≤ lock/3 | goal |\n")
		for _, r := range rows {
			if r.stats == nil {
				continue // failed
			}
			n := float64(r.requests)
			fmt.Fprintf(&s, "| %v | %d | %v | %d |", r.latency, r.conc, r.work, r.requests)
			for _, c := range r.ops {
				fmt.Fprintf(&s, " %.4f |", float64(c)/n)
			}
			b := callBounds(r.conc, r.work+2*r.latency, lock)
			goal, limit := fmt.Sprintf("%.1f", 2.1+float64(b.prolongs)), 2.1+float64(b.prolongs)
			if b.floor > limit {
				goal, limit = "impossible", b.documented
			}
			perRequest := float64(r.total-5) / n
			if perRequest > limit+1e-9 {
				goal += " (missed)"
				if r.latency == 0 {
					t.Errorf("concurrency %d, handler %v: %.4f calls per request, more than %.4f", r.conc, r.work, perRequest, limit)
				}
			}
			fmt.Fprintf(&s, " %.4f | %.4f | %.4f | %.4f | %.4f | %s |\n", float64(r.total)/n, perRequest, b.documented, b.floor, b.floorThird, goal)
		}
		t.Log("\n" + s.String())
	})
}

// bounds are what TestConsumeCallsTable compares a row with.
type bounds struct {
	prolongs                      int     // a request's prolongs if it starts at once
	documented, floor, floorThird float64 // calls per handled request
}

// callBounds returns the bounds on the calls per handled request of
// requests that take s each, conc at a time, under lock (see
// TestConsumeCallsTable).
func callBounds(conc int, s, lock time.Duration) bounds {
	period := 2 * lock / 3 // a lock is renewed when a third of it is left
	var b bounds
	b.prolongs = max(0, int((s+period-1)/period)-1)
	documented, floor, floorThird := apify.MaxLockHeadLimit, apify.MaxLockHeadLimit, apify.MaxLockHeadLimit
	if s > 0 {
		// W, as Consume documents it (its code keeps a twentieth of it for
		// the spread of handler times).
		margin := min(lock/10, 2*time.Second)
		w := min(lock/3, max(time.Duration(b.prolongs+1)*period-s-margin, lock/10))
		documented = min(documented, int(1+float64(conc)*float64(w)/float64(s)))
		floor = min(floor, conc*int(1+(time.Duration(b.prolongs+1)*lock-s)/s))
		floorThird = min(floorThird, conc*int(1+lock/3/s))
	}
	perRequest := func(perHeadLock int) float64 { return 2 + float64(b.prolongs) + 1/float64(perHeadLock) }
	b.documented, b.floor, b.floorThird = perRequest(documented), perRequest(floor), perRequest(floorThird)
	return b
}
