package apify_test

import (
	"context"
	"fmt"
	"log/slog"
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

// Consume and the platform's events. Most tests run inside a
// testing/synctest bubble, to the millisecond, with the events delivered in
// memory (newMemEventCrawl); a WebSocket cannot live in a bubble, so those
// about the connection (a reconnect, a 1008, subscribing by itself) run in
// real time over loopback, where the emulator serves the run's events.

// eventCrawl is a crawl of n requests by the Actor run apifytest.DefaultRunID
// (its token, its run ID as the clientKey, as DefaultClientKey would be in
// the run), whose handlers take work unless their ctx ends first.
type eventCrawl struct {
	srv  *apifytest.Server
	q    *apify.RequestQueueClient
	ids  []string
	work time.Duration
	// events and send, in memory (newMemEventCrawl); nil over a WebSocket.
	events *apify.PlatformEvents
	send   func(apify.PlatformEvent)

	mu        sync.Mutex
	runs      map[string]int
	completed map[string]int // handlers that ran to the end
	cancelled map[string]int // handlers whose ctx ended first
	started   chan struct{}  // closed when the first handler starts
	startOnce sync.Once
}

func newEventCrawl(t *testing.T, n int, work time.Duration) *eventCrawl {
	t.Helper()
	srv := apifytest.Start(t, apifytest.WithPlatformEvents(), apifytest.WithRunToken("run-token", apifytest.DefaultRunID))
	queueID := srv.CreateQueue("migrating")
	reqs := make([]apifytest.Request, n)
	for i := range reqs {
		reqs[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/p/%d", i)}
	}
	c := srv.Client()
	t.Cleanup(c.CloseIdleConnections)
	return &eventCrawl{
		srv: srv, q: c.RequestQueue(queueID), ids: srv.AddRequests(queueID, reqs...), work: work,
		runs: map[string]int{}, completed: map[string]int{}, cancelled: map[string]int{}, started: make(chan struct{}),
	}
}

// newMemEventCrawl is newEventCrawl in memory, for a testing/synctest
// bubble: the emulator is served in memory, and e.events delivers what
// e.event sends.
func newMemEventCrawl(t *testing.T, n int, work time.Duration) *eventCrawl {
	t.Helper()
	srv, q, ids := memQueue(t, n, apifytest.WithRunToken("run-token", apifytest.DefaultRunID))
	events, send := memEvents(t)
	return &eventCrawl{
		srv: srv, q: q, ids: ids, work: work, events: events, send: send,
		runs: map[string]int{}, completed: map[string]int{}, cancelled: map[string]int{}, started: make(chan struct{}),
	}
}

// event sends a platform event to the run: in memory, or over the
// emulator's WebSocket.
func (e *eventCrawl) event(t *testing.T, ev apify.PlatformEvent) {
	t.Helper()
	if e.send != nil {
		e.send(ev)
		return
	}
	var data any
	switch ev.Name {
	case apify.PlatformEventMigrating:
		data = map[string]any{"timeRemainingSecs": ev.TimeRemaining.Seconds()}
	case apify.PlatformEventPersistState:
		data = map[string]any{"isMigrating": ev.IsMigrating}
	}
	require.NoError(t, e.srv.SendEvent(ev.Name, data))
}

func migratingEvent(left time.Duration) apify.PlatformEvent {
	return apify.PlatformEvent{Name: apify.PlatformEventMigrating, TimeRemaining: left}
}

func (e *eventCrawl) handler(ctx context.Context, req *apify.Request) error {
	e.startOnce.Do(func() { close(e.started) })
	e.mu.Lock()
	e.runs[req.ID]++
	work := e.work
	e.mu.Unlock()
	select {
	case <-time.After(work):
		e.mu.Lock()
		e.completed[req.ID]++
		e.mu.Unlock()
		return nil
	case <-ctx.Done():
		e.mu.Lock()
		e.cancelled[req.ID]++
		e.mu.Unlock()
		return ctx.Err()
	}
}

// subscribe returns a subscription of the test's own to the run's events.
func (e *eventCrawl) subscribe(t *testing.T) *apify.PlatformEvents {
	t.Helper()
	events, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: e.srv.EventsURL()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = events.Close() })
	require.Eventually(t, func() bool { return e.srv.EventConnections() == 1 }, 5*time.Second, time.Millisecond)
	return events
}

