package apify_test

import (
	"context"
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

// Under the emulator's model of Apify's rate limits (400 calls/s of request
// CRUD, 40 of head/lock, 60 of the rest, per queue), four consumers sharing
// a queue slow down on 429 and Retry-After: no request is failed, retried
// or given up because of a 429, and together they get close to the ceiling
// the limits allow (400 CRUD calls/s / 2 calls per request = 200 handled/s,
// plus the first second's burst: see rateCeiling).
func TestConsumeUnderRateLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, consumers = 2000, 4
		srv, q, ids := memQueue(t, n, apifytest.WithRateLimits(apifytest.DefaultRateLimits))
		// The client's own retry waits, as in production: Retry-After is honoured.
		client := srv.Client(apify.WithRetryWait(apify.DefaultRetryWaitMin, apify.DefaultRetryWaitMax))
		start := time.Now()
		var last atomic.Int64
		var wg sync.WaitGroup
		stats := make([]*apify.ConsumeStats, consumers)
		for i := range consumers {
			wg.Go(func() {
				s, err := client.RequestQueue(q.ID()).Consume(context.Background(), func(context.Context, *apify.Request) error {
					last.Store(int64(time.Since(start)))
					return nil
				},
					apify.ConsumeOptions{ClientKey: "c" + string(rune('0'+i)), Concurrency: 16})
				assert.NoError(t, err)
				stats[i] = s
			})
		}
		wg.Wait()
		elapsed := time.Duration(last.Load()) // to the last handler's return

		var total apify.ConsumeStats
		for _, s := range stats {
			total.Handled += s.Handled
			total.Failed += s.Failed
			total.Retried += s.Retried
			total.LocksLost += s.LocksLost
			total.CallErrors += s.CallErrors
		}
		limited := 0
		for _, op := range apifytest.Operations() {
			limited += srv.RateLimited(op)
		}
		rate := float64(n) / elapsed.Seconds()
		ofCeiling := float64(n) / rateCeiling(elapsed.Seconds())
		t.Logf("%d requests in %v: %.0f handled/s, %.2f of what the limits allow; %d calls refused with 429, %d calls failed after the client's retries",
			n, elapsed, rate, ofCeiling, limited, total.CallErrors)
		require.Positive(t, limited, "the limits were reached: the test means something")
		assert.Equal(t, n, total.Handled)
		assert.Zero(t, total.Failed+total.Retried+total.LocksLost, "no request failed because of a 429")
		assert.Len(t, srv.Handled(q.ID()), n)
		for _, id := range ids[:50] {
			st, _ := srv.Request(q.ID(), id)
			assert.Zero(t, st.RetryCount)
		}
		assert.Greater(t, ofCeiling, 0.8, "close to the ceiling")
		assert.LessOrEqual(t, ofCeiling, 1.01, "the model allows no more")
	})
}
