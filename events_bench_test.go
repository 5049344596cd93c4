package apify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// BenchmarkMigrating measures what a migrating event costs the queue, in
// real time over loopback (see bench/README.md, "Platform events"): how long
// after the event the emulator still holds a lock of the crawler's key or
// run, how long the crawler takes to stop, how many queue calls the stop
// costs, and how many requests were cut off mid-run. Each iteration crawls a
// queue of migrEventQueue requests twice, on two fresh emulators, with the
// same handlers and the same 60 s lock, and sends migrating migrEventAfter
// after the first handler started:
//
//	consume  RequestQueueClient.Consume with Events, Concurrency conc
//	crawlee  a hand-written consumer that does what Crawlee 3.18's
//	         RequestQueue v2 and BasicCrawler do (crawleeLike)
//
// The two run in turn, alternating which goes first. Sub-benchmarks:
// left (the event's timeRemainingSecs), handler (aware: 2 s, returns when
// its ctx ends; ignores: runs past the time left and does not look at its
// ctx), conc (16 or 64 handlers). Run it with -benchtime 1x and -count N
// (each iteration takes 5 to 20 s); it fails (b.Errorf) when Consume breaks
// its promise: a lock of its key or run left, or a return, after the time
// remaining.
func BenchmarkMigrating(b *testing.B) {
	for _, left := range []time.Duration{5 * time.Second, 30 * time.Second} {
		for _, ignores := range []bool{false, true} {
			for _, conc := range []int{16, 64} {
				sc := migrScenario{conc: conc, ignoresCtx: ignores, left: left}
				b.Run(sc.String(), func(b *testing.B) { benchMigrating(b, sc) })
			}
		}
	}
}

const (
	migrEventQueue = 2000             // requests in the queue: far more than a crawl reaches
	migrEventAfter = 3 * time.Second  // from the first handler's start to the event
	migrLock       = time.Minute      // the lock both consumers take
	migrAwareWork  = 2 * time.Second  // an aware handler's work
	migrPastKill   = 5 * time.Second  // how long an ignoring handler outlives the kill
	migrPoll       = time.Millisecond // how often the crawlee run checks whether it can stop
)

// migrScenario is one sub-benchmark of BenchmarkMigrating.
type migrScenario struct {
	conc       int
	ignoresCtx bool
	left       time.Duration
}

func (s migrScenario) String() string {
	h := "aware"
	if s.ignoresCtx {
		h = "ignores"
	}
	return fmt.Sprintf("left=%v/handler=%s/conc=%d", s.left, h, s.conc)
}

// work is how long one handler runs when nothing stops it: 2 s for an
// aware handler; for one that ignores its ctx, so long that the handlers
// running at the event are still running when the platform kills the
// process (event + left).
func (s migrScenario) work() time.Duration {
	if s.ignoresCtx {
		return migrEventAfter + s.left + migrPastKill
	}
	return migrAwareWork
}

// migrOrder alternates which implementation runs first, across iterations
// and -count repetitions.
var migrOrder atomic.Int64

