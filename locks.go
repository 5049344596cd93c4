package apify

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Limits and defaults of the lock calls. A zero field of [LockHeadOptions]
// or [ProlongLockOptions] means its default.
const (
	// MaxLockHeadLimit is the most requests one [RequestQueueClient.ListAndLockHead] call may lock.
	MaxLockHeadLimit = 25
	// DefaultLockHeadLimit is how many requests ListAndLockHead locks when
	// LockHeadOptions.Limit is 0: a full batch, as Crawlee takes.
	DefaultLockHeadLimit = MaxLockHeadLimit
	// DefaultLockDuration is the lock time of ListAndLockHead and
	// ProlongRequestLock when their LockDuration is 0.
	DefaultLockDuration = 60 * time.Second
	// MaxLockDuration is the longest lock the client asks for (a lockSecs of
	// 86,400). Apify documents no maximum; the client refuses more than a
	// day, as apifytest does, so that a duration given in the wrong unit
	// fails before any I/O instead of locking a request for years.
	MaxLockDuration = 24 * time.Hour
)

// LockHeadOptions configures [RequestQueueClient.ListAndLockHead]. The zero
// value locks [DefaultLockHeadLimit] requests for [DefaultLockDuration],
// under no clientKey.
type LockHeadOptions struct {
	// Limit is how many requests to lock, 1 to MaxLockHeadLimit; 0 means
	// DefaultLockHeadLimit.
	Limit int
	// LockDuration is how long the locks last, rounded up to whole seconds,
	// at most MaxLockDuration; 0 means DefaultLockDuration.
	LockDuration time.Duration
	// ClientKey identifies the locking client (see DefaultClientKey). Empty
	// sends none: inside an Actor run the locks then belong to the run.
	ClientKey string
}

// LockedHead is the result of [RequestQueueClient.ListAndLockHead].
type LockedHead struct {
	// Items are the requests now locked by the caller, in queue order.
	// Fewer than Limit (even none) means the queue had no more unlocked
	// pending requests.
	Items []LockedRequest
	// LockDuration is the lock time the API applied.
	LockDuration time.Duration
	// QueueHasLockedRequests reports whether any client holds locks in the
	// queue, the caller included: with no Items it tells "finished" (false)
	// from "others are still working" (true).
	QueueHasLockedRequests bool
	// HadMultipleClients reports whether more than one client has used the queue.
	HadMultipleClients bool
	// QueueModifiedAt is when the queue last changed.
	QueueModifiedAt time.Time
	// ClientKey is the clientKey the locks were taken under, as the API echoes it.
	ClientKey string
}

// lockedHeadData is the data of the head/lock response as the API sends it.
type lockedHeadData struct {
	Items                  *[]LockedRequest `json:"items"`
	LockSecs               *float64         `json:"lockSecs"`
	QueueHasLockedRequests bool             `json:"queueHasLockedRequests"`
	HadMultipleClients     bool             `json:"hadMultipleClients"`
	QueueModifiedAt        time.Time        `json:"queueModifiedAt"`
	ClientKey              string           `json:"clientKey"`
}

// LockedRequest is a request locked by [RequestQueueClient.ListAndLockHead].
type LockedRequest struct {
	// ID is the request's id, never empty: the ID to prolong or delete the
	// lock with, or to mark the request handled with.
	ID string `json:"id"`
	// UniqueKey is the request's uniqueKey.
	UniqueKey string `json:"uniqueKey"`
	// URL is the request's url.
	URL string `json:"url"`
	// Method is the request's method, such as "GET"; empty when the API
	// left it out, which means GET.
	Method string `json:"method"`
	// RetryCount is the request's retryCount: how many times it has been
	// put back after a failed attempt; 0 when the API left it out.
	RetryCount int `json:"retryCount"`
	// LockExpiresAt is the lock's lockExpiresAt, never zero: when the lock
	// ends unless prolonged, by the API's clock, which may differ from the
	// local one.
	LockExpiresAt time.Time `json:"lockExpiresAt"`
}

