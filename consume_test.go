package apify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Consume's tests run inside testing/synctest bubbles against an emulator
// served in memory: the emulator's clock is the bubble's fake time, so lock
// expiry, prolongs, timeouts and backoff all happen in simulated time, and
// a test of a handler that runs for minutes takes milliseconds.

// memQueue makes an in-memory emulator with one queue of n requests and a
// handle on it. Call it inside a bubble.
func memQueue(t *testing.T, n int, opts ...apifytest.Option) (*apifytest.Server, *apify.RequestQueueClient, []string) {
	t.Helper()
	srv := apifytest.NewUnstartedServer(opts...)
	queueID := srv.CreateQueue("consume")
	var ids []string
	if n > 0 {
		reqs := make([]apifytest.Request, n)
		for i := range reqs {
			reqs[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/p/%d", i)}
		}
		ids = srv.AddRequests(queueID, reqs...)
	}
	return srv, srv.Client().RequestQueue(queueID), ids
}

// totalCalls is every call the emulator received, on every operation.
func totalCalls(srv *apifytest.Server) int {
	n := 0
	for _, op := range apifytest.Operations() {
		n += srv.Calls(op)
	}
	return n
}

// runs counts handler invocations per request ID.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) add(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[id]++
	return r.n[id]
}

func (r *runs) get(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

func TestConsumeDrainsTheQueueAndKeepsUserData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 40)
		ctx := context.Background()
		_, err := q.AddRequest(ctx, apify.Request{URL: "https://shop.test/start", UniqueKey: "start", UserData: json.RawMessage(`{"label":"START"}`)}, apify.RequestOptions{ClientKey: "seeder"})
		require.NoError(t, err)
		before := time.Now()

		var seen runs
		stats, err := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
			seen.add(req.ID)
			var ud map[string]any
			if len(req.UserData) > 0 {
				// A handler runs in a goroutine Consume owns: it reports a
				// problem with assert and its error, never require.
				if err := json.Unmarshal(req.UserData, &ud); !assert.NoError(t, err) {
					return err
				}
			} else {
				ud = map[string]any{}
			}
			ud["seen"] = true
			req.UserData, _ = json.Marshal(ud)
			time.Sleep(time.Second)
			return nil
		}, apify.ConsumeOptions{ClientKey: "drainer", Concurrency: 4})
		require.NoError(t, err)
		assert.Equal(t, totalCalls(srv)-1, stats.APICalls, "APICalls counts every call Consume made (the test made 1)")

		assert.Equal(t, 41, stats.Handled)
		assert.Zero(t, stats.Failed+stats.Retried+stats.LocksLost+stats.CallErrors)
		assert.Len(t, srv.Pending(q.ID()), 0)
		assert.Empty(t, srv.Locked(q.ID()))
		for _, id := range ids {
			assert.Equal(t, 1, seen.get(id), "each request runs once")
		}
		start, err := q.GetRequest(ctx, apifytest.RequestID("start"))
		require.NoError(t, err)
		assert.JSONEq(t, `{"label":"START","seen":true}`, string(start.UserData), "the handler's change is saved, nothing is lost")
		assert.False(t, start.HandledAt.IsZero())
		got, err := q.GetRequest(ctx, ids[7])
		require.NoError(t, err)
		assert.JSONEq(t, `{"seen":true}`, string(got.UserData))
		// 41 one-second handlers, 4 at a time: about 11 s, plus the final check.
		assert.Less(t, time.Since(before), 14*time.Second)
	})
}

// With handlers shorter than half the lock, a handled request costs at most
// 2.1 queue calls, counted by the emulator: GetRequest, the update that marks
// it handled, and a share of head/lock, with no prolong at all; also with
// more handlers than twice the prefetch, where a head/lock must not be spent
// on each freed slot.
func TestConsumeCallsPerRequest(t *testing.T) {
	for _, concurrency := range []int{16, 64} {
		t.Run(fmt.Sprint(concurrency), func(t *testing.T) { testCallsPerRequest(t, concurrency) })
	}
}

func testCallsPerRequest(t *testing.T, concurrency int) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		srv, q, _ := memQueue(t, n)
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			time.Sleep(2 * time.Second)
			return nil
		}, apify.ConsumeOptions{ClientKey: "economy", Concurrency: concurrency, LockDuration: time.Minute})
		require.NoError(t, err)
		require.Equal(t, n, stats.Handled)
		calls := totalCalls(srv)
		perRequest := float64(calls) / n
		t.Logf("%d calls for %d requests: %.3f per request (head/lock %d, get %d, update %d, prolong %d, unlock %d)",
			calls, n, perRequest, srv.Calls(apifytest.OpListAndLockHead), srv.Calls(apifytest.OpGetRequest),
			srv.Calls(apifytest.OpUpdateRequest), srv.Calls(apifytest.OpProlongRequestLock), srv.Calls(apifytest.OpUnlockRequests))
		assert.LessOrEqual(t, perRequest, 2.1)
		assert.Zero(t, srv.Calls(apifytest.OpProlongRequestLock), "no prolong for short handlers")
		assert.Equal(t, n, srv.Calls(apifytest.OpGetRequest))
		assert.Equal(t, n, srv.Calls(apifytest.OpUpdateRequest))
		assert.Equal(t, calls, stats.APICalls)
	})
}

