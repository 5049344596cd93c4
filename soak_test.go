package apify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// soakDuration is how long TestSoak's chaos lasts: 1.2 s by default (about
// 1.5 s with the finish), 20 s with APIFY_SOAK=full, or as long as
// APIFY_SOAK says (APIFY_SOAK=5m).
func soakDuration(t *testing.T) time.Duration {
	_, d := apify.LongMode(t, 1200*time.Millisecond, 20*time.Second)
	return d
}

// The soak's consumers: soakSlots Consume calls at a time, each stopped
// and restarted all along (see supervise), on a queue over loopback.
const (
	soakSlots          = 4
	soakConcurrency    = 6
	soakSeed           = 200
	soakLock           = time.Second // renewed when a third is left; margin 100 ms, abandon grace 167 ms
	soakHandlerTimeout = 900 * time.Millisecond
	soakMaxRetries     = 2
	soakDrain          = 250 * time.Millisecond
	soakShutdown       = time.Second
)

// TestSoak runs several Consume calls (distinct clientKeys) on one queue
// over loopback for the soak's duration (1.2 s by default, 20 s in full;
// see soakDuration), while the emulator injects faults into every
// operation they use: 5xx, 429 with Retry-After, dropped connections,
// answers lost after the work was done (DropResponse), calls held before
// they are served (Delay) or answered late (ResponseDelay), and now and
// then a prolong that never answers (Hang). Handlers take from nothing to
// most of the lock, and some fail, panic, call runtime.Goexit, overrun
// their timeout (some ignoring their ctx, and are abandoned), or add the
// links they discover, some of which always fail. Consumers are stopped
// (ctx cancelled) and restarted all along, every other time under the
// same clientKey, and now and then killed (their calls stop arriving,
// their handlers stop) before a restart under the same key. For the last
// 40% of the soak the crawl winds down (quick handlers, no new links);
// then the faults stop, every consumer is stopped but one, and that one
// finishes the queue and returns by itself.
//
// Afterwards: no request is lost (every one is handled, or failed with its
// errors recorded after MaxRetries or ErrNoRetry), none is left pending or
// locked, and the consumers stopped at the end (the faults off) left no
// lock; a request ran again only after a run of it failed or Consume
// logged why a run's result was not recorded (a lost lock, the shutdown,
// an abandoned handler), and never while an earlier run still had a live
// ctx; a second Consume on a running one's key is refused; every stop
// returned within the documented bound; each Consume's APICalls is the
// number of calls its client made, and the attempts add up to the
// emulator's count; the stats add up to the queue's state; the heap and
// the goroutines come back to where they started.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 1.5 s to 20 s of loopback calls")
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	sum := soak(t, soakDuration(t))
	t.Log(sum)

	// Everything the soak made is garbage now: the heap and the goroutines
	// (abandoned handlers included) come back to where they were.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > goroutinesBefore; {
		// Closed connections take a moment to wind down their goroutines.
		require.True(t, time.Now().Before(deadline), "goroutines: %d before, %d after", goroutinesBefore, runtime.NumGoroutine())
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("heap in use: %d KiB before, %d KiB after", before.HeapInuse>>10, after.HeapInuse>>10)
	assert.Less(t, after.HeapInuse, before.HeapInuse+8<<20, "heap back to within 8 MiB of the start")
}

