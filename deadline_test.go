package apify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowAPI is a fakeAPI whose every attempt takes d: the request is recorded
// when it arrives and answered d later, or not at all when the attempt's
// context ends first (handlerTransport then returns the context's error, as
// net/http does for an attempt cut off mid-flight).
type slowAPI struct {
	*fakeAPI
	d time.Duration
}

func (s slowAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.fakeAPI.ServeHTTP(w, r) // into handlerTransport's recorder: nothing is sent yet
	t := time.NewTimer(s.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// TestDeadlineErrorShapeWithSlowAttempts replays the same failing call,
// each attempt taking 300 ms, under 200 seeds of the backoff jitter. With
// slow attempts the deadline lands sometimes inside an attempt, sometimes
// where a wait would start; the error is the same either way: a
// *RequestError wrapping context.DeadlineExceeded and the last response's
// *APIError, whose Attempts both count every attempt started, the one the
// deadline cut off included.
func TestDeadlineErrorShapeWithSlowAttempts(t *testing.T) {
	const attempt = 300 * time.Millisecond
	tests := []struct {
		name     string
		replies  []reply
		opts     []Option
		timeout  time.Duration
		status   int
		attempts []int // the attempt counts the seeds must produce between them
	}{
		{"503s, default waits, a 1.5s deadline", statuses(503), nil, 1500 * time.Millisecond, 503, []int{2}},
		{"503s, waits 1s to 10s, a 1.5s deadline", statuses(503), []Option{WithRetryWait(time.Second, 10*time.Second)},
			1500 * time.Millisecond, 503, []int{1, 2}},
		{"429s, 10 retries of 100ms to 1s, a 2s deadline", statuses(429), []Option{WithRetryWait(100*time.Millisecond, time.Second), WithMaxRetries(10)},
			2 * time.Second, 429, []int{3, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[int]int{}      // attempts -> seeds
			landed := map[string]int{} // where the deadline landed -> seeds
			for seed := range uint64(200) {
				synctest.Test(t, func(t *testing.T) {
					s := &fakeAPI{replies: tt.replies}
					c := memClient(t, slowAPI{s, attempt}, tt.opts...)
					c.randN = rand.New(rand.NewPCG(seed, 9)).Int64N
					ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
					defer cancel()
					start := time.Now()
					_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
					elapsed := time.Since(start)

					reqs := s.requests()
					n := len(reqs)
					seen[n]++
					lastStart := reqs[n-1].At.Sub(start)
					if lastStart+attempt > tt.timeout {
						landed["inside an attempt"]++
						assert.Equal(t, tt.timeout, elapsed, "seed %d: the attempt ran until the deadline", seed)
					} else {
						landed["before a wait"]++
						assert.Equal(t, lastStart+attempt, elapsed, "seed %d: no sleep into the deadline", seed)
					}

					require.ErrorIs(t, err, context.DeadlineExceeded, "seed %d", seed)
					var reqErr *RequestError
					require.ErrorAs(t, err, &reqErr, "seed %d", seed)
					assert.Equal(t, context.DeadlineExceeded, reqErr.Err, "seed %d", seed)
					assert.Equal(t, n, reqErr.Attempts, "seed %d: every attempt started", seed)
					var apiErr *APIError
					require.ErrorAs(t, err, &apiErr, "seed %d: the last response is kept", seed)
					assert.Same(t, reqErr.Last, apiErr, "seed %d", seed)
					assert.Equal(t, tt.status, apiErr.StatusCode, "seed %d", seed)
					assert.Equal(t, fmt.Sprintf("t%d", tt.status), apiErr.Type, "seed %d", seed)
					assert.Equal(t, n, apiErr.Attempts, "seed %d: the same count as the RequestError's", seed)
					sentinel := ErrServerError
					if tt.status == http.StatusTooManyRequests {
						sentinel = ErrRateLimited
					}
					assert.ErrorIs(t, err, sentinel, "seed %d", seed)
					want := fmt.Sprintf("last response %d t%d)", tt.status, tt.status)
					if n > 1 {
						want = fmt.Sprintf("after %d attempts; ", n) + want
					}
					assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded ("+want, err.Error(), "seed %d", seed)
				})
			}
			t.Logf("attempts -> seeds: %v; deadline -> seeds: %v", seen, landed)
			for _, n := range tt.attempts {
				assert.Positive(t, seen[n], "some seed made %d attempts: the jitter did vary", n)
			}
			assert.Positive(t, landed["inside an attempt"], "some seed's deadline landed inside an attempt")
			assert.Positive(t, landed["before a wait"], "some seed's deadline landed before a wait")
		})
	}

	t.Run("a network failure is kept across the attempt the deadline cuts off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls int
			c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
				calls++
				timer := time.NewTimer(attempt)
				defer timer.Stop()
				select {
				case <-timer.C:
					return nil, netErr("read", syscall.ECONNRESET)
				case <-r.Context().Done():
					return nil, r.Context().Err()
				}
			}))
			c.randN = func(int64) int64 { return 0 } // waits of 500ms: the second attempt starts at 800ms
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, time.Second, time.Since(start))
			assert.Equal(t, 2, calls)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, syscall.ECONNRESET, "the failure retried is not lost")
			var apiErr *APIError
			assert.False(t, errors.As(err, &apiErr))
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, 2, reqErr.Attempts)
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded "+
				"(after 2 attempts; last error: read tcp: read: connection reset by peer)", err.Error())
		})
	})

	t.Run("the first attempt outlasts the deadline: nothing to report but the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: statuses(503)}
			c := memClient(t, slowAPI{s, 2 * time.Second})
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			assert.Equal(t, 1500*time.Millisecond, time.Since(start))
			assert.Equal(t, 1, s.hits())
			require.ErrorIs(t, err, context.DeadlineExceeded)
			var reqErr *RequestError
			require.ErrorAs(t, err, &reqErr)
			assert.Equal(t, 1, reqErr.Attempts)
			assert.Nil(t, reqErr.Last, "the 503 was never received")
			var apiErr *APIError
			assert.False(t, errors.As(err, &apiErr))
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context deadline exceeded", err.Error())
		})
	})

	t.Run("cancelled inside an attempt: the same shape with context.Canceled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeAPI{replies: statuses(502)}
			c := memClient(t, slowAPI{s, attempt})
			c.randN = func(int64) int64 { return 0 } // a 500ms wait: the second attempt runs from 800ms
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			time.AfterFunc(time.Second, cancel)
			_, err := c.RequestQueue("q").UnlockRequests(ctx, "k")
			require.ErrorIs(t, err, context.Canceled)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 502, apiErr.StatusCode)
			assert.Equal(t, 2, apiErr.Attempts)
			assert.Equal(t, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/unlock: context canceled (after 2 attempts; last response 502 t502)", err.Error())
		})
	})
}