// A handler that runs 5x the lock keeps its lock the whole time: another
// client never gets the request, the handler's ctx never ends, and the
// request is handled once. The same run where the API refuses every prolong
// (403), or never answers one, must lose the lock to the other client: that
// is what makes this test able to fail.
func TestConsumeLongHandlerKeepsItsLock(t *testing.T) {
	const lock = 10 * time.Second
	for _, tc := range []struct {
		name  string
		fault *apifytest.Fault // on every prolong
	}{
		{"prolongs answer", nil},
		{"prolongs refused", &apifytest.Fault{Status: 403, Type: "request-handled-or-locked", Message: "Request is locked by another client"}},
		{"prolongs hang", &apifytest.Fault{Hang: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, ids := memQueue(t, 1)
				broken := tc.fault != nil
				if broken {
					srv.InjectFault(apifytest.OpProlongRequestLock, *tc.fault)
				}
				other := srv.Client().RequestQueue(q.ID())
				var (
					runsN    atomic.Int32
					stolen   atomic.Int32
					tries    atomic.Int32
					cause    atomic.Value
					checking = make(chan struct{})
				)
				go func() { // another client tries to take the request every second
					defer close(checking)
					for range 60 {
						time.Sleep(time.Second)
						tries.Add(1)
						head, err := other.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: time.Hour, ClientKey: "thief"})
						if err == nil && len(head.Items) > 0 {
							stolen.Add(1)
							return
						}
					}
				}()
				// A broken consumer would retake and lose the request forever: stop it.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				stats, err := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
					runsN.Add(1)
					select {
					case <-time.After(5 * lock):
						return nil
					case <-ctx.Done():
						cause.Store(context.Cause(ctx))
						return ctx.Err()
					}
				}, apify.ConsumeOptions{ClientKey: "slow", Concurrency: 1, LockDuration: lock, HandlerTimeout: time.Hour})
				<-checking
				if !broken {
					require.NoError(t, err)
					assert.Zero(t, stolen.Load(), "nobody else got the request while the handler ran")
					assert.Nil(t, cause.Load(), "the handler's ctx never ended")
					assert.Equal(t, int32(1), runsN.Load())
					assert.Equal(t, 1, stats.Handled)
					assert.Zero(t, stats.LocksLost)
					// Renewed when a third of the lock is left: about every 6.7 s for 50 s.
					assert.GreaterOrEqual(t, stats.LocksRenewed, 6)
					assert.LessOrEqual(t, stats.LocksRenewed, 9)
					assert.Equal(t, totalCalls(srv)-int(tries.Load()), stats.APICalls, "APICalls counts the prolongs")
					st, _ := srv.Request(q.ID(), ids[0])
					assert.True(t, st.Handled())
					return
				}
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Equal(t, int32(1), stolen.Load(), "with broken prolongs the lock lapses and another client takes the request")
				assert.Equal(t, apify.ErrLockLost, cause.Load(), "and the handler is told")
				assert.Equal(t, 1, stats.LocksLost)
				assert.Zero(t, stats.Handled, "its result is not recorded")
				st, _ := srv.Request(q.ID(), ids[0])
				assert.False(t, st.Handled())
				require.NotNil(t, st.Lock)
				assert.Equal(t, "thief", st.Lock.ClientKey)
			})
		})
	}
}

// consumeOne runs Consume on a queue of one request with handler h and
// returns the stats, how often h ran, and the request as it ended.
func consumeOne(t *testing.T, opts apify.ConsumeOptions, h func(run int, ctx context.Context, req *apify.Request) error) (*apify.ConsumeStats, int, *apify.Request) {
	t.Helper()
	_, q, ids := memQueue(t, 1)
	var n atomic.Int32
	// A bound in simulated time: a consumer that never finishes fails the
	// test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	stats, err := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
		return h(int(n.Add(1)), ctx, req)
	}, opts)
	require.NoError(t, err)
	req, err := q.GetRequest(context.Background(), ids[0])
	require.NoError(t, err)
	return stats, int(n.Load()), req
}

func TestConsumeRetriesFailures(t *testing.T) {
	fail := func(int, context.Context, *apify.Request) error { return errors.New("HTTP 503 from the shop") }
	for _, tc := range []struct {
		name       string
		maxRetries int
		wantRuns   int
	}{
		{"default", 0, 4}, // 0 means 3 retries
		{"two", 2, 3},
		{"never", -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "retry", MaxRetries: tc.maxRetries}, fail)
				assert.Equal(t, tc.wantRuns, runs)
				assert.Equal(t, tc.wantRuns-1, stats.Retried)
				assert.Equal(t, 1, stats.Failed)
				assert.Zero(t, stats.Handled)
				assert.False(t, req.HandledAt.IsZero(), "given up: marked handled")
				assert.Equal(t, tc.wantRuns-1, req.RetryCount)
				require.Len(t, req.ErrorMessages, tc.wantRuns)
				assert.Equal(t, "HTTP 503 from the shop", req.ErrorMessages[0])
			})
		})
	}
	t.Run("then succeeds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "retry"}, func(run int, ctx context.Context, req *apify.Request) error {
				assert.Equal(t, run-1, req.RetryCount, "the handler sees the retry count")
				if run < 3 {
					return fmt.Errorf("attempt %d failed", run)
				}
				return nil
			})
			assert.Equal(t, 3, runs)
			assert.Equal(t, apify.ConsumeStats{Handled: 1, Retried: 2, APICalls: stats.APICalls}, *stats)
			assert.Equal(t, []string{"attempt 1 failed", "attempt 2 failed"}, req.ErrorMessages)
			assert.Equal(t, 2, req.RetryCount)
			assert.False(t, req.HandledAt.IsZero())
		})
	})
	t.Run("to the back of the queue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, q, ids := memQueue(t, 3)
			var order []string
			failed := false
			_, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
				order = append(order, req.ID)
				if req.ID == ids[0] && !failed {
					failed = true
					return errors.New("again later")
				}
				return nil
			}, apify.ConsumeOptions{ClientKey: "retry", Concurrency: 1, Prefetch: -1})
			require.NoError(t, err)
			assert.Equal(t, []string{ids[0], ids[1], ids[2], ids[0]}, order)
		})
	})
	t.Run("error messages are bounded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			long := strings.Repeat("é", 1500)
			_, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "retry", MaxRetries: 14}, func(run int, _ context.Context, _ *apify.Request) error {
				return fmt.Errorf("run %d: %s", run, long)
			})
			assert.Equal(t, 15, runs)
			require.Len(t, req.ErrorMessages, 10, "the last 10 are kept")
			assert.True(t, strings.HasPrefix(req.ErrorMessages[9], "run 15: "))
			for _, m := range req.ErrorMessages {
				assert.LessOrEqual(t, len(m), 1004)
				assert.True(t, utf8.ValidString(m))
			}
		})
	})
}

func TestConsumeErrNoRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "noretry", MaxRetries: 5}, func(int, context.Context, *apify.Request) error {
			return fmt.Errorf("page is gone: %w", apify.ErrNoRetry)
		})
		assert.Equal(t, 1, runs, "not retried")
		assert.Equal(t, 1, stats.Failed)
		assert.Zero(t, stats.Retried)
		assert.False(t, req.HandledAt.IsZero())
		assert.Zero(t, req.RetryCount)
		require.Len(t, req.ErrorMessages, 1)
		assert.Contains(t, req.ErrorMessages[0], "page is gone")
	})
}

func TestConsumePanicIsAFailureOfThatRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "panic"}, func(run int, _ context.Context, _ *apify.Request) error {
			if run == 1 {
				var items []string
				_ = items[run] // index out of range: a runtime panic
			}
			return nil
		})
		assert.Equal(t, 2, runs)
		assert.Equal(t, 1, stats.Handled)
		assert.Equal(t, 1, stats.Retried)
		require.Len(t, req.ErrorMessages, 1)
		assert.Contains(t, req.ErrorMessages[0], "handler panicked: runtime error: index out of range [1] with length 0")
	})
}

func TestConsumeHandlerTimeout(t *testing.T) {
	t.Run("the handler's ctx ends and the request is retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var causes []error
			start := time.Now()
			stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "timeout", HandlerTimeout: 5 * time.Second, MaxRetries: 1}, func(run int, ctx context.Context, _ *apify.Request) error {
				select {
				case <-ctx.Done():
				case <-time.After(time.Hour): // bounded, should the timeout not come
					return errors.New("HandlerTimeout did not end the handler's ctx")
				}
				causes = append(causes, context.Cause(ctx))
				assert.Equal(t, 5*time.Second, time.Since(start)-time.Duration(run-1)*5*time.Second)
				return ctx.Err()
			})
			assert.Equal(t, 2, runs)
			assert.Equal(t, []error{apify.ErrHandlerTimeout, apify.ErrHandlerTimeout}, causes)
			assert.Equal(t, 1, stats.Retried)
			assert.Equal(t, 1, stats.Failed)
			require.Len(t, req.ErrorMessages, 2)
			assert.Contains(t, req.ErrorMessages[0], "handler timed out after 5s")
		})
	})
	t.Run("a handler that ignores its ctx is abandoned: a failed attempt at once, its slot given back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const lock = 12 * time.Second // grace: a sixth of it, 2 s
			srv, q, ids := memQueue(t, 1)
			var n atomic.Int32
			firstDone := make(chan struct{})
			start := time.Now()
			var secondAt time.Duration
			stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
				if n.Add(1) == 1 {
					defer close(firstDone)
					time.Sleep(time.Minute) // ignores ctx
					return nil
				}
				secondAt = time.Since(start)
				assert.Equal(t, 1, req.RetryCount, "the abandoned run counted as a failed attempt")
				return nil
			}, apify.ConsumeOptions{ClientKey: "hung", Concurrency: 1, LockDuration: lock, HandlerTimeout: 5 * time.Second})
			require.NoError(t, err)
			assert.Equal(t, int32(2), n.Load(), "the request ran again, in the slot the hung handler gave back")
			assert.Equal(t, 7*time.Second, secondAt, "at HandlerTimeout plus the grace, not when the lock lapses")
			assert.Equal(t, 1, stats.Abandoned)
			assert.Equal(t, 1, stats.Retried)
			assert.Equal(t, 1, stats.Handled)
			assert.Zero(t, stats.LocksLost, "the lock was kept until the failure was recorded")
			select {
			case <-firstDone:
				t.Fatal("Consume waited for the abandoned handler")
			default:
			}
			<-firstDone
			synctest.Wait()
			st, _ := srv.Request(q.ID(), ids[0])
			assert.True(t, st.Handled())
			assert.Equal(t, 1, st.RetryCount, "the abandoned handler's late nil is never recorded")
			got, err := q.GetRequest(context.Background(), ids[0])
			require.NoError(t, err)
			require.Len(t, got.ErrorMessages, 1)
			assert.Contains(t, got.ErrorMessages[0], apify.ErrHandlerAbandoned.Error())
			assert.Contains(t, got.ErrorMessages[0], "HandlerTimeout (5s) and had not returned 2s later")
		})
	})
	t.Run("an abandoned handler's late result is ignored while Consume runs on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const lock = 12 * time.Second // grace: a sixth of it, 2 s
			srv, q, ids := memQueue(t, 1)
			var n atomic.Int32
			// The abandoned run returns nil at 10 s, while the retry (from 7 s)
			// runs until 11 s: a late record would mark the request handled at 10 s.
			seen := make(chan apifytest.RequestState, 1)
			time.AfterFunc(10500*time.Millisecond, func() { st, _ := srv.Request(q.ID(), ids[0]); seen <- st })
			stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
				if n.Add(1) == 1 {
					time.Sleep(10 * time.Second) // ignores ctx, then returns nil
					return nil
				}
				time.Sleep(4 * time.Second)
				return errors.New("the retry fails")
			}, apify.ConsumeOptions{ClientKey: "late", Concurrency: 1, LockDuration: lock, HandlerTimeout: 5 * time.Second, MaxRetries: 1})
			require.NoError(t, err)
			atTen := <-seen
			assert.False(t, atTen.Handled(), "the abandoned run's nil was not recorded")
			assert.Equal(t, 1, atTen.RetryCount)
			st, _ := srv.Request(q.ID(), ids[0])
			assert.Equal(t, 1, st.RetryCount)
			require.Len(t, st.ErrorMessages, 2, "the abandonment and the retry's failure")
			assert.Equal(t, "the retry fails", st.ErrorMessages[1])
			assert.Equal(t, 1, stats.Failed)
			assert.Zero(t, stats.Handled)
			assert.Equal(t, 1, stats.Abandoned)
		})
	})
}

// A prolong refused with 403 means another client has the request: the
// handler's ctx ends with ErrLockLost and its result is not recorded; the
// request, back in the queue when the lock ends, runs again.
func TestConsumeLostLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 1)
		srv.FailNext(apifytest.OpProlongRequestLock, 1, apifytest.Fault{Status: 403, Type: "request-handled-or-locked", Message: "locked by another client"})
		var causes []error
		var mu sync.Mutex
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			select {
			case <-time.After(30 * time.Second):
				return nil
			case <-ctx.Done():
				mu.Lock()
				causes = append(causes, context.Cause(ctx))
				mu.Unlock()
				return errors.New("interrupted")
			}
		}, apify.ConsumeOptions{ClientKey: "loser", LockDuration: 10 * time.Second, HandlerTimeout: time.Minute})
		require.NoError(t, err)
		assert.Equal(t, []error{apify.ErrLockLost}, causes)
		assert.Equal(t, 1, stats.LocksLost)
		assert.Equal(t, 1, stats.Handled, "the second run, after the lock ended, is recorded")
		assert.Zero(t, stats.Retried, "the lost run's error is not recorded")
		st, _ := srv.Request(q.ID(), ids[0])
		assert.True(t, st.Handled())
		assert.Zero(t, st.RetryCount)
	})
}