// soakFaults are the faults injected, on every operation Consume uses and
// on the test's own adds. Each gives its fault to one call in Every of those
// that reach it (a call gets one fault at most: the first whose turn it is).
// GetRequest gets no dropped connection: net/http re-sends a GET whose
// reused connection closes before any answer, below the client, so the
// emulator would count calls no client made (and a lost GET answer changes
// nothing anyway).
var soakFaults = map[apifytest.Operation][]apifytest.Fault{
	apifytest.OpListAndLockHead: {
		{Status: 503, Every: 17},
		{Status: 429, RetryAfter: "0", Every: 19},
		{DropConnection: true, Every: 23},
		{DropResponse: true, Every: 29}, // locked, the answer lost: stranded locks
		{Delay: 20 * time.Millisecond, Every: 7},
		{ResponseDelay: 40 * time.Millisecond, Every: 11},
	},
	apifytest.OpGetRequest: {
		{Status: 500, Every: 13},
		{Status: 429, RetryAfter: "0", Every: 17},
		{Delay: 15 * time.Millisecond, Every: 7},
		{ResponseDelay: 25 * time.Millisecond, Every: 11},
	},
	apifytest.OpUpdateRequest: {
		{Status: 503, Every: 11},
		{DropConnection: true, Every: 13},
		{DropResponse: true, Every: 17}, // recorded, the answer lost
		{Status: 429, RetryAfter: "1", Every: 97},
		{Delay: 20 * time.Millisecond, Every: 7},
		{ResponseDelay: 30 * time.Millisecond, Every: 19},
	},
	apifytest.OpProlongRequestLock: {
		{Status: 503, Every: 5},
		{DropResponse: true, Every: 7},
		{DropConnection: true, Every: 11},
		{Hang: true, Every: 13},
		{Delay: 60 * time.Millisecond, Every: 3},
	},
	apifytest.OpDeleteRequestLock: {
		{Status: 503, Every: 5},
		{DropResponse: true, Every: 3}, // released, the answer lost: the retry gets 403
		{Delay: 20 * time.Millisecond, Every: 7},
	},
	apifytest.OpUnlockRequests: {
		{Status: 503, Every: 5},
		{DropResponse: true, Every: 7},
		{Status: 429, RetryAfter: "0", Every: 11},
		{Delay: 20 * time.Millisecond, Every: 3},
	},
	apifytest.OpAddRequest: {
		{Status: 503, Every: 7},
		{DropResponse: true, Every: 11}, // added, the answer lost: the retry finds it present
	},
}

// soakLog is a slog.Handler that counts what a client and a Consume log:
// the client's attempts (one Debug record each, "apify: attempt") and the
// requests Consume names when a handler's result is not recorded.
type soakLog struct {
	mu sync.Mutex
	// calls counts first attempts (one per call), retries the others,
	// ctxEnded the attempts that ended with their ctx, without an answer
	// (such an attempt may never have reached the server).
	calls, retries, ctxEnded int
	events                   map[string][]string // event kind -> request IDs
}

// soakEvents are the records in which Consume says that a run's result was
// not recorded, and why: the explanations of a request's running again.
var soakEvents = []struct{ kind, msg string }{
	{"lost", "lost the lock on a request"},
	{"stopped", "handler stopped by the shutdown"},
	{"cut", "could not record a result before the shutdown ended"},
	{"abandoned", "abandoned a handler"},
}

func (l *soakLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *soakLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *soakLog) WithGroup(string) slog.Handler            { return l }
func (l *soakLog) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Message == "apify: attempt" {
		if attrs["attempt"].Int64() == 1 {
			l.calls++
		} else {
			l.retries++
		}
		if e, ok := attrs["error"]; ok && attrs["status"].Int64() == 0 && strings.Contains(e.String(), "context") {
			l.ctxEnded++
		}
		return nil
	}
	for _, ev := range soakEvents {
		if strings.Contains(r.Message, ev.msg) {
			if l.events == nil {
				l.events = map[string][]string{}
			}
			l.events[ev.kind] = append(l.events[ev.kind], attrs["request"].String())
		}
	}
	return nil
}

// soakGen is one Consume call: a generation of a slot.
type soakGen struct {
	slot, n  int
	key      string
	log      *soakLog
	client   *apify.Client
	conn     *soakConn
	killed   chan struct{} // closed when the test kills its process
	stats    *apify.ConsumeStats
	err      error
	stopped  bool          // its ctx was cancelled (else it returned by itself)
	kill     bool          // and its process killed
	stopTook time.Duration // from the cancel to its return
}

// soakConn is a generation's transport: net/http's, until the test kills
// the generation's process, after which no call leaves it. (A process's
// death is not something the API does: the emulator has no fault for it.)
type soakConn struct {
	base    *http.Transport
	dead    atomic.Bool
	refused atomic.Int64 // attempts that never left
}

