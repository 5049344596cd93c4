package apify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// MaxBatchSize is the most requests one [RequestQueueClient.BatchAddRequests] call may add.
const MaxBatchSize = 25

// Request is a request in a queue: what a crawler should fetch, and how far
// it got. UniqueKey and URL are required; the queue deduplicates by UniqueKey.
type Request struct {
	// ID is assigned by the queue (derived from UniqueKey); leave it empty when adding.
	ID        string `json:"id,omitempty"`
	UniqueKey string `json:"uniqueKey"`
	URL       string `json:"url"`
	// Method is the HTTP method to fetch URL with; empty means GET.
	Method     string `json:"method,omitempty"`
	RetryCount int    `json:"retryCount,omitzero"`
	LoadedURL  string `json:"loadedUrl,omitempty"`
	// Payload, Headers and UserData are kept as raw JSON so that a request
	// read and written back loses nothing.
	Payload       json.RawMessage `json:"payload,omitempty"`
	Headers       json.RawMessage `json:"headers,omitempty"`
	UserData      json.RawMessage `json:"userData,omitempty"`
	NoRetry       bool            `json:"noRetry,omitzero"`
	ErrorMessages []string        `json:"errorMessages,omitempty"`
	// HandledAt is when the request was handled; zero while it is pending.
	HandledAt time.Time `json:"handledAt,omitzero"`
}

// RequestOptions configures the calls that add or update requests.
type RequestOptions struct {
	// ClientKey identifies the caller; updating a request locked by another
	// client may be refused.
	ClientKey string
	// Forefront puts the request at the front of the queue instead of the back.
	Forefront bool
}

// RequestRegistration is the result of adding or updating a request.
type RequestRegistration struct {
	RequestID string `json:"requestId"`
	// WasAlreadyPresent reports that a request with the same UniqueKey was in
	// the queue: nothing was added. After a retried AddRequest it can be true
	// for a request the call itself added in an attempt whose answer was lost.
	WasAlreadyPresent bool `json:"wasAlreadyPresent"`
	// WasAlreadyHandled reports that the existing request was already handled.
	WasAlreadyHandled bool `json:"wasAlreadyHandled"`
}

// AddedRequest is a request that BatchAddRequests processed.
type AddedRequest struct {
	RequestID         string `json:"requestId"`
	UniqueKey         string `json:"uniqueKey"`
	WasAlreadyPresent bool   `json:"wasAlreadyPresent"`
	WasAlreadyHandled bool   `json:"wasAlreadyHandled"`
}

// BatchAddResult is the result of [RequestQueueClient.BatchAddRequests].
type BatchAddResult struct {
	// Processed are the requests the queue took (or already had).
	Processed []AddedRequest `json:"processedRequests"`
	// Unprocessed are the requests the queue did not take this time (rate
	// limits, internal failures). They were not added: send them again later.
	Unprocessed []Request `json:"unprocessedRequests"`
}

// AddRequest adds a request to the queue, or finds the one with the same
// UniqueKey. Adding is idempotent in effect, so it is retried like
// UnlockRequests.
//
// It calls POST /v2/request-queues/{queueId}/requests.
func (q *RequestQueueClient) AddRequest(ctx context.Context, req Request, opts RequestOptions) (*RequestRegistration, error) {
	if q.err != nil {
		return nil, q.err
	}
	if err := validateNewRequest("the request", req); err != nil {
		return nil, err
	}
	return q.sendRequest(ctx, http.MethodPost, q.endpoint("/requests"), req, opts)
}

