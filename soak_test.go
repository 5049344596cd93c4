package apify_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// soakDuration is how long TestSoak runs: 1.5 s by default, 20 s with
// APIFY_SOAK=full, or as long as APIFY_SOAK says (APIFY_SOAK=5m).
func soakDuration(t *testing.T) time.Duration {
	_, d := apify.LongMode(t, 1500*time.Millisecond, 20*time.Second)
	return d
}

// TestSoak runs 32 goroutines that cycle lock, prolong, handle, give back
// and unlock against the emulator (1.5 s by default, 20 s in full; see
// soakDuration) while faults are injected into every operation. Afterwards no request is lost, no lock is left, and
// the heap and goroutine counts are back where they started.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 1.5 s to 20 s")
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	stats := soak(t, soakDuration(t))
	t.Logf("soak: %+v", stats)
	assert.Positive(t, stats.handled)
	assert.Positive(t, stats.faults)
	assert.Positive(t, stats.retriedOK, "injected faults were absorbed by retries")

	// Everything the soak made is garbage now: the heap and the goroutines
	// come back to where they were.
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

type soakStats struct {
	cycles, locked, handled, added, prolonged, givenBack, unlocked, unlockCalls, faults, retriedOK, failedCalls int64
}

func soak(t *testing.T, d time.Duration) soakStats {
	const (
		workers  = 32
		requests = 3000
	)
	srv := apifytest.NewServer()
	defer srv.Close()
	queueID := srv.CreateQueue("soak")
	seed := make([]apifytest.Request, requests)
	for i := range seed {
		seed[i] = apifytest.Request{URL: fmt.Sprintf("https://soak.test/%d", i)}
	}
	ids := srv.AddRequests(queueID, seed...)
	c := srv.Client(apify.WithMaxRetries(6))
	defer c.CloseIdleConnections()
	q := c.RequestQueue(queueID)
	headLock := "/v2/request-queues/" + queueID + "/head/lock"

	// Calls run to completion: a call cut off at the end could still be
	// served after the worker's final unlock, which would be the test's
	// doing, not the client's. The soak ends between cycles instead.
	ctx := context.Background()
	var stopped atomic.Bool
	time.AfterFunc(d, func() { stopped.Store(true) })
	var st soakStats
	var handledIDs, addedIDs, triedURLs sync.Map

	// The fault injector: every few milliseconds the next call of a random
	// operation fails with a 5xx, a 429 with Retry-After, or a dropped
	// connection. An operation gets its next fault only once two calls have
	// gone by since its last one was consumed: faults queue up, and on a
	// slow machine (-race, a loaded CI) those of a rarely called operation
	// would pile up until one call met more of them than it has attempts.
	ops := []apifytest.Operation{apifytest.OpListAndLockHead, apifytest.OpProlongRequestLock,
		apifytest.OpUpdateRequest, apifytest.OpDeleteRequestLock, apifytest.OpUnlockRequests, apifytest.OpGetRequest}
	faults := []apifytest.Fault{{Status: 503}, {Status: 500}, {Status: 429, RetryAfter: "0"}, {DropConnection: true}}
	var injector sync.WaitGroup
	injector.Add(1)
	go func() {
		defer injector.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		armed := map[apifytest.Operation]int{} // the op's calls when its last fault was injected
		for range tick.C {
			if stopped.Load() {
				return
			}
			op := ops[rand.IntN(len(ops))]
			if n, ok := armed[op]; ok && srv.Calls(op) < n+3 {
				continue // its last fault is pending, or was consumed less than two calls ago
			}
			armed[op] = srv.Calls(op)
			srv.FailNext(op, 1, faults[rand.IntN(len(faults))])
			atomic.AddInt64(&st.faults, 1)
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("soak-%d", w)
			count := func(err error, n *int64) {
				if err == nil {
					atomic.AddInt64(n, 1)
					return
				}
				atomic.AddInt64(&st.failedCalls, 1)
				var apiErr *apify.APIError
				if errors.As(err, &apiErr) && apiErr.Path == headLock && apiErr.Temporary() {
					return // head/lock is not retried after a 5xx: a lost answer could strand locks
				}
				var reqErr *apify.RequestError
				if errors.As(err, &reqErr) && reqErr.Path == headLock {
					return // nor after a dropped connection
				}
				t.Errorf("%s: unexpected failure: %v", key, err)
			}
			for !stopped.Load() {
				atomic.AddInt64(&st.cycles, 1)
				head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 4, LockDuration: time.Minute, ClientKey: key})
				if err != nil {
					count(err, nil)
					continue
				}
				atomic.AddInt64(&st.locked, int64(len(head.Items)))
				for i, it := range head.Items {
					switch i % 4 {
					case 0: // prolong, then handle
						_, err := q.ProlongRequestLock(ctx, it.ID, apify.ProlongLockOptions{LockDuration: time.Minute, ClientKey: key})
						count(err, &st.prolonged)
						fallthrough
					case 1: // handle
						req, err := q.GetRequest(ctx, it.ID)
						if err != nil {
							count(err, nil)
							continue
						}
						reg, err := q.MarkHandled(ctx, req.ID, apify.RequestOptions{ClientKey: key})
						if err == nil {
							if !reg.WasAlreadyHandled {
								handledIDs.Store(it.ID, key)
							}
						}
						count(err, &st.handled)
						// Handling a page discovers another one: the queue never runs dry.
						u := fmt.Sprintf("%s/next", req.URL)
						triedURLs.Store(u, true)
						added, err := q.AddRequest(ctx, apify.Request{URL: u, UniqueKey: u}, apify.RequestOptions{ClientKey: key})
						if err == nil {
							addedIDs.Store(added.RequestID, u)
						}
						count(err, &st.added)
					case 2: // give it back
						count(q.DeleteRequestLock(ctx, it.ID, apify.DeleteLockOptions{ClientKey: key}), &st.givenBack)
					case 3: // left for the unlock below
					}
				}
				atomic.AddInt64(&st.unlockCalls, 1)
				res, err := q.UnlockRequests(ctx, key)
				if err == nil {
					atomic.AddInt64(&st.unlocked, int64(res.UnlockedCount))
				} else {
					count(err, nil)
				}
			}
			// However the loop ended, release what this worker may still hold.
			atomic.AddInt64(&st.unlockCalls, 1)
			if _, err := q.UnlockAtShutdown(ctx, key, 10*time.Second); err != nil {
				t.Errorf("%s: final unlock: %v", key, err)
			}
		}()
	}
	wg.Wait()
	injector.Wait()
	// The emulator counted the attempts of every UnlockRequests call
	// (a cycle whose head/lock failed made none), so the difference is the
	// retries.
	st.retriedOK = int64(srv.Calls(apifytest.OpUnlockRequests)) - st.unlockCalls

	// No request lost, none left locked, and the handled ones are exactly
	// those some worker marked handled.
	all := srv.Requests(queueID)
	for i, id := range ids {
		addedIDs.Store(id, seed[i].URL)
		triedURLs.Store(seed[i].URL, true)
	}
	got := map[string]bool{}
	handled := 0
	for _, r := range all {
		got[r.ID] = true
		// An add whose answer was lost as the soak ended may be there
		// without the worker knowing; nothing else may.
		_, tried := triedURLs.Load(r.URL)
		assert.True(t, tried, "request %s (%s) made up", r.ID, r.URL)
		assert.Nil(t, r.Lock, "request %s is still locked by %+v", r.ID, r.Lock)
		if r.Handled() {
			handled++
			_, ok := handledIDs.Load(r.ID)
			assert.True(t, ok, "request %s handled but no worker says so", r.ID)
		}
	}
	addedIDs.Range(func(id, _ any) bool {
		assert.True(t, got[id.(string)], "request %s lost", id)
		return true
	})
	n := 0
	handledIDs.Range(func(_, _ any) bool { n++; return true })
	assert.Equal(t, n, handled)
	return st
}