func (c *soakConn) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.dead.Load() {
		c.refused.Add(1)
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	return c.base.RoundTrip(r)
}

// soakRun is one handler call.
type soakRun struct {
	gen     *soakGen
	ctx     context.Context
	started time.Time
	lock    string // the request's lock when the run started, as the emulator had it
	// Guarded by soaker.mu.
	returned bool // the handler returned (or panicked, or called Goexit)
	ok       bool // it returned nil
	failed   bool // it failed by itself (error, panic, Goexit, timeout): a failed attempt
}

// soaker holds the soak's shared state.
type soaker struct {
	t       *testing.T
	srv     *apifytest.Server
	queueID string
	adder   *apify.Client // the handlers' adds of discovered links
	addLog  *soakLog
	probe   *apify.Client // second Consumes on a running one's key (refused)
	probeLg *soakLog

	windingDown atomic.Bool // no more links discovered, no more slow handlers
	chaosOver   chan struct{}

	mu       sync.Mutex
	gens     []*soakGen
	runs     map[string][]*soakRun // request ID -> its runs, in start order
	overlaps []string              // runs started while an earlier run of the request had a live ctx
	tried    map[string]bool       // URLs the test added or tried to add
	added    map[string]string     // request ID -> URL, from adds that answered
	probes   int                   // second Consumes refused with ErrConsumeInProgress
}

// soakSummary is what the soak measured.
type soakSummary struct {
	requests, handledOK, failed, runs, duplicates int
	explained                                     map[string]int
	gens, sameKeyRestarts, startFailures, probes  int
	kills, notSent                                int
	stats                                         apify.ConsumeStats
	serverCalls, attempts, retries, addCalls      int
	refused, ctxEnded                             int
	faults                                        map[apifytest.Operation]int
	maxStop                                       time.Duration
	chaos, total                                  time.Duration
}

func (s soakSummary) String() string {
	var faults []string
	total := 0
	for _, op := range apifytest.Operations() {
		if n := s.faults[op]; n > 0 {
			faults = append(faults, fmt.Sprintf("%s %d", op, n))
			total += n
		}
	}
	st := s.stats
	return fmt.Sprintf("soak: %v of chaos, %v in all\n"+
		"  %d requests: %d handled, %d failed with their errors recorded; %d handler runs, %d beyond one per request and failed attempt, explained by %v\n"+
		"  %d Consume calls (%d restarted under the same clientKey, %d processes killed, %d start-up failures), %d second Consumes refused; the slowest stop took %v\n"+
		"  stats summed: Handled %d, Failed %d, Retried %d, LocksRenewed %d, LocksLost %d, Abandoned %d, PrefetchReleased %d, RecoveredAtStart %d, ReleasedAtExit %d, CallErrors %d, APICalls %d\n"+
		"  the emulator counted %d calls; the clients logged %d attempts (%d of them retries, %d adds by the handlers, %d refused in killed processes, %d cut off by their ctx); %d calls counted in APICalls never left the client (their ctx had ended)\n"+
		"  %d faults injected: %s",
		s.chaos.Round(time.Millisecond), s.total.Round(time.Millisecond),
		s.requests, s.handledOK, s.failed, s.runs, s.duplicates, s.explained,
		s.gens, s.sameKeyRestarts, s.kills, s.startFailures, s.probes, s.maxStop.Round(time.Millisecond),
		st.Handled, st.Failed, st.Retried, st.LocksRenewed, st.LocksLost, st.Abandoned, st.PrefetchReleased, st.RecoveredAtStart, st.ReleasedAtExit, st.CallErrors, st.APICalls,
		s.serverCalls, s.attempts, s.retries, s.addCalls, s.refused, s.ctxEnded, s.notSent,
		total, strings.Join(faults, ", "))
}