// lastLockReleased waits until no lock is left on the queue and returns when
// that happened.
func (e *eventCrawl) lastLockReleased(t *testing.T, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(e.srv.Locked(e.q.ID())) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d locks still held %v later", len(e.srv.Locked(e.q.ID())), within)
			return time.Now()
		}
		time.Sleep(time.Millisecond)
	}
	return time.Now()
}

// finish runs the restarted run (same run, same clientKey) with short
// handlers, and checks that nothing was lost and nothing ran twice but the
// requests whose handlers were cancelled mid-run.
func (e *eventCrawl) finish(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	e.work = time.Millisecond
	e.mu.Unlock()
	stats, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 64, IgnorePlatformEvents: true})
	require.NoError(t, err)
	assert.Zero(t, stats.RecoveredAtStart, "the stopped run had left no lock to recover")
	assert.Len(t, e.srv.Handled(e.q.ID()), len(e.ids), "nothing lost")
	assert.Empty(t, e.srv.Locked(e.q.ID()))
	e.mu.Lock()
	defer e.mu.Unlock()
	twice := 0
	for _, id := range e.ids {
		assert.Equal(t, 1, e.completed[id], "request %s completed once", id)
		switch e.runs[id] {
		case 1:
		case 2:
			twice++
			assert.Equal(t, 1, e.cancelled[id], "request %s ran twice: only after a cancelled run", id)
		default:
			t.Errorf("request %s ran %d times", id, e.runs[id])
		}
	}
	t.Logf("ran twice (cancelled mid-run by the stop, then again): %d of %d", twice, len(e.ids))
}

// A migrating event mid-crawl, with 5 s left: Consume stops, releases the
// prefetched requests at once, lets the running 2 s handlers finish,
// releases every lock of its key and run, and returns ErrMigrating well
// before the 5 s are out. The restarted run finishes the crawl. The same
// for aborting, and for SIGTERM (ctx), with shorter handlers.
func TestConsumeStopsForPlatformEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		work      time.Duration
		event     *apify.PlatformEvent // nil: SIGTERM (the ctx is cancelled)
		wantErr   error
		stoppedBy string
		within    time.Duration
	}{
		{"migrating", 2 * time.Second, &[]apify.PlatformEvent{migratingEvent(5 * time.Second)}[0], apify.ErrMigrating, "migrating", 5 * time.Second},
		{"aborting", 500 * time.Millisecond, &apify.PlatformEvent{Name: apify.PlatformEventAborting}, apify.ErrAborting, "aborting", 30 * time.Second},
		{"SIGTERM", 500 * time.Millisecond, nil, context.Canceled, "", apify.DefaultConsumeDrainTimeout + apify.DefaultShutdownTimeout*3/2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newMemEventCrawl(t, 500, tc.work)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				type result struct {
					stats *apify.ConsumeStats
					err   error
				}
				done := make(chan result, 1)
				go func() {
					stats, err := e.q.Consume(ctx, e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 16, Events: e.events})
					done <- result{stats, err}
				}()
				<-e.started
				// Mid-run: the first 16 handled, so Consume measured them and
				// prefetched more; the next 16 are halfway through.
				time.Sleep(tc.work * 3 / 2)
				require.Greater(t, len(e.srv.Locked(e.q.ID())), 16, "some prefetched")
				sent := time.Now()
				if tc.event != nil {
					e.event(t, *tc.event)
				} else {
					cancel()
				}
				time.Sleep(time.Millisecond)
				assert.LessOrEqual(t, len(e.srv.Locked(e.q.ID())), 16, "the prefetched requests released at once")
				released := e.lastLockReleased(t, tc.within)
				r := <-done
				returned := time.Since(sent)
				require.ErrorIs(t, r.err, tc.wantErr)
				assert.Equal(t, tc.stoppedBy, r.stats.StoppedBy)
				assert.Less(t, returned, tc.within, "returned before the platform's deadline")
				assert.Less(t, returned, tc.work, "the running handlers needed half their time more")
				assert.WithinDuration(t, sent.Add(tc.work/2), released, 2*time.Millisecond, "the last lock released as the running handlers ended")
				t.Logf("%s: last lock released %v after the event, Consume returned after %v; handled %d, released at exit %d",
					tc.name, released.Sub(sent), returned, r.stats.Handled, r.stats.ReleasedAtExit)
				assert.Empty(t, e.srv.LockedBy(e.q.ID(), apifytest.DefaultRunID), "no lock of its clientKey")
				assert.Empty(t, e.srv.LockedByRun(e.q.ID(), apifytest.DefaultRunID), "no lock of its run")
				assert.GreaterOrEqual(t, r.stats.Handled, 32, "the running handlers' results were recorded")
				assert.Positive(t, r.stats.ReleasedAtExit)
				e.finish(t)
			})
		})
	}
}