// BatchAddRequests adds up to [MaxBatchSize] requests in one call. Requests
// the queue could not take are returned in Unprocessed, not as an error.
// Like AddRequest, it is retried after transient failures.
//
// It calls POST /v2/request-queues/{queueId}/requests/batch.
func (q *RequestQueueClient) BatchAddRequests(ctx context.Context, reqs []Request, opts RequestOptions) (*BatchAddResult, error) {
	if q.err != nil {
		return nil, q.err
	}
	if len(reqs) == 0 || len(reqs) > MaxBatchSize {
		return nil, fmt.Errorf("apify: %w: a batch has %d requests; it must have 1 to %d", ErrInvalidInput, len(reqs), MaxBatchSize)
	}
	for i, r := range reqs {
		if err := validateNewRequest(fmt.Sprintf("request %d of the batch", i), r); err != nil {
			return nil, err
		}
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	body, err := json.Marshal(reqs)
	if err != nil {
		return nil, fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
	}
	resp, err := q.c.do(ctx, apiRequest{
		method:     http.MethodPost,
		ep:         q.endpoint("/requests/batch"),
		query:      opts.query(),
		body:       body,
		idempotent: true,
	})
	if err != nil {
		return nil, err
	}
	res, err := decodeData[BatchAddResult](resp)
	if err != nil {
		return nil, err
	}
	for i, p := range res.Processed {
		if p.RequestID == "" {
			return nil, resp.unexpected(fmt.Sprintf("data.processedRequests[%d] has no requestId", i))
		}
	}
	return res, nil
}

// GetRequest returns a request of the queue; an unknown ID is an *APIError
// matching [ErrNotFound].
//
// It calls GET /v2/request-queues/{queueId}/requests/{requestId}.
func (q *RequestQueueClient) GetRequest(ctx context.Context, requestID string) (*Request, error) {
	ep, err := q.requestEndpoint(requestID, "")
	if err != nil {
		return nil, err
	}
	resp, err := q.c.do(ctx, apiRequest{method: http.MethodGet, ep: ep, idempotent: true})
	if err != nil {
		return nil, err
	}
	r, err := decodeData[Request](resp)
	if err != nil {
		return nil, err
	}
	if r.ID == "" {
		return nil, resp.unexpected("data.id is missing")
	}
	return r, nil
}

// UpdateRequest replaces the request with ID req.ID by req. Setting
// HandledAt marks it handled, which also releases its lock. The whole
// request is sent, so update one read with GetRequest rather than one built
// from a LockedRequest, which lacks UserData and the rest. It is idempotent,
// so it is retried like UnlockRequests.
//
// It calls PUT /v2/request-queues/{queueId}/requests/{requestId}.
func (q *RequestQueueClient) UpdateRequest(ctx context.Context, req Request, opts RequestOptions) (*RequestRegistration, error) {
	ep, err := q.requestEndpoint(req.ID, "")
	if err != nil {
		return nil, err
	}
	if err := validateNewRequest("the request", req); err != nil {
		return nil, err
	}
	return q.sendRequest(ctx, http.MethodPut, ep, req, opts)
}

// MarkHandled marks a request handled (HandledAt set to now unless already
// set) and so releases its lock. opts.ClientKey should be the key the lock
// was taken with. See UpdateRequest for what to pass as req.
func (q *RequestQueueClient) MarkHandled(ctx context.Context, req Request, opts RequestOptions) (*RequestRegistration, error) {
	if req.HandledAt.IsZero() {
		req.HandledAt = time.Now().UTC()
	}
	return q.UpdateRequest(ctx, req, opts)
}

// sendRequest is the shared body of AddRequest and UpdateRequest.
func (q *RequestQueueClient) sendRequest(ctx context.Context, method string, ep endpoint, req Request, opts RequestOptions) (*RequestRegistration, error) {
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
	}
	resp, err := q.c.do(ctx, apiRequest{method: method, ep: ep, query: opts.query(), body: body, idempotent: true})
	if err != nil {
		return nil, err
	}
	reg, err := decodeData[RequestRegistration](resp)
	if err != nil {
		return nil, err
	}
	if reg.RequestID == "" {
		return nil, resp.unexpected("data.requestId is missing")
	}
	return reg, nil
}

func (o RequestOptions) query() string {
	return query{}.add("clientKey", o.ClientKey).addBool("forefront", o.Forefront).encode()
}

// validateNewRequest checks what the API requires of a request it stores.
func validateNewRequest(what string, r Request) error {
	switch {
	case r.UniqueKey == "":
		return fmt.Errorf("apify: %w: %s has no UniqueKey", ErrInvalidInput, what)
	case r.URL == "":
		return fmt.Errorf("apify: %w: %s has no URL", ErrInvalidInput, what)
	}
	for _, raw := range []json.RawMessage{r.Payload, r.Headers, r.UserData} {
		if raw != nil && !json.Valid(raw) {
			return fmt.Errorf("apify: %w: %s has a Payload, Headers or UserData that is not valid JSON", ErrInvalidInput, what)
		}
	}
	return nil
}
