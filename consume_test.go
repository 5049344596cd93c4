package apify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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
				require.NoError(t, json.Unmarshal(req.UserData, &ud))
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
// it handled, and a share of head/lock, with no prolong at all.
func TestConsumeCallsPerRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		srv, q, _ := memQueue(t, n)
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			time.Sleep(2 * time.Second)
			return nil
		}, apify.ConsumeOptions{ClientKey: "economy", Concurrency: 16, LockDuration: time.Minute})
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

// rewriteProlongKey is a transport that sends every prolong under another
// clientKey, the bug TestCrawlerProlongsLongWork could not see.
type rewriteProlongKey struct{ h http.Handler }

func (t rewriteProlongKey) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/lock") {
		r = r.Clone(r.Context())
		qs := r.URL.Query()
		qs.Set("clientKey", "somebody-else")
		r.URL.RawQuery = qs.Encode()
	}
	return serveInMemory(t.h, r)
}

// serveInMemory serves r with h, without sockets.
func serveInMemory(h http.Handler, r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// A handler that runs 5x the lock keeps its lock the whole time: another
// client never gets the request, the handler's ctx never ends, and the
// request is handled once. The same run with prolongs sent under a wrong
// clientKey must lose the lock: that is what makes this test able to fail.
func TestConsumeLongHandlerKeepsItsLock(t *testing.T) {
	const lock = 10 * time.Second
	for _, broken := range []bool{false, true} {
		t.Run(fmt.Sprintf("prolongUnderWrongKey=%v", broken), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, ids := memQueue(t, 1)
				if broken {
					c := srv.Client(apify.WithHTTPClient(&http.Client{Transport: rewriteProlongKey{srv.Handler()}}))
					q = c.RequestQueue(q.ID())
				}
				other := srv.Client().RequestQueue(q.ID())
				var (
					runsN    atomic.Int32
					stolen   atomic.Int32
					cause    atomic.Value
					checking = make(chan struct{})
				)
				go func() { // another client tries to take the request every second
					defer close(checking)
					for range 60 {
						time.Sleep(time.Second)
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