func benchMigrating(b *testing.B, sc migrScenario) {
	b.ReportAllocs()
	var sum struct {
		consume, crawlee, stopNow, ratio, ret, prefC, prefK, callsC, callsK, cancelled, leftN, leftMax float64
	}
	for range b.N {
		impls := []string{"consume", "crawlee"}
		if migrOrder.Add(1)%2 == 0 {
			slices.Reverse(impls)
		}
		res := map[string]*migrResult{}
		for _, impl := range impls {
			r := runMigrating(b, sc, impl)
			b.Logf("%s %s", sc, r)
			res[impl] = r
		}
		c, k := res["consume"], res["crawlee"]
		sum.consume += ms(c.lastRelease)
		sum.crawlee += ms(k.lastRelease)
		sum.stopNow += ms(k.stopNow)
		sum.ratio += c.lastRelease.Seconds() / k.lastRelease.Seconds()
		sum.ret += ms(c.stopped)
		sum.prefC += ms(c.prefetchFreed)
		sum.prefK += ms(k.prefetchFreed)
		sum.callsC += float64(c.calls)
		sum.callsK += float64(k.calls)
		sum.cancelled += float64(c.cancelled)
		sum.leftN += float64(len(k.leftLocks))
		if len(k.leftLocks) > 0 {
			sum.leftMax += k.leftLocks[len(k.leftLocks)-1].Seconds()
		}
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(sum.consume/n, "consume-release-ms")
	b.ReportMetric(sum.crawlee/n, "crawlee-release-ms")
	b.ReportMetric(sum.ratio/n, "release-ratio")
	b.ReportMetric(sum.stopNow/n, "crawlee-stopnow-release-ms")
	b.ReportMetric(sum.ret/n, "consume-return-ms")
	b.ReportMetric(sum.prefC/n, "consume-prefetch-freed-ms")
	b.ReportMetric(sum.prefK/n, "crawlee-prefetch-freed-ms")
	b.ReportMetric(sum.callsC/n, "consume-shutdown-calls")
	b.ReportMetric(sum.callsK/n, "crawlee-shutdown-calls")
	b.ReportMetric(sum.cancelled/n, "consume-cancelled")
	b.ReportMetric(sum.leftN/n, "crawlee-locks-left")
	b.ReportMetric(sum.leftMax/n, "crawlee-left-max-s")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// migrResult is what one crawl stopped by migrating measured. Durations
// count from the moment the test sent the event.
type migrResult struct {
	impl string
	// At the event: locks held, handlers running, and the difference, the
	// requests prefetched (locked, waiting for a handler).
	lockedAtEvent, runningAtEvent int
	// prefetchFreed is when the last lock delete after the event was
	// answered (both consumers release prefetched requests that way); 0
	// when there was none.
	prefetchFreed time.Duration
	// lastRelease is when the emulator held no lock any more: seen after
	// the call that released the last one, or, for locks left behind at
	// the kill, when the last of them expires.
	lastRelease time.Duration
	// stopped is when Consume returned; for crawlee, when the process
	// would be gone: every handler returned, or the kill (event + left).
	stopped time.Duration
	// calls are the queue calls the emulator received from the event to
	// stopped, by operation.
	calls   int
	callsOf map[string]int
	// handled is how many requests were marked handled after the event.
	handled int
	// cancelled: consume, handlers whose ctx ended while they ran;
	// crawlee, handlers still running at the kill.
	cancelled, abandoned int
	// leftLocks are the locks the emulator still held when the crawler
	// stopped, as the time from the event to their expiry, shortest first.
	leftLocks []time.Duration
	// stopNow (crawlee) is the release time if Crawlee stopped at once
	// after its deletes, leaving every running request's lock to expire:
	// the latest expiry among the locks held when its deletes were done.
	stopNow time.Duration
}

func (r *migrResult) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "impl=%s atEvent(locked=%d running=%d prefetched=%d) prefetchFreed=%v lastRelease=%v stopped=%v calls=%d%s handled=%d cancelled=%d",
		r.impl, r.lockedAtEvent, r.runningAtEvent, r.lockedAtEvent-r.runningAtEvent, r.prefetchFreed.Round(time.Millisecond),
		r.lastRelease.Round(time.Millisecond), r.stopped.Round(time.Millisecond), r.calls, fmtOps(r.callsOf), r.handled, r.cancelled)
	if r.impl == "consume" {
		fmt.Fprintf(&s, " abandoned=%d", r.abandoned)
	} else {
		fmt.Fprintf(&s, " stopNow=%v", r.stopNow.Round(time.Millisecond))
	}
	fmt.Fprintf(&s, " locksLeft=%d", len(r.leftLocks))
	if n := len(r.leftLocks); n > 0 {
		fmt.Fprintf(&s, "(expire %v..%v after the event)", r.leftLocks[0].Round(time.Millisecond), r.leftLocks[n-1].Round(time.Millisecond))
	}
	return s.String()
}

