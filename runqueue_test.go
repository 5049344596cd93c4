package apify

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runPath is where a run handle's calls go, for the run ID "run/7 x": the
// ID escaped as one path segment.
const runPath = "/v2/actor-runs/run%2F7%20x/request-queue"

// Every call of a handle from RunRequestQueue goes below
// /v2/actor-runs/{runId}/request-queue, with the same suffix, query and
// body as on /v2/request-queues/{queueId}: the path bytes on the wire.
func TestRunRequestQueueEveryCallOnTheWire(t *testing.T) {
	for _, ec := range endpointCases() {
		t.Run(ec.name, func(t *testing.T) {
			f, c, _ := setup(t, []reply{{status: ec.status, body: ec.reply}}, WithToken("tok"))
			require.NoError(t, ec.call(context.Background(), c.RunRequestQueue("run/7 x")))
			reqs := f.requests()
			require.Len(t, reqs, 1)
			want, ok := strings.CutPrefix(ec.uri, "/v2/request-queues/q")
			require.True(t, ok, ec.uri)
			assert.Equal(t, ec.method, reqs[0].Method)
			assert.Equal(t, testPrefix+runPath+want, reqs[0].RequestURI)
			assert.Equal(t, "Bearer tok", reqs[0].Header.Get("Authorization"))
			if ec.body != "" {
				assert.JSONEq(t, ec.body, string(reqs[0].Body))
			}
		})
	}

	t.Run("MarkHandled", func(t *testing.T) {
		f, c, _ := setup(t, []reply{
			{status: 200, body: `{"data":{"id":"req/1","uniqueKey":"u","url":"http://x.test/a"}}`},
			{status: 200, body: `{"data":{"requestId":"req/1","wasAlreadyPresent":true,"wasAlreadyHandled":false}}`},
		})
		_, err := c.RunRequestQueue("run/7 x").MarkHandled(context.Background(), "req/1", RequestOptions{ClientKey: "ck"})
		require.NoError(t, err)
		reqs := f.requests()
		require.Len(t, reqs, 2)
		assert.Equal(t, "GET "+testPrefix+runPath+"/requests/req%2F1", reqs[0].Method+" "+reqs[0].RequestURI)
		assert.Equal(t, "PUT "+testPrefix+runPath+"/requests/req%2F1?clientKey=ck", reqs[1].Method+" "+reqs[1].RequestURI)
	})

	t.Run("UnlockAtShutdown", func(t *testing.T) {
		f, c, _ := setup(t, []reply{ok(2)})
		res, err := c.RunRequestQueue("run/7 x").UnlockAtShutdown(context.Background(), "ck", time.Second)
		require.NoError(t, err)
		assert.Equal(t, 2, res.UnlockedCount)
		assert.Equal(t, []string{"POST " + testPrefix + runPath + "/requests/unlock?clientKey=ck"}, methodsAndURIs(f))
	})

	t.Run("Consume", func(t *testing.T) {
		// Its first call releases the key's locks; every call goes below the run.
		f, c, _ := setup(t, []reply{ok(0), apiErr(403, "insufficient-permissions", "No.")})
		_, err := c.RunRequestQueue("run/7 x").Consume(context.Background(), func(context.Context, *Request) error { return nil },
			ConsumeOptions{ClientKey: "ck"})
		require.Error(t, err)
		for _, got := range methodsAndURIs(f) {
			assert.Contains(t, got, " "+testPrefix+runPath+"/", "every call below the run's queue")
		}
		assert.NotEmpty(t, f.requests())
	})
}

func methodsAndURIs(f *fakeAPI) []string {
	var out []string
	for _, r := range f.requests() {
		out = append(out, r.Method+" "+r.RequestURI)
	}
	return out
}

// The cases above are every call: a method added to RequestQueueClient
// without a case (and so without a check of its path under a run) fails here.
func TestRunRequestQueueCasesCoverEveryCall(t *testing.T) {
	covered := map[string]bool{"MarkHandled": true, "UnlockAtShutdown": true, "Consume": true,
		"ID": true, "String": true, "Format": true, "GoString": true}
	for _, ec := range endpointCases() {
		covered[ec.name] = true
	}
	typ := reflect.TypeFor[*RequestQueueClient]()
	for i := range typ.NumMethod() {
		assert.True(t, covered[typ.Method(i).Name], "RequestQueueClient.%s has no wire case", typ.Method(i).Name)
	}
}

// A bad run ID fails every call before any I/O, naming the run ID.
func TestRunRequestQueueValidatesTheRunID(t *testing.T) {
	for _, runID := range []string{"", ".", "..", "run\x00", "\xff"} {
		f, c, _ := setup(t, nil)
		q := c.RunRequestQueue(runID)
		for _, ec := range endpointCases() {
			err := ec.call(context.Background(), q)
			assert.ErrorIs(t, err, ErrInvalidInput, "%q %s", runID, ec.name)
			assert.Contains(t, fmt.Sprint(err), "run ID", "%q %s", runID, ec.name)
		}
		assert.Zero(t, f.hits(), runID)
	}
}

func TestRunRequestQueueHandle(t *testing.T) {
	c, err := NewClient(WithToken(leakToken), WithBaseURL("http://h/proxy"))
	require.NoError(t, err)
	q := c.RunRequestQueue("HG7ML7M8z78YcAPEB")
	assert.Empty(t, q.ID(), "no queue ID: the run names the queue")
	assert.Equal(t, `apify.RequestQueueClient{runID: "HG7ML7M8z78YcAPEB", client: apify.Client{baseURL: http://h/proxy, token: [REDACTED], maxRetries: 4, retryWait: 500ms..30s, timeout: 30s}}`, q.String())
	assert.NotContains(t, formatAll(q)+formatAll(*q), leakMarker)
}
