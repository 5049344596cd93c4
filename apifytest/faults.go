package apifytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// onOneRequest lists the operations whose path names one request
// ({requestId}), which a Fault's RequestID can target.
var onOneRequest = []Operation{OpGetRequest, OpUpdateRequest, OpDeleteRequest, OpProlongRequestLock, OpDeleteRequestLock}

// Fault is what an injected fault does to a call ([Server.FailNext],
// [Server.InjectFault]): fail it with an error status, drop its connection,
// hold it for a while (Delay) or for ever (Hang), serve it and hold its
// answer back (ResponseDelay), or serve it and lose the answer
// (DropResponse). A Fault must do at least one of these. A failing Fault
// answers before the call is authenticated or touches any state; a Delay
// alone, ResponseDelay and DropResponse let the call be served as usual.
//
// Delay combines with Status, DropConnection, ResponseDelay or DropResponse
// (the delay comes first); ResponseDelay combines with DropResponse (the
// answer is held back, then lost); Hang combines with nothing but the
// targeting fields (RequestID, Every); ResponseDelay and DropResponse do not
// combine with Status or DropConnection, which do not serve the call.
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
	// and the other fields are ignored): the call is not served. The
	// handler hijacks the connection when it can and otherwise panics with
	// http.ErrAbortHandler, which net/http servers turn into a dropped
	// connection or stream, and an unstarted server's Client into
	// io.ErrUnexpectedEOF.
	DropConnection bool

	// Delay holds the call this long before anything else happens to it.
	// Then the call fails as the other fields say or, when they say
	// nothing, is served as usual, reading the server's clock after the
	// delay: a lock it takes or prolongs expires lockSecs after the delay
	// ended, as it would for a call that arrived late. The delay is
	// waited in real time (fake time inside a testing/synctest bubble),
	// whatever the server's [Clock]. It ends early, and the call is not
	// served at all, when the caller gives up (the request's context
	// ends: the client's timeout, a closed connection) or the server is
	// closed (which drops the connection).
	Delay time.Duration
	// ServeAfterCallerGone, with a Delay alone, serves the call when the
	// delay ends even if its caller gave up meanwhile: a call a server had
	// accepted and carries out although nobody waits for the answer any
	// more, as a real API may. The caller saw a timeout, yet the change
	// happens later (a lock delete that lands after the client moved on,
	// say). It still ends, unserved, when the server is closed.
	ServeAfterCallerGone bool
	// Hang never answers the call and does nothing with it: it is held
	// until the caller gives up (the request's context ends) or the server
	// is closed, which drops the connection.
	Hang bool
	// ResponseDelay serves the call at once, making its changes and
	// reading the server's clock as it arrives (a lock it takes expires
	// lockSecs after the call arrived), and holds the answer back this
	// long before writing it: a slow answer, as from a distant or loaded
	// API, where the work is done long before the caller hears of it. The
	// wait is in real time (fake time inside a testing/synctest bubble),
	// whatever the server's [Clock]. It ends early, and the answer is
	// lost (the work stays done), when the caller gives up (the request's
	// context ends) or the server is closed (which drops the connection).
	// With DropResponse, the connection is dropped at the end of the wait
	// instead of the answer being written: an answer lost after a while,
	// as when a proxy times out on a call the API did serve.
	ResponseDelay time.Duration
	// DropResponse serves the call fully, making its changes, then drops
	// the connection instead of sending the answer: the work is done, but
	// the caller sees a connection closed before any response (an
	// unstarted server's Client, io.ErrUnexpectedEOF), as when a proxy or
	// the network loses an answer. The SDK retries such a call when it is
	// idempotent, and the retry finds the new state. Over HTTP, net/http
	// itself re-sends a GET whose reused keep-alive connection closes
	// before any answer, so the SDK may never see a lost GET answer.
	DropResponse bool

	// RequestID, when set, limits the fault to calls on the request with
	// this ID (the {requestId} of the path): calls on other requests pass
	// by, neither faulted nor counted. Only the operations on one request
	// take it: OpGetRequest, OpUpdateRequest, OpDeleteRequest,
	// OpProlongRequestLock and OpDeleteRequestLock.
	RequestID string
	// Every gives the fault to one call in Every of those that reach it
	// (the Every-th, the 2·Every-th, and so on, counted from when it was
	// injected); the others pass by. 0 and 1 mean every call.
	Every int
}

