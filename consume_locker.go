package apify

import (
	"math"
	"sync"
	"time"
)

// The locker: the one goroutine that calls head/lock. It owns flow control
// (how many requests to lock, and when) and finish detection.

// flow sizes the locker's calls from what it measures: the time a worker
// spends on a request and the latency of a head/lock call.
type flow struct {
	conc        int           // handler slots
	prefetchMax int           // ConsumeOptions.Prefetch, resolved
	margin      time.Duration // the lease margin

	mu       sync.Mutex
	lock     time.Duration // the lock time the API applies
	service  time.Duration // moving average of the time a worker spends on a request
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

// depth returns how many locked requests may wait beyond the free slots,
// and how few may be waiting before the locker locks more (-1: only when a
// slot is free).
//
// By Little's law, with Concurrency slots each busy for S per request, a
// slot frees every S ÷ Concurrency on average, so a request k places back in
// line waits about k × S ÷ Concurrency. A lock is renewed when a third of it
// is left, so the wait is kept under W: a third of the lock, or less when
// the wait plus the handler would otherwise need one more prolong than the
// handler needs alone (but not below a tenth of the lock).
func (f *flow) depth() (p, lowWater int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prefetchMax == 0 || !f.measured {
		return 0, -1 // nothing measured yet: lock for the free slots only
	}
	s := max(f.service, time.Microsecond)
	period := 2 * f.lock / 3 // a running request is renewed this often
	m := max(1, (s+period-1)/period)
	headroom := m*period - s - f.margin
	w := min(f.lock/3, max(headroom, f.lock/10))
	p = min(f.prefetchMax, int(float64(f.conc)*w.Seconds()/s.Seconds()))
	// How many slots free up while one head/lock call is in flight: with
	// fewer than a quarter, waiting for a free slot before calling costs
	// that slot a round trip, and saves a request in each call.
	e := float64(f.conc) * f.headLock.Seconds() / s.Seconds()
	if e < 0.25 {
		return p, -1
	}
	return p, min(int(math.Ceil(2*e)), p/2)
}

// plan returns how many requests to lock now (0: wait), given busy slots
// and waiting requests.
func (f *flow) plan(busy, waiting int) int {
	free := f.conc - busy
	p, low := f.depth()
	deficit := free + p - waiting
	switch {
	case free > waiting: // a slot would idle
		return min(MaxLockHeadLimit, deficit)
	case low >= 0 && waiting <= low && deficit >= max(1, min(p, MaxLockHeadLimit)/2):
		return min(MaxLockHeadLimit, deficit)
	}
	return 0
}

// lockLoop locks requests and feeds them to the workers until the queue is
// done, taking ends, or a fatal error.
func (c *consumer) lockLoop() {
	idle := consumeIdlePollMin
	confirming := false
	fails := 0
	mayHaveStranded := false // a head/lock failed: it may have locked requests we never saw
	for c.taking.Err() == nil {
		n := c.flow.plan(int(c.busy.Load()), int(c.waiting.Load()))
		// Released or lost leases stay in jobs until a worker skips them.
		n = min(n, cap(c.jobs)-len(c.jobs))
		if n <= 0 {
			select {
			case <-c.taking.Done():
				return
			case <-c.wakeLocker:
			}
			continue
		}
		sent := time.Now()
		c.calls.Add(1)
		head, err := c.q.ListAndLockHead(c.taking, LockHeadOptions{Limit: n, LockDuration: c.o.LockDuration, ClientKey: c.o.ClientKey})
		if err != nil {
			if c.taking.Err() != nil {
				return
			}
			if queueUnusable(err) {
				c.setFatal(err)
				return
			}
			c.transient("head/lock", err)
			mayHaveStranded = true
			if !sleepCtx(c.taking, c.backoff(fails, err)) {
				return
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
		if !holding && !head.QueueHasLockedRequests && !c.o.KeepAlive {
			if confirming {
				return // done: two empty answers in a row, with no lock anywhere
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
					c.log.Info("apify: Consume released locks a failed head/lock had taken", "queue", c.q.id, "count", res.UnlockedCount)
					continue
				}
			case c.taking.Err() != nil:
				return
			default:
				// Tried again at the next poll; the locks expire meanwhile anyway.
				c.transient("unlock after a failed head/lock", err)
			}
		}
		// Nothing to take now: others (or we) hold locks, or KeepAlive.
		// Poll again after idle, or as soon as we hold nothing any more.
		if !c.idleWait(idle, holding) {
			return
		}
		idle = min(2*idle, consumeIdlePollMax)
	}
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
