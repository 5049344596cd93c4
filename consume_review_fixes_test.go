package apify_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Defects of Consume found in review (by reading the code, and by the
// mutation review), each with the test that failed before its fix. Each
// comment says what the code did then.

// Fixed: with KeepAlive, a migrating event during the
// start-up unlock never lets Consume return. The event cancels the unlock
// (it runs under the consumer's "taking" context); recoverLocks sees an
// error with the caller's ctx still live and, with KeepAlive, takes it for
// a transient failure: it logs it, waits a backoff on ctx (not on the
// event) and calls the unlock again, which fails at once on the cancelled
// context, for ever.
func TestConsumeKeepAliveStopsForAnEventDuringStartUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 3)
		events, send := memEvents(t)
		srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Delay: 10 * time.Second}) // a slow start-up unlock
		time.AfterFunc(time.Second, func() {
			send(apify.PlatformEvent{Name: apify.PlatformEventMigrating, TimeRemaining: 5 * time.Second})
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type result struct {
			stats *apify.ConsumeStats
			err   error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { return nil },
				apify.ConsumeOptions{ClientKey: "keepalive", KeepAlive: true, Events: events})
			done <- result{stats, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(time.Minute):
			t.Error("Consume had not returned a minute after migrating with 5 s left")
			cancel()
			r = <-done
		}
		require.ErrorIs(t, r.err, apify.ErrMigrating)
		assert.Less(t, time.Since(start), 6*time.Second, "before the time remaining ran out")
		assert.Equal(t, "migrating", r.stats.StoppedBy)
		assert.Empty(t, srv.Locked(q.ID()))
	})
}

// Fixed: a handler whose ctx ended (HandlerTimeout, or the
// end of the drain) and that ignores it is waited for its whole grace (a
// sixth of the lock, up to 5 s; at shutdown, up to half ShutdownTimeout)
// even when the consumer must stop sooner: the worker's wait for it
// (runHandler, after hctx.Done) watches neither the end of the drain nor
// the end of the consumer (ops), and run waits for every worker
// (<-workersDone) before the final unlock. So Consume overruns its bound
// and the platform's deadline, and the final unlock comes after the kill.
//
//   - migrating: the handler timed out at 1 s (a 1 minute lock: a 5 s
//     grace); migrating with 2 s left comes at 1.5 s. Consume must have
//     released every lock and returned within the 2 s; it does at 6 s.
//   - SIGTERM: the same handler, ctx cancelled at 1.5 s, DrainTimeout 0,
//     ShutdownTimeout 1 s: the bound is 1.5 s after the cancel; it returns
//     4.5 s after it.
//   - SIGTERM, then migrating: a handler that ignores its ctx is cancelled
//     at the end of a drain of 0 (cancel at 1 s) with half ShutdownTimeout
//     (10 s) as its grace; migrating with 1 s left comes at 2 s, and must
//     cut that grace short (the wait after the drain is bounded by the
//     event); Consume returns at 6 s. (Once the worker's wait ends with
//     the consumer, this case also checks that the wait after the drain is
//     bounded by the event: it fails without that bound.)
func TestConsumeStopsWithoutWaitingOutAnAbandonGrace(t *testing.T) {
	migrating := func(left time.Duration) apify.PlatformEvent {
		return apify.PlatformEvent{Name: apify.PlatformEventMigrating, TimeRemaining: left}
	}
	for _, tc := range []struct {
		name           string
		handlerTimeout time.Duration
		shutdown       time.Duration
		cancelAt       time.Duration // 0: never
		event          *apify.PlatformEvent
		eventAt        time.Duration
		within         time.Duration // of the last stop
	}{
		{"migrating", time.Second, time.Second, 0, &[]apify.PlatformEvent{migrating(2 * time.Second)}[0], 1500 * time.Millisecond, 2 * time.Second},
		{"SIGTERM", time.Second, time.Second, 1500 * time.Millisecond, nil, 0, 1500 * time.Millisecond},
		{"SIGTERM then migrating", 2 * time.Hour, 10 * time.Second, time.Second, &[]apify.PlatformEvent{migrating(time.Second)}[0], 2 * time.Second, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, _ := memQueue(t, 1)
				events, send := memEvents(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				start := time.Now()
				if tc.cancelAt > 0 {
					time.AfterFunc(tc.cancelAt, cancel)
				}
				if tc.event != nil {
					time.AfterFunc(tc.eventAt, func() { send(*tc.event) })
				}
				handlerDone := make(chan struct{})
				stats, _ := q.Consume(ctx, func(context.Context, *apify.Request) error {
					defer close(handlerDone)
					time.Sleep(time.Hour) // ignores its ctx
					return nil
				}, apify.ConsumeOptions{ClientKey: "graceful", LockDuration: time.Minute, HandlerTimeout: tc.handlerTimeout,
					DrainTimeout: -1, ShutdownTimeout: tc.shutdown, Events: events})
				returned := time.Since(start) - max(tc.cancelAt, tc.eventAt)
				assert.LessOrEqual(t, returned, tc.within, "Consume returned %v after the last stop", returned)
				assert.Equal(t, 1, stats.Abandoned)
				assert.Empty(t, srv.Locked(q.ID()), "every lock released")
				<-handlerDone
			})
		})
	}
}