// does reports whether f does anything to a call.
func (f Fault) does() bool {
	return f.Status != 0 || f.DropConnection || f.Delay > 0 || f.Hang || f.DropResponse || f.ResponseDelay > 0
}

// check panics, naming fn, when op is unknown or f is not a fault one can
// inject on op.
func (f Fault) check(fn string, op Operation) {
	fail := func(format string, args ...any) {
		panic(fmt.Sprintf("apifytest: %s: ", fn) + fmt.Sprintf(format, args...))
	}
	switch {
	case !knownOperation(op):
		fail("unknown operation %q", op)
	case f.Delay < 0:
		fail("Fault.Delay is %v; it must not be negative", f.Delay)
	case f.ResponseDelay < 0:
		fail("Fault.ResponseDelay is %v; it must not be negative", f.ResponseDelay)
	case f.Every < 0:
		fail("Fault.Every is %d; it must not be negative (0 and 1 mean every call)", f.Every)
	case f.RequestID != "" && !slices.Contains(onOneRequest, op):
		fail("Fault.RequestID is set, but %s does not name a request; RequestID targets calls of %v", op, onOneRequest)
	case !f.does():
		fail("the Fault does nothing: give it a Status (400 to 599), DropConnection, DropResponse, Hang, a Delay or a ResponseDelay")
	case f.Hang && (f.Status != 0 || f.DropConnection || f.DropResponse || f.Delay != 0 || f.ResponseDelay != 0):
		fail("Fault.Hang never answers, so Status, DropConnection, DropResponse, Delay and ResponseDelay cannot go with it")
	case f.DropResponse && (f.Status != 0 || f.DropConnection):
		fail("Fault.DropResponse serves the call and loses its answer, so Status and DropConnection cannot go with it")
	case f.ResponseDelay != 0 && (f.Status != 0 || f.DropConnection):
		fail("Fault.ResponseDelay holds back the answer of a call it serves, so Status and DropConnection (which do not serve the call) cannot go with it; a Delay with them makes a slow failure")
	case f.ServeAfterCallerGone && (f.Delay == 0 || f.Status != 0 || f.DropConnection || f.DropResponse || f.ResponseDelay != 0):
		fail("Fault.ServeAfterCallerGone serves a call after its Delay whatever its caller did, so it needs a Delay and nothing else (Status, DropConnection, DropResponse, ResponseDelay)")
	case f.Status != 0 && !f.DropConnection && (f.Status < 400 || f.Status > 599):
		fail("Fault.Status %d is not an error status (400 to 599); set DropConnection to drop the connection", f.Status)
	}
}

// injected is one fault given by FailNext or InjectFault.
type injected struct {
	f    Fault
	left int // FailNext: how many more calls it fails
	seen int // the calls that reached it and matched its RequestID, for Every
}

// offer shows a call on requestID to the fault: matched says the fault
// counts it, give that it is the call's turn to get the fault.
func (in *injected) offer(requestID string) (matched, give bool) {
	if in.f.RequestID != "" && in.f.RequestID != requestID {
		return false, false
	}
	in.seen++
	return true, in.f.Every <= 1 || in.seen%in.f.Every == 0
}

// pendingFault is a fault FailNext queued.
type pendingFault = *injected

// faults counts calls and holds the injected faults, per operation.
type faults struct {
	mu       sync.Mutex
	calls    map[Operation]int
	limited  map[Operation]int // calls refused by the rate-limit model
	faulted  map[Operation]int // calls given an injected fault
	pending  map[Operation][]pendingFault
	standing map[Operation][]*injected // InjectFault's, in the order injected
	closed   chan struct{}             // closed by release: the server is closing
	held     atomic.Int64              // calls being held by a Delay, a Hang or a ResponseDelay
}

