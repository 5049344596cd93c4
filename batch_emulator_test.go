package apify_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A batch add of more than two chunks keeps the caller's order at the back
// and, with Forefront, at the front of a queue that already holds requests:
// the queue's head, read through the API, lists the requests as given.
func TestBatchAddKeepsTheCallersOrderAgainstTheEmulator(t *testing.T) {
	for _, forefront := range []bool{false, true} {
		t.Run(fmt.Sprintf("forefront=%v", forefront), func(t *testing.T) {
			srv := apifytest.Start(t)
			queueID := srv.CreateQueue("")
			srv.AddRequests(queueID, apifytest.Request{URL: "https://old.test/1"}, apifytest.Request{URL: "https://old.test/2"})
			q := srv.Client().RequestQueue(queueID)
			ctx := context.Background()

			reqs := make([]apify.Request, 60)
			var keys []string
			for i := range reqs {
				reqs[i] = apify.Request{URL: fmt.Sprintf("https://b.test/%02d", i), UniqueKey: fmt.Sprintf("r%02d", i)}
				keys = append(keys, reqs[i].UniqueKey)
			}
			res, err := q.BatchAddRequests(ctx, reqs, apify.RequestOptions{Forefront: forefront})
			require.NoError(t, err)
			assert.Equal(t, 3, srv.Calls(apifytest.OpBatchAddRequests))
			require.Len(t, res.Processed, 60)
			for i, p := range res.Processed {
				assert.Equal(t, reqs[i].UniqueKey, p.UniqueKey, "Processed is in the caller's order")
			}

			want := append([]string{"https://old.test/1", "https://old.test/2"}, keys...)
			if forefront {
				want = append(keys, "https://old.test/1", "https://old.test/2")
			}
			head, err := q.ListHead(ctx, apify.ListHeadOptions{Limit: 100})
			require.NoError(t, err)
			var got []string
			for _, it := range head.Items {
				got = append(got, it.UniqueKey)
			}
			assert.Equal(t, want, got, "the head reads the caller's order")
		})
	}
}