func soak(t *testing.T, chaos time.Duration) soakSummary {
	start := time.Now()
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("soak")
	sk := &soaker{
		t: t, srv: srv, queueID: queueID, chaosOver: make(chan struct{}),
		runs: map[string][]*soakRun{}, tried: map[string]bool{}, added: map[string]string{},
		addLog: &soakLog{}, probeLg: &soakLog{},
	}
	sk.adder = srv.Client(apify.WithLogger(slog.New(sk.addLog)))
	defer sk.adder.CloseIdleConnections()
	sk.probe = srv.Client(apify.WithLogger(slog.New(sk.probeLg)))
	defer sk.probe.CloseIdleConnections()

	// The queue: pages, a few that always fail, a few that fail for good.
	seed := make([]apifytest.Request, soakSeed)
	for i := range seed {
		kind := "p"
		switch {
		case i%23 == 5:
			kind = "doomed"
		case i%31 == 7:
			kind = "noretry"
		}
		seed[i] = apifytest.Request{URL: fmt.Sprintf("https://soak.test/%s/%d", kind, i)}
		sk.tried[seed[i].URL] = true
	}
	for i, id := range srv.AddRequests(queueID, seed...) {
		sk.added[id] = seed[i].URL
	}

	var removes []func()
	for op, fs := range soakFaults {
		for _, f := range fs {
			removes = append(removes, srv.InjectFault(op, f))
		}
	}

	// The chaos: for its first 60%, handlers discover links (the queue does
	// not run dry) and some are slow; then it winds down, with quick
	// handlers and no new links, so that the queue runs down. Then the
	// faults stop, and the consumers are stopped but the last, which
	// finishes the queue.
	time.AfterFunc(chaos*6/10, func() { sk.windingDown.Store(true) })
	var slots sync.WaitGroup
	for slot := range soakSlots {
		slots.Add(1)
		go func() {
			defer slots.Done()
			sk.supervise(slot, slot == soakSlots-1)
		}()
	}
	time.Sleep(chaos)
	for _, remove := range removes {
		remove()
	}
	close(sk.chaosOver)
	slots.Wait()
	total := time.Since(start)

	// The emulator's count, before the test's own reads below.
	serverCalls := 0
	for _, op := range apifytest.Operations() {
		serverCalls += srv.Calls(op)
	}
	faults := map[apifytest.Operation]int{}
	for _, op := range apifytest.Operations() {
		faults[op] = srv.Faulted(op)
	}
	return sk.check(serverCalls, faults, chaos, total)
}

