package apify_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests written while reviewing Consume by mutation: each one failed under
// a change to Consume that the tests before it let through (named in its
// comment). They run in testing/synctest bubbles against the in-memory
// emulator.

// callLog serves a client in memory, as the emulator's own in-memory client
// does, and notes when each prolong was sent and how many were in flight at
// once. It only watches: the faults are the emulator's.
type callLog struct {
	h http.Handler

	mu          sync.Mutex
	prolongs    []time.Time // when each prolong was sent
	inFlight    int
	maxInFlight int
}

func isProlong(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/lock")
}

func (c *callLog) RoundTrip(r *http.Request) (*http.Response, error) {
	if !isProlong(r) {
		return serveInMemory(c.h, r)
	}
	c.mu.Lock()
	c.prolongs = append(c.prolongs, time.Now())
	c.inFlight++
	c.maxInFlight = max(c.maxInFlight, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	return serveInMemory(c.h, r)
}

// prolongsSince returns when each prolong was sent, counted from start.
func (c *callLog) prolongsSince(start time.Time) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, at := range c.prolongs {
		out = append(out, at.Sub(start))
	}
	return out
}

// watchedQueue returns a handle on the queue whose calls log records.
func watchedQueue(srv *apifytest.Server, queueID string) (*apify.RequestQueueClient, *callLog) {
	log := &callLog{h: srv.Handler()}
	return srv.Client(apify.WithHTTPClient(&http.Client{Transport: log})).RequestQueue(queueID), log
}

// A running request is renewed when a third of its lock is left, counted
// from when the previous lock call was sent, not from when its answer came:
// with a 12 s lock and prolongs answered 1 s late, at 8, 16 and 24 s.
//
// Catches: the first renewal at half the lock (8 s → 6 s); a prolonged
// deadline counted from the answer (16 s → 17 s).
func TestConsumeRenewsWhenAThirdOfTheLockIsLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, _ := memQueue(t, 1)
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{ResponseDelay: time.Second})
		q, log := watchedQueue(srv, q.ID())
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(ctx context.Context, _ *apify.Request) error {
			time.Sleep(30 * time.Second)
			return ctx.Err()
		}, apify.ConsumeOptions{ClientKey: "punctual", LockDuration: lock, HandlerTimeout: time.Hour})
		require.NoError(t, err)
		assert.Equal(t, 1, stats.Handled)
		assert.Equal(t, []time.Duration{8 * time.Second, 16 * time.Second, 24 * time.Second}, log.prolongsSince(start))
		assert.Equal(t, 3, stats.LocksRenewed)
	})
}

// After a prolong went through, the lease ends (the handler's ctx with
// ErrLockLost) at that prolong's send time plus the lock, less the margin:
// here the first prolong is sent at 40 s and answered at 45 s, and every
// later one hangs. The lock expires on the server at 100 s; the handler's
// ctx must end at 98 s (a 2 s margin), before it.
//
// Catches: a prolonged deadline counted from the answer (ctx ends at
// 103 s, after the lock); the expiry timer reset past the deadline
// (102 s).
func TestConsumeHandlerCtxEndsBeforeAProlongedLockExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = time.Minute // margin: 2 s
		srv, q, ids := memQueue(t, 1)
		srv.FailNext(apifytest.OpProlongRequestLock, 1, apifytest.Fault{ResponseDelay: 5 * time.Second})
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Hang: true})
		start := time.Now()
		var n atomic.Int32
		var ended, expires time.Duration
		var cause error
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if n.Add(1) > 1 {
				return nil // the second run, after the lapse, is short
			}
			time.Sleep(50 * time.Second)
			st, _ := srv.Request(q.ID(), req.ID)
			if st.Lock != nil {
				expires = st.Lock.ExpiresAt.Sub(start)
			}
			<-ctx.Done()
			ended, cause = time.Since(start), context.Cause(ctx)
			return ctx.Err()
		}, apify.ConsumeOptions{ClientKey: "prolonged", LockDuration: lock, HandlerTimeout: time.Hour})
		require.NoError(t, err)
		assert.Equal(t, 100*time.Second, expires, "the prolong sent at 40 s locked it until 100 s")
		assert.Equal(t, 98*time.Second, ended, "the lease ends the margin before the lock's expiry")
		assert.ErrorIs(t, cause, apify.ErrLockLost)
		assert.Equal(t, 1, stats.LocksLost)
		assert.Equal(t, 1, stats.Handled)
		st, _ := srv.Request(q.ID(), ids[0])
		assert.Zero(t, st.RetryCount)
	})
}

