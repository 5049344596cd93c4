package apify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The queue surface on the wire: what each call sends, byte for byte, and
// what it makes of the answers. (surface_emulator_test.go runs the same
// calls against apifytest.)

const queueJSON = `{"id":"WkzbQMuFYuamGv3YF","name":"my-queue","userId":"wRsJZtadYvn4mBZmm","username":"janedoe",
	"createdAt":"2026-11-29T10:00:00.000Z","modifiedAt":"2026-11-29T10:01:00.000Z","accessedAt":"2026-11-29T10:02:00.000Z",
	"totalRequestCount":870,"handledRequestCount":100,"pendingRequestCount":770,"hadMultipleClients":true,
	"consoleUrl":"https://console.apify.com/storage/request-queues/WkzbQMuFYuamGv3YF","generalAccess":"RESTRICTED",
	"stats":{"readCount":100,"writeCount":10,"deleteCount":1,"headItemReadCount":5,"storageBytes":1024}}`

var wantQueueInfo = &RequestQueueInfo{
	ID: "WkzbQMuFYuamGv3YF", Name: "my-queue", UserID: "wRsJZtadYvn4mBZmm", Username: "janedoe",
	CreatedAt: lockedAt, ModifiedAt: lockedAt.Add(time.Minute), AccessedAt: lockedAt.Add(2 * time.Minute),
	TotalRequestCount: 870, HandledRequestCount: 100, PendingRequestCount: 770, HadMultipleClients: true,
	ConsoleURL:    "https://console.apify.com/storage/request-queues/WkzbQMuFYuamGv3YF",
	GeneralAccess: GeneralAccessRestricted,
	Stats:         &RequestQueueStats{ReadCount: 100, WriteCount: 10, DeleteCount: 1, HeadItemReadCount: 5, StorageBytes: 1024},
}

// surfaceEndpointCases joins endpointCases: every wire and error-path test
// runs over them too.
func surfaceEndpointCases() []endpointCase {
	return []endpointCase{
		{
			name: "Get", method: "GET", uri: "/v2/request-queues/q",
			idempotent: true, status: 200, reply: `{"data":` + queueJSON + `}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.Get(ctx)
				return err
			},
		},
		{
			name: "Update", method: "PUT", uri: "/v2/request-queues/q",
			body:       `{"name":"new-name","generalAccess":"ANYONE_WITH_ID_CAN_READ"}`,
			idempotent: true, status: 200, reply: `{"data":` + queueJSON + `}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.Update(ctx, RequestQueueUpdate{Name: "new-name", GeneralAccess: GeneralAccessAnyoneWithIDCanRead})
				return err
			},
		},
		{
			name: "Delete", method: "DELETE", uri: "/v2/request-queues/q",
			idempotent: true, status: 204,
			call: func(ctx context.Context, q *RequestQueueClient) error { return q.Delete(ctx) },
		},
		{
			name: "DeleteRequest", method: "DELETE", uri: "/v2/request-queues/q/requests/req%2F1?clientKey=ck",
			idempotent: true, status: 204,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				return q.DeleteRequest(ctx, "req/1", DeleteRequestOptions{ClientKey: "ck"})
			},
		},
		{
			name: "BatchDeleteRequests", method: "DELETE", uri: "/v2/request-queues/q/requests/batch?clientKey=ck",
			body:       `[{"id":"r1"},{"uniqueKey":"http://x.test/b"}]`,
			idempotent: true, status: 200,
			reply: `{"data":{"processedRequests":[{"id":"r1","uniqueKey":"http://x.test/a"},{"id":"r2","uniqueKey":"http://x.test/b"}],"unprocessedRequests":[]}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.BatchDeleteRequests(ctx, []RequestRef{{ID: "r1"}, {UniqueKey: "http://x.test/b"}}, DeleteRequestOptions{ClientKey: "ck"})
				return err
			},
		},
		{
			name: "ListRequests", method: "GET", uri: "/v2/request-queues/q/requests?limit=50&filter=locked,pending&clientKey=ck",
			idempotent: true, status: 200,
			reply: `{"data":{"limit":50,"items":[{"id":"r1","uniqueKey":"u1","url":"http://x.test/1"}]}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				for _, err := range q.ListRequests(ctx, ListRequestsOptions{Filter: FilterLocked | FilterPending, PageSize: 50, ClientKey: "ck"}) {
					if err != nil {
						return err
					}
				}
				return nil
			},
		},
	}
}