func fmtOps(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	ops := slices.Sorted(func(yield func(string) bool) {
		for op := range m {
			if !yield(op) {
				return
			}
		}
	})
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = fmt.Sprintf("%s:%d", op, m[op])
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// runMigrating runs one crawl with impl on a fresh emulator, sends
// migrating mid-crawl, and measures.
func runMigrating(b *testing.B, sc migrScenario, impl string) *migrResult {
	b.Helper()
	srv := apifytest.NewServer(apifytest.WithPlatformEvents(), apifytest.WithRunToken("run-token", apifytest.DefaultRunID))
	defer srv.Close()
	queueID := srv.CreateQueue("migrating")
	reqs := make([]apifytest.Request, migrEventQueue)
	for i := range reqs {
		reqs[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/p/%d", i)}
	}
	srv.AddRequests(queueID, reqs...)

	// The crawler's calls go through obs, which reads the emulator's locks
	// after each one; the events go to the emulator directly.
	obs := &lockObserver{srv: srv, queueID: queueID}
	front := httptest.NewServer(obs)
	defer front.Close()
	c := srv.Client(apify.WithBaseURL(front.URL))
	defer c.CloseIdleConnections()
	q := c.RequestQueue(queueID)

	events, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: srv.EventsURL()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = events.Close() }()
	for srv.EventConnections() != 1 {
		time.Sleep(time.Millisecond)
	}

	h := &migrHandlers{work: sc.work(), ignoresCtx: sc.ignoresCtx, kill: make(chan struct{}), started: make(chan struct{}), running: map[string]time.Time{}}
	r := &migrResult{impl: impl}
	switch impl {
	case "consume":
		runConsumeMigrating(b, sc, srv, obs, q, events, h, r)
	case "crawlee":
		runCrawleeMigrating(b, sc, srv, obs, q, events, h, r)
	}
	return r
}

// sendMigrating waits until migrEventAfter after the first handler
// started, notes the state, sends the event and returns when it was sent.
func sendMigrating(b *testing.B, sc migrScenario, srv *apifytest.Server, queueID string, h *migrHandlers, r *migrResult) time.Time {
	b.Helper()
	<-h.started
	time.Sleep(time.Until(h.firstStart.Add(migrEventAfter)))
	r.lockedAtEvent, r.runningAtEvent = len(srv.Locked(queueID)), h.nRunning()
	sent := time.Now()
	if err := srv.SendEvent("migrating", map[string]any{"timeRemainingSecs": sc.left.Seconds()}); err != nil {
		b.Fatal(err)
	}
	return sent
}

func runConsumeMigrating(b *testing.B, sc migrScenario, srv *apifytest.Server, obs *lockObserver, q *apify.RequestQueueClient, events *apify.PlatformEvents, h *migrHandlers, r *migrResult) {
	type result struct {
		stats *apify.ConsumeStats
		err   error
	}
	done := make(chan result, 1)
	go func() {
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if h.run(ctx, req.ID) {
				return nil
			}
			return context.Cause(ctx)
		}, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: sc.conc, LockDuration: migrLock, Events: events})
		done <- result{stats, err}
	}()
	sent := sendMigrating(b, sc, srv, q.ID(), h, r)
	handledBefore := len(srv.Handled(q.ID()))
	res := <-done
	r.stopped = time.Since(sent)
	close(h.kill) // the process exits: abandoned handlers end with it
	r.handled = len(srv.Handled(q.ID())) - handledBefore
	r.cancelled, r.abandoned = int(h.cancelled.Load()), res.stats.Abandoned
	r.calls, r.callsOf = obs.callsBetween(sent, sent.Add(r.stopped))
	r.prefetchFreed = obs.lastOf("delete-lock", sent)
	r.lastRelease = obs.lastRelease(sent)
	for _, st := range srv.Locked(q.ID()) {
		r.leftLocks = append(r.leftLocks, st.Lock.ExpiresAt.Sub(sent))
	}
	if !errors.Is(res.err, apify.ErrMigrating) {
		b.Errorf("%s: Consume returned %v, want ErrMigrating", sc, res.err)
	}
	// Consume's promise: every lock of its key and run released, and
	// Consume returned, before the time remaining ran out.
	if n := len(srv.LockedBy(q.ID(), apifytest.DefaultRunID)) + len(srv.LockedByRun(q.ID(), apifytest.DefaultRunID)); n > 0 {
		b.Errorf("%s: %d locks of Consume's key or run left after it returned", sc, n)
	}
	if r.stopped >= sc.left || r.lastRelease >= sc.left {
		b.Errorf("%s: Consume returned %v and the last lock went %v after the event: not within the %v left", sc, r.stopped, r.lastRelease, sc.left)
	}
}

