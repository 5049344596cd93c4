package apify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// GeneralAccess is who, besides its owner, may read a queue. It grants
// reading, never writing: a write without permission is a 403
// insufficient-permissions.
type GeneralAccess string

// The general access levels the API knows.
const (
	// GeneralAccessRestricted: only the owner (and those it shares the queue with).
	GeneralAccessRestricted GeneralAccess = "RESTRICTED"
	// GeneralAccessAnyoneWithIDCanRead: anyone who knows the queue's ID may read it.
	GeneralAccessAnyoneWithIDCanRead GeneralAccess = "ANYONE_WITH_ID_CAN_READ"
	// GeneralAccessAnyoneWithNameCanRead: anyone who knows username~queue-name may read it.
	GeneralAccessAnyoneWithNameCanRead GeneralAccess = "ANYONE_WITH_NAME_CAN_READ"
	// GeneralAccessFollowUserSetting: the owner's account-wide setting applies.
	GeneralAccessFollowUserSetting GeneralAccess = "FOLLOW_USER_SETTING"
)

func (a GeneralAccess) valid() bool {
	switch a {
	case GeneralAccessRestricted, GeneralAccessAnyoneWithIDCanRead, GeneralAccessAnyoneWithNameCanRead, GeneralAccessFollowUserSetting:
		return true
	}
	return false
}

// RequestQueueInfo is a queue's metadata and counts, as the API reports them.
type RequestQueueInfo struct {
	// ID is the queue's id, never empty: the ID to pass to
	// [Client.RequestQueue].
	ID string `json:"id"`
	// Name is "" for an unnamed queue.
	Name string `json:"name"`
	// UserID is the queue's userId: the ID of the user who owns it.
	UserID string `json:"userId"`
	// Username is the owner's username; the API sends it in some answers only.
	Username string `json:"username,omitempty"`
	// ActID is the queue's actId: the ID of the Actor that created it;
	// empty when no Actor did.
	ActID string `json:"actId,omitempty"`
	// ActRunID is the queue's actRunId: the ID of the Actor run that
	// created it; empty when no run did.
	ActRunID string `json:"actRunId,omitempty"`

	// CreatedAt is the queue's createdAt: when it was created.
	CreatedAt time.Time `json:"createdAt"`
	// ModifiedAt is when requests were last added, updated, removed, locked or unlocked.
	ModifiedAt time.Time `json:"modifiedAt"`
	// AccessedAt is the queue's accessedAt: when it was last read or
	// written.
	AccessedAt time.Time `json:"accessedAt"`

	// TotalRequestCount counts every request in the queue, handled or not.
	TotalRequestCount int `json:"totalRequestCount"`
	// HandledRequestCount counts the handled requests.
	HandledRequestCount int `json:"handledRequestCount"`
	// PendingRequestCount counts the requests not handled yet, locked ones included.
	PendingRequestCount int `json:"pendingRequestCount"`
	// HadMultipleClients reports whether more than one client has used the queue.
	HadMultipleClients bool `json:"hadMultipleClients"`

	// ConsoleURL is the queue's consoleUrl: where to view it in Apify
	// Console; empty when the API sent none.
	ConsoleURL string `json:"consoleUrl,omitempty"`
	// GeneralAccess is the queue's generalAccess: who besides its owner may
	// read it; empty when the API sent none.
	GeneralAccess GeneralAccess `json:"generalAccess,omitempty"`
	// Stats are the API's operation counters; nil when it sent none.
	Stats *RequestQueueStats `json:"stats,omitempty"`
}

// RequestQueueStats are a queue's operation counters.
type RequestQueueStats struct {
	// ReadCount is the stats' readCount: how many read operations the
	// queue has served.
	ReadCount int64 `json:"readCount"`
	// WriteCount is the stats' writeCount: how many write operations the
	// queue has served.
	WriteCount int64 `json:"writeCount"`
	// DeleteCount is the stats' deleteCount: how many delete operations
	// the queue has served.
	DeleteCount int64 `json:"deleteCount"`
	// HeadItemReadCount is the stats' headItemReadCount: how many times
	// requests were read from the queue's head.
	HeadItemReadCount int64 `json:"headItemReadCount"`
	// StorageBytes is the stats' storageBytes: how many bytes the queue
	// takes in storage.
	StorageBytes int64 `json:"storageBytes"`
}

// DefaultRequestQueueID returns the ID of the Actor run's default request
// queue (ACTOR_DEFAULT_REQUEST_QUEUE_ID, or the older
// APIFY_DEFAULT_REQUEST_QUEUE_ID), or "" outside an Actor run. Outside a run,
// find a queue by name with [Client.GetOrCreateRequestQueue].
func DefaultRequestQueueID() string {
	for _, name := range []string{"ACTOR_DEFAULT_REQUEST_QUEUE_ID", "APIFY_DEFAULT_REQUEST_QUEUE_ID"} {
		if id := os.Getenv(name); id != "" {
			return id
		}
	}
	return ""
}