// Renewals run a few at a time (16): here 40 requests start together and
// come due for renewal together, each prolong taking 1 s. At most 16 are
// in flight at once, and all 40 are renewed in time.
//
// Catches: no bound on parallel renewals (40 in flight); one at a time
// (the last ones lapse).
func TestConsumeRenewalsRunAFewAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 30 * time.Second // renewed at 20 s; the lease ends at 28 s
		srv, q, _ := memQueue(t, 40)
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Delay: time.Second})
		q, log := watchedQueue(srv, q.ID())
		stats, err := q.Consume(context.Background(), func(ctx context.Context, _ *apify.Request) error {
			select {
			case <-time.After(25 * time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "crowd", Concurrency: 40, LockDuration: lock})
		require.NoError(t, err)
		assert.Equal(t, 40, stats.Handled)
		assert.Zero(t, stats.LocksLost)
		assert.Equal(t, 40, stats.LocksRenewed)
		log.mu.Lock()
		defer log.mu.Unlock()
		assert.Equal(t, 16, log.maxInFlight, "prolongs in flight at once")
	})
}

// A prolong answered 404 (the request was deleted) loses that request's
// lock only: its handler's ctx ends with ErrLockLost, and Consume goes on
// with the others; the queue is not unusable.
//
// Catches: a 404 on a prolong taken as an unusable queue (Consume returned
// ErrNotFound).
func TestConsumeAProlongAnswered404LosesOnlyThatRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 6 * time.Second
		srv, q, ids := memQueue(t, 4)
		gone := ids[0]
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Status: 404, Type: "record-not-found", RequestID: gone})
		var causes sync.Map
		var goneRuns atomic.Int32
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if req.ID == gone && goneRuns.Add(1) > 1 {
				return nil
			}
			select {
			case <-time.After(10 * time.Second): // needs a prolong
				return nil
			case <-ctx.Done():
				causes.Store(req.ID, context.Cause(ctx))
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "gone", Concurrency: 4, LockDuration: lock})
		require.NoError(t, err)
		cause, _ := causes.Load(gone)
		assert.ErrorIs(t, cause.(error), apify.ErrLockLost)
		assert.Equal(t, 1, stats.LocksLost)
		assert.Equal(t, 4, stats.Handled)
		assert.Len(t, srv.Handled(q.ID()), 4)
	})
}

// ConsumeOptions.Prefetch bounds the requests locked beyond the handler
// slots, however many quick handlers Little's law would feed: with
// Concurrency 2 and Prefetch 3, never more than 5 locks.
//
// Catches: Prefetch ignored once handlers were measured (up to 25 more).
func TestConsumeHoldsNoMoreThanItsSlotsAndPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 60)
		var most atomic.Int32
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
			held := int32(len(srv.LockedBy(q.ID(), "bounded")))
			for {
				m := most.Load()
				if held <= m || most.CompareAndSwap(m, held) {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
			return nil
		}, apify.ConsumeOptions{ClientKey: "bounded", Concurrency: 2, Prefetch: 3})
		require.NoError(t, err)
		assert.Equal(t, 60, stats.Handled)
		// Handlers read the locks as they start, a moment before the locker
		// fills the prefetch again: the most they see is 5 or, as the
		// goroutines happen to run (under -race, say), 4.
		assert.LessOrEqual(t, most.Load(), int32(5), "2 running and 3 prefetched at most")
		assert.GreaterOrEqual(t, most.Load(), int32(4), "the prefetch is used once measured")
	})
}