func runCrawleeMigrating(b *testing.B, sc migrScenario, srv *apifytest.Server, obs *lockObserver, q *apify.RequestQueueClient, events *apify.PlatformEvents, h *migrHandlers, r *migrResult) {
	k := &crawleeLike{q: q, key: apifytest.DefaultRunID, h: h}
	workers := k.start(sc.conc)
	// The migrating listener (RequestQueue v2's _clearPossibleLocks; the
	// pause of BasicCrawler is the workers' fetch refusing new tasks).
	cleared := make(chan struct{})
	go func() {
		defer close(cleared)
		for ev := range events.C() {
			if ev.Name == apify.PlatformEventMigrating {
				k.clearPossibleLocks()
				return
			}
		}
	}()
	sent := sendMigrating(b, sc, srv, q.ID(), h, r)
	handledBefore := len(srv.Handled(q.ID()))
	<-cleared
	for _, st := range srv.Locked(q.ID()) {
		r.stopNow = max(r.stopNow, st.Lock.ExpiresAt.Sub(sent))
	}
	// Running handlers go on until they return or the platform kills the
	// process at event + left. When every handler still running would end
	// after the kill, nothing more can happen before it: kill now.
	kill := sent.Add(sc.left)
	for !k.idle() && time.Now().Before(kill) && !k.allRunningEndAfter(kill) {
		time.Sleep(migrPoll)
	}
	r.stopped = time.Since(sent)
	if !k.idle() {
		r.stopped = sc.left // the kill
	}
	r.cancelled = h.nRunning()
	k.kill()
	close(h.kill)
	workers.Wait()
	r.handled = len(srv.Handled(q.ID())) - handledBefore
	r.calls, r.callsOf = obs.callsBetween(sent, sent.Add(r.stopped))
	r.prefetchFreed = obs.lastOf("delete-lock", sent)
	for _, st := range srv.Locked(q.ID()) {
		r.leftLocks = append(r.leftLocks, st.Lock.ExpiresAt.Sub(sent))
	}
	slices.Sort(r.leftLocks)
	if n := len(r.leftLocks); n > 0 {
		r.lastRelease = r.leftLocks[n-1] // the emulator expires them then
	} else {
		r.lastRelease = obs.lastRelease(sent)
	}
}

// migrHandlers are the handlers of one crawl: each runs work, and ends
// early when the process is killed, or (unless ignoresCtx) when its ctx ends.
type migrHandlers struct {
	work       time.Duration
	ignoresCtx bool
	kill       chan struct{}

	started    chan struct{}
	startOnce  sync.Once
	firstStart time.Time

	mu      sync.Mutex
	running map[string]time.Time // request ID -> when its work would end

	cancelled atomic.Int64 // handlers whose ctx ended while they ran
}

// run runs the handler of request id; it reports whether the work was done.
func (h *migrHandlers) run(ctx context.Context, id string) bool {
	now := time.Now()
	h.startOnce.Do(func() { h.firstStart = now; close(h.started) })
	h.mu.Lock()
	h.running[id] = now.Add(h.work)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.running, id)
		h.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { h.cancelled.Add(1) })
	defer stop()
	t := time.NewTimer(h.work)
	defer t.Stop()
	var cancelled <-chan struct{}
	if !h.ignoresCtx {
		cancelled = ctx.Done()
	}
	select {
	case <-t.C:
		return true
	case <-cancelled:
		return false
	case <-h.kill:
		return false
	}
}

func (h *migrHandlers) nRunning() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.running)
}

