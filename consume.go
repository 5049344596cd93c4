package apify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Consume is split by owner, so that a reader sees who may touch what:
//
//   - consume.go: the public surface, the options, and the registry that
//     allows one Consume per queue and clientKey in a process;
//   - consume_run.go: the consumer, its start-up and its shutdown;
//   - consume_locker.go: the locker, the one goroutine that calls head/lock:
//     flow control, prefetch sizing and finish detection;
//   - consume_lease.go: the leases (one per locked request: its deadline,
//     its context, its expiry timer) and the keeper that renews them;
//   - consume_worker.go: the workers, which fetch a request, run its handler
//     in a goroutine of its own and give up on one that does not return;
//   - consume_record.go: the recorder, which writes a handler's result while
//     the lease holds.

// Handler processes one request taken from a queue by
// [RequestQueueClient.Consume], which calls it from up to Concurrency
// goroutines at once. It gets the whole request (as GetRequest
// returns it) and may change req.UserData (and the other fields the API
// stores): Consume writes the request back when it records the result. It
// keeps ID, UniqueKey, RetryCount and HandledAt as they were read, since
// the result decides the last two; a handler's changes to them are ignored.
//
// Returning nil marks the request handled. Returning an error puts it back
// for another try, or fails it at once when the error wraps [ErrNoRetry]. A
// panic, or a runtime.Goexit (a failed require or t.FailNow in a test), is a
// failure of that request, like an error.
//
// ctx ends when the handler must stop: its HandlerTimeout passed, its lock
// was lost or is about to expire ([ErrLockLost]), or the consumer is shutting
// down and the drain time is over. context.Cause(ctx) says which. A handler
// should return soon after ctx ends; one that has not returned a short grace
// later is abandoned (see [ConsumeStats].Abandoned), and what it returns
// after that is ignored.
type Handler func(ctx context.Context, req *Request) error

// ErrNoRetry, wrapped by a handler's error, fails the request at once: it is
// marked handled with the error recorded, whatever its retry count.
var ErrNoRetry = errors.New("do not retry")

// ErrLockLost is the cause (context.Cause) of a handler's ctx when the
// consumer lost the request's lock: a prolong was refused (another client
// holds it, or it was deleted or handled), or the lock is about to expire
// (by the local clock, less a margin for the round trip) and could not be
// prolonged in time. The handler's result is then not recorded.
var ErrLockLost = errors.New("lock lost")

// ErrHandlerTimeout is the cause of a handler's ctx when its
// ConsumeOptions.HandlerTimeout passed; the request then fails (and is
// retried if it has retries left).
var ErrHandlerTimeout = errors.New("handler timed out")

// ErrShuttingDown is the cause of a handler's ctx when the consumer is
// stopping (its ctx ended, or a platform event) and its drain time passed
// before the handler returned.
var ErrShuttingDown = errors.New("consumer shutting down")

// ErrHandlerAbandoned is recorded, wrapped, on a request whose handler did
// not return within a grace after its ctx ended: Consume gave its slot to
// another request and counted it in ConsumeStats.Abandoned.
var ErrHandlerAbandoned = errors.New("handler did not return after its context ended")

// ErrConsumeInProgress is returned, before any I/O, by a Consume on a queue
// and clientKey that another Consume of this process is already consuming.
// See [RequestQueueClient.Consume] for why, and what to do across processes.
var ErrConsumeInProgress = errors.New("another Consume is running on this queue with this clientKey")

// Defaults of [ConsumeOptions], used for its zero fields.
const (
	// DefaultConsumeConcurrency is how many handlers run at once.
	DefaultConsumeConcurrency = 10
	// DefaultConsumeLockDuration is the lease taken and renewed per request.
	DefaultConsumeLockDuration = time.Minute
	// DefaultConsumeHandlerTimeout bounds one handler call.
	DefaultConsumeHandlerTimeout = time.Minute
	// DefaultConsumeMaxRetries is how many times a failed request is tried again.
	DefaultConsumeMaxRetries = 3
	// DefaultConsumeDrainTimeout is how long running handlers may go on at shutdown.
	DefaultConsumeDrainTimeout = 10 * time.Second
	// DefaultConsumePrefetch is the most locked requests that may wait for a
	// free handler: one head/lock call's worth. Consume waits with fewer
	// when handlers are slow (see ConsumeOptions.Prefetch).
	DefaultConsumePrefetch = MaxLockHeadLimit
)

