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

// Consume's shutdown plan for a platform event, to the millisecond, in a
// testing/synctest bubble: the events come from an in-memory subscription
// (apify.NewMemoryPlatformEvents, test-only), not a WebSocket, which cannot
// live in a bubble.

// memEvents returns an in-memory subscription, closed when the test ends.
// Call it inside the bubble.
func memEvents(t *testing.T) (*apify.PlatformEvents, func(apify.PlatformEvent)) {
	t.Helper()
	events, send := apify.NewMemoryPlatformEvents()
	t.Cleanup(func() { _ = events.Close() })
	return events, send
}

// A platform event with a budget, one handler that heeds its ctx and one
// that ignores it, and a final unlock that hangs. With 10 s left (migrating)
// the shutdown must be over at 9 s (a tenth is the safety margin); the
// unlock gets a fifth of that, 1.8 s, a cancelled handler a tenth, 0.9 s;
// so the running handlers are cancelled at 6.3 s, the one that ignores its
// ctx is abandoned at 7.2 s, and the unlock, cut 100 ms before the kill,
// gives up at 9.9 s, when Consume returns. Aborting leaves 30 s, less 2 s:
// the unlock gets 5 s (ShutdownTimeout), a cancelled handler 2.5 s (half of
// it), and the drain the rest, 20.5 s, here where DrainTimeout is a minute;
// the unlock then gives up after its 5 s, at 28 s.
//
// Catches: the unlock's share a half, not a fifth (cancelled at 3.6 s);
// the cancelled handlers' grace not shortened by the event (4.7 s); the
// final unlock bounded by ShutdownTimeout, not the time left (Consume
// returns at 12.2 s, after the kill); an aborting budget of 150 s (the
// drain runs its full minute).
func TestConsumePlatformEventShutdownPlan(t *testing.T) {
	for _, tc := range []struct {
		event     apify.PlatformEvent
		is        error
		cancelled time.Duration // when the heeding handler's ctx ends
		returned  time.Duration // when Consume returns
	}{
		{apify.PlatformEvent{Name: apify.PlatformEventMigrating, TimeRemaining: 10 * time.Second}, apify.ErrMigrating, 6300 * time.Millisecond, 9900 * time.Millisecond},
		{apify.PlatformEvent{Name: apify.PlatformEventAborting}, apify.ErrAborting, 20500 * time.Millisecond, 28 * time.Second},
	} {
		t.Run(tc.event.Name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, q, ids := memQueue(t, 2)
				events, send := memEvents(t)
				heeds := ids[0]
				started := make(chan struct{}, 2)
				sent := make(chan time.Time, 1)
				go func() {
					<-started
					<-started
					srv.InjectFault(apifytest.OpUnlockRequests, apifytest.Fault{Hang: true}) // the final unlock
					sent <- time.Now()
					send(tc.event)
				}()
				var cancelled time.Time
				var cause error
				ignored := make(chan struct{})
				stats, err := q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
					started <- struct{}{}
					if req.ID != heeds {
						defer close(ignored)
						time.Sleep(time.Hour) // ignores its ctx
						return nil
					}
					<-ctx.Done()
					cancelled, cause = time.Now(), context.Cause(ctx)
					return ctx.Err()
				}, apify.ConsumeOptions{ClientKey: "planned", Concurrency: 2, Events: events, DrainTimeout: time.Minute, HandlerTimeout: 2 * time.Hour})
				at := <-sent
				returned := time.Since(at)
				require.ErrorIs(t, err, tc.is)
				assert.Equal(t, tc.event.Name, stats.StoppedBy)
				assert.Equal(t, tc.cancelled, cancelled.Sub(at), "the drain's end")
				assert.ErrorIs(t, cause, apify.ErrShuttingDown)
				assert.ErrorIs(t, cause, tc.is)
				assert.Equal(t, 1, stats.Abandoned)
				assert.Equal(t, tc.returned, returned, "the final unlock cut short before the kill")
				assert.Zero(t, stats.Retried+stats.Failed, "an interrupted run is not a failed attempt")
				<-ignored
			})
		})
	}
}

// An event that comes once the queue is done, while the final unlock is
// under way, changes nothing: the crawl is over, Consume returns nil (so
// the caller exits 0 and the run ends SUCCEEDED, as it should).
//
// Catches: a late event turning a finished crawl into ErrMigrating.
func TestConsumeAnEventAfterTheQueueIsDoneChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, q, _ := memQueue(t, 3)
		events, send := memEvents(t)
		srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Delay: time.Millisecond}) // the start-up unlock
		srv.FailNext(apifytest.OpUnlockRequests, 1, apifytest.Fault{Delay: 2 * time.Second})  // the final one
		go func() {
			for srv.Calls(apifytest.OpUnlockRequests) < 2 {
				time.Sleep(10 * time.Millisecond)
			}
			send(apify.PlatformEvent{Name: apify.PlatformEventMigrating, TimeRemaining: 5 * time.Second})
		}()
		stats, err := q.Consume(context.Background(), func(context.Context, *apify.Request) error { return nil },
			apify.ConsumeOptions{ClientKey: "finished", Events: events})
		require.NoError(t, err)
		assert.Empty(t, stats.StoppedBy)
		assert.Equal(t, 3, stats.Handled)
	})
}