// lockObserver serves the emulator and, after each call, reads how many
// locks the queue holds: the emulator changes locks only while it serves a
// call (no lock expires during a run), so these readings say when the last
// lock went, within one call's answer.
type lockObserver struct {
	srv     *apifytest.Server
	queueID string

	mu  sync.Mutex
	log []observedCall
}

type observedCall struct {
	op         string
	start, end time.Time
	locksAfter int
}

func (o *lockObserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o.srv.Handler().ServeHTTP(w, r)
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.srv.Locked(o.queueID))
	o.log = append(o.log, observedCall{op: opName(r), start: start, end: time.Now(), locksAfter: n})
}

// opName names a queue call by its method and path.
func opName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasSuffix(p, "/head/lock"):
		return "head-lock"
	case strings.HasSuffix(p, "/requests/unlock"):
		return "unlock"
	case strings.HasSuffix(p, "/lock") && r.Method == http.MethodPut:
		return "prolong"
	case strings.HasSuffix(p, "/lock") && r.Method == http.MethodDelete:
		return "delete-lock"
	case strings.Contains(p, "/requests/") && r.Method == http.MethodGet:
		return "get"
	case strings.Contains(p, "/requests/") && r.Method == http.MethodPut:
		return "update"
	}
	return r.Method + " " + p
}

// callsBetween counts the calls that started in [from, to], by operation.
func (o *lockObserver) callsBetween(from, to time.Time) (int, map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, by := 0, map[string]int{}
	for _, c := range o.log {
		if !c.start.Before(from) && !c.start.After(to) {
			n++
			by[c.op]++
		}
	}
	return n, by
}

// lastOf is when the last call op answered after from, counted from from;
// 0 when there was none.
func (o *lockObserver) lastOf(op string, from time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Duration
	for _, c := range o.log {
		if c.op == op && c.end.After(from) {
			last = max(last, c.end.Sub(from))
		}
	}
	return last
}

// lastRelease is, counted from from, the first reading of no lock after
// which no reading saw a lock; 0 when there were none after from.
func (o *lockObserver) lastRelease(from time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var at time.Duration
	for _, c := range o.log { // in the order of the readings
		switch {
		case c.locksAfter > 0:
			at = 0
		case at == 0 && c.end.After(from):
			at = c.end.Sub(from)
		}
	}
	return at
}

// crawleeLike consumes a queue the way Crawlee 3.18 does with RequestQueue
// v2 (request_queue_v2.ts) under BasicCrawler, reduced to the queue calls
// and what happens on migrating:
//
//   - fetch (fetchNextRequest): when at most one locked request is left in
//     the local head, one head/lock of 25 (shared by the workers that
//     wait for it); the head keeps at most 25, the rest is given back with
//     a lock delete each; then the first of the head is taken, its lock
//     prolonged (60 s from now) and the request read (GET);
//   - a handler that returns marks its request handled (PUT), which
//     releases its lock;
//   - on migrating (_clearPossibleLocks and _pauseOnMigration): no new
//     task starts and no head/lock is made; the locks of the requests in
//     the local head are deleted one call at a time; running handlers go
//     on (nothing cancels them) and those that return before the process
//     is killed are marked handled; the rest keep their locks until they
//     expire. It never calls unlock.
//
// The fixed number of workers stands for BasicCrawler's autoscaled pool
// at its maximum concurrency.
type crawleeLike struct {
	q   *apify.RequestQueueClient
	key string
	h   *migrHandlers

	mu       sync.Mutex
	head     []string
	refill   chan struct{} // open while a head/lock is under way
	paused   bool
	finished bool
	killed   bool
	live     int // workers not yet returned
}

const crawleeHeadLimit = 25

func (k *crawleeLike) start(n int) *sync.WaitGroup {
	var wg sync.WaitGroup
	k.live = n
	for range n {
		wg.Go(func() {
			defer func() {
				k.mu.Lock()
				k.live--
				k.mu.Unlock()
			}()
			k.work()
		})
	}
	return &wg
}

