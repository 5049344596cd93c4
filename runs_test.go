package apify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const rebootReply = `{"data":{"id":"run/1 ?#","status":"RUNNING","stats":{"rebootCount":1}}}`

func TestRebootRunOnTheWire(t *testing.T) {
	f, c, _ := setup(t, []reply{{status: 200, body: rebootReply}}, WithToken("s3cret"))
	require.NoError(t, c.RebootRun(context.Background(), "run/1 ?#"))
	reqs := f.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, "POST", r.Method)
	assert.Equal(t, testPrefix+"/v2/actor-runs/run%2F1%20%3F%23/reboot", r.RequestURI, "one escaped segment, no query")
	assert.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"))
	assert.Equal(t, "application/json", r.Header.Get("Accept"))
	assert.Contains(t, r.Header.Get("User-Agent"), "rqkit-apify-go/")
	assert.Empty(t, r.Body)
	assert.Empty(t, r.Header.Get("Content-Type"), "no body, no Content-Type")
}

func TestRebootRunRefusesBadRunIDsBeforeIO(t *testing.T) {
	f, c, _ := setup(t, nil)
	for _, id := range []string{"", ".", "..", "a\x00b", "a\nb", "\xff"} {
		err := c.RebootRun(context.Background(), id)
		require.ErrorIs(t, err, ErrInvalidInput, "%q", id)
		require.Contains(t, err.Error(), "run ID")
	}
	require.Zero(t, f.hits())
}

func TestRebootRunAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replies  []reply
		wantErr  error
		attempts int
	}{
		{"ok", []reply{{status: 200, body: rebootReply}}, nil, 1},
		{"no data object", []reply{{status: 200, body: `{}`}}, ErrUnexpectedResponse, 1},
		{"not JSON", []reply{{status: 200, body: `<html>`}}, ErrUnexpectedResponse, 1},
		{"unknown run", []reply{apiErr(404, "record-not-found", "Actor run was not found")}, ErrNotFound, 1},
		{"not running", []reply{apiErr(400, "invalid-input", "Only running runs can be rebooted")}, ErrInvalidInput, 1},
		// The platform may have acted on these: a reboot is never repeated.
		{"500", []reply{apiErr(500, "internal-server-error", "x"), {status: 200, body: rebootReply}}, ErrServerError, 1},
		{"502", []reply{{status: 502, body: "bad gateway"}, {status: 200, body: rebootReply}}, ErrServerError, 1},
		{"503", []reply{apiErr(503, "x", "x"), {status: 200, body: rebootReply}}, ErrServerError, 1},
		// A 429 was not processed: retried.
		{"429 then ok", []reply{apiErr(429, "rate-limit-exceeded", "slow down"), {status: 200, body: rebootReply}}, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c, _ := setup(t, tc.replies)
			err := c.RebootRun(context.Background(), "R1")
			if tc.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
			}
			require.Equal(t, tc.attempts, f.hits())
		})
	}
}

// A connection dropped once the request was sent may have rebooted the run:
// the call is not repeated. One that could not be made at all is.
func TestRebootRunNetworkFailures(t *testing.T) {
	var hits atomic.Int32
	drop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(drop.Close)
	c, err := NewClient(WithBaseURL(drop.URL), WithRetryWait(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	err = c.RebootRun(context.Background(), "R1")
	var reqErr *RequestError
	require.ErrorAs(t, err, &reqErr)
	assert.Equal(t, 1, reqErr.Attempts)
	assert.EqualValues(t, 1, hits.Load(), "a reboot the platform may have seen is not sent again")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c, err = NewClient(WithBaseURL("http://"+addr), WithRetryWait(time.Millisecond, 2*time.Millisecond), WithMaxRetries(2))
	require.NoError(t, err)
	err = c.RebootRun(context.Background(), "R1")
	require.ErrorAs(t, err, &reqErr)
	assert.Equal(t, 3, reqErr.Attempts, "a connection that could not be made is tried again")
}
