package apifytest

import (
	"container/heap"
	"container/list"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// This file is the emulator's data model: users, queues, requests and locks.
// It knows nothing of HTTP beyond the status and type an error maps to.

// apiError is an error as the API reports it: an HTTP status and the
// envelope's type and message.
type apiError struct {
	Status  int
	Type    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func newAPIError(status int, typ, format string, args ...any) *apiError {
	return &apiError{Status: status, Type: typ, Message: fmt.Sprintf(format, args...)}
}

func errInvalidInput(format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, "invalid-input", format, args...)
}

func errRecordNotFound(format string, args ...any) *apiError {
	return newAPIError(http.StatusNotFound, "record-not-found", format, args...)
}

func errHandledOrLocked(format string, args ...any) *apiError {
	return newAPIError(http.StatusForbidden, "request-handled-or-locked", format, args...)
}

// DefaultUser is the user every caller is when the server has no tokens, and
// the owner of WithToken and WithRunToken tokens.
const DefaultUser = "apifytest"

// RequestID returns the ID the emulator, like Apify, gives the request with
// this uniqueKey: the SHA-256 of the key, in standard base64, without its
// '+', '/' and '=' characters, cut to 15 characters.
func RequestID(uniqueKey string) string {
	sum := sha256.Sum256([]byte(uniqueKey))
	enc := base64.StdEncoding.EncodeToString(sum[:])
	id := make([]byte, 0, requestIDLength)
	for i := 0; i < len(enc) && len(id) < requestIDLength; i++ {
		switch c := enc[i]; c {
		case '+', '/', '=':
		default:
			id = append(id, c)
		}
	}
	return string(id)
}

const requestIDLength = 15

// randomID returns a 17-character alphanumeric ID, the shape of Apify's
// queue and user IDs.
func randomID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 17)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// caller is who makes a call: the user its token belongs to, the clientKey
// it sent ("" for none) and the Actor run its token belongs to ("" outside a
// run); and when: the time the call read from the clock, once, when it
// arrived, so that every step of one call sees the same instant.
type caller struct {
	user      string
	clientKey string
	runID     string
	now       time.Time
}

// holds reports whether the caller holds lock l: the same clientKey, or a
// caller inside the run that took it.
func (c caller) holds(l *lock) bool {
	return (c.clientKey != "" && c.clientKey == l.clientKey) || (c.runID != "" && c.runID == l.runID)
}

// requestData is a request's content: everything but its ID and state.
type requestData struct {
	uniqueKey  string
	url        string
	method     string
	retryCount int
	handledAt  time.Time // zero while not handled
	// extra holds the other fields of the spec's RequestBase (loadedUrl,
	// payload, headers, userData, noRetry, errorMessages) as the client sent
	// them. A map stored here is never modified, only replaced.
	extra map[string]json.RawMessage
}

// extraFields are the RequestBase fields kept verbatim, in output order.
var extraFields = []string{"loadedUrl", "payload", "headers", "userData", "noRetry", "errorMessages"}

// request is one request of a queue.
type request struct {
	id   string
	data requestData
	pos  int           // index in queue.order
	elem *list.Element // its place in queue.pending; nil unless pending and unlocked
	lock *lock         // the live lock; nil when unlocked
	// lastLock is the lock that last ended by expiry, kept to say "your lock
	// expired" instead of "not locked"; cleared by a new lock.
	lastLock *lock
}

func (r *request) handled() bool { return !r.data.handledAt.IsZero() }

// lock is a request's lock: who holds it, until when, and where the request
// goes when it expires.
type lock struct {
	clientKey string
	runID     string
	expiresAt time.Time
	forefront bool   // when it expires, the request goes to the front (true) or the back
	seq       uint64 // order in which locks were taken, to restore queue order
	idx       int    // index in queue.locks
	req       *request
}

// lockHeap is a min-heap of live locks by expiry.
type lockHeap []*lock

func (h lockHeap) Len() int { return len(h) }
func (h lockHeap) Less(i, j int) bool {
	if !h[i].expiresAt.Equal(h[j].expiresAt) {
		return h[i].expiresAt.Before(h[j].expiresAt)
	}
	return h[i].seq < h[j].seq
}
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *lockHeap) Push(x any) {
	l := x.(*lock)
	l.idx = len(*h)
	*h = append(*h, l)
}
func (h *lockHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.idx = -1
	return l
}

