package apify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// endpointCase is one queue operation, called the way a typical user would.
// The same wire and error-path tests run over every one of them.
type endpointCase struct {
	name       string
	method     string
	uri        string // wanted request target below testPrefix
	body       string // wanted JSON body, "" for none
	idempotent bool
	status     int    // a success status
	reply      string // a success body
	call       func(ctx context.Context, q *RequestQueueClient) error
}

var lockedAt = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func endpointCases() []endpointCase {
	req := Request{UniqueKey: "http://x.test/a", URL: "http://x.test/a", UserData: json.RawMessage(`{"label":"A"}`)}
	handled := req
	handled.ID = "req/1"
	handled.HandledAt = lockedAt
	return append([]endpointCase{
		{
			name: "UnlockRequests", method: "POST", uri: "/v2/request-queues/q/requests/unlock?clientKey=ck",
			idempotent: true, status: 200, reply: `{"data":{"unlockedCount":1}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.UnlockRequests(ctx, "ck")
				return err
			},
		},
		{
			name: "ListAndLockHead", method: "POST", uri: "/v2/request-queues/q/head/lock?limit=10&lockSecs=60&clientKey=ck",
			idempotent: false, status: 201,
			reply: `{"data":{"limit":10,"lockSecs":60,"hadMultipleClients":false,"queueHasLockedRequests":true,"clientKey":"ck","queueModifiedAt":"2026-11-29T10:00:00.000Z","items":[{"id":"r1","uniqueKey":"u1","url":"http://x.test/1","method":"GET","retryCount":0,"lockExpiresAt":"2026-11-29T10:01:00.000Z"}]}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.ListAndLockHead(ctx, LockHeadOptions{Limit: 10, LockDuration: time.Minute, ClientKey: "ck"})
				return err
			},
		},
		{
			name: "ListHead", method: "GET", uri: "/v2/request-queues/q/head?limit=5&clientKey=ck",
			idempotent: true, status: 200,
			reply: `{"data":{"limit":5,"hadMultipleClients":false,"queueModifiedAt":"2026-11-29T10:00:00.000Z","items":[{"id":"r1","uniqueKey":"u1","url":"http://x.test/1","method":"GET","retryCount":0}]}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.ListHead(ctx, ListHeadOptions{Limit: 5, ClientKey: "ck"})
				return err
			},
		},
		{
			name: "ProlongRequestLock", method: "PUT", uri: "/v2/request-queues/q/requests/req%2F1/lock?lockSecs=120&clientKey=ck&forefront=true",
			idempotent: true, status: 200, reply: `{"data":{"lockExpiresAt":"2026-11-29T10:02:00.000Z"}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.ProlongRequestLock(ctx, "req/1", ProlongLockOptions{LockDuration: 2 * time.Minute, ClientKey: "ck", Forefront: true})
				return err
			},
		},
		{
			name: "DeleteRequestLock", method: "DELETE", uri: "/v2/request-queues/q/requests/req%2F1/lock?clientKey=ck",
			idempotent: true, status: 204, reply: ``,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				return q.DeleteRequestLock(ctx, "req/1", DeleteLockOptions{ClientKey: "ck"})
			},
		},
		{
			name: "AddRequest", method: "POST", uri: "/v2/request-queues/q/requests?clientKey=ck&forefront=true",
			body:       `{"uniqueKey":"http://x.test/a","url":"http://x.test/a","userData":{"label":"A"}}`,
			idempotent: true, status: 201, reply: `{"data":{"requestId":"r1","wasAlreadyPresent":false,"wasAlreadyHandled":false}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.AddRequest(ctx, req, RequestOptions{ClientKey: "ck", Forefront: true})
				return err
			},
		},
		{
			name: "BatchAddRequests", method: "POST", uri: "/v2/request-queues/q/requests/batch?clientKey=ck",
			body:       `[{"uniqueKey":"http://x.test/a","url":"http://x.test/a","userData":{"label":"A"}}]`,
			idempotent: true, status: 201, reply: `{"data":{"processedRequests":[{"requestId":"r1","uniqueKey":"http://x.test/a","wasAlreadyPresent":false,"wasAlreadyHandled":false}],"unprocessedRequests":[]}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.BatchAddRequests(ctx, []Request{req}, RequestOptions{ClientKey: "ck"})
				return err
			},
		},
		{
			name: "GetRequest", method: "GET", uri: "/v2/request-queues/q/requests/req%2F1",
			idempotent: true, status: 200, reply: `{"data":{"id":"req/1","uniqueKey":"u","url":"http://x.test/a"}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.GetRequest(ctx, "req/1")
				return err
			},
		},
		{
			name: "UpdateRequest", method: "PUT", uri: "/v2/request-queues/q/requests/req%2F1?clientKey=ck",
			body:       `{"id":"req/1","uniqueKey":"http://x.test/a","url":"http://x.test/a","userData":{"label":"A"},"handledAt":"2026-11-29T10:00:00Z"}`,
			idempotent: true, status: 200, reply: `{"data":{"requestId":"req/1","wasAlreadyPresent":true,"wasAlreadyHandled":false}}`,
			call: func(ctx context.Context, q *RequestQueueClient) error {
				_, err := q.UpdateRequest(ctx, handled, RequestOptions{ClientKey: "ck"})
				return err
			},
		},
	}, surfaceEndpointCases()...)
}

func TestEveryEndpointWire(t *testing.T) {
	for _, ec := range endpointCases() {
		t.Run(ec.name, func(t *testing.T) {
			f, c, _ := setup(t, []reply{{status: ec.status, body: ec.reply}}, WithToken("tok"))
			require.NoError(t, ec.call(context.Background(), c.RequestQueue("q")))
			reqs := f.requests()
			require.Len(t, reqs, 1)
			r := reqs[0]
			assert.Equal(t, ec.method, r.Method)
			assert.Equal(t, testPrefix+ec.uri, r.RequestURI)
			assert.Equal(t, "application/json", r.Header.Get("Accept"))
			assert.Equal(t, "Bearer tok", r.Header.Get("Authorization"))
			assert.Equal(t, wantUserAgent(false, ""), r.Header.Get("User-Agent"))
			if ec.body == "" {
				assert.Empty(t, r.Body)
				assert.Empty(t, r.Header.Values("Content-Type"))
			} else {
				assert.JSONEq(t, ec.body, string(r.Body))
				assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
				assert.Equal(t, int64(len(r.Body)), r.ContentLength)
			}
		})
	}
}

func TestEveryEndpointErrorPaths(t *testing.T) {
	for _, ec := range endpointCases() {
		t.Run(ec.name, func(t *testing.T) {
			path := testPrefix + strings.SplitN(ec.uri, "?", 2)[0]

			t.Run("API error", func(t *testing.T) {
				f, c, _ := setup(t, []reply{apiErr(404, "record-not-found", "Queue was not found")})
				err := ec.call(context.Background(), c.RequestQueue("q"))
				var apiErr *APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, &APIError{StatusCode: 404, Type: "record-not-found", Message: "Queue was not found",
					Method: ec.method, Path: path, Attempts: 1}, withoutHeader(apiErr))
				assert.ErrorIs(t, err, ErrNotFound)
				assert.Equal(t, 1, f.hits())
			})

			t.Run("invalid queue ID before any I/O", func(t *testing.T) {
				f, c, _ := setup(t, nil)
				err := ec.call(context.Background(), c.RequestQueue("bad\x00id"))
				assert.ErrorIs(t, err, ErrInvalidQueueID)
				assert.Zero(t, f.hits())
			})

			t.Run("2xx that is not the envelope", func(t *testing.T) {
				if ec.status == 204 {
					t.Skip("a 204 has no body to check")
				}
				f, c, _ := setup(t, []reply{{status: ec.status, body: `{"data":null}`}})
				err := ec.call(context.Background(), c.RequestQueue("q"))
				assert.ErrorIs(t, err, ErrUnexpectedResponse)
				assert.Equal(t, 1, f.hits(), "not retried")
			})

			t.Run("retried after 503 only when safe", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					s := &fakeAPI{replies: []reply{{status: 503}, {status: ec.status, body: ec.reply}}}
					err := ec.call(context.Background(), memClient(t, s).RequestQueue("q"))
					if ec.idempotent {
						require.NoError(t, err)
						assert.Equal(t, 2, s.hits())
					} else {
						assert.ErrorIs(t, err, ErrServerError)
						assert.Equal(t, 1, s.hits(), "a lost answer must not take a second batch of locks")
					}
				})
			})

			t.Run("always retried after 429", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					s := &fakeAPI{replies: []reply{{status: 429, header: map[string]string{"Retry-After": "1"}}, {status: ec.status, body: ec.reply}}}
					require.NoError(t, ec.call(context.Background(), memClient(t, s).RequestQueue("q")))
					assert.Equal(t, []time.Duration{time.Second}, s.waits())
				})
			})

			t.Run("always retried when no connection could be made", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var calls atomic.Int32
					s := &fakeAPI{replies: []reply{{status: ec.status, body: ec.reply}}}
					c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
						if calls.Add(1) == 1 {
							return nil, netErr("dial", syscall.ECONNREFUSED)
						}
						return handlerTransport{s}.RoundTrip(r)
					}))
					require.NoError(t, ec.call(context.Background(), c.RequestQueue("q")))
					assert.Equal(t, int32(2), calls.Load())
				})
			})

			t.Run("reset after sending is retried only when safe", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var calls atomic.Int32
					s := &fakeAPI{replies: []reply{{status: ec.status, body: ec.reply}}}
					c := rtClient(t, rtFunc(func(r *http.Request) (*http.Response, error) {
						if calls.Add(1) == 1 {
							return nil, netErr("read", syscall.ECONNRESET)
						}
						return handlerTransport{s}.RoundTrip(r)
					}))
					err := ec.call(context.Background(), c.RequestQueue("q"))
					if ec.idempotent {
						require.NoError(t, err)
						assert.Equal(t, int32(2), calls.Load())
					} else {
						assert.ErrorIs(t, err, syscall.ECONNRESET)
						assert.Equal(t, int32(1), calls.Load())
					}
				})
			})

			t.Run("cancelled context", func(t *testing.T) {
				f, c, _ := setup(t, nil)
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				err := ec.call(ctx, c.RequestQueue("q"))
				assert.ErrorIs(t, err, context.Canceled)
				assert.Zero(t, f.hits())
			})
		})
	}
}

func TestListAndLockHead(t *testing.T) {
	t.Run("decodes the result", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 201, body: endpointCases()[1].reply}})
		head, err := c.RequestQueue("q").ListAndLockHead(context.Background(), LockHeadOptions{Limit: 10, LockDuration: time.Minute, ClientKey: "ck"})
		require.NoError(t, err)
		assert.Equal(t, &LockedHead{
			Items: []LockedRequest{{ID: "r1", UniqueKey: "u1", URL: "http://x.test/1", Method: "GET",
				LockExpiresAt: time.Date(2026, 11, 29, 10, 1, 0, 0, time.UTC)}},
			LockDuration:           time.Minute,
			QueueHasLockedRequests: true,
			QueueModifiedAt:        lockedAt,
			ClientKey:              "ck",
		}, head)
	})

	t.Run("an empty head", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 201, body: `{"data":{"limit":1,"lockSecs":1,"hadMultipleClients":true,"queueModifiedAt":"2026-11-29T10:00:00Z","items":[]}}`}})
		head, err := c.RequestQueue("q").ListAndLockHead(context.Background(), LockHeadOptions{Limit: 1, LockDuration: time.Second})
		require.NoError(t, err)
		assert.Empty(t, head.Items)
		assert.NotNil(t, head.Items)
		assert.True(t, head.HadMultipleClients)
	})

	t.Run("the zero value means the documented defaults", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 201, body: `{"data":{"items":[]}}`}})
		_, err := c.RequestQueue("q").ListAndLockHead(context.Background(), LockHeadOptions{})
		require.NoError(t, err)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/head/lock?limit=25&lockSecs=60", f.requests()[0].RequestURI)
		assert.Equal(t, 25, DefaultLockHeadLimit)
		assert.Equal(t, time.Minute, DefaultLockDuration)
	})

	t.Run("lock durations are whole seconds, rounded up", func(t *testing.T) {
		for d, want := range map[time.Duration]string{
			time.Nanosecond: "1", time.Second: "1", 1500 * time.Millisecond: "2", time.Hour: "3600",
			MaxLockDuration - time.Nanosecond: "86400", MaxLockDuration: "86400",
		} {
			f, c, _ := setup(t, []reply{{status: 201, body: `{"data":{"items":[]}}`}})
			_, err := c.RequestQueue("q").ListAndLockHead(context.Background(), LockHeadOptions{Limit: 1, LockDuration: d})
			require.NoError(t, err)
			assert.Equal(t, testPrefix+"/v2/request-queues/q/head/lock?limit=1&lockSecs="+want, f.requests()[0].RequestURI, d)
		}
	})

	t.Run("items must carry an id and an expiry", func(t *testing.T) {
		for _, body := range []string{
			`{"data":{"lockSecs":1}}`,
			`{"data":{"items":null}}`,
			`{"data":{"items":[{"id":"","lockExpiresAt":"2026-11-29T10:00:00Z"}]}}`,
			`{"data":{"items":[{"id":"r1"}]}}`,
			`{"data":{"items":[{"id":"r1","lockExpiresAt":"tomorrow"}]}}`,
		} {
			_, c, _ := setup(t, []reply{{status: 201, body: body}})
			_, err := c.RequestQueue("q").ListAndLockHead(context.Background(), LockHeadOptions{Limit: 1, LockDuration: time.Second})
			assert.ErrorIs(t, err, ErrUnexpectedResponse, body)
		}
	})

	t.Run("validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		for _, tt := range []struct {
			opts LockHeadOptions
			want error
			msg  string
		}{
			{LockHeadOptions{Limit: -1, LockDuration: time.Second}, ErrInvalidInput, "LockHeadOptions.Limit is -1; it must be 1 to 25 (or 0 for 25)"},
			{LockHeadOptions{Limit: 26, LockDuration: time.Second}, ErrInvalidInput, "LockHeadOptions.Limit is 26; it must be 1 to 25"},
			{LockHeadOptions{Limit: 1, LockDuration: -time.Second}, ErrInvalidInput, "LockHeadOptions.LockDuration is -1s; it must not be negative (0 means 1m0s)"},
			{LockHeadOptions{Limit: 1, LockDuration: time.Duration(math.MaxInt64)}, ErrInvalidInput, "LockHeadOptions.LockDuration is 2562047h47m16.854775807s; it must be at most 24h0m0s"},
			{LockHeadOptions{Limit: 1, LockDuration: MaxLockDuration + time.Nanosecond}, ErrInvalidInput, "it must be at most 24h0m0s"},
			{LockHeadOptions{Limit: 1, LockDuration: time.Second, ClientKey: strings.Repeat("k", 33)}, ErrInvalidClientKey, "33 characters"},
		} {
			_, err := q.ListAndLockHead(context.Background(), tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})
}

func TestProlongAndDeleteRequestLock(t *testing.T) {
	t.Run("prolong returns the new expiry", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"lockExpiresAt":"2026-11-29T10:02:00.5Z"}}`}})
		exp, err := c.RequestQueue("q").ProlongRequestLock(context.Background(), "r1", ProlongLockOptions{LockDuration: time.Minute, ClientKey: "ck"})
		require.NoError(t, err)
		assert.Equal(t, time.Date(2026, 11, 29, 10, 2, 0, 5e8, time.UTC), exp)
	})

	t.Run("prolong's zero value means the default lock time", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"lockExpiresAt":"2026-11-29T10:02:00Z"}}`}})
		_, err := c.RequestQueue("q").ProlongRequestLock(context.Background(), "r1", ProlongLockOptions{})
		require.NoError(t, err)
		assert.Equal(t, testPrefix+"/v2/request-queues/q/requests/r1/lock?lockSecs=60", f.requests()[0].RequestURI)
	})

	t.Run("prolong needs an expiry back", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{}}`}})
		_, err := c.RequestQueue("q").ProlongRequestLock(context.Background(), "r1", ProlongLockOptions{LockDuration: time.Minute})
		assert.ErrorIs(t, err, ErrUnexpectedResponse)
	})

	t.Run("validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		for _, tt := range []struct {
			err  error
			want error
			msg  string
		}{
			{func() error {
				_, err := q.ProlongRequestLock(context.Background(), "", ProlongLockOptions{LockDuration: time.Second})
				return err
			}(), ErrInvalidInput, "the request ID is empty"},
			{func() error {
				_, err := q.ProlongRequestLock(context.Background(), "..", ProlongLockOptions{LockDuration: time.Second})
				return err
			}(), ErrInvalidInput, "dot segment"},
			{func() error {
				_, err := q.ProlongRequestLock(context.Background(), "r1", ProlongLockOptions{LockDuration: -time.Nanosecond})
				return err
			}(), ErrInvalidInput, "ProlongLockOptions.LockDuration is -1ns; it must not be negative"},
			{func() error {
				_, err := q.ProlongRequestLock(context.Background(), "r1", ProlongLockOptions{LockDuration: time.Duration(math.MaxInt64)})
				return err
			}(), ErrInvalidInput, "ProlongLockOptions.LockDuration is 2562047h47m16.854775807s; it must be at most 24h0m0s"},
			{q.DeleteRequestLock(context.Background(), "r\n1", DeleteLockOptions{}), ErrInvalidInput, "control character (U+000A) at byte 1"},
			{q.DeleteRequestLock(context.Background(), "r1", DeleteLockOptions{ClientKey: "k\x00"}), ErrInvalidClientKey, "control character"},
		} {
			require.ErrorIs(t, tt.err, tt.want)
			assert.Contains(t, tt.err.Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})
}