const (
	consumeErrorsKept      = 10   // error messages kept on a request
	consumeErrorMessageMax = 1000 // bytes of one error message
	consumeMaxConcurrency  = 10_000
	consumeMinLockDuration = time.Second
	// The idle poll, while others hold locks or with KeepAlive.
	consumeIdlePollMin = 100 * time.Millisecond
	consumeIdlePollMax = 2 * time.Second
	// How many prolongs (at least, and at most: see renewParallelism), and
	// how many releases at shutdown, run at once.
	consumeRenewParallelism       = 16
	consumeRenewParallelismMax    = 256
	consumeShutdownReleaseWorkers = 8
	// consumeAbandonGraceMax bounds the grace a handler gets to return
	// after its ctx ended (it is also at most a sixth of the lock).
	consumeAbandonGraceMax = 5 * time.Second
	// consumeLeaseMarginMax bounds the margin by which a lease ends before
	// the lock's expiry by the local clock (also at most a tenth of the lock).
	consumeLeaseMarginMax = 2 * time.Second
)

// consumeBackoff is the wait before Consume tries a failed call again: the
// calls have already been retried by the client, so it stays short, and an
// idle consumer notices new work or the end of the queue within seconds. A
// Retry-After from the API is honoured up to 30 s.
var consumeBackoff = backoff{min: 250 * time.Millisecond, max: 2 * time.Second, hintMax: 30 * time.Second}

// ConsumeOptions configures [RequestQueueClient.Consume]. The zero value
// works: every zero field means the documented default.
type ConsumeOptions struct {
	// ClientKey is the key the requests are locked under; "" means
	// DefaultClientKey(). Consume starts by releasing every lock this key
	// holds on the queue, so two consumers must not share a clientKey on
	// one queue: a second Consume on the same queue and key in this process
	// fails with ErrConsumeInProgress (see Consume).
	ClientKey string
	// Concurrency is how many handlers run at once; 0 means
	// DefaultConsumeConcurrency (10).
	Concurrency int
	// LockDuration is the lease taken (and renewed) per request, 1 s to 24 h;
	// 0 means DefaultConsumeLockDuration (1 minute). It bounds how long a
	// crashed consumer's requests stay invisible to the others.
	LockDuration time.Duration
	// HandlerTimeout bounds one handler call; 0 means
	// DefaultConsumeHandlerTimeout (1 minute). After it the handler's ctx
	// ends (cause ErrHandlerTimeout) and the run is a failed attempt; a
	// handler that still has not returned a grace later (a sixth of
	// LockDuration, at most 5 s) is abandoned.
	HandlerTimeout time.Duration
	// MaxRetries is how many times a failed request is tried again (2: at
	// most 3 runs); 0 means DefaultConsumeMaxRetries (3), negative means never.
	MaxRetries int
	// DrainTimeout is how long running handlers may go on once ctx ended; 0
	// means DefaultConsumeDrainTimeout (10 s), negative means none (their
	// ctx ends at once).
	DrainTimeout time.Duration
	// ShutdownTimeout bounds the final release of locks (and the wait for
	// handlers cancelled at the end of the drain); 0 means
	// DefaultShutdownTimeout (5 s).
	ShutdownTimeout time.Duration
	// KeepAlive keeps Consume waiting for new requests instead of returning
	// when the queue is done; only ctx ends it. With KeepAlive, Consume also
	// rides out a start-up whose first calls all fail (see Consume).
	KeepAlive bool
	// Prefetch is the most requests beyond the free handler slots that may be
	// locked and waiting; 0 means DefaultConsumePrefetch (25, one head/lock
	// call's worth), negative means none (a request is locked only for a
	// free slot, at the price of more head/lock calls). Consume keeps fewer
	// waiting when handlers are slow: it sizes the prefetch from the
	// measured time per request (Little's law) so that no request waits
	// longer than a third of LockDuration, and releases one that would.
	Prefetch int
	// Logger receives a record for every queue call that failed after the
	// client's retries, every lost lock, every handler failure, every
	// abandoned handler and every platform event acted on; nil logs nothing.
	Logger *slog.Logger

	// Events delivers the Apify platform's events (see
	// [SubscribePlatformEvents]): on migrating and aborting, Consume stops,
	// hands every lock back in time and returns an error matching
	// ErrMigrating or ErrAborting (see Consume). Consume reads Events'
	// channel while it runs, so give it a subscription of its own (one more
	// SubscribePlatformEvents shares the process's connection), and close
	// it yourself. Nil means: when ACTOR_EVENTS_WEBSOCKET_URL or
	// APIFY_ACTOR_EVENTS_WS_URL is set (inside an Actor run), Consume
	// subscribes by itself for as long as it runs, unless
	// IgnorePlatformEvents; elsewhere there are none.
	Events *PlatformEvents
	// IgnorePlatformEvents keeps Consume from subscribing to the platform's
	// events by itself when Events is nil: it then stops only when ctx ends
	// (say, on SIGTERM), or when the queue is done.
	IgnorePlatformEvents bool
	// OnPersistState, when set, is called for each persistState event (the
	// platform's hint to save state now; isMigrating says a migration
	// follows), in a goroutine of its own, one call at a time: an event that
	// comes while a call still runs is skipped, with a log record. Its ctx
	// has ctx's values but not its cancellation, so a save under way
	// survives a SIGTERM; Consume waits for a call under way at most
	// ShutdownTimeout before it returns. A panic in it is logged.
	OnPersistState func(ctx context.Context, isMigrating bool)
}