// next records a call to op, on the request requestID ("" for none), and
// returns the fault it gets, if any. A call gets at most one: FailNext's
// faults form a queue, and the call is offered to the first of them that
// targets it; when that one passes it by (Every), or none targets it, the
// call is offered to InjectFault's faults in the order they were injected,
// until one gives it its fault.
func (fs *faults) next(op Operation, requestID string) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls[op]++
	q := fs.pending[op]
	for i, in := range q {
		matched, give := in.offer(requestID)
		if !matched {
			continue
		}
		if give {
			if in.left--; in.left == 0 {
				fs.pending[op] = slices.Delete(q, i, i+1)
			}
			fs.faulted[op]++
			return in.f, true
		}
		break
	}
	for _, in := range fs.standing[op] {
		if _, give := in.offer(requestID); give {
			fs.faulted[op]++
			return in.f, true
		}
	}
	return Fault{}, false
}

// countLimited records a call to op refused by the rate-limit model.
func (fs *faults) countLimited(op Operation) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.limited[op]++
}

// closing returns the channel release closes.
func (fs *faults) closing() <-chan struct{} {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.closingLocked()
}

func (fs *faults) closingLocked() chan struct{} {
	if fs.closed == nil {
		fs.closed = make(chan struct{})
	}
	return fs.closed
}

// release ends every Delay, Hang and ResponseDelay, now and from now on:
// the server is closing. It may be called more than once.
func (fs *faults) release() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ch := fs.closingLocked()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// FailNext gives the fault f to the next n calls to op (failing, holding or
// losing the answer of each as f says), then lets calls through again.
// Faults queue up: after the n calls of one FailNext, the calls of the next
// FailNext on the same op get its fault. A call is offered to the
// first queued fault that targets it (see Fault.RequestID); one that
// Fault.Every passes by goes on to the faults of [Server.InjectFault], and
// only the calls that get the fault count toward n. n = 0 does nothing.
//
// It panics on an unknown op, a negative n, or a Fault that does nothing
// or cannot be (a Status outside 400 to 599, Hang with anything that
// answers, a RequestID on an operation that names no request).
func (s *Server) FailNext(op Operation, n int, f Fault) {
	switch {
	case !knownOperation(op):
		panic(fmt.Sprintf("apifytest: FailNext: unknown operation %q", op))
	case n < 0:
		panic(fmt.Sprintf("apifytest: FailNext: n is %d; it must not be negative", n))
	case n == 0:
		return
	}
	f.check("FailNext", op)
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.pending[op] = append(s.faults.pending[op], &injected{f: f, left: n})
}

// InjectFault gives f to every call to op that it targets (see
// Fault.RequestID and Fault.Every) until remove is called: for example a
// delay on every prolong, or the answer of every 7th head/lock lost.
// FailNext's faults come first: a call one of them fails is not offered to
// InjectFault's. When several InjectFault faults target a call, the first
// injected whose turn it is gives it its fault (a call gets one fault at
// most); each counts, for Every, the calls that reach it. remove may be
// called more than once, from any goroutine; calls being held by f's
// Delay, Hang or ResponseDelay stay held.
//
// It panics on an unknown op or a Fault that FailNext would refuse.
func (s *Server) InjectFault(op Operation, f Fault) (remove func()) {
	f.check("InjectFault", op)
	in := &injected{f: f}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if s.faults.standing == nil {
		s.faults.standing = map[Operation][]*injected{}
	}
	s.faults.standing[op] = append(s.faults.standing[op], in)
	return func() {
		s.faults.mu.Lock()
		defer s.faults.mu.Unlock()
		s.faults.standing[op] = slices.DeleteFunc(s.faults.standing[op], func(x *injected) bool { return x == in })
	}
}

// Calls returns how many calls op has received, faulted and held ones
// included (a call counts when it arrives).
func (s *Server) Calls(op Operation) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.calls[op]
}

