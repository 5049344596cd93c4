package apify

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// The recorder: it writes a handler's result, and gives back requests no
// handler ran, always under the request's lease, so nothing is written for a
// request whose lock Consume has declared lost.

// record writes the result of a handler: handled, put back, or failed.
func (c *consumer) record(l *lease, req, orig *Request, herr error) {
	var deleteLock bool
	switch {
	case herr == nil:
		req.HandledAt = time.Now().UTC()
	case errors.Is(herr, ErrNoRetry) || req.NoRetry || orig.NoRetry || req.RetryCount >= c.o.MaxRetries:
		req.ErrorMessages = appendError(req.ErrorMessages, herr)
		req.HandledAt = time.Now().UTC()
		if len(req.ErrorMessages) <= req.RetryCount {
			// The messages were clipped (more retries than are kept), so
			// "one more message than retries" no longer tells a request
			// that failed for good (as apify-rq show counts them) from one
			// that succeeded on a retry: noRetry says it.
			req.NoRetry = true
		}
		c.log.Warn("apify: Consume: request failed; giving up", "queue", c.queue, "request", l.id, "url", l.url, "retryCount", req.RetryCount, "error", herr)
	default:
		req.RetryCount++
		req.ErrorMessages = appendError(req.ErrorMessages, herr)
		req.HandledAt = time.Time{}
		deleteLock = true
		c.log.Info("apify: Consume: request failed; it will be retried", "queue", c.queue, "request", l.id, "url", l.url, "retryCount", req.RetryCount, "error", herr)
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
		c.log.Warn("apify: Consume: the handler's changes to the request cannot be stored; recording the result on the request as read", "queue", c.queue, "request", l.id, "error", err)
		asRead()
	}
	l.setRecording()
	update := func(ctx context.Context) error {
		_, err := c.q.UpdateRequest(ctx, *req, RequestOptions{ClientKey: c.o.ClientKey, Forefront: false})
		return err
	}
	err := c.underLease(l, "update request", update)
	if refusedRequest(err) {
		// The API refused what the handler made of the request: record the
		// result on the request as it was read, which the API stored before.
		c.log.Warn("apify: Consume: the API refused the handler's changes to the request; recording the result on the request as read", "queue", c.queue, "request", l.id, "error", err)
		asRead()
		err = c.underLease(l, "update request", update)
	}
	switch {
	case err == nil:
		if l.lost() {
			// The lease ended while the answer was on its way, but the API
			// took the result: it was recorded after all.
			c.lost.Add(-1)
		}
	case l.lost() && c.recordedAfterAll(l, req):
		// The lease ended while the answer was on its way, but the API had
		// recorded the result before the lock ended: not a lost lock. (A
		// retry's lock is not deleted: it is not ours any more.)
		c.lost.Add(-1)
		switch {
		case herr == nil:
			c.handled.Add(1)
		case deleteLock:
			c.retried.Add(1)
		default:
			c.failed.Add(1)
		}
		return
	case isLockRefused(err):
		c.keeper.lose(l, "update request refused", err)
		return
	case refusedRequest(err):
		c.log.Error("apify: Consume: the API refused the result; the request stays locked until its lock expires", "queue", c.queue, "request", l.id, "error", err)
		c.keeper.finish(l)
		return
	default:
		c.leaseCallFailed(l, err)
		return
	}
	if deleteLock {
		// The result is recorded: whatever happens to the lock now, the
		// request is back in the queue for another try, at once or when
		// the lock expires. A refused delete (403) means the lock is not
		// ours any more: most often a retry after the answer to a delete
		// that did release it was lost. It is a release, not a lost lock.
		err := c.underLease(l, "delete lock", func(ctx context.Context) error {
			ctx, unanswered := withUnansweredFlag(ctx)
			defer func() { l.deleteMayLand(unanswered.Load()) }()
			return c.q.DeleteRequestLock(ctx, l.id, DeleteLockOptions{ClientKey: c.o.ClientKey, Forefront: false})
		})
		if err != nil && !isLockRefused(err) && !l.lost() {
			c.log.Warn("apify: Consume: a failed request's lock could not be deleted; it goes back to the queue when the lock expires or at exit", "queue", c.queue, "request", l.id, "error", err)
		}
	}
	switch {
	case herr == nil:
		c.handled.Add(1)
	case deleteLock:
		c.retried.Add(1)
	default:
		c.failed.Add(1)
	}
	c.keeper.finish(l)
}