// ListAndLockHead locks up to opts.Limit requests from the head of the queue
// for opts.LockDuration and returns them. Until a lock ends (it expires, the
// holder deletes it, marks the request handled, or calls UnlockRequests), no
// other client sees the request.
//
// It is retried only when the API cannot have taken the locks (a 429, or
// the request never left: no connection could be made, or its TLS handshake
// timed out): after a lost response a blind retry would lock a second
// batch, and the first would sit unseen until its locks expired.
//
// It calls POST /v2/request-queues/{queueId}/head/lock.
func (q *RequestQueueClient) ListAndLockHead(ctx context.Context, opts LockHeadOptions) (*LockedHead, error) {
	if q.err != nil {
		return nil, q.err
	}
	if opts.Limit == 0 {
		opts.Limit = DefaultLockHeadLimit
	}
	if opts.Limit < 1 || opts.Limit > MaxLockHeadLimit {
		return nil, fmt.Errorf("apify: %w: LockHeadOptions.Limit is %d; it must be 1 to %d (or 0 for %d)", ErrInvalidInput, opts.Limit, MaxLockHeadLimit, DefaultLockHeadLimit)
	}
	lockSecs, err := lockSeconds("LockHeadOptions", opts.LockDuration)
	if err != nil {
		return nil, err
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	resp, err := q.c.do(ctx, apiRequest{
		method: http.MethodPost,
		ep:     q.endpoint("/head/lock"),
		query:  query{}.add("limit", strconv.Itoa(opts.Limit)).add("lockSecs", lockSecs).add("clientKey", opts.ClientKey).encode(),
	})
	if err != nil {
		return nil, err
	}
	head, err := decodeData[lockedHeadData](resp)
	if err != nil {
		return nil, err
	}
	if head.Items == nil {
		return nil, resp.unexpected("data.items is missing")
	}
	for i, it := range *head.Items {
		if it.ID == "" || it.LockExpiresAt.IsZero() {
			return nil, resp.unexpected(fmt.Sprintf("data.items[%d] has no id or lockExpiresAt", i))
		}
	}
	out := &LockedHead{
		Items:                  *head.Items,
		QueueHasLockedRequests: head.QueueHasLockedRequests,
		HadMultipleClients:     head.HadMultipleClients,
		QueueModifiedAt:        head.QueueModifiedAt,
		ClientKey:              head.ClientKey,
	}
	if head.LockSecs != nil && *head.LockSecs > 0 && *head.LockSecs < math.MaxInt32 {
		out.LockDuration = time.Duration(*head.LockSecs * float64(time.Second))
	}
	return out, nil
}

// ListHeadOptions configures [RequestQueueClient.ListHead].
type ListHeadOptions struct {
	// Limit is how many requests to return; 0 leaves it to the API (100).
	Limit int
	// ClientKey identifies the caller (it counts toward HadMultipleClients).
	ClientKey string
}

// QueueHead is the result of [RequestQueueClient.ListHead].
type QueueHead struct {
	// Items are the first pending, unlocked requests, in queue order.
	Items []HeadRequest
	// HadMultipleClients reports whether more than one client has used the queue.
	HadMultipleClients bool
	// QueueModifiedAt is when the queue last changed.
	QueueModifiedAt time.Time
}

// HeadRequest is a request at the head of the queue.
type HeadRequest struct {
	// ID is the request's id.
	ID string `json:"id"`
	// UniqueKey is the request's uniqueKey.
	UniqueKey string `json:"uniqueKey"`
	// URL is the request's url.
	URL string `json:"url"`
	// Method is the request's method, such as "GET"; empty when the API
	// left it out, which means GET.
	Method string `json:"method"`
	// RetryCount is the request's retryCount: how many times it has been
	// put back after a failed attempt; 0 when the API left it out.
	RetryCount int `json:"retryCount"`
}

// ListHead returns the first pending requests of the queue without locking
// them; locked requests are not listed. It is read-only, so it is retried
// like UnlockRequests.
//
// It calls GET /v2/request-queues/{queueId}/head.
func (q *RequestQueueClient) ListHead(ctx context.Context, opts ListHeadOptions) (*QueueHead, error) {
	if q.err != nil {
		return nil, q.err
	}
	if opts.Limit < 0 {
		return nil, fmt.Errorf("apify: %w: ListHeadOptions.Limit is %d; it must not be negative", ErrInvalidInput, opts.Limit)
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return nil, err
	}
	qs := query{}
	if opts.Limit > 0 {
		qs = qs.add("limit", strconv.Itoa(opts.Limit))
	}
	resp, err := q.c.do(ctx, apiRequest{
		method:     http.MethodGet,
		ep:         q.endpoint("/head"),
		query:      qs.add("clientKey", opts.ClientKey).encode(),
		idempotent: true,
	})
	if err != nil {
		return nil, err
	}
	head, err := decodeData[struct {
		Items              *[]HeadRequest `json:"items"`
		HadMultipleClients bool           `json:"hadMultipleClients"`
		QueueModifiedAt    time.Time      `json:"queueModifiedAt"`
	}](resp)
	if err != nil {
		return nil, err
	}
	if head.Items == nil {
		return nil, resp.unexpected("data.items is missing")
	}
	return &QueueHead{Items: *head.Items, HadMultipleClients: head.HadMultipleClients, QueueModifiedAt: head.QueueModifiedAt}, nil
}

// ProlongLockOptions configures [RequestQueueClient.ProlongRequestLock]. The
// zero value prolongs by [DefaultLockDuration] under no clientKey.
type ProlongLockOptions struct {
	// LockDuration is the new lock time, counted from now and rounded up to
	// whole seconds, at most MaxLockDuration; 0 means DefaultLockDuration.
	LockDuration time.Duration
	// ClientKey must be the key the lock was taken with.
	ClientKey string
	// Forefront puts the request at the front of the queue when the lock
	// ends, instead of the back.
	Forefront bool
}

// ProlongRequestLock extends the caller's lock on a request to
// opts.LockDuration from now and returns the new expiry. Only the holder of
// the lock (same clientKey, or same Actor run) may prolong it.
//
// Prolonging is idempotent (each call sets the expiry from now), so it is
// retried like UnlockRequests.
//
// It calls PUT /v2/request-queues/{queueId}/requests/{requestId}/lock.
func (q *RequestQueueClient) ProlongRequestLock(ctx context.Context, requestID string, opts ProlongLockOptions) (time.Time, error) {
	ep, err := q.requestEndpoint(requestID, "/lock")
	if err != nil {
		return time.Time{}, err
	}
	lockSecs, err := lockSeconds("ProlongLockOptions", opts.LockDuration)
	if err != nil {
		return time.Time{}, err
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return time.Time{}, err
	}
	resp, err := q.c.do(ctx, apiRequest{
		method:     http.MethodPut,
		ep:         ep,
		query:      query{}.add("lockSecs", lockSecs).add("clientKey", opts.ClientKey).addBool("forefront", opts.Forefront).encode(),
		idempotent: true,
	})
	if err != nil {
		return time.Time{}, err
	}
	data, err := decodeData[struct {
		LockExpiresAt time.Time `json:"lockExpiresAt"`
	}](resp)
	if err != nil {
		return time.Time{}, err
	}
	if data.LockExpiresAt.IsZero() {
		return time.Time{}, resp.unexpected("data.lockExpiresAt is missing")
	}
	return data.LockExpiresAt, nil
}

// DeleteLockOptions configures [RequestQueueClient.DeleteRequestLock].
type DeleteLockOptions struct {
	// ClientKey must be the key the lock was taken with.
	ClientKey string
	// Forefront puts the request back at the front of the queue instead of the back.
	Forefront bool
}

// DeleteRequestLock releases the caller's lock on one request, making it
// pending again. Only the holder of the lock may delete it.
//
// It is retried like UnlockRequests: releasing a lock twice does no harm.
// When an earlier attempt's response was lost, a later one may find the
// lock already gone and report that as an *APIError (Attempts > 1).
//
// It calls DELETE /v2/request-queues/{queueId}/requests/{requestId}/lock.
func (q *RequestQueueClient) DeleteRequestLock(ctx context.Context, requestID string, opts DeleteLockOptions) error {
	ep, err := q.requestEndpoint(requestID, "/lock")
	if err != nil {
		return err
	}
	if err := validateClientKey(opts.ClientKey); err != nil {
		return err
	}
	_, err = q.c.do(ctx, apiRequest{
		method:     http.MethodDelete,
		ep:         ep,
		query:      query{}.add("clientKey", opts.ClientKey).addBool("forefront", opts.Forefront).encode(),
		idempotent: true,
	})
	return err
}

// lockSeconds renders a lock duration as the API's lockSecs: whole seconds,
// rounded up so a lock never ends before the caller asked; 0 is
// DefaultLockDuration. Checking the maximum first keeps the rounding from
// overflowing.
func lockSeconds(opt string, d time.Duration) (string, error) {
	switch {
	case d == 0:
		d = DefaultLockDuration
	case d < 0:
		return "", fmt.Errorf("apify: %w: %s.LockDuration is %v; it must not be negative (0 means %v)", ErrInvalidInput, opt, d, DefaultLockDuration)
	case d > MaxLockDuration:
		return "", fmt.Errorf("apify: %w: %s.LockDuration is %v; it must be at most %v", ErrInvalidInput, opt, d, MaxLockDuration)
	}
	secs := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(secs), 10), nil
}

// query builds an encoded query string, leaving out empty values.
type query []byte

func (b query) add(key, value string) query {
	if value == "" {
		return b
	}
	if len(b) > 0 {
		b = append(b, '&')
	}
	b = append(b, key...)
	b = append(b, '=')
	return append(b, url.QueryEscape(value)...)
}

func (b query) addBool(key string, v bool) query {
	if !v {
		return b
	}
	return b.add(key, "true")
}

func (b query) encode() string { return string(b) }
