package apify

import (
	"sync"
	"sync/atomic"
	"time"
)

// The locker: the one goroutine that calls head/lock. It owns flow control
// (how many requests to lock, and when) and finish detection.

// flow sizes the locker's calls from what it measures: the time a worker
// spends on a request, when each busy worker started its request, and the
// latency of a head/lock call.
type flow struct {
	conc        int           // handler slots
	prefetchMax int           // ConsumeOptions.Prefetch, resolved
	margin      time.Duration // the lease margin
	// started holds, per worker, when it took its current request (Unix
	// nanoseconds), or 0 while it waits for one.
	started []atomic.Int64

	mu       sync.Mutex
	lock     time.Duration // the lock time the API applies
	service  time.Duration // moving average of the time a worker spends on a request
	spread   time.Duration // moving average of a request's distance from service
	measured bool
	headLock time.Duration // moving average of a head/lock call's latency
}

// ewma folds a sample into a moving average (weight 1/5).
func ewma(avg, sample time.Duration, first bool) time.Duration {
	if first {
		return sample
	}
	return avg + (sample-avg)/5
}

// served records the time a worker spent on one request.
func (f *flow) served(d time.Duration) {
	f.mu.Lock()
	if f.measured {
		f.spread = ewma(f.spread, (d - f.service).Abs(), f.spread == 0)
	}
	f.service = ewma(f.service, d, !f.measured)
	f.measured = true
	f.mu.Unlock()
}

// called records the latency of a head/lock call and the lock time it applied.
func (f *flow) called(d, lock time.Duration) {
	f.mu.Lock()
	f.headLock = ewma(f.headLock, d, f.headLock == 0)
	f.lock = lock
	f.mu.Unlock()
}

// window is how long a locked request may wait for a handler: a third of
// the lock (a waiting request is released then, never prolonged), or less
// when the wait plus the time a request takes (s) would cross one more
// renewal than the request needs by itself (but not below a tenth of the
// lock).
func window(s, lock, margin time.Duration) time.Duration {
	period := 2 * lock / 3 // a running request is renewed this often
	m := max(1, (s+period-1)/period)
	headroom := m*period - s - margin
	return min(lock/3, max(headroom, lock/10))
}

// plan returns how many requests to lock now (0: not now), given how many
// locked ones wait for a worker, and when to look again if nothing changes
// (zero: only when woken).
//
// It is Little's law applied slot by slot: a busy worker frees its slot
// about s after it started its request (or, when it has run longer, after
// as long again as it has run so far), and then every s; an idle one now,
// and then every s. Counting those moments within the window (less a
// twentieth, for the spread of handler times) says how many requests can start before
// their wait is too long: the locker locks that many, less those already
// waiting, when a slot is idle, or ahead of time when slots will free before
// a head/lock call could return. Before any request was measured it locks
// for the idle slots only.
func (f *flow) plan(now time.Time, waiting int) (n int, recheck time.Time) {
	f.mu.Lock()
	s, spread, measured, lock, rtt := f.service, f.spread, f.measured, f.lock, f.headLock
	f.mu.Unlock()
	idle := 0
	for i := range f.started {
		if f.started[i].Load() == 0 {
			idle++
		}
	}
	if !measured || f.prefetchMax == 0 {
		return min(MaxLockHeadLimit, max(0, idle-waiting)), time.Time{}
	}
	s = max(s, time.Microsecond)
	horizon := now.Add(window(s, lock, f.margin) * 19 / 20)
	soonBy := now.Add(2 * rtt)
	can, soon := 0, 0
	for i := range f.started {
		free := now
		if st := f.started[i].Load(); st != 0 {
			began := time.Unix(0, st)
			free = began.Add(s)
			if late := now.Sub(free); late > 0 {
				if late < 3*spread {
					// Late within the usual spread of request times:
					// likely done within about that spread.
					free = now.Add(spread)
				} else {
					// Late past it (a stuck page, a hung call): a request
					// that has taken x so far is likely to take about as
					// long again.
					free = now.Add(now.Sub(began))
				}
			}
			// Look again when this slot is about to free, if nothing wakes the locker before.
			if at := free.Add(-2 * rtt); at.After(now) && (recheck.IsZero() || at.Before(recheck)) {
				recheck = at
			}
		}
		if !free.After(horizon) {
			can += 1 + int(horizon.Sub(free)/s)
		}
		if !free.After(soonBy) {
			soon++
		}
	}
	n = min(MaxLockHeadLimit, min(can, idle+f.prefetchMax)-waiting)
	switch {
	case n <= 0:
		return 0, recheck
	case idle > waiting: // a slot idles now
		return n, time.Time{}
	case soon > waiting && n >= max(1, min(MaxLockHeadLimit, f.prefetchMax)/2):
		return n, time.Time{} // slots free before a head/lock could return
	}
	return 0, recheck
}