// ConsumeStats counts what [RequestQueueClient.Consume] did.
type ConsumeStats struct {
	// Handled is how many requests were marked handled after their handler
	// succeeded, Failed how many were given up (marked handled with their
	// errors recorded), and Retried how many were put back for another try.
	Handled, Failed, Retried int
	// LocksRenewed counts prolongs; LocksLost counts requests whose lock was
	// lost (refused prolong, expiry, or a refused result), whose result
	// Consume therefore did not record.
	LocksRenewed, LocksLost int
	// RecoveredAtStart is how many locks the start-up unlock released;
	// ReleasedAtExit how many the shutdown released (the final unlock plus
	// the prefetched requests released one by one while handlers drained).
	RecoveredAtStart, ReleasedAtExit int
	// PrefetchReleased counts prefetched requests given back to the queue
	// because they would have waited longer than a third of their lock.
	PrefetchReleased int
	// Abandoned counts handlers that did not return within a grace after
	// their ctx ended: their goroutines may still run, their slots were
	// given to other requests, and their results are ignored.
	Abandoned int
	// APICalls counts every queue call Consume made (calls, not HTTP
	// attempts: the client's retries are not counted).
	APICalls int
	// CallErrors counts queue calls that failed after the client's retries
	// (429, 5xx, network) and were tried again later.
	CallErrors int
	// StoppedBy is the platform event that ended Consume: "migrating" or
	// "aborting"; "" when none did.
	StoppedBy string
}

