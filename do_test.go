package apify

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type runInfo struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func TestDoWire(t *testing.T) {
	t.Run("GET with a query, data decoded into out", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"id":"abc","status":"RUNNING","extra":1}}`}}, WithToken("tok"), WithUserAgent("my-sdk/1.0"))
		var run runInfo
		require.NoError(t, c.Do(context.Background(), "GET", "/actor-runs/abc", url.Values{"waitForFinish": {"60"}}, nil, &run))
		assert.Equal(t, runInfo{ID: "abc", Status: "RUNNING"}, run)
		r := f.requests()[0]
		assert.Equal(t, "GET", r.Method)
		assert.Equal(t, testPrefix+"/v2/actor-runs/abc?waitForFinish=60", r.RequestURI)
		assert.Equal(t, "Bearer tok", r.Header.Get("Authorization"))
		assert.Equal(t, "application/json", r.Header.Get("Accept"))
		assert.Equal(t, wantUserAgent(false, "my-sdk/1.0"), r.Header.Get("User-Agent"))
		assert.Empty(t, r.Body)
		assert.Empty(t, r.Header.Values("Content-Type"))
	})

	t.Run("POST with a body marshalled as JSON", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 201, body: `{"data":{"id":"new","status":"READY"}}`}})
		var run runInfo
		body := map[string]any{"memory": 1024, "build": "latest"}
		require.NoError(t, c.Do(context.Background(), "POST", "/acts/user~actor/runs", nil, body, &run))
		assert.Equal(t, "new", run.ID)
		r := f.requests()[0]
		assert.Equal(t, testPrefix+"/v2/acts/user~actor/runs", r.RequestURI)
		assert.JSONEq(t, `{"memory":1024,"build":"latest"}`, string(r.Body))
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		assert.Equal(t, int64(len(r.Body)), r.ContentLength)
	})

	t.Run("a json.RawMessage body goes as it is; a nil pointer is no body", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 204}})
		require.NoError(t, c.Do(context.Background(), "PUT", "/key-value-stores/s/records/OUTPUT", nil, json.RawMessage(`{"a": [1, 2]}`), nil))
		var none *runInfo
		require.NoError(t, c.Do(context.Background(), "DELETE", "/key-value-stores/s/records/OUTPUT", nil, none, nil))
		reqs := f.requests()
		assert.Equal(t, `{"a": [1, 2]}`, string(reqs[0].Body))
		assert.Empty(t, reqs[1].Body)
		assert.Empty(t, reqs[1].Header.Values("Content-Type"))
	})

	t.Run("each segment is escaped, once", func(t *testing.T) {
		f, c, _ := setup(t, nil)
		require.NoError(t, c.Do(context.Background(), "GET", "/key-value-stores/jane~my-store/records/a b;c", nil, nil, nil))
		assert.Equal(t, testPrefix+"/v2/key-value-stores/jane~my-store/records/a%20b%3Bc", f.requests()[0].RequestURI)
	})

	t.Run("a response up to 32 MiB is read", func(t *testing.T) {
		big := strings.Repeat("x", 2<<20) // over the 1 MiB bound of the queue calls
		_, c, _ := setup(t, []reply{{status: 200, body: `{"data":{"id":"` + big + `"}}`}})
		var run runInfo
		require.NoError(t, c.Do(context.Background(), "GET", "/actor-runs/abc", nil, nil, &run))
		assert.Len(t, run.ID, 2<<20)
	})
}

func TestDoResponses(t *testing.T) {
	t.Run("an API error is an *APIError with the response's header", func(t *testing.T) {
		f, c, _ := setup(t, []reply{{status: 404, header: map[string]string{"X-RateLimit-Limit": "60"},
			body: `{"error":{"type":"record-not-found","message":"Actor run was not found"}}`}})
		var run runInfo
		err := c.Do(context.Background(), "GET", "/actor-runs/nope", nil, nil, &run)
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		assert.ErrorIs(t, err, ErrNotFound)
		assert.Equal(t, "GET", apiErr.Method)
		assert.Equal(t, testPrefix+"/v2/actor-runs/nope", apiErr.Path)
		assert.Equal(t, "60", apiErr.Header.Get("X-RateLimit-Limit"))
		assert.Equal(t, "apify: GET "+testPrefix+"/v2/actor-runs/nope: 404 record-not-found: Actor run was not found", err.Error())
		assert.Equal(t, 1, f.hits())
	})

	for name, body := range map[string]string{
		"no envelope":      `{"id":"abc"}`,
		"data null":        `{"data":null}`,
		"not JSON":         `<html>`,
		"no body":          ``,
		"data of a type":   `{"data":{"id":7}}`,
		"data not decoded": `{"data":[1]}`,
	} {
		t.Run("a 2xx that does not decode into out: "+name, func(t *testing.T) {
			f, c, _ := setup(t, []reply{{status: 200, body: body}})
			var run runInfo
			err := c.Do(context.Background(), "GET", "/actor-runs/abc", nil, nil, &run)
			assert.ErrorIs(t, err, ErrUnexpectedResponse)
			assert.Equal(t, 1, f.hits(), "not retried")
		})
	}

	t.Run("with a nil out, the body is not decoded", func(t *testing.T) {
		_, c, _ := setup(t, []reply{{status: 200, body: `not json`}})
		assert.NoError(t, c.Do(context.Background(), "POST", "/actor-runs/abc/abort", nil, nil, nil))
	})
}

// GET, PUT and DELETE are retried after a 503; POST and PATCH are not (the
// API may have acted); all are retried after a 429.
func TestDoRetriesByMethod(t *testing.T) {
	for method, idempotent := range map[string]bool{"GET": true, "PUT": true, "DELETE": true, "POST": false, "PATCH": false} {
		t.Run(method, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &fakeAPI{replies: []reply{{status: 503}, {status: 200, body: `{"data":{"id":"abc"}}`}}}
				c := memClient(t, s)
				var run runInfo
				err := c.Do(context.Background(), method, "/actor-runs/abc", nil, nil, &run)
				if idempotent {
					require.NoError(t, err)
					assert.Equal(t, 2, s.hits())
				} else {
					assert.ErrorIs(t, err, ErrServerError)
					assert.Equal(t, 1, s.hits())
				}

				s.script(reply{status: 429, header: map[string]string{"Retry-After": "1"}}, reply{status: 200, body: `{"data":{"id":"abc"}}`})
				require.NoError(t, c.Do(context.Background(), method, "/actor-runs/abc", nil, nil, &run))
			})
		})
	}
}

func TestDoValidatesBeforeIO(t *testing.T) {
	var run runInfo
	for _, tc := range []struct {
		name, method, path string
		query              url.Values
		body, out          any
		want               string
	}{
		{"lower-case method", "get", "/actor-runs/abc", nil, nil, nil, `the method "get" is not GET, POST, PUT, PATCH or DELETE`},
		{"HEAD", "HEAD", "/actor-runs/abc", nil, nil, nil, "is not GET, POST"},
		{"relative path", "GET", "actor-runs/abc", nil, nil, nil, `does not start with "/"`},
		{"empty path", "GET", "", nil, nil, nil, `does not start with "/"`},
		{"/v2 given", "GET", "/v2/actor-runs/abc", nil, nil, nil, "starts with /v2, which Do adds"},
		{"query in the path", "GET", "/actor-runs/abc?token=secret", nil, nil, nil, "holds a query or a fragment"},
		{"fragment", "GET", "/actor-runs/abc#x", nil, nil, nil, "holds a query or a fragment"},
		{"escaped path", "GET", "/actor-runs/a%2Fb", nil, nil, nil, "give it unescaped"},
		{"dot-dot", "GET", "/actor-runs/../users/me", nil, nil, nil, `has a ".." segment`},
		{"dot", "GET", "/actor-runs/./abc", nil, nil, nil, `has a "." segment`},
		{"double slash", "GET", "/actor-runs//abc", nil, nil, nil, "empty segment"},
		{"trailing slash", "GET", "/actor-runs/abc/", nil, nil, nil, "empty segment"},
		{"root", "GET", "/", nil, nil, nil, "empty segment"},
		{"control character", "GET", "/actor-runs/a\nb", nil, nil, nil, "control character (U+000A)"},
		{"not UTF-8", "GET", "/actor-runs/\xff", nil, nil, nil, "not valid UTF-8"},
		{"token in the query", "GET", "/actor-runs/abc", url.Values{"Token": {"secret"}}, nil, nil, "never goes in the URL"},
		{"body that does not marshal", "POST", "/actor-runs", nil, map[string]any{"f": func() {}}, nil, "does not marshal to JSON"},
		{"[]byte body", "POST", "/actor-runs", nil, []byte(`{}`), nil, "pass a json.RawMessage"},
		{"raw body not JSON", "POST", "/actor-runs", nil, json.RawMessage(`{`), nil, "not valid JSON"},
		{"out not a pointer", "GET", "/actor-runs/abc", nil, nil, run, "out is a apify.runInfo; it must be a non-nil pointer"},
		{"out a nil pointer", "GET", "/actor-runs/abc", nil, nil, (*runInfo)(nil), "must be a non-nil pointer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c, _ := setup(t, nil, WithToken(leakToken))
			err := c.Do(context.Background(), tc.method, tc.path, tc.query, tc.body, tc.out)
			require.ErrorIs(t, err, ErrInvalidInput)
			assert.Contains(t, err.Error(), "apify: Do: invalid input: ")
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "secret")
			assert.Zero(t, f.hits())
		})
	}
}
