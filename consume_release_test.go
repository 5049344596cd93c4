package apify_test

import (
	"context"
	"errors"
	"fmt"
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

// A prefetched request that waited too long is released (DELETE lock,
// forefront), and the answer to that DELETE is lost: the client retries
// it. If the locker locks the request again under the same clientKey
// before the retry is served, the retry deletes the new lock: the request
// runs here with no lock, another client takes it and runs it too, and
// the handler's ctx stays live until its next renewal is refused. The
// promise is that a request never runs elsewhere while its handler here
// has a live ctx, unless the lock really lapsed.
//
// Found by TestSoak (a retry count recorded twice for one failed attempt).
// It fails on the Consume of 7dae330: keeper.add gives a request locked
// again a new lease as soon as the old lease is releasing, while the old
// lease's DELETE may still be retried.
//
// The timeline (Concurrency 2, a 12 s lock): six quick requests measure
// the handlers, after which the locker prefetches the rest. A holds a slot
// for 20 s, B the other until 5.2 s. R waits; at a third of its lock
// (4.3 s) Consume releases it: the DELETE is served and its answer lost,
// and the client's retry is held 3 s before it is served (7.3 s). At 5.2 s
// B's slot frees and the locker locks R again (it is at the head). From
// 7 s another client tries to lock a request every 500 ms.
func TestConsumeARetriedReleaseDoesNotDeleteANewLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second
		srv, q, ids := memQueue(t, 9)
		a, b, r := ids[6], ids[7], ids[8]
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{DropResponse: true, RequestID: r})
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{Delay: 3 * time.Second, RequestID: r})

		var mu sync.Mutex
		running := map[string]context.Context{} // request ID -> the ctx of its handler here
		var taken []string                      // what the other client took while a handler here had a live ctx on it
		stop := make(chan struct{})
		otherDone := make(chan struct{})
		other := srv.Client().RequestQueue(q.ID())
		go func() {
			defer close(otherDone)
			time.Sleep(7 * time.Second)
			for {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				head, err := other.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: time.Hour, ClientKey: "other"})
				if err != nil || len(head.Items) == 0 {
					continue
				}
				id := head.Items[0].ID
				mu.Lock()
				if ctx, ok := running[id]; ok && ctx.Err() == nil {
					taken = append(taken, id)
				}
				mu.Unlock()
				return
			}
		}()

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stats, _ := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
			mu.Lock()
			running[req.ID] = ctx
			mu.Unlock()
			defer func() {
				mu.Lock()
				delete(running, req.ID)
				mu.Unlock()
			}()
			d := 100 * time.Millisecond
			switch req.ID {
			case a, r:
				d = 20 * time.Second
			case b:
				d = 4900 * time.Millisecond
			}
			select {
			case <-time.After(d):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, apify.ConsumeOptions{ClientKey: "releaser", Concurrency: 2, LockDuration: lock, HandlerTimeout: time.Hour})
		close(stop)
		<-otherDone
		require.NotNil(t, stats)
		require.Equal(t, 2, srv.Faulted(apifytest.OpDeleteRequestLock), "the scenario: R's release lost its answer, and the retry was held")
		assert.Empty(t, taken, "another client took a request while its handler here had a live ctx")
		assert.Zero(t, stats.LocksLost, "no lock lapsed: the API answered every call")
	})
}

// A failed attempt's lock delete times out on the client, which retries
// it (204), but the API carries out the first attempt a while later (a
// call it had accepted): had the request been locked again at once and its
// handler started, that late delete would remove the new lock under a live
// handler, and another client could take the request. Consume waits the
// settle time (the margin) after such a delete before it runs a request
// it locked again, and checks the lock with a prolong: the late delete
// has landed by then, the prolong is refused, and the request is locked
// afresh (here once another client's lock on it has expired: it took the
// request when the late delete freed it). Every run's lock is held, by this
// consumer, while its handler runs.
func TestConsumeALateLockDeleteCannotRemoveANewLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = 12 * time.Second // margin and settle: 1.2 s
		srv, q, ids := memQueue(t, 1)
		q = srv.Client(apify.WithTimeout(500 * time.Millisecond)).RequestQueue(q.ID())
		srv.FailNext(apifytest.OpDeleteRequestLock, 1, apifytest.Fault{Delay: time.Second, ServeAfterCallerGone: true})
		var runs atomic.Int32
		var unlockedUnder []string
		var mu sync.Mutex
		held := func(when string) {
			st, _ := srv.Request(q.ID(), ids[0])
			if st.Lock == nil || st.Lock.ClientKey != "late" {
				mu.Lock()
				unlockedUnder = append(unlockedUnder, fmt.Sprintf("run %d, %s (at %v): lock %+v", runs.Load(), when, time.Now().Format("05.000"), st.Lock))
				mu.Unlock()
			}
		}
		// Another client looks for work just after the late delete lands.
		time.AfterFunc(1050*time.Millisecond, func() {
			_, _ = srv.Client().RequestQueue(q.ID()).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: lock, ClientKey: "other"})
		})
		stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
			if runs.Add(1) == 1 {
				return errors.New("try again")
			}
			held("at its start")
			time.Sleep(2 * time.Second)
			held("2 s in")
			return nil
		}, apify.ConsumeOptions{ClientKey: "late", LockDuration: lock})
		require.NoError(t, err)
		assert.Empty(t, unlockedUnder, "a handler ran without the lock")
		assert.Equal(t, 1, stats.Handled)
		assert.Equal(t, 1, stats.Retried)
		assert.Zero(t, stats.LocksLost)
		assert.Equal(t, 2, srv.Calls(apifytest.OpDeleteRequestLock), "the delete the client gave up on, and its retry")
		assert.Positive(t, srv.Calls(apifytest.OpProlongRequestLock), "the lock taken again was checked")
	})
}
