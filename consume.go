package apify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Handler processes one request taken from a queue by
// [RequestQueueClient.Consume], which calls it from up to Concurrency
// goroutines at once. It gets the whole request (as GetRequest
// returns it) and may change req.UserData (and the other fields the API
// stores): Consume writes the request back when it records the result. It
// keeps ID, UniqueKey, RetryCount and HandledAt as they were read, since
// the result decides the last two; a handler's changes to them are ignored.
//
// Returning nil marks the request handled. Returning an error puts it back
// for another try, or fails it at once when the error wraps [ErrNoRetry]. A
// panic is a failure of that request, like an error.
//
// ctx ends when the handler must stop: its HandlerTimeout passed, its lock
// was lost ([ErrLockLost]), or the consumer is shutting down and the drain
// time is over. context.Cause(ctx) says which. A handler should return soon
// after ctx ends; its result is recorded only while its lock is still held.
type Handler func(ctx context.Context, req *Request) error

// ErrNoRetry, wrapped by a handler's error, fails the request at once: it is
// marked handled with the error recorded, whatever its retry count.
var ErrNoRetry = errors.New("do not retry")

// ErrLockLost is the cause (context.Cause) of a handler's ctx when the
// consumer lost the request's lock: a prolong was refused (another client
// holds it, or it was deleted or handled), or the lock expired before it
// could be prolonged. The handler's result is then not recorded.
var ErrLockLost = errors.New("lock lost")

// ErrHandlerTimeout is the cause of a handler's ctx when its
// ConsumeOptions.HandlerTimeout passed; the request then fails (and is
// retried if it has retries left).
var ErrHandlerTimeout = errors.New("handler timed out")

// ErrShuttingDown is the cause of a handler's ctx when the consumer's ctx
// ended and ConsumeOptions.DrainTimeout passed before the handler returned.
var ErrShuttingDown = errors.New("consumer shutting down")

// Defaults of [ConsumeOptions], used for its zero fields.
const (
	// DefaultConsumeConcurrency is how many handlers run at once.
	DefaultConsumeConcurrency = 10
	// DefaultConsumeLockDuration is the lease taken and renewed per request.
	DefaultConsumeLockDuration = time.Minute
	// DefaultConsumeHandlerTimeout bounds one handler call.
	DefaultConsumeHandlerTimeout = time.Minute
	// DefaultConsumeMaxRetries is how many times a failed request is tried again.
	DefaultConsumeMaxRetries = 3
	// DefaultConsumeDrainTimeout is how long running handlers may go on at shutdown.
	DefaultConsumeDrainTimeout = 10 * time.Second
	// DefaultConsumePrefetch is how many locked requests may wait for a free
	// handler: one head/lock call's worth.
	DefaultConsumePrefetch = MaxLockHeadLimit
)

const (
	consumeErrorsKept             = 10   // error messages kept on a request
	consumeErrorMessageMax        = 1000 // bytes of one error message
	consumeMaxConcurrency         = 10_000
	consumeMinLockDuration        = time.Second
	consumeFinishConfirmWait      = time.Second
	consumeIdlePollMin            = 100 * time.Millisecond
	consumeIdlePollMax            = 2 * time.Second
	consumeErrorBackoffMin        = 500 * time.Millisecond
	consumeErrorBackoffMax        = 30 * time.Second
	consumeProlongParallelism     = 8
	consumeShutdownReleaseWorkers = 8
)

// ConsumeOptions configures [RequestQueueClient.Consume]. The zero value
// works: every zero field means the documented default.
type ConsumeOptions struct {
	// ClientKey is the key the requests are locked under; "" means
	// DefaultClientKey(). Consume starts by releasing every lock this key
	// holds on the queue, so two consumers must not share a clientKey on
	// one queue (see Consume).
	ClientKey string
	// Concurrency is how many handlers run at once; 0 means
	// DefaultConsumeConcurrency (10).
	Concurrency int
	// LockDuration is the lease taken (and renewed) per request, 1 s to 24 h;
	// 0 means DefaultConsumeLockDuration (1 minute). It bounds how long a
	// crashed consumer's requests stay invisible to the others.
	LockDuration time.Duration
	// HandlerTimeout bounds one handler call; 0 means
	// DefaultConsumeHandlerTimeout (1 minute). After it the handler's ctx
	// ends (cause ErrHandlerTimeout) and, if the handler still runs a third
	// of LockDuration later, its lock is no longer renewed.
	HandlerTimeout time.Duration
	// MaxRetries is how many times a failed request is tried again (2: at
	// most 3 runs); 0 means DefaultConsumeMaxRetries (3), negative means never.
	MaxRetries int
	// DrainTimeout is how long running handlers may go on once ctx ended; 0
	// means DefaultConsumeDrainTimeout (10 s), negative means none (their
	// ctx ends at once).
	DrainTimeout time.Duration
	// ShutdownTimeout bounds the final release of locks (and the wait for
	// handlers cancelled at the end of the drain); 0 means
	// DefaultShutdownTimeout (5 s).
	ShutdownTimeout time.Duration
	// KeepAlive keeps Consume waiting for new requests instead of returning
	// when the queue is done; only ctx ends it.
	KeepAlive bool
	// Prefetch is how many requests beyond the free handler slots may be
	// locked and waiting; 0 means DefaultConsumePrefetch (25, one head/lock
	// call's worth), negative means none (a request is locked only for a
	// free slot, at the price of more head/lock calls).
	Prefetch int
	// Logger receives a record for every queue call that failed after the
	// client's retries, every lost lock, and every handler failure; nil
	// logs nothing.
	Logger *slog.Logger
}