// Locks left by an earlier run with the same clientKey are released first
// thing, so their requests run at once instead of after the lock expires.
func TestConsumeRecoversLocksAtStart(t *testing.T) {
	for _, sameKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("sameKey=%v", sameKey), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, _ := memQueue(t, 10)
				head, err := q.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 4, LockDuration: time.Hour, ClientKey: "run-1"})
				require.NoError(t, err)
				require.Len(t, head.Items, 4)
				key := "run-1"
				if !sameKey {
					key = "run-2"
				}
				start := time.Now()
				stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: key})
				require.NoError(t, err)
				assert.Equal(t, 10, stats.Handled)
				assert.Len(t, srv.Handled(q.ID()), 10)
				if sameKey {
					assert.Equal(t, 4, stats.RecoveredAtStart)
					assert.Less(t, time.Since(start), 5*time.Second, "no wait for the old locks to expire")
				} else {
					assert.Zero(t, stats.RecoveredAtStart)
					assert.GreaterOrEqual(t, time.Since(start), time.Hour, "another key's locks are waited out")
				}
			})
		})
	}
}

// On shutdown, prefetched requests that no handler started are back in the
// queue at once, while running handlers drain and record their results.
func TestConsumeShutdownReleasesPrefetchedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 100)
		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			stats *apify.ConsumeStats
			err   error
		}
		done := make(chan result, 1)
		var started atomic.Int32
		go func() {
			stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error {
				started.Add(1)
				time.Sleep(time.Second) // ignores ctx: drains within DrainTimeout
				return nil
			}, apify.ConsumeOptions{ClientKey: "stopper", Concurrency: 2, Prefetch: 10, DrainTimeout: time.Minute})
			done <- result{stats, err}
		}()
		// Handlers of 1 s, 2 at a time: once measured, Consume prefetches
		// for the next seconds; at 3.5 s, 2 run and some wait.
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		held := len(srv.LockedBy(q.ID(), "stopper"))
		require.Greater(t, held, 2, "2 running, and some prefetched")
		prefetched := held - 2
		require.Len(t, srv.Handled(q.ID()), 6)
		startedBefore := started.Load()

		cancel()
		synctest.Wait()
		locked := srv.LockedBy(q.ID(), "stopper")
		assert.Len(t, locked, 2, "only the running requests are still held")
		pending := srv.Pending(q.ID())
		assert.Len(t, pending, 92, "the prefetched ones are pending again, before the drain ends")
		if assert.Len(t, pending, 92) {
			var front []string
			for _, st := range pending[:prefetched] {
				front = append(front, st.ID)
			}
			// Released in parallel, each to the front: in some order.
			assert.ElementsMatch(t, ids[8:8+prefetched], front, "at the front of the queue, where they were")
		}

		res := <-done
		require.ErrorIs(t, res.err, context.Canceled)
		assert.Equal(t, 8, res.stats.Handled, "the drained handlers' results are recorded")
		assert.Equal(t, prefetched, res.stats.ReleasedAtExit)
		assert.Equal(t, totalCalls(srv), res.stats.APICalls, "APICalls counts the releases")
		assert.Empty(t, srv.Locked(q.ID()))
		assert.Len(t, srv.Handled(q.ID()), 8)
		assert.Equal(t, startedBefore, started.Load(), "no handler started after the shutdown began")
	})
}

// A handler that outlives DrainTimeout has its ctx cancelled; Consume
// returns within DrainTimeout + 1.5 × ShutdownTimeout even if the handler
// ignores it, and releases its lock.
// A negative DrainTimeout gives running handlers no drain: their ctx ends
// as soon as Consume's does.
func TestConsumeNoDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q, _ := memQueue(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		var cancelled, stopped time.Time
		stats, err := q.Consume(ctx, func(hctx context.Context, _ *apify.Request) error {
			go func() {
				time.Sleep(time.Second)
				cancelled = time.Now()
				cancel()
			}()
			<-hctx.Done()
			stopped = time.Now()
			return hctx.Err()
		}, apify.ConsumeOptions{ClientKey: "nodrain", DrainTimeout: -1})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, cancelled, stopped)
		assert.Equal(t, 1, stats.ReleasedAtExit)
	})
}

func TestConsumeShutdownIsBounded(t *testing.T) {
	for _, obeys := range []bool{true, false} {
		t.Run(fmt.Sprintf("handlerObeysCtx=%v", obeys), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, ids := memQueue(t, 1)
				ctx, cancel := context.WithCancel(context.Background())
				started := make(chan struct{})
				var cause error
				handlerDone := make(chan struct{})
				go func() {
					<-started
					time.Sleep(time.Second)
					cancel()
				}()
				var stopped time.Time
				t0 := time.Now()
				stats, err := q.Consume(ctx, func(hctx context.Context, _ *apify.Request) error {
					defer close(handlerDone)
					close(started)
					if obeys {
						<-hctx.Done()
						cause = context.Cause(hctx)
						stopped = time.Now()
						return hctx.Err()
					}
					time.Sleep(time.Hour)
					return nil
				}, apify.ConsumeOptions{ClientKey: "bounded", DrainTimeout: 3 * time.Second, ShutdownTimeout: 2 * time.Second, HandlerTimeout: 2 * time.Hour})
				took := time.Since(t0) - time.Second // from the cancel
				require.ErrorIs(t, err, context.Canceled)
				assert.Equal(t, 1, stats.ReleasedAtExit, "the final unlock released the interrupted request")
				assert.Zero(t, stats.Handled+stats.Retried+stats.Failed, "an interrupted run is not a failure")
				st, _ := srv.Request(q.ID(), ids[0])
				assert.Nil(t, st.Lock)
				assert.False(t, st.Handled())
				assert.Zero(t, st.RetryCount)
				assert.LessOrEqual(t, took, 3*time.Second+3*time.Second, "within DrainTimeout + 1.5 x ShutdownTimeout")
				if obeys {
					assert.Equal(t, apify.ErrShuttingDown, cause)
					assert.Equal(t, 3*time.Second, stopped.Sub(t0)-time.Second, "the handler's ctx ends when the drain time is over")
					assert.Equal(t, 3*time.Second, took)
				} else {
					assert.Equal(t, 4*time.Second, took, "the drain, then half the shutdown budget for the cancelled handler")
				}
				<-handlerDone
			})
		})
	}
}

