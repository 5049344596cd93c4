package apify

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func processedKeys(ps []AddedRequest) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.UniqueKey
	}
	return out
}

// With Forefront each batch goes in front of what the queue holds, so the
// chunks go last first; a chunk's unprocessed requests are sent again, with
// forefront=true, before the chunk in front of it. The result lists the
// requests in the caller's order, chunk by chunk.
func TestBatchAddForefrontOnTheWire(t *testing.T) {
	ctx := context.Background()
	const uri = testPrefix + "/v2/request-queues/q/requests/batch?clientKey=ck&forefront=true"

	t.Run("chunks last first, unprocessed sent again in their chunk's turn", func(t *testing.T) {
		reqs := numbered(60)
		mid := slices.DeleteFunc(keysOf(reqs[25:50]), func(k string) bool { return k == "k30" || k == "k40" })
		f, c, _ := setup(t, []reply{
			batchReply(keysOf(reqs[50:])),
			batchReply(mid, "k30", "k40"),
			batchReply([]string{"k30", "k40"}),
			batchReply(keysOf(reqs[:25])),
		})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{ClientKey: "ck", Forefront: true})
		require.NoError(t, err)
		assert.Empty(t, res.Unprocessed)
		sent := f.requests()
		require.Len(t, sent, 4)
		for i, want := range [][]Request{reqs[50:], reqs[25:50], {reqs[30], reqs[40]}, reqs[:25]} {
			assert.Equal(t, uri, sent[i].RequestURI, "call %d: the same options, forefront included, on every call", i)
			assert.Equal(t, keysOf(want), sentKeys(t, sent[i]), "call %d", i)
		}
		want := append(append(append(keysOf(reqs[:25]), mid...), "k30", "k40"), keysOf(reqs[50:])...)
		assert.Equal(t, want, processedKeys(res.Processed), "the caller's chunks in order; in a chunk, as processed")
	})

	t.Run("a failed call leaves the chunks not yet sent unprocessed, in the caller's order", func(t *testing.T) {
		reqs := numbered(60)
		f, c, _ := setup(t, []reply{batchReply(keysOf(reqs[50:])), apiErr(403, "insufficient-permissions", "read-only")})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{ClientKey: "ck", Forefront: true})
		require.ErrorIs(t, err, ErrUnprocessed)
		assert.ErrorIs(t, err, ErrForbidden)
		assert.Contains(t, err.Error(), "50 of 60 requests left unprocessed: apify: POST")
		assert.Equal(t, keysOf(reqs[50:]), processedKeys(res.Processed))
		assert.Equal(t, reqs[:50], res.Unprocessed)
		assert.Equal(t, 2, f.hits())
	})

	t.Run("one chunk: nothing to reorder", func(t *testing.T) {
		reqs := numbered(25)
		f, c, _ := setup(t, []reply{batchReply(keysOf(reqs))})
		res, err := c.RequestQueue("q").BatchAddRequests(ctx, reqs, RequestOptions{ClientKey: "ck", Forefront: true})
		require.NoError(t, err)
		assert.Equal(t, keysOf(reqs), processedKeys(res.Processed))
		require.Equal(t, 1, f.hits())
		assert.Equal(t, keysOf(reqs), sentKeys(t, f.requests()[0]), "a batch's own order is kept: the API keeps it")
	})
}
