package apify

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"
)

// The workers: Concurrency goroutines, each taking leases in queue order,
// fetching the request, running its handler in a goroutine of its own and
// handing the result to the recorder. A worker never waits on a handler
// longer than a grace after the handler's ctx ended: it abandons it and
// takes the next request.

// errHandlerGoexit is the failure of a handler that called runtime.Goexit
// (t.FailNow, a failed require) instead of returning.
var errHandlerGoexit = errors.New("handler called runtime.Goexit (t.FailNow or a failed require?) instead of returning")

// work is worker number i.
func (c *consumer) work(i int) {
	started := &c.flow.started[i]
	for {
		var l *lease
		select {
		case <-c.taking.Done():
			return
		case l = <-c.jobs:
		}
		c.busy.Add(1)
		began := time.Now()
		started.Store(began.UnixNano())
		if !c.keeper.start(l) {
			started.Store(0)
			c.busy.Add(-1)
			wake(c.wakeLocker) // room in jobs
			continue           // released or lost while it waited
		}
		wake(c.wakeLocker) // one less waiting: time to lock more?
		if c.process(l) {
			c.flow.served(time.Since(began))
		}
		started.Store(0)
		c.busy.Add(-1)
		wake(c.wakeLocker)
	}
}

// process runs the handler on one request and records its result. It
// reports whether the handler ran (the time taken then measures a request).
func (c *consumer) process(l *lease) bool {
	if c.taking.Err() != nil {
		c.unstartRunning(l) // stopping: start no new work
		return false
	}
	if l.check && !c.checkRelocked(l) {
		return false
	}
	req, ok := c.fetch(l)
	if !ok {
		return false
	}
	if c.taking.Err() != nil {
		c.unstartRunning(l)
		return false
	}
	orig := *req
	orig.ErrorMessages = slices.Clone(req.ErrorMessages)
	orig.UserData, orig.Payload, orig.Headers = slices.Clone(req.UserData), slices.Clone(req.Payload), slices.Clone(req.Headers)

	out := c.runHandler(l, req)
	herr, cause := out.err, out.cause
	if out.abandoned {
		c.abandon(l, &orig, cause, out.waited)
		return true
	}
	switch {
	case l.lost():
		return true // counted when lost; the request is someone else's now
	case herr != nil && errors.Is(cause, ErrShuttingDown):
		// Cut off by the shutdown, not a failure of the request: leave it
		// locked for the final unlock, without spending a retry.
		c.log.Info("apify: Consume: handler stopped by the shutdown; the request goes back to the queue", "queue", c.queue, "request", l.id, "url", l.url)
		c.keeper.finish(l)
		return true
	case herr != nil && errors.Is(cause, ErrHandlerTimeout) && !errors.Is(herr, ErrHandlerTimeout):
		herr = fmt.Errorf("%w after %v: %w", ErrHandlerTimeout, c.o.HandlerTimeout, herr)
	}
	// The queue owns these fields; the handler's changes to them are ignored.
	req.ID, req.UniqueKey, req.RetryCount, req.HandledAt = orig.ID, orig.UniqueKey, orig.RetryCount, time.Time{}
	c.record(l, req, &orig, herr)
	return true
}

// handlerOutcome is how a handler's run ended.
type handlerOutcome struct {
	err   error // what the handler returned (nil when abandoned)
	cause error // why its ctx ended; nil if it did not
	// abandoned: the handler had not returned a grace after its ctx ended,
	// and was waited for that long; its goroutine is left running.
	abandoned bool
	waited    time.Duration
}

// runHandler calls the handler in a goroutine of its own, with a ctx that
// ends at HandlerTimeout, when the lease ends, or when the drain is over,
// and returns how the run ended. Once the handler is abandoned, req (which
// it may still be changing) must not be read.
func (c *consumer) runHandler(l *lease, req *Request) handlerOutcome {
	hctx, cancel := context.WithCancelCause(l.ctx)
	defer cancel(nil)
	timeout := time.AfterFunc(c.o.HandlerTimeout, func() { cancel(ErrHandlerTimeout) })
	defer timeout.Stop()
	stopDrain := context.AfterFunc(c.drain, func() { cancel(c.drainCause()) })
	defer stopDrain()

	done := make(chan error, 1) // never blocks the handler's goroutine, even abandoned
	go c.call(hctx, req, done)
	select {
	case herr := <-done:
		return handlerOutcome{err: herr, cause: context.Cause(hctx)}
	case <-hctx.Done():
	}
	cause := context.Cause(hctx)
	stopped := time.Now()
	abandoned := func() handlerOutcome {
		return handlerOutcome{cause: cause, abandoned: true, waited: time.Since(stopped)}
	}
	grace := c.grace
	drained := c.drain.Done()
	if errors.Is(cause, ErrShuttingDown) {
		grace, drained = time.Duration(c.shutdownGrace.Load()), nil
	}
	end := stopped.Add(grace)
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		select {
		case herr := <-done:
			return handlerOutcome{err: herr, cause: cause}
		case <-t.C:
			return abandoned()
		case <-drained:
			// The drain ended during the grace (of a HandlerTimeout, or a
			// lost lock): the shutdown's grace, if shorter, applies from now.
			drained = nil
			end = minTime(end, time.Now().Add(time.Duration(c.shutdownGrace.Load())))
			t.Reset(time.Until(end))
		case <-c.ops.Done():
			return abandoned() // the end of the shutdown: no more waiting
		}
	}
}