// Consume takes requests from the queue and runs h on each, up to
// Concurrency at a time, until the queue is done (or, with KeepAlive, until
// ctx ends). It is the loop every crawler needs, written once:
//
//  1. Start-up: it first calls UnlockRequests with its clientKey, so locks
//     left by an earlier run with the same key (a restarted or migrated
//     Actor run, a killed process) are back in the queue at once
//     (RecoveredAtStart). Therefore two consumers must not share a
//     clientKey on one queue: each would release the other's locks. In one
//     process this is enforced: a second Consume on the same queue (as
//     addressed: the same base URL and queue path, so one queue addressed
//     by its ID and by username~name, or through RunRequestQueue, is not
//     seen as the same; address a queue one way) and the same clientKey
//     fails at once with ErrConsumeInProgress; inside an Actor run
//     (ACTOR_RUN_ID is set), where an unlock also releases every lock of
//     the run, a second Consume on the same queue fails whatever its key.
//     Across processes, give each process its own clientKey (outside Apify,
//     one that survives its restarts, such as a pod name). If every attempt
//     of this first call fails (no server at the base URL, a wrong port, a
//     network down), Consume returns that error rather than retrying
//     silently, unless KeepAlive.
//  2. Flow control: one goroutine locks requests with head/lock (at most 25
//     per call), as many as the free handler slots and the prefetch can
//     take, and hands them to handlers in queue order. The prefetch is sized
//     from the measured time a request takes (Little's law) so that a
//     locked request waits at most a third of LockDuration for a handler:
//     one that would wait longer is released (forefront) rather than
//     prolonged, and counted in PrefetchReleased.
//  3. Leases: each request held by a handler is renewed on its own schedule
//     when a third of LockDuration is left; renewals run a few at a time,
//     each bounded by the time left on its lock, so a slow or hung prolong
//     delays only its own request. Expiry is tracked with the local clock
//     from the moment each lock call was sent, so clock skew with the
//     server does not matter. When a lock is about to expire (less a margin
//     for the round trip: a tenth of LockDuration, at most 2 s) or a
//     prolong is refused (403, 404), the lease ends: the handler's ctx ends
//     (cause ErrLockLost), every call made under the lock (the get, the
//     result's update, the lock's delete) gives up, nothing more is recorded
//     for the request, and it counts in LocksLost. A lock delete of this
//     consumer's whose attempt went unanswered (a timeout, a dropped
//     connection) may still be carried out by the API later, and would
//     delete a lock taken since under the same clientKey: a request locked
//     again while such a delete is under way, or within the margin after
//     it, has its lock checked with a prolong before its handler runs.
//  4. Results: the handler gets the request as GetRequest returns it, and
//     changes it makes to UserData are saved. nil marks the request handled
//     (which also releases its lock). An error (or a panic, a Goexit, or
//     HandlerTimeout) adds 1 to RetryCount, appends the message to
//     ErrorMessages (the last 10 are kept, each cut to 1000 bytes), writes
//     the request back and deletes its lock, so it goes to the back of the
//     queue for another try; after MaxRetries, at once for an error
//     wrapping ErrNoRetry, or when the request has NoRetry set, it is
//     marked handled with its errors recorded and counted in Failed (a
//     failed request carries one more message than retries; when the 10
//     kept cannot show that, NoRetry is set as well, so that readers such
//     as apify-rq show still tell it from one that succeeded on a retry). A
//     handler that has not returned a grace after its ctx ended is
//     abandoned (Abandoned): at HandlerTimeout its run is recorded at once
//     as a failed attempt (ErrHandlerAbandoned, naming the request), its
//     slot goes to the next request, and what it returns later is ignored.
//  5. Finishing: when head/lock returns nothing, no client holds a lock
//     (queueHasLockedRequests is false) and nothing is held here, Consume
//     confirms with one more head/lock at once and returns nil: within a
//     round trip or two of the last handler. While other clients hold
//     locks it polls (100 ms to 2 s), since their requests may come back.
//  6. Shutdown, when ctx ends: it stops locking, releases at once the
//     prefetched requests no handler started, lets running handlers finish
//     for DrainTimeout (their results are recorded, their locks still
//     renewed), then cancels their ctx (cause ErrShuttingDown) and waits
//     for them at most half of ShutdownTimeout, and finally calls
//     UnlockAtShutdown with ShutdownTimeout, detached from ctx. It returns
//     the stats and ctx's error. So a SIGTERM'd process leaves no lock, and
//     Consume returns within DrainTimeout + 1.5 × ShutdownTimeout of ctx's
//     end even if a handler ignores its ctx.
//  7. Platform events (see Events): on migrating, which says how long
//     before the platform kills the process, Consume stops locking,
//     releases the prefetched requests at once, lets running handlers go on
//     until the time remaining less a safety margin (a tenth of it, 0.2 to
//     2 s) and less what the rest of the shutdown needs, never longer than
//     DrainTimeout, then cancels the rest (cause ErrShuttingDown, wrapping
//     ErrMigrating), and releases every lock of its clientKey, and of its
//     Actor run, with one unlock call, all before the time remaining runs
//     out; then it returns an error matching ErrMigrating (StoppedBy
//     "migrating"). Save your state then, and exit non-zero (or call
//     Client.RebootRun): a run that exits 0 while migrating ends SUCCEEDED
//     and is not restarted. A restart of the run (same run ID, so the same
//     default clientKey) takes up the crawl where it stopped. On aborting,
//     the same within Apify's 30 s before the force-stop, returning an
//     error matching ErrAborting. An event that comes during a shutdown
//     already under way (ctx ended) shortens it to the event's budget.
//  8. Errors: Consume returns an error only for invalid options (before any
//     I/O, wrapping ErrInvalidInput, ErrInvalidClientKey or
//     ErrInvalidQueueID), for a second Consume (ErrConsumeInProgress), when
//     the start-up unlock fails (see 1), for a platform event (see 7), when
//     the queue is unusable (a 401,
//     a 403 other than a refused lock, or a 400 or 404 on the queue's own
//     unlock and head/lock calls; a 404 on one request only skips that
//     request, and a 400 or 413 on a result records it on the request as
//     read), or when ctx ends. Later transient failures (429, 5xx,
//     network), even after the client's retries, are counted in
//     CallErrors, logged, and tried again after a short backoff (250 ms to
//     2 s, or the API's Retry-After up to 30 s). A request whose result
//     cannot be written stays locked and renewed while Consume retries,
//     then is released at exit or by its lock's expiry: never lost.
//
// What Consume cannot promise: exactly-once execution. A handler whose lock
// lapsed (every prolong failed until expiry, or the process froze) may see
// its request run again elsewhere, and so may an abandoned handler that
// goes on running; a process killed mid-handler leaves the request locked
// until its lock expires or the next start with the same key. Write handlers
// so that running twice does no harm.
//
// API economy: a handled request costs GetRequest, the update that marks it
// handled, and a share of a head/lock: about 2.05 queue calls with handlers
// much shorter than the lock, plus one unlock at start and one at exit. The
// share grows when handlers are slow and few, because a request may wait
// in prefetch only W: a third of the lock, or, for requests longer than a
// third of the lock less the margin, as long as keeps it from needing a
// renewal it would not need by itself (two thirds of the lock less the
// time per request and the margin: 13 s for 25 s requests under a 60 s
// lock). With requests that start one after another, a head/lock then takes
// about 1 + Concurrency × W ÷ (time per request), and a request costs
// 2 + 1 ÷ that: 2.1 once Concurrency ≥ 9 × (time per request) ÷ W (with
// handlers that start together, sooner). Handler times that spread add a
// little (a long one that waited may need a prolong): with 20 to 30 s
// handlers under a 60 s lock, measured 2.67 at Concurrency 2, 2.19 at 16,
// 2.06 at 64. A handler that runs longer than two thirds of the lock costs
// one prolong per further two thirds.
func (q *RequestQueueClient) Consume(ctx context.Context, h Handler, opts ConsumeOptions) (*ConsumeStats, error) {
	if q.err != nil {
		return &ConsumeStats{}, q.err
	}
	if ctx == nil {
		return &ConsumeStats{}, fmt.Errorf("apify: %w: Consume: nil Context", ErrInvalidInput)
	}
	if h == nil {
		return &ConsumeStats{}, fmt.Errorf("apify: %w: Consume: the Handler is nil", ErrInvalidInput)
	}
	o, err := opts.resolve()
	if err != nil {
		return &ConsumeStats{}, err
	}
	release, err := claimConsume(q, o.ClientKey)
	if err != nil {
		return &ConsumeStats{}, err
	}
	defer release()
	return newConsumer(q, h, o).run(ctx)
}

