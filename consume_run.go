package apify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The consumer: its parts, its start-up and its shutdown. Who owns what:
//
//   - the locker (lockLoop) alone calls head/lock and pushes leases to jobs;
//   - the keeper alone changes a lease's deadline, and ends leases;
//   - a worker owns the lease it took from jobs until it records it;
//   - run owns the start and the shutdown, and the contexts below.
//
// Counters are atomics; a lease's state is guarded by its own mutex, the
// held set and the schedule by the keeper's.
type consumer struct {
	q     *RequestQueueClient
	queue string // the queue as logs name it
	h     Handler
	o     ConsumeOptions
	log   *slog.Logger

	margin time.Duration // a lease ends this long before its lock's deadline
	grace  time.Duration // a handler's time to return once its ctx ended

	keeper *keeper
	flow   flow
	jobs   chan *lease // leases waiting for a worker, in queue order

	waiting, busy atomic.Int64 // leases waiting; workers with a lease
	wakeLocker    chan struct{}

	// ops is detached from the caller's ctx: it carries the leases (and so
	// renewals and the recording of results) through the drain, and ends
	// at the very end.
	ops       context.Context
	cancelOps context.CancelFunc
	// taking ends when the consumer stops taking work (ctx ended, a fatal
	// error, or the queue is done).
	taking     context.Context
	stopTaking context.CancelFunc
	// drain ends when running handlers must stop: their ctx ends (cause
	// ErrShuttingDown).
	drain    context.Context
	endDrain context.CancelFunc

	// releasing tracks the deletes of unstarted requests' locks at shutdown,
	// at most consumeShutdownReleaseWorkers at a time (releaseSlots).
	releasing    sync.WaitGroup
	releaseSlots chan struct{}

	fatalOnce sync.Once
	fatal     atomic.Pointer[error]

	// event is the platform event that stopped the consumer, if one did;
	// replan wakes the shutdown when one comes, to shorten it.
	event     atomic.Pointer[eventStop]
	replan    chan struct{}
	queueDone atomic.Bool
	// shutdownGrace is how long a handler cancelled at the end of the
	// drain gets to return before it is abandoned.
	shutdownGrace atomic.Int64

	handled, failed, retried, renewed, lost, recovered, released, prefetchReleased,
	abandoned, calls, callErrors atomic.Int64
}

func newConsumer(q *RequestQueueClient, h Handler, o ConsumeOptions) *consumer {
	c := &consumer{
		q: q, queue: q.label(), h: h, o: o, log: o.Logger,
		margin:       min(o.LockDuration/10, consumeLeaseMarginMax),
		grace:        min(o.LockDuration/6, consumeAbandonGraceMax),
		jobs:         make(chan *lease, 2*(o.Concurrency+o.Prefetch)+MaxLockHeadLimit),
		wakeLocker:   make(chan struct{}, 1),
		replan:       make(chan struct{}, 1),
		releaseSlots: make(chan struct{}, consumeShutdownReleaseWorkers),
	}
	c.flow = flow{conc: o.Concurrency, prefetchMax: o.Prefetch, margin: c.margin, lock: o.LockDuration, started: make([]atomic.Int64, o.Concurrency)}
	c.keeper = newKeeper(c)
	return c
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *consumer) stats() *ConsumeStats {
	var stoppedBy string
	if e := c.event.Load(); e != nil {
		stoppedBy = e.name
	}
	return &ConsumeStats{
		StoppedBy: stoppedBy,
		Handled:   int(c.handled.Load()), Failed: int(c.failed.Load()), Retried: int(c.retried.Load()),
		LocksRenewed: int(c.renewed.Load()), LocksLost: int(c.lost.Load()),
		RecoveredAtStart: int(c.recovered.Load()), ReleasedAtExit: int(c.released.Load()),
		PrefetchReleased: int(c.prefetchReleased.Load()), Abandoned: int(c.abandoned.Load()),
		APICalls: int(c.calls.Load()), CallErrors: int(c.callErrors.Load()),
	}
}

