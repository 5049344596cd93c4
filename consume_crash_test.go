package apify_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// killableTransport serves a client in memory until it is killed; from then
// on every call fails as if the process were gone (nothing reaches the
// server: no prolong, no result, no unlock at exit). A process's death is
// not something the API does, so it is not an emulator fault: the test
// kills the client's side.
type killableTransport struct {
	h      http.Handler
	killed atomic.Bool
}

func (k *killableTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if k.killed.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	return serveInMemory(k.h, r)
}

// serveInMemory serves r with h, without sockets, as the in-memory Client
// of apifytest does: a handler that drops the connection (an injected
// fault) gives io.ErrUnexpectedEOF.
func serveInMemory(h http.Handler, r *http.Request) (resp *http.Response, err error) {
	rec := httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			resp, err = nil, io.ErrUnexpectedEOF
		}
	}()
	h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp = rec.Result()
	resp.Request = r
	return resp, nil
}

// A crash: three consumers share a queue; one is killed mid-run (its
// handlers stop, and nothing it would send reaches the server). The other
// two finish the queue once the dead one's locks expire. No request is
// lost, and a request runs twice only when the dead consumer had started
// it and its lock then really lapsed.
func TestConsumeSurvivesAKilledConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n    = 150
			lock = 30 * time.Second
		)
		srv, q, ids := memQueue(t, n)
		start := time.Now()
		type run struct {
			who   string
			start time.Time
		}
		var (
			mu       sync.Mutex
			runsByID = map[string][]run{}
		)
		dead := &killableTransport{h: srv.Handler()}
		killed := make(chan struct{})
		deadCtx, killDead := context.WithCancel(context.Background())

		consume := func(who string, ctx context.Context, q *apify.RequestQueueClient, stop <-chan struct{}) (*apify.ConsumeStats, error) {
			return q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
				mu.Lock()
				runsByID[req.ID] = append(runsByID[req.ID], run{who, time.Now()})
				mu.Unlock()
				select {
				case <-time.After(3 * time.Second):
					return nil
				case <-stop: // killed: the work stops where it is
					return fmt.Errorf("%s died", who)
				}
			}, apify.ConsumeOptions{ClientKey: who, Concurrency: 4, Prefetch: 4, LockDuration: lock})
		}

		type result struct {
			who   string
			stats *apify.ConsumeStats
			err   error
		}
		results := make(chan result, 3)
		deadQ := srv.Client(apify.WithHTTPClient(&http.Client{Transport: dead})).RequestQueue(q.ID())
		go func() {
			stats, err := consume("dead", deadCtx, deadQ, killed)
			results <- result{"dead", stats, err}
		}()
		for _, who := range []string{"alive-1", "alive-2"} {
			go func() {
				stats, err := consume(who, context.Background(), srv.Client().RequestQueue(q.ID()), nil)
				results <- result{who, stats, err}
			}()
		}

		time.Sleep(10 * time.Second)
		synctest.Wait()
		heldByDead := map[string]time.Time{}
		for _, st := range srv.LockedBy(q.ID(), "dead") {
			heldByDead[st.ID] = st.Lock.ExpiresAt
		}
		require.NotEmpty(t, heldByDead)
		dead.killed.Store(true)
		close(killed)
		killDead()

		got := map[string]result{}
		for range 3 {
			r := <-results
			got[r.who] = r
		}
		require.ErrorIs(t, got["dead"].err, context.Canceled)
		assert.Zero(t, got["dead"].stats.ReleasedAtExit, "the dead consumer released nothing")
		for _, who := range []string{"alive-1", "alive-2"} {
			require.NoError(t, got[who].err, who)
			assert.Zero(t, got[who].stats.LocksLost, who)
		}
		assert.Equal(t, n, got["alive-1"].stats.Handled+got["alive-2"].stats.Handled+got["dead"].stats.Handled)

		// No request lost: every one is handled, none locked.
		assert.Len(t, srv.Handled(q.ID()), n)
		assert.Empty(t, srv.Locked(q.ID()))

		twice := 0
		for _, id := range ids {
			rs := runsByID[id]
			require.NotEmpty(t, rs, "request %s never ran", id)
			alive := 0
			for _, r := range rs {
				if r.who != "dead" {
					alive++
				}
			}
			assert.LessOrEqual(t, alive, 1, "the living ran %s at most once", id)
			if len(rs) == 1 {
				continue
			}
			// Run twice: first by the dead consumer, then by a living one
			// only after the dead one's lock really expired.
			twice++
			require.Len(t, rs, 2, id)
			assert.Equal(t, "dead", rs[0].who, id)
			expiry, held := heldByDead[id]
			require.True(t, held, "%s was held by the dead consumer when it died", id)
			assert.False(t, rs[1].start.Before(expiry), "%s ran again at %v, before the dead lock expired at %v", id, rs[1].start, expiry)
		}
		assert.Positive(t, twice, "the dead consumer died with handlers running")
		assert.LessOrEqual(t, twice, 4, "at most its Concurrency")
		// 150 requests of 3 s on 8 living handlers is about 57 s of work.
		assert.Less(t, time.Since(start), 65*time.Second, "the living did not wait longer than the dead locks")
		t.Logf("killed with %d locks held; %d requests ran twice", len(heldByDead), twice)
	})
}