// Fixed: a failed attempt whose result was written, but
// whose answer came after the lease ended, is counted in LocksLost, not in
// Retried. ConsumeStats says LocksLost counts requests "whose result
// Consume therefore did not record"; here it was recorded (retryCount 1,
// the error message), as the success path already checks with a read
// (recordedAfterAll). Prolongs hang, so the lease ends at 10.8 s; the
// update marking the retry is served at once and answered at 15 s.
func TestConsumeARetryRecordedAfterItsLeaseEndedIsARetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, ids := memQueue(t, 1)
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Hang: true})
		srv.FailNext(apifytest.OpUpdateRequest, 1, apifytest.Fault{ResponseDelay: 15 * time.Second})
		var n atomic.Int32
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
			if n.Add(1) == 1 {
				return errors.New("try again")
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "slow-answer", LockDuration: lock})
		require.NoError(t, err)
		st, _ := srv.Request(q.ID(), ids[0])
		require.Equal(t, 1, st.RetryCount, "the first run's failure was recorded")
		assert.Equal(t, []string{"try again"}, st.ErrorMessages)
		assert.Equal(t, int32(2), n.Load())
		assert.Equal(t, 1, stats.Handled)
		assert.Equal(t, 1, stats.Retried, "the recorded failure is a retry")
		assert.Zero(t, stats.LocksLost, "its result was recorded")
	})
}