// recordedAfterAll reads a request whose lease ended while the update that
// records its result was in flight, and reports whether that update was
// recorded: the request carries the handledAt it sent, or, for a retry, the
// retry count and error messages it sent and no handledAt. (Had another
// client run it since, the counts differ and it reads as not recorded: a
// lost lock, which is what it was to this consumer.) The read is bounded by
// ShutdownTimeout, and does not change the queue.
func (c *consumer) recordedAfterAll(l *lease, req *Request) bool {
	ctx, cancel := context.WithTimeout(c.ops, c.o.ShutdownTimeout)
	defer cancel()
	c.calls.Add(1)
	got, err := c.q.GetRequest(ctx, l.id)
	if err != nil {
		return false
	}
	if !req.HandledAt.IsZero() {
		return got.HandledAt.Sub(req.HandledAt).Abs() < time.Millisecond
	}
	return got.HandledAt.IsZero() && got.RetryCount == req.RetryCount && slices.Equal(got.ErrorMessages, req.ErrorMessages)
}

// leaseCallFailed ends the lease of a call under it that failed for good
// (see underLease) and logs why, unless the lease was lost (already logged).
func (c *consumer) leaseCallFailed(l *lease, err error) {
	if l.lost() {
		return
	}
	if c.ops.Err() != nil {
		c.log.Warn("apify: Consume: could not record a result before the shutdown ended; the request goes back to the queue", "queue", c.queue, "request", l.id, "error", err)
	}
	c.keeper.finish(l)
}

// underLease makes a call under l's lock, retrying transient failures while
// the lease holds (the keeper renews it meanwhile). Each try is bounded by
// the lock's deadline less the margin. It returns nil when the call
// succeeded; a refused lock (403), a 400 or 413 as they came, for the
// caller to decide; and otherwise an error after it dealt with the request
// (lost, gone, the queue unusable, or the lease ended).
func (c *consumer) underLease(l *lease, what string, f func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		ctx, cancel, ok := l.callCtx(c.margin)
		if !ok {
			c.keeper.lose(l, "the lock is about to expire before "+what+" could be made", nil)
			return ErrLockLost
		}
		c.calls.Add(1)
		err := f(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case isLockRefused(err), refusedRequest(err):
			return err
		case l.ctx.Err() != nil:
			return err // lost, or the consumer's end
		case errors.Is(err, ErrNotFound):
			c.log.Warn("apify: Consume: the request is gone (deleted?)", "queue", c.queue, "request", l.id, "error", err)
			c.keeper.finish(l)
			return err
		case queueUnusable(err):
			c.setFatal(err)
			c.keeper.finish(l)
			return err
		}
		c.transient(what, err)
		if !sleepCtx(l.ctx, c.backoff(attempt, err)) {
			return err
		}
	}
}

// release gives back a request no handler ran: its lock is deleted
// (forefront: it was at the head of the queue). atExit counts it in
// ReleasedAtExit, else in PrefetchReleased.
func (c *consumer) release(l *lease, atExit bool) {
	defer c.keeper.finish(l)
	ctx, cancel, ok := l.callCtx(c.margin)
	if !ok {
		return // its lock is about to expire anyway
	}
	defer cancel()
	if atExit {
		// Bounded, and cut short when the drain ends: the final unlock
		// then releases whatever is left.
		var cancelExit context.CancelFunc
		ctx, cancelExit = context.WithTimeout(ctx, c.o.ShutdownTimeout)
		defer cancelExit()
		c.releaseSlots <- struct{}{}
		defer func() { <-c.releaseSlots }()
	}
	c.calls.Add(1)
	ctx, unanswered := withUnansweredFlag(ctx)
	err := c.q.DeleteRequestLock(ctx, l.id, DeleteLockOptions{ClientKey: c.o.ClientKey, Forefront: true})
	l.deleteMayLand(unanswered.Load())
	switch {
	case err == nil || isLockRefused(err):
		// A 403 means the lock is not ours any more: most often the retry
		// of a delete whose answer was lost, else a lock that lapsed. The
		// request is back in the queue either way.
		if atExit {
			c.released.Add(1)
		} else {
			c.prefetchReleased.Add(1)
		}
	default:
		c.log.Warn("apify: Consume: releasing a request no handler started failed; it goes back when its lock expires or at exit", "queue", c.queue, "request", l.id, "error", err)
	}
}

// unstartRunning gives back a request a worker took but ran no handler on,
// once taking ended. While other handlers still run (the final unlock waits
// for their drain) its lock is deleted at once; otherwise the final unlock,
// which comes right away, releases it with the rest.
func (c *consumer) unstartRunning(l *lease) {
	l.mu.Lock()
	if l.state == leaseRunning {
		l.state = leaseReleasing // no more renewals: a prolong racing the delete would be refused
	}
	l.mu.Unlock()
	if c.busy.Load() > 1 { // this worker is busy too
		c.releasing.Add(1)
		go func() { defer c.releasing.Done(); c.release(l, true) }()
		return
	}
	c.keeper.finish(l)
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
