package apify

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"strconv"
	"strings"
)

// RequestFilter selects requests by state in [RequestQueueClient.ListRequests].
// Its values combine with |, meaning their union; the zero value selects
// every request, handled ones included.
type RequestFilter uint8

// The request states ListRequests can select.
const (
	// FilterLocked selects requests with a live lock, whoever holds it.
	FilterLocked RequestFilter = 1 << iota
	// FilterPending selects requests neither locked nor handled.
	FilterPending
)

// String returns the filter as the API's filter parameter: "locked",
// "pending", "locked,pending", or "" for every request.
func (f RequestFilter) String() string {
	var parts []string
	if f&FilterLocked != 0 {
		parts = append(parts, "locked")
	}
	if f&FilterPending != 0 {
		parts = append(parts, "pending")
	}
	if rest := f &^ (FilterLocked | FilterPending); rest != 0 {
		parts = append(parts, "RequestFilter("+strconv.Itoa(int(rest))+")")
	}
	return strings.Join(parts, ",")
}

// MaxListPageSize is the most requests one page of [RequestQueueClient.ListRequests] may hold.
const MaxListPageSize = 10000

// ListRequestsOptions configures [RequestQueueClient.ListRequests]. The zero
// value lists every request, 100 per page.
type ListRequestsOptions struct {
	// Filter selects requests by state: FilterLocked, FilterPending, or both
	// (FilterLocked|FilterPending, their union). Zero lists every request.
	Filter RequestFilter
	// PageSize is how many requests each call fetches, 1 to MaxListPageSize;
	// 0 leaves it to the API (100). It does not bound how many the iteration
	// yields: break out of the loop for that.
	PageSize int
	// ClientKey identifies the caller (it counts toward HadMultipleClients).
	ClientKey string
}

// ListRequests iterates over the queue's requests in the order they were
// added, fetching a page at a time with the API's cursor (nextCursor), so it
// may be used on a queue of any size:
//
//	for req, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: apify.FilterLocked}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(req.ID, req.URL)
//	}
//
// An error (bad options, a failed call, ctx ending) is yielded once, with a
// nil request, and ends the iteration. Breaking out of the loop stops it
// cleanly: no further page is fetched. Each page is fetched with ctx and
// retried like UnlockRequests. The queue may change while it is listed; a
// request added meanwhile may or may not be listed.
//
// It calls GET /v2/request-queues/{queueId}/requests.
func (q *RequestQueueClient) ListRequests(ctx context.Context, opts ListRequestsOptions) iter.Seq2[*Request, error] {
	return func(yield func(*Request, error) bool) {
		base, err := q.listRequestsQuery(opts)
		if err != nil {
			yield(nil, err)
			return
		}
		cursor := ""
		followed := map[string]bool{"": true} // the cursors of the pages fetched so far
		for {
			page, err := q.listRequestsPage(ctx, base, cursor, followed)
			if err != nil {
				yield(nil, err)
				return
			}
			for i := range page.items {
				if !yield(&page.items[i], nil) {
					return
				}
			}
			if page.nextCursor == "" {
				return
			}
			cursor = page.nextCursor
			followed[cursor] = true
		}
	}
}

// listRequestsQuery checks opts and returns the query every page shares.
func (q *RequestQueueClient) listRequestsQuery(opts ListRequestsOptions) (query, error) {
	if q.err != nil {
		return nil, q.err
	}
	if opts.PageSize < 0 || opts.PageSize > MaxListPageSize {
		return nil, fmt.Errorf("apify: %w: ListRequestsOptions.PageSize is %d; it must be 1 to %d, or 0 for the API's default",
			ErrInvalidInput, opts.PageSize, MaxListPageSize)
	}
	if opts.Filter&^(FilterLocked|FilterPending) != 0 {
		return nil, fmt.Errorf("apify: %w: ListRequestsOptions.Filter is %d; combine FilterLocked and FilterPending only",
			ErrInvalidInput, opts.Filter)
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	qs := query{}
	if opts.PageSize > 0 {
		qs = qs.add("limit", strconv.Itoa(opts.PageSize))
	}
	if f := opts.Filter.String(); f != "" {
		// Sent as the spec's form style, with a literal comma: f holds
		// nothing that needs escaping.
		if len(qs) > 0 {
			qs = append(qs, '&')
		}
		qs = append(qs, "filter="+f...)
	}
	return qs.add("clientKey", opts.ClientKey), nil
}

type requestsPage struct {
	items      []Request
	nextCursor string
}

// listRequestsPage fetches the page at cursor ("" for the first). followed
// holds the cursors of the pages fetched before, cursor included: a
// nextCursor among them leads back to a page already listed.
func (q *RequestQueueClient) listRequestsPage(ctx context.Context, base query, cursor string, followed map[string]bool) (*requestsPage, error) {
	qs := append(query(nil), base...).add("cursor", cursor)
	resp, err := q.c.do(ctx, apiRequest{method: http.MethodGet, ep: q.endpoint("/requests"), query: qs.encode(), idempotent: true, maxBody: maxListBodyBytes})
	if err != nil {
		return nil, err
	}
	data, err := decodeData[struct {
		Items      *[]Request `json:"items"`
		NextCursor string     `json:"nextCursor"`
	}](resp)
	if err != nil {
		return nil, err
	}
	if data.Items == nil {
		return nil, resp.unexpected("data.items is missing")
	}
	for i, it := range *data.Items {
		if it.ID == "" {
			return nil, resp.unexpected(fmt.Sprintf("data.items[%d] has no id", i))
		}
	}
	switch {
	case data.NextCursor == "":
	case data.NextCursor == cursor:
		// Following it would fetch the same page forever.
		return nil, resp.unexpected("data.nextCursor is the cursor of the page it came with")
	case followed[data.NextCursor]:
		// So would following a cycle of pages.
		return nil, resp.unexpected(fmt.Sprintf("data.nextCursor %q leads back to a page already listed", clip(data.NextCursor, 64)))
	}
	return &requestsPage{items: *data.Items, nextCursor: data.NextCursor}, nil
}