func TestGetOrCreateRequestQueue(t *testing.T) {
	t.Run("wire and result", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 201, body: `{"data":` + queueJSON + `}`}}, WithToken("tok"))
		info, err := c.GetOrCreateRequestQueue(context.Background(), "my-queue")
		require.NoError(t, err)
		assert.Equal(t, wantQueueInfo, info)
		r := f.requests()[0]
		assert.Equal(t, "POST", r.Method)
		assert.Equal(t, testPrefix+"/v2/request-queues?name=my-queue", r.RequestURI)
		assert.Equal(t, "Bearer tok", r.Header.Get("Authorization"))
		assert.Equal(t, "application/json", r.Header.Get("Accept"))
		assert.Empty(t, r.Body)
		assert.Empty(t, r.Header.Values("Content-Type"))
	})

	t.Run("an existing queue (200) and a null name", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"id":"abc","name":null,"userId":"u"}}`}})
		info, err := c.GetOrCreateRequestQueue(context.Background(), "x")
		require.NoError(t, err)
		assert.Equal(t, &RequestQueueInfo{ID: "abc", UserID: "u"}, info)
	})

	t.Run("retried: getting or creating by name is idempotent", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 503}, {status: 200, body: `{"data":{"id":"abc"}}`}})
		_, err := c.GetOrCreateRequestQueue(context.Background(), "x")
		require.NoError(t, err)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("a queue without an ID is not a queue", func(t *testing.T) {
		for _, body := range []string{`{"data":{}}`, `{"data":null}`, `{}`, `[]`} {
			_, c, _ := setup(t, []reply{{status: 201, body: body}})
			_, err := c.GetOrCreateRequestQueue(context.Background(), "x")
			assert.ErrorIs(t, err, ErrUnexpectedResponse, body)
		}
	})

	t.Run("API errors", func(t *testing.T) {
		_, c, _ := setup(t, []reply{apiErr(401, "token-not-provided", "Authentication token was not provided")})
		_, err := c.GetOrCreateRequestQueue(context.Background(), "x")
		assert.ErrorIs(t, err, ErrUnauthorized)
		assert.EqualError(t, err, "apify: POST "+testPrefix+"/v2/request-queues: 401 token-not-provided: Authentication token was not provided")
	})

	t.Run("names checked before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"id":"abc"}}`}})
		for name, msg := range map[string]string{
			"":                      "the queue name is empty",
			"-a":                    `has '-' at byte 0`,
			"a-":                    `has '-' at byte 1`,
			"a b":                   `has ' ' at byte 1`,
			"a/b":                   `has '/' at byte 1`,
			"~a":                    `has '~' at byte 0`,
			"zlu\u0165":             `at byte 3`,
			strings.Repeat("a", 64): "has 64 characters; the API accepts at most 63",
		} {
			_, err := c.GetOrCreateRequestQueue(context.Background(), name)
			require.ErrorIs(t, err, ErrInvalidInput, name)
			assert.Contains(t, err.Error(), msg, name)
		}
		_, err := c.GetOrCreateRequestQueue(context.Background(), strings.Repeat("a", 63))
		assert.NoError(t, err)
		_, err = c.GetOrCreateRequestQueue(context.Background(), "My-queue-1")
		assert.NoError(t, err)
		assert.Equal(t, 2, f.hits(), "only the two valid names were sent")
	})
}