// ConsumeStats counts what [RequestQueueClient.Consume] did.
type ConsumeStats struct {
	// Handled is how many requests were marked handled after their handler
	// succeeded, Failed how many were given up (marked handled with their
	// errors recorded), and Retried how many were put back for another try.
	Handled, Failed, Retried int
	// LocksRenewed counts prolongs; LocksLost counts requests whose lock was
	// lost (refused prolong, expiry, or a refused result), whose result
	// Consume therefore did not record.
	LocksRenewed, LocksLost int
	// RecoveredAtStart is how many locks the start-up unlock released;
	// ReleasedAtExit how many the shutdown released (the final unlock plus
	// the prefetched requests released one by one while handlers drained).
	RecoveredAtStart, ReleasedAtExit int
	// APICalls counts every queue call Consume made (calls, not HTTP
	// attempts: the client's retries are not counted).
	APICalls int
	// CallErrors counts queue calls that failed after the client's retries
	// (429, 5xx, network) and were tried again later.
	CallErrors int
}

// Consume takes requests from the queue and runs h on each, up to
// Concurrency at a time, until the queue is done (or, with KeepAlive, until
// ctx ends). It is the loop every crawler needs, written once:
//
//  1. Start-up: it first calls UnlockRequests with its clientKey, so locks
//     left by an earlier run with the same key (a restarted or migrated
//     Actor run, a killed process) are back in the queue at once
//     (RecoveredAtStart). Therefore two consumers must not share a
//     clientKey on one queue: each would release the other's locks.
//  2. Flow control: one loop locks requests with head/lock (at most 25 per
//     call), as many as the free handler slots and Prefetch can take, and
//     hands them to handlers in queue order; a request goes to a handler
//     only while at least a sixth of LockDuration is left on its lock (one
//     whose prolongs fail waits for one to succeed, or is dropped when its
//     lock ends).
//  3. Leases: every request held, waiting or running, is prolonged when
//     less than a third of LockDuration is left, so handlers much shorter
//     than the lock cost no prolong at all. Expiry is tracked with the
//     local clock from the moment each lock call was sent, so clock skew
//     with the server does not matter. A refused prolong (403, 404) or a
//     lock that expired before it could be prolonged cancels that handler's
//     ctx (cause ErrLockLost), counts in LocksLost, and its result is not
//     recorded: the request is someone else's now.
//  4. Results: the handler gets the request as GetRequest returns it, and
//     changes it makes to UserData are saved. nil marks the request handled
//     (which also releases its lock). An error (or a panic, or
//     HandlerTimeout) adds 1 to RetryCount, appends the message to
//     ErrorMessages (the last 10 are kept, each at most 1000 bytes), writes
//     the request back and deletes its lock, so it goes to the back of the
//     queue for another try; after MaxRetries, at once for an error
//     wrapping ErrNoRetry, or when the request has NoRetry set, it is
//     marked handled with its errors recorded and counted in Failed.
//  5. Finishing: when head/lock returns nothing, no client holds a lock
//     (queueHasLockedRequests is false) and nothing is in flight here,
//     Consume looks once more a second later (the platform's head is
//     eventually consistent), then returns nil. While other clients hold
//     locks it polls with backoff, since their requests may come back.
//  6. Shutdown, when ctx ends: it stops locking, releases at once the
//     prefetched requests no handler started, lets running handlers finish
//     for DrainTimeout (their results are recorded, their locks still
//     renewed), then cancels their ctx (cause ErrShuttingDown) and waits
//     for them at most half of ShutdownTimeout, and finally calls
//     UnlockAtShutdown with ShutdownTimeout, detached from ctx. It returns
//     the stats and ctx's error. So a SIGTERM'd process leaves no lock, and
//     Consume returns within DrainTimeout + 1.5 × ShutdownTimeout of ctx's
//     end even if a handler ignores its ctx (that handler's result is then
//     dropped).
//  7. Errors: Consume returns an error only for invalid options (before any
//     I/O, wrapping ErrInvalidInput, ErrInvalidClientKey or
//     ErrInvalidQueueID), when the queue is unusable (a 401, a 403 other
//     than a refused lock, or a 400 or 404 on the queue's own unlock and
//     head/lock calls; a 404 on one request only skips that request, and a
//     400 or 413 on a result records it on the request as read), or when
//     ctx ends. Transient failures (429, 5xx, network), even after the
//     client's retries, are counted in
//     CallErrors, logged, and tried again after a backoff (Retry-After when
//     the API sent one). A request whose result cannot be written stays
//     locked and renewed while Consume retries, then is released at exit
//     or by its lock's expiry: never lost.
//
// What Consume cannot promise: exactly-once execution. A handler whose lock
// lapsed (it ran past HandlerTimeout while ignoring its ctx, or every
// prolong failed until expiry, or the process froze) may see its request
// run again elsewhere; a process killed mid-handler leaves the request
// locked until its lock expires or the next start with the same key. Write
// handlers so that running twice does no harm.
//
// API economy: with handlers shorter than half the lock, a handled request
// costs about 2.05 queue calls (GetRequest, the update that marks it
// handled, a share of a head/lock of 12 to 25 requests), plus one unlock at
// start and one at exit. That holds while a prefetched request waits less
// than two thirds of the lock for a handler (about Prefetch ÷ Concurrency
// handler runs); with few, slow handlers the waiting requests are prolonged
// too: lower Prefetch then.
func (q *RequestQueueClient) Consume(ctx context.Context, h Handler, opts ConsumeOptions) (*ConsumeStats, error) {
	if q.err != nil {
		return &ConsumeStats{}, q.err
	}
	if ctx == nil {
		return &ConsumeStats{}, fmt.Errorf("apify: %w: Consume: nil Context", ErrInvalidInput)
	}
	if h == nil {
		return &ConsumeStats{}, fmt.Errorf("apify: %w: Consume: the Handler is nil", ErrInvalidInput)
	}
	o, err := opts.resolve()
	if err != nil {
		return &ConsumeStats{}, err
	}
	c := newConsumer(q, h, o)
	return c.run(ctx)
}

