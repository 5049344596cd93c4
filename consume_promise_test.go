package apify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
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

// Consume's promise ("a lock never lapses under a running handler while the
// API answers; a request never runs twice except after a real lapse") on a
// slow API, with misbehaving handlers, and with two consumers in a process.
// Each test here failed on the Consume before its split into a locker, a
// lease keeper, workers and a recorder.

// logRecords is a slog.Handler that keeps every record, for tests that
// check what Consume logs.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// find returns the attributes of the records whose message contains msg.
func (l *logRecords) find(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if !strings.Contains(r.Message, msg) {
			continue
		}
		m := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	return out
}

// Leases are independent: request A's prolongs hang, every other prolong
// answers in 200 ms. Only A's lock is lost; B, locked a moment later and
// renewed while A's prolong hangs, keeps its lock and is handled once.
func TestConsumeOneHungProlongDelaysOnlyItsRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 6 * time.Second
		srv, q, ids := memQueue(t, 1)
		a := ids[0]
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Hang: true, RequestID: a})
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Delay: 200 * time.Millisecond})
		added := make(chan string, 1)
		go func() {
			time.Sleep(75 * time.Millisecond)
			added <- srv.AddRequests(q.ID(), apifytest.Request{URL: "https://shop.test/b"})[0]
		}()
		var seen runs
		var causes sync.Map
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if seen.add(req.ID) > 1 {
				return nil // a second run is short: no prolong needed
			}
			select {
			case <-time.After(20 * time.Second): // three renewals
				return nil
			case <-ctx.Done():
				causes.Store(req.ID, context.Cause(ctx))
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "independent", Concurrency: 2, LockDuration: lock})
		require.NoError(t, err)
		b := <-added
		assert.Equal(t, 1, stats.LocksLost, "only the hung request's lock")
		cause, _ := causes.Load(a)
		assert.ErrorIs(t, cause.(error), apify.ErrLockLost)
		_, bCancelled := causes.Load(b)
		assert.False(t, bCancelled, "B's handler ran to the end")
		assert.Equal(t, 1, seen.get(b), "B ran once")
		assert.Equal(t, 2, seen.get(a), "A ran again after its lock lapsed")
		assert.Equal(t, 2, stats.Handled)
		assert.GreaterOrEqual(t, stats.LocksRenewed, 3, "B's renewals went through while A's prolongs hung")
	})
}

// A handler's ctx ends no later than its lock's expiry by the local clock,
// less the margin for a round trip, even when every prolong hangs: the
// lease's own timer ends it, not the keeper.
func TestConsumeHandlerCtxEndsBeforeTheLockExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 10 * time.Second // margin: a tenth, 1 s
		srv, q, ids := memQueue(t, 1)
		remove := srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Hang: true})
		var ended time.Duration
		var expiresIn time.Duration
		start := time.Now()
		var n atomic.Int32
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if n.Add(1) > 1 {
				return nil
			}
			st, _ := srv.Request(q.ID(), req.ID)
			expiresIn = st.Lock.ExpiresAt.Sub(start)
			<-ctx.Done()
			ended = time.Since(start)
			assert.ErrorIs(t, context.Cause(ctx), apify.ErrLockLost)
			remove()
			return ctx.Err()
		}, apify.ConsumeOptions{ClientKey: "punctual", LockDuration: lock})
		require.NoError(t, err)
		assert.Equal(t, lock, expiresIn)
		assert.Equal(t, lock-time.Second, ended, "the margin before the lock's expiry")
		assert.Equal(t, 1, stats.LocksLost)
		st, _ := srv.Request(q.ID(), ids[0])
		assert.True(t, st.Handled(), "handled by the second run")
		assert.Zero(t, st.RetryCount, "the first run's result was not recorded")
	})
}