// supervise runs slot's Consume calls until the chaos is over: each is
// stopped after 150 to 500 ms (even slots) or 600 to 1500 ms (odd ones),
// or when it returned by itself, and another started, every other time
// under the same clientKey. Once the chaos is over, the consumer is
// stopped, or, for the finisher, finishes the queue and returns by itself.
func (sk *soaker) supervise(slot int, finisher bool) {
	t := sk.t
	key := fmt.Sprintf("soak-%d", slot)
	for n := 0; ; n++ {
		if n > 0 && n%2 == 0 {
			key = fmt.Sprintf("soak-%d-%d", slot, n)
		}
		g := &soakGen{slot: slot, n: n, key: key, log: &soakLog{}, killed: make(chan struct{})}
		base := http.DefaultTransport.(*http.Transport).Clone()
		base.MaxIdleConnsPerHost = 64
		g.conn = &soakConn{base: base}
		g.client = sk.srv.Client(apify.WithLogger(slog.New(g.log)), apify.WithHTTPClient(&http.Client{Transport: g.conn}))
		q := g.client.RequestQueue(sk.queueID)
		sk.mu.Lock()
		sk.gens = append(sk.gens, g)
		sk.mu.Unlock()
		opts := apify.ConsumeOptions{
			ClientKey: key, Concurrency: soakConcurrency, LockDuration: soakLock,
			HandlerTimeout: soakHandlerTimeout, MaxRetries: soakMaxRetries,
			DrainTimeout: soakDrain, ShutdownTimeout: soakShutdown, Logger: slog.New(g.log),
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			g.stats, g.err = q.Consume(ctx, sk.handler(g), opts)
			// Its pool's connections would hold up the server's Close.
			base.CloseIdleConnections()
		}()

		// Once it runs (its first call is made), a second Consume on the
		// same queue and key is refused at once. Its ctx is cancelled: should
		// it start (when the first returned meanwhile), it does nothing.
		for running := false; !running; {
			g.log.mu.Lock()
			running = g.log.calls > 0
			g.log.mu.Unlock()
			select {
			case <-done:
				running = true
			case <-time.After(time.Millisecond):
			}
		}
		dead, kill := context.WithCancel(context.Background())
		kill()
		_, err := sk.probe.RequestQueue(sk.queueID).Consume(dead, func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: key})
		switch {
		case errors.Is(err, apify.ErrConsumeInProgress):
			sk.mu.Lock()
			sk.probes++
			sk.mu.Unlock()
		default:
			// Not refused: the first must have returned meanwhile (its claim
			// ends just before its goroutine closes done).
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("a second Consume on %s, while the first runs: %v; want ErrConsumeInProgress", key, err)
			}
		}

		stop := func(kill bool) {
			asked := time.Now()
			if kill {
				// The process dies: nothing it sends arrives any more, and
				// its handlers stop where they are.
				g.conn.dead.Store(true)
				close(g.killed)
			}
			cancel()
			<-done
			g.stopped, g.kill, g.stopTook = true, kill, time.Since(asked)
		}
		// Even slots restart often; odd ones live long enough for their
		// long handlers to need renewals.
		lifetime := 150*time.Millisecond + rand.N(350*time.Millisecond)
		if slot%2 == 1 {
			lifetime = 600*time.Millisecond + rand.N(900*time.Millisecond)
		}
		life := time.NewTimer(lifetime)
		select {
		case <-done:
			// It returned by itself: the queue was done (for now), or its
			// start failed under the faults. Start again soon; once the
			// chaos is over, only the finisher goes on, until a Consume
			// of its returns nil.
			life.Stop()
			cancel()
			select {
			case <-sk.chaosOver:
				if !finisher || g.err == nil {
					return
				}
			case <-time.After(20 * time.Millisecond):
			}
		case <-life.C:
			// Now and then the process is killed instead, when the next
			// consumer takes the same clientKey: it finds the locks left
			// behind and releases them at its start (RecoveredAtStart).
			stop(n%2 == 0 && rand.N(3) == 0)
		case <-sk.chaosOver:
			life.Stop()
			if !finisher {
				stop(false)
				// The faults are off: the final unlock went through.
				assert.Empty(t, sk.srv.LockedBy(sk.queueID, key), "%s left locks behind", key)
				return
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not finish the queue within 30 s of the chaos", key)
				stop(false)
			}
			cancel()
			assert.NoError(t, g.err, "%s returns nil when the queue is done", key)
			return
		}
	}
}

