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
	// RequestID is the requestId the API reports: the ID of the request
	// added, or of the one with the same UniqueKey the queue already held.
	RequestID string `json:"requestId"`
	// UniqueKey is the uniqueKey of the request, which pairs this result
	// with the request given.
	UniqueKey string `json:"uniqueKey"`
	// WasAlreadyPresent reports that a request with the same UniqueKey was
	// in the queue: nothing was added. After a retried call it can be true
	// for a request the call itself added in an attempt whose answer was
	// lost.
	WasAlreadyPresent bool `json:"wasAlreadyPresent"`
	// WasAlreadyHandled reports that the request already there was handled.
	WasAlreadyHandled bool `json:"wasAlreadyHandled"`
}

// BatchAddResult is the result of [RequestQueueClient.BatchAddRequests].
type BatchAddResult struct {
	// Processed are the requests the queue took (or already had), in the
	// caller's order chunk by chunk (whatever order the chunks were sent
	// in); within a chunk, those sent again after the API left them
	// unprocessed come after the rest.
	Processed []AddedRequest `json:"processedRequests"`
	// Unprocessed are the requests given to BatchAddRequests, whole and in
	// their order, that it could not add. Empty when the call returns no error.
	Unprocessed []Request `json:"unprocessedRequests"`
}

// BatchAddRequests adds any number of requests, [MaxBatchSize] per call, in
// their order. When the API reports requests unprocessed (it does so when
// rate limited or after an internal failure), it sends those again, the
// same requests with the same options, after a backoff (the Client's
// retry waits), up to as many rounds as the Client makes attempts, never
// past ctx's deadline, before it sends the next chunk. Each call is
// retried like AddRequest.
//
// The queue gets the requests in the caller's order: at its back, or with
// opts.Forefront at its front, where the queue's head then reads them as
// given, the first one first, before what the queue held. Each forefront
// batch goes in front of what the queue holds, keeping its own order (Apify
// does not document the order within a batch; apifytest keeps it), so with
// Forefront the chunks are sent last first. Chunks always keep their
// order; within a chunk the API processed only in part, the requests sent
// again end up behind (with Forefront, in front of) the rest of that chunk.
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
	b := batcher{q: q, ep: q.endpoint("/requests/batch"), method: http.MethodPost, query: opts.query(), total: len(reqs),
		lastFirst: opts.Forefront}
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
	// ID is the request's id; leave it empty to name the request by
	// UniqueKey alone. In a result it is the id the API reported, if any.
	ID string `json:"id,omitempty"`
	// UniqueKey is the request's uniqueKey; leave it empty to name the
	// request by ID alone. In a result it is the uniqueKey the API
	// reported, if any.
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

// runBatches sends items in chunks of MaxBatchSize with send, in order or,
// with b.lastFirst, last chunk first, and sends again what send reports
// unprocessed, after a backoff, up to b.rounds() times per chunk, before it
// goes on to the next chunk. Every item ends up in processed (as send
// reports it) or in unprocessed, both in the order of items chunk by chunk,
// whatever order the chunks went in; err is nil only when unprocessed is
// empty. After a failed call, the chunk's pending items and every chunk
// not yet sent are unprocessed.
func runBatches[T, P any](ctx context.Context, b batcher, items []T,
	send func(context.Context, batcher, []T) (done []P, again []T, err error)) (processed []P, unprocessed []T, err error) {
	n := (len(items) + MaxBatchSize - 1) / MaxBatchSize
	chunk := func(i int) []T { return items[i*MaxBatchSize : min((i+1)*MaxBatchSize, len(items))] }
	done, left := make([][]P, n), make([][]T, n)
	var cause error
	for k := range n {
		i := k
		if b.lastFirst {
			i = n - 1 - k
		}
		pending := chunk(i)
		for round := 0; len(pending) > 0 && round < b.rounds(); round++ {
			if round > 0 {
				if cause = b.wait(ctx, round); cause != nil {
					break
				}
			}
			d, again, err := send(ctx, b, pending)
			if err != nil {
				cause = err // what was sent stays pending
				break
			}
			done[i], pending = append(done[i], d...), again
		}
		left[i] = pending
		if cause != nil {
			for rest := k + 1; rest < n; rest++ { // the chunks not yet sent
				i := rest
				if b.lastFirst {
					i = n - 1 - rest
				}
				left[i] = chunk(i)
			}
			break
		}
	}
	processed, unprocessed = make([]P, 0, len(items)), []T{}
	for i := range n {
		processed = append(processed, done[i]...)
		unprocessed = append(unprocessed, left[i]...)
	}
	if len(unprocessed) > 0 {
		return processed, unprocessed, b.err(len(unprocessed), cause)
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
	// lastFirst sends the last chunk first: each forefront batch goes in
	// front of the one before it, so the first chunk must go last.
	lastFirst bool
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