// user owns queues; a name is unique among one user's queues.
type user struct {
	id     string
	name   string
	queues map[string]*queue // by name
}

// queue is one request queue. Besides the requests by ID it keeps, so that
// no operation scans the whole queue:
//   - pending: the requests that are neither handled nor locked, in head order;
//   - locks: a min-heap of live locks by expiry, drained lazily by expire;
//   - byKey, byRun: the live locks of each clientKey and of each run.
type queue struct {
	id, name      string
	seq           uint64 // creation order, for listing
	owner         *user
	generalAccess string
	createdAt     time.Time
	modifiedAt    time.Time
	accessedAt    time.Time

	reqs    map[string]*request
	order   []*request // every request ever added, in order; nil where deleted
	pending list.List  // of *request
	locks   lockHeap
	byKey   map[string]map[*request]struct{}
	byRun   map[string]map[*request]struct{}
	handled int

	// hadMultipleClients bookkeeping: the first client's key, and whether a
	// different one (or a call without a key) has come since.
	seenClient  bool
	firstClient string
	multiple    bool
}

// store holds every user and queue; one mutex guards it all.
type store struct {
	mu      sync.Mutex
	clock   Clock
	users   map[string]*user  // by name
	queues  map[string]*queue // by ID
	lockSeq uint64
	qSeq    uint64 // queues created so far
	runs    runs   // the Actor runs known, and their default queues
}

func newStore(clock Clock) *store {
	return &store{clock: clock, users: map[string]*user{}, queues: map[string]*queue{}, runs: runs{}}
}

// now is the current time as the API shows it: UTC, whole milliseconds.
func (s *store) now() time.Time { return s.clock.Now().UTC().Truncate(time.Millisecond) }

// userNamed returns the user, creating it on first use.
func (s *store) userNamed(name string) *user {
	u := s.users[name]
	if u == nil {
		u = &user{id: randomID(), name: name, queues: map[string]*queue{}}
		s.users[name] = u
	}
	return u
}

// validateQueueName checks a queue name the way Apify words its rule: letters,
// digits and hyphens, a hyphen only inside the name, at most 63 characters.
func validateQueueName(name string) *apiError {
	bad := len(name) > 63 || strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-")
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			bad = true
		}
	}
	if bad {
		return errInvalidInput("Queue name %q is not valid: use up to 63 letters, digits and hyphens (a hyphen only inside the name, e.g. \"my-queue-1\")", name)
	}
	return nil
}

// createQueue returns the user's queue with that name, creating it (and
// reporting so) when it does not exist. An empty name makes a new unnamed queue.
func (s *store) createQueue(c caller, name string) (queueInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userNamed(c.user)
	if name != "" {
		if err := validateQueueName(name); err != nil {
			return queueInfo{}, false, err
		}
		if q := u.queues[name]; q != nil {
			q.accessedAt = c.now
			return q.info(), false, nil
		}
	}
	return s.newQueue(u, name, c.now).info(), true, nil
}

// newQueue makes a queue of u; s.mu must be held.
func (s *store) newQueue(u *user, name string, now time.Time) *queue {
	q := &queue{
		id: randomID(), name: name, owner: u, generalAccess: "FOLLOW_USER_SETTING",
		createdAt: now, modifiedAt: now, accessedAt: now,
		reqs:  map[string]*request{},
		byKey: map[string]map[*request]struct{}{},
		byRun: map[string]map[*request]struct{}{},
	}
	for s.queues[q.id] != nil {
		q.id = randomID()
	}
	s.qSeq++
	q.seq = s.qSeq
	s.queues[q.id] = q
	if name != "" {
		u.queues[name] = q
	}
	return q
}

// resolve finds the queue a path names, for reading: an ID, "username~name",
// or "~name" for the caller's own queue. Another user's queue may be read
// by ID unless its generalAccess is RESTRICTED, and by name only when it is
// ANYONE_WITH_NAME_CAN_READ. It drains expired locks, so every operation
// sees the queue as of now. s.mu must be held.
func (s *store) resolve(c caller, ref string) (*queue, error) {
	return s.resolveFor(c, ref, false)
}

// resolveWrite is resolve for an operation that changes the queue: only
// its owner may.
func (s *store) resolveWrite(c caller, ref string) (*queue, error) {
	return s.resolveFor(c, ref, true)
}