// resolve fills in defaults and checks every option.
func (o ConsumeOptions) resolve() (ConsumeOptions, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("apify: %w: ConsumeOptions."+format, append([]any{ErrInvalidInput}, args...)...))
	}
	if o.ClientKey == "" {
		o.ClientKey = DefaultClientKey()
	}
	if err := validateClientKey(o.ClientKey); err != nil {
		errs = append(errs, fmt.Errorf("ConsumeOptions.ClientKey: %w", err))
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = DefaultConsumeConcurrency
	case o.Concurrency < 0 || o.Concurrency > consumeMaxConcurrency:
		bad("Concurrency is %d; it must be 1 to %d (0 means %d)", o.Concurrency, consumeMaxConcurrency, DefaultConsumeConcurrency)
	}
	switch {
	case o.LockDuration == 0:
		o.LockDuration = DefaultConsumeLockDuration
	case o.LockDuration < consumeMinLockDuration || o.LockDuration > MaxLockDuration:
		bad("LockDuration is %v; it must be %v to %v (0 means %v)", o.LockDuration, consumeMinLockDuration, MaxLockDuration, DefaultConsumeLockDuration)
	}
	switch {
	case o.HandlerTimeout == 0:
		o.HandlerTimeout = DefaultConsumeHandlerTimeout
	case o.HandlerTimeout < 0:
		bad("HandlerTimeout is %v; it must be positive (0 means %v)", o.HandlerTimeout, DefaultConsumeHandlerTimeout)
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultConsumeMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	switch {
	case o.DrainTimeout == 0:
		o.DrainTimeout = DefaultConsumeDrainTimeout
	case o.DrainTimeout < 0:
		o.DrainTimeout = 0
	}
	switch {
	case o.ShutdownTimeout == 0:
		o.ShutdownTimeout = DefaultShutdownTimeout
	case o.ShutdownTimeout < 0:
		bad("ShutdownTimeout is %v; it must be positive (0 means %v)", o.ShutdownTimeout, DefaultShutdownTimeout)
	}
	switch {
	case o.Prefetch == 0:
		o.Prefetch = DefaultConsumePrefetch
	case o.Prefetch < 0:
		o.Prefetch = 0
	case o.Prefetch > consumeMaxConcurrency:
		bad("Prefetch is %d; it must be at most %d (0 means %d, negative none)", o.Prefetch, consumeMaxConcurrency, DefaultConsumePrefetch)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, errors.Join(errs...)
}

// itemState is where a held request is in its life.
type itemState int

const (
	itemWaiting   itemState = iota // locked, in the jobs channel
	itemRunning                    // taken by a worker: fetching, in its handler, or recording
	itemRecording                  // its result is being written
	itemDone                       // no longer held (handled, released, or lost)
)

// item is one request this consumer holds a lock on.
type item struct {
	id, url string
	// Guarded by consumer.mu:
	state       itemState
	deadline    time.Time // local estimate of the lock's expiry (never later than the server's)
	renewUntil  time.Time // while running, renew only before this (HandlerTimeout plus a grace)
	nextTry     time.Time // after a failed prolong, not before this
	prolongFail int
	prolonging  bool
	lost        bool
	cancel      context.CancelCauseFunc // the handler's, while it runs
}

type consumer struct {
	q   *RequestQueueClient
	h   Handler
	o   ConsumeOptions
	log *slog.Logger

	// lowWater is how few locked requests may wait before the locker locks
	// more: enough to keep the handlers busy while a head/lock call is in
	// flight (each handler spends about two calls per request).
	lowWater int
	// minBatch is the fewest requests a head/lock asks for while handlers
	// are busy: half a prefetch, so that with many handlers (more than twice
	// the prefetch) a call is not spent on each freed slot.
	minBatch int

	mu      sync.Mutex
	held    map[string]*item
	waiting int // items in jobs
	busy    int // workers with an item
	jobs    chan *item

	wakeLocker chan struct{}
	wakeKeeper chan struct{}

	// ops is detached from the caller's ctx: it carries prolongs and the
	// recording of results through the drain, and ends at the very end.
	ops       context.Context
	cancelOps context.CancelFunc
	// taking ends when the consumer stops taking work (ctx ended, a fatal
	// error, or the queue is done).
	taking     context.Context
	stopTaking context.CancelFunc
	// drained is closed when the drain time is over: running handlers' ctx end.
	drained chan struct{}

	// releasing tracks the deletes of unstarted requests' locks at shutdown,
	// at most consumeShutdownReleaseWorkers at a time (releaseSlots).
	releasing    sync.WaitGroup
	releaseSlots chan struct{}

	fatalOnce sync.Once
	fatal     atomic.Pointer[error]

	handled, failed, retried, renewed, lost, recovered, released, calls, callErrors atomic.Int64
}

func newConsumer(q *RequestQueueClient, h Handler, o ConsumeOptions) *consumer {
	return &consumer{
		q: q, h: h, o: o, log: o.Logger,
		lowWater:   o.Concurrency / 2,
		minBatch:   max(1, min(o.Prefetch, MaxLockHeadLimit)/2),
		held:       map[string]*item{},
		jobs:       make(chan *item, o.Concurrency+o.Prefetch+MaxLockHeadLimit),
		wakeLocker: make(chan struct{}, 1),
		wakeKeeper: make(chan struct{}, 1),
		drained:    make(chan struct{}),

		releaseSlots: make(chan struct{}, consumeShutdownReleaseWorkers),
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *consumer) stats() *ConsumeStats {
	return &ConsumeStats{
		Handled: int(c.handled.Load()), Failed: int(c.failed.Load()), Retried: int(c.retried.Load()),
		LocksRenewed: int(c.renewed.Load()), LocksLost: int(c.lost.Load()),
		RecoveredAtStart: int(c.recovered.Load()), ReleasedAtExit: int(c.released.Load()),
		APICalls: int(c.calls.Load()), CallErrors: int(c.callErrors.Load()),
	}
}

// setFatal records the first error that makes the queue unusable and stops taking work.
func (c *consumer) setFatal(err error) {
	c.fatalOnce.Do(func() {
		c.fatal.Store(&err)
		c.log.Error("apify: Consume stops: the queue is unusable", "queue", c.q.id, "error", err)
	})
	c.stopTaking()
}

func (c *consumer) run(ctx context.Context) (*ConsumeStats, error) {
	c.ops, c.cancelOps = context.WithCancel(context.WithoutCancel(ctx))
	defer c.cancelOps()
	c.taking, c.stopTaking = context.WithCancel(ctx)
	defer c.stopTaking()

	// 1. Start-up recovery.
	for attempt := 0; ; attempt++ {
		c.calls.Add(1)
		res, err := c.q.UnlockRequests(c.taking, c.o.ClientKey)
		if err == nil {
			c.recovered.Add(int64(res.UnlockedCount))
			if res.UnlockedCount > 0 {
				c.log.Info("apify: Consume recovered locks left by an earlier run with the same clientKey", "queue", c.q.id, "count", res.UnlockedCount)
			}
			break
		}
		if ctx.Err() != nil {
			return c.stats(), ctx.Err()
		}
		if queueUnusable(err) {
			return c.stats(), err
		}
		c.transient("unlock at start", err)
		if !sleepCtx(ctx, c.backoff(attempt, err)) {
			return c.stats(), ctx.Err()
		}
	}

	var workers, keeper sync.WaitGroup
	keeperStop := make(chan struct{})
	keeper.Add(1)
	go func() { defer keeper.Done(); c.keep(keeperStop) }()
	for range c.o.Concurrency {
		workers.Add(1)
		go func() { defer workers.Done(); c.work() }()
	}

	c.lockLoop()
	c.stopTaking()

	// 6. Shutdown (or the end of the queue: then nothing is held).
	for _, it := range c.takeUnstarted() {
		c.unstart(it, false)
	}
	workersDone := make(chan struct{})
	go func() { workers.Wait(); close(workersDone) }()
	drain := time.NewTimer(c.o.DrainTimeout)
	select {
	case <-workersDone:
	case <-drain.C:
	}
	drain.Stop()
	close(c.drained) // running handlers' ctx end now
	c.mu.Lock()
	for _, it := range c.held {
		if it.cancel != nil {
			it.cancel(ErrShuttingDown)
		}
	}
	c.mu.Unlock()
	grace := time.NewTimer(c.o.ShutdownTimeout / 2)
	select {
	case <-workersDone:
	case <-grace.C:
		c.log.Warn("apify: Consume: handlers still running after their ctx was cancelled; their results are dropped", "queue", c.q.id)
	}
	grace.Stop()
	c.cancelOps() // ends recording and prolongs
	close(keeperStop)
	keeper.Wait()
	c.releasing.Wait()

	c.calls.Add(1)
	res, err := c.q.UnlockAtShutdown(ctx, c.o.ClientKey, c.o.ShutdownTimeout)
	if err != nil {
		c.log.Error("apify: Consume: releasing the locks at exit failed; they expire on their own", "queue", c.q.id, "lockDuration", c.o.LockDuration, "error", err)
	} else {
		c.released.Add(int64(res.UnlockedCount))
	}
	switch fatal := c.fatal.Load(); {
	case fatal != nil:
		return c.stats(), *fatal
	case ctx.Err() != nil:
		return c.stats(), ctx.Err()
	}
	return c.stats(), nil
}

// lockLoop locks requests and feeds them to the workers until the queue is
// done, taking ends, or a fatal error.
func (c *consumer) lockLoop() {
	lowWater := c.lowWater
	capacity := c.o.Concurrency + c.o.Prefetch
	idle := consumeIdlePollMin
	confirming := false
	fails := 0
	mayHaveStranded := false // a head/lock failed: it may have locked requests we never saw
	for c.taking.Err() == nil {
		c.mu.Lock()
		room := capacity - c.busy - c.waiting
		// With nothing waiting, room is at least Prefetch ≥ minBatch: a
		// free handler never waits for a batch to fill.
		want := c.waiting <= lowWater && room >= c.minBatch
		c.mu.Unlock()
		if !want {
			select {
			case <-c.taking.Done():
				return
			case <-c.wakeLocker:
			}
			continue
		}
		limit := min(MaxLockHeadLimit, room)
		sent := time.Now()
		c.calls.Add(1)
		head, err := c.q.ListAndLockHead(c.taking, LockHeadOptions{Limit: limit, LockDuration: c.o.LockDuration, ClientKey: c.o.ClientKey})
		if err != nil {
			if c.taking.Err() != nil {
				return
			}
			if queueUnusable(err) {
				c.setFatal(err)
				return
			}
			c.transient("head/lock", err)
			mayHaveStranded = true
			if !sleepCtx(c.taking, c.backoff(fails, err)) {
				return
			}
			fails++
			continue
		}
		fails = 0
		if n := len(head.Items); n > 0 {
			idle, confirming = consumeIdlePollMin, false
			dur := c.o.LockDuration
			if head.LockDuration > 0 && head.LockDuration < dur {
				dur = head.LockDuration
			}
			deadline := sent.Add(dur)
			c.mu.Lock()
			for _, li := range head.Items {
				if old := c.held[li.ID]; old != nil && old.state != itemDone {
					continue // already ours (a lost response's locks coming back): keep the one we have
				}
				it := &item{id: li.ID, url: li.URL, state: itemWaiting, deadline: deadline}
				c.held[li.ID] = it
				c.waiting++
				c.jobs <- it // never blocks: held ≤ capacity ≤ cap(jobs)
			}
			c.mu.Unlock()
			wake(c.wakeKeeper)
			continue
		}
		c.mu.Lock()
		holding := len(c.held) > 0
		c.mu.Unlock()
		if !holding && !head.QueueHasLockedRequests && !c.o.KeepAlive {
			if confirming {
				return // done
			}
			confirming = true
			if !sleepCtx(c.taking, consumeFinishConfirmWait) {
				return
			}
			continue
		}
		confirming = false
		if !holding && head.QueueHasLockedRequests && mayHaveStranded {
			// A failed head/lock may have locked requests under our key that
			// we never got: with nothing else held, releasing all our locks
			// brings them back now rather than when they expire.
			c.calls.Add(1)
			res, err := c.q.UnlockRequests(c.taking, c.o.ClientKey)
			switch {
			case err == nil:
				mayHaveStranded = false
				if res.UnlockedCount > 0 {
					c.log.Info("apify: Consume released locks a failed head/lock had taken", "queue", c.q.id, "count", res.UnlockedCount)
					continue
				}
			case c.taking.Err() != nil:
				return
			default:
				// Tried again at the next poll; the locks expire meanwhile anyway.
				c.transient("unlock after a failed head/lock", err)
			}
		}
		// Nothing to take now: others (or we) hold locks, or KeepAlive.
		// Poll again after idle, or as soon as we hold nothing any more.
		t := time.NewTimer(jitter(idle))
		idle = min(2*idle, consumeIdlePollMax)
	wait:
		for {
			select {
			case <-c.taking.Done():
				t.Stop()
				return
			case <-t.C:
				break wait
			case <-c.wakeLocker:
				c.mu.Lock()
				empty := len(c.held) == 0
				c.mu.Unlock()
				if empty && holding {
					t.Stop()
					break wait
				}
			}
		}
	}
}

// work is one worker: it takes requests in queue order and processes them.
func (c *consumer) work() {
	for {
		var it *item
		select {
		case <-c.taking.Done():
			return
		case it = <-c.jobs:
		}
		c.mu.Lock()
		c.waiting--
		if c.taking.Err() != nil {
			// Stopped meanwhile: the final unlock releases it.
			c.mu.Unlock()
			c.unstart(it, false)
			return
		}
		if it.lost {
			c.mu.Unlock()
			wake(c.wakeLocker)
			continue
		}
		it.state = itemRunning
		c.busy++
		low := c.waiting <= c.lowWater
		c.mu.Unlock()
		if low {
			wake(c.wakeLocker) // time to lock more
		}

		c.process(it)

		c.mu.Lock()
		c.busy--
		// The locker waits for room when few requests wait, and for the
		// last held request to finish when the queue looked empty.
		low = c.waiting <= c.lowWater || len(c.held) == 0
		c.mu.Unlock()
		if low {
			wake(c.wakeLocker)
		}
	}
}

// takeUnstarted empties jobs after taking ended and returns the requests
// no handler started (their locks still valid as far as we know).
func (c *consumer) takeUnstarted() []*item {
	var out []*item
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		select {
		case it := <-c.jobs:
			c.waiting--
			if !it.lost && it.state == itemWaiting {
				out = append(out, it)
			}
		default:
			return out
		}
	}
}

// process runs the handler on one request and records its result.
func (c *consumer) process(it *item) {
	// 2. Hand it over only while its lock is valid. Held items are renewed by
	// the keeper a third of the lock before expiry; one whose renewal failed
	// so far is lost when its deadline passes.
	req, ok := c.fetch(it)
	if !ok || !c.awaitValidLock(it) {
		return
	}
	if c.taking.Err() != nil {
		c.unstart(it, true) // shutting down: do not start new work
		return
	}
	orig := *req
	orig.ErrorMessages = slices.Clone(req.ErrorMessages)
	orig.UserData, orig.Payload, orig.Headers = slices.Clone(req.UserData), slices.Clone(req.Payload), slices.Clone(req.Headers)

	// One context per handler: its cancel carries the cause (timeout, lost
	// lock, shutdown), and a timer, not a second context, makes the timeout.
	hctx, cancel := context.WithCancelCause(context.WithoutCancel(c.taking))
	timeout := time.AfterFunc(c.o.HandlerTimeout, func() { cancel(ErrHandlerTimeout) })
	c.mu.Lock()
	if it.lost {
		c.mu.Unlock()
		timeout.Stop()
		cancel(ErrLockLost)
		return
	}
	start := time.Now()
	it.renewUntil = start.Add(c.o.HandlerTimeout + c.o.LockDuration/3)
	it.cancel = cancel
	c.mu.Unlock()
	select {
	case <-c.drained:
		cancel(ErrShuttingDown)
	default:
	}

	herr := c.call(hctx, req)
	if herr != nil && errors.Is(context.Cause(hctx), ErrHandlerTimeout) && !errors.Is(herr, ErrHandlerTimeout) {
		herr = fmt.Errorf("%w after %v: %w", ErrHandlerTimeout, c.o.HandlerTimeout, herr)
	}
	timeout.Stop()
	shuttingDown := errors.Is(context.Cause(hctx), ErrShuttingDown)
	cancel(nil)

	c.mu.Lock()
	it.cancel = nil
	if it.lost {
		c.mu.Unlock()
		return // counted when found; the request is someone else's now
	}
	it.state = itemRecording
	it.renewUntil = time.Time{}
	c.mu.Unlock()

	if herr != nil && shuttingDown {
		// Cut off by the shutdown, not a failure of the request: leave it
		// locked for the final unlock, without spending a retry.
		c.log.Info("apify: Consume: handler stopped by the shutdown; the request goes back to the queue", "queue", c.q.id, "request", it.id)
		c.finish(it)
		return
	}
	// The queue owns these fields; the handler's changes to them are ignored.
	req.ID, req.UniqueKey, req.RetryCount, req.HandledAt = orig.ID, orig.UniqueKey, orig.RetryCount, time.Time{}
	c.record(it, req, &orig, herr)
}

// awaitValidLock holds a request back from its handler while less than a
// sixth of LockDuration is left on its lock, which happens only when the
// keeper's prolongs keep failing: it waits until a prolong succeeds, or the
// lock is lost (false). So a handler starts only on a lock with time left.
func (c *consumer) awaitValidLock(it *item) bool {
	margin := c.o.LockDuration / 6
	for {
		c.mu.Lock()
		lost, left := it.lost, time.Until(it.deadline)
		c.mu.Unlock()
		switch {
		case lost:
			return false
		case left >= margin:
			return true
		case left <= 0:
			c.mu.Lock()
			c.loseLocked(it, "the lock expired before it could be prolonged", nil)
			c.mu.Unlock()
			return false
		}
		if !sleepCtx(c.taking, max(min(left/2, 250*time.Millisecond), time.Millisecond)) {
			c.unstart(it, true)
			return false
		}
	}
}

// call runs the handler, turning a panic into an error.
func (c *consumer) call(ctx context.Context, req *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("apify: Consume: handler panicked", "queue", c.q.id, "request", req.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return c.h(ctx, req)
}

// fetch gets the whole request, retrying transient failures while the lock
// holds. It reports false when the request must not run: the lock was lost,
// the request is gone or handled, or taking ended (the request is then left
// locked for the shutdown release).
func (c *consumer) fetch(it *item) (*Request, bool) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		lost := it.lost
		c.mu.Unlock()
		if lost {
			return nil, false
		}
		c.calls.Add(1)
		req, err := c.q.GetRequest(c.taking, it.id)
		switch {
		case err == nil && !req.HandledAt.IsZero():
			c.log.Warn("apify: Consume: a locked request was already handled; skipped", "queue", c.q.id, "request", it.id)
			c.finish(it)
			return nil, false
		case err == nil:
			return req, true
		case c.taking.Err() != nil:
			c.unstart(it, true)
			return nil, false
		case errors.Is(err, ErrNotFound):
			c.log.Warn("apify: Consume: a locked request is gone (deleted?); skipped", "queue", c.q.id, "request", it.id, "error", err)
			c.finish(it)
			return nil, false
		case queueUnusable(err):
			c.unstart(it, true)
			c.setFatal(err)
			return nil, false
		}
		c.transient("get request", err)
		if !sleepCtx(c.taking, c.backoff(attempt, err)) {
			c.unstart(it, true)
			return nil, false
		}
	}
}

