package apify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Request is a request in a queue: what a crawler should fetch, and how far
// it got. UniqueKey and URL are required; the queue deduplicates by UniqueKey.
type Request struct {
	// ID is assigned by the queue (derived from UniqueKey); leave it empty when adding.
	ID string `json:"id,omitempty"`
	// UniqueKey is the request's uniqueKey, the key the queue deduplicates
	// by: adding a request whose UniqueKey the queue already holds adds
	// nothing. It is required; the URL itself is a common choice.
	UniqueKey string `json:"uniqueKey"`
	// URL is the request's url, the address to fetch; required.
	URL string `json:"url"`
	// Method is the HTTP method to fetch URL with; empty means GET.
	Method string `json:"method,omitempty"`
	// RetryCount is the request's retryCount: how many times it has been
	// put back after a failed attempt, 0 for a new one.
	// [RequestQueueClient.Consume] adds 1 each time it puts it back.
	RetryCount int `json:"retryCount,omitzero"`
	// LoadedURL is the request's loadedUrl: the URL a crawler finally
	// loaded, after redirects, as the crawler recorded it; empty until one
	// does.
	LoadedURL string `json:"loadedUrl,omitempty"`
	// Payload is the request's payload, the body to send with Method: a
	// JSON string or object; nil leaves it out. Payload, Headers and
	// UserData are kept as raw JSON so that a request read and written back
	// loses nothing.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Headers is the request's headers: a JSON object of the HTTP headers to
	// fetch URL with, such as {"Accept-Language":"en"}; nil leaves it out.
	Headers json.RawMessage `json:"headers,omitempty"`
	// UserData is the request's userData: a JSON object of the caller's
	// own, such as {"label":"DETAIL","depth":1}, kept with the request; nil
	// leaves it out.
	UserData json.RawMessage `json:"userData,omitempty"`
	// NoRetry is the request's noRetry: when true, a failed attempt is
	// final, and Consume marks the request handled with its error recorded
	// instead of putting it back.
	NoRetry bool `json:"noRetry,omitzero"`
	// ErrorMessages is the request's errorMessages: the errors of its failed
	// attempts, oldest first, as the clients recorded them. Consume keeps
	// the last 10, and cuts a message over 1000 bytes there, ending it with
	// "…".
	ErrorMessages []string `json:"errorMessages,omitempty"`
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
	// RequestID is the response's requestId: the ID of the request added or
	// updated, or of the one with the same UniqueKey the queue already held.
	RequestID string `json:"requestId"`
	// WasAlreadyPresent reports that a request with the same UniqueKey was in
	// the queue: nothing was added. After a retried AddRequest it can be true
	// for a request the call itself added in an attempt whose answer was lost.
	WasAlreadyPresent bool `json:"wasAlreadyPresent"`
	// WasAlreadyHandled reports that the existing request was already handled.
	WasAlreadyHandled bool `json:"wasAlreadyHandled"`
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

// UpdateRequest replaces the request with ID req.ID by req: the API keeps
// nothing of the stored request that req does not carry, so a req without
// UserData erases the stored UserData. Pass a request read with GetRequest
// (or ListRequests) and changed, never one built from a LockedRequest or a
// HeadRequest, which carry only the ID, URL and a few fields. To mark a
// request handled, [RequestQueueClient.MarkHandled] is simpler and safe.
//
// Setting HandledAt marks the request handled, which also releases its lock;
// clearing it puts a handled request back in the queue. Updating is
// idempotent, so it is retried like UnlockRequests.
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

// MarkHandled marks the request with this ID handled, which also releases
// its lock, and keeps everything else about it: it reads the stored request
// and writes it back whole with handledAt set to now, so UserData, headers,
// payload and any field this package does not know survive. That is what
// to call with the ID of a LockedRequest from ListAndLockHead:
//
//	head, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 10, LockDuration: time.Minute, ClientKey: key})
//	...
//	for _, it := range head.Items {
//		// ... process it ...
//		_, err := q.MarkHandled(ctx, it.ID, apify.RequestOptions{ClientKey: key})
//	}
//
// opts.ClientKey should be the key the lock was taken with: the API lets
// only the holder of a live lock mark the request handled. A request that
// is already handled is left as it is (WasAlreadyHandled is true, and
// nothing is written).
//
// It costs two calls, both retried like UnlockRequests. The read and the
// write are not atomic; the caller's lock keeps other crawlers from
// handling the request in between. A caller that already holds the whole
// request (from GetRequest) can save the read: set HandledAt and call
// UpdateRequest.
//
// It calls GET, then PUT /v2/request-queues/{queueId}/requests/{requestId}.
func (q *RequestQueueClient) MarkHandled(ctx context.Context, requestID string, opts RequestOptions) (*RequestRegistration, error) {
	ep, err := q.requestEndpoint(requestID, "")
	if err != nil {
		return nil, err
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	resp, err := q.c.do(ctx, apiRequest{method: http.MethodGet, ep: ep, idempotent: true})
	if err != nil {
		return nil, err
	}
	// The request as raw fields: what this package does not model goes back too.
	stored, err := decodeData[map[string]json.RawMessage](resp)
	if err != nil {
		return nil, err
	}
	var id string
	if json.Unmarshal((*stored)["id"], &id) != nil || id != requestID {
		return nil, resp.unexpected(fmt.Sprintf("data.id is not the requested ID %q", requestID))
	}
	if h, ok := (*stored)["handledAt"]; ok && string(h) != "null" {
		return &RequestRegistration{RequestID: requestID, WasAlreadyPresent: true, WasAlreadyHandled: true}, nil
	}
	(*stored)["handledAt"] = json.RawMessage(`"` + time.Now().UTC().Format(apiTimeFormat) + `"`)
	body, err := json.Marshal(*stored)
	if err != nil {
		return nil, resp.unexpected("the stored request cannot be written back (" + clip(err.Error(), 200) + ")")
	}
	resp, err = q.c.do(ctx, apiRequest{method: http.MethodPut, ep: ep, query: clientKeyQuery(opts.ClientKey), body: body, idempotent: true})
	if err != nil {
		return nil, err
	}
	return decodeRegistration(resp)
}

// apiTimeFormat is how the API writes times: UTC, milliseconds.
const apiTimeFormat = "2006-01-02T15:04:05.000Z"

// DeleteRequestOptions configures [RequestQueueClient.DeleteRequest] and
// [RequestQueueClient.BatchDeleteRequests].
type DeleteRequestOptions struct {
	// ClientKey identifies the caller; a request locked by another client
	// cannot be deleted.
	ClientKey string
}

// DeleteRequest deletes a request from the queue.
//
// It is retried like UnlockRequests. A 404 on a retry reports success, as
// for [RequestQueueClient.Delete]: an earlier attempt may have deleted the
// request without its answer arriving, and the request is gone either way.
// A 404 on the first attempt is an error matching [ErrNotFound].
//
// It calls DELETE /v2/request-queues/{queueId}/requests/{requestId}.
func (q *RequestQueueClient) DeleteRequest(ctx context.Context, requestID string, opts DeleteRequestOptions) error {
	ep, err := q.requestEndpoint(requestID, "")
	if err != nil {
		return err
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return err
	}
	_, err = q.c.do(ctx, apiRequest{method: http.MethodDelete, ep: ep, query: clientKeyQuery(opts.ClientKey), idempotent: true})
	return goneAfterRetry(err)
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
	return decodeRegistration(resp)
}

// decodeRegistration decodes a RequestRegistration, which must name the request.
func decodeRegistration(resp apiResponse) (*RequestRegistration, error) {
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