// Item 9: the update marking a request handled gets a 429 with a long
// Retry-After, and the lock is lost meanwhile (its prolongs are rate
// limited too). The update is never sent again for that lost lock: the
// request's second run records the only result.
func TestConsumeRecordsNothingOnceTheLockIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 9 * time.Second
		srv, q, ids := memQueue(t, 1)
		q = srv.Client(apify.WithRetryWait(500*time.Millisecond, time.Minute)).RequestQueue(q.ID())
		srv.FailNext(apifytest.OpUpdateRequest, 1, apifytest.Fault{Status: 429, RetryAfter: "30"})
		removeProlongFault := srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Status: 429, RetryAfter: "30"})
		var n atomic.Int32
		var secondCtxAlive atomic.Bool
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if n.Add(1) == 1 {
				time.Sleep(time.Second)
				return nil // its update gets the 429
			}
			removeProlongFault()
			time.Sleep(40 * time.Second) // past the first update's Retry-After
			secondCtxAlive.Store(ctx.Err() == nil)
			return nil
		}, apify.ConsumeOptions{ClientKey: "patient", LockDuration: lock})
		require.NoError(t, err)
		assert.Equal(t, int32(2), n.Load(), "ran again after the real lapse")
		assert.True(t, secondCtxAlive.Load(), "the second run's lock held")
		assert.Equal(t, 1, stats.Handled, "one result recorded, not two")
		assert.Equal(t, 1, stats.LocksLost)
		assert.Equal(t, 2, srv.Calls(apifytest.OpUpdateRequest), "the 429'd update was never sent again under the lost lock")
		assert.Len(t, srv.Handled(q.ID()), 1)
		_ = ids
	})
}

// Two consumers on one queue and clientKey in one process would release
// each other's locks at start and at exit: the second fails at once,
// before any call, with ErrConsumeInProgress; inside an Actor run, whatever
// its clientKey.
// consumeUntilStopped starts a Consume of q under clientKey whose handlers
// run until their ctx ends, and returns once the first runs: ctx is the
// one it was given, cancel stops it, and done gets what it returned.
func consumeUntilStopped(q *apify.RequestQueueClient, clientKey string) (ctx context.Context, cancel context.CancelFunc, done <-chan error) {
	ctx, cancel = context.WithCancel(context.Background())
	running := make(chan struct{})
	var once sync.Once
	result := make(chan error, 1)
	go func() {
		_, err := q.Consume(ctx, func(ctx context.Context, _ *apify.Request) error {
			once.Do(func() { close(running) })
			<-ctx.Done()
			return ctx.Err()
		}, apify.ConsumeOptions{ClientKey: clientKey})
		result <- err
	}()
	<-running
	return ctx, cancel, result
}

func TestConsumeRefusesASecondConsumerOnTheSameQueueAndKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 3)
		ctx, cancel, done := consumeUntilStopped(q, "") // the zero ClientKey: DefaultClientKey()
		synctest.Wait()
		before := totalCalls(srv)
		for _, key := range []string{"", apify.DefaultClientKey()} {
			stats, err := srv.Client().RequestQueue(q.ID()).Consume(ctx, func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: key})
			require.ErrorIs(t, err, apify.ErrConsumeInProgress)
			assert.Contains(t, err.Error(), q.ID())
			assert.Zero(t, stats.APICalls)
		}
		assert.Equal(t, before, totalCalls(srv), "refused before any call")

		// Another key on the same queue, or the same key on another queue, is fine.
		other := srv.CreateQueue("other")
		_, err := srv.Client().RequestQueue(other).Consume(ctx, func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{})
		require.NoError(t, err)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)

		// Once the first returned, the pair is free again.
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{})
		require.NoError(t, err)
		assert.Equal(t, 3, stats.Handled)
	})
}