// unstart gives back a request no handler started, once taking ended. While
// handlers still run (the final unlock waits for their drain), its lock is
// deleted at once; otherwise the final unlock, which comes right away,
// releases it with the rest.
// self says the caller is a busy worker (it does not count as a running handler).
func (c *consumer) unstart(it *item, self bool) {
	c.mu.Lock()
	if it.lost || it.state == itemDone {
		c.mu.Unlock()
		return
	}
	c.forgetLocked(it)
	running := c.busy > 0
	if self {
		running = c.busy > 1
	}
	c.mu.Unlock()
	if !running {
		return
	}
	c.releasing.Add(1)
	go func() {
		defer c.releasing.Done()
		c.releaseSlots <- struct{}{}
		defer func() { <-c.releaseSlots }()
		// Bounded, and cut short when the drain ends: the final unlock
		// then releases whatever is left.
		ctx, cancel := context.WithTimeout(c.ops, c.o.ShutdownTimeout)
		defer cancel()
		c.calls.Add(1)
		// Forefront: it was at the head of the queue.
		err := c.q.DeleteRequestLock(ctx, it.id, DeleteLockOptions{ClientKey: c.o.ClientKey, Forefront: true})
		if err == nil {
			c.released.Add(1)
			return
		}
		c.log.Warn("apify: Consume: releasing a prefetched request failed; the final unlock will", "queue", c.q.id, "request", it.id, "error", err)
	}()
}