func (s *store) resolveFor(c caller, ref string, write bool) (*queue, error) {
	var q *queue
	owner, name, named := strings.Cut(ref, "~")
	if named {
		if owner == "" {
			owner = c.user
		}
		u := s.users[owner]
		if u == nil {
			return nil, errRecordNotFound("Request queue %q was not found: there is no user %q", ref, owner)
		}
		q = u.queues[name]
		if owner != c.user && (q == nil || write || q.generalAccess != "ANYONE_WITH_NAME_CAN_READ") {
			return nil, errInsufficientPermissions("You (user %q) may not access request queue %q of user %q by name; use its ID", c.user, ref, owner)
		}
	} else {
		q = s.queues[ref]
	}
	if q == nil {
		return nil, errRecordNotFound("Request queue %q was not found", ref)
	}
	if q.owner.name != c.user {
		switch {
		case write:
			return nil, errInsufficientPermissions("Only its owner may change request queue %q of user %q; you are user %q", ref, q.owner.name, c.user)
		case q.generalAccess == "RESTRICTED":
			return nil, errInsufficientPermissions("You (user %q) may not access request queue %q of user %q: its generalAccess is RESTRICTED", c.user, ref, q.owner.name)
		}
	}
	s.expire(q, c.now)
	return q, nil
}

func errInsufficientPermissions(format string, args ...any) *apiError {
	return newAPIError(http.StatusForbidden, "insufficient-permissions", format, args...)
}

// queueID returns the ID of the queue ref names for c, or "" when there is
// none; it checks no permission and drains no lock.
func (s *store) queueID(c caller, ref string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var q *queue
	if owner, name, named := strings.Cut(ref, "~"); named {
		if owner == "" {
			owner = c.user
		}
		if u := s.users[owner]; u != nil {
			q = u.queues[name]
		}
	} else {
		q = s.queues[ref]
	}
	if q == nil {
		return ""
	}
	return q.id
}

// touch records an access by a client for hadMultipleClients: a call without
// a clientKey is always a new client.
func (q *queue) touch(clientKey string, now time.Time) {
	q.accessedAt = now
	switch {
	case q.multiple:
	case !q.seenClient:
		q.seenClient, q.firstClient = true, clientKey
		if clientKey == "" {
			q.firstClient = "\x00" // no later call can match it
		}
	case clientKey == "" || clientKey != q.firstClient:
		q.multiple = true
	}
}

// touchRead is touch for a call that only reads (GET .../requests, GET
// head): without a clientKey it is no client at all, since it cannot make
// any client's picture of the queue stale (see the package documentation).
func (q *queue) touchRead(clientKey string, now time.Time) {
	if clientKey == "" {
		q.accessedAt = now
		return
	}
	q.touch(clientKey, now)
}

// queueInfo is a snapshot of a queue's metadata.
type queueInfo struct {
	ID, Name, UserID      string
	CreatedAt, ModifiedAt time.Time
	AccessedAt            time.Time
	Total, Handled        int
	HadMultipleClients    bool
	GeneralAccess         string
}

func (q *queue) info() queueInfo {
	return queueInfo{
		ID: q.id, Name: q.name, UserID: q.owner.id,
		CreatedAt: q.createdAt, ModifiedAt: q.modifiedAt, AccessedAt: q.accessedAt,
		Total: len(q.reqs), Handled: q.handled,
		HadMultipleClients: q.multiple, GeneralAccess: q.generalAccess,
	}
}

func (s *store) getQueue(c caller, ref string) (queueInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolve(c, ref)
	if err != nil {
		return queueInfo{}, err
	}
	q.accessedAt = c.now
	return q.info(), nil
}

// updateQueue renames the queue (when name is not nil; "" makes it unnamed)
// and sets its general access (when not "").
func (s *store) updateQueue(c caller, ref string, name *string, access string) (queueInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return queueInfo{}, err
	}
	if name != nil && *name != q.name {
		if *name != "" {
			if err := validateQueueName(*name); err != nil {
				return queueInfo{}, err
			}
			if q.owner.queues[*name] != nil {
				return queueInfo{}, newAPIError(http.StatusBadRequest, "name-not-unique",
					"You already have a request queue named %q", *name)
			}
			q.owner.queues[*name] = q
		}
		if q.name != "" {
			delete(q.owner.queues, q.name)
		}
		q.name = *name
	}
	if access != "" {
		q.generalAccess = access
	}
	now := c.now
	q.modifiedAt, q.accessedAt = now, now
	return q.info(), nil
}

