package apifytest

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimits are the per-queue rate limits of Apify's API, in calls per
// second, one for each class of operation (see the package documentation
// for which operation is in which class). A zero field means the class's
// documented default, from [DefaultRateLimits].
type RateLimits struct {
	// RequestCRUD is the limit of the calls on one request: add, get,
	// update and delete a request, and prolong and delete its lock.
	// Apify documents 400.
	RequestCRUD int
	// Batch is the limit of head/lock and of batch add and batch delete.
	// Apify documents 40.
	Batch int
	// Other is the limit of every other operation: unlock, GET head, list,
	// and get, update, delete or get-or-create a queue. Apify documents 60,
	// its default per-resource limit.
	Other int
}

// DefaultRateLimits are the limits Apify documents for a request queue.
var DefaultRateLimits = RateLimits{RequestCRUD: 400, Batch: 40, Other: 60}

// withDefaults fills the zero fields from DefaultRateLimits.
func (l RateLimits) withDefaults() RateLimits {
	if l.RequestCRUD == 0 {
		l.RequestCRUD = DefaultRateLimits.RequestCRUD
	}
	if l.Batch == 0 {
		l.Batch = DefaultRateLimits.Batch
	}
	if l.Other == 0 {
		l.Other = DefaultRateLimits.Other
	}
	return l
}

// rateClass is the rate-limit class of an operation.
type rateClass int

const (
	classOther rateClass = iota
	classRequestCRUD
	classBatch
	numClasses
)

func (c rateClass) String() string {
	switch c {
	case classRequestCRUD:
		return "request CRUD"
	case classBatch:
		return "batch and head/lock"
	}
	return "default"
}

// classOf says which limit an operation counts against.
func classOf(op Operation) rateClass {
	switch op {
	case OpAddRequest, OpGetRequest, OpUpdateRequest, OpDeleteRequest, OpProlongRequestLock, OpDeleteRequestLock:
		return classRequestCRUD
	case OpListAndLockHead, OpBatchAddRequests, OpBatchDeleteRequests:
		return classBatch
	}
	return classOther
}

func (l RateLimits) of(c rateClass) int {
	switch c {
	case classRequestCRUD:
		return l.RequestCRUD
	case classBatch:
		return l.Batch
	}
	return l.Other
}

// WithRateLimits turns on the rate-limit model: each queue takes at most
// limits' calls per second in each class, and a call over the limit gets
// 429 rate-limit-exceeded with a Retry-After header, before it touches any
// state. Zero fields take their value from [DefaultRateLimits]; use
// WithRateLimits(DefaultRateLimits) (or RateLimits{}) for Apify's limits.
// Time comes from the server's [Clock], so with a [ManualClock] the model
// is deterministic. Without this option no call is refused for its rate,
// but every response still carries X-RateLimit-Limit.
func WithRateLimits(limits RateLimits) Option {
	return func(c *config) {
		if limits.RequestCRUD < 0 || limits.Batch < 0 || limits.Other < 0 {
			c.errs = append(c.errs, fmt.Sprintf("WithRateLimits: a limit is negative in %+v; use 0 for the default", limits))
			return
		}
		l := limits.withDefaults()
		c.rateLimits = &l
	}
}

// rateLimiter is a GCRA (a token bucket of capacity limit that refills at
// limit tokens per second) for each queue and class: a queue that was
// quiet may take limit calls at once, then one every 1/limit seconds.
type rateLimiter struct {
	limits RateLimits
	on     bool

	mu sync.Mutex
	// tat is each bucket's theoretical arrival time: the bucket is full
	// when tat <= now, and a call is refused when tat - now would exceed
	// one second minus one interval.
	tat map[rateKey]time.Time
}

type rateKey struct {
	queueID string
	class   rateClass
}

// allow records a call of the class on the queue at now. When the call is
// over the limit it returns false and how long until the next call fits.
func (rl *rateLimiter) allow(queueID string, class rateClass, now time.Time) (bool, time.Duration) {
	limit := rl.limits.of(class)
	interval := time.Second / time.Duration(limit)
	tolerance := time.Second - interval
	k := rateKey{queueID, class}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	tat := rl.tat[k]
	if tat.Before(now) {
		tat = now
	}
	if wait := tat.Sub(now) - tolerance; wait > 0 {
		return false, wait
	}
	rl.tat[k] = tat.Add(interval)
	return true, 0
}

// forget drops the buckets of a deleted queue.
func (rl *rateLimiter) forget(queueID string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for c := range numClasses {
		delete(rl.tat, rateKey{queueID, c})
	}
}

// errRateLimited is the 429 of a call over its limit.
func errRateLimited(class rateClass, limit int) *apiError {
	return newAPIError(http.StatusTooManyRequests, "rate-limit-exceeded",
		"You have exceeded the rate limit of %d requests per second (%s operations on one request queue)", limit, class)
}

// retryAfter renders a wait as a Retry-After value: whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.FormatInt(max(1, int64((wait+time.Second-1)/time.Second)), 10)
}

// RateLimits returns the limits in force: those of [WithRateLimits], or,
// when the model is off, the documented ones that X-RateLimit-Limit reports.
func (s *Server) RateLimits() RateLimits { return s.limiter.limits }

// RateLimited returns how many calls of op were refused with 429 by the
// rate-limit model ([WithRateLimits]); [Server.Calls] counts them too.
func (s *Server) RateLimited(op Operation) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.limited[op]
}
