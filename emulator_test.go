package apify_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every queue method against the emulator: what the SDK sends, the emulator
// understands, and what it answers, the SDK decodes; the emulator's state
// shows the effect. (endpoints_test.go checks the same methods byte for
// byte against a scripted server.)
func TestEveryMethodAgainstTheEmulator(t *testing.T) {
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	clock := apifytest.NewManualClock(start)
	srv := apifytest.Start(t, apifytest.WithClock(clock), apifytest.WithToken("emu-token"))
	queueID := srv.CreateQueue("methods")
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()
	const key = "methods-test"

	// AddRequest and BatchAddRequests.
	reg, err := q.AddRequest(ctx, apify.Request{URL: "https://m.test/0", UniqueKey: "u0", UserData: json.RawMessage(`{"label":"START"}`)}, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	assert.Equal(t, apifytest.RequestID("u0"), reg.RequestID)
	assert.False(t, reg.WasAlreadyPresent)
	again, err := q.AddRequest(ctx, apify.Request{URL: "https://m.test/0", UniqueKey: "u0"}, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	assert.True(t, again.WasAlreadyPresent, "deduplicated by uniqueKey")

	batch := []apify.Request{{URL: "https://m.test/1", UniqueKey: "u1"}, {URL: "https://m.test/2", UniqueKey: "u2"}, {URL: "https://m.test/0", UniqueKey: "u0"}}
	res, err := q.BatchAddRequests(ctx, batch, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	require.Len(t, res.Processed, 3)
	assert.Empty(t, res.Unprocessed)
	assert.True(t, res.Processed[2].WasAlreadyPresent)
	require.Len(t, srv.Pending(queueID), 3)

	// ListHead sees them; ListAndLockHead takes two.
	head, err := q.ListHead(ctx, apify.ListHeadOptions{ClientKey: key})
	require.NoError(t, err)
	assert.Equal(t, []string{"u0", "u1", "u2"}, uniqueKeys(head.Items))

	locked, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 2, LockDuration: time.Minute, ClientKey: key})
	require.NoError(t, err)
	require.Len(t, locked.Items, 2)
	assert.Equal(t, time.Minute, locked.LockDuration)
	assert.True(t, locked.QueueHasLockedRequests)
	assert.Equal(t, start.Add(time.Minute), locked.Items[0].LockExpiresAt)
	assert.Equal(t, key, locked.ClientKey)
	first, second := locked.Items[0], locked.Items[1]
	assert.Len(t, srv.LockedBy(queueID, key), 2)

	// ProlongRequestLock: from now, by the holder only.
	clock.Advance(30 * time.Second)
	exp, err := q.ProlongRequestLock(ctx, first.ID, apify.ProlongLockOptions{LockDuration: 2 * time.Minute, ClientKey: key})
	require.NoError(t, err)
	assert.Equal(t, start.Add(30*time.Second+2*time.Minute), exp)
	_, err = q.ProlongRequestLock(ctx, first.ID, apify.ProlongLockOptions{LockDuration: time.Minute, ClientKey: "someone-else"})
	var apiErr *apify.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 403, apiErr.StatusCode)
	assert.Equal(t, "request-handled-or-locked", apiErr.Type)

	// GetRequest returns the whole request; MarkHandled keeps it whole.
	full, err := q.GetRequest(ctx, first.ID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"label":"START"}`, string(full.UserData))
	handled, err := q.MarkHandled(ctx, first.ID, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	assert.Equal(t, first.ID, handled.RequestID)
	got, ok := srv.Request(queueID, first.ID)
	require.True(t, ok)
	assert.True(t, got.Handled())
	assert.Nil(t, got.Lock, "handling released the lock")
	after, err := q.GetRequest(ctx, first.ID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"label":"START"}`, string(after.UserData), "nothing lost on the way back")

	// DeleteRequestLock gives one back, to the front.
	require.NoError(t, q.DeleteRequestLock(ctx, second.ID, apify.DeleteLockOptions{ClientKey: key, Forefront: true}))
	head, err = q.ListHead(ctx, apify.ListHeadOptions{})
	require.NoError(t, err)
	assert.Equal(t, second.ID, head.Items[0].ID)

	// UnlockRequests releases what is left, and only the caller's.
	_, err = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 2, LockDuration: time.Hour, ClientKey: key})
	require.NoError(t, err)
	none, err := q.UnlockRequests(ctx, "someone-else")
	require.NoError(t, err)
	assert.Zero(t, none.UnlockedCount)
	un, err := q.UnlockRequests(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, 2, un.UnlockedCount)
	assert.Empty(t, srv.Locked(queueID))

	// Errors come back typed: an unknown request, an unknown queue, no token.
	_, err = q.GetRequest(ctx, "no-such-request")
	assert.ErrorIs(t, err, apify.ErrNotFound)
	_, err = srv.Client().RequestQueue("no-such-queue").UnlockRequests(ctx, key)
	assert.ErrorIs(t, err, apify.ErrNotFound)
	anon, err := apify.NewClient(apify.WithBaseURL(srv.URL))
	require.NoError(t, err)
	_, err = anon.RequestQueue(queueID).UnlockRequests(ctx, key)
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "token-not-provided", apiErr.Type)
	assert.ErrorIs(t, err, apify.ErrUnauthorized)
}