// handler is the handler of generation g: it behaves at random (or as its
// URL says), and records each run.
func (sk *soaker) handler(g *soakGen) apify.Handler {
	return func(ctx context.Context, req *apify.Request) error {
		run := sk.startRun(req.ID, g, ctx)
		ok, failed := false, true // as a panic or a Goexit leaves them
		defer func() { sk.endRun(run, ok, failed) }()

		switch {
		case strings.Contains(req.URL, "/doomed/"):
			return errors.New("doomed: this page always fails")
		case strings.Contains(req.URL, "/noretry/"):
			return fmt.Errorf("gone for good: %w", apify.ErrNoRetry)
		}
		slow := !sk.windingDown.Load()
		var d time.Duration
		switch p := rand.Float64(); {
		case p < 0.04:
			return errors.New("flaky page")
		case p < 0.05:
			panic("soak: a handler panicked")
		case p < 0.055:
			runtime.Goexit()
		case !slow || p >= 0.20:
			d = rand.N(15 * time.Millisecond)
		case p < 0.06:
			// Ignores its ctx: abandoned a grace after its timeout, its run
			// recorded as a failed attempt, and its nil ignored.
			time.Sleep(soakHandlerTimeout + soakLock/6 + 150*time.Millisecond)
			return nil
		case p < 0.07:
			d = time.Hour // runs until its ctx ends: HandlerTimeout
		case p < 0.13:
			d = 700*time.Millisecond + rand.N(150*time.Millisecond) // its lock needs a renewal
		default:
			d = 30*time.Millisecond + rand.N(120*time.Millisecond)
		}
		select {
		case <-time.After(d):
		case <-g.killed:
			failed = false // its process is gone: nothing of it is recorded
			return errors.New("killed")
		case <-ctx.Done():
			failed = failedAttempt(ctx)
			return context.Cause(ctx)
		}
		if slow {
			// The page links to one more: the queue does not run dry. Now
			// and then it is one that always fails, or fails for good.
			kind := "c"
			switch req.ID[0] {
			case 'A', 'B':
				kind = "doomed/c"
			case 'C':
				kind = "noretry/c"
			}
			u := "https://soak.test/" + kind + "/" + req.ID
			sk.mu.Lock()
			sk.tried[u] = true
			sk.mu.Unlock()
			reg, err := sk.adder.RequestQueue(sk.queueID).AddRequest(ctx, apify.Request{URL: u, UniqueKey: u}, apify.RequestOptions{ClientKey: "soak-links"})
			if err != nil {
				failed = failedAttempt(ctx)
				return fmt.Errorf("adding a discovered link: %w", err)
			}
			sk.mu.Lock()
			sk.added[reg.RequestID] = u
			sk.mu.Unlock()
		}
		ok, failed = true, false
		return nil
	}
}

// failedAttempt reports whether a handler that returns an error now fails
// an attempt (it is recorded, and the request retried): unless a lost lock
// or the shutdown ended its ctx, which cut the run short without its result
// being recorded.
func failedAttempt(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return !errors.Is(cause, apify.ErrLockLost) && !errors.Is(cause, apify.ErrShuttingDown)
}

