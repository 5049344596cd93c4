package apify

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The keeper's schedule holds each held lease once, however often it is
// rescheduled, and none that ended: a long KeepAlive run at a high rate
// keeps no memory of the requests it is done with.
func TestKeeperScheduleHoldsOnlyHeldLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, err := ConsumeOptions{ClientKey: "k"}.resolve()
		require.NoError(t, err)
		c := newConsumer(&RequestQueueClient{id: "q"}, func(context.Context, *Request) error { return nil }, o)
		c.ops, c.cancelOps = context.WithCancel(context.Background())
		defer c.cancelOps()
		items := make([]LockedRequest, 100)
		for i := range items {
			items[i] = LockedRequest{ID: fmt.Sprint("r", i), URL: "https://shop.test/"}
		}
		ls := c.keeper.add(items, time.Now(), time.Minute)
		require.Len(t, ls, 100)
		assert.Len(t, c.keeper.sched, 100)
		for _, l := range ls[:60] {
			c.keeper.finish(l)
		}
		assert.Len(t, c.keeper.sched, 40, "ended leases leave the schedule")
		for _, l := range ls[60:] {
			require.True(t, c.keeper.start(l)) // reschedules each for its renewal
			c.keeper.schedule(l, time.Now().Add(time.Second))
		}
		assert.Len(t, c.keeper.sched, 40, "a lease rescheduled is still in it once")
		for _, l := range ls[60:] {
			c.keeper.lose(l, "test", nil)
		}
		assert.Empty(t, c.keeper.sched)
		assert.Zero(t, c.keeper.count())
		assert.Zero(t, c.waiting.Load())
	})
}