// call runs the handler and sends what it returned on done: its error, a
// panic turned into an error, or errHandlerGoexit.
func (c *consumer) call(ctx context.Context, req *Request, done chan<- error) {
	var err error
	returned := false
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("apify: Consume: handler panicked", "queue", c.queue, "request", req.ID, "url", req.URL, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", p)
		} else if !returned {
			c.log.Error("apify: Consume: handler called runtime.Goexit", "queue", c.queue, "request", req.ID, "url", req.URL)
			err = errHandlerGoexit
		}
		done <- err
	}()
	err = c.h(ctx, req)
	returned = true
}

// abandon gives up on a handler that did not return a grace after its ctx
// ended. At HandlerTimeout its run is a failed attempt, recorded at once on
// the request as read; after a lost lock there is nothing to record; at
// shutdown the request is left to the final unlock.
func (c *consumer) abandon(l *lease, orig *Request, cause error, waited time.Duration) {
	c.abandoned.Add(1)
	waited = waited.Round(time.Millisecond)
	c.log.Error("apify: Consume: abandoned a handler that did not return after its ctx ended; its goroutine may still be running, and its result will be ignored",
		"queue", c.queue, "request", l.id, "url", l.url, "cause", cause, "grace", waited)
	switch {
	case errors.Is(cause, ErrHandlerTimeout) && !l.lost():
		req := *orig
		req.ErrorMessages = slices.Clone(orig.ErrorMessages)
		err := fmt.Errorf("%w: it ran past HandlerTimeout (%v) and had not returned %v later", ErrHandlerAbandoned, c.o.HandlerTimeout, waited)
		c.record(l, &req, orig, err)
	case !l.lost():
		c.keeper.finish(l) // shutting down: the final unlock releases it
	}
}

// checkRelocked makes sure that a request locked again while, or soon
// after, this consumer deleted a lock of it is still ours: a retry of that
// delete (after a lost answer), or an attempt the client gave up on that
// the API carried out later, may have deleted the new lock, which is under
// the same clientKey. It waits for the earlier lease to end and then for
// the keeper's settle time (the margin) after it, and prolongs the lock. It
// reports false when the lock is gone: the request is back in the queue (or
// someone else's), and is skipped here.
func (c *consumer) checkRelocked(l *lease) bool {
	if l.after != nil {
		select {
		case <-l.after.ctx.Done():
		case <-l.ctx.Done():
			return false
		}
	}
	if wait := time.Until(c.keeper.settled(l.id)); wait > 0 && !sleepCtx(l.ctx, wait) {
		return false
	}
	var sent time.Time
	err := c.underLease(l, "prolong a lock taken again", func(ctx context.Context) error {
		sent = time.Now()
		_, err := c.q.ProlongRequestLock(ctx, l.id, ProlongLockOptions{LockDuration: l.dur, ClientKey: c.o.ClientKey, Forefront: true})
		return err
	})
	switch {
	case err == nil:
		c.keeper.prolonged(l, sent)
		return true
	case isLockRefused(err):
		c.log.Info("apify: Consume: a request locked again while its release was retried lost that lock to the retry; skipped", "queue", c.queue, "request", l.id)
		c.keeper.finish(l)
	default:
		c.leaseCallFailed(l, err)
	}
	return false
}

// fetch gets the whole request under the lease, retrying transient failures
// while the lease holds. It reports false when the request must not run:
// the lock was lost, the request is gone or handled, or taking ended (the
// request is then given back).
func (c *consumer) fetch(l *lease) (*Request, bool) {
	for attempt := 0; ; attempt++ {
		ctx, cancel, ok := l.callCtx(c.margin)
		if !ok {
			c.keeper.lose(l, "the lock is about to expire before the request could be read", nil)
			return nil, false
		}
		c.calls.Add(1)
		req, err := c.q.GetRequest(ctx, l.id)
		cancel()
		switch {
		case err == nil && !req.HandledAt.IsZero():
			c.log.Warn("apify: Consume: a locked request was already handled; skipped", "queue", c.queue, "request", l.id)
			c.keeper.finish(l)
			return nil, false
		case err == nil:
			return req, true
		case l.ctx.Err() != nil:
			return nil, false // lost, or the consumer's end
		case c.taking.Err() != nil:
			c.unstartRunning(l)
			return nil, false
		case errors.Is(err, ErrNotFound):
			c.log.Warn("apify: Consume: a locked request is gone (deleted?); skipped", "queue", c.queue, "request", l.id, "error", err)
			c.keeper.finish(l)
			return nil, false
		case queueUnusable(err):
			c.unstartRunning(l)
			c.setFatal(err)
			return nil, false
		}
		c.transient("get request", err)
		if !sleepCtx(c.taking, c.backoff(attempt, err)) {
			c.unstartRunning(l)
			return nil, false
		}
	}
}
