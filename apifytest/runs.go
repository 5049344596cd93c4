package apifytest

import (
	"net/http"
	"slices"
)

// This file holds what the emulator serves beyond the request-queue paths:
// an Actor run's default queue under /v2/actor-runs/{runId}/request-queue,
// and the lock holders of a queue, an emulator extension.

// runQueuePrefix is where an Actor run's default queue is served: below it,
// the same paths as below /v2/request-queues/{queueId}.
const runQueuePrefix = "/v2/actor-runs/{runId}/request-queue"

// runs maps the Actor runs the emulator knows to the IDs of their default
// queues ("" until the queue is made). It is guarded by store.mu.
type runs map[string]string

// RunQueue returns the ID of the Actor run runID's default request queue,
// the one served under /v2/actor-runs/{runId}/request-queue (and what
// ACTOR_DEFAULT_REQUEST_QUEUE_ID names inside that run), making the run
// known and its queue, an unnamed queue of [DefaultUser], on first use.
// The runs of [WithRunToken] tokens are known from the start; their queues
// are made on first use too, by this method or by a call under the run's
// path. It panics on an empty run ID.
func (s *Server) RunQueue(runID string) string {
	if runID == "" {
		panic("apifytest: RunQueue: the run ID is empty")
	}
	now := s.store.now()
	id, _ := s.store.runQueue(caller{user: DefaultUser, now: now}, runID, true)
	s.platform.knowRun(runID, now)
	return id
}

// runQueue returns the ID of the run's default queue, making it when the
// run is known (or declare says to make the run known); ok is false for a
// run the emulator does not know.
func (s *store) runQueue(c caller, runID string, declare bool) (id string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, known := s.runs[runID]
	if !known && !declare {
		return "", false
	}
	if id == "" {
		id = s.newQueue(s.userNamed(DefaultUser), "", c.now).id
		s.runs[runID] = id
	}
	return id, true
}

// servedRunQueue points a call under /v2/actor-runs/{runId}/request-queue
// at the run's default queue, as if it named the queue by ID; a call under
// the queue paths is left as it is.
func (s *Server) servedRunQueue(r *http.Request, c caller) error {
	runID := r.PathValue("runId")
	if runID == "" {
		return nil
	}
	id, ok := s.store.runQueue(c, runID, false)
	if !ok {
		return errRecordNotFound("Actor run %q was not found (the emulator knows the runs of its run tokens, "+
			"WithRunToken or apify-rq serve --run-token, and of Server.RunQueue)", clip(runID))
	}
	r.SetPathValue("queueId", id)
	return nil
}

// LocksPath is the emulator's extension that lists who holds the locks of
// a queue, which Apify's API does not tell: GET it with the queue's ID (or
// "~name", "username~name") in place of {queueId}, with the same token as
// any other call. It answers {"data": {"items": [...]}}, one item per live
// lock, soonest expiry first: {"id", "clientKey" (when the lock has one),
// "runId" (when it was taken inside an Actor run), "lockExpiresAt",
// "forefront"}. It reads like listing the queue's requests (the same
// permissions), but it is not one of the API's operations: it is never
// rate limited, [Server.FailNext] does not touch it, and [Server.Calls]
// does not count it. On Apify's API the path does not exist (404), which is
// how apify-rq list tells the emulator from the API.
const LocksPath = "/v2/x-apifytest/request-queues/{queueId}/locks"

// lockHolder is one item of LocksPath's answer.
type lockHolder struct {
	ID            string `json:"id"`
	ClientKey     string `json:"clientKey,omitempty"`
	RunID         string `json:"runId,omitempty"`
	LockExpiresAt string `json:"lockExpiresAt"`
	Forefront     bool   `json:"forefront"`
}

// serveLocks serves LocksPath.
func (s *Server) serveLocks(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		writeError(w, err)
		return
	}
	c.now = s.store.now()
	items, err := s.store.lockHolders(c, r.PathValue("queueId"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeData(w, http.StatusOK, struct {
		Items []lockHolder `json:"items"`
	}{items})
}

// lockHolders returns the queue's live locks, soonest expiry first.
func (s *store) lockHolders(c caller, ref string) ([]lockHolder, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, err := s.resolve(c, ref)
	if err != nil {
		return nil, err
	}
	ls := slices.Clone([]*lock(q.locks))
	sortLocks(ls)
	out := make([]lockHolder, len(ls))
	for i, l := range ls {
		out[i] = lockHolder{ID: l.req.id, ClientKey: l.clientKey, RunID: l.runID, LockExpiresAt: formatTime(l.expiresAt), Forefront: l.forefront}
	}
	return out, nil
}