func TestConsumeRefusesASecondConsumerOfAQueueInAnActorRun(t *testing.T) {
	t.Setenv("ACTOR_RUN_ID", "run-refuses-a-second")
	synctest.Test(t, func(t *testing.T) {
		_, q, _ := memQueue(t, 1)
		ctx, cancel, done := consumeUntilStopped(q, "one")
		_, err := q.Consume(ctx, func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "two"})
		require.ErrorIs(t, err, apify.ErrConsumeInProgress)
		assert.Contains(t, err.Error(), "run-refuses-a-second")
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
}

// Handlers that never return, with Concurrency 2: each is abandoned a grace
// after HandlerTimeout, its run recorded at once as a failed attempt, and
// its slot given back, so the crawl goes on; after MaxRetries it fails. The
// log names the request and the cause.
func TestConsumeAbandonsHandlersThatNeverReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock, timeout = 12 * time.Second, 2 * time.Second // grace: 2 s
		srv, q, ids := memQueue(t, 20)
		hung := map[string]bool{ids[0]: true, ids[1]: true}
		unblock := make(chan struct{})
		var logs logRecords
		var seen runs
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			seen.add(req.ID)
			if hung[req.ID] {
				<-unblock // ignores ctx
				return nil
			}
			time.Sleep(100 * time.Millisecond)
			return nil
		}, apify.ConsumeOptions{ClientKey: "stuck", Concurrency: 2, LockDuration: lock, HandlerTimeout: timeout, MaxRetries: 1, Logger: slog.New(&logs)})
		elapsed := time.Since(start)
		close(unblock)
		require.NoError(t, err)
		assert.Equal(t, 18, stats.Handled)
		assert.Equal(t, 2, stats.Failed)
		assert.Equal(t, 4, stats.Abandoned, "two runs of each hung request")
		assert.Zero(t, stats.LocksLost, "each lock kept until its failure was recorded")
		assert.Less(t, elapsed, 20*time.Second, "the hung handlers did not pin their slots")
		for _, id := range ids[:2] {
			assert.Equal(t, 2, seen.get(id))
			st, _ := srv.Request(q.ID(), id)
			assert.True(t, st.Handled())
			req, err := q.GetRequest(context.Background(), id)
			require.NoError(t, err)
			require.Len(t, req.ErrorMessages, 2)
			for _, m := range req.ErrorMessages {
				assert.Contains(t, m, apify.ErrHandlerAbandoned.Error())
			}
		}
		recs := logs.find("abandoned a handler")
		require.Len(t, recs, 4)
		for _, r := range recs {
			assert.Equal(t, "ERROR", r["level"])
			assert.True(t, hung[r["request"]], "names the request: %v", r)
			assert.Contains(t, r["url"], "https://shop.test/p/")
			assert.Contains(t, r["cause"], apify.ErrHandlerTimeout.Error())
		}
		synctest.Wait()
		for _, id := range ids[:2] {
			req, _ := q.GetRequest(context.Background(), id)
			assert.Len(t, req.ErrorMessages, 2, "the late nil of an abandoned handler is never recorded")
		}
	})
}

// A handler that calls runtime.Goexit (as t.FailNow and a failed require
// do in another goroutine) fails its request with that cause, and Consume
// carries on; so does one that panics with nil.
func TestConsumeSurvivesGoexitAndPanicNil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q, ids := memQueue(t, 5)
		var seen runs
		stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
			first := seen.add(req.ID) == 1
			switch {
			case first && req.ID == ids[1]:
				runtime.Goexit()
			case first && req.ID == ids[3]:
				panic(nil)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "goexit", Concurrency: 2})
		require.NoError(t, err)
		assert.Equal(t, 5, stats.Handled)
		assert.Equal(t, 2, stats.Retried)
		req, err := q.GetRequest(context.Background(), ids[1])
		require.NoError(t, err)
		require.Len(t, req.ErrorMessages, 1)
		assert.Contains(t, req.ErrorMessages[0], "runtime.Goexit")
		req, err = q.GetRequest(context.Background(), ids[3])
		require.NoError(t, err)
		require.Len(t, req.ErrorMessages, 1)
		assert.Contains(t, req.ErrorMessages[0], "handler panicked")
	})
}

// Item 12: the answer to the delete of a failed request's lock is lost; the
// client's retry gets 403 (the lock is gone). That is a release, counted in
// Retried, not a lost lock.
func TestConsumeLostDeleteLockAnswerIsARelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 1)
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{DropResponse: true})
		var n atomic.Int32
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
			if n.Add(1) == 1 {
				return errors.New("first run fails")
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "released"})
		require.NoError(t, err)
		assert.Equal(t, int32(2), n.Load())
		assert.Equal(t, 2, srv.Calls(apifytest.OpDeleteRequestLock), "the lost answer, then the client's retry (403)")
		assert.Equal(t, 1, stats.Retried)
		assert.Equal(t, 1, stats.Handled)
		assert.Zero(t, stats.LocksLost)
		st, _ := srv.Request(q.ID(), ids[0])
		assert.Equal(t, 1, st.RetryCount)
	})
}

// Item 11: head/lock fails for a minute; once it answers again, an idle
// consumer notices within its backoff cap (2 s), not after a backoff grown
// to 30 s.
func TestConsumeHeadLockBackoffIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 1)
		q = srv.Client(apify.WithMaxRetries(0)).RequestQueue(q.ID())
		remove := srv.InjectFault(apifytest.OpListAndLockHead, apifytest.Fault{Status: 503})
		start := time.Now()
		time.AfterFunc(time.Minute, remove)
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "idle"})
		require.NoError(t, err)
		assert.Equal(t, 1, stats.Handled)
		assert.LessOrEqual(t, time.Since(start), time.Minute+2*time.Second)
		assert.Greater(t, stats.CallErrors, 25, "tried again every 2 s at most")
	})
}

