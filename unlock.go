package apify

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"unicode"
	"unicode/utf8"
)

// MaxClientKeyLength is the longest clientKey the API accepts, in characters.
const MaxClientKeyLength = 32

// UnlockRequestsResult is the outcome of [RequestQueueClient.UnlockRequests].
type UnlockRequestsResult struct {
	// UnlockedCount is how many locks the call released. When the call was
	// retried, an earlier attempt may have released locks without its
	// response arriving, so the count can be lower than the locks the caller
	// held: unlocking is idempotent in effect, not in its count.
	UnlockedCount int
}

// UnlockRequests releases, in one call, every lock on this queue held by the
// caller: the locks taken with clientKey and, when the token belongs to an
// Actor run, every lock that run holds.
//
// An empty clientKey sends no clientKey at all. Inside an Actor run that
// still releases the run's locks; outside a run the API treats each such call
// as a new client, with nothing of its own to unlock. A non-empty clientKey
// longer than [MaxClientKeyLength] characters, not valid UTF-8, or with
// control characters is rejected before any I/O with an error wrapping
// [ErrInvalidClientKey].
//
// The call is retried after a 429, a 500, 502, 503 or 504, or a network
// failure (releasing locks twice is harmless), honouring Retry-After. Each
// attempt is bounded by [WithTimeout] and the whole call by ctx.
//
// It calls POST /v2/request-queues/{queueId}/requests/unlock.
func (q *RequestQueueClient) UnlockRequests(ctx context.Context, clientKey string) (*UnlockRequestsResult, error) {
	if q.err != nil {
		return nil, q.err
	}
	if err := validateClientKey(clientKey); err != nil {
		return nil, err
	}
	resp, err := q.c.do(ctx, apiRequest{
		method:     http.MethodPost,
		ep:         q.unlock,
		query:      clientKeyQuery(clientKey),
		idempotent: true,
	})
	if err != nil {
		return nil, err
	}
	data, err := decodeData[struct {
		UnlockedCount *int64 `json:"unlockedCount"`
	}](resp)
	if err != nil {
		return nil, err
	}
	switch n := data.UnlockedCount; {
	case n == nil:
		return nil, resp.unexpected("data.unlockedCount is missing")
	case *n < 0:
		return nil, resp.unexpected(fmt.Sprintf("data.unlockedCount is negative (%d)", *n))
	case int64(int(*n)) != *n:
		return nil, resp.unexpected("data.unlockedCount does not fit in an int")
	default:
		return &UnlockRequestsResult{UnlockedCount: int(*n)}, nil
	}
}

// validateClientKey checks a clientKey the way the API documents it: 1 to 32
// characters. The empty key means "no clientKey" and passes.
func validateClientKey(key string) error {
	if key == "" {
		return nil
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("apify: %w: the clientKey is not valid UTF-8", ErrInvalidClientKey)
	}
	if n := utf8.RuneCountInString(key); n > MaxClientKeyLength {
		return fmt.Errorf("apify: %w: the clientKey has %d characters; the API accepts 1 to %d",
			ErrInvalidClientKey, n, MaxClientKeyLength)
	}
	for i, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("apify: %w: the clientKey has a control character (%U) at byte %d",
				ErrInvalidClientKey, r, i)
		}
	}
	return nil
}

// clientKeyQuery is query{}.add("clientKey", key).encode() in one allocation
// instead of three: it is on the unlock hot path.
func clientKeyQuery(key string) string {
	if key == "" {
		return ""
	}
	return "clientKey=" + url.QueryEscape(key)
}