// setFatal records the first error that makes the queue unusable and stops taking work.
func (c *consumer) setFatal(err error) {
	c.fatalOnce.Do(func() {
		c.fatal.Store(&err)
		c.log.Error("apify: Consume stops: the queue is unusable", "queue", c.queue, "error", err)
	})
	c.stopTaking()
}

func (c *consumer) run(ctx context.Context) (*ConsumeStats, error) {
	c.ops, c.cancelOps = context.WithCancel(context.WithoutCancel(ctx))
	defer c.cancelOps()
	c.taking, c.stopTaking = context.WithCancel(ctx)
	defer c.stopTaking()
	c.drain, c.endDrain = context.WithCancel(context.Background())
	defer c.endDrain()

	stopEvents, err := c.watchEvents(ctx)
	if err != nil {
		return c.stats(), err
	}
	defer stopEvents()

	if err := c.recoverLocks(ctx); err != nil {
		if e := c.event.Load(); e != nil {
			// Stopped during the start-up, whose unlock it cut short: the
			// locks an earlier run of this key left are still there.
			c.finalUnlock(ctx)
			return c.stats(), e.err
		}
		return c.stats(), err
	}

	var workers, keeper sync.WaitGroup
	keeperStop := make(chan struct{})
	keeper.Add(1)
	go func() { defer keeper.Done(); c.keeper.run(keeperStop) }()
	for i := range c.o.Concurrency {
		workers.Add(1)
		go func() { defer workers.Done(); c.work(i) }()
	}

	if c.lockLoop() {
		c.queueDone.Store(true) // an event now changes nothing: the crawl is over
	}
	c.stopTaking()

	// Shutdown (or the end of the queue: then nothing is held).
	start := time.Now()
	c.releaseWaiting()
	workersDone := make(chan struct{})
	go func() { workers.Wait(); close(workersDone) }()
	drained := c.waitUntil(workersDone, func() time.Time {
		end, _, _ := c.shutdownPlan(start)
		return end
	})
	if !drained {
		_, grace, unlock := c.shutdownPlan(start)
		c.shutdownGrace.Store(int64(grace))
		cancelled := time.Now()
		c.endDrain() // running handlers' ctx end now; each gets grace, then is abandoned
		if !c.waitUntil(workersDone, func() time.Time {
			end := cancelled.Add(c.o.ShutdownTimeout / 2)
			if e := c.event.Load(); e != nil {
				end = minTime(end, e.end().Add(-unlock))
			}
			return end
		}) {
			c.log.Warn("apify: Consume: results still being recorded after the drain; they are cut short", "queue", c.queue)
		}
	}
	c.endDrain()
	c.cancelOps() // ends the leases: recording and renewals stop
	<-workersDone // at once: every call and wait of a worker ends with its lease or taking
	close(keeperStop)
	keeper.Wait()
	c.keeper.wg.Wait()
	c.releasing.Wait()

	c.finalUnlock(ctx)
	switch fatal, e := c.fatal.Load(), c.event.Load(); {
	case fatal != nil:
		return c.stats(), *fatal
	case e != nil:
		return c.stats(), e.err
	case ctx.Err() != nil:
		return c.stats(), ctx.Err()
	}
	return c.stats(), nil
}

// finalUnlock releases every lock of the clientKey (and, with a run's
// token, of the run), bounded by ShutdownTimeout, or by what a platform
// event leaves.
func (c *consumer) finalUnlock(ctx context.Context) {
	timeout := c.o.ShutdownTimeout
	if e := c.event.Load(); e != nil {
		// Whatever is left before the platform kills the process.
		timeout = min(timeout, max(time.Until(e.at.Add(e.remaining))-100*time.Millisecond, 100*time.Millisecond))
	}
	c.calls.Add(1)
	res, err := c.q.UnlockAtShutdown(ctx, c.o.ClientKey, timeout)
	if err != nil {
		c.log.Error("apify: Consume: releasing the locks at exit failed; they expire on their own", "queue", c.queue, "lockDuration", c.o.LockDuration, "error", err)
		return
	}
	c.released.Add(int64(res.UnlockedCount))
}