// A prefetched request waits at most a third of its lock for a handler: one
// that would wait longer is released (to the front), never prolonged while
// it waits. Here a slow handler holds the only slot for 30 s after quick
// ones made Consume prefetch a full batch.
func TestConsumeReleasesRatherThanProlongsAWaitingRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, ids := memQueue(t, 40)
		slow := ids[5]
		var seen runs
		var waitedTooLong atomic.Int32
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			seen.add(req.ID)
			st, _ := srv.Request(q.ID(), req.ID)
			if req.ID != slow && time.Until(st.Lock.ExpiresAt) < lock-lock/3 {
				waitedTooLong.Add(1)
			}
			if req.ID == slow {
				time.Sleep(30 * time.Second)
				return nil
			}
			time.Sleep(100 * time.Millisecond)
			return nil
		}, apify.ConsumeOptions{ClientKey: "fresh", Concurrency: 1, LockDuration: lock})
		require.NoError(t, err)
		assert.Zero(t, waitedTooLong.Load(), "every request started within a third of its lock")
		assert.Equal(t, 40, stats.Handled)
		assert.Positive(t, stats.PrefetchReleased, "the requests behind the slow one were released")
		assert.Zero(t, stats.LocksLost)
		for _, id := range ids {
			assert.Equal(t, 1, seen.get(id))
		}
		assert.LessOrEqual(t, srv.Calls(apifytest.OpProlongRequestLock), 4, "only the running slow request was prolonged")
		assert.Equal(t, stats.LocksRenewed, srv.Calls(apifytest.OpProlongRequestLock))
	})
}

// The answer to a prefetched request's release is lost and the client's
// retry gets 403 (the lock is gone): the request was given back, and
// PrefetchReleased counts it.
func TestConsumeLostReleaseAnswerIsCountedAsAReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, ids := memQueue(t, 40)
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{DropResponse: true})
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if req.ID == ids[5] {
				time.Sleep(30 * time.Second) // the requests behind it wait too long
			} else {
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "fresh", Concurrency: 1, LockDuration: lock})
		require.NoError(t, err)
		assert.Equal(t, 40, stats.Handled)
		require.Positive(t, stats.PrefetchReleased)
		assert.Equal(t, srv.Calls(apifytest.OpDeleteRequestLock)-1, stats.PrefetchReleased,
			"every release counted, the one whose answer was lost too (its retry got 403)")
		assert.Zero(t, stats.LocksLost)
	})
}

// Calls per handled request, counted by the emulator, for handlers of
// 0, 2 s and 25 s under a 60 s lock. Where a head/lock can take 10 requests
// that all start within a third of the lock (Concurrency ≥ 27 × time per
// request ÷ lock), at most 2.1; elsewhere, the documented bound
// 2 + 1 ÷ (1 + Concurrency × (lock/3) ÷ time per request). Besides, a run
// costs the unlocks at start and exit, its first head/lock (before any
// handler was measured, only for the free slots) and the two that find the
// queue done: 5 calls, not counted here.
func TestConsumeCallsPerRequestAcrossConcurrency(t *testing.T) {
	for _, tc := range []struct {
		conc     int
		work     time.Duration
		requests int
		max      float64
	}{
		{1, 0, 200, 2.1},
		{1, 2 * time.Second, 120, 2.1},
		{2, 2 * time.Second, 200, 2.1},
		{16, 2 * time.Second, 400, 2.1},
		{16, 25 * time.Second, 320, 2.1},
		{200, 0, 2000, 2.1},
		{200, 25 * time.Second, 2000, 2.1},
		// Here a head/lock takes 1 + Concurrency × 13 s ÷ 25 s requests (13 s:
		// a longer wait would need a prolong), and finishing adds two.
		{1, 25 * time.Second, 20, 3},
		{2, 25 * time.Second, 40, 2.5},
	} {
		t.Run(fmt.Sprintf("concurrency=%d/work=%v", tc.conc, tc.work), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, _ := memQueue(t, tc.requests)
				stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
					time.Sleep(tc.work)
					return nil
				}, apify.ConsumeOptions{ClientKey: "economy", Concurrency: tc.conc, LockDuration: time.Minute})
				require.NoError(t, err)
				require.Equal(t, tc.requests, stats.Handled)
				calls := totalCalls(srv)
				perRequest := float64(calls-5) / float64(tc.requests)
				t.Logf("%d calls, %.3f per request (head/lock %d, prolong %d, released %d)", calls, perRequest,
					srv.Calls(apifytest.OpListAndLockHead), srv.Calls(apifytest.OpProlongRequestLock), stats.PrefetchReleased)
				assert.LessOrEqual(t, perRequest, tc.max)
				assert.Zero(t, stats.LocksLost)
			})
		})
	}
}