// finish forgets a request: it is no longer held (handled, released, or gone).
func (c *consumer) finish(it *item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(it)
}

// forgetLocked marks a request done and drops it from held (unless a newer
// item of the same ID replaced it there); c.mu must be held.
func (c *consumer) forgetLocked(it *item) {
	it.state = itemDone
	if c.held[it.id] == it {
		delete(c.held, it.id)
	}
}

// loseLocked marks a request lost; c.mu must be held. It reports whether it
// was the first to do so.
func (c *consumer) loseLocked(it *item, why string, err error) bool {
	if it.lost || it.state == itemDone {
		return false
	}
	it.lost = true
	c.forgetLocked(it)
	if it.cancel != nil {
		it.cancel(ErrLockLost)
	}
	c.lost.Add(1)
	c.log.Warn("apify: Consume: lost the lock on a request; its result will not be recorded here", "queue", c.q.id, "request", it.id, "why", why, "error", err)
	return true
}

// record writes the result of a handler: handled, put back, or failed.
func (c *consumer) record(it *item, req, orig *Request, herr error) {
	var deleteLock bool
	switch {
	case herr == nil:
		req.HandledAt = time.Now().UTC()
	case errors.Is(herr, ErrNoRetry) || req.NoRetry || orig.NoRetry || req.RetryCount >= c.o.MaxRetries:
		req.ErrorMessages = appendError(req.ErrorMessages, herr)
		req.HandledAt = time.Now().UTC()
		c.log.Warn("apify: Consume: request failed; giving up", "queue", c.q.id, "request", it.id, "url", it.url, "retryCount", req.RetryCount, "error", herr)
	default:
		req.RetryCount++
		req.ErrorMessages = appendError(req.ErrorMessages, herr)
		req.HandledAt = time.Time{}
		deleteLock = true
		c.log.Info("apify: Consume: request failed; it will be retried", "queue", c.q.id, "request", it.id, "url", it.url, "retryCount", req.RetryCount, "error", herr)
	}
	// asRead drops the handler's changes to the request, keeping the result:
	// the request as it was read, which the API stored before.
	asRead := func() {
		fixed := *orig
		fixed.RetryCount, fixed.ErrorMessages, fixed.HandledAt = req.RetryCount, req.ErrorMessages, req.HandledAt
		*req = fixed
	}
	if err := validateNewRequest("the request", *req); err != nil {
		// The handler left the request unstorable (say, UserData that is not
		// JSON): record the result on the request as it was read.
		c.log.Warn("apify: Consume: the handler's changes to the request cannot be stored; recording the result on the request as read", "queue", c.q.id, "request", it.id, "error", err)
		asRead()
	}
	update := func(ctx context.Context) error {
		_, err := c.q.UpdateRequest(ctx, *req, RequestOptions{ClientKey: c.o.ClientKey, Forefront: false})
		return err
	}
	err := c.retryCall(it, "update request", update)
	if refusedRequest(err) {
		// The API refused what the handler made of the request: record the
		// result on the request as it was read, which the API stored before.
		c.log.Warn("apify: Consume: the API refused the handler's changes to the request; recording the result on the request as read", "queue", c.q.id, "request", it.id, "error", err)
		asRead()
		err = c.retryCall(it, "update request", update)
	}
	if err == nil && deleteLock {
		err = c.retryCall(it, "delete lock", func(ctx context.Context) error {
			return c.q.DeleteRequestLock(ctx, it.id, DeleteLockOptions{ClientKey: c.o.ClientKey, Forefront: false})
		})
	}
	if err != nil {
		if refusedRequest(err) {
			c.log.Error("apify: Consume: the API refused the result; the request stays locked until its lock expires", "queue", c.q.id, "request", it.id, "error", err)
			c.finish(it)
		}
		return
	}
	c.mu.Lock()
	if it.lost {
		// The deadline passed while the call was in flight, but the API took
		// the result: it was recorded after all.
		c.lost.Add(-1)
	}
	c.mu.Unlock()
	switch {
	case herr == nil:
		c.handled.Add(1)
	case deleteLock:
		c.retried.Add(1)
	default:
		c.failed.Add(1)
	}
	c.finish(it)
}