func uniqueKeys(items []apify.HeadRequest) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.UniqueKey
	}
	return out
}

// A caller inside an Actor run releases the run's locks even without a
// clientKey, and a migrated run (same run ID, new process, new token-less
// key) releases the locks of its earlier self through DefaultClientKey.
func TestUnlockInsideAnActorRun(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithRunToken("run-token", "RUN123"))
	queueID := srv.CreateQueue("run")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://r.test/1"}, apifytest.Request{URL: "https://r.test/2"}, apifytest.Request{URL: "https://r.test/3"})
	q := srv.Client(apify.WithToken("run-token")).RequestQueue(queueID)
	ctx := context.Background()

	t.Setenv("ACTOR_RUN_ID", "RUN123")
	key := apify.DefaultClientKey()
	require.Equal(t, "RUN123", key)
	_, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 2, LockDuration: time.Hour, ClientKey: key})
	require.NoError(t, err)
	_, err = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, LockDuration: time.Hour}) // no clientKey: the run's
	require.NoError(t, err)
	assert.Len(t, srv.LockedByRun(queueID, "RUN123"), 3)

	res, err := q.UnlockRequests(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, 3, res.UnlockedCount, "the run's locks, whatever their clientKey")
	assert.Empty(t, srv.Locked(queueID))
}

// Lock options left at zero but for the clientKey, and the longest lock the
// client allows, are what the emulator accepts: a default batch of 25
// locked for 60 s, and a lock of MaxLockDuration (apifytest's MaxLockSecs).
func TestLockDefaultsAndLimitsAgainstTheEmulator(t *testing.T) {
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	clock := apifytest.NewManualClock(start)
	srv := apifytest.Start(t, apifytest.WithClock(clock))
	queueID := srv.CreateQueue("defaults")
	seed := make([]apifytest.Request, 30)
	for i := range seed {
		seed[i] = apifytest.Request{URL: "https://d.test/" + strconv.Itoa(i)}
	}
	srv.AddRequests(queueID, seed...)
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()

	head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{ClientKey: "k"})
	require.NoError(t, err)
	assert.Len(t, head.Items, apify.DefaultLockHeadLimit)
	assert.Equal(t, apify.DefaultLockDuration, head.LockDuration)
	assert.Equal(t, start.Add(apify.DefaultLockDuration), head.Items[0].LockExpiresAt)

	exp, err := q.ProlongRequestLock(ctx, head.Items[0].ID, apify.ProlongLockOptions{LockDuration: apify.MaxLockDuration, ClientKey: "k"})
	require.NoError(t, err)
	assert.Equal(t, start.Add(apify.MaxLockDuration), exp)
	assert.Equal(t, apify.MaxLockDuration, time.Duration(apifytest.MaxLockSecs)*time.Second, "the client's limit is the emulator's")
	exp, err = q.ProlongRequestLock(ctx, head.Items[1].ID, apify.ProlongLockOptions{ClientKey: "k"})
	require.NoError(t, err)
	assert.Equal(t, start.Add(apify.DefaultLockDuration), exp)
}