// Visibility without a Logger: when every attempt of the first call fails
// (no server at the base URL), Consume returns the error at once instead of
// retrying in silence; with KeepAlive it rides it out.
func TestConsumeStartUpFailure(t *testing.T) {
	t.Run("no server: the error comes back", func(t *testing.T) {
		c, err := apify.NewClient(apify.WithBaseURL("http://127.0.0.1:1"), apify.WithRetryWait(time.Millisecond, 5*time.Millisecond))
		require.NoError(t, err)
		start := time.Now()
		stats, err := c.RequestQueue("WkzbQMuFYuamGv3YF").Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "lost"})
		require.Error(t, err)
		var reqErr *apify.RequestError
		require.ErrorAs(t, err, &reqErr)
		assert.Contains(t, err.Error(), "connection refused")
		assert.Equal(t, 5, reqErr.Attempts, "every attempt of the client's retries")
		assert.Equal(t, 1, stats.APICalls)
		assert.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("503s all along: the API's error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, q, _ := memQueue(t, 2)
			srv.FailNext(apifytest.OpUnlockRequests, 5, apifytest.Fault{Status: 503})
			_, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "down"})
			var apiErr *apify.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 503, apiErr.StatusCode)
			assert.Equal(t, 5, apiErr.Attempts)
			assert.Len(t, srv.Pending(q.ID()), 2, "nothing was locked")
		})
	})
	t.Run("a blip the client's retries absorb is no error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, q, _ := memQueue(t, 2)
			srv.FailNext(apifytest.OpUnlockRequests, 4, apifytest.Fault{Status: 503})
			stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "blip"})
			require.NoError(t, err)
			assert.Equal(t, 2, stats.Handled)
		})
	})
	t.Run("KeepAlive rides it out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, q, _ := memQueue(t, 2)
			srv.FailNext(apifytest.OpUnlockRequests, 12, apifytest.Fault{Status: 503})
			ctx, cancel := context.WithCancel(context.Background())
			var handled atomic.Int32
			start := time.Now()
			var firstRan time.Duration
			stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error {
				if handled.Add(1) == 1 {
					firstRan = time.Since(start)
				} else {
					cancel()
				}
				return nil
			}, apify.ConsumeOptions{ClientKey: "patient", KeepAlive: true, Concurrency: 1})
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, 2, stats.Handled)
			assert.Equal(t, 2, stats.CallErrors, "two rounds of the client's five attempts failed")
			// Consume's backoff after each round: at most 500 ms, then 1 s;
			// the client's own waits (1 to 20 ms) add at most 160 ms.
			assert.Less(t, firstRan, 1700*time.Millisecond, "waited Consume's short backoff, no more")
		})
	})
}

// The last handler returns while a head/lock's answer is on its way, an
// answer that saw that handler's lock (queueHasLockedRequests): the locks
// it saw were all ours, and are gone, so Consume looks again at once
// instead of polling 50 to 100 ms later. The finish tail stays a few round
// trips.
func TestConsumeFinishTailWhenTheLastLockEndsDuringAHeadLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 5 * time.Millisecond
		srv, q, ids := memQueue(t, 2)
		srv.InjectFault(apifytest.OpListAndLockHead, apifytest.Fault{ResponseDelay: rtt})
		var lastReturn time.Time
		var mu sync.Mutex
		stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
			d := 100 * time.Millisecond
			if req.ID == ids[1] {
				d += 2 * time.Millisecond // returns while the head/lock sent when the first returned is answered
			}
			time.Sleep(d)
			mu.Lock()
			lastReturn = time.Now()
			mu.Unlock()
			return nil
		}, apify.ConsumeOptions{ClientKey: "tail", Concurrency: 2})
		require.NoError(t, err)
		assert.Equal(t, 2, stats.Handled)
		tail := time.Since(lastReturn)
		assert.Less(t, tail, 4*rtt, "a few round trips after the last handler, not an idle poll (50 ms or more)")
		t.Logf("finish tail %v", tail)
	})
}