// retryCall makes a call that records a result, retrying transient failures
// while the lock holds (the keeper renews it meanwhile) and until the end of
// the shutdown. It returns nil when the call succeeded, a 400 or 413 as it
// came (the request is still held: the caller decides), and otherwise an error
// after it dealt with the request (lost, gone, or left to the final unlock).
func (c *consumer) retryCall(it *item, what string, f func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		c.calls.Add(1)
		err := f(c.ops)
		if err == nil {
			return nil
		}
		c.mu.Lock()
		lost := it.lost
		c.mu.Unlock()
		switch {
		case lost:
			return err
		case c.ops.Err() != nil:
			c.log.Warn("apify: Consume: could not record a result before the shutdown ended; the request goes back to the queue", "queue", c.q.id, "request", it.id, "error", err)
			c.finish(it)
			return err
		case isLockRefused(err):
			c.mu.Lock()
			c.loseLocked(it, what+" refused", err)
			c.mu.Unlock()
			return err
		case errors.Is(err, ErrNotFound):
			c.log.Warn("apify: Consume: the request is gone (deleted?)", "queue", c.q.id, "request", it.id, "error", err)
			c.finish(it)
			return err
		case refusedRequest(err):
			return err
		case queueUnusable(err):
			c.setFatal(err)
			c.finish(it)
			return err
		}
		c.transient(what, err)
		if !sleepCtx(c.ops, c.backoff(attempt, err)) {
			c.finish(it)
			return err
		}
	}
}