// With little time left, handlers that would outlast it are cancelled
// (cause ErrShuttingDown, wrapping ErrMigrating), so that every lock is
// released before the process is killed.
func TestConsumeMigratingCancelsWhatWouldOutlastIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEventCrawl(t, 100, time.Minute)
		var causes sync.Map
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(context.Background(), func(ctx context.Context, req *apify.Request) error {
				err := e.handler(ctx, req)
				causes.Store(req.ID, context.Cause(ctx))
				return err
			}, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 8, Events: e.events})
			done <- err
		}()
		<-e.started
		time.Sleep(100 * time.Millisecond)
		sent := time.Now()
		e.event(t, migratingEvent(1500*time.Millisecond))
		released := e.lastLockReleased(t, 1500*time.Millisecond)
		err := <-done
		require.ErrorIs(t, err, apify.ErrMigrating)
		assert.Less(t, time.Since(sent), 1500*time.Millisecond)
		assert.Less(t, released.Sub(sent), 1500*time.Millisecond)
		n := 0
		causes.Range(func(_, v any) bool {
			n++
			assert.ErrorIs(t, v.(error), apify.ErrShuttingDown)
			assert.ErrorIs(t, v.(error), apify.ErrMigrating)
			return true
		})
		assert.Equal(t, 8, n, "the 8 running handlers were cancelled")
		assert.Empty(t, e.srv.Locked(e.q.ID()))
		assert.Len(t, e.srv.Pending(e.q.ID()), 100, "all back in the queue, none spent a retry")
		for _, st := range e.srv.Pending(e.q.ID()) {
			assert.Zero(t, st.RetryCount)
		}
	})
}

// A migrating event during a SIGTERM drain shortens it to the event's budget.
func TestConsumeEventShortensAShutdownUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEventCrawl(t, 20, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(ctx, e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 4, Events: e.events, DrainTimeout: time.Minute})
			done <- err
		}()
		<-e.started
		cancel() // a drain of a minute begins
		time.Sleep(200 * time.Millisecond)
		sent := time.Now()
		e.event(t, migratingEvent(time.Second))
		err := <-done
		assert.Less(t, time.Since(sent), time.Second)
		require.ErrorIs(t, err, apify.ErrMigrating, "the event says more than the ctx")
		assert.Empty(t, e.srv.Locked(e.q.ID()))
	})
}

// The events connection drops and comes back: an event after the reconnect
// is still acted on, with the same promise as in
// TestConsumeStopsForPlatformEvents (here in real time, over a WebSocket):
// Consume returns before the time left is out, no lock of its key or run
// is left, and the restarted run finishes the crawl.
func TestConsumeActsOnEventsAfterAReconnect(t *testing.T) {
	apify.SetPlatformEventTimings(t, time.Millisecond, 10*time.Millisecond, time.Hour)
	e := newEventCrawl(t, 200, 500*time.Millisecond)
	events := e.subscribe(t)
	done := make(chan error, 1)
	go func() {
		_, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 4, Events: events})
		done <- err
	}()
	<-e.started
	require.Equal(t, 1, e.srv.DropEventConnections())
	require.Eventually(t, func() bool { return e.srv.EventConnections() == 1 && e.srv.EventConnectionAttempts() == 2 }, 5*time.Second, time.Millisecond)
	sent := time.Now()
	e.event(t, migratingEvent(5*time.Second))
	select {
	case err := <-done:
		require.ErrorIs(t, err, apify.ErrMigrating)
		assert.Less(t, time.Since(sent), 5*time.Second, "returned before the time left ran out")
	case <-time.After(5 * time.Second):
		t.Fatal("the event after the reconnect was not acted on within its time left")
	}
	assert.Empty(t, e.srv.LockedBy(e.q.ID(), apifytest.DefaultRunID), "no lock of its clientKey")
	assert.Empty(t, e.srv.LockedByRun(e.q.ID(), apifytest.DefaultRunID), "no lock of its run")
	e.finish(t)
}

