package apify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// MaxBatchSize is the most requests the API takes in one batch call.
// [RequestQueueClient.BatchAddRequests] and
// [RequestQueueClient.BatchDeleteRequests] take any number and send them
// this many at a time.
const MaxBatchSize = 25

// ErrUnprocessed matches the error of a batch call that left requests
// unprocessed; its result lists them.
var ErrUnprocessed = errors.New("left unprocessed")

// AddedRequest is a request that BatchAddRequests processed.
type AddedRequest struct {
	RequestID         string `json:"requestId"`
	UniqueKey         string `json:"uniqueKey"`
	WasAlreadyPresent bool   `json:"wasAlreadyPresent"`
	WasAlreadyHandled bool   `json:"wasAlreadyHandled"`
}

// BatchAddResult is the result of [RequestQueueClient.BatchAddRequests].
type BatchAddResult struct {
	// Processed are the requests the queue took (or already had), in the
	// order they were sent.
	Processed []AddedRequest `json:"processedRequests"`
	// Unprocessed are the requests given to BatchAddRequests, whole and in
	// their order, that it could not add. Empty when the call returns no error.
	Unprocessed []Request `json:"unprocessedRequests"`
}

// BatchAddRequests adds any number of requests, [MaxBatchSize] per call, in
// their order. When the API reports requests unprocessed (it does so when
// rate limited or after an internal failure), it sends those again, the
// same requests with everything they carry, after a backoff (the Client's
// retry waits), up to as many rounds as the Client makes attempts, never
// past ctx's deadline. Each call is retried like AddRequest.
//
// Every request is checked before any I/O; a bad one is reported by its
// index ("request 3 of 60 has no URL"), wrapping [ErrInvalidInput].
//
// The result says what happened to every request: each is in Processed or
// in Unprocessed. When any is unprocessed, the error is not nil: it matches
// [ErrUnprocessed] and, when a call failed or ctx ended, that cause too
// (errors.As(err, &apiErr), errors.Is(err, context.DeadlineExceeded)). The
// result is returned with such an error. A request whose call failed may
// have been added anyway (an answer can be lost); adding it again is
// harmless, since the queue deduplicates by UniqueKey.
//
// It calls POST /v2/request-queues/{queueId}/requests/batch.
func (q *RequestQueueClient) BatchAddRequests(ctx context.Context, reqs []Request, opts RequestOptions) (*BatchAddResult, error) {
	if q.err != nil {
		return nil, q.err
	}
	for i, r := range reqs {
		if err := validateNewRequest(fmt.Sprintf("request %d of %d", i, len(reqs)), r); err != nil {
			return nil, err
		}
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	b := batcher{q: q, ep: q.endpoint("/requests/batch"), method: http.MethodPost, query: opts.query(), total: len(reqs)}
	done, left, err := runBatches(ctx, b, reqs, q.batchAddOnce)
	return &BatchAddResult{Processed: done, Unprocessed: left}, err
}

// batchAddOnce sends one batch and returns what the API processed and the
// requests of sent (whole, in order) it reports unprocessed.
func (q *RequestQueueClient) batchAddOnce(ctx context.Context, b batcher, sent []Request) ([]AddedRequest, []Request, error) {
	resp, err := b.send(ctx, sent)
	if err != nil {
		return nil, nil, err
	}
	data, err := decodeData[struct {
		Processed   *[]AddedRequest `json:"processedRequests"`
		Unprocessed []struct {
			UniqueKey string `json:"uniqueKey"`
		} `json:"unprocessedRequests"`
	}](resp)
	if err != nil {
		return nil, nil, err
	}
	if data.Processed == nil {
		return nil, nil, resp.unexpected("data.processedRequests is missing")
	}
	for i, p := range *data.Processed {
		if p.RequestID == "" {
			return nil, nil, resp.unexpected(fmt.Sprintf("data.processedRequests[%d] has no requestId", i))
		}
	}
	if len(data.Unprocessed) == 0 {
		return *data.Processed, nil, nil
	}
	// Send again what was sent, not the API's drafts: a draft has only the
	// uniqueKey, URL and method, and would drop UserData and the rest.
	keys := make(map[string]bool, len(data.Unprocessed))
	for i, u := range data.Unprocessed {
		keys[u.UniqueKey] = true
		if !containsKey(sent, u.UniqueKey) {
			return nil, nil, resp.unexpected(fmt.Sprintf("data.unprocessedRequests[%d] has a uniqueKey that was not sent", i))
		}
	}
	var again []Request
	for _, r := range sent {
		if keys[r.UniqueKey] {
			again = append(again, r)
		}
	}
	return *data.Processed, again, nil
}

func containsKey(rs []Request, key string) bool {
	for _, r := range rs {
		if r.UniqueKey == key {
			return true
		}
	}
	return false
}

// RequestRef names a request to delete: by ID, by UniqueKey, or both.
type RequestRef struct {
	ID        string `json:"id,omitempty"`
	UniqueKey string `json:"uniqueKey,omitempty"`
}

// BatchDeleteResult is the result of [RequestQueueClient.BatchDeleteRequests].
type BatchDeleteResult struct {
	// Processed are the requests deleted (or already absent), as the API
	// names them.
	Processed []RequestRef
	// Unprocessed are the requests it could not delete, such as those locked
	// by another client. Empty when the call returns no error.
	Unprocessed []RequestRef
}

// BatchDeleteRequests deletes any number of requests, [MaxBatchSize] per
// call, each named by ID or UniqueKey. Requests the API reports unprocessed
// are sent again like those of BatchAddRequests, and the result and error
// work the same way: when any request is left unprocessed (the API does not
// delete a request another client holds a lock on), the error matches
// [ErrUnprocessed] and the result lists them. Every ref is checked before
// any I/O.
//
// It calls DELETE /v2/request-queues/{queueId}/requests/batch.
func (q *RequestQueueClient) BatchDeleteRequests(ctx context.Context, refs []RequestRef, opts DeleteRequestOptions) (*BatchDeleteResult, error) {
	if q.err != nil {
		return nil, q.err
	}
	for i, r := range refs {
		if r.ID == "" && r.UniqueKey == "" {
			return nil, fmt.Errorf("apify: %w: request %d of %d has neither an ID nor a UniqueKey", ErrInvalidInput, i, len(refs))
		}
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	b := batcher{q: q, ep: q.endpoint("/requests/batch"), method: http.MethodDelete, query: clientKeyQuery(opts.ClientKey), total: len(refs)}
	done, left, err := runBatches(ctx, b, refs, q.batchDeleteOnce)
	return &BatchDeleteResult{Processed: done, Unprocessed: left}, err
}

func (q *RequestQueueClient) batchDeleteOnce(ctx context.Context, b batcher, sent []RequestRef) ([]RequestRef, []RequestRef, error) {
	resp, err := b.send(ctx, sent)
	if err != nil {
		return nil, nil, err
	}
	data, err := decodeData[struct {
		Processed   *[]RequestRef `json:"processedRequests"`
		Unprocessed []RequestRef  `json:"unprocessedRequests"`
	}](resp)
	if err != nil {
		return nil, nil, err
	}
	if data.Processed == nil {
		return nil, nil, resp.unexpected("data.processedRequests is missing")
	}
	for i, u := range data.Unprocessed {
		if u.ID == "" && u.UniqueKey == "" {
			return nil, nil, resp.unexpected(fmt.Sprintf("data.unprocessedRequests[%d] has neither id nor uniqueKey", i))
		}
	}
	return *data.Processed, data.Unprocessed, nil
}

// runBatches sends items MaxBatchSize at a time, in order, with send, and
// sends again what send reports unprocessed, after a backoff, up to
// b.rounds() times per chunk. Every item ends up in processed (as send
// reports it) or in unprocessed; err is nil only when unprocessed is empty.
func runBatches[T, P any](ctx context.Context, b batcher, items []T,
	send func(context.Context, batcher, []T) (done []P, again []T, err error)) (processed []P, unprocessed []T, err error) {
	processed, unprocessed = make([]P, 0, len(items)), []T{}
	for start := 0; start < len(items); start += MaxBatchSize {
		end := min(start+MaxBatchSize, len(items))
		pending := items[start:end]
		for round := 0; len(pending) > 0; round++ {
			if round > 0 {
				if err := b.wait(ctx, round); err != nil {
					unprocessed = append(append(unprocessed, pending...), items[end:]...)
					return processed, unprocessed, b.err(len(unprocessed), err)
				}
			}
			done, again, err := send(ctx, b, pending)
			if err != nil {
				unprocessed = append(append(unprocessed, pending...), items[end:]...)
				return processed, unprocessed, b.err(len(unprocessed), err)
			}
			processed = append(processed, done...)
			pending = again
			if round+1 >= b.rounds() {
				unprocessed = append(unprocessed, pending...)
				break
			}
		}
	}
	if len(unprocessed) > 0 {
		return processed, unprocessed, b.err(len(unprocessed), nil)
	}
	return processed, unprocessed, nil
}

// batcher is what the rounds of one batch call share.
type batcher struct {
	q      *RequestQueueClient
	ep     endpoint
	method string
	query  string
	total  int
}

// send makes one batch call with items as its JSON body.
func (b batcher) send(ctx context.Context, items any) (apiResponse, error) {
	body, err := json.Marshal(items)
	if err != nil {
		return apiResponse{}, fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
	}
	return b.q.c.do(ctx, apiRequest{method: b.method, ep: b.ep, query: b.query, body: body, idempotent: true})
}

// rounds is how many times a chunk is sent at most: as many as the
// Client's attempts per call.
func (b batcher) rounds() int { return b.q.c.maxRetries + 1 }

// wait sleeps the Client's backoff before round n (from 1), or returns at
// once when ctx ends first or the wait would end at or after its deadline.
func (b batcher) wait(ctx context.Context, n int) error {
	d := b.q.c.retryWait(n-1, nil)
	if outlastsDeadline(ctx, d) {
		return context.DeadlineExceeded
	}
	if !sleepCtx(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// err reports n requests left unprocessed, and why when a call failed or
// the ctx ended.
func (b batcher) err(n int, cause error) error {
	if cause == nil {
		return fmt.Errorf("apify: %s %s: %d of %d requests %w after %d rounds",
			b.method, b.ep.rawPath, n, b.total, ErrUnprocessed, b.rounds())
	}
	return fmt.Errorf("apify: %s %s: %d of %d requests %w: %w", b.method, b.ep.rawPath, n, b.total, ErrUnprocessed, cause)
}
