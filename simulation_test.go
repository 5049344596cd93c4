package apify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The life of a shared queue, in simulated time (a testing/synctest bubble
// with the emulator served in memory, whose clock is the bubble's): 8
// Consume calls (Concurrency 5, handlers of 0.5 s to 1.5 s) drain the
// queue; at t=10.25s half of them leave. A consumer that leaves cleanly
// (its ctx is cancelled) releases at once the requests it had locked but
// not started, lets its running handlers finish, and releases whatever is
// left at exit: the others take that work as soon as they have room. A
// killed consumer (its calls stop reaching the server, its handlers stop)
// leaves its locks to expire: the others take those requests only then,
// within their idle poll, and the ones it was running run a second time.
// Nothing else runs twice, nothing is lost, nothing is left locked.
//
// Recorded runs (simulated time, six runs each without -race: when the
// last handler ended, then when the last Consume returned, which polls at
// most every 2 s while other consumers hold locks):
//
//	default: 600 requests, 30-second locks
//	  leavers leave cleanly: queue drained at t=21.5s to 21.7s, every Consume returned by t=22.5s to 22.9s
//	  leavers killed:        drained at t=38.8s to 41.2s (the stranded locks expire 30 s after they were taken), returned by t=40.5s to 42.3s
//	  mixed:                 drained at t=37.1s to 38.7s, returned by t=37.7s to 40.2s
//	full (APIFY_SOAK=full): 5,000 requests, 10-minute locks
//	  leavers leave cleanly: drained at t=4m1.2s to 4m1.6s, returned by t=4m2.4s to 4m3.4s
//	  leavers killed:        drained at t=10m10.3s to 10m11.8s, returned by t=10m11.5s to 10m13.1s
//	  mixed:                 drained at t=10m7.2s to 10m8.4s, returned by t=10m8.2s to 10m9.9s
//
// The times vary from run to run with the jitter of the consumers' polls.
func TestSimulatedSharedQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation: thousands of in-memory calls")
	}
	// In full (APIFY_SOAK=full) as recorded above; by default a smaller
	// queue and shorter locks, which keep every property checked below
	// (the leavers hold requests they have not started when they leave,
	// and the stranded locks outlast the rest of the work).
	requests, lockFor := 600, 30*time.Second
	if full, _ := apify.LongMode(t, 0, 0); full {
		requests, lockFor = 5000, 10*time.Minute
	}
	tests := []struct {
		name          string
		killed, clean []int // consumers that leave at simLeaveAt
	}{
		{"leavers leave cleanly", nil, []int{0, 1, 2, 3}},
		{"leavers killed", []int{0, 1, 2, 3}, nil},
		{"mixed", []int{0, 1}, []int{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each in its own bubble, with its own emulator
			synctest.Test(t, func(t *testing.T) {
				r := simulate(t, requests, lockFor, tt.killed, tt.clean)
				t.Logf("%s: queue drained at t=%v, every consumer returned at t=%v; %d requests released by clean leavers, taken by others within %v; %d stranded by killed ones, taken within %v of their locks' expiry; %d ran twice",
					tt.name, r.drained, r.returned, r.releasedN, r.maxReleasedPickup, r.strandedN, r.maxStrandedPickup, r.twice)
			})
		})
	}
}

const (
	simConsumers   = 8
	simConcurrency = 5
	// simLeaveAt is when the leavers leave: a moment when each holds
	// requests it has not started yet.
	simLeaveAt = 10*time.Second + 250*time.Millisecond
	// simSample is how often the emulator's state is read to see when a
	// request left behind is taken by another consumer.
	simSample = 100 * time.Millisecond
)

// simWork is how long request number i takes: 0.5 s to 1.5 s, 1 s on
// average, so that the consumers do not run in step.
func simWork(i int) time.Duration {
	return 500*time.Millisecond + time.Duration(i*379%1000)*time.Millisecond
}

type simResult struct {
	drained, returned    time.Duration
	releasedN, strandedN int
	maxReleasedPickup    time.Duration // from the leave to the lock by another consumer
	maxStrandedPickup    time.Duration // from the lock's expiry to the lock by another consumer
	twice                int
}

// simRun is one handler call.
type simRun struct {
	who        int
	start, end time.Time // end is zero when it did not finish
}

