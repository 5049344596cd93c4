package apifytest

import (
	"net/http"
	"slices"
)

// maxQueueListLimit is the most queues GET /v2/request-queues returns, and
// its default.
const maxQueueListLimit = 1000

// serveListQueues serves GET /v2/request-queues: the caller's queues, oldest
// first, paginated with offset and limit.
func (s *Server) serveListQueues(w http.ResponseWriter, r *http.Request, c caller) error {
	offset, err := wholeParam(r, "offset", 0, 0, maxQueueListOffset, false)
	if err != nil {
		return err
	}
	limit, err := wholeParam(r, "limit", maxQueueListLimit, 1, maxQueueListLimit, true)
	if err != nil {
		return err
	}
	desc, err := boolParam(r, "desc")
	if err != nil {
		return err
	}
	unnamed, err := boolParam(r, "unnamed")
	if err != nil {
		return err
	}
	ownership := r.URL.Query().Get("ownership")
	if ownership != "" && ownership != "ownedByMe" && ownership != "sharedWithMe" {
		return errInvalidInput("Query parameter \"ownership\" must be \"ownedByMe\" or \"sharedWithMe\"; got %q", ownership)
	}
	infos, total := s.store.listQueues(c, offset, limit, desc, unnamed, ownership == "sharedWithMe")
	items := make([]queueJSON, len(infos))
	for i, info := range infos {
		items[i] = queueBody(r, info)
	}
	writeData(w, http.StatusOK, struct {
		Total  int         `json:"total"`
		Offset int         `json:"offset"`
		Limit  int         `json:"limit"`
		Desc   bool        `json:"desc"`
		Count  int         `json:"count"`
		Items  []queueJSON `json:"items"`
	}{total, offset, limit, desc, len(items), items})
	return nil
}

// maxQueueListOffset bounds offset, far above any queue count, so that
// offset+limit cannot overflow.
const maxQueueListOffset = 1 << 40

// listQueues returns a page of the caller's queues in creation order (or
// its reverse) and how many there are in all. Nothing is shared between
// users, so sharedOnly lists none.
func (s *store) listQueues(c caller, offset, limit int, desc, unnamed, sharedOnly bool) ([]queueInfo, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var qs []*queue
	for _, q := range s.queues {
		if !sharedOnly && q.owner.name == c.user && (unnamed || q.name != "") {
			qs = append(qs, q)
		}
	}
	slices.SortFunc(qs, func(a, b *queue) int { return cmpUint(a.seq, b.seq) })
	if desc {
		slices.Reverse(qs)
	}
	total := len(qs)
	qs = qs[min(offset, total):min(offset+limit, total)] // offset+limit cannot overflow: see maxQueueListOffset
	out := make([]queueInfo, len(qs))
	for i, q := range qs {
		out[i] = q.info()
	}
	return out, total
}
