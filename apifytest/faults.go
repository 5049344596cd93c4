package apifytest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Operation names an API operation by the operationId of Apify's OpenAPI
// document; the constants are named after what the operation does.
type Operation string

// The operations the emulator serves.
const (
	OpGetOrCreateQueue    Operation = "requestQueues_post"
	OpListQueues          Operation = "requestQueues_get"
	OpGetQueue            Operation = "requestQueue_get"
	OpUpdateQueue         Operation = "requestQueue_put"
	OpDeleteQueue         Operation = "requestQueue_delete"
	OpListRequests        Operation = "requestQueue_requests_get"
	OpAddRequest          Operation = "requestQueue_requests_post"
	OpBatchAddRequests    Operation = "requestQueue_requests_batch_post"
	OpBatchDeleteRequests Operation = "requestQueue_requests_batch_delete"
	OpUnlockRequests      Operation = "requestQueue_requests_unlock_post"
	OpGetRequest          Operation = "requestQueue_request_get"
	OpUpdateRequest       Operation = "requestQueue_request_put"
	OpDeleteRequest       Operation = "requestQueue_request_delete"
	OpProlongRequestLock  Operation = "requestQueue_request_lock_put"
	OpDeleteRequestLock   Operation = "requestQueue_request_lock_delete"
	OpGetHead             Operation = "requestQueue_head_get"
	OpListAndLockHead     Operation = "requestQueue_head_lock_post"
)

// Operations lists every Operation the emulator serves.
func Operations() []Operation {
	return []Operation{
		OpGetOrCreateQueue, OpListQueues, OpGetQueue, OpUpdateQueue, OpDeleteQueue,
		OpListRequests, OpAddRequest, OpBatchAddRequests, OpBatchDeleteRequests,
		OpUnlockRequests, OpGetRequest, OpUpdateRequest, OpDeleteRequest,
		OpProlongRequestLock, OpDeleteRequestLock, OpGetHead, OpListAndLockHead,
	}
}

func knownOperation(op Operation) bool {
	for _, o := range Operations() {
		if o == op {
			return true
		}
	}
	return false
}

// Fault is how an injected failure answers a call, before the call is
// authenticated or touches any state.
type Fault struct {
	// Status is the response's status, 400 to 599.
	Status int
	// Type and Message fill the error envelope. An empty Type becomes
	// "rate-limit-exceeded" for 429 and "internal-server-error" otherwise;
	// an empty Message becomes a sentence naming the injected fault.
	Type, Message string
	// RetryAfter is the raw Retry-After header value ("" sends none).
	RetryAfter string
	// DropConnection closes the connection without any response (Status
	// and the other fields are ignored). The handler hijacks the
	// connection when it can and otherwise panics with http.ErrAbortHandler,
	// which net/http servers turn into a dropped connection or stream.
	DropConnection bool
}

type pendingFault struct {
	n int
	f Fault
}

// faults counts calls and holds the injected faults, per operation.
type faults struct {
	mu      sync.Mutex
	calls   map[Operation]int
	limited map[Operation]int // calls refused by the rate-limit model
	pending map[Operation][]pendingFault
}

// next records a call to op and returns the fault it must fail with, if any.
func (fs *faults) next(op Operation) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls[op]++
	q := fs.pending[op]
	if len(q) == 0 {
		return Fault{}, false
	}
	f := q[0].f
	if q[0].n--; q[0].n == 0 {
		fs.pending[op] = q[1:]
	}
	return f, true
}

// countLimited records a call to op refused by the rate-limit model.
func (fs *faults) countLimited(op Operation) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.limited[op]++
}

// FailNext makes the next n calls to op fail as f says, then lets calls
// through again. Faults queue up: after the n calls of one FailNext, the
// calls of the next FailNext on the same op fail. n = 0 does nothing.
//
// It panics on an unknown op, a negative n, or a Fault that neither drops
// the connection nor has a Status from 400 to 599.
func (s *Server) FailNext(op Operation, n int, f Fault) {
	switch {
	case !knownOperation(op):
		panic(fmt.Sprintf("apifytest: FailNext: unknown operation %q", op))
	case n < 0:
		panic(fmt.Sprintf("apifytest: FailNext: n is %d; it must not be negative", n))
	case n == 0:
		return
	case !f.DropConnection && (f.Status < 400 || f.Status > 599):
		panic(fmt.Sprintf("apifytest: FailNext: Fault.Status %d is not an error status (400 to 599); set DropConnection to drop the connection", f.Status))
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.pending[op] = append(s.faults.pending[op], pendingFault{n: n, f: f})
}

// Calls returns how many calls op has received, failed ones included.
func (s *Server) Calls(op Operation) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.calls[op]
}

// serveFault answers a call with an injected fault.
func serveFault(w http.ResponseWriter, op Operation, f Fault) {
	if f.DropConnection {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	e := &apiError{Status: f.Status, Type: f.Type, Message: f.Message}
	if e.Type == "" {
		e.Type = "internal-server-error"
		if f.Status == http.StatusTooManyRequests {
			e.Type = "rate-limit-exceeded"
		}
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("Injected fault: %s answers %d %s (apifytest FailNext)",
			op, f.Status, strings.ToLower(http.StatusText(f.Status)))
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	writeError(w, e)
}
