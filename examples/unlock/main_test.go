package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOffline(t *testing.T) {
	t.Setenv("APIFY_TOKEN", "")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(&out, &errOut), errOut.String())
	assert.Regexp(t, `^APIFY_TOKEN is not set: running against the in-process request-queue emulator
added 25 requests to queue [A-Za-z0-9]{17}
locked 10 requests for an hour as client "example-crawler"; the head shows 15 pending
unlocked 10 requests
the head shows 25 pending again
$`, out.String())
	assert.Empty(t, errOut.String())
}

func TestOnline(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithToken("example-token"))
	queueID := srv.CreateQueue("q")
	srv.AddRequests(queueID, apifytest.Request{URL: "https://a.test/1"}, apifytest.Request{URL: "https://a.test/2"})
	_, err := srv.Client().RequestQueue(queueID).ListAndLockHead(context.Background(),
		apify.LockHeadOptions{Limit: 2, LockDuration: time.Hour, ClientKey: "crawler-7"})
	require.NoError(t, err)

	t.Setenv("APIFY_TOKEN", "example-token")
	t.Setenv("APIFY_API_BASE_URL", srv.URL)
	t.Setenv("APIFY_QUEUE_ID", queueID)
	t.Setenv("APIFY_CLIENT_KEY", "crawler-7")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(&out, &errOut), errOut.String())
	assert.Equal(t, "unlocked 2 requests in queue "+queueID+" held by client crawler-7\n", out.String())
	assert.Empty(t, srv.LockedBy(queueID, "crawler-7"))

	t.Run("inside an Actor run, the run's default queue", func(t *testing.T) {
		_, err := srv.Client().RequestQueue(queueID).ListAndLockHead(context.Background(),
			apify.LockHeadOptions{Limit: 2, LockDuration: time.Hour, ClientKey: "crawler-7"})
		require.NoError(t, err)
		t.Setenv("APIFY_QUEUE_ID", "")
		t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", queueID)
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(&out, &errOut), errOut.String())
		assert.Equal(t, "unlocked 2 requests in queue "+queueID+" held by client crawler-7\n", out.String())
	})

	t.Run("a missing queue ID says what to set", func(t *testing.T) {
		t.Setenv("APIFY_QUEUE_ID", "")
		t.Setenv("ACTOR_DEFAULT_REQUEST_QUEUE_ID", "")
		t.Setenv("APIFY_DEFAULT_REQUEST_QUEUE_ID", "")
		var out, errOut bytes.Buffer
		assert.Equal(t, 1, run(&out, &errOut))
		assert.Contains(t, errOut.String(), "APIFY_QUEUE_ID is not set")
	})

	t.Run("an API error names the status and type", func(t *testing.T) {
		t.Setenv("APIFY_QUEUE_ID", "no-such-queue")
		var out, errOut bytes.Buffer
		assert.Equal(t, 1, run(&out, &errOut))
		assert.Contains(t, errOut.String(), "the API answered 404 record-not-found")
		assert.NotContains(t, errOut.String(), "example-token")
	})
}