// The shutdown bound holds when a prolong hangs: the lease keeper bounds
// each try by the time left on the lock, and the end of the shutdown cuts
// the last one short instead of retrying it forever.
func TestConsumeShutdownCutsAProlongShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second // grace: 2 s
		srv, q, ids := memQueue(t, 1)
		srv.InjectFault(apifytest.OpProlongRequestLock, apifytest.Fault{Hang: true})
		ctx, cancel := context.WithCancel(context.Background())
		handlerDone := make(chan struct{})
		var cancelled time.Time
		go func() {
			time.Sleep(7 * time.Second) // the prolong is sent at 8 s and hangs
			cancelled = time.Now()
			cancel()
		}()
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error {
			defer close(handlerDone)
			time.Sleep(time.Hour) // ignores its ctx
			return nil
		}, apify.ConsumeOptions{ClientKey: "cut", LockDuration: lock, HandlerTimeout: 2 * time.Hour, DrainTimeout: 2 * time.Second, ShutdownTimeout: 6 * time.Second})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 4*time.Second, time.Since(cancelled), "the drain, then the grace of the handler that ignores its ctx")
		assert.Equal(t, 1, stats.Abandoned)
		assert.Equal(t, 1, stats.ReleasedAtExit)
		assert.Equal(t, 1, stats.LocksLost, "every prolong hung until the lock ran out, at 10.8 s")
		assert.GreaterOrEqual(t, srv.Calls(apifytest.OpProlongRequestLock), 3, "each try bounded by half the time left, then tried again")
		st, _ := srv.Request(q.ID(), ids[0])
		assert.Nil(t, st.Lock)
		<-handlerDone
	})
}

func TestConsumeRejectsBadOptionsBeforeAnyCall(t *testing.T) {
	ok := func(context.Context, *apify.Request) error { return nil }
	for _, tc := range []struct {
		name   string
		queue  string
		h      apify.Handler
		opts   apify.ConsumeOptions
		is     error
		naming string
	}{
		{"negative concurrency", "q", ok, apify.ConsumeOptions{Concurrency: -1}, apify.ErrInvalidInput, "ConsumeOptions.Concurrency is -1"},
		{"huge concurrency", "q", ok, apify.ConsumeOptions{Concurrency: 1 << 40}, apify.ErrInvalidInput, "ConsumeOptions.Concurrency is 1099511627776; it must be 1 to 10000"},
		{"huge prefetch", "q", ok, apify.ConsumeOptions{Prefetch: 1 << 40}, apify.ErrInvalidInput, "ConsumeOptions.Prefetch is 1099511627776"},
		{"several at once", "q", ok, apify.ConsumeOptions{Concurrency: -1, HandlerTimeout: -1}, apify.ErrInvalidInput, "ConsumeOptions.HandlerTimeout is -1ns"},
		{"lock too short", "q", ok, apify.ConsumeOptions{LockDuration: 500 * time.Millisecond}, apify.ErrInvalidInput, "ConsumeOptions.LockDuration is 500ms"},
		{"lock too long", "q", ok, apify.ConsumeOptions{LockDuration: 48 * time.Hour}, apify.ErrInvalidInput, "ConsumeOptions.LockDuration is 48h0m0s"},
		{"lock overflow", "q", ok, apify.ConsumeOptions{LockDuration: time.Duration(1<<63 - 1)}, apify.ErrInvalidInput, "ConsumeOptions.LockDuration"},
		{"negative handler timeout", "q", ok, apify.ConsumeOptions{HandlerTimeout: -time.Second}, apify.ErrInvalidInput, "ConsumeOptions.HandlerTimeout is -1s"},
		{"negative shutdown timeout", "q", ok, apify.ConsumeOptions{ShutdownTimeout: -time.Second}, apify.ErrInvalidInput, "ConsumeOptions.ShutdownTimeout is -1s"},
		{"long client key", "q", ok, apify.ConsumeOptions{ClientKey: strings.Repeat("k", 33)}, apify.ErrInvalidClientKey, "ConsumeOptions.ClientKey"},
		{"nil handler", "q", nil, apify.ConsumeOptions{}, apify.ErrInvalidInput, "the Handler is nil"},
		{"bad queue ID", "", ok, apify.ConsumeOptions{}, apify.ErrInvalidQueueID, "queue ID is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := apifytest.NewUnstartedServer()
			stats, err := srv.Client().RequestQueue(tc.queue).Consume(context.Background(), tc.h, tc.opts)
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.naming)
			require.NotNil(t, stats)
			assert.Zero(t, *stats)
			assert.Zero(t, totalCalls(srv), "no I/O")
		})
	}
}

// Consume returns an error when the queue itself is unusable, after one call.
func TestConsumeStopsOnAnUnusableQueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		is   error
		make func(srv *apifytest.Server, queueID string) *apify.RequestQueueClient
	}{
		{"no such queue", apify.ErrNotFound, func(srv *apifytest.Server, _ string) *apify.RequestQueueClient {
			return srv.Client(apify.WithToken("owner")).RequestQueue("NoSuchQueue123456")
		}},
		{"bad token", apify.ErrUnauthorized, func(srv *apifytest.Server, id string) *apify.RequestQueueClient {
			return srv.Client(apify.WithToken("wrong")).RequestQueue(id)
		}},
		{"no permission", apify.ErrForbidden, func(srv *apifytest.Server, id string) *apify.RequestQueueClient {
			srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Status: 403, Type: "insufficient-permissions"})
			return srv.Client(apify.WithToken("owner")).RequestQueue(id)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, _ := memQueue(t, 3, apifytest.WithToken("owner"))
				var ran atomic.Int32
				stats, err := tc.make(srv, q.ID()).Consume(context.Background(), func(context.Context, *apify.Request) error {
					ran.Add(1)
					return nil
				}, apify.ConsumeOptions{ClientKey: "k"})
				require.ErrorIs(t, err, tc.is)
				assert.Zero(t, ran.Load())
				assert.Equal(t, 1, stats.APICalls, "the start-up unlock tells")
				assert.Len(t, srv.Pending(q.ID()), 3)
			})
		})
	}
}