// keep renews the locks of held requests before they expire, and declares
// lost the ones it could not renew in time.
func (c *consumer) keep(stop <-chan struct{}) {
	margin := c.o.LockDuration / 3
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		// Checked on every turn, not only while idle: once the shutdown
		// cancelled ops, a prolong fails at once and leaves its request due,
		// so a keeper that only looked while waiting would spin forever.
		select {
		case <-stop:
			return
		default:
		}
		now := time.Now()
		next := now.Add(time.Hour)
		var due []*item
		c.mu.Lock()
		for _, it := range c.held {
			if it.state == itemDone || it.lost || it.prolonging {
				continue
			}
			if !now.Before(it.deadline) {
				c.loseLocked(it, "the lock expired before it could be prolonged", nil)
				continue
			}
			if it.state == itemRunning && !it.renewUntil.IsZero() && !now.Before(it.renewUntil) {
				// Past HandlerTimeout and its grace: no more renewal.
				next = minTime(next, it.deadline)
				continue
			}
			renewAt := it.deadline.Add(-margin)
			if it.nextTry.After(renewAt) {
				renewAt = it.nextTry
			}
			if !now.Before(renewAt) {
				it.prolonging = true
				due = append(due, it)
				continue
			}
			next = minTime(next, minTime(renewAt, it.deadline))
		}
		c.mu.Unlock()
		if len(due) > 0 {
			c.prolong(due)
			continue
		}
		t.Reset(next.Sub(now))
		select {
		case <-stop:
			return
		case <-c.wakeKeeper:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

// prolong renews the locks of items, a few at a time.
func (c *consumer) prolong(items []*item) {
	sem := make(chan struct{}, consumeProlongParallelism)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.prolongOne(it)
		}()
	}
	wg.Wait()
}