func TestListRequestQueues(t *testing.T) {
	page := `{"data":{"total":3,"offset":1,"limit":2,"desc":true,"count":2,"items":[` + queueJSON + `,{"id":"b","name":null}]}}`

	t.Run("query and result", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: page}})
		list, err := c.ListRequestQueues(context.Background(), ListRequestQueuesOptions{Offset: 1, Limit: 2, Desc: true, Unnamed: true, Ownership: OwnedByMe})
		require.NoError(t, err)
		assert.Equal(t, &RequestQueueList{Items: []RequestQueueInfo{*wantQueueInfo, {ID: "b"}}, Total: 3, Offset: 1, Limit: 2, Desc: true, Count: 2}, list)
		assert.Equal(t, "GET", f.requests()[0].Method)
		assert.Equal(t, testPrefix+"/v2/request-queues?offset=1&limit=2&desc=true&unnamed=true&ownership=ownedByMe", f.requests()[0].RequestURI)
	})

	t.Run("zero options send no query", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"total":0,"items":[]}}`}})
		list, err := c.ListRequestQueues(context.Background(), ListRequestQueuesOptions{})
		require.NoError(t, err)
		assert.NotNil(t, list.Items)
		assert.Equal(t, testPrefix+"/v2/request-queues", f.requests()[0].RequestURI)
	})

	t.Run("malformed pages", func(t *testing.T) {
		for _, body := range []string{`{"data":{"total":1}}`, `{"data":{"items":[{"name":"x"}]}}`, `{"data":{"items":{}}}`} {
			_, c, _ := setup(t, []reply{{status: 200, body: body}})
			_, err := c.ListRequestQueues(context.Background(), ListRequestQueuesOptions{})
			assert.ErrorIs(t, err, ErrUnexpectedResponse, body)
		}
	})

	t.Run("validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		for _, tt := range []struct {
			opts ListRequestQueuesOptions
			msg  string
		}{
			{ListRequestQueuesOptions{Offset: -1}, "Offset is -1"},
			{ListRequestQueuesOptions{Limit: -5}, "Limit is -5"},
			{ListRequestQueuesOptions{Ownership: "mine"}, `Ownership is "mine"`},
		} {
			_, err := c.ListRequestQueues(context.Background(), tt.opts)
			require.ErrorIs(t, err, ErrInvalidInput)
			assert.Contains(t, err.Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})
}

func TestDefaultRequestQueueID(t *testing.T) {
	t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", "")
	t.Setenv("APIFY_DEFAULT_REQUEST_QUEUE_ID", "")
	assert.Equal(t, "", DefaultRequestQueueID(), "outside a run")
	t.Setenv("APIFY_DEFAULT_REQUEST_QUEUE_ID", "older")
	assert.Equal(t, "older", DefaultRequestQueueID())
	t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", "WkzbQMuFYuamGv3YF")
	assert.Equal(t, "WkzbQMuFYuamGv3YF", DefaultRequestQueueID())
}

func TestQueueGetUpdateDelete(t *testing.T) {
	t.Run("Get decodes every field", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":` + queueJSON + `}`}})
		info, err := c.RequestQueue("q").Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, wantQueueInfo, info)
	})

	t.Run("Update sends only what changes", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":` + queueJSON + `}`}})
		q := c.RequestQueue("q")
		_, err := q.Update(context.Background(), RequestQueueUpdate{Name: "renamed"})
		require.NoError(t, err)
		_, err = q.Update(context.Background(), RequestQueueUpdate{GeneralAccess: GeneralAccessFollowUserSetting})
		require.NoError(t, err)
		reqs := f.requests()
		assert.Equal(t, `{"name":"renamed"}`, string(reqs[0].Body))
		assert.Equal(t, `{"generalAccess":"FOLLOW_USER_SETTING"}`, string(reqs[1].Body))
	})

	t.Run("Update validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		for _, tt := range []struct {
			u   RequestQueueUpdate
			msg string
		}{
			{RequestQueueUpdate{}, "the RequestQueueUpdate is empty"},
			{RequestQueueUpdate{Name: "no spaces"}, `has ' ' at byte 2`},
			{RequestQueueUpdate{GeneralAccess: "PUBLIC"}, `GeneralAccess is "PUBLIC"; it must be one of RESTRICTED,`},
		} {
			_, err := q.Update(context.Background(), tt.u)
			require.ErrorIs(t, err, ErrInvalidInput)
			assert.Contains(t, err.Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})

	t.Run("a delete whose earlier answer was lost succeeds", func(t *testing.T) {
		for name, del := range map[string]func(*RequestQueueClient) error{
			"Delete": func(q *RequestQueueClient) error { return q.Delete(context.Background()) },
			"DeleteRequest": func(q *RequestQueueClient) error {
				return q.DeleteRequest(context.Background(), "r1", DeleteRequestOptions{})
			},
		} {
			f, c, _ := setup(t, []reply{{status: 502}, apiErr(404, "record-not-found", "gone")})
			assert.NoError(t, del(c.RequestQueue("q")), name)
			assert.Equal(t, 2, f.hits(), name)

			f, c, _ = setup(t, []reply{apiErr(404, "record-not-found", "gone")})
			err := del(c.RequestQueue("q"))
			assert.ErrorIs(t, err, ErrNotFound, "%s: a first-attempt 404 is an error", name)
			assert.Equal(t, 1, f.hits(), name)
		}
	})

	t.Run("DeleteRequest validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		assert.ErrorIs(t, q.DeleteRequest(context.Background(), "", DeleteRequestOptions{}), ErrInvalidInput)
		assert.ErrorIs(t, q.DeleteRequest(context.Background(), "r1", DeleteRequestOptions{ClientKey: strings.Repeat("k", 33)}), ErrInvalidClientKey)
		assert.Zero(t, f.hits())
	})
}