// While a handler runs, Consume does not take the queue for done even when
// no lock shows on it: here the handler deletes its own request (its lock
// goes with it) and works on for 20 s, with a 1 s drain. Its ctx must not
// end: Consume returns after it.
//
// Catches: finishing on an empty head/lock with no lock on the queue while
// a request is still held here (the handler was cut off by a shutdown).
func TestConsumeDoesNotFinishWhileItHoldsARequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q, _ := memQueue(t, 1)
		var cause error
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if err := q.DeleteRequest(ctx, req.ID, apify.DeleteRequestOptions{ClientKey: "self"}); err != nil {
				return err
			}
			select {
			case <-time.After(20 * time.Second):
			case <-ctx.Done():
				cause = context.Cause(ctx)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "self", DrainTimeout: time.Second})
		require.NoError(t, err)
		assert.NoError(t, cause, "the handler's ctx never ended")
		assert.GreaterOrEqual(t, time.Since(start), 20*time.Second)
		assert.Zero(t, stats.Handled+stats.Failed+stats.Retried, "the request is gone: nothing to record")
	})
}

// The registry keys a queue as it is addressed (base URL and queue ID):
// the same queue ID behind another base URL is another queue, and the
// call goes out (here to a server that has no such queue).
//
// Catches: the registry keyed on the queue's path alone.
func TestConsumeRegistryKeysTheBaseURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q, _ := memQueue(t, 1)
		_, cancel, done := consumeUntilStopped(q, "same")
		elsewhere := apifytest.NewUnstartedServer()
		stats, err := elsewhere.Client(apify.WithBaseURL("http://elsewhere.invalid")).RequestQueue(q.ID()).Consume(context.Background(),
			func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "same"})
		// assert, not require: the first Consume must be stopped either way.
		assert.ErrorIs(t, err, apify.ErrNotFound, "another server: its own queue, not ErrConsumeInProgress")
		assert.NotErrorIs(t, err, apify.ErrConsumeInProgress)
		assert.Equal(t, 1, stats.APICalls)
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	})
}

// A head/lock whose answer comes after its locks were about to expire (the
// lock less the margin: a slow API) gives leases that are lost at once:
// counted in LocksLost, never run under a lock that has 100 ms left, and
// taken again once the locks lapsed; with one slot and no prefetch, the
// locker goes on locking afterwards.
//
// Catches: the locks of a head/lock counted from its answer (the request
// then runs with 100 ms left on its lock, and nothing is lost). It does not
// catch a lease lost while waiting left on the waiting count: in the bubble
// a worker starts the lease before its expiry timer fires.
func TestConsumeLocksWhoseAnswerComesTooLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 2 * time.Second // margin: 200 ms
		srv, q, _ := memQueue(t, 3)
		srv.FailNext(apifytest.OpListAndLockHead, 1, apifytest.Fault{ResponseDelay: 1900 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a bound, should it stall
		defer cancel()
		var ran atomic.Int32
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { ran.Add(1); return nil },
			apify.ConsumeOptions{ClientKey: "late", Concurrency: 1, Prefetch: -1, LockDuration: lock})
		require.NoError(t, err)
		assert.Equal(t, 1, stats.LocksLost, "the one lock of the late answer")
		assert.Equal(t, 3, stats.Handled)
		assert.Equal(t, int32(3), ran.Load())
		assert.Len(t, srv.Handled(q.ID()), 3)
	})
}

