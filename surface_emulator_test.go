package apify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The queue surface against the emulator (surface_test.go checks the same
// calls on the wire).

func TestQueueLifecycleAgainstTheEmulator(t *testing.T) {
	clock := apifytest.NewManualClock(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	srv := apifytest.Start(t, apifytest.WithClock(clock), apifytest.WithToken("emu-token"))
	c := srv.Client()
	ctx := context.Background()

	created, err := c.GetOrCreateRequestQueue(ctx, "crawl-1")
	require.NoError(t, err)
	assert.Equal(t, "crawl-1", created.Name)
	assert.NotEmpty(t, created.UserID)
	assert.Equal(t, clock.Now(), created.CreatedAt)
	again, err := c.GetOrCreateRequestQueue(ctx, "crawl-1")
	require.NoError(t, err)
	assert.Equal(t, created.ID, again.ID, "the same name finds the same queue")
	srv.CreateQueue("") // unnamed: listed only on request
	other, err := c.GetOrCreateRequestQueue(ctx, "crawl-2")
	require.NoError(t, err)

	list, err := c.ListRequestQueues(ctx, apify.ListRequestQueuesOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, list.Total)
	assert.Equal(t, []string{created.ID, other.ID}, queueIDs(list.Items))
	list, err = c.ListRequestQueues(ctx, apify.ListRequestQueuesOptions{Unnamed: true, Desc: true, Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, 3, list.Total)
	assert.Equal(t, 2, list.Count)
	assert.Equal(t, other.ID, list.Items[0].ID, "newest first")

	// Counts.
	q := c.RequestQueue(created.ID)
	ids := srv.AddRequests(created.ID, apifytest.Request{URL: "https://l.test/1"}, apifytest.Request{URL: "https://l.test/2"}, apifytest.Request{URL: "https://l.test/3"})
	_, err = q.MarkHandled(ctx, ids[0], apify.RequestOptions{})
	require.NoError(t, err)
	info, err := q.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, info.TotalRequestCount)
	assert.Equal(t, 1, info.HandledRequestCount)
	assert.Equal(t, 2, info.PendingRequestCount)
	assert.Equal(t, "crawl-1", info.Name)
	assert.Equal(t, apify.GeneralAccessFollowUserSetting, info.GeneralAccess)

	// Rename and share; a name in use is refused.
	updated, err := q.Update(ctx, apify.RequestQueueUpdate{Name: "crawl-renamed", GeneralAccess: apify.GeneralAccessAnyoneWithIDCanRead})
	require.NoError(t, err)
	assert.Equal(t, "crawl-renamed", updated.Name)
	assert.Equal(t, apify.GeneralAccessAnyoneWithIDCanRead, updated.GeneralAccess)
	byName, err := c.RequestQueue("~crawl-renamed").Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, created.ID, byName.ID)
	_, err = q.Update(ctx, apify.RequestQueueUpdate{Name: "crawl-2"})
	var apiErr *apify.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "name-not-unique", apiErr.Type)

	// Delete.
	require.NoError(t, q.Delete(ctx))
	_, err = q.Get(ctx)
	assert.ErrorIs(t, err, apify.ErrNotFound)
	assert.ErrorIs(t, q.Delete(ctx), apify.ErrNotFound, "a first-attempt 404 is reported")
}

func queueIDs(items []apify.RequestQueueInfo) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func TestDefaultRequestQueueIDAgainstTheEmulator(t *testing.T) {
	srv := apifytest.Start(t)
	t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", srv.CreateQueue(""))
	info, err := srv.Client().RequestQueue(apify.DefaultRequestQueueID()).Get(context.Background())
	require.NoError(t, err)
	assert.Equal(t, apify.DefaultRequestQueueID(), info.ID)
	assert.Empty(t, info.Name)
}