// listPage is a page of GET .../requests with the given IDs and nextCursor.
func listPage(next string, ids ...string) reply {
	items := make([]string, len(ids))
	for i, id := range ids {
		items[i] = fmt.Sprintf(`{"id":%q,"uniqueKey":"u-%s","url":"http://x.test/%s","userData":{"n":%q}}`, id, id, id, id)
	}
	nc := ""
	if next != "" {
		nc = fmt.Sprintf(`,"nextCursor":%q`, next)
	}
	return reply{status: 200, body: `{"data":{"limit":2,"items":[` + strings.Join(items, ",") + `]` + nc + `}}`}
}

func collect(seq func(func(*Request, error) bool)) (ids []string, errs []error) {
	for r, err := range seq {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, r.ID)
	}
	return ids, errs
}

func TestListRequests(t *testing.T) {
	ctx := context.Background()

	t.Run("pages with the cursor until there is no nextCursor", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("c/1", "a", "b"), listPage("", "c")})
		var got []*Request
		for r, err := range c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{PageSize: 2, Filter: FilterPending}) {
			require.NoError(t, err)
			got = append(got, r)
		}
		require.Len(t, got, 3)
		assert.Equal(t, &Request{ID: "c", UniqueKey: "u-c", URL: "http://x.test/c", UserData: json.RawMessage(`{"n":"c"}`)}, got[2])
		reqs := f.requests()
		require.Len(t, reqs, 2)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests?limit=2&filter=pending", reqs[0].RequestURI)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests?limit=2&filter=pending&cursor=c%2F1", reqs[1].RequestURI)
	})

	t.Run("empty pages with a nextCursor are followed", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("c1"), listPage("c2"), listPage("", "z")})
		ids, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{Filter: FilterLocked}))
		assert.Empty(t, errs)
		assert.Equal(t, []string{"z"}, ids)
		assert.Equal(t, 3, f.hits())
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests?filter=locked", f.requests()[0].RequestURI)
	})

	t.Run("breaking out fetches no further page", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("c1", "a", "b"), listPage("", "c")})
		n := 0
		for _, err := range c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}) {
			require.NoError(t, err)
			n++
			break
		}
		assert.Equal(t, 1, n)
		assert.Equal(t, 1, f.hits())
	})

	t.Run("an error is yielded once and ends the iteration", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("c1", "a"), apiErr(403, "insufficient-permissions", "no")})
		ids, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}))
		assert.Equal(t, []string{"a"}, ids)
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], ErrForbidden)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("a nextCursor that does not move is an error, not a loop", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("same", "a"), listPage("same", "b")})
		ids, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}))
		assert.Equal(t, []string{"a"}, ids)
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], ErrUnexpectedResponse)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("a nextCursor that leads back to an earlier page is an error, not a loop", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("A", "a"), listPage("B", "b"), listPage("A", "c"), listPage("B", "d"), listPage("A", "e")})
		ids, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}))
		assert.Equal(t, []string{"a", "b"}, ids)
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], ErrUnexpectedResponse)
		assert.ErrorContains(t, errs[0], `"A"`)
		assert.Equal(t, 3, f.hits())
	})

	t.Run("a page may be larger than other calls' 1 MiB bound", func(t *testing.T) {
		// 2,000 requests with 1 KiB of userData each: a page a crawler asks
		// for (PageSize up to 10,000), over twice the bound of other calls.
		big := strings.Repeat("x", 1024)
		var b strings.Builder
		b.WriteString(`{"data":{"items":[`)
		for i := range 2000 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":"r%d","uniqueKey":"u%d","url":"http://x.test/%d","userData":{"pad":%q}}`, i, i, i, big)
		}
		b.WriteString(`]}}`)
		require.Greater(t, b.Len(), 2*maxBodyBytes)
		_, c, _ := setup(t, []reply{{status: 200, body: b.String()}})
		ids, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{PageSize: 2000}))
		assert.Empty(t, errs)
		assert.Len(t, ids, 2000)

		// The same body on a call that is not a listing is refused.
		_, c, _ = setup(t, []reply{{status: 200, body: b.String()}})
		_, err := c.RequestQueue("q").GetRequest(ctx, "r0")
		assert.ErrorIs(t, err, ErrUnexpectedResponse)
		assert.ErrorContains(t, err, "larger than 1048576 bytes")
	})

	t.Run("items without an ID", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"items":[{"url":"x"}]}}`}})
		_, errs := collect(c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}))
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], ErrUnexpectedResponse)
	})

	t.Run("ctx cancelled between pages", func(t *testing.T) {
		f, c, _ := setup(t, []reply{listPage("c1", "a"), listPage("", "b")})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var errs []error
		for _, err := range c.RequestQueue("q").ListRequests(ctx, ListRequestsOptions{}) {
			if err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], context.Canceled)
		assert.Equal(t, 1, f.hits())
	})

	t.Run("validation before any I/O, yielded once", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		for _, tt := range []struct {
			q    *RequestQueueClient
			opts ListRequestsOptions
			want error
			msg  string
		}{
			{c.RequestQueue("q"), ListRequestsOptions{PageSize: -1}, ErrInvalidInput, "PageSize is -1"},
			{c.RequestQueue("q"), ListRequestsOptions{PageSize: 10001}, ErrInvalidInput, "PageSize is 10001; it must be 1 to 10000"},
			{c.RequestQueue("q"), ListRequestsOptions{Filter: 4}, ErrInvalidInput, "Filter is 4"},
			{c.RequestQueue("q"), ListRequestsOptions{ClientKey: strings.Repeat("k", 33)}, ErrInvalidClientKey, "33 characters"},
			{c.RequestQueue(""), ListRequestsOptions{}, ErrInvalidQueueID, "queue ID is empty"},
		} {
			ids, errs := collect(tt.q.ListRequests(ctx, tt.opts))
			assert.Empty(t, ids)
			require.Len(t, errs, 1)
			assert.ErrorIs(t, errs[0], tt.want)
			assert.Contains(t, errs[0].Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})

	assert.Equal(t, "locked,pending", (FilterPending | FilterLocked).String())
	assert.Equal(t, "", RequestFilter(0).String())
	assert.Equal(t, "pending,RequestFilter(8)", (FilterPending | 8).String())
}

// batchReply answers a batch add: the processed uniqueKeys, then the unprocessed ones.
func batchReply(processed []string, unprocessed ...string) reply {
	p := make([]string, len(processed))
	for i, k := range processed {
		p[i] = fmt.Sprintf(`{"requestId":"id-%s","uniqueKey":%q,"wasAlreadyPresent":false,"wasAlreadyHandled":false}`, k, k)
	}
	u := make([]string, len(unprocessed))
	for i, k := range unprocessed {
		u[i] = fmt.Sprintf(`{"uniqueKey":%q,"url":"http://x.test/%s","method":"GET"}`, k, k)
	}
	return reply{status: 201, body: `{"data":{"processedRequests":[` + strings.Join(p, ",") + `],"unprocessedRequests":[` + strings.Join(u, ",") + `]}}`}
}

func numbered(n int) []Request {
	out := make([]Request, n)
	for i := range out {
		k := fmt.Sprintf("k%02d", i)
		out[i] = Request{UniqueKey: k, URL: "http://x.test/" + k, UserData: json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)}
	}
	return out
}

func keysOf(rs []Request) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.UniqueKey
	}
	return out
}

func sentKeys(t *testing.T, s seen) []string {
	t.Helper()
	var rs []Request
	require.NoError(t, json.Unmarshal(s.Body, &rs))
	return keysOf(rs)
}

func TestBatchAddRequests(t *testing.T) {
	ctx := context.Background()

	t.Run("any number, 25 at a time, in order", func(t *testing.T) {
		reqs := numbered(60)
		f, c, _ := setup(t, []reply{
			batchReply(keysOf(reqs[:25])), batchReply(keysOf(reqs[25:50])), batchReply(keysOf(reqs[50:])),
		})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{ClientKey: "ck"})
		require.NoError(t, err)
		require.Len(t, res.Processed, 60)
		assert.Equal(t, "id-k59", res.Processed[59].RequestID)
		assert.Empty(t, res.Unprocessed)
		sent := f.requests()
		require.Len(t, sent, 3)
		for i, want := range [][]Request{reqs[:25], reqs[25:50], reqs[50:]} {
			assert.Equal(t, testPrefix+"/v2/request-queues/q/requests/batch?clientKey=ck", sent[i].RequestURI)
			assert.Equal(t, keysOf(want), sentKeys(t, sent[i]))
		}
		// With Forefront: TestBatchAddForefrontOnTheWire.
	})

	t.Run("unprocessed requests are sent again whole", func(t *testing.T) {
		reqs := numbered(3)
		f, c, _ := setup(t, []reply{batchReply([]string{"k00"}, "k01", "k02"), batchReply([]string{"k02"}, "k01"), batchReply([]string{"k01"})})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{})
		require.NoError(t, err)
		assert.Equal(t, []string{"k00", "k02", "k01"}, func() []string {
			var ks []string
			for _, p := range res.Processed {
				ks = append(ks, p.UniqueKey)
			}
			return ks
		}())
		assert.Empty(t, res.Unprocessed)
		sent := f.requests()
		require.Len(t, sent, 3)
		var again []Request
		require.NoError(t, json.Unmarshal(sent[1].Body, &again))
		assert.Equal(t, reqs[1:], again, "the caller's requests, UserData included, not the API's drafts")
	})

	t.Run("what stays unprocessed is returned with ErrUnprocessed", func(t *testing.T) {
		reqs := numbered(30)
		// The first chunk keeps k03 unprocessed in every round; the second goes through.
		f, c, _ := setup(t, []reply{
			batchReply(append(keysOf(reqs[:3]), keysOf(reqs[4:25])...), "k03"),
			batchReply(nil, "k03"), batchReply(nil, "k03"),
			batchReply(keysOf(reqs[25:])),
		}, WithMaxRetries(2))
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{})
		require.ErrorIs(t, err, ErrUnprocessed)
		assert.EqualError(t, err, "apify: POST "+testPrefix+"/v2/request-queues/q/requests/batch: 1 of 30 requests left unprocessed after 3 rounds")
		assert.Equal(t, []Request{reqs[3]}, res.Unprocessed)
		assert.Len(t, res.Processed, 29)
		assert.Equal(t, 4, f.hits(), "3 rounds for the first chunk, 1 for the second")
	})

	t.Run("a failed call leaves its chunk and the rest unprocessed", func(t *testing.T) {
		reqs := numbered(60)
		f, c, _ := setup(t, []reply{batchReply(keysOf(reqs[:25])), apiErr(403, "insufficient-permissions", "read-only")})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{})
		require.ErrorIs(t, err, ErrUnprocessed)
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 403, apiErr.StatusCode)
		assert.Contains(t, err.Error(), "35 of 60 requests left unprocessed: apify: POST")
		assert.Len(t, res.Processed, 25)
		assert.Equal(t, reqs[25:], res.Unprocessed)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("backoff between rounds, and never past the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reqs := numbered(2)
			f := &fakeAPI{replies: []reply{batchReply([]string{"k00"}, "k01")}}
			c := memClient(t, f, WithRetryWait(time.Second, 8*time.Second))
			c.randN = func(n int64) int64 { return n - 1 } // the longest wait each time
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{})
			require.ErrorIs(t, err, ErrUnprocessed)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Equal(t, []Request{reqs[1]}, res.Unprocessed)
			sent := f.requests()
			require.Len(t, sent, 3)
			assert.Equal(t, 2*time.Second, sent[1].At.Sub(sent[0].At), "first backoff: up to 2·min")
			assert.Equal(t, 4*time.Second, sent[2].At.Sub(sent[1].At), "second: up to 4·min")
			// The third wait (up to 8 s) would end after the 10 s deadline: not started.
			assert.Equal(t, 6*time.Second, time.Since(start))
		})
	})

	t.Run("no requests, no call", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, nil, RequestOptions{})
		require.NoError(t, err)
		assert.Empty(t, res.Processed)
		assert.Zero(t, f.hits())
	})

	t.Run("unprocessed keys that were not sent", func(t *testing.T) {
		_, c, _ := setup(t, []reply{batchReply(nil, "stranger")})
		_, err := c.RequestQueue("q").BatchAddRequests(ctx, numbered(1), RequestOptions{})
		assert.ErrorIs(t, err, ErrUnexpectedResponse)
	})

	t.Run("every request checked before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		reqs := numbered(60)
		reqs[42].URL = ""
		_, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{})
		require.ErrorIs(t, err, ErrInvalidInput)
		assert.EqualError(t, err, "apify: invalid input: request 42 of 60 has no URL")
		_, err = c.RequestQueue("q").BatchAddRequests(ctx, numbered(1), RequestOptions{ClientKey: strings.Repeat("k", 40)})
		assert.ErrorIs(t, err, ErrInvalidClientKey)
		assert.Zero(t, f.hits())
	})
}

func TestBatchDeleteRequests(t *testing.T) {
	ctx := context.Background()

	t.Run("chunks of 25; unprocessed sent again; what stays is reported", func(t *testing.T) {
		refs := make([]RequestRef, 30)
		for i := range refs {
			refs[i] = RequestRef{ID: fmt.Sprintf("r%02d", i)}
		}
		processed := func(from, to int, skip string) string {
			var p []string
			for i := from; i < to; i++ {
				if id := fmt.Sprintf("r%02d", i); id != skip {
					p = append(p, fmt.Sprintf(`{"id":%q}`, id))
				}
			}
			return strings.Join(p, ",")
		}
		locked := `{"id":"r07","uniqueKey":"u7","url":"http://x.test/7"}`
		f, c, _ := setup(t, []reply{
			{status: 200, body: `{"data":{"processedRequests":[` + processed(0, 25, "r07") + `],"unprocessedRequests":[` + locked + `]}}`},
			{status: 200, body: `{"data":{"processedRequests":[],"unprocessedRequests":[` + locked + `]}}`},
			{status: 200, body: `{"data":{"processedRequests":[` + processed(25, 30, "") + `],"unprocessedRequests":[]}}`},
		}, WithMaxRetries(1))
		res, err := c.RequestQueue("q").BatchDeleteRequests(ctx, refs, DeleteRequestOptions{ClientKey: "ck"})
		require.ErrorIs(t, err, ErrUnprocessed)
		assert.Equal(t, []RequestRef{{ID: "r07", UniqueKey: "u7"}}, res.Unprocessed)
		assert.Len(t, res.Processed, 29)
		sent := f.requests()
		require.Len(t, sent, 3)
		assert.Equal(t, "DELETE", sent[1].Method)
		assert.JSONEq(t, `[{"id":"r07","uniqueKey":"u7"}]`, string(sent[1].Body))
		assert.Equal(t, "application/json", sent[1].Header.Get("Content-Type"))
	})

	t.Run("refs checked before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		_, err := c.RequestQueue("q").BatchDeleteRequests(ctx, []RequestRef{{ID: "a"}, {}}, DeleteRequestOptions{})
		require.ErrorIs(t, err, ErrInvalidInput)
		assert.Contains(t, err.Error(), "request 1 of 2 has neither an ID nor a UniqueKey")
		assert.Zero(t, f.hits())
	})
}

func TestMarkHandledReadsThenWritesTheWholeRequest(t *testing.T) {
	stored := `{"id":"req/1","uniqueKey":"u","url":"http://x.test/a","method":"POST","payload":"a=1",
		"headers":{"X-A":"1"},"userData":{"label":"DETAIL"},"futureField":{"kept":true}}`

	t.Run("wire", func(t *testing.T) {
		f, c, _ := setup(t, []reply{
			{status: 200, body: `{"data":` + stored + `}`},
			{status: 200, body: `{"data":{"requestId":"req/1","wasAlreadyPresent":true,"wasAlreadyHandled":false}}`},
		}, WithToken("tok"))
		before := time.Now().UTC().Truncate(time.Millisecond)
		reg, err := c.RequestQueue("q").MarkHandled(context.Background(), "req/1", RequestOptions{ClientKey: "ck"})
		require.NoError(t, err)
		assert.Equal(t, &RequestRegistration{RequestID: "req/1", WasAlreadyPresent: true}, reg)

		reqs := f.requests()
		require.Len(t, reqs, 2)
		assert.Equal(t, "GET", reqs[0].Method)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests/req%2F1", reqs[0].RequestURI)
		assert.Equal(t, "PUT", reqs[1].Method)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests/req%2F1?clientKey=ck", reqs[1].RequestURI)
		assert.Equal(t, "Bearer tok", reqs[1].Header.Get("Authorization"))
		assert.Equal(t, "application/json", reqs[1].Header.Get("Content-Type"))

		var sent map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(reqs[1].Body, &sent))
		var handledAt time.Time
		require.NoError(t, json.Unmarshal(sent["handledAt"], &handledAt))
		assert.False(t, handledAt.Before(before), handledAt)
		assert.Less(t, time.Since(handledAt), time.Minute)
		assert.Regexp(t, `^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$`, string(sent["handledAt"]))
		delete(sent, "handledAt")
		out, _ := json.Marshal(sent)
		assert.JSONEq(t, stored, string(out), "every stored field goes back, even ones this package does not know")
	})

	t.Run("an already handled request is not written", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"id":"r1","uniqueKey":"u","url":"http://x.test","handledAt":"2026-11-29T10:00:00.000Z"}}`}})
		reg, err := c.RequestQueue("q").MarkHandled(context.Background(), "r1", RequestOptions{})
		require.NoError(t, err)
		assert.Equal(t, &RequestRegistration{RequestID: "r1", WasAlreadyPresent: true, WasAlreadyHandled: true}, reg)
		assert.Equal(t, 1, f.hits())
	})

	t.Run("a read of another request is not written back", func(t *testing.T) {
		for _, body := range []string{`{"data":{"id":"other","uniqueKey":"u","url":"x"}}`, `{"data":{"uniqueKey":"u"}}`, `{"data":null}`, `{"data":{"id":7}}`} {
			f, c, _ := setup(t, []reply{{status: 200, body: body}})
			_, err := c.RequestQueue("q").MarkHandled(context.Background(), "r1", RequestOptions{})
			assert.ErrorIs(t, err, ErrUnexpectedResponse, body)
			assert.Equal(t, 1, f.hits(), body)
		}
	})

	t.Run("errors of either call", func(t *testing.T) {
		f, c, _ := setup(t, []reply{apiErr(404, "record-not-found", "no such request")})
		_, err := c.RequestQueue("q").MarkHandled(context.Background(), "r1", RequestOptions{})
		assert.ErrorIs(t, err, ErrNotFound)
		assert.Equal(t, 1, f.hits())

		f, c, _ = setup(t, []reply{{status: 200, body: `{"data":{"id":"r1","uniqueKey":"u","url":"x"}}`}, apiErr(403, "request-handled-or-locked", "locked by another client")})
		_, err = c.RequestQueue("q").MarkHandled(context.Background(), "r1", RequestOptions{ClientKey: "me"})
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "PUT", apiErr.Method)
		assert.Equal(t, "request-handled-or-locked", apiErr.Type)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		_, err := q.MarkHandled(context.Background(), "", RequestOptions{})
		assert.ErrorIs(t, err, ErrInvalidInput)
		_, err = q.MarkHandled(context.Background(), "r1", RequestOptions{ClientKey: "a\nb"})
		assert.ErrorIs(t, err, ErrInvalidClientKey)
		_, err = c.RequestQueue("..").MarkHandled(context.Background(), "r1", RequestOptions{})
		assert.ErrorIs(t, err, ErrInvalidQueueID)
		assert.Zero(t, f.hits())
	})
}
