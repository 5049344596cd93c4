// Package apify is a Go client for Apify's request queues, built first around
// one call: releasing every lock a crawler holds when it stops.
//
// Apify crawlers take work from a request queue by locking requests under a
// clientKey (or their Actor run). A crawler that stops leaves its locks
// behind, and those requests sit idle until the locks expire, often minutes
// or hours later. [RequestQueueClient.UnlockRequests] releases them all in
// one call:
//
//	c, err := apify.NewClientFromEnv() // APIFY_TOKEN, APIFY_API_BASE_URL
//	if err != nil {
//		return err
//	}
//	res, err := c.RequestQueue(queueID).UnlockRequests(ctx, clientKey)
//
// # Consuming a queue
//
// [RequestQueueClient.Consume] is a whole crawler loop: it locks requests,
// runs a [Handler] on each, keeps the locks alive while handlers run,
// records results and retries, takes back at start what an earlier run with
// the same clientKey left locked, and releases every lock when ctx ends.
//
//	stats, err := q.Consume(ctx, func(ctx context.Context, req *apify.Request) error {
//		return crawl(ctx, req) // nil: handled; an error: tried again later
//	}, apify.ConsumeOptions{Concurrency: 10})
//
// # Correct on the wire
//
// The queue ID is escaped as one path segment (a "/", "?" or "#" in it can
// neither cut the path nor start the query), the clientKey is checked (1 to 32
// characters) and query-escaped, the token goes only in the Authorization
// header, and a response that is not the documented envelope is an error,
// never a silent zero.
//
// # Bounded in time
//
// Each attempt is bounded by [WithTimeout] (30 s by default), reading the
// body included; the context bounds the whole call, retries and waits
// included. A wait that would outlast the context's deadline is not started:
// the call returns the API's last answer at once instead.
//
// # Safe to retry
//
// Calls are retried after 429, 500, 502, 503, 504 and network failures, with
// exponential backoff and full jitter ([DefaultRetryWaitMin] doubling up to
// [DefaultRetryWaitMax]), honouring Retry-After on 429 and 503 within the same
// bounds. 501 and other 4xx are never retried. Redirects are never followed.
//
// # Errors to act on
//
// A response outside 2xx is an [*APIError] (status, the API's error type and
// message, attempts made, Retry-After); errors.Is maps it to [ErrNotFound],
// [ErrRateLimited] and the other sentinels. A call that got no usable response
// is a [*RequestError] wrapping its cause, so errors.Is(err,
// context.DeadlineExceeded) works. Bad arguments are rejected before any I/O
// with errors wrapping [ErrInvalidQueueID] or [ErrInvalidClientKey].
//
// The library prints nothing by itself; see [WithLogger].
package apify
