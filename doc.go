// Package apify is a Go client for Apify's request queues, built around the
// crawler's loop, [RequestQueueClient.Consume], and the one call that makes
// stopping safe: releasing every lock a crawler holds when it stops.
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
// # The rest of a crawler's queue
//
// [Client.GetOrCreateRequestQueue] finds a queue by name and
// [DefaultRequestQueueID] names an Actor run's own; [RequestQueueClient.Get]
// reports its counts. [RequestQueueClient.ListAndLockHead] takes work,
// [RequestQueueClient.MarkHandled] finishes it by request ID without losing
// what the request carries, [RequestQueueClient.ListRequests] iterates over
// locked or pending requests, and [RequestQueueClient.BatchAddRequests] adds
// any number of requests, sending again what the API reports unprocessed.
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
// The README's quick start (examples/quickstart) is a whole crawler on it:
// seeding, depth in UserData, links added under the consumer's clientKey,
// and its test against the emulator of package apifytest.
//
// # Beyond the queue calls
//
// [Client.Do] calls any endpoint of the API (an Actor run, a dataset)
// through the same core: token, retries, limits and error types.
// [Client.RunRequestQueue] addresses an Actor run's default queue by the
// run, under /v2/actor-runs/{runId}/request-queue.
//
// # Platform events
//
// Inside an Actor run the platform sends the run events over a WebSocket:
// migrating (the process is killed after [PlatformEvent.TimeRemaining] and
// the run restarts elsewhere), aborting (force-stopped about 30 s later),
// persistState and systemInfo. [SubscribePlatformEvents] reads them over one
// connection per process shared by every subscription, reconnects after a
// drop but never after a close with code 1008, and outside Apify returns a
// stream that never delivers, so the same code runs everywhere:
//
//	events, err := apify.SubscribePlatformEvents(ctx, apify.PlatformEventsOptions{})
//	if err != nil {
//		return err
//	}
//	defer events.Close()
//	for ev := range events.C() {
//		if ev.Name == apify.PlatformEventMigrating {
//			// save state within ev.TimeRemaining, then exit non-zero
//		}
//	}
//
// A process that exits 0 while migrating ends the run SUCCEEDED and the
// platform does not restart it; see [ErrMigrating] and [Client.RebootRun].
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
// included. The wait before a retry is drawn first, jitter and Retry-After
// included; one that would end at or after the context's deadline is not
// started. The call returns at once the error it would have returned had the
// deadline passed during the wait: a [*RequestError] matching
// context.DeadlineExceeded that also holds the API's last answer, so that
// errors.As(err, &apiErr) gives its status, type, Retry-After and attempts.
// The shape of the error never depends on the jitter.
//
// # Safe to retry
//
// Calls are retried after 429, 500, 502, 503, 504 and network failures
// (timeouts included), with exponential backoff and full jitter
// ([DefaultRetryWaitMin] doubling up to [DefaultRetryWaitMax]), honouring
// Retry-After on 429 and 503 within the same bounds. A call that must not be
// repeated once the API may have acted on it
// ([RequestQueueClient.ListAndLockHead]) is retried after a 429 and after a
// network failure only when its request never left (a failed connect, a TLS
// handshake timeout). 501 and other 4xx are never retried. Redirects are
// never followed.
//
// # Errors to act on
//
// A response outside 2xx is an [*APIError] (status, the API's error type and
// message, attempts made, Retry-After, the response's header); errors.Is maps it to [ErrNotFound],
// [ErrRateLimited] and the other sentinels. A call that got no usable response
// is a [*RequestError] wrapping its cause, so errors.Is(err,
// context.DeadlineExceeded) works; when the context ended (or would have)
// before a retry, it wraps the response being retried too. Bad arguments
// are rejected before any I/O with errors wrapping [ErrInvalidQueueID] or
// [ErrInvalidClientKey].
//
// The library prints nothing by itself; see [WithLogger].
package apify
