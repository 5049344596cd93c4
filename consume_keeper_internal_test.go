package apify

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fixed (found in review): the keeper's schedule keeps an entry for every
// lease that ever came and went until that entry's time comes: a third of
// the lock after the lease was locked (its release while waiting) and two
// thirds (its first renewal), however soon the request was done. Each
// entry holds its lease, and through it the lease's context and timer. So
// the schedule grows with throughput × LockDuration: with 24 h locks (the
// most Consume allows) and 100 requests a second, about 10 million entries
// and their leases after 16 h, where a few hundred requests are ever held
// at once. Here 10,000 requests are locked, run and done within a moment
// under a one-hour lock, with the keeper running: the schedule should hold
// (about) what is held, which is nothing.
func TestKeeperScheduleHoldsOnlyWhatIsHeld(t *testing.T) {
	o, err := ConsumeOptions{ClientKey: "heap", LockDuration: time.Hour}.resolve()
	require.NoError(t, err)
	q := memClient(t, http.NotFoundHandler()).RequestQueue("WkzbQMuFYuamGv3YF")
	c := newConsumer(q, func(context.Context, *Request) error { return nil }, o)
	c.ops, c.cancelOps = context.WithCancel(context.Background())
	defer c.cancelOps()
	k := c.keeper
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); k.run(stop) }()
	defer func() { close(stop); <-done }()

	const n = 10_000
	for i := range n {
		ls := k.add([]LockedRequest{{ID: fmt.Sprintf("req%05d", i), URL: "https://shop.test/"}}, time.Now(), time.Hour)
		require.Len(t, ls, 1)
		require.True(t, k.start(ls[0]))
		k.finish(ls[0])
	}
	assert.Zero(t, k.count(), "nothing is held")
	k.mu.Lock()
	entries := len(k.sched)
	k.mu.Unlock()
	assert.LessOrEqual(t, entries, 2*MaxLockHeadLimit, "entries in the keeper's schedule after %d leases came and went", n)
}