// shutdownPlan says, for a shutdown that started at start, when the drain
// ends, how long a handler cancelled then gets to return, and how long the
// final unlock may take. For a platform event they all fit in the time the
// platform leaves (eventStop.end): the unlock gets a fifth of it (at least
// 100 ms, at most ShutdownTimeout), the cancelled handlers a tenth (at least
// 50 ms), and the drain what is left, never more than DrainTimeout.
func (c *consumer) shutdownPlan(start time.Time) (drainEnd time.Time, grace, unlock time.Duration) {
	drainEnd = start.Add(c.o.DrainTimeout)
	grace = min(c.grace, c.o.ShutdownTimeout/2)
	unlock = c.o.ShutdownTimeout
	if e := c.event.Load(); e != nil {
		end := e.end()
		budget := end.Sub(e.at)
		unlock = min(unlock, max(budget/5, 100*time.Millisecond))
		grace = min(grace, max(budget/10, 50*time.Millisecond))
		drainEnd = minTime(drainEnd, end.Add(-unlock-grace))
	}
	return drainEnd, grace, unlock
}

// waitUntil waits for done until deadline(), which a platform event may
// bring forward while it waits; it reports whether done was closed.
func (c *consumer) waitUntil(done <-chan struct{}, deadline func() time.Time) bool {
	for {
		t := time.NewTimer(time.Until(deadline()))
		select {
		case <-done:
			t.Stop()
			return true
		case <-t.C:
			return false
		case <-c.replan:
			t.Stop()
		}
	}
}

// drainCause is the cause of the ctx of handlers still running when the
// drain ends: ErrShuttingDown, wrapping the platform event's error if one
// stopped the consumer.
func (c *consumer) drainCause() error {
	if e := c.event.Load(); e != nil {
		return fmt.Errorf("%w: %w", ErrShuttingDown, e.err)
	}
	return ErrShuttingDown
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// recoverLocks is the start-up unlock: it releases the locks an earlier run with
// the same clientKey left. When it fails after the client's retries, the
// error is returned (a wrong base URL or port must not go unnoticed), but
// with KeepAlive, which rides out transient failures from the start.
func (c *consumer) recoverLocks(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		c.calls.Add(1)
		res, err := c.q.UnlockRequests(c.taking, c.o.ClientKey)
		if err == nil {
			c.recovered.Add(int64(res.UnlockedCount))
			if res.UnlockedCount > 0 {
				c.log.Info("apify: Consume recovered locks left by an earlier run with the same clientKey", "queue", c.queue, "count", res.UnlockedCount)
			}
			return nil
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case c.taking.Err() != nil:
			return c.taking.Err() // a platform event stopped it
		case queueUnusable(err), !c.o.KeepAlive:
			return err
		}
		c.transient("unlock at start", err)
		if !sleepCtx(c.taking, c.backoff(attempt, err)) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return c.taking.Err()
		}
	}
}

// releaseWaiting gives back, at once, the leases no worker took.
func (c *consumer) releaseWaiting() {
	for {
		select {
		case l := <-c.jobs:
			if !c.keeper.unstart(l) {
				continue
			}
			if c.busy.Load() == 0 {
				c.keeper.finish(l) // the final unlock, right away, releases it
				continue
			}
			c.releasing.Add(1)
			go func() { defer c.releasing.Done(); c.release(l, true) }()
		default:
			return
		}
	}
}

// waitFor waits for done at most d; it reports whether done was closed.
func waitFor(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// transient counts and logs a queue call that failed after the client's retries.
func (c *consumer) transient(what string, err error) {
	c.callErrors.Add(1)
	c.log.Warn("apify: Consume: a queue call failed; trying again after a backoff", "queue", c.queue, "call", what, "error", err)
}

// backoff is the wait before Consume tries a failed call again
// (consumeBackoff, with the client's random source).
func (c *consumer) backoff(attempt int, err error) time.Duration {
	var apiErr *APIError
	hinted := errors.As(err, &apiErr) && apiErr.RetryAfter > 0
	var hint time.Duration
	if hinted {
		hint = apiErr.RetryAfter
	}
	return consumeBackoff.wait(attempt, hint, hinted, c.q.c.randN)
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
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