// Queue calls that fail even after the client's retries slow Consume down;
// they never fail a request, never lose one, and never run a handler twice.
func TestConsumeRidesOutTransientFailures(t *testing.T) {
	// (The start-up unlock is the exception: see TestConsumeStartUpFailure.)
	for _, op := range []apifytest.Operation{apifytest.OpListAndLockHead, apifytest.OpGetRequest, apifytest.OpUpdateRequest, apifytest.OpProlongRequestLock, apifytest.OpDeleteRequestLock} {
		for _, fault := range []apifytest.Fault{{Status: 503}, {Status: 429, RetryAfter: "2"}, {DropConnection: true}} {
			t.Run(fmt.Sprintf("%s/%d", op, fault.Status), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					srv, q, ids := memQueue(t, 6)
					// 40 failures in a row: several calls' 5 attempts each,
					// even when calls run in parallel.
					srv.FailNext(op, 40, fault)
					var seen runs
					stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
						time.Sleep(8 * time.Second) // long enough to need a prolong
						if seen.add(req.ID) == 1 && req.URL == "https://shop.test/p/0" {
							return errors.New("first run of p/0 fails") // exercises DELETE .../lock
						}
						return nil
					}, apify.ConsumeOptions{ClientKey: "weather", Concurrency: 2, LockDuration: 10 * time.Second})
					require.NoError(t, err)
					assert.Equal(t, 6, stats.Handled)
					assert.Zero(t, stats.Failed+stats.LocksLost)
					assert.Equal(t, 1, stats.Retried)
					assert.Positive(t, stats.CallErrors, "the failures were counted")
					assert.GreaterOrEqual(t, srv.Calls(op), 40)
					for i, id := range ids {
						want := 1
						if i == 0 {
							want = 2
						}
						assert.Equal(t, want, seen.get(id), "request %d", i)
					}
					assert.Len(t, srv.Handled(q.ID()), 6)
					assert.Empty(t, srv.Locked(q.ID()))
				})
			})
		}
	}
}

// While another client holds locks, Consume does not return: those
// requests may come back, and when they do it handles them.
func TestConsumeWaitsForOthersLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 5)
		_, err := q.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: 30 * time.Second, ClientKey: "other"})
		require.NoError(t, err)
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "patient"})
		require.NoError(t, err)
		assert.Equal(t, 5, stats.Handled)
		assert.GreaterOrEqual(t, time.Since(start), 30*time.Second)
		assert.Less(t, time.Since(start), 35*time.Second, "polled with a bounded backoff")
		assert.Less(t, srv.Calls(apifytest.OpListAndLockHead), 45, "polling backs off")
	})
}

func TestConsumeKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 0)
		ctx, cancel := context.WithCancel(context.Background())
		handled := make(chan string, 1)
		type result struct {
			stats *apify.ConsumeStats
			err   error
		}
		done := make(chan result, 1)
		go func() {
			stats, err := q.Consume(ctx, func(_ context.Context, req *apify.Request) error {
				handled <- req.URL
				return nil
			}, apify.ConsumeOptions{ClientKey: "alive", KeepAlive: true})
			done <- result{stats, err}
		}()
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("Consume returned on an empty queue with KeepAlive: %v", r.err)
		default:
		}
		polls := srv.Calls(apifytest.OpListAndLockHead)
		assert.Less(t, polls, 3600+10, "an idle consumer polls every 1 to 2 s")
		assert.Greater(t, polls, 3600/2-10)
		srv.AddRequests(q.ID(), apifytest.Request{URL: "https://shop.test/late"})
		assert.Equal(t, "https://shop.test/late", <-handled)
		cancel()
		r := <-done
		require.ErrorIs(t, r.err, context.Canceled)
		assert.Equal(t, 1, r.stats.Handled)
	})
}

// A queue that becomes unusable mid-run (the token revoked) stops Consume
// with that error, and it still releases what it holds.
func TestConsumeStopsWhenTheQueueBecomesUnusable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 30)
		srv.FailNext(apifytest.OpGetRequest, 1, apifytest.Fault{Status: 401, Type: "invalid-token"})
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil }, apify.ConsumeOptions{ClientKey: "revoked", Concurrency: 1})
		require.ErrorIs(t, err, apify.ErrUnauthorized)
		assert.Zero(t, stats.Handled)
		assert.Equal(t, 1, stats.ReleasedAtExit, "the locked request went back at exit")
		assert.Empty(t, srv.Locked(q.ID()))
		assert.Len(t, srv.Pending(q.ID()), 30)
	})
}

// A handler that leaves the request in a state the API refuses (400) does
// not stop the consumer: the result is recorded on the request as read.
func TestConsumeRecordsOnTheRequestAsReadWhenTheAPIRefusesTheHandlersChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 3)
		stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
			if req.ID == ids[1] {
				req.Method = "TELEPORT" // the API refuses this method with 400
				req.UserData = json.RawMessage(`{"x":1}`)
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "sloppy"})
		require.NoError(t, err, "a refused update is not a reason to stop")
		assert.Equal(t, 3, stats.Handled)
		assert.Len(t, srv.Handled(q.ID()), 3)
		got, err := q.GetRequest(context.Background(), ids[1])
		require.NoError(t, err)
		assert.Equal(t, "GET", got.Method)
		assert.Empty(t, got.UserData)
	})
}

// A handler that makes the request too large to store (the API answers 413)
// does not stop the consumer either: that one result is recorded on the
// request as read, and the other requests go on.
func TestConsumeRecordsOnTheRequestAsReadWhenItIsTooLarge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, ids := memQueue(t, 3)
		huge, _ := json.Marshal(map[string]string{"page": strings.Repeat("x", 10<<20)})
		stats, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
			if req.ID == ids[0] {
				req.UserData = huge
			}
			return nil
		}, apify.ConsumeOptions{ClientKey: "hoarder"})
		require.NoError(t, err, "one request too large is not an unusable queue")
		assert.Equal(t, 3, stats.Handled)
		assert.Len(t, srv.Handled(q.ID()), 3)
		got, err := q.GetRequest(context.Background(), ids[0])
		require.NoError(t, err)
		assert.Empty(t, got.UserData)
	})
}

