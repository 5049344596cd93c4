package apify

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// The leases: one per request this consumer holds a lock on. The keeper owns
// their deadlines: it alone renews them, and each lease's own expiry timer
// ends it when the lock is about to lapse, whatever the keeper is doing. A
// lease's state moves forward only: waiting → running → done, or waiting →
// releasing → done.

// leaseState is where a held request is in its life.
type leaseState int

const (
	leaseWaiting   leaseState = iota // locked, waiting for a worker
	leaseRunning                     // a worker has it: fetching, in its handler, or recording
	leaseReleasing                   // given back before any handler started
	leaseDone                        // no longer held: handled, put back, released, or lost
)

// errLeaseDone is the cause of a lease's ctx when the lease ended normally.
var errLeaseDone = errors.New("the request is no longer held")

// lease is the consumer's hold on one locked request.
type lease struct {
	id, url  string
	lockedAt time.Time     // when the lock call was sent
	dur      time.Duration // the lock time the API applied

	// ctx ends when the lease does: with cause ErrLockLost when the lock was
	// lost or is about to lapse, errLeaseDone when it ended normally, or the
	// consumer's own end. Every call made under the lock, and the handler's
	// ctx, derive from it.
	ctx context.Context
	end context.CancelCauseFunc

	// after is the lease of the same request that was being released when
	// this one was locked: a retry of that release (after a lost answer)
	// may still delete this lock, so a worker waits for it to end and
	// checks the lock before it runs the handler.
	after *lease
	// check says that the lock must be checked with a prolong before the
	// handler runs: it was locked while, or soon after, this consumer
	// deleted a lock of the same request (see keeper.deleted).
	check bool

	mu               sync.Mutex
	state            leaseState
	deadline         time.Time   // local estimate of the lock's expiry (never later than the server's)
	expiry           *time.Timer // fires margin before deadline: the lease is lost
	recording        bool        // its result is being written
	unansweredDelete bool        // a delete of its lock went unanswered: it may land later
	fails            int         // renewals that failed in a row

	// next is the keeper's next action on it, and slot its place in the
	// keeper's schedule (-1: not in it); both guarded by keeper.mu.
	next time.Time
	slot int
}

// callCtx returns the context of one call made under the lease: it ends
// when the lease does, and at the lock's deadline less the margin, so that a
// call (or a client's wait for a retry) never outlives the lock. ok is false
// when that moment has passed or the lease has ended: no call is to be made.
func (l *lease) callCtx(margin time.Duration) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	l.mu.Lock()
	end := l.deadline.Add(-margin)
	l.mu.Unlock()
	if !time.Now().Before(end) || l.ctx.Err() != nil {
		return nil, nil, false
	}
	ctx, cancel = context.WithDeadline(l.ctx, end)
	return ctx, cancel, true
}

// lostCause reports whether the lease ended because its lock was lost.
func (l *lease) lost() bool { return errors.Is(context.Cause(l.ctx), ErrLockLost) }

// keeper holds the leases and renews them: each on its own schedule, a few
// at a time, so that one slow or hung prolong delays only its own request.
type keeper struct {
	c *consumer

	mu    sync.Mutex
	held  map[string]*lease
	sched leaseHeap
	// deleted holds, per request, when the last lease that sent a delete
	// of its lock with an attempt left unanswered ended, for settle;
	// deletes lists them oldest first, to forget them. Such an attempt
	// (a timeout, a dropped connection) may still be carried out by the
	// API after the client moved on, and delete a lock taken meanwhile
	// under the same clientKey: a request locked again within settle is
	// checked before its handler runs.
	deleted map[string]time.Time
	deletes []recentDelete
	settle  time.Duration

	wake    chan struct{}
	renewal chan struct{} // semaphore: consumeRenewParallelism renewals at once
	wg      sync.WaitGroup
}

func newKeeper(c *consumer) *keeper {
	return &keeper{
		c:       c,
		held:    map[string]*lease{},
		deleted: map[string]time.Time{},
		settle:  c.margin,
		wake:    make(chan struct{}, 1),
		renewal: make(chan struct{}, renewParallelism(c.o.Concurrency)),
	}
}