// consuming holds the (queue, clientKey) pairs, or (queue, Actor run), a
// Consume of this process is running on.
var consuming = struct {
	sync.Mutex
	m map[string]struct{}
}{m: map[string]struct{}{}}

// claimConsume registers a Consume on q with clientKey, or reports
// ErrConsumeInProgress; release ends the claim.
func claimConsume(q *RequestQueueClient, clientKey string) (release func(), err error) {
	queue := q.c.scheme + "://" + q.c.host + q.base.rawPath
	keys := []string{queue + "\x00key\x00" + clientKey}
	run := CurrentRunID()
	if run != "" {
		keys = append(keys, queue+"\x00run\x00"+run)
	}
	consuming.Lock()
	defer consuming.Unlock()
	for i, k := range keys {
		if _, busy := consuming.m[k]; busy {
			if i == 0 {
				return nil, fmt.Errorf("apify: %w: queue %q, clientKey %q (one consumer per queue and key: each releases the other's locks at start and at exit; run one Consume with more Concurrency, or give each its own ClientKey)", ErrConsumeInProgress, q.label(), clientKey)
			}
			return nil, fmt.Errorf("apify: %w: queue %q inside Actor run %q (an unlock by a run's token releases every lock of the run, whatever its clientKey: run one Consume per queue in a run)", ErrConsumeInProgress, q.label(), run)
		}
	}
	for _, k := range keys {
		consuming.m[k] = struct{}{}
	}
	return func() {
		consuming.Lock()
		defer consuming.Unlock()
		for _, k := range keys {
			delete(consuming.m, k)
		}
	}, nil
}

