package apify

import (
	"fmt"
	"net/url"
	"unicode"
	"unicode/utf8"
)

// RequestQueueClient is a handle on one request queue. It is cheap to make,
// does no I/O, and is safe for concurrent use.
type RequestQueueClient struct {
	c     *Client
	id    string
	runID string // set instead of id by RunRequestQueue
	err   error  // why id (or runID) is invalid; every call returns it before any I/O

	// base is the queue's path, /v2/request-queues/{queueId} or
	// /v2/actor-runs/{runId}/request-queue: every call's path starts with
	// it, so swapping it moves every call.
	base   endpoint
	unlock endpoint // .../requests/unlock, built once: it is the hot path
}

// RequestQueue returns a handle on the queue with the given ID: a queue ID
// such as "WkzbQMuFYuamGv3YF", "username~queue-name", or "~queue-name" for the
// token owner's queue (the named forms need a token).
//
// The ID goes into the URL as one escaped path segment, so no character can
// cut the path or move it into the query. An invalid ID (empty, "." or "..",
// not UTF-8, or holding control characters) is reported, wrapping
// [ErrInvalidQueueID], by every call on the handle, before any I/O.
func (c *Client) RequestQueue(queueID string) *RequestQueueClient {
	q := &RequestQueueClient{c: c, id: queueID}
	if err := validateQueueID(queueID); err != nil {
		q.err = fmt.Errorf("apify: %w: %w", ErrInvalidQueueID, err)
		return q
	}
	q.setBase("/v2/request-queues/"+queueID, "/v2/request-queues/"+url.PathEscape(queueID))
	return q
}

// RunRequestQueue returns a handle on the default request queue of the
// Actor run runID, addressed through the run:
// /v2/actor-runs/{runId}/request-queue, and below it the same paths as
// under /v2/request-queues/{queueId}, for every call of the handle. It
// suits code that knows the run but not its queue's ID (an SDK that starts
// runs, say); inside the run itself, [DefaultRequestQueueID] names the same
// queue.
//
// The run ID goes into the URL as one escaped path segment. An invalid run
// ID (empty, "." or "..", not UTF-8, or holding control characters) is
// reported, wrapping [ErrInvalidInput], by every call on the handle, before
// any I/O.
func (c *Client) RunRequestQueue(runID string) *RequestQueueClient {
	q := &RequestQueueClient{c: c, runID: runID}
	if err := validateID("run ID", runID); err != nil {
		q.err = fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
		return q
	}
	q.setBase("/v2/actor-runs/"+runID+"/request-queue", "/v2/actor-runs/"+url.PathEscape(runID)+"/request-queue")
	return q
}

// setBase sets the queue's path, unescaped and escaped, below the Client's
// base path, and the paths built from it once.
func (q *RequestQueueClient) setBase(path, rawPath string) {
	q.base = endpoint{path: q.c.basePath + path, rawPath: q.c.baseRawPath + rawPath}
	q.unlock = q.endpoint("/requests/unlock")
}

// ID returns the queue ID the handle was made with; "" for a handle made
// with [Client.RunRequestQueue], which names its queue by the run.
func (q *RequestQueueClient) ID() string { return q.id }

// label names the queue in log records and errors: its ID, or the run
// whose default queue it is.
func (q *RequestQueueClient) label() string {
	if q.runID != "" {
		return "the default queue of run " + q.runID
	}
	return q.id
}

// endpoint returns the path of an operation below the queue; suffix must
// need no escaping (request IDs are escaped by the caller).
func (q *RequestQueueClient) endpoint(suffix string) endpoint {
	return endpoint{path: q.base.path + suffix, rawPath: q.base.rawPath + suffix}
}

// requestEndpoint returns the path of an operation on one request, with the
// request ID escaped as one path segment, or why the ID (or the queue's) is
// invalid.
func (q *RequestQueueClient) requestEndpoint(requestID, suffix string) (endpoint, error) {
	if q.err != nil {
		return endpoint{}, q.err
	}
	if err := validateID("request ID", requestID); err != nil {
		return endpoint{}, fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
	}
	return endpoint{
		path:    q.base.path + "/requests/" + requestID + suffix,
		rawPath: q.base.rawPath + "/requests/" + url.PathEscape(requestID) + suffix,
	}, nil
}

func validateQueueID(id string) error { return validateID("queue ID", id) }

// validateID checks an ID that goes into the path as one segment.
func validateID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("the %s is empty", what)
	case id == "." || id == "..":
		return fmt.Errorf("the %s %q is a dot segment, which servers and proxies resolve away", what, id)
	case !utf8.ValidString(id):
		return fmt.Errorf("the %s is not valid UTF-8", what)
	}
	for i, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("the %s has a control character (%U) at byte %d", what, r, i)
		}
	}
	return nil
}

// String describes the handle, without the Client's token.
func (q *RequestQueueClient) String() string {
	if q == nil {
		return "apify.RequestQueueClient(nil)"
	}
	if q.runID != "" {
		return fmt.Sprintf("apify.RequestQueueClient{runID: %q, client: %s}", q.runID, q.c)
	}
	return fmt.Sprintf("apify.RequestQueueClient{queueID: %q, client: %s}", q.id, q.c)
}

// Format makes every fmt verb print [RequestQueueClient.String].
func (q *RequestQueueClient) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(q.String())) }

// GoString implements fmt.GoStringer like [RequestQueueClient.String].
func (q *RequestQueueClient) GoString() string { return q.String() }