// A result that cannot be written keeps its request locked (renewed past
// its first lock) while Consume retries, and the shutdown releases it:
// never lost, never run twice.
func TestConsumeKeepsAnUnrecordableRequestLockedThenReleasesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 10 * time.Second
		srv, q, ids := memQueue(t, 1)
		srv.FailNext(apifytest.OpUpdateRequest, 100_000, apifytest.Fault{Status: 500})
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int32
		type result struct {
			stats *apify.ConsumeStats
			err   error
		}
		done := make(chan result, 1)
		go func() {
			stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { n.Add(1); return nil },
				apify.ConsumeOptions{ClientKey: "stubborn", LockDuration: lock, DrainTimeout: time.Second, ShutdownTimeout: 2 * time.Second})
			done <- result{stats, err}
		}()
		time.Sleep(5 * lock)
		synctest.Wait()
		st, _ := srv.Request(q.ID(), ids[0])
		require.NotNil(t, st.Lock, "still locked after 5 lock durations")
		assert.Equal(t, "stubborn", st.Lock.ClientKey)
		cancel()
		r := <-done
		require.ErrorIs(t, r.err, context.Canceled)
		assert.Equal(t, int32(1), n.Load(), "the handler ran once")
		assert.Zero(t, r.stats.Handled+r.stats.LocksLost)
		assert.Positive(t, r.stats.CallErrors)
		assert.GreaterOrEqual(t, r.stats.LocksRenewed, 6)
		assert.Equal(t, 1, r.stats.ReleasedAtExit)
		st, _ = srv.Request(q.ID(), ids[0])
		assert.Nil(t, st.Lock, "released at exit")
		assert.False(t, st.Handled())
		assert.Len(t, srv.Pending(q.ID()), 1)
	})
}

// A result written while its lock came due for renewal: the API records
// the update at once, but its answer comes late (Fault.ResponseDelay). The
// prolong is refused (the request is handled), and Consume waits for the
// update's answer without prolonging again and again meanwhile. With a 9 s
// delay the answer comes while the lease holds; with 15 s it would come
// after the lease's end (the lock's deadline less the margin, at 10.8 s),
// where Consume gives up on it and counts the request lost; the read that
// follows finds the result recorded after all, so it counts as handled, not
// as a lost lock.
func TestConsumeDoesNotProlongARecordedRequest(t *testing.T) {
	for _, delay := range []time.Duration{9 * time.Second, 15 * time.Second} {
		t.Run(delay.String(), func(t *testing.T) { testDoesNotProlongARecordedRequest(t, delay) })
	}
}

func testDoesNotProlongARecordedRequest(t *testing.T, delay time.Duration) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, _ := memQueue(t, 1)
		srv.InjectFault(apifytest.OpUpdateRequest, apifytest.Fault{ResponseDelay: delay})
		var logs logRecords
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
			time.Sleep(time.Second) // the update is sent at 1 s; the renewal is due at 8 s
			return nil
		}, apify.ConsumeOptions{ClientKey: "patient", LockDuration: lock, Logger: slog.New(&logs)})
		require.NoError(t, err)
		assert.Equal(t, 1, stats.Handled)
		assert.Zero(t, stats.LocksLost)
		assert.Equal(t, 1, srv.Calls(apifytest.OpProlongRequestLock), "one refused prolong, not a storm")
		assert.Equal(t, totalCalls(srv), stats.APICalls)
		// The refused prolong does not end the lease while the update is
		// in flight: with a 9 s delay its own answer decides, and the
		// request is read once (to run it); with 15 s the lease ends and
		// one more read finds the result recorded.
		if delay < lock-lock/10 {
			assert.Equal(t, 1, srv.Calls(apifytest.OpGetRequest))
			assert.Empty(t, logs.find("lost the lock"), "no lock declared lost and taken back")
		} else {
			assert.Equal(t, 2, srv.Calls(apifytest.OpGetRequest))
		}
	})
}

// Requests locked by a head/lock whose answer was lost (the server locked
// a batch the consumer never saw) are not left to expire: once Consume
// holds nothing else, it releases its own locks.
func TestConsumeReleasesLocksOfALostHeadLockAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 30)
		srv.FailNext(apifytest.OpListAndLockHead, 1, apifytest.Fault{DropResponse: true})
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil },
			apify.ConsumeOptions{ClientKey: "unlucky", LockDuration: time.Hour})
		require.NoError(t, err)
		assert.Equal(t, 30, stats.Handled)
		assert.Equal(t, 1, stats.CallErrors)
		assert.Less(t, time.Since(start), time.Minute, "not an hour: the stranded batch was released")
		assert.Equal(t, 3, srv.Calls(apifytest.OpUnlockRequests), "at start, for the stranded batch, at exit")
		assert.Equal(t, totalCalls(srv), stats.APICalls)
	})
}

// A failed release of the locks a lost head/lock answer took is counted
// like every failed call, and tried again.
func TestConsumeRetriesTheReleaseOfALostHeadLockAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 30)
		srv.FailNext(apifytest.OpListAndLockHead, 1, apifytest.Fault{DropResponse: true})
		// The start-up unlock goes through (its queued fault only holds it a
		// millisecond); the unlock after the lost answer then fails, all
		// its attempts.
		srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Delay: time.Millisecond})
		srv.FailNext(apifytest.OpUnlockRequests, apify.DefaultMaxRetries+1, apifytest.Fault{Status: 503})
		start := time.Now()
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil },
			apify.ConsumeOptions{ClientKey: "unlucky", LockDuration: time.Hour})
		require.NoError(t, err)
		assert.Equal(t, 30, stats.Handled)
		assert.Equal(t, 2, stats.CallErrors, "the lost head/lock answer, and the failed unlock")
		assert.Less(t, time.Since(start), time.Minute, "released at the next try")
	})
}

// Handlers get requests in queue order.
func TestConsumeFollowsQueueOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q, ids := memQueue(t, 60)
		var got []string
		_, err := q.Consume(context.Background(), func(_ context.Context, req *apify.Request) error {
			got = append(got, req.ID)
			return nil
		}, apify.ConsumeOptions{ClientKey: "orderly", Concurrency: 1})
		require.NoError(t, err)
		assert.Equal(t, ids, got)
	})
}