// resolve fills in defaults and checks every option.
func (o ConsumeOptions) resolve() (ConsumeOptions, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("apify: %w: ConsumeOptions."+format, append([]any{ErrInvalidInput}, args...)...))
	}
	if o.ClientKey == "" {
		o.ClientKey = DefaultClientKey()
	}
	if err := validateClientKey(o.ClientKey); err != nil {
		errs = append(errs, fmt.Errorf("ConsumeOptions.ClientKey: %w", err))
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = DefaultConsumeConcurrency
	case o.Concurrency < 0 || o.Concurrency > consumeMaxConcurrency:
		bad("Concurrency is %d; it must be 1 to %d (0 means %d)", o.Concurrency, consumeMaxConcurrency, DefaultConsumeConcurrency)
	}
	switch {
	case o.LockDuration == 0:
		o.LockDuration = DefaultConsumeLockDuration
	case o.LockDuration < consumeMinLockDuration || o.LockDuration > MaxLockDuration:
		bad("LockDuration is %v; it must be %v to %v (0 means %v)", o.LockDuration, consumeMinLockDuration, MaxLockDuration, DefaultConsumeLockDuration)
	}
	switch {
	case o.HandlerTimeout == 0:
		o.HandlerTimeout = DefaultConsumeHandlerTimeout
	case o.HandlerTimeout < 0:
		bad("HandlerTimeout is %v; it must be positive (0 means %v)", o.HandlerTimeout, DefaultConsumeHandlerTimeout)
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultConsumeMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	switch {
	case o.DrainTimeout == 0:
		o.DrainTimeout = DefaultConsumeDrainTimeout
	case o.DrainTimeout < 0:
		o.DrainTimeout = 0
	}
	switch {
	case o.ShutdownTimeout == 0:
		o.ShutdownTimeout = DefaultShutdownTimeout
	case o.ShutdownTimeout < 0:
		bad("ShutdownTimeout is %v; it must be positive (0 means %v)", o.ShutdownTimeout, DefaultShutdownTimeout)
	}
	switch {
	case o.Prefetch == 0:
		o.Prefetch = DefaultConsumePrefetch
	case o.Prefetch < 0:
		o.Prefetch = 0
	case o.Prefetch > consumeMaxConcurrency:
		bad("Prefetch is %d; it must be at most %d (0 means %d, negative none)", o.Prefetch, consumeMaxConcurrency, DefaultConsumePrefetch)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, errors.Join(errs...)
}
