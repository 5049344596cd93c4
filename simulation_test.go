package apify_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The life of a shared queue, in simulated time: 8 consumers drain 5,000
// requests; at one point some leave. A consumer that shuts down cleanly
// releases its locks with UnlockRequests, and others pick that work up at
// once; a killed consumer's locks hold its requests until they expire. The
// emulator's manual clock is the simulated time: each round, every live
// consumer locks a batch and handles it, then the clock moves one second.
//
// Recorded run (lock 10 minutes, batch 5, leavers at t=10s):
//
//	leavers shut down cleanly: queue drained at t=4m0s
//	leavers killed:            queue drained at t=10m11s (the stranded requests waited for their locks to expire)
//	mixed:                     queue drained at t=10m11s
//
// event marks what happened to lock number lock (an index into its lock
// history) of request id at time at.
type event struct {
	id   string
	at   time.Time
	lock int
}

func TestSimulatedSharedQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation: a few thousand HTTP calls")
	}
	const (
		consumers = 8
		batch     = 5
		leaveAt   = 10 // rounds (simulated seconds)
	)
	// In full (APIFY_SOAK=full) as recorded above; by default a smaller
	// queue and shorter locks, which keep every property checked below
	// (the leavers still hold locks when they leave, and other consumers
	// are still working when the stranded locks expire).
	requests, lockFor := 600, 30*time.Second
	if full, _ := apify.LongMode(t, 0, 0); full {
		requests, lockFor = 5000, 10*time.Minute
	}
	tests := []struct {
		name          string
		killed, clean []int // consumers that leave at leaveAt
	}{
		{"leavers shut down cleanly", nil, []int{0, 1, 2, 3}},
		{"leavers killed", []int{0, 1, 2, 3}, nil},
		{"mixed", []int{0, 1}, []int{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each has its own emulator and clock; most of their time is waiting on loopback
			start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
			clock := apifytest.NewManualClock(start)
			srv := apifytest.Start(t, apifytest.WithClock(clock))
			queueID := srv.CreateQueue("shared")
			seed := make([]apifytest.Request, requests)
			for i := range seed {
				seed[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/item/%d", i)}
			}
			srv.AddRequests(queueID, seed...)
			c := srv.Client()
			// Empty the pool before the server closes: a connection the
			// concurrent consumers dialled but never used is, to
			// http.Server.Shutdown, a new one it waits 5 s for.
			t.Cleanup(c.CloseIdleConnections)
			q := c.RequestQueue(queueID)
			ctx := context.Background()

			leaving := map[int]string{}
			for _, i := range tt.killed {
				leaving[i] = "killed"
			}
			for _, i := range tt.clean {
				leaving[i] = "clean"
			}

			var (
				mu        sync.Mutex
				lockedAt  = map[string][]time.Time{} // request ID -> when each lock was taken
				released  []event                    // locks released by a clean shutdown
				stranded  []event                    // locks of killed consumers, held until they expire
				handledBy = map[string]string{}
			)
			active := map[int]bool{}
			for i := range consumers {
				active[i] = true
			}

			// round runs consumer i for one simulated second.
			round := func(i int, r int, now time.Time) error {
				key := fmt.Sprintf("consumer-%d", i)
				head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: batch, LockDuration: lockFor, ClientKey: key})
				if err != nil {
					return err
				}
				mine := make(map[string]int, len(head.Items)) // request ID -> index of this lock in its history
				mu.Lock()
				for _, it := range head.Items {
					lockedAt[it.ID] = append(lockedAt[it.ID], now)
					mine[it.ID] = len(lockedAt[it.ID]) - 1
				}
				mu.Unlock()
				handle := head.Items
				if r == leaveAt {
					switch leaving[i] {
					case "killed": // gone without a word: its locks stay
						mu.Lock()
						for _, it := range head.Items {
							stranded = append(stranded, event{id: it.ID, at: it.LockExpiresAt, lock: mine[it.ID]})
						}
						mu.Unlock()
						return nil
					case "clean": // handles part of the batch, then releases the rest
						handle = head.Items[:min(2, len(head.Items))]
					}
				}
				for _, it := range handle {
					reg, err := q.MarkHandled(ctx, it.ID, apify.RequestOptions{ClientKey: key})
					if err != nil {
						return fmt.Errorf("%s handling %s: %w", key, it.ID, err)
					}
					if reg.WasAlreadyHandled {
						return fmt.Errorf("%s handled %s twice", key, it.ID)
					}
					mu.Lock()
					handledBy[it.ID] = key
					mu.Unlock()
				}
				if r == leaveAt && leaving[i] == "clean" {
					res, err := q.UnlockAtShutdown(ctx, key, 5*time.Second)
					if err != nil {
						return err
					}
					if want := len(head.Items) - len(handle); res.UnlockedCount != want {
						return fmt.Errorf("%s unlocked %d, held %d", key, res.UnlockedCount, want)
					}
					mu.Lock()
					for _, it := range head.Items[len(handle):] {
						released = append(released, event{id: it.ID, at: now, lock: mine[it.ID]})
					}
					mu.Unlock()
				}
				return nil
			}

			var drained time.Duration
			for r := 0; ; r++ {
				now := clock.Now()
				var wg sync.WaitGroup
				errs := make(chan error, consumers)
				for i := range consumers {
					if !active[i] {
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := round(i, r, now); err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err, "no consumer is ever refused: none handles work another client holds")
				}
				if r == leaveAt {
					for i := range leaving {
						active[i] = false
					}
				}
				if len(srv.Handled(queueID)) == requests {
					drained = now.Sub(start) + time.Second
					break
				}
				require.Less(t, r, 3600, "the queue never drained")
				clock.Advance(time.Second)
			}

			// Every request handled exactly once (MarkHandled would have said
			// WasAlreadyHandled otherwise), and nothing left locked.
			assert.Len(t, handledBy, requests)
			assert.Empty(t, srv.Locked(queueID))

			// Released by a clean shutdown: locked again in the same round or
			// the next, long before the lock would have expired.
			for _, ev := range released {
				id := ev.id
				times := lockedAt[id]
				require.Greater(t, len(times), ev.lock+1, id)
				next := times[ev.lock+1]
				assert.LessOrEqual(t, next.Sub(ev.at), time.Second, "request %s released at %v was picked up at %v", id, ev.at, next)
			}
			// Held by a killed consumer: nobody got it before its lock expired.
			for _, ev := range stranded {
				id := ev.id
				times := lockedAt[id]
				require.Greater(t, len(times), ev.lock+1, id)
				next := times[ev.lock+1]
				assert.False(t, next.Before(ev.at), "request %s taken at %v before its lock expired at %v", id, next, ev.at)
				assert.Less(t, next.Sub(ev.at), 2*time.Second, "and taken as soon as it expired")
			}
			assert.Equal(t, len(tt.clean)*(batch-2), len(released))
			assert.Equal(t, len(tt.killed)*batch, len(stranded))
			t.Logf("%s: queue drained at t=%v (simulated)", tt.name, drained)
		})
	}
}