// add makes leases for requests locked by a head/lock call sent at sent,
// for dur; a request already held (a lost answer's locks coming back) keeps
// the lease it has.
func (k *keeper) add(items []LockedRequest, sent time.Time, dur time.Duration) []*lease {
	c := k.c
	out := make([]*lease, 0, len(items))
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forgetDeletesLocked(time.Now())
	for _, it := range items {
		old, dup := k.held[it.ID]
		if dup && !old.releasedOrDone() {
			continue // ours already: keep the lease we have
		}
		// A request whose release went through is locked afresh: the new
		// lease replaces the old one in held, and waits for it (see after).
		l := &lease{id: it.ID, url: it.URL, lockedAt: sent, dur: dur, deadline: sent.Add(dur), slot: -1}
		if dup {
			l.after, l.check = old, true
		}
		if _, recent := k.deleted[it.ID]; recent {
			l.check = true
		}
		l.ctx, l.end = context.WithCancelCause(c.ops)
		// l.mu is held until the lease is set up: a timer that fires at
		// once (a late answer) waits for it in endLease.
		l.mu.Lock()
		l.expiry = time.AfterFunc(time.Until(l.deadline.Add(-c.margin)), func() {
			k.lose(l, "the lock is about to expire and could not be prolonged in time", nil)
		})
		k.held[l.id] = l
		c.waiting.Add(1)
		l.mu.Unlock()
		// A waiting lease is not renewed: it is released when it has waited
		// a third of its lock (see act). A head/lock answer that came that
		// late leaves a moment for an idle worker to take it first.
		k.scheduleLocked(l, later(sent.Add(dur/3), time.Now().Add(dur/12)))
		out = append(out, l)
	}
	wake(k.wake) // its schedule may have an earlier entry now
	return out
}

// count is how many requests are held.
func (k *keeper) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// start hands a waiting lease to a worker; false when it is no longer
// waiting (released or lost meanwhile).
func (k *keeper) start(l *lease) bool {
	l.mu.Lock()
	if l.state != leaseWaiting {
		l.mu.Unlock()
		return false
	}
	l.state = leaseRunning
	renewAt := l.deadline.Add(-l.dur / 3)
	l.mu.Unlock()
	k.c.waiting.Add(-1)
	k.schedule(l, renewAt)
	return true
}

// unstart takes a waiting lease back to release it; false when a worker
// took it first, or it ended.
func (k *keeper) unstart(l *lease) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != leaseWaiting {
		return false
	}
	l.state = leaseReleasing
	k.c.waiting.Add(-1)
	return true
}

// releasedOrDone reports a lease whose lock we no longer hold, or are giving back.
func (l *lease) releasedOrDone() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == leaseReleasing || l.state == leaseDone
}

// setRecording marks a running lease as writing its result.
func (l *lease) setRecording() {
	l.mu.Lock()
	l.recording = true
	l.mu.Unlock()
}

// finish ends a lease normally: the request is no longer held by us
// (handled, put back, released, gone, or left to the final unlock). It
// reports whether it was the one to end it.
func (k *keeper) finish(l *lease) bool {
	return k.endLease(l, errLeaseDone)
}

// lose ends a lease whose lock was lost, cancelling its handler (cause
// ErrLockLost) and every call made under it, and counts and logs it. It
// reports whether it was the one to end it.
func (k *keeper) lose(l *lease, why string, err error) bool {
	if !k.endLease(l, ErrLockLost) {
		return false
	}
	c := k.c
	c.lost.Add(1)
	c.log.Warn("apify: Consume: lost the lock on a request; its result will not be recorded here",
		"queue", c.queue, "request", l.id, "url", l.url, "why", why, "error", errOrNone(err))
	return true
}