func (c *consumer) prolongOne(it *item) {
	c.mu.Lock()
	deadline := it.deadline
	c.mu.Unlock()
	// A prolong that ends after the lock's deadline cannot save it.
	ctx, cancel := context.WithDeadline(c.ops, deadline)
	defer cancel()
	sent := time.Now()
	c.calls.Add(1)
	_, err := c.q.ProlongRequestLock(ctx, it.id, ProlongLockOptions{LockDuration: c.o.LockDuration, ClientKey: c.o.ClientKey, Forefront: true})
	c.mu.Lock()
	defer c.mu.Unlock()
	it.prolonging = false
	switch {
	case err == nil:
		if !it.lost && it.state != itemDone {
			it.deadline = sent.Add(c.o.LockDuration)
			it.prolongFail = 0
			it.nextTry = time.Time{}
		}
		c.renewed.Add(1)
	case it.state == itemDone || it.lost || c.ops.Err() != nil:
		// Handled or released meanwhile, or shutting down: nothing to keep.
	case it.state == itemRecording && isLockRefused(err):
		// The result may have just been written (which ends the lock): the
		// recording call's own answer decides. No lock of ours is left to
		// prolong, so no more tries (which would come at once, and again,
		// for as long as that answer takes): the lock is lost at its
		// deadline unless the recording call succeeds first.
		it.nextTry = it.deadline
	case isLockRefused(err) || errors.Is(err, ErrNotFound):
		c.loseLocked(it, "prolong refused", err)
	case queueUnusable(err):
		c.loseLocked(it, "prolong refused", err)
		c.setFatal(err)
	default:
		c.callErrors.Add(1)
		it.prolongFail++
		wait := min(c.backoff(it.prolongFail-1, err), max(time.Until(it.deadline)/4, 100*time.Millisecond))
		it.nextTry = time.Now().Add(wait)
		c.log.Warn("apify: Consume: prolonging a lock failed; trying again", "queue", c.q.id, "request", it.id, "wait", wait, "error", err)
	}
}

// transient counts and logs a queue call that failed after the client's retries.
func (c *consumer) transient(what string, err error) {
	c.callErrors.Add(1)
	c.log.Warn("apify: Consume: a queue call failed; trying again after a backoff", "queue", c.q.id, "call", what, "error", err)
}

// backoff is the wait before trying a failed call again: the API's
// Retry-After when it sent one, else exponential with jitter.
func (c *consumer) backoff(attempt int, err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		return min(apiErr.RetryAfter, consumeErrorBackoffMax)
	}
	d := consumeErrorBackoffMin << min(attempt, 10)
	return jitter(min(d, consumeErrorBackoffMax))
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// queueUnusable reports an error after which the consumer cannot go on: the
// token, the queue or the request are wrong, not the weather.
func queueUnusable(err error) bool {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	if apiErr.StatusCode == http.StatusForbidden {
		return !isLockRefused(err) // a refused lock is about one request only
	}
	// Every other 4xx but 429: 400, 401, 404 and the like.
	return apiErr.StatusCode >= 400 && apiErr.StatusCode < 500 && !apiErr.Temporary()
}

// refusedRequest reports an answer refusing the request as sent (400, or 413
// when it is too large to store), as opposed to the queue or the lock.
func refusedRequest(err error) bool {
	var apiErr *APIError
	return errors.Is(err, ErrInvalidInput) || errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusRequestEntityTooLarge
}

// isLockRefused reports a 403 about the request's lock (held by another
// client, expired, or the request already handled), as opposed to one about
// permissions.
func isLockRefused(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == 403 &&
		(apiErr.Type == "request-handled-or-locked" || apiErr.Type == "invalid-client-key")
}

// appendError adds a handler's error to a request's error messages, keeping
// the last consumeErrorsKept, each clipped.
func appendError(msgs []string, err error) []string {
	m := err.Error()
	if len(m) > consumeErrorMessageMax {
		m = cutBytes(m, consumeErrorMessageMax) + "…"
	}
	msgs = append(append([]string(nil), msgs...), m)
	if n := len(msgs); n > consumeErrorsKept {
		msgs = msgs[n-consumeErrorsKept:]
	}
	return msgs
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sleepCtx waits d or until ctx ends, and reports whether it waited it all.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