// GetOrCreateRequestQueue returns the token owner's queue with this name,
// creating it if there is none. Use the returned ID with [Client.RequestQueue].
// Getting or creating by name is idempotent, so the call is retried like
// UnlockRequests.
//
// A name is 1 to 63 letters, digits and hyphens, a hyphen only inside it
// ("my-queue-1"); another is rejected before any I/O with an error wrapping
// [ErrInvalidInput].
//
// It calls POST /v2/request-queues?name={name}.
func (c *Client) GetOrCreateRequestQueue(ctx context.Context, name string) (*RequestQueueInfo, error) {
	if err := validateQueueName(name); err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, apiRequest{
		method:     http.MethodPost,
		ep:         c.queuesEndpoint(),
		query:      query{}.add("name", name).encode(),
		idempotent: true,
	})
	if err != nil {
		return nil, err
	}
	return decodeQueueInfo(resp)
}

// validateQueueName checks a queue name the way Apify's documentation states
// the rule.
func validateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("apify: %w: the queue name is empty", ErrInvalidInput)
	}
	if len(name) > 63 {
		return fmt.Errorf("apify: %w: the queue name has %d characters; the API accepts at most 63", ErrInvalidInput, len(name))
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("apify: %w: the queue name %q has %q at byte %d; use letters, digits and hyphens, a hyphen only inside (\"my-queue-1\")",
				ErrInvalidInput, clip(name, 80), rune(b), i)
		}
	}
	return nil
}

// queuesEndpoint is /v2/request-queues.
func (c *Client) queuesEndpoint() endpoint {
	return endpoint{path: c.basePath + "/v2/request-queues", rawPath: c.baseRawPath + "/v2/request-queues"}
}

// decodeQueueInfo decodes a queue object, which must have an ID.
func decodeQueueInfo(resp apiResponse) (*RequestQueueInfo, error) {
	info, err := decodeData[RequestQueueInfo](resp)
	if err != nil {
		return nil, err
	}
	if info.ID == "" {
		return nil, resp.unexpected("data.id is missing")
	}
	return info, nil
}

// ListRequestQueuesOptions configures [Client.ListRequestQueues]. The zero
// value lists the first page of named queues, oldest first.
type ListRequestQueuesOptions struct {
	// Offset is how many queues to skip.
	Offset int
	// Limit is how many queues to return; 0 leaves it to the API (1000, its maximum).
	Limit int
	// Desc lists the newest queues first.
	Desc bool
	// Unnamed includes unnamed queues, such as the default queues of Actor runs.
	Unnamed bool
	// Ownership narrows the list: "" for every queue the token may read,
	// [OwnedByMe] or [SharedWithMe].
	Ownership Ownership
}

// Ownership filters [Client.ListRequestQueues].
type Ownership string

// The ownership filters.
const (
	// OwnedByMe lists only the token owner's queues.
	OwnedByMe Ownership = "ownedByMe"
	// SharedWithMe lists only queues other users shared with the token owner.
	SharedWithMe Ownership = "sharedWithMe"
)

// RequestQueueList is one page of [Client.ListRequestQueues].
type RequestQueueList struct {
	// Items are the queues of this page.
	Items []RequestQueueInfo `json:"items"`
	// Total is how many queues match, on every page.
	Total int `json:"total"`
	// Offset is how many queues come before this page, as the API echoes
	// it.
	Offset int `json:"offset"`
	// Limit is the most queues the page may hold, as the API echoes it:
	// the call's Limit, or the API's default when that was 0.
	Limit int `json:"limit"`
	// Desc reports whether the queues are listed newest first, as the API
	// echoes it.
	Desc bool `json:"desc"`
	// Count is len(Items).
	Count int `json:"count"`
}

// ListRequestQueues returns one page of the queues the token may read:
// named ones only unless opts.Unnamed. For the next page, add the page's
// Count to opts.Offset; Total says how many there are. It is read-only, so it
// is retried like UnlockRequests.
//
// It calls GET /v2/request-queues.
func (c *Client) ListRequestQueues(ctx context.Context, opts ListRequestQueuesOptions) (*RequestQueueList, error) {
	switch {
	case opts.Offset < 0:
		return nil, fmt.Errorf("apify: %w: ListRequestQueuesOptions.Offset is %d; it must not be negative", ErrInvalidInput, opts.Offset)
	case opts.Limit < 0:
		return nil, fmt.Errorf("apify: %w: ListRequestQueuesOptions.Limit is %d; it must not be negative (0 leaves it to the API)", ErrInvalidInput, opts.Limit)
	case opts.Ownership != "" && opts.Ownership != OwnedByMe && opts.Ownership != SharedWithMe:
		return nil, fmt.Errorf("apify: %w: ListRequestQueuesOptions.Ownership is %q; it must be \"\", %q or %q", ErrInvalidInput, clip(string(opts.Ownership), 64), OwnedByMe, SharedWithMe)
	}
	qs := query{}
	if opts.Offset > 0 {
		qs = qs.add("offset", strconv.Itoa(opts.Offset))
	}
	if opts.Limit > 0 {
		qs = qs.add("limit", strconv.Itoa(opts.Limit))
	}
	qs = qs.addBool("desc", opts.Desc).addBool("unnamed", opts.Unnamed).add("ownership", string(opts.Ownership))
	resp, err := c.do(ctx, apiRequest{method: http.MethodGet, ep: c.queuesEndpoint(), query: qs.encode(), idempotent: true, maxBody: maxListBodyBytes})
	if err != nil {
		return nil, err
	}
	page, err := decodeData[struct {
		RequestQueueList
		Items *[]RequestQueueInfo `json:"items"`
	}](resp)
	if err != nil {
		return nil, err
	}
	if page.Items == nil {
		return nil, resp.unexpected("data.items is missing")
	}
	for i, it := range *page.Items {
		if it.ID == "" {
			return nil, resp.unexpected(fmt.Sprintf("data.items[%d] has no id", i))
		}
	}
	out := page.RequestQueueList
	out.Items = *page.Items
	return &out, nil
}

