// Package apifytest is an in-process emulator of Apify's request-queue API
// that models lock ownership: every lock records who holds it (a clientKey,
// an Actor run, or both) and until when, so a crawler's lock handling can be
// tested offline, against real lock semantics, in one line:
//
//	srv := apifytest.Start(t)               // or NewServer(); defer srv.Close()
//	q := srv.CreateQueue("my-queue")
//	srv.AddRequests(q, apifytest.Request{URL: "https://example.com"})
//	client := srv.Client()                  // an *apify.Client pointed at srv
//
// The server speaks HTTP on a loopback port (Server.URL), so any client in any
// language can use it, including Apify's official JavaScript and Python
// clients (set APIFY_API_BASE_URL to the URL); the apify-rq command serves it
// standalone. [Server.Handler] serves it in memory, for example inside a
// testing/synctest bubble together with a server made by [NewUnstartedServer]
// (whose Client calls the handler without sockets).
//
// # The API served
//
// The 15 operations on 8 paths of Apify's OpenAPI document for request
// queues, plus get-or-create and the list of queues from Apify's API
// reference (POST and GET /v2/request-queues, operationIds
// requestQueues_post and requestQueues_get), with the spec's paths,
// parameters, status codes and {"data": ...} / {"error": {"type", "message"}}
// envelopes:
//
//	POST   /v2/request-queues?name=N                         get or create (201 created, 200 existing)
//	GET    /v2/request-queues                                the caller's queues (offset, limit, desc, unnamed, ownership)
//	GET    /v2/request-queues/{queueId}                      also username~name and ~name
//	PUT    /v2/request-queues/{queueId}                      rename, generalAccess
//	DELETE /v2/request-queues/{queueId}
//	GET    /v2/request-queues/{queueId}/requests             limit, cursor, exclusiveStartId, filter=locked,pending
//	POST   /v2/request-queues/{queueId}/requests             add (forefront)
//	POST   /v2/request-queues/{queueId}/requests/batch       add up to 25
//	DELETE /v2/request-queues/{queueId}/requests/batch       delete up to 25, by id or uniqueKey
//	POST   /v2/request-queues/{queueId}/requests/unlock      release the caller's locks
//	GET    /v2/request-queues/{queueId}/requests/{id}
//	PUT    /v2/request-queues/{queueId}/requests/{id}        update; handledAt marks it handled
//	DELETE /v2/request-queues/{queueId}/requests/{id}
//	PUT    /v2/request-queues/{queueId}/requests/{id}/lock   prolong (lockSecs, forefront)
//	DELETE /v2/request-queues/{queueId}/requests/{id}/lock   delete the lock (forefront)
//	GET    /v2/request-queues/{queueId}/head                 pending requests, unlocked only
//	POST   /v2/request-queues/{queueId}/head/lock            lock up to 25 (lockSecs, limit, clientKey)
//
// Every path below /v2/request-queues/{queueId} is also served below
// /v2/actor-runs/{runId}/request-queue, for the default queue of that Actor
// run, as Apify serves a run's default storages (see Runs below).
//
// One path is the emulator's own, not Apify's: GET
// /v2/x-apifytest/request-queues/{queueId}/locks ([LocksPath]) lists who
// holds each lock of a queue and until when, which Apify's API never tells
// (its list of requests has no lock holder). It lives apart from the API's
// paths so that no response of the API's operations carries a field Apify's
// does not; apify-rq list shows lock holders with it, and on Apify's API,
// where it answers 404, says the holders are unknown.
//
// and, outside the request-queue API:
//
//	GET    /v2/actor-runs/{runId}                            the run object (its defaultRequestQueueId is Server.RunQueue's)
//	POST   /v2/actor-runs/{runId}/reboot                     recorded (Server.Reboots); 200 with the run
//
// Requests get the IDs Apify gives them (see [RequestID]); adding a
// uniqueKey that is already there returns wasAlreadyPresent. Locked requests
// are hidden from head and from other callers' head/lock; an expired lock
// makes its request pending again; marking a request handled releases its
// lock. Expired locks are processed lazily at the start of each call on the
// queue, so with a [ManualClock] nothing happens between calls.
//
// # Callers: tokens, users and runs
//
// Without tokens every call is made by the default user [DefaultUser]. With
// [WithToken], [WithUserToken] or [WithRunToken], every call needs one of the
// configured tokens ("Authorization: Bearer T" or "?token=T"): none gives 401
// token-not-provided, an unknown one 401 invalid-token. A [WithRunToken]
// token makes its caller count as inside that Actor run: the locks it takes
// belong to the run too.
//
// # Runs
//
// An Actor run's default queue is an unnamed queue of [DefaultUser], made on
// first use: by [Server.RunQueue], which returns its ID, or by the first
// call under /v2/actor-runs/{runId}/request-queue. The emulator knows the
// runs of its [WithRunToken] tokens and those named to [Server.RunQueue]; a
// call under the path of any other run gets 404 record-not-found, as Apify
// answers for a run that does not exist (after authentication: a missing
// token is still 401). The queue is an ordinary queue otherwise: its ID
// reaches it too, deleting it leaves the run without one (404), and calls
// under the run's path are the same operations (counted by [Server.Calls],
// failed by [Server.FailNext], rate limited with the queue's budget).
//
// # Seeding
//
// [Server.AddRequests] takes every field a request stores ([Request]:
// userData, headers, payload, noRetry, retryCount, errorMessages, and
// handledAt to seed a handled one), checked as the API checks an added
// request; only the URL, uniqueKey and method are taken as they are, so
// that a test can seed requests the API would refuse.
//
// # Testing retries, slow APIs and time
//
// [Server.FailNext] makes the next n calls of an [Operation] fail as a
// [Fault] says; [Server.InjectFault] does so for every call until removed.
// A Fault can
//
//   - answer with a chosen status, error type and Retry-After (Status);
//   - drop the connection without serving the call (DropConnection);
//   - hold the call for a while before anything else happens to it
//     (Delay): alone, it makes a slow API, whose calls are served after the
//     delay with the clock read then, so locks expire counting from the
//     end of the delay;
//   - never answer (Hang): the call is held until the caller gives up or
//     the server is closed, and nothing is done;
//   - serve the call at once, making its changes with the clock read as it
//     arrives, and hold the answer back for a while (ResponseDelay): a slow
//     answer, whose caller may give up while the work is already done (its
//     answer is then lost);
//   - serve the call, making its changes, and then drop the connection
//     before the answer (DropResponse): a lost answer, which the SDK
//     retries when the call is idempotent, and whose retry finds the new
//     state (an add already present, a lock already gone).
//
// A Fault can be aimed at the calls on one request (RequestID) and at one
// call in n (Every), so a chaos test can, say, lose every 7th head/lock
// answer or hang one request's prolongs, deterministically. A call gets
// one fault at most: FailNext's first, then InjectFault's in the order
// injected. A Delay, a Hang or a ResponseDelay ends when the caller's
// request context ends (a client timeout, a closed connection) or the
// server is closed; it is waited in real time, which is fake time inside a
// testing/synctest bubble (with [NewUnstartedServer] and its in-memory
// Client). [Server.Calls] counts the calls an operation received, faulted
// and held ones included, and [Server.Faulted] those given a fault.
// [WithClock] with a [ManualClock] moves time only when the test says so.
//
// # Platform events
//
// [WithPlatformEvents] (apify-rq serve --events) serves the WebSocket an
// Actor run reads its platform events from (migrating, aborting,
// persistState, ...) at EventsPathPrefix + runID: [Server.EventsURL] is
// the URL of [DefaultRunID], [Server.RunEventsURL] that of another run.
// [Server.SendEvent] sends every connected client an event;
// [Server.DropEventConnections] and [Server.CloseEventConnections] end the
// connections, to test reconnecting and a close for good. As on the
// platform, a run has one connection: a second one, and one for an unknown
// run, is closed with 1008.
//
// # Rate limits
//
// Apify limits the calls on each request queue per second, by class of
// operation. [WithRateLimits] (apify-rq serve --rate-limits) turns on a
// model of these limits, off by default; [DefaultRateLimits] holds the
// documented ones:
//
//	request CRUD  400/s  add, get, update (mark handled), delete one request;
//	                     prolong (PUT .../lock) and delete (DELETE .../lock) its lock
//	batch          40/s  POST head/lock, batch add, batch delete
//	other          60/s  everything else: unlock, GET head, list, get, update
//	                     and delete a queue, get-or-create
//
// Each queue has one budget per class: a token bucket that holds up to one
// second's worth of calls (the limit) and refills continuously at the limit
// per second (a GCRA), read from the server's [Clock]. So a queue that was
// quiet takes limit calls in one instant, then one every 1/limit seconds;
// with a [ManualClock] nothing refills until the clock moves, and inside a
// testing/synctest bubble refilling follows fake time. A call over its
// budget gets 429 rate-limit-exceeded with "Retry-After: 1" (the wait
// rounded up to whole seconds; the real wait is at most 1/limit), before
// it reads its body or touches any state. The budget is taken after
// authentication: a 401 costs nothing, and a call naming a queue that does
// not exist is never limited (it gets 404). "~name" and the queue's ID
// share a budget; get-or-create counts against the caller's user.
// [Server.RateLimited] counts the 429s per operation ([Server.Calls]
// counts them too). Every response carries X-RateLimit-Limit, the limit of
// its operation's class (60 outside any operation), with the model on or
// off.
//
// # Listening
//
// [Server.Start] (and [NewServer], [Start]) serve on a loopback port with
// [Server.HTTPServer], which bounds what a client can cost ([HTTPLimits],
// [WithHTTPLimits]): a call must arrive within 30 s (its headers within
// 10 s), so a client sending a byte a second is cut off; a keep-alive
// connection idle for 60 s is closed; at most 512 connections are open at
// once (one more is closed as soon as it is accepted); headers are at most
// 64 KiB. [New] returns an error where [NewUnstartedServer] panics.
//
// # Reading the state
//
// [Server.Requests], [Server.Pending], [Server.Locked], [Server.LockedBy],
// [Server.LockedByRun], [Server.Handled] and [Server.Request] return
// snapshots ([RequestState], [LockState]) that the test may keep and modify.
//
// # Cost
//
// Each queue keeps its pending requests in a linked list that holds only
// pending, unlocked, unhandled requests, its live locks in a min-heap by
// expiry, and an index from each clientKey and each run to its locks. So
// head/lock costs O(limit + expired locks), bulk unlock O(k log k) for the
// caller's k locks, and neither depends on the queue's size. One mutex per
// server guards the state; the server is safe for concurrent use.
//
// # Choices where Apify's docs are silent
//
// Where the spec and Apify's documentation do not say what happens, the
// emulator does the following (each choice is tested):
//
//   - Lock holder. A lock is held by the clientKey it was taken with and, when
//     the token belongs to an Actor run, by that run. A caller holds it when
//     it sends the same clientKey or calls from inside the same run.
//   - Touching a lock one does not hold. Prolonging (PUT .../lock) or deleting
//     (DELETE .../lock) a lock one does not hold gives 403
//     request-handled-or-locked, whose message names the case: locked by
//     another client, not locked, "your lock expired at T", or already
//     handled. A request that does not exist gives 404 record-not-found.
//   - Handling or deleting work one does not hold. Marking a request handled
//     (PUT .../requests/{id} with handledAt) or deleting it (DELETE
//     .../requests/{id}) while someone else holds a live lock on it gives
//     403 request-handled-or-locked; a batch delete reports such requests
//     in unprocessedRequests. Updates that do not set handledAt are allowed
//     to anyone. An unlocked request may be handled by anyone.
//   - No clientKey. A call without a clientKey counts as a new client (as the
//     spec says for hadMultipleClients; a read without one is no client, see
//     hadMultipleClients below). So outside a run, unlock without a
//     clientKey returns 200 with unlockedCount 0; inside a run it releases
//     the run's locks. A lock taken without a clientKey outside a run has no
//     holder that a later call can prove to be: nobody can prolong, delete
//     or handle it until it expires (the 403 says so and says to pass a
//     clientKey). An empty clientKey= counts as none.
//   - Where requests go when a lock ends. A lock from head/lock, when it
//     expires, returns its request to the front of the queue; a bulk unlock
//     returns the caller's requests to the front too. Either way requests
//     keep the relative order in which they were locked (work taken first
//     resumes first). Prolonging a lock sets where its request goes when it
//     expires by its forefront parameter, default false (the back), as the
//     spec describes that parameter. DELETE .../lock uses its forefront
//     parameter, default false (the back), as the spec says.
//   - Updating a request. A pending, unlocked request that is updated moves
//     to the back of the queue, or to the front with forefront=true (as a
//     re-added request would); a locked one keeps its lock and its place.
//     Clearing handledAt puts a handled request back in the queue the same
//     way. A body "id" that differs from the URL's gives 400
//     id-does-not-match; a different uniqueKey gives 400 invalid-input.
//   - Limits. lockSecs is required on head/lock and prolong and must be a
//     whole number of seconds from 1 to [MaxLockSecs] (one day); "60.0" is
//     accepted. head/lock's limit is 1 to 25 (default 25); GET head's limit
//     defaults to 100 and is capped at 1000; the list's limit defaults to
//     100 and is capped at 10000; a limit below 1 is refused. Refusals are
//     400 invalid-input naming the parameter and the value.
//   - clientKey. More than [MaxClientKeyLength] characters (counted as
//     Unicode code points), invalid UTF-8, or control characters give 400
//     invalid-client-key.
//   - Bodies. A JSON body needs Content-Type application/json (else 400
//     invalid-content-type-header). Its Content-Encoding may be br, gzip
//     (or x-gzip), deflate (zlib-wrapped, as HTTP defines it) or identity,
//     or a comma-separated list of them (in one header or several) in the
//     order they were applied, undone last first; at most 3 codings other
//     than identity. Any other coding, such as zstd, or a longer list,
//     gives 415 unsupported-content-encoding naming it; a body its coding
//     cannot decode gives 400 invalid-input. A body may have at most
//     9437184 bytes as sent and again once decoded (else 413
//     request-too-large, saying which): decoding streams and stops just past
//     the limit, so a compression bomb costs little time and memory.
//     Malformed JSON, a wrong JSON type or a missing uniqueKey or url gives
//     400 invalid-input naming the field (and, in a batch, the index). uniqueKey is required, as the
//     spec's RequestWithoutId says; an added request must not carry an id.
//     Fields outside the spec's RequestBase are dropped, null fields are
//     omitted, and handledAt is omitted while a request is not handled.
//   - Sizes. A request's uniqueKey and url may each have at most
//     [MaxKeyBytes] (16 KiB) bytes (else 400 invalid-input naming the
//     field). GET head, head/lock and list stop before the request that would
//     take their response past about 8 MiB (returning at least one), so a
//     few huge requests cannot make one call cost a gigabyte: head/lock
//     locks only what it returns, and the list's nextCursor continues where
//     it stopped.
//   - Batches take 0 to 25 requests. A uniqueKey repeated within a batch add
//     is reported wasAlreadyPresent; deleting a request that does not exist
//     counts as processed. A batch add with forefront=true puts its new
//     requests at the front of the queue in the batch's order (its first
//     request first), as a batch at the back keeps it.
//   - Listing (GET .../requests) returns requests in the order they were
//     added; its cursor is opaque. filter=locked is requests with a live
//     lock, filter=pending those neither locked nor handled.
//   - hadMultipleClients becomes true once the queue has seen two clients.
//     Only the operations that take a clientKey parameter count. Clients
//     are told apart by clientKey, and a call that changes the queue (add,
//     batch add or delete, update, delete, head/lock, prolong, delete a
//     lock, unlock) without one is a new client every time, as the spec
//     says of the clientKey parameter. So a queue seeded without a clientKey
//     and then consumed with one has had two clients, as it has on Apify by
//     that rule: to keep a queue single-client, seed it (and add the links
//     a handler finds) with the consumer's clientKey. A read without a
//     clientKey (GET head, the list of requests) is no client at all: it
//     cannot make any client's picture of the queue stale, which is what
//     SDKs read the flag for, and tools that inspect a queue (apify-rq show
//     and list, the console) read without one; counting them would make a
//     second look report what the first look did. A read with a clientKey
//     counts that key. Reading the queue object never counts.
//     queueHasLockedRequests is computed after head/lock took its locks.
//   - Users. "~name" is the caller's queue, "username~name" the named user's
//     (404 record-not-found when there is no such user or queue; 403
//     insufficient-permissions for another user's queue unless its
//     generalAccess is ANYONE_WITH_NAME_CAN_READ). Another user may read a
//     queue by its ID (get it, list, GET head, get a request) unless its
//     generalAccess is RESTRICTED, but only the owner may change it: every
//     other operation (head/lock, unlock, add, update, delete, locks,
//     rename, delete the queue) by another user gives 403
//     insufficient-permissions, the spec's Forbidden response, and changes
//     nothing. Queue IDs are 17 random letters and digits. Queue names are
//     letters, digits and inner hyphens, at most 63 characters; renaming to
//     a name in use gives 400 name-not-unique. Creating a queue returns 201
//     with a Location header, and 200 when the named queue existed.
//   - Routing. An unknown path gives 404 page-not-found; a known path with
//     another method gives 405 method-not-allowed listing the methods;
//     OPTIONS gives 204 with Allow. The spec's method override (?method=POST)
//     is honoured.
//   - Listing queues (GET /v2/request-queues) returns the caller's own
//     queues in the order they were created (newest first with desc=1),
//     named ones only unless unnamed=1; nothing is shared between users, so
//     ownership=sharedWithMe lists none. limit defaults to and is capped at
//     1000.
//   - Query strings. A query string that does not parse (a stray '%', a
//     ';' separator) gives 400 invalid-input, as does any parameter given
//     more than once. Whole-number parameters (limit, lockSecs) are decimal
//     digits with an optional sign and zero fraction ("25", "+25", "25.0");
//     hex, exponents and the like ("0x1p1", "6e1") give 400 invalid-input.
//   - Browsers. A state-changing call (any method but GET, HEAD and
//     OPTIONS, after ?method=) that carries Sec-Fetch-Site cross-site or
//     same-site, an Origin other than the server's own (or "null"), or, when
//     ?method= turned a GET into it, a Referer of another site (or, from a
//     browser's User-Agent, no Referer and no Sec-Fetch-Site), gives 403
//     insufficient-permissions: a web page open in the developer's browser
//     cannot change even a tokenless emulator's state. Programs send none of
//     these headers. Reads are allowed (the emulator sends no CORS headers,
//     so another site cannot read the answers). Against DNS rebinding (a
//     page whose host name is re-pointed at the emulator, and so looks
//     same-origin), any call, reads included, under a Host that is a DNS
//     name (not an IP address, localhost or *.localhost) that carries an
//     Origin, Sec-Fetch-Site same-origin or same-site, or, after ?method=,
//     a Referer, gives 403 insufficient-permissions too: from a browser,
//     use the emulator's IP address or localhost.
//   - Time is UTC with millisecond precision; a lock has expired from its
//     lockExpiresAt on. Each call reads the clock once, when it arrives
//     (after an injected Delay, before a ResponseDelay), and all of it
//     (expiring locks, the new expiry, timestamps, the rate limit) happens
//     at that instant. Injected faults that fail a call answer before
//     authentication and before any state changes. Rate limits are
//     modelled only with [WithRateLimits] (see Rate limits); FailNext
//     injects any other 429.
package apifytest