// A close with code 1008 is permanent: the client does not dial again (one
// attempt in all), and Consume goes on without events to the end, nothing
// lost.
func TestConsumeAfterA1008Close(t *testing.T) {
	apify.SetPlatformEventTimings(t, time.Millisecond, 10*time.Millisecond, time.Hour)
	e := newEventCrawl(t, 20, 20*time.Millisecond)
	events := e.subscribe(t)
	done := make(chan error, 1)
	var stats *apify.ConsumeStats
	go func() {
		var err error
		stats, err = e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 2, Events: events})
		done <- err
	}()
	<-e.started
	require.Equal(t, 1, e.srv.CloseEventConnections(1008))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Consume did not finish the queue after the 1008 close")
	}
	assert.Equal(t, 20, stats.Handled)
	assert.Len(t, e.srv.Handled(e.q.ID()), 20, "nothing lost")
	assert.Empty(t, e.srv.Locked(e.q.ID()))
	assert.Equal(t, 1, e.srv.EventConnectionAttempts(), "no reconnect storm: no attempt after the 1008")
	assert.Error(t, events.Err())
}

// Inside an Actor run (the events variable set), Consume subscribes by
// itself when Events is nil; IgnorePlatformEvents opts out.
func TestConsumeSubscribesByItselfInAnActorRun(t *testing.T) {
	e := newEventCrawl(t, 100, 200*time.Millisecond)
	t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", e.srv.EventsURL())

	t.Run("IgnorePlatformEvents", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := e.q.Consume(ctx, e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 2, IgnorePlatformEvents: true})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Zero(t, e.srv.EventConnectionAttempts())
	})
	t.Run("subscribed", func(t *testing.T) {
		var persisted atomic.Int32
		var migratingSeen atomic.Bool
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 2,
				OnPersistState: func(ctx context.Context, isMigrating bool) {
					persisted.Add(1)
					migratingSeen.Store(isMigrating)
				}})
			done <- err
		}()
		require.Eventually(t, func() bool { return e.srv.EventConnections() == 1 }, 5*time.Second, time.Millisecond)
		require.NoError(t, e.srv.SendEvent("persistState", map[string]any{"isMigrating": true}))
		require.Eventually(t, func() bool { return persisted.Load() == 1 }, 5*time.Second, time.Millisecond)
		assert.True(t, migratingSeen.Load())
		require.NoError(t, e.srv.SendEvent("migrating", map[string]any{"timeRemainingSecs": 3}))
		require.ErrorIs(t, <-done, apify.ErrMigrating)
		require.Eventually(t, func() bool { return e.srv.EventConnections() == 0 }, 5*time.Second, time.Millisecond, "its own subscription closed at return")
		assert.Empty(t, e.srv.Locked(e.q.ID()))
	})
	t.Run("an invalid events URL is an error before any call", func(t *testing.T) {
		t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", "http://not-a-websocket.test/")
		before := e.srv.Calls(apifytest.OpUnlockRequests)
		_, err := e.q.Consume(context.Background(), e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID})
		require.ErrorIs(t, err, apify.ErrInvalidInput)
		assert.Contains(t, err.Error(), "IgnorePlatformEvents")
		assert.Equal(t, before, e.srv.Calls(apifytest.OpUnlockRequests))
	})
}

// OnPersistState runs one call at a time; a panic in it is logged, and
// Consume goes on.
func TestConsumeOnPersistStateOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEventCrawl(t, 1000, 50*time.Millisecond)
		var logs logRecords
		release := make(chan struct{})
		var calls atomic.Int32
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := e.q.Consume(ctx, e.handler, apify.ConsumeOptions{ClientKey: apifytest.DefaultRunID, Concurrency: 4, Events: e.events, Logger: slog.New(&logs),
				OnPersistState: func(context.Context, bool) {
					if calls.Add(1) == 1 {
						<-release
						panic("save failed")
					}
				}})
			done <- err
		}()
		<-e.started
		persist := apify.PlatformEvent{Name: apify.PlatformEventPersistState}
		e.event(t, persist)
		synctest.Wait()
		require.Equal(t, int32(1), calls.Load())
		e.event(t, persist)
		synctest.Wait()
		require.Len(t, logs.find("persistState skipped"), 1, "skipped while the first call runs")
		close(release)
		synctest.Wait()
		require.Len(t, logs.find("OnPersistState panicked"), 1)
		e.event(t, persist)
		synctest.Wait()
		require.Equal(t, int32(2), calls.Load())
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		assert.Equal(t, int32(2), calls.Load())
	})
}