// deleteQueue deletes the queue and returns its ID.
func (s *store) deleteQueue(c caller, ref string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return "", err
	}
	delete(s.queues, q.id)
	if q.name != "" {
		delete(q.owner.queues, q.name)
	}
	return q.id, nil
}

// expire ends every lock that has expired by now, returning each request to
// the front or the back of the queue as its lock says. Requests going the
// same way keep the relative order in which they were locked. Its cost is
// proportional to the number of locks that expired.
func (s *store) expire(q *queue, now time.Time) {
	var front, back []*lock
	for len(q.locks) > 0 && !now.Before(q.locks[0].expiresAt) {
		l := q.locks[0]
		q.release(l.req)
		l.req.lastLock = l
		if l.forefront {
			front = append(front, l)
		} else {
			back = append(back, l)
		}
	}
	if front == nil && back == nil {
		return
	}
	q.requeue(front, true)
	q.requeue(back, false)
	q.modifiedAt = now
}

// requeue puts the requests of released locks back in the pending list, at
// the front or the back, in the order their locks were taken.
func (q *queue) requeue(ls []*lock, forefront bool) {
	slices.SortFunc(ls, func(a, b *lock) int { return cmpUint(a.seq, b.seq) })
	if forefront {
		for i := len(ls) - 1; i >= 0; i-- {
			ls[i].req.elem = q.pending.PushFront(ls[i].req)
		}
		return
	}
	for _, l := range ls {
		l.req.elem = q.pending.PushBack(l.req)
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// release removes r's lock from the heap and the holder indexes; the caller
// decides where r goes next.
func (q *queue) release(r *request) {
	l := r.lock
	if l == nil {
		return
	}
	heap.Remove(&q.locks, l.idx)
	if l.clientKey != "" {
		removeFromIndex(q.byKey, l.clientKey, r)
	}
	if l.runID != "" {
		removeFromIndex(q.byRun, l.runID, r)
	}
	r.lock = nil
}

func removeFromIndex(idx map[string]map[*request]struct{}, key string, r *request) {
	set := idx[key]
	delete(set, r)
	if len(set) == 0 {
		delete(idx, key)
	}
}

func addToIndex(idx map[string]map[*request]struct{}, key string, r *request) {
	set := idx[key]
	if set == nil {
		set = map[*request]struct{}{}
		idx[key] = set
	}
	set[r] = struct{}{}
}

// takeLock locks a pending request for c.
func (s *store) takeLock(q *queue, r *request, c caller, expiresAt time.Time) *lock {
	if r.elem != nil {
		q.pending.Remove(r.elem)
		r.elem = nil
	}
	s.lockSeq++
	l := &lock{clientKey: c.clientKey, runID: c.runID, expiresAt: expiresAt, forefront: true, seq: s.lockSeq, req: r}
	r.lock, r.lastLock = l, nil
	heap.Push(&q.locks, l)
	if l.clientKey != "" {
		addToIndex(q.byKey, l.clientKey, r)
	}
	if l.runID != "" {
		addToIndex(q.byRun, l.runID, r)
	}
	return l
}

// addResult is the outcome of adding one request.
type addResult struct {
	RequestID         string
	UniqueKey         string
	WasAlreadyPresent bool
	WasAlreadyHandled bool
}

// addRequests adds requests in order, each to the back of the queue or, with
// forefront, all of them to the front (keeping their order). A request whose
// uniqueKey is already in the queue is left as it is.
func (s *store) addRequests(c caller, ref string, items []requestData, forefront bool) ([]addResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return nil, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	return s.add(q, items, forefront, now), nil
}

func (s *store) add(q *queue, items []requestData, forefront bool, now time.Time) []addResult {
	out := make([]addResult, len(items))
	var fresh []*request
	added := 0
	for i, d := range items {
		id := RequestID(d.uniqueKey)
		out[i] = addResult{RequestID: id, UniqueKey: d.uniqueKey}
		if old := q.reqs[id]; old != nil {
			out[i].WasAlreadyPresent, out[i].WasAlreadyHandled = true, old.handled()
			continue
		}
		r := &request{id: id, data: d, pos: len(q.order)}
		q.reqs[id] = r
		q.order = append(q.order, r)
		added++
		if r.handled() {
			q.handled++
		} else {
			fresh = append(fresh, r)
		}
	}
	if forefront {
		for i := len(fresh) - 1; i >= 0; i-- {
			fresh[i].elem = q.pending.PushFront(fresh[i])
		}
	} else {
		for _, r := range fresh {
			r.elem = q.pending.PushBack(r)
		}
	}
	if added > 0 {
		q.modifiedAt = now
	}
	return out
}

// requestView is a snapshot of a request, for a response.
type requestView struct {
	ID string
	requestData
	Lock *lockView // nil when not locked
}

type lockView struct {
	ClientKey, RunID string
	ExpiresAt        time.Time
	Forefront        bool
}

func (r *request) view() requestView {
	v := requestView{ID: r.id, requestData: r.data}
	if l := r.lock; l != nil {
		v.Lock = &lockView{ClientKey: l.clientKey, RunID: l.runID, ExpiresAt: l.expiresAt, Forefront: l.forefront}
	}
	return v
}

func (s *store) getRequest(c caller, ref, id string) (requestView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolve(c, ref)
	if err != nil {
		return requestView{}, err
	}
	q.accessedAt = c.now
	r := q.reqs[id]
	if r == nil {
		return requestView{}, errRecordNotFound("Request %q was not found in request queue %q", id, ref)
	}
	return r.view(), nil
}

// lockedByOther returns the 403 for a caller that acts on a request locked by
// someone else, or nil.
func lockedByOther(c caller, r *request, action string) error {
	l := r.lock
	if l == nil || c.holds(l) {
		return nil
	}
	if l.clientKey == "" && l.runID == "" {
		return errHandledOrLocked("Cannot %s request %q: it is locked (until %s) by a call that sent no clientKey; "+
			"without a clientKey every call counts as a new client, so no later call holds that lock: pass a clientKey",
			action, r.id, formatTime(l.expiresAt))
	}
	return errHandledOrLocked("Cannot %s request %q: it is locked by another client until %s", action, r.id, formatTime(l.expiresAt))
}

// updateRequest replaces a request's content. Setting handledAt marks it
// handled and ends its lock; only the lock's holder may do that while the
// lock lives. Clearing handledAt puts a handled request back in the queue.
// An unlocked pending request moves to the back of the queue, or to the
// front with forefront; a locked one keeps its lock and its place.
func (s *store) updateRequest(c caller, ref, id string, d requestData, forefront bool) (addResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return addResult{}, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	r := q.reqs[id]
	if r == nil {
		return addResult{}, errRecordNotFound("Request %q was not found in request queue %q", id, ref)
	}
	if d.uniqueKey != r.data.uniqueKey {
		return addResult{}, errInvalidInput("Request %q has uniqueKey %q; the body's uniqueKey %q differs, and a uniqueKey cannot be changed",
			id, r.data.uniqueKey, d.uniqueKey)
	}
	wasHandled := r.handled()
	if !d.handledAt.IsZero() {
		if err := lockedByOther(c, r, "mark as handled"); err != nil {
			return addResult{}, err
		}
	}
	r.data = d
	switch {
	case r.handled():
		if r.elem != nil {
			q.pending.Remove(r.elem)
			r.elem = nil
		}
		q.release(r)
		if !wasHandled {
			q.handled++
		}
	case r.lock != nil:
		// Locked and still not handled: the lock decides where it goes next.
	default:
		if wasHandled {
			q.handled--
		} else if r.elem != nil {
			q.pending.Remove(r.elem)
		}
		if forefront {
			r.elem = q.pending.PushFront(r)
		} else {
			r.elem = q.pending.PushBack(r)
		}
	}
	q.modifiedAt = now
	return addResult{RequestID: id, UniqueKey: r.data.uniqueKey, WasAlreadyPresent: true, WasAlreadyHandled: wasHandled}, nil
}

// remove deletes r from every structure of q.
func (q *queue) remove(r *request) {
	if r.elem != nil {
		q.pending.Remove(r.elem)
		r.elem = nil
	}
	q.release(r)
	if r.handled() {
		q.handled--
	}
	delete(q.reqs, r.id)
	q.order[r.pos] = nil
}

func (s *store) deleteRequest(c caller, ref, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return err
	}
	now := c.now
	q.touch(c.clientKey, now)
	r := q.reqs[id]
	if r == nil {
		return errRecordNotFound("Request %q was not found in request queue %q", id, ref)
	}
	if err := lockedByOther(c, r, "delete"); err != nil {
		return err
	}
	q.remove(r)
	q.modifiedAt = now
	return nil
}

// deleteItem names a request to delete: by ID, or by uniqueKey when ID is "".
type deleteItem struct{ ID, UniqueKey string }

// batchDelete deletes requests; one locked by another client is left alone
// and reported unprocessed. A request that does not exist counts as deleted.
func (s *store) batchDelete(c caller, ref string, items []deleteItem) (done []deleteItem, skipped []requestView, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return nil, nil, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	done, skipped = []deleteItem{}, []requestView{}
	for _, it := range items {
		id := it.ID
		if id == "" {
			id = RequestID(it.UniqueKey)
		}
		r := q.reqs[id]
		if r != nil && lockedByOther(c, r, "delete") != nil {
			skipped = append(skipped, r.view())
			continue
		}
		if r != nil {
			q.remove(r)
			q.modifiedAt = now
			it.UniqueKey = r.data.uniqueKey
		}
		it.ID = id
		done = append(done, it)
	}
	return done, skipped, nil
}

// listFilter selects requests by state; both false means every request.
type listFilter struct{ locked, pending bool }

// listRequests returns up to limit requests after position start of the
// queue's insertion order, and the position to continue from (-1 at the end).
func (s *store) listRequests(c caller, ref string, limit, start int, exclusiveStartID string, f listFilter) ([]requestView, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolve(c, ref)
	if err != nil {
		return nil, 0, err
	}
	q.touchRead(c.clientKey, c.now)
	if exclusiveStartID != "" {
		r := q.reqs[exclusiveStartID]
		if r == nil {
			return nil, 0, errInvalidInput("exclusiveStartId %q is not a request of request queue %q", exclusiveStartID, ref)
		}
		start = r.pos + 1
	}
	items := []requestView{}
	var b budget
	i := start
	for ; i < len(q.order) && len(items) < limit; i++ {
		r := q.order[i]
		if r == nil {
			continue
		}
		locked, pending := r.lock != nil, r.lock == nil && !r.handled()
		if (f.locked || f.pending) && !(f.locked && locked || f.pending && pending) {
			continue
		}
		if !b.take(r.fullCost(), len(items)) {
			break
		}
		items = append(items, r.view())
	}
	next := -1
	for ; i < len(q.order); i++ {
		if q.order[i] != nil {
			next = i
			break
		}
	}
	return items, next, nil
}

// headResult is the answer of head and of listAndLockHead.
type headResult struct {
	QueueModifiedAt    time.Time
	HadMultipleClients bool
	QueueHasLocked     bool
	Items              []requestView
}

// head returns the first limit pending, unlocked requests. Its cost is
// proportional to limit.
func (s *store) head(c caller, ref string, limit int) (headResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolve(c, ref)
	if err != nil {
		return headResult{}, err
	}
	q.touchRead(c.clientKey, c.now)
	res := headResult{QueueModifiedAt: q.modifiedAt, HadMultipleClients: q.multiple, QueueHasLocked: len(q.locks) > 0, Items: []requestView{}}
	var b budget
	for e := q.pending.Front(); e != nil && len(res.Items) < limit; e = e.Next() {
		r := e.Value.(*request)
		if !b.take(r.headCost(), len(res.Items)) {
			break
		}
		res.Items = append(res.Items, r.view())
	}
	return res, nil
}

// listAndLockHead locks the first limit pending requests for c, atomically.
// Locked requests are not in the pending list, so its cost is proportional
// to limit plus the expired locks it drains, whatever the queue's size.
func (s *store) listAndLockHead(c caller, ref string, limit int, lockFor time.Duration) (headResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return headResult{}, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	res := headResult{Items: make([]requestView, 0, min(limit, q.pending.Len()))}
	var b budget
	for len(res.Items) < limit && q.pending.Len() > 0 {
		r := q.pending.Front().Value.(*request)
		if !b.take(r.headCost(), len(res.Items)) {
			break
		}
		s.takeLock(q, r, c, now.Add(lockFor))
		res.Items = append(res.Items, r.view())
	}
	if len(res.Items) > 0 {
		q.modifiedAt = now
	}
	res.QueueModifiedAt, res.HadMultipleClients, res.QueueHasLocked = q.modifiedAt, q.multiple, len(q.locks) > 0
	return res, nil
}

// heldLock returns the request when c holds a live lock on it, or the error
// that says precisely why not.
func (s *store) heldLock(q *queue, c caller, ref, id, action string) (*request, error) {
	r := q.reqs[id]
	switch {
	case r == nil:
		return nil, errRecordNotFound("Request %q was not found in request queue %q", id, ref)
	case r.handled():
		return nil, errHandledOrLocked("Cannot %s the lock of request %q: the request was already handled (at %s)", action, id, formatTime(r.data.handledAt))
	case r.lock == nil && r.lastLock != nil && c.holds(r.lastLock):
		return nil, errHandledOrLocked("Cannot %s the lock of request %q: your lock expired at %s and the request is pending again", action, id, formatTime(r.lastLock.expiresAt))
	case r.lock == nil:
		return nil, errHandledOrLocked("Cannot %s the lock of request %q: the request is not locked", action, id)
	}
	if err := lockedByOther(c, r, action+" the lock of"); err != nil {
		return nil, err
	}
	return r, nil
}

// prolong sets the lock's expiry to now plus lockFor and remembers forefront
// for when the lock expires.
func (s *store) prolong(c caller, ref, id string, lockFor time.Duration, forefront bool) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return time.Time{}, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	r, err := s.heldLock(q, c, ref, id, "prolong")
	if err != nil {
		return time.Time{}, err
	}
	r.lock.expiresAt, r.lock.forefront = now.Add(lockFor), forefront
	heap.Fix(&q.locks, r.lock.idx)
	q.modifiedAt = now
	return r.lock.expiresAt, nil
}