func TestListRequestsAgainstTheEmulator(t *testing.T) {
	srv := apifytest.Start(t)
	queueID := srv.CreateQueue("list")
	var seed []apifytest.Request
	for i := range 23 {
		seed = append(seed, apifytest.Request{URL: fmt.Sprintf("https://l.test/%02d", i)})
	}
	ids := srv.AddRequests(queueID, seed...)
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()

	head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 5, LockDuration: time.Minute, ClientKey: "worker"})
	require.NoError(t, err)
	for _, it := range head.Items[:2] {
		_, err := q.MarkHandled(ctx, it.ID, apify.RequestOptions{ClientKey: "worker"})
		require.NoError(t, err)
	}
	// Now: ids[0:2] handled, ids[2:5] locked, ids[5:] pending.

	list := func(opts apify.ListRequestsOptions) []string {
		t.Helper()
		var out []string
		for r, err := range q.ListRequests(ctx, opts) {
			require.NoError(t, err)
			out = append(out, r.ID)
		}
		return out
	}
	assert.Equal(t, ids, list(apify.ListRequestsOptions{PageSize: 4}), "every request, over 6 pages")
	assert.Equal(t, ids[2:5], list(apify.ListRequestsOptions{Filter: apify.FilterLocked, PageSize: 2}))
	assert.Equal(t, ids[5:], list(apify.ListRequestsOptions{Filter: apify.FilterPending, PageSize: 7}))
	assert.Equal(t, ids[2:], list(apify.ListRequestsOptions{Filter: apify.FilterLocked | apify.FilterPending}))

	// Breaking out early makes no further call.
	before := srv.Calls(apifytest.OpListRequests)
	for range q.ListRequests(ctx, apify.ListRequestsOptions{PageSize: 2}) {
		break
	}
	assert.Equal(t, before+1, srv.Calls(apifytest.OpListRequests))

	// A failing page is retried; one that keeps failing ends the loop with its error.
	srv.FailNext(apifytest.OpListRequests, 1, apifytest.Fault{Status: 503})
	assert.Len(t, list(apify.ListRequestsOptions{PageSize: 10}), 23)
	srv.FailNext(apifytest.OpListRequests, 100, apifytest.Fault{Status: 403, Type: "insufficient-permissions"})
	var errs []error
	for _, err := range q.ListRequests(ctx, apify.ListRequestsOptions{}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], apify.ErrForbidden)
}