// Get returns the queue's metadata and counts. It is read-only, so it is
// retried like UnlockRequests.
//
// It calls GET /v2/request-queues/{queueId}.
func (q *RequestQueueClient) Get(ctx context.Context) (*RequestQueueInfo, error) {
	if q.err != nil {
		return nil, q.err
	}
	resp, err := q.c.do(ctx, apiRequest{method: http.MethodGet, ep: q.base, idempotent: true})
	if err != nil {
		return nil, err
	}
	return decodeQueueInfo(resp)
}

// RequestQueueUpdate is what [RequestQueueClient.Update] changes; zero
// fields are left as they are.
type RequestQueueUpdate struct {
	// Name is the queue's new name (see GetOrCreateRequestQueue for the rule).
	Name string
	// GeneralAccess is who else may read the queue.
	GeneralAccess GeneralAccess
}

// Update renames the queue or changes its general access, and returns the
// queue as it now is. Renaming to a name in use is a 400 name-not-unique.
// It is idempotent, so it is retried like UnlockRequests.
//
// It calls PUT /v2/request-queues/{queueId}.
func (q *RequestQueueClient) Update(ctx context.Context, u RequestQueueUpdate) (*RequestQueueInfo, error) {
	if q.err != nil {
		return nil, q.err
	}
	if u.Name == "" && u.GeneralAccess == "" {
		return nil, fmt.Errorf("apify: %w: the RequestQueueUpdate is empty: set Name or GeneralAccess", ErrInvalidInput)
	}
	if u.Name != "" {
		if err := validateQueueName(u.Name); err != nil {
			return nil, err
		}
	}
	if u.GeneralAccess != "" && !u.GeneralAccess.valid() {
		return nil, fmt.Errorf("apify: %w: RequestQueueUpdate.GeneralAccess is %q; it must be one of %s, %s, %s, %s",
			ErrInvalidInput, clip(string(u.GeneralAccess), 64), GeneralAccessRestricted, GeneralAccessAnyoneWithIDCanRead,
			GeneralAccessAnyoneWithNameCanRead, GeneralAccessFollowUserSetting)
	}
	body, err := json.Marshal(struct {
		Name          string        `json:"name,omitempty"`
		GeneralAccess GeneralAccess `json:"generalAccess,omitempty"`
	}{u.Name, u.GeneralAccess})
	if err != nil {
		return nil, fmt.Errorf("apify: %w: %w", ErrInvalidInput, err)
	}
	resp, err := q.c.do(ctx, apiRequest{method: http.MethodPut, ep: q.base, body: body, idempotent: true})
	if err != nil {
		return nil, err
	}
	return decodeQueueInfo(resp)
}

// Delete deletes the queue and every request in it.
//
// It is retried like UnlockRequests. A 404 on a retry reports success:
// the earlier attempt may have deleted the queue without its answer
// arriving (a lost connection, a 502 or 504 from a proxy), and the queue is
// gone either way. So after a retried 503 or 429 a queue that never existed
// also reports success. A 404 on the first attempt is an error matching
// [ErrNotFound].
//
// It calls DELETE /v2/request-queues/{queueId}.
func (q *RequestQueueClient) Delete(ctx context.Context) error {
	if q.err != nil {
		return q.err
	}
	_, err := q.c.do(ctx, apiRequest{method: http.MethodDelete, ep: q.base, idempotent: true})
	return goneAfterRetry(err)
}

// goneAfterRetry turns a 404 that a retry of a delete got into success: an
// earlier attempt failed (a 404 is not retried) and may have deleted the
// thing without its answer arriving; gone is gone.
func goneAfterRetry(err error) error {
	if apiErr, ok := err.(*APIError); ok && apiErr.StatusCode == http.StatusNotFound && apiErr.Attempts > 1 {
		return nil
	}
	return err
}