// A request locked again while the answer to its release is on its way
// (the DELETE was served; its answer takes 3 s) runs as soon as that
// release has ended, under its new lock, not once the new lock lapsed.
// The timeline is TestConsumeARetriedReleaseDoesNotDeleteANewLock's: R is
// released at 4.3 s and locked again at 5.2 s.
//
// Catches: keeper.add dropping a request it still holds in a releasing
// lease (the new lock is then held by nobody: R waits for its 12 s to lapse).
func TestConsumeRunsARequestLockedAgainDuringItsRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, ids := memQueue(t, 9)
		a, b, r := ids[6], ids[7], ids[8]
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{ResponseDelay: 3 * time.Second, RequestID: r})
		start := time.Now()
		var rStarted time.Duration
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			d := 100 * time.Millisecond
			switch req.ID {
			case a:
				d = 20 * time.Second
			case b:
				d = 4900 * time.Millisecond
			case r:
				rStarted = time.Since(start)
			}
			time.Sleep(d)
			return nil
		}, apify.ConsumeOptions{ClientKey: "again", Concurrency: 2, LockDuration: lock, HandlerTimeout: time.Hour})
		require.NoError(t, err)
		require.Equal(t, 1, srv.Faulted(apifytest.OpDeleteRequestLock), "the scenario: R was released while it waited")
		assert.Equal(t, 9, stats.Handled)
		assert.Zero(t, stats.LocksLost)
		assert.Less(t, rStarted, 8*time.Second, "R ran once its release ended (7.3 s), not after its new lock lapsed (17 s)")
	})
}

// A request fetched as the shutdown begins is not started, and while other
// handlers still drain its lock is deleted at once: it is back in the
// queue for the other consumers during the drain, not at its end.
//
// Catches: leaving it locked for the final unlock while handlers drain.
func TestConsumeGivesBackAFetchedRequestAtOnceWhileOthersDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 2)
		late := ids[1]
		srv.FailNext(apifytest.OpGetRequest, 1, apifytest.Fault{ResponseDelay: time.Second, RequestID: late})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(500*time.Millisecond, cancel)
		var pendingDuringDrain []string
		stats, err := q.Consume(ctx, func(_ context.Context, req *apify.Request) error {
			time.Sleep(3 * time.Second) // drains (DrainTimeout: a minute)
			for _, st := range srv.Pending(q.ID()) {
				pendingDuringDrain = append(pendingDuringDrain, st.ID)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "drainer", Concurrency: 2, DrainTimeout: time.Minute})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, []string{late}, pendingDuringDrain, "back in the queue while the other handler drained")
		assert.Equal(t, 1, stats.Handled)
		assert.Equal(t, 1, stats.ReleasedAtExit)
		assert.Empty(t, srv.Locked(q.ID()))
	})
}

// A prefetched request waits no longer than leaves its handler time to
// finish before its first renewal falls due (two thirds of the lock, less
// the margin), when it can: with handlers of 30 s under a 60 s lock, at
// most 8 s; of 35 s, at most 6 s (a tenth of the lock), not the third of
// the lock a waiting request may wait at most. The first handlers' times
// are spread (from 1/16 of the time to all of it) so that slots free one
// at a time; the waits are checked once the first requests measured the
// time a request takes.
//
// Catches: the window ignoring the renewal headroom (waits of 17 s, each
// costing a prolong).
func TestConsumePrefetchWaitLeavesRoomForTheHandler(t *testing.T) {
	for _, tc := range []struct{ work, maxWait time.Duration }{
		{30 * time.Second, 8 * time.Second},
		{35 * time.Second, 6 * time.Second},
	} {
		t.Run(tc.work.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const conc, lock = 16, time.Minute
				srv, q, _ := memQueue(t, 12*conc)
				var n atomic.Int32
				var mu sync.Mutex
				var longest time.Duration
				stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
					i := int(n.Add(1))
					st, _ := srv.Request(q.ID(), req.ID)
					if waited := lock - time.Until(st.Lock.ExpiresAt); i > 4*conc {
						mu.Lock()
						longest = max(longest, waited)
						mu.Unlock()
					}
					if i <= conc {
						time.Sleep(tc.work * time.Duration(i) / conc)
					} else {
						time.Sleep(tc.work)
					}
					return nil
				}, apify.ConsumeOptions{ClientKey: "roomy", Concurrency: conc, LockDuration: lock})
				require.NoError(t, err)
				assert.Equal(t, 12*conc, stats.Handled)
				assert.LessOrEqual(t, longest, tc.maxWait, "the longest wait in prefetch once measured")
			})
		})
	}
}