// Found in review: the API economy Consume documented held for handlers
// that all take the same time (TestConsumeCallsPerRequestAcrossConcurrency),
// not for handlers whose times spread, as real pages' do; here they take 20
// to 30 s (25 s on average) under a 60 s lock. Two causes: the doc's bound
// used a third of the lock as the longest wait in prefetch, where Consume
// waits only as long as keeps a request from needing a renewal it would not
// need by itself (two thirds of the lock, less its time and the margin: 13
// s here, 12.35 s with the twentieth kept for the spread); and the plan took
// a request running past the average time to need as long again, so a slot
// whose request ran a little late was not counted as freeing soon. The
// bound, now documented, is 2 + 1 ÷ (1 + Concurrency × W ÷ s) with W that
// wait: 2.50 at Concurrency 2, 2.11 at 16, 2.03 at 64. A run adds its tail
// (head/locks polling while its own last handlers run) and a few prolongs
// (a request of 30 s that waited 12 s), allowed for with enough requests
// that the tail is small.
func TestConsumeCallsPerRequestWithSpreadHandlerTimes(t *testing.T) {
	const w = 12.35 // seconds, the wait allowed in prefetch for 25 s requests under a 60 s lock
	for _, tc := range []struct {
		conc  int
		extra float64 // the tail, the prolongs, and the plan's misses
	}{
		{2, 0.2},    // 2.67 measured: 0.03 tail, 0.06 prolongs
		{16, 0.1},   // 2.19
		{64, 0.045}, // 2.06; 2.09 when a request running late was taken to need as long again
	} {
		conc := tc.conc
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := max(400, 20*conc)
				srv, q, _ := memQueue(t, n)
				var i atomic.Int32
				stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
					k := int(i.Add(1))
					time.Sleep(20*time.Second + time.Duration((k*7919)%101)*100*time.Millisecond) // 20 to 30 s
					return nil
				}, apify.ConsumeOptions{ClientKey: "spread", Concurrency: conc, LockDuration: time.Minute})
				require.NoError(t, err)
				require.Equal(t, n, stats.Handled)
				// As in TestConsumeCallsPerRequestAcrossConcurrency, the run's 5
				// fixed calls are not counted.
				perRequest := float64(totalCalls(srv)-5) / float64(n)
				t.Logf("%.3f calls per request (head/lock %d, prolong %d, released %d)", perRequest,
					srv.Calls(apifytest.OpListAndLockHead), srv.Calls(apifytest.OpProlongRequestLock), stats.PrefetchReleased)
				assert.LessOrEqual(t, perRequest, 2+1/(1+float64(conc)*w/25)+tc.extra)
				assert.Zero(t, stats.LocksLost)
			})
		})
	}
}

// Fixed: renewals run at most 16 at a time
// (consumeRenewParallelism), whatever Concurrency is, so the renewals a
// consumer can make before its locks lapse are bounded by 16 ÷ (a
// prolong's latency) × (the time between a lease's renewal and its end,
// about a third of the lock less the margin): with a 60 s lock and prolongs
// answered in 300 ms, about 900. Here 1,000 handlers (Concurrency may be
// up to 10,000) start together and run 70 s; every prolong is answered, in
// 300 ms, yet dozens of locks lapse under running handlers (69 when
// written): the central promise ("a lock never lapses under a running
// handler while the API answers") breaks on a healthy API at high
// Concurrency.
func TestConsumeRenewsEveryLockAtHighConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const conc = 1000
		srv, q, _ := memQueue(t, conc)
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Delay: 300 * time.Millisecond})
		stats, err := q.Consume(context.Background(), func(ctx context.Context, _ *apify.Request) error {
			select {
			case <-time.After(70 * time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "many", Concurrency: conc, HandlerTimeout: time.Hour})
		require.NoError(t, err)
		assert.Zero(t, stats.LocksLost, "locks lapsed under running handlers while every prolong was answered")
		assert.Equal(t, conc, stats.Handled)
		assert.Equal(t, conc, stats.LocksRenewed)
	})
}

// Fixed (it was the cause of a TestSoak flake, "APICalls counts
// calls that never left the client"): a call under a lease whose context
// has already ended is counted in APICalls, then fails at once without
// leaving the client. lease.callCtx checks only the lock's deadline, not
// whether the lease (or the consumer) has ended. Here a handler times out
// and ignores its ctx; the shutdown ends the consumer's leases before its
// grace is over, and the failed attempt it then records (UpdateRequest) is
// counted but never sent.
func TestConsumeCountsOnlyCallsThatLeftTheClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		time.AfterFunc(1500*time.Millisecond, cancel)
		handlerDone := make(chan struct{})
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error {
			defer close(handlerDone)
			time.Sleep(time.Hour) // ignores its ctx
			return nil
		}, apify.ConsumeOptions{ClientKey: "counted", LockDuration: time.Minute, HandlerTimeout: time.Second, DrainTimeout: -1, ShutdownTimeout: time.Second})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 1, stats.Abandoned)
		assert.Equal(t, totalCalls(srv), stats.APICalls, "APICalls counts the calls the emulator received")
		<-handlerDone
	})
}