// deleteLock ends the lock and puts the request at the front or the back.
func (s *store) deleteLock(c caller, ref, id string, forefront bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return err
	}
	now := c.now
	q.touch(c.clientKey, now)
	r, err := s.heldLock(q, c, ref, id, "delete")
	if err != nil {
		return err
	}
	q.release(r)
	if forefront {
		r.elem = q.pending.PushFront(r)
	} else {
		r.elem = q.pending.PushBack(r)
	}
	q.modifiedAt = now
	return nil
}

// unlock ends every lock c holds on the queue: those taken with its
// clientKey and, inside a run, those of the run. The requests go back to the
// front of the queue in the order they were locked. Its cost is
// proportional to the caller's locks (k log k to restore their order).
func (s *store) unlock(c caller, ref string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolveWrite(c, ref)
	if err != nil {
		return 0, err
	}
	now := c.now
	q.touch(c.clientKey, now)
	var mine []*lock
	if c.clientKey != "" {
		for r := range q.byKey[c.clientKey] {
			mine = append(mine, r.lock)
		}
	}
	if c.runID != "" {
		for r := range q.byRun[c.runID] {
			if c.clientKey == "" || r.lock.clientKey != c.clientKey { // not counted twice
				mine = append(mine, r.lock)
			}
		}
	}
	for _, l := range mine {
		q.release(l.req)
	}
	q.requeue(mine, true)
	if len(mine) > 0 {
		q.modifiedAt = now
	}
	return len(mine), nil
}