// Faulted returns how many calls of op were given an injected fault, by
// [Server.FailNext] or [Server.InjectFault] (whatever the fault did: a
// Delay alone counts too); [Server.Calls] counts them too. A chaos test
// reads it to know how many faults its run met.
func (s *Server) Faulted(op Operation) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.faulted[op]
}

// inject treats a call of op with its fault f; serve serves the call as
// usual, writing to the ResponseWriter it is given.
func (fs *faults) inject(w http.ResponseWriter, r *http.Request, op Operation, f Fault, serve func(http.ResponseWriter)) {
	if f.Delay > 0 || f.Hang {
		fs.held.Add(1)
		defer fs.held.Add(-1)
		readBodyFirst(r)
		ctx := r.Context()
		if f.ServeAfterCallerGone {
			// Served below whatever the caller does (its answer, written to
			// a connection nobody reads, goes nowhere).
			ctx = context.WithoutCancel(ctx)
		}
		switch fs.hold(ctx, f) {
		case callerGone:
			return // nobody to answer, nothing done
		case serverClosing:
			dropConnection(w)
			return
		}
	}
	switch {
	case f.DropConnection:
		dropConnection(w)
	case f.Status != 0:
		serveFault(w, op, f)
	case f.ResponseDelay > 0:
		fs.answerLate(w, r, f, serve)
	case f.DropResponse:
		serve(httptest.NewRecorder())
		dropConnection(w)
	default: // a delay alone
		serve(w)
	}
}

// answerLate serves a call at once into a recorder, holds the answer for
// f.ResponseDelay, then writes it (or, with f.DropResponse, drops the
// connection instead). A caller that gives up meanwhile gets nothing; a
// server that closes drops the connection.
func (fs *faults) answerLate(w http.ResponseWriter, r *http.Request, f Fault, serve func(http.ResponseWriter)) {
	fs.held.Add(1)
	defer fs.held.Add(-1)
	readBodyFirst(r) // so that a net/http server notices a caller that hangs up during the wait
	rec := httptest.NewRecorder()
	serve(rec)
	switch fs.hold(r.Context(), Fault{Delay: f.ResponseDelay}) {
	case callerGone:
		return // the work is done; nobody is left to hear of it
	case serverClosing:
		dropConnection(w)
		return
	}
	if f.DropResponse {
		dropConnection(w)
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// holdEnd is how a Delay or a Hang ended.
type holdEnd int

const (
	delayOver holdEnd = iota
	callerGone
	serverClosing
)

// hold waits out f's Delay, or for ever with Hang, until ctx (the call's)
// ends or the server closes.
func (fs *faults) hold(ctx context.Context, f Fault) holdEnd {
	var over <-chan time.Time
	if !f.Hang {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		over = t.C
	}
	select {
	case <-over:
		return delayOver
	case <-ctx.Done():
		return callerGone
	case <-fs.closing():
		return serverClosing
	}
}

// readBodyFirst reads the call's body into memory (up to the most a call
// may send, and one byte) and serves it from there. A net/http server
// notices that the client hung up (and ends the request's context) only
// once the body has been read, and a held call must notice.
func readBodyFirst(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	// A read error is the body's to report again when the handler reads on.
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
}

// dropConnection ends the call without any response. The handler hijacks
// the connection when it can and otherwise panics with
// http.ErrAbortHandler, which net/http servers turn into a dropped
// connection or stream, and memoryTransport into io.ErrUnexpectedEOF.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// serveFault answers a call with an injected fault.
func serveFault(w http.ResponseWriter, op Operation, f Fault) {
	if f.DropConnection {
		dropConnection(w)
		return
	}
	e := &apiError{Status: f.Status, Type: f.Type, Message: f.Message}
	if e.Type == "" {
		e.Type = "internal-server-error"
		if f.Status == http.StatusTooManyRequests {
			e.Type = "rate-limit-exceeded"
		}
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("Injected fault: %s answers %d %s (apifytest)",
			op, f.Status, strings.ToLower(http.StatusText(f.Status)))
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	writeError(w, e)
}
