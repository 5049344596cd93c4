package apify_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two ways Consume broke the promise of a migrating event (every lock of
// its clientKey and run released, and Consume returned, before the time
// remaining runs out), found while measuring BenchmarkMigrating; each test
// failed before its fix.

// A restarted run finds locks its key left (the earlier process was
// killed), and migrating comes while the start-up unlock that would release
// them is still under way (a slow API): Consume must still release every
// lock of its key and run before the time remaining runs out. It returned
// at once with ErrMigrating and left the 10 locks (the start-up unlock was
// cancelled by the event, and the final unlock is never made on that path).
func TestConsumeMigratingDuringStartUpReleasesTheLocksOfAnEarlierRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEventCrawl(t, 100, time.Second)
		head, err := e.q.ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 10, LockDuration: time.Minute, ClientKey: apifytest.DefaultRunID})
		require.NoError(t, err)
		require.Len(t, head.Items, 10, "the earlier process's locks")
		e.srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Delay: 10 * time.Second}) // the start-up unlock is slow
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 4, Events: e.events})
			done <- err
		}()
		time.Sleep(time.Second)
		require.Equal(t, 1, e.srv.Calls(apifytest.OpUnlockRequests), "the start-up unlock under way")
		sent := time.Now()
		e.event(t, migratingEvent(2*time.Second))
		err = <-done
		returned := time.Since(sent)
		require.ErrorIs(t, err, apify.ErrMigrating)
		assert.Less(t, returned, 2*time.Second, "returned before the time remaining ran out")
		assert.Zero(t, len(e.srv.LockedBy(e.q.ID(), apifytest.DefaultRunID)), "locks of its clientKey left")
		assert.Zero(t, len(e.srv.LockedByRun(e.q.ID(), apifytest.DefaultRunID)), "locks of its run left")
		assert.Zero(t, e.srv.Calls(apifytest.OpListAndLockHead)-1, "no head/lock but the test's own")
	})
}

// persistState (isMigrating) comes with migrating, as the SDKs emit it,
// and OnPersistState is still saving when Consume has released every
// lock: Consume must return before the time remaining runs out, or the
// caller never gets to act on ErrMigrating before the kill. It waited for
// OnPersistState up to ShutdownTimeout (5 s) and returned after 6 s of a
// migrating with 2 s left (the locks were released in time).
func TestConsumeMigratingDuringOnPersistStateReturnsInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEventCrawl(t, 100, time.Second)
		saving := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 4, Events: e.events,
				OnPersistState: func(context.Context, bool) {
					close(saving)
					<-release // a save that takes longer than the time left
				}})
			done <- err
		}()
		<-e.started
		e.event(t, apify.PlatformEvent{Name: apify.PlatformEventPersistState, IsMigrating: true})
		<-saving
		sent := time.Now()
		e.event(t, migratingEvent(2*time.Second))
		released := e.lastLockReleased(t, 2*time.Second)
		err := <-done
		returned := time.Since(sent)
		close(release)
		require.ErrorIs(t, err, apify.ErrMigrating)
		assert.Less(t, released.Sub(sent), 2*time.Second, "every lock released in time")
		assert.Less(t, returned, 2*time.Second, "returned before the time remaining ran out")
	})
}