func (k *crawleeLike) work() {
	ctx := context.Background()
	for {
		id, ok := k.fetch()
		if !ok {
			return
		}
		if _, err := k.q.ProlongRequestLock(ctx, id, apify.ProlongLockOptions{LockDuration: migrLock, ClientKey: k.key}); err != nil {
			continue
		}
		req, err := k.q.GetRequest(ctx, id)
		if err != nil {
			continue
		}
		if !k.h.run(ctx, id) {
			return // killed with the process
		}
		if k.dead() {
			return
		}
		req.HandledAt = time.Now()
		_, _ = k.q.UpdateRequest(ctx, *req, apify.RequestOptions{ClientKey: k.key})
	}
}

// fetch takes the next request of the local head, locking more first when
// one or none is left; false when paused or the queue is done.
func (k *crawleeLike) fetch() (string, bool) {
	for {
		k.mu.Lock()
		if k.paused || k.killed {
			k.mu.Unlock()
			return "", false
		}
		if len(k.head) > 1 {
			id := k.head[0]
			k.head = k.head[1:]
			k.mu.Unlock()
			return id, true
		}
		wait := k.refill
		if wait == nil {
			wait = make(chan struct{})
			k.refill = wait
			go k.lockHead(wait)
		}
		k.mu.Unlock()
		<-wait
		k.mu.Lock()
		switch {
		case k.paused || k.killed:
			k.mu.Unlock()
			return "", false
		case len(k.head) > 0:
			id := k.head[0]
			k.head = k.head[1:]
			k.mu.Unlock()
			return id, true
		case k.finished:
			k.mu.Unlock()
			return "", false
		}
		k.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

// lockHead is _listHeadAndLock: a head/lock call run while the pool is
// not paused; what it locks joins the head even if the pause came while it
// was under way.
func (k *crawleeLike) lockHead(done chan struct{}) {
	k.mu.Lock()
	paused := k.paused
	k.mu.Unlock()
	var extra []string
	if !paused {
		head, err := k.q.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: crawleeHeadLimit, LockDuration: migrLock, ClientKey: k.key})
		k.mu.Lock()
		if err == nil {
			for _, it := range head.Items {
				k.head = append(k.head, it.ID)
			}
			for len(k.head) > crawleeHeadLimit {
				extra = append(extra, k.head[len(k.head)-1])
				k.head = k.head[:len(k.head)-1]
			}
			k.finished = len(head.Items) == 0 && !head.QueueHasLockedRequests
		}
		k.mu.Unlock()
	}
	for _, id := range extra {
		_ = k.q.DeleteRequestLock(context.Background(), id, apify.DeleteLockOptions{ClientKey: k.key})
	}
	k.mu.Lock()
	k.refill = nil
	k.mu.Unlock()
	close(done)
}

// clearPossibleLocks pauses the crawler and deletes the lock of each
// request of the local head, one call at a time.
func (k *crawleeLike) clearPossibleLocks() {
	k.mu.Lock()
	k.paused = true
	k.mu.Unlock()
	for {
		k.mu.Lock()
		if len(k.head) == 0 || k.killed {
			k.mu.Unlock()
			return
		}
		id := k.head[0]
		k.head = k.head[1:]
		k.mu.Unlock()
		_ = k.q.DeleteRequestLock(context.Background(), id, apify.DeleteLockOptions{ClientKey: k.key})
	}
}

// idle reports whether every worker returned and no head/lock is under way.
func (k *crawleeLike) idle() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.live == 0 && k.refill == nil
}

// allRunningEndAfter reports whether every live worker is inside a handler
// whose work would end after t (so nothing changes before t).
func (k *crawleeLike) allRunningEndAfter(t time.Time) bool {
	k.mu.Lock()
	live, refilling := k.live, k.refill != nil
	k.mu.Unlock()
	k.h.mu.Lock()
	defer k.h.mu.Unlock()
	if refilling || len(k.h.running) != live {
		return false
	}
	for _, end := range k.h.running {
		if !end.After(t) {
			return false
		}
	}
	return true
}

func (k *crawleeLike) kill() {
	k.mu.Lock()
	k.killed = true
	k.mu.Unlock()
}

func (k *crawleeLike) dead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}