func (k *keeper) endLease(l *lease, cause error) bool {
	l.mu.Lock()
	if l.state == leaseDone {
		l.mu.Unlock()
		return false
	}
	if l.state == leaseWaiting {
		k.c.waiting.Add(-1)
	}
	l.state = leaseDone
	l.expiry.Stop()
	unansweredDelete := l.unansweredDelete
	l.mu.Unlock()
	l.end(cause)
	k.mu.Lock()
	if k.held[l.id] == l {
		delete(k.held, l.id)
	}
	if unansweredDelete {
		now := time.Now()
		k.forgetDeletesLocked(now)
		k.deleted[l.id] = now
		k.deletes = append(k.deletes, recentDelete{l.id, now})
	}
	if l.slot >= 0 {
		heap.Remove(&k.sched, l.slot) // the schedule holds only held leases
	}
	k.mu.Unlock()
	wake(k.c.wakeLocker) // the locker waits for the last held request when the queue looked empty
	return true
}

// schedule sets the keeper's next action on l at at.
func (k *keeper) schedule(l *lease, at time.Time) {
	k.mu.Lock()
	k.scheduleLocked(l, at)
	k.mu.Unlock()
	wake(k.wake)
}

func (k *keeper) scheduleLocked(l *lease, at time.Time) {
	l.next = at
	if l.slot >= 0 {
		heap.Fix(&k.sched, l.slot)
		return
	}
	heap.Push(&k.sched, l)
}

// run acts on each lease when its time comes, until stop is closed. It
// never waits on a call: renewals and releases run in goroutines of their own.
func (k *keeper) run(stop <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		var due []*lease
		wait := time.Hour
		k.mu.Lock()
		for len(k.sched) > 0 {
			l := k.sched[0]
			if l.next.After(now) {
				wait = l.next.Sub(now)
				break
			}
			heap.Pop(&k.sched)
			due = append(due, l)
		}
		k.mu.Unlock()
		for _, l := range due {
			k.act(l)
		}
		t.Reset(wait)
		select {
		case <-stop:
			return
		case <-k.wake: // Reset above needs no drain: timers have no stale ticks since Go 1.23
		case <-t.C:
		}
	}
}

// act does what is due for l: renew it while a worker has it, or release it
// when it has waited for a worker a third of its lock.
func (k *keeper) act(l *lease) {
	l.mu.Lock()
	state := l.state
	l.mu.Unlock()
	switch state {
	case leaseRunning:
		k.wg.Add(1)
		go func() { defer k.wg.Done(); k.renew(l) }()
	case leaseWaiting:
		if k.unstart(l) {
			k.wg.Add(1)
			go func() { defer k.wg.Done(); k.c.release(l, false) }()
		}
	}
}

// renew prolongs l's lock. The call is bounded by half the time left on the
// lock (less the margin), so a hung prolong leaves time for another try;
// and by the lease, so it stops when the lease ends.
func (k *keeper) renew(l *lease) {
	c := k.c
	k.renewal <- struct{}{}
	defer func() { <-k.renewal }()
	l.mu.Lock()
	if l.state != leaseRunning {
		l.mu.Unlock()
		return
	}
	end := l.deadline.Add(-c.margin)
	l.mu.Unlock()
	now := time.Now()
	if !now.Before(end) {
		return // the expiry timer ends it
	}
	ctx, cancel := context.WithDeadline(l.ctx, now.Add(max(end.Sub(now)/2, min(end.Sub(now), 50*time.Millisecond))))
	sent := time.Now()
	c.calls.Add(1)
	_, err := c.q.ProlongRequestLock(ctx, l.id, ProlongLockOptions{LockDuration: l.dur, ClientKey: c.o.ClientKey, Forefront: true})
	cancel()

	l.mu.Lock()
	switch {
	case l.state != leaseRunning:
		// Recorded, released or lost meanwhile: nothing to keep.
		l.mu.Unlock()
		if err == nil {
			c.renewed.Add(1)
		}
	case err == nil:
		l.mu.Unlock()
		k.prolonged(l, sent)
	case l.recording && isLockRefused(err):
		// The result may have just been written (which ends the lock): the
		// recording call's own answer decides. No lock of ours is left to
		// prolong, so no more tries: the lease ends at its expiry unless the
		// recording call succeeds first.
		l.mu.Unlock()
	case isLockRefused(err) || errors.Is(err, ErrNotFound):
		l.mu.Unlock()
		k.lose(l, "prolong refused", err)
	case queueUnusable(err):
		l.mu.Unlock()
		k.lose(l, "prolong refused", err)
		c.setFatal(err)
	case l.ctx.Err() != nil:
		l.mu.Unlock() // the lease ended during the call
	default:
		// A failure after the client's retries, or this try's own bound: try
		// again soon, well before the lock ends.
		l.fails++
		wait := min(c.backoff(l.fails-1, err), max(time.Until(l.deadline)/4, 10*time.Millisecond))
		l.mu.Unlock()
		c.callErrors.Add(1)
		c.log.Warn("apify: Consume: prolonging a lock failed; trying again", "queue", c.queue, "request", l.id, "wait", wait, "error", err)
		k.schedule(l, time.Now().Add(wait))
	}
}