// startRun records a run, and checks that no earlier run of the request is
// still going with a live ctx.
func (sk *soaker) startRun(id string, g *soakGen, ctx context.Context) *soakRun {
	r := &soakRun{gen: g, ctx: ctx, started: time.Now(), lock: "none"}
	if st, ok := sk.srv.Request(sk.queueID, id); ok && st.Lock != nil {
		r.lock = fmt.Sprintf("held by %s for %v more", st.Lock.ClientKey, st.Lock.ExpiresAt.Sub(r.started).Round(time.Millisecond))
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	for _, prev := range sk.runs[id] {
		if !prev.returned && prev.ctx.Err() == nil {
			sk.overlaps = append(sk.overlaps, fmt.Sprintf("%s: started by %s while %s's run had a live ctx (it started %v before, its lock then %s; this one's %s)",
				id, g.key, prev.gen.key, time.Since(prev.started).Round(time.Millisecond), prev.lock, r.lock))
		}
	}
	sk.runs[id] = append(sk.runs[id], r)
	return r
}

func (sk *soaker) endRun(r *soakRun, ok, failed bool) {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	r.returned, r.ok, r.failed = true, ok, failed
}

// check checks the end state against what the consumers and the emulator
// counted, and sums it up.
func (sk *soaker) check(serverCalls int, faults map[apifytest.Operation]int, chaos, total time.Duration) soakSummary {
	t := sk.t
	sk.mu.Lock()
	defer sk.mu.Unlock()
	s := soakSummary{faults: faults, serverCalls: serverCalls, chaos: chaos, total: total, probes: sk.probes, explained: map[string]int{}}

	// Each Consume: APICalls is the calls its client made; it returned
	// nil, ctx's error, or (under the faults) the error of a start-up
	// unlock none of whose attempts went through; a stop was bounded, a
	// kill included.
	explain := map[string]int{} // request ID -> events that explain a run of it not being recorded
	seenKeys := map[string]bool{}
	for _, g := range sk.gens {
		s.gens++
		if seenKeys[g.key] {
			s.sameKeyRestarts++
		}
		if g.kill {
			s.kills++
		}
		seenKeys[g.key] = true
		st := g.stats
		if !assert.NotNil(t, st, "%s#%d", g.key, g.n) {
			continue
		}
		// APICalls is the number of calls its client made, and of those it
		// refused before any attempt because their ctx had already ended
		// (a lease that ended between Consume's check and its call): rare.
		assert.GreaterOrEqual(t, st.APICalls, g.log.calls, "%s#%d: every call its client made counts in APICalls", g.key, g.n)
		s.notSent += st.APICalls - g.log.calls
		switch {
		case g.err == nil:
		case g.stopped && errors.Is(g.err, context.Canceled):
		case st.APICalls == 1 && (errors.Is(g.err, apify.ErrServerError) || errors.Is(g.err, apify.ErrRateLimited) || isNetworkError(g.err)):
			s.startFailures++
		default:
			t.Errorf("%s#%d returned %v (stats %+v)", g.key, g.n, g.err, *st)
		}
		if g.stopped {
			// The documented bound: DrainTimeout + 1.5 × ShutdownTimeout,
			// with a second for a loaded machine.
			assert.Less(t, g.stopTook, soakDrain+3*soakShutdown/2+time.Second, "%s#%d took %v to stop", g.key, g.n, g.stopTook)
			s.maxStop = max(s.maxStop, g.stopTook)
		}
		s.stats.Handled += st.Handled
		s.stats.Failed += st.Failed
		s.stats.Retried += st.Retried
		s.stats.LocksRenewed += st.LocksRenewed
		s.stats.LocksLost += st.LocksLost
		s.stats.Abandoned += st.Abandoned
		s.stats.PrefetchReleased += st.PrefetchReleased
		s.stats.RecoveredAtStart += st.RecoveredAtStart
		s.stats.ReleasedAtExit += st.ReleasedAtExit
		s.stats.CallErrors += st.CallErrors
		s.stats.APICalls += st.APICalls
		s.attempts += g.log.calls + g.log.retries
		s.retries += g.log.retries
		for kind, ids := range g.log.events {
			for _, id := range ids {
				explain[id]++
				s.explained[kind]++
			}
		}
	}
	assert.LessOrEqual(t, s.notSent, 1+s.stats.APICalls/200, "APICalls counts calls that never left the client")
	assert.Positive(t, s.stats.LocksRenewed, "long handlers had their locks renewed")
	assert.Positive(t, s.stats.CallErrors, "some calls failed after the client's retries")
	if chaos >= 5*time.Second { // the brief soak may not get there
		assert.Positive(t, s.sameKeyRestarts, "consumers restarted under the same clientKey")
		assert.Positive(t, s.kills, "consumers killed")
		assert.Positive(t, s.stats.RecoveredAtStart, "locks of killed consumers recovered at a restart")
	}

	// The calls add up: every attempt a client logged reached the
	// emulator, but those of killed processes and those that ended with
	// their ctx without an answer (which may never have left).
	others := []*soakLog{sk.addLog, sk.probeLg}
	ctxEnded, refused := 0, 0
	for _, g := range sk.gens {
		ctxEnded += g.log.ctxEnded
		refused += int(g.conn.refused.Load())
	}
	for _, l := range others {
		s.attempts += l.calls + l.retries
		s.retries += l.retries
		ctxEnded += l.ctxEnded
	}
	s.addCalls, s.refused, s.ctxEnded = sk.addLog.calls, refused, ctxEnded
	assert.LessOrEqual(t, serverCalls, s.attempts-refused, "the emulator got no call the clients did not make")
	assert.LessOrEqual(t, s.attempts-refused-serverCalls, ctxEnded, "every attempt reached the emulator, but those of killed processes and some cut off by their ctx")

	// The queue's end state: nothing pending or locked, nothing made up,
	// nothing lost.
	assert.Empty(t, sk.srv.Pending(sk.queueID), "nothing left pending")
	assert.Empty(t, sk.srv.Locked(sk.queueID), "no lock left")
	states := sk.srv.Requests(sk.queueID)
	present := map[string]bool{}
	for _, st := range states {
		present[st.ID] = true
		assert.True(t, sk.tried[st.URL], "request %s (%s) made up", st.ID, st.URL)
	}
	for id, u := range sk.added {
		assert.True(t, present[id], "request %s (%s) lost", id, u)
	}

	// Each request: handled, or failed with its errors recorded; a run
	// returned nil for each one handled; the stats add up to the queue's.
	c := sk.probe.RequestQueue(sk.queueID)
	retryCounts := 0
	for req, err := range c.ListRequests(context.Background(), apify.ListRequestsOptions{PageSize: 1000}) {
		if !assert.NoError(t, err) {
			break
		}
		s.requests++
		retryCounts += req.RetryCount
		runs := sk.runs[req.ID]
		okRuns, failedRuns := 0, 0
		for _, r := range runs {
			if r.ok {
				okRuns++
			}
			if r.failed {
				failedRuns++
			}
		}
		s.runs += len(runs)
		if !assert.False(t, req.HandledAt.IsZero(), "%s (%s) not handled", req.ID, req.URL) {
			continue
		}
		switch len(req.ErrorMessages) {
		case req.RetryCount: // handled
			s.handledOK++
			assert.Positive(t, okRuns, "%s (%s) handled, but no run of it returned nil", req.ID, req.URL)
			assert.NotContains(t, req.URL, "/doomed/")
			assert.NotContains(t, req.URL, "/noretry/")
		case req.RetryCount + 1: // failed, its last error recorded without a retry
			s.failed++
			last := req.ErrorMessages[len(req.ErrorMessages)-1]
			switch {
			case strings.Contains(req.URL, "/doomed/"):
				assert.Equal(t, soakMaxRetries, req.RetryCount, "%s failed after MaxRetries", req.URL)
				for _, m := range req.ErrorMessages {
					assert.Contains(t, m, "doomed")
				}
			case strings.Contains(req.URL, "/noretry/"):
				assert.Contains(t, last, apify.ErrNoRetry.Error())
			default:
				assert.Equal(t, soakMaxRetries, req.RetryCount, "%s (%s) failed before MaxRetries: %q", req.ID, req.URL, req.ErrorMessages)
			}
		default:
			t.Errorf("%s (%s): %d error messages for retry count %d: %q", req.ID, req.URL, len(req.ErrorMessages), req.RetryCount, req.ErrorMessages)
		}
		// A request runs once, plus once after each failed attempt, plus
		// once after each run whose result Consume said it did not record.
		if extra := len(runs) - 1 - failedRuns; extra > 0 {
			s.duplicates += extra
			assert.LessOrEqual(t, extra, explain[req.ID], "%s (%s) ran %d times (%d failed) with %d explanations", req.ID, req.URL, len(runs), failedRuns, explain[req.ID])
		}
	}
	assert.Equal(t, len(present), s.requests)
	assert.Empty(t, sk.overlaps, "a request started while an earlier run of it had a live ctx")

	// The stats against the queue: never more recorded than the queue
	// holds (a result counted twice would show here), and no more
	// missing than the runs whose recording was cut off.
	unsure := s.stats.LocksLost + s.explained["cut"]
	assert.LessOrEqual(t, s.stats.Handled, s.handledOK, "Handled: never more than the queue's handled requests")
	assert.LessOrEqual(t, s.handledOK-s.stats.Handled, unsure, "Handled: the queue's handled requests not counted")
	assert.LessOrEqual(t, s.stats.Failed, s.failed, "Failed: never more than the queue's failed requests")
	assert.LessOrEqual(t, s.failed-s.stats.Failed, unsure, "Failed: the queue's failed requests not counted")
	assert.LessOrEqual(t, s.stats.Retried, retryCounts, "Retried: never more than the queue's retry counts add up to")
	assert.LessOrEqual(t, retryCounts-s.stats.Retried, unsure, "Retried: the queue's retries not counted")
	assert.Positive(t, s.handledOK)
	assert.Positive(t, s.failed)
	return s
}

// isNetworkError reports an error without any answer from the API.
func isNetworkError(err error) bool {
	var reqErr *apify.RequestError
	var apiErr *apify.APIError
	return errors.As(err, &reqErr) && !errors.As(err, &apiErr)
}