// A request the API marks noRetry fails at once, like an error wrapping
// ErrNoRetry; and the fields the queue owns (ID, retry count, handled time)
// are not the handler's to change.
func TestConsumeQueueOwnedFields(t *testing.T) {
	t.Run("noRetry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, q, _ := memQueue(t, 0)
			ctx := context.Background()
			added, err := q.AddRequest(ctx, apify.Request{URL: "https://shop.test/once", UniqueKey: "once", NoRetry: true}, apify.RequestOptions{})
			require.NoError(t, err)
			var n atomic.Int32
			stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error {
				n.Add(1)
				return errors.New("flaky")
			}, apify.ConsumeOptions{ClientKey: "once", MaxRetries: 5})
			require.NoError(t, err)
			assert.Equal(t, int32(1), n.Load(), "not retried")
			assert.Equal(t, 1, stats.Failed)
			assert.Zero(t, stats.Retried)
			st, _ := srv.Request(q.ID(), added.RequestID)
			assert.True(t, st.Handled())
		})
	})
	t.Run("the handler cannot change them", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stats, runs, req := consumeOne(t, apify.ConsumeOptions{ClientKey: "meddler", MaxRetries: 1}, func(run int, _ context.Context, req *apify.Request) error {
				req.RetryCount = 99
				req.HandledAt = time.Now()
				if run == 1 {
					return errors.New("try again")
				}
				return nil
			})
			assert.Equal(t, 2, runs, "a retry count of 99 did not make it give up")
			assert.Equal(t, 1, stats.Handled)
			assert.Equal(t, 1, req.RetryCount)
		})
	})
}

// A locked request whose GetRequest answers 404 (deleted meanwhile) is
// skipped; the queue is not unusable for that.
func TestConsumeSkipsARequestThatIsGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 5)
		srv.FailNext(apifytest.OpGetRequest, 1, apifytest.Fault{Status: 404, Type: "record-not-found"})
		var n atomic.Int32
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { n.Add(1); return nil },
			apify.ConsumeOptions{ClientKey: "skipper", LockDuration: 10 * time.Second})
		require.NoError(t, err)
		assert.Equal(t, 5, stats.Handled, "the skipped request came back when its lock ended, and ran")
		assert.Equal(t, int32(5), n.Load())
		assert.Len(t, srv.Handled(q.ID()), 5)
	})
}

// When head/lock finds nothing and no client holds a lock, Consume looks
// once more at once, and returns when that confirms it: two head/lock round
// trips after the last result, not a sleep. A request that shows up between
// the two looks is handled.
func TestConsumeFinishesWithAConfirmingHeadLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 50 * time.Millisecond
		srv, q, _ := memQueue(t, 1)
		srv.InjectFault(apifytest.OpListAndLockHead, apifytest.Fault{Delay: rtt}) // served after the delay
		var handlers atomic.Int32
		var lastReturn time.Time
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error {
			time.Sleep(time.Second)
			if handlers.Add(1) == 1 {
				// After the first empty look (served at +50 ms), before the
				// confirming one (served at +100 ms).
				time.AfterFunc(rtt+rtt/2, func() { srv.AddRequests(q.ID(), apifytest.Request{URL: "https://shop.test/late"}) })
			}
			lastReturn = time.Now()
			return nil
		}, apify.ConsumeOptions{ClientKey: "second-look"})
		require.NoError(t, err)
		assert.Equal(t, 2, stats.Handled, "the request added between the two looks was handled")
		assert.Equal(t, 2*rtt, time.Since(lastReturn), "an empty head/lock and its confirmation after the last handler, no sleep")
		assert.Len(t, srv.Handled(q.ID()), 2)
	})
}

// A lock's expiry is counted from when the head/lock was sent, so a slow
// answer does not make Consume renew too late: here every head/lock is
// served at once (the locks start then) and answered 6 s later.
func TestConsumeCountsLocksFromTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, _ := memQueue(t, 1)
		srv.InjectFault(apifytest.OpListAndLockHead, apifytest.Fault{ResponseDelay: 6 * time.Second})
		other := srv.Client().RequestQueue(q.ID())
		var stolen atomic.Int32
		stop := make(chan struct{})
		thiefDone := make(chan struct{})
		go func() {
			defer close(thiefDone)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				head, err := other.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: time.Hour, ClientKey: "thief"})
				if err == nil && len(head.Items) > 0 {
					stolen.Add(1)
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		stats, err := q.Consume(ctx, func(ctx context.Context, _ *apify.Request) error {
			select {
			case <-time.After(20 * time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "timely", Concurrency: 1, LockDuration: lock})
		close(stop)
		<-thiefDone
		require.NoError(t, err)
		assert.Zero(t, stolen.Load(), "the lock never lapsed")
		assert.Zero(t, stats.LocksLost)
		assert.Equal(t, 1, stats.Handled)
	})
}

// Cancelling ctx while a start-up unlock (ridden out with KeepAlive) or a
// head/lock is being retried ends Consume at once, holding nothing.
func TestConsumeCancelledWhileRetrying(t *testing.T) {
	for _, op := range []apifytest.Operation{apifytest.OpUnlockRequests, apifytest.OpListAndLockHead} {
		t.Run(string(op), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, _ := memQueue(t, 3)
				srv.FailNext(op, 1_000_000, apifytest.Fault{Status: 503})
				ctx, cancel := context.WithCancel(context.Background())
				var cancelled time.Time
				go func() {
					time.Sleep(5 * time.Second)
					cancelled = time.Now()
					cancel()
				}()
				var n atomic.Int32
				stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { n.Add(1); return nil }, apify.ConsumeOptions{ClientKey: "impatient", KeepAlive: op == apifytest.OpUnlockRequests})
				require.ErrorIs(t, err, context.Canceled)
				assert.Less(t, time.Since(cancelled), 100*time.Millisecond, "no backoff waited out")
				assert.Positive(t, stats.CallErrors)
				assert.Zero(t, n.Load())
				assert.Empty(t, srv.Locked(q.ID()))
				assert.Len(t, srv.Pending(q.ID()), 3)
			})
		})
	}
}

// A request fetched just as the shutdown began is not started: it goes back
// to the queue. Here the GetRequest's answer takes a second, and ctx is
// cancelled half-way.
func TestConsumeStartsNothingOnceShuttingDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		srv.InjectFault(apifytest.OpGetRequest, apifytest.Fault{ResponseDelay: time.Second})
		time.AfterFunc(500*time.Millisecond, cancel)
		var n atomic.Int32
		stats, err := q.Consume(ctx, func(context.Context, *apify.Request) error { n.Add(1); return nil }, apify.ConsumeOptions{ClientKey: "late"})
		require.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, n.Load(), "no handler started after the shutdown began")
		assert.Equal(t, 1, stats.ReleasedAtExit)
		assert.Empty(t, srv.Locked(q.ID()))
		assert.Len(t, srv.Pending(q.ID()), 1)
	})
}