func TestBatchesAgainstTheEmulator(t *testing.T) {
	srv := apifytest.Start(t)
	queueID := srv.CreateQueue("batches")
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()

	reqs := make([]apify.Request, 60)
	for i := range reqs {
		reqs[i] = apify.Request{URL: fmt.Sprintf("https://b.test/%02d", i), UniqueKey: fmt.Sprintf("b%02d", i),
			UserData: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	srv.FailNext(apifytest.OpBatchAddRequests, 1, apifytest.Fault{Status: 503})
	res, err := q.BatchAddRequests(ctx, reqs, apify.RequestOptions{})
	require.NoError(t, err)
	require.Len(t, res.Processed, 60)
	assert.Empty(t, res.Unprocessed)
	assert.Equal(t, 4, srv.Calls(apifytest.OpBatchAddRequests), "3 batches, one retried")
	pending := srv.Pending(queueID)
	require.Len(t, pending, 60)
	for i, p := range pending {
		assert.Equal(t, reqs[i].UniqueKey, p.UniqueKey, "in order")
	}
	r59, err := q.GetRequest(ctx, res.Processed[59].RequestID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"i":59}`, string(r59.UserData))

	// DeleteRequest, then a batch delete of the rest: one request is locked
	// by another client, so it stays, reported unprocessed.
	require.NoError(t, q.DeleteRequest(ctx, res.Processed[0].RequestID, apify.DeleteRequestOptions{}))
	_, err = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: "other"})
	require.NoError(t, err)
	locked := srv.LockedBy(queueID, "other")[0]
	var refs []apify.RequestRef
	for _, p := range res.Processed[1:40] {
		refs = append(refs, apify.RequestRef{ID: p.RequestID})
	}
	for _, r := range reqs[40:] {
		refs = append(refs, apify.RequestRef{UniqueKey: r.UniqueKey})
	}
	del, err := q.BatchDeleteRequests(ctx, refs, apify.DeleteRequestOptions{ClientKey: "me"})
	require.ErrorIs(t, err, apify.ErrUnprocessed)
	require.Len(t, del.Unprocessed, 1)
	assert.Equal(t, locked.ID, del.Unprocessed[0].ID)
	assert.Len(t, del.Processed, 58)
	left := srv.Requests(queueID)
	require.Len(t, left, 1)
	assert.Equal(t, locked.ID, left[0].ID)
}

// The natural path of a crawler: lock the head, work, mark each locked
// request handled by its ID. What the request carries survives.
func TestMarkHandledKeepsUserDataHeadersAndPayload(t *testing.T) {
	srv := apifytest.Start(t)
	queueID := srv.CreateQueue("keep")
	q := srv.Client().RequestQueue(queueID)
	ctx := context.Background()
	const key = "crawler-1"

	_, err := q.AddRequest(ctx, apify.Request{
		URL: "https://k.test/form", UniqueKey: "form", Method: "POST",
		Payload:  json.RawMessage(`"q=go&page=2"`),
		Headers:  json.RawMessage(`{"Content-Type":"application/x-www-form-urlencoded"}`),
		UserData: json.RawMessage(`{"label":"SEARCH","depth":2}`),
	}, apify.RequestOptions{})
	require.NoError(t, err)

	head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 10, LockDuration: time.Minute, ClientKey: key})
	require.NoError(t, err)
	require.Len(t, head.Items, 1)
	for _, it := range head.Items {
		reg, err := q.MarkHandled(ctx, it.ID, apify.RequestOptions{ClientKey: key})
		require.NoError(t, err)
		assert.False(t, reg.WasAlreadyHandled)
	}

	id := head.Items[0].ID
	st, ok := srv.Request(queueID, id)
	require.True(t, ok)
	assert.True(t, st.Handled())
	assert.Nil(t, st.Lock, "handling released the lock")
	stored, err := q.GetRequest(ctx, id)
	require.NoError(t, err)
	assert.JSONEq(t, `{"label":"SEARCH","depth":2}`, string(stored.UserData))
	assert.JSONEq(t, `{"Content-Type":"application/x-www-form-urlencoded"}`, string(stored.Headers))
	assert.JSONEq(t, `"q=go&page=2"`, string(stored.Payload))
	assert.Equal(t, "POST", stored.Method)

	// Marking it again changes nothing and says so.
	reg, err := q.MarkHandled(ctx, id, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	assert.True(t, reg.WasAlreadyHandled)

	// Why MarkHandled reads first: the API's update replaces the whole
	// request, so one built from the locked item erases the rest.
	_, err = q.AddRequest(ctx, apify.Request{URL: "https://k.test/2", UniqueKey: "two", UserData: json.RawMessage(`{"label":"X"}`)}, apify.RequestOptions{})
	require.NoError(t, err)
	head, err = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: key})
	require.NoError(t, err)
	it := head.Items[0]
	_, err = q.UpdateRequest(ctx, apify.Request{ID: it.ID, UniqueKey: it.UniqueKey, URL: it.URL, HandledAt: time.Now()}, apify.RequestOptions{ClientKey: key})
	require.NoError(t, err)
	lost, err := q.GetRequest(ctx, it.ID)
	require.NoError(t, err)
	assert.Empty(t, lost.UserData, "UpdateRequest is a full replace")

	// Another client cannot mark a request it does not hold.
	_, err = q.AddRequest(ctx, apify.Request{URL: "https://k.test/3", UniqueKey: "three"}, apify.RequestOptions{})
	require.NoError(t, err)
	head, err = q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: key})
	require.NoError(t, err)
	_, err = q.MarkHandled(ctx, head.Items[0].ID, apify.RequestOptions{ClientKey: "intruder"})
	var apiErr *apify.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "request-handled-or-locked", apiErr.Type)
	st, _ = srv.Request(queueID, head.Items[0].ID)
	assert.False(t, st.Handled())
}
