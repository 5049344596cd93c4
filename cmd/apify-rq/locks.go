package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// holder is who holds a lock and until when, as the emulator's extension
// (apifytest.LocksPath) says. Apify's API never says: its list of requests
// has no lock holder.
type holder struct {
	ID        string    `json:"id"`
	ClientKey string    `json:"clientKey,omitempty"`
	RunID     string    `json:"runId,omitempty"`
	ExpiresAt time.Time `json:"lockExpiresAt"`
}

// lockHolders asks the server who holds the queue's locks, by request ID.
// ok is false when the server does not say: Apify's API, where the path
// does not exist, or any failure (the calls that matter report their own).
func lockHolders(ctx context.Context, c *apify.Client, queue string) (map[string]holder, bool) {
	path := strings.TrimPrefix(strings.Replace(apifytest.LocksPath, "{queueId}", queue, 1), "/v2")
	var out struct {
		Items []holder `json:"items"`
	}
	if err := c.Do(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return nil, false
	}
	m := make(map[string]holder, len(out.Items))
	for _, h := range out.Items {
		m[h.ID] = h
	}
	return m, true
}

// who names a lock's holder in words: `clientKey "k"`, `run R`, both, or
// "a call without a clientKey".
func (h holder) who() string {
	switch {
	case h.ClientKey != "" && h.RunID != "":
		return fmt.Sprintf("clientKey %q in run %s", h.ClientKey, h.RunID)
	case h.ClientKey != "":
		return fmt.Sprintf("clientKey %q", h.ClientKey)
	case h.RunID != "":
		return "run " + h.RunID
	}
	return "a call without a clientKey"
}

// byHolder sums locks by holder, most first: `clientKey "a" 20, run R 2`.
func byHolder(holders map[string]holder) string {
	counts := map[string]int{}
	for _, h := range holders {
		counts[h.who()]++
	}
	whos := make([]string, 0, len(counts))
	for w := range counts {
		whos = append(whos, w)
	}
	sort.Slice(whos, func(i, j int) bool {
		if counts[whos[i]] != counts[whos[j]] {
			return counts[whos[i]] > counts[whos[j]]
		}
		return whos[i] < whos[j]
	})
	parts := make([]string, len(whos))
	for i, w := range whos {
		parts[i] = fmt.Sprintf("%s: %d", w, counts[w])
	}
	return strings.Join(parts, ", ")
}

// lockedIDs lists the IDs of the queue's locked requests (Apify's API
// says which requests are locked, not by whom).
func lockedIDs(ctx context.Context, q *apify.RequestQueueClient) (map[string]bool, error) {
	ids := map[string]bool{}
	for req, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: apify.FilterLocked, PageSize: apify.MaxListPageSize}) {
		if err != nil {
			return nil, err
		}
		ids[req.ID] = true
	}
	return ids, nil
}

// failed reports a request that was handled after its last attempt failed:
// it carries errorMessages, and either noRetry is set or it has more
// errorMessages than retryCount. A consumer that gives up records the last
// error without counting another retry (Consume and Crawlee both do), while
// one that succeeds after retries leaves as many errorMessages as retries.
// (A consumer that keeps only its last few errorMessages makes a request
// failed after more retries than that read as handled, unless it sets
// noRetry then, as Consume does.)
func failed(r *apify.Request) bool {
	return !r.HandledAt.IsZero() && len(r.ErrorMessages) > 0 && (r.NoRetry || len(r.ErrorMessages) > r.RetryCount)
}