// prolonged records a prolong of l sent at sent that succeeded: the
// lease's deadline moves, and its next renewal is scheduled.
func (k *keeper) prolonged(l *lease, sent time.Time) {
	c := k.c
	c.renewed.Add(1)
	l.mu.Lock()
	l.fails = 0
	if l.state == leaseDone || !l.expiry.Stop() { // else it fired: the lease is being lost
		l.mu.Unlock()
		return
	}
	// The lock time the API applied to the head/lock, never more: a
	// prolong's answer does not say whether it applied less.
	l.deadline = sent.Add(l.dur)
	l.expiry.Reset(time.Until(l.deadline.Add(-c.margin)))
	renewAt := l.deadline.Add(-l.dur / 3)
	running := l.state == leaseRunning
	l.mu.Unlock()
	if running {
		k.schedule(l, renewAt)
	}
}

// leaseHeap is the keeper's schedule: the held leases that have an action
// due, earliest first (container/heap), each once, at its slot.
type leaseHeap []*lease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot, h[j].slot = i, j
}
func (h *leaseHeap) Push(x any) {
	l := x.(*lease)
	l.slot = len(*h)
	*h = append(*h, l)
}
func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	l.slot = -1
	*h = old[:len(old)-1]
	return l
}

// renewParallelism is how many renewals may be in flight: a quarter of the
// handler slots, at least consumeRenewParallelism and at most
// consumeRenewParallelismMax, so that with many handlers and slow prolongs
// the renewals keep up (each slot needs one per two thirds of the lock).
func renewParallelism(concurrency int) int {
	return min(max(concurrency/4, consumeRenewParallelism), consumeRenewParallelismMax)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// errOrNone keeps a nil error out of log records ("error=<nil>" says nothing).
func errOrNone(err error) any {
	if err == nil {
		return "none"
	}
	return err
}

// recentDelete is a lease that sent a delete of its request's lock, ended
// at at.
type recentDelete struct {
	id string
	at time.Time
}

// forgetDeletesLocked forgets the deletes that ended settle or more before
// now; k.mu is held.
func (k *keeper) forgetDeletesLocked(now time.Time) {
	n := 0
	for _, d := range k.deletes {
		if now.Sub(d.at) < k.settle {
			break
		}
		if k.deleted[d.id].Equal(d.at) {
			delete(k.deleted, d.id)
		}
		n++
	}
	if n > 0 {
		k.deletes = slices.Delete(k.deletes, 0, n)
	}
}

// settled returns when a delete of id's lock this consumer sent can no
// longer land: settle after the lease that sent it ended (zero when none
// is remembered).
func (k *keeper) settled(id string) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	at, ok := k.deleted[id]
	if !ok {
		return time.Time{}
	}
	return at.Add(k.settle)
}

// deleteMayLand marks l, when unanswered, as having sent a delete of its
// lock an attempt of which ended without an answer: the API may still
// carry it out after the call returned.
func (l *lease) deleteMayLand(unanswered bool) {
	if !unanswered {
		return
	}
	l.mu.Lock()
	l.unansweredDelete = true
	l.mu.Unlock()
}