// maxResponseBytes bounds the requests one head, head/lock or list call
// returns, roughly in bytes of JSON: it stops before the request that
// would go over (but returns at least one), leaving the rest for the next
// call. (A variable so that tests can lower it.)
var maxResponseBytes = 8 << 20

// budget counts what a response has cost so far.
type budget struct{ used int }

// take adds cost and reports whether the item fits: the first always does.
func (b *budget) take(cost, taken int) bool {
	if taken > 0 && b.used+cost > maxResponseBytes {
		return false
	}
	b.used += cost
	return true
}

// headCost is roughly the size of the request as a head item.
func (r *request) headCost() int { return 128 + len(r.data.uniqueKey) + len(r.data.url) }

// fullCost is roughly the size of the full request object.
func (r *request) fullCost() int {
	n := r.headCost()
	for _, v := range r.data.extra {
		n += 16 + len(v)
	}
	return n
}

// formatTime renders a time the way the API does: UTC, milliseconds, "Z".
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// snapshot runs f on the queue with the given ID (expired locks drained
// first), or returns false when there is none. f gets the time the clock
// was read at, once.
func (s *store) snapshot(queueID string, f func(q *queue, now time.Time)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[queueID]
	if q == nil {
		return false
	}
	now := s.now()
	s.expire(q, now)
	f(q, now)
	return true
}