// lockLoop locks requests and feeds them to the workers until the queue is
// done (it then reports true), taking ends, or a fatal error.
func (c *consumer) lockLoop() (done bool) {
	idle := consumeIdlePollMin
	confirming := false
	fails := 0
	mayHaveStranded := false // a head/lock failed: it may have locked requests we never saw
	for c.taking.Err() == nil {
		n, recheck := c.flow.plan(time.Now(), int(c.waiting.Load()))
		// Released or lost leases stay in jobs until a worker skips them.
		n = min(n, cap(c.jobs)-len(c.jobs))
		if n <= 0 {
			if !c.waitForRoom(recheck) {
				return false
			}
			continue
		}
		sent := time.Now()
		heldAtSend := c.keeper.count()
		c.calls.Add(1)
		head, err := c.q.ListAndLockHead(c.taking, LockHeadOptions{Limit: n, LockDuration: c.o.LockDuration, ClientKey: c.o.ClientKey})
		if err != nil {
			if c.taking.Err() != nil {
				return false
			}
			if queueUnusable(err) {
				c.setFatal(err)
				return false
			}
			c.transient("head/lock", err)
			mayHaveStranded = true
			if !sleepCtx(c.taking, c.backoff(fails, err)) {
				return false
			}
			fails++
			continue
		}
		fails = 0
		dur := c.o.LockDuration
		if head.LockDuration > 0 && head.LockDuration < dur {
			dur = head.LockDuration
		}
		c.flow.called(time.Since(sent), dur)
		if len(head.Items) > 0 {
			idle, confirming = consumeIdlePollMin, false
			for _, l := range c.keeper.add(head.Items, sent, dur) {
				c.jobs <- l // never blocks: n ≤ its free room
			}
			continue
		}
		holding := c.keeper.count() > 0
		if !holding && heldAtSend > 0 && head.QueueHasLockedRequests {
			// The locks the answer saw may have been ours, all done while
			// it was on its way: look again at once rather than poll.
			confirming = false
			continue
		}
		if !holding && !head.QueueHasLockedRequests && !c.o.KeepAlive {
			if confirming {
				return true // two empty answers in a row, with no lock anywhere
			}
			confirming = true // look once more, at once
			continue
		}
		confirming = false
		if !holding && head.QueueHasLockedRequests && mayHaveStranded {
			// A failed head/lock may have locked requests under our key that
			// we never got: with nothing else held, releasing all our locks
			// brings them back now rather than when they expire.
			c.calls.Add(1)
			res, err := c.q.UnlockRequests(c.taking, c.o.ClientKey)
			switch {
			case err == nil:
				mayHaveStranded = false
				if res.UnlockedCount > 0 {
					c.log.Info("apify: Consume released locks a failed head/lock had taken", "queue", c.queue, "count", res.UnlockedCount)
					continue
				}
			case c.taking.Err() != nil:
				return false
			default:
				// Tried again at the next poll; the locks expire meanwhile anyway.
				c.transient("unlock after a failed head/lock", err)
			}
		}
		// Nothing to take now: others (or we) hold locks, or KeepAlive.
		// Poll again after idle, or as soon as we hold nothing any more.
		if !c.idleWait(idle, holding) {
			return false
		}
		idle = min(2*idle, consumeIdlePollMax)
	}
	return false
}

// waitForRoom waits until a worker wakes the locker, or until recheck (if
// not zero); false when taking ended.
func (c *consumer) waitForRoom(recheck time.Time) bool {
	var tc <-chan time.Time
	if !recheck.IsZero() {
		t := time.NewTimer(time.Until(recheck))
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-c.taking.Done():
		return false
	case <-c.wakeLocker:
	case <-tc:
	}
	return true
}

// idleWait waits about d (jittered), or until the last held request is
// done when holding; false when taking ended.
func (c *consumer) idleWait(d time.Duration, holding bool) bool {
	t := time.NewTimer(jitter(d))
	defer t.Stop()
	for {
		select {
		case <-c.taking.Done():
			return false
		case <-t.C:
			return true
		case <-c.wakeLocker:
			if holding && c.keeper.count() == 0 {
				return true
			}
		}
	}
}