func TestAddAndBatchAddRequests(t *testing.T) {
	t.Run("add returns the registration", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"requestId":"r9","wasAlreadyPresent":true,"wasAlreadyHandled":true}}`}})
		reg, err := c.RequestQueue("q").AddRequest(context.Background(), Request{UniqueKey: "u", URL: "http://x.test"}, RequestOptions{})
		require.NoError(t, err)
		assert.Equal(t, &RequestRegistration{RequestID: "r9", WasAlreadyPresent: true, WasAlreadyHandled: true}, reg)
	})

	t.Run("validation before any I/O", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		q := c.RequestQueue("q")
		ok := Request{UniqueKey: "u", URL: "http://x.test"}
		for _, tt := range []struct {
			err error
			msg string
		}{
			{addErr(q, Request{URL: "http://x.test"}), "the request has no UniqueKey"},
			{addErr(q, Request{UniqueKey: "u"}), "the request has no URL"},
			{addErr(q, Request{UniqueKey: "u", URL: "http://x.test", UserData: json.RawMessage(`{`)}), "not valid JSON"},
			{batchErr(q, []Request{ok, {UniqueKey: "v"}}), "request 1 of 2 has no URL"},
			{func() error {
				_, err := q.UpdateRequest(context.Background(), ok, RequestOptions{})
				return err
			}(), "the request ID is empty"},
		} {
			require.ErrorIs(t, tt.err, ErrInvalidInput)
			assert.Contains(t, tt.err.Error(), tt.msg)
		}
		assert.Zero(t, f.hits())
	})
}

func addErr(q *RequestQueueClient, r Request) error {
	_, err := q.AddRequest(context.Background(), r, RequestOptions{})
	return err
}

func batchErr(q *RequestQueueClient, rs []Request) error {
	_, err := q.BatchAddRequests(context.Background(), rs, RequestOptions{})
	return err
}

func TestGetRequestKeepsEveryField(t *testing.T) {
	body := `{"data":{"id":"r1","uniqueKey":"u","url":"http://x.test/a","method":"POST","retryCount":2,
		"loadedUrl":"http://x.test/b","payload":"p=1","headers":{"X-A":"1"},"userData":{"label":"DETAIL","n":[1,2]},
		"noRetry":true,"errorMessages":["boom"],"handledAt":"2026-11-29T10:00:00.000Z"}}`
	_, c, _ := setup(t, []reply{{status: 200, body: body}})
	r, err := c.RequestQueue("q").GetRequest(context.Background(), "r1")
	require.NoError(t, err)
	assert.Equal(t, &Request{
		ID: "r1", UniqueKey: "u", URL: "http://x.test/a", Method: "POST", RetryCount: 2, LoadedURL: "http://x.test/b",
		Payload: json.RawMessage(`"p=1"`), Headers: json.RawMessage(`{"X-A":"1"}`), UserData: json.RawMessage(`{"label":"DETAIL","n":[1,2]}`),
		NoRetry: true, ErrorMessages: []string{"boom"}, HandledAt: lockedAt,
	}, r)

	// Written back, nothing is lost.
	out, err := json.Marshal(r)
	require.NoError(t, err)
	var in struct{ Data json.RawMessage }
	require.NoError(t, json.Unmarshal([]byte(body), &in))
	assert.JSONEq(t, strings.Replace(string(in.Data), ".000Z", "Z", 1), string(out))
}

func TestDefaultClientKey(t *testing.T) {
	t.Run("the Actor run ID, cut to 32 characters", func(t *testing.T) {
		t.Setenv("ACTOR_RUN_ID", "HG7ML7M8z78YcAPEBHG7ML7M8z78YcAPEBxx")
		t.Setenv("APIFY_ACTOR_RUN_ID", "older")
		assert.Equal(t, "HG7ML7M8z78YcAPEBHG7ML7M8z78YcAP", DefaultClientKey())
	})
	t.Run("the older variable", func(t *testing.T) {
		t.Setenv("ACTOR_RUN_ID", "")
		t.Setenv("APIFY_ACTOR_RUN_ID", "run-older")
		assert.Equal(t, "run-older", DefaultClientKey())
	})
	t.Run("a random key made once per process", func(t *testing.T) {
		t.Setenv("ACTOR_RUN_ID", "")
		t.Setenv("APIFY_ACTOR_RUN_ID", "")
		k := DefaultClientKey()
		assert.Regexp(t, `^[0-9a-f]{32}$`, k)
		assert.Equal(t, k, DefaultClientKey())
		require.NoError(t, validateClientKey(k))
	})
	t.Run("an unusable run ID is skipped", func(t *testing.T) {
		t.Setenv("ACTOR_RUN_ID", "bad\nid")
		t.Setenv("APIFY_ACTOR_RUN_ID", "")
		assert.Regexp(t, `^[0-9a-f]{32}$`, DefaultClientKey())
	})
	assert.Equal(t, "žluť", cutRunes("žluťoučký", 4))
}

func TestUnlockAtShutdown(t *testing.T) {
	t.Run("unlocks after the parent context is cancelled", func(t *testing.T) {
		f, c, _ := setup(t, []reply{ok(4)})
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
		cancel() // SIGTERM arrived: the main context is gone
		res, err := c.RequestQueue("q").UnlockAtShutdown(ctx, "ck", time.Second)
		require.NoError(t, err)
		assert.Equal(t, 4, res.UnlockedCount)
		assert.Equal(t, 1, f.hits())
	})

	t.Run("keeps the parent's values", func(t *testing.T) {
		h := &ctxHandler{}
		_, c, _ := setup(t, []reply{ok(1)}, WithLogger(slogNew(h)))
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
		cancel()
		_, err := c.RequestQueue("q").UnlockAtShutdown(ctx, "ck", time.Second)
		require.NoError(t, err)
		require.NotEmpty(t, h.records)
		assert.Equal(t, "trace-1", h.records[0]["ctx"])
	})

	t.Run("cannot hang the exit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone))
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockAtShutdown(context.Background(), "ck", 2*time.Second)
			assert.Equal(t, 2*time.Second, time.Since(start))
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
	})

	t.Run("zero timeout means the default", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := memClient(t, http.HandlerFunc(blockUntilDone), WithTimeout(time.Hour))
			start := time.Now()
			_, err := c.RequestQueue("q").UnlockAtShutdown(context.Background(), "ck", 0)
			assert.Equal(t, DefaultShutdownTimeout, time.Since(start))
			assert.True(t, errors.Is(err, context.DeadlineExceeded), fmt.Sprint(err))
		})
	})
}

func TestListHead(t *testing.T) {
	f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"limit":100,"hadMultipleClients":true,"queueModifiedAt":"2026-11-29T10:00:00Z","items":[{"id":"r1","uniqueKey":"u1","url":"http://x.test/1","method":"GET","retryCount":3}]}}`}})
	q := c.RequestQueue("q")
	head, err := q.ListHead(context.Background(), ListHeadOptions{})
	require.NoError(t, err)
	assert.Equal(t, &QueueHead{
		Items:              []HeadRequest{{ID: "r1", UniqueKey: "u1", URL: "http://x.test/1", Method: "GET", RetryCount: 3}},
		HadMultipleClients: true,
		QueueModifiedAt:    lockedAt,
	}, head)
	assert.Equal(t, testPrefix+"/v2/request-queues/q/head", f.requests()[0].RequestURI, "limit 0 is left to the API")

	_, err = q.ListHead(context.Background(), ListHeadOptions{Limit: -1})
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.Contains(t, err.Error(), "ListHeadOptions.Limit is -1")
	assert.Equal(t, 1, f.hits())

	f.script(reply{status: 200, body: `{"data":{"limit":1}}`})
	_, err = q.ListHead(context.Background(), ListHeadOptions{})
	assert.ErrorIs(t, err, ErrUnexpectedResponse)
}