func simulate(t *testing.T, requests int, lockFor time.Duration, killed, clean []int) simResult {
	start := time.Now()
	srv := apifytest.NewUnstartedServer()
	queueID := srv.CreateQueue("shared")
	seed := make([]apifytest.Request, requests)
	for i := range seed {
		seed[i] = apifytest.Request{URL: fmt.Sprintf("https://shop.test/item/%d", i)}
	}
	ids := srv.AddRequests(queueID, seed...)
	index := make(map[string]int, requests)
	for i, id := range ids {
		index[id] = i
	}

	leaving := map[int]string{}
	for _, i := range killed {
		leaving[i] = "killed"
	}
	for _, i := range clean {
		leaving[i] = "clean"
	}
	key := func(i int) string { return fmt.Sprintf("consumer-%d", i) }

	var (
		mu   sync.Mutex
		runs = map[string][]simRun{} // request ID -> its handler runs
	)
	type consumer struct {
		conn   *killableTransport
		dead   chan struct{} // closed when it is killed: its handlers stop
		cancel context.CancelFunc
		stats  *apify.ConsumeStats
		err    error
		at     time.Duration // when it returned
	}
	cs := make([]*consumer, simConsumers)
	var wg sync.WaitGroup
	for i := range cs {
		ctx, cancel := context.WithCancel(context.Background())
		c := &consumer{conn: &killableTransport{h: srv.Handler()}, dead: make(chan struct{}), cancel: cancel}
		cs[i] = c
		q := srv.Client(apify.WithHTTPClient(&http.Client{Transport: c.conn})).RequestQueue(queueID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stats, c.err = q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
				mu.Lock()
				runs[req.ID] = append(runs[req.ID], simRun{who: i, start: time.Now()})
				n := len(runs[req.ID]) - 1
				mu.Unlock()
				select {
				case <-time.After(simWork(index[req.ID])):
				case <-c.dead:
					return errors.New("killed")
				case <-ctx.Done():
					return ctx.Err()
				}
				mu.Lock()
				runs[req.ID][n].end = time.Now()
				mu.Unlock()
				return nil
			}, apify.ConsumeOptions{ClientKey: key(i), Concurrency: simConcurrency, LockDuration: lockFor})
			c.at = time.Since(start)
		}()
	}

	// The leavers leave. What each holds then: the requests locked by it,
	// started or not.
	time.Sleep(simLeaveAt)
	synctest.Wait() // everything due at this instant has happened
	leftAt := time.Now()
	held := map[int][]apifytest.RequestState{}
	for i := range leaving {
		held[i] = srv.LockedBy(queueID, key(i))
	}
	for i, how := range leaving {
		if how == "killed" {
			cs[i].conn.killed.Store(true) // nothing it sends arrives any more
			close(cs[i].dead)
		}
		cs[i].cancel()
	}
	// At that very instant, a clean leaver holds only the requests whose
	// handlers run: it released the others at once.
	synctest.Wait()
	stillHeld := map[int]int{}
	for i, how := range leaving {
		if how == "clean" {
			stillHeld[i] = len(srv.LockedBy(queueID, key(i)))
		}
	}

	// When is each request left behind taken by another consumer? The
	// emulator's state is read every simSample, from the leave on, and
	// from just before a stranded lock expires.
	expires := map[string]time.Time{} // request ID -> when its lock expires (a killed consumer's) or zero (released)
	for i, how := range leaving {
		for _, st := range held[i] {
			if how == "killed" {
				expires[st.ID] = st.Lock.ExpiresAt
			} else {
				expires[st.ID] = time.Time{}
			}
		}
	}
	takenAt := map[string]time.Time{}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for len(takenAt) < len(expires) {
			next := time.Now().Add(simSample)
			var soonest time.Time // the earliest expiry of a stranded lock not yet taken
			released := false     // a released request is not yet taken
			for id, exp := range expires {
				if _, ok := takenAt[id]; ok {
					continue
				}
				st, _ := srv.Request(queueID, id)
				switch {
				case st.Handled() || st.Lock != nil && !leavingKey(leaving, key, st.Lock.ClientKey):
					takenAt[id] = time.Now()
				case exp.IsZero():
					released = true
				case soonest.IsZero() || exp.Before(soonest):
					soonest = exp
				}
			}
			if w := soonest.Add(-simSample); !released && w.After(next) {
				next = w // nothing to see until the next stranded lock expires
			}
			time.Sleep(time.Until(next))
		}
	}()
	wg.Wait()
	<-sampled

	var res simResult
	for _, c := range cs {
		res.returned = max(res.returned, c.at)
	}
	// Every request handled, none locked; each recorded once.
	assert.Len(t, srv.Handled(queueID), requests)
	assert.Empty(t, srv.Locked(queueID))
	assert.Empty(t, srv.Pending(queueID))
	handled := 0
	for i, c := range cs {
		require.NotNil(t, c.stats, key(i))
		handled += c.stats.Handled
		switch leaving[i] {
		case "":
			assert.NoError(t, c.err, "%s finishes by itself", key(i))
			assert.Zero(t, c.stats.LocksLost, key(i))
		case "clean":
			assert.ErrorIs(t, c.err, context.Canceled, key(i))
			assert.Zero(t, c.stats.LocksLost, key(i))
		case "killed":
			assert.ErrorIs(t, c.err, context.Canceled, key(i))
			assert.Zero(t, c.stats.ReleasedAtExit, "%s released nothing: none of its calls arrived", key(i))
		}
	}
	assert.Equal(t, requests, handled, "the consumers' Handled add up")
	if len(killed) == 0 {
		// In memory, without faults, every call Consume counts is one the
		// emulator served.
		total := 0
		for _, c := range cs {
			total += c.stats.APICalls
		}
		assert.Equal(t, totalCalls(srv), total, "the consumers' APICalls add up to the emulator's calls")
	}

	mu.Lock()
	defer mu.Unlock()
	// What the leavers held: a clean leaver finished what it had started
	// (the drain) and released the rest at once, which the others took as
	// soon as they had room; a killed one's locks held its requests until
	// they expired, and the others took them then, running again those it
	// had started.
	runAgain := map[string]bool{}
	for i, how := range leaving {
		startedHere, released := 0, 0
		for _, st := range held[i] {
			rs := runs[st.ID]
			if !assert.NotEmpty(t, rs, "%s, held by %s, never ran", st.ID, key(i)) {
				continue
			}
			mine := rs[0].who == i && !rs[0].start.After(leftAt)
			taken, wasTaken := takenAt[st.ID]
			switch {
			case how == "clean" && mine:
				startedHere++
				assert.False(t, rs[0].end.IsZero(), "%s: the clean leaver's handler finished (the drain)", st.ID)
				assert.Len(t, rs, 1, "%s: finished by the leaver, not run again", st.ID)
			case how == "clean":
				released++
				if assert.Len(t, rs, 1, st.ID) && assert.True(t, wasTaken, st.ID) {
					assert.NotEqual(t, i, rs[0].who, st.ID)
					res.maxReleasedPickup = max(res.maxReleasedPickup, taken.Sub(leftAt))
				}
			default: // killed
				res.strandedN++
				others := rs
				if mine {
					others = rs[1:]
					runAgain[st.ID] = true
					assert.True(t, rs[0].end.IsZero(), "%s: the killed consumer's handler stopped", st.ID)
				}
				if assert.Len(t, others, 1, st.ID) && assert.True(t, wasTaken, st.ID) {
					assert.False(t, others[0].start.Before(st.Lock.ExpiresAt), "%s started again at %v, before the dead consumer's lock expired at %v", st.ID, others[0].start, st.Lock.ExpiresAt)
					assert.False(t, taken.Before(st.Lock.ExpiresAt), "%s taken at %v, before the dead consumer's lock expired at %v", st.ID, taken, st.Lock.ExpiresAt)
					res.maxStrandedPickup = max(res.maxStrandedPickup, taken.Sub(st.Lock.ExpiresAt))
				}
			}
		}
		if how == "clean" {
			assert.Equal(t, startedHere, stillHeld[i], "%s released at once what it had not started", key(i))
			res.releasedN += released
			assert.Equal(t, released, cs[i].stats.ReleasedAtExit, "%s released what it had not started", key(i))
		}
	}
	if len(clean) > 0 {
		assert.Positive(t, res.releasedN, "the clean leavers held requests they had not started")
	}
	// Taken as soon as possible: a released request as soon as another
	// consumer had room (it is at the head of the queue), a stranded one
	// within the others' idle poll (at most 2 s) of its lock's expiry; and
	// both long before a lock would have expired.
	assert.Less(t, res.maxReleasedPickup, 5*time.Second, "released requests taken within seconds")
	assert.LessOrEqual(t, res.maxStrandedPickup, 2*time.Second+simSample, "stranded requests taken within the idle poll of their expiry")

	// Every other request ran once, to the end.
	lastEnd := time.Time{}
	for _, id := range ids {
		rs := runs[id]
		want := 1
		if runAgain[id] {
			want = 2
			res.twice++
		}
		if !assert.Len(t, rs, want, "runs of %s", id) {
			continue
		}
		last := rs[len(rs)-1]
		assert.False(t, last.end.IsZero(), "%s: its last run finished", id)
		if last.end.After(lastEnd) {
			lastEnd = last.end
		}
	}
	if len(killed) > 0 {
		assert.Positive(t, res.twice, "the killed consumers died with handlers running")
	}
	res.drained = lastEnd.Sub(start)
	return res
}

// leavingKey reports whether clientKey is one of the leavers'.
func leavingKey(leaving map[int]string, key func(int) string, clientKey string) bool {
	for i := range leaving {
		if key(i) == clientKey {
			return true
		}
	}
	return false
}
