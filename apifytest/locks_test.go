package apifytest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rqkit/apify"
)

// Paths of the lock family, for one queue.
func headLock(q string, secs, limit int, clientKey string) string {
	p := "/v2/request-queues/" + q + "/head/lock?lockSecs=" + itoa(secs) + "&limit=" + itoa(limit)
	if clientKey != "" {
		p += "&clientKey=" + clientKey
	}
	return p
}

func reqPath(q, id, suffix, query string) string {
	p := "/v2/request-queues/" + q + "/requests/" + id + suffix
	if query != "" {
		p += "?" + query
	}
	return p
}

func handledBody(uniqueKey string) map[string]any {
	return map[string]any{"uniqueKey": uniqueKey, "url": "https://example.com/", "handledAt": "2026-03-14T16:00:00Z"}
}

func TestLockedRequestsAreHiddenFromOthers(t *testing.T) {
	e := newEnv(t)
	mine := e.lock(t, "a", 2)
	equalIDs(t, mine, e.ids[:2], "a's locks")
	head := e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head", nil)
	equalIDs(t, head.ids(t), e.ids[2:], "GET head")
	theirs := e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 25, "b"), nil)
	equalIDs(t, theirs.ids(t), e.ids[2:], "b's head/lock")
	// a's own head/lock does not return what it already holds either.
	again := e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 25, "a"), nil)
	if len(again.items(t)) != 0 {
		t.Errorf("a locked %v again", again.ids(t))
	}
	locked := e.s.Locked(e.q)
	if len(locked) != 3 || locked[0].Lock.ClientKey != "a" || locked[2].Lock.ClientKey != "b" {
		t.Errorf("Locked = %+v", locked)
	}
}

func TestLockExpiresWithTheClock(t *testing.T) {
	e := newEnv(t)
	e.lock(t, "a", 2) // expires at t0+60s
	st, _ := e.s.Request(e.q, e.ids[0])
	if st.Lock == nil || !st.Lock.ExpiresAt.Equal(t0.Add(60*time.Second)) || !st.Lock.Forefront {
		t.Fatalf("lock = %+v", st.Lock)
	}
	e.clock.Advance(59*time.Second + 999*time.Millisecond)
	if n := len(e.s.Locked(e.q)); n != 2 {
		t.Fatalf("%d locks 1 ms before expiry, want 2", n)
	}
	e.clock.Advance(time.Millisecond) // exactly lockExpiresAt: expired
	if n := len(e.s.Locked(e.q)); n != 0 {
		t.Fatalf("%d locks at expiry, want 0", n)
	}
	// Expired head/lock locks return to the front, in the order they were taken.
	equalIDs(t, idsOf(e.s.Pending(e.q)), e.ids, "pending after expiry")
	head := e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head", nil)
	equalIDs(t, head.ids(t), e.ids, "GET head after expiry")

	// The former holder is told its lock expired; someone else can take it.
	r := e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[0], "/lock", "lockSecs=60&clientKey=a"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "your lock expired at 2026-03-14T15:10:26.000Z")
	e.lock(t, "b", 1)
	r = e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[0], "/lock", "lockSecs=60&clientKey=a"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "locked by another client")
	r = e.c.do(OpDeleteRequestLock, "DELETE", reqPath(e.q, e.ids[0], "/lock", "clientKey=a"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "locked by another client")
}

func TestWhereRequestsGoWhenLocksEnd(t *testing.T) {
	cases := []struct {
		name string
		act  func(t *testing.T, e *env) // with r0 and r1 locked by "a"
		want []int                      // pending order, as indexes of u0..u4
	}{
		{"expiry of head/lock locks: front, in lock order", func(t *testing.T, e *env) { e.clock.Advance(time.Minute) }, []int{0, 1, 2, 3, 4}},
		{"bulk unlock: front, in lock order", func(t *testing.T, e *env) {
			e.c.do(OpUnlockRequests, "POST", "/v2/request-queues/"+e.q+"/requests/unlock?clientKey=a", nil)
		}, []int{0, 1, 2, 3, 4}},
		{"prolonged without forefront, then expired: back", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[0], "/lock", "lockSecs=10&clientKey=a"), nil), 200)
			e.clock.Advance(10 * time.Second)
		}, []int{2, 3, 4, 0}},
		{"prolonged with forefront, then expired: front", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[1], "/lock", "lockSecs=10&clientKey=a&forefront=true"), nil), 200)
			e.clock.Advance(10 * time.Second)
		}, []int{1, 2, 3, 4}},
		{"lock deleted without forefront: back", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpDeleteRequestLock, "DELETE", reqPath(e.q, e.ids[0], "/lock", "clientKey=a"), nil), 204)
		}, []int{2, 3, 4, 0}},
		{"lock deleted with forefront: front", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpDeleteRequestLock, "DELETE", reqPath(e.q, e.ids[1], "/lock", "clientKey=a&forefront=true"), nil), 204)
		}, []int{1, 2, 3, 4}},
		{"handled: nowhere", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", "clientKey=a"), handledBody("u0")), 200)
			e.clock.Advance(time.Hour)
		}, []int{1, 2, 3, 4}},
		{"locked request updated without handledAt: keeps its lock", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", "clientKey=a&forefront=true"),
				map[string]any{"uniqueKey": "u0", "url": "https://example.com/0", "retryCount": 1}), 200)
		}, []int{2, 3, 4}},
		{"pending request updated: back", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[2], "", ""),
				map[string]any{"uniqueKey": "u2", "url": "https://example.com/2", "retryCount": 1}), 200)
		}, []int{3, 4, 2}},
		{"pending request updated with forefront: front", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[4], "", "forefront=true"),
				map[string]any{"uniqueKey": "u4", "url": "https://example.com/4"}), 200)
		}, []int{4, 2, 3}},
		{"handled request un-handled: back", func(t *testing.T, e *env) {
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", "clientKey=a"), handledBody("u0")), 200)
			expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", ""),
				map[string]any{"uniqueKey": "u0", "url": "https://example.com/0", "handledAt": nil}), 200)
		}, []int{2, 3, 4, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clock, q, ids := newQueue(t, 5)
			e := &env{s: s, clock: clock, q: q, ids: ids, c: raw(t, s)}
			e.lock(t, "a", 2)
			tc.act(t, e)
			want := make([]string, len(tc.want))
			for i, k := range tc.want {
				want[i] = ids[k]
			}
			equalIDs(t, idsOf(s.Pending(q)), want, "pending order")
		})
	}
}

func TestHandlingReleasesTheLock(t *testing.T) {
	e := newEnv(t)
	e.lock(t, "a", 1)
	expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", "clientKey=a"), handledBody("u0")), 200)
	if n := len(e.s.Locked(e.q)); n != 0 {
		t.Errorf("%d locks after handling, want 0", n)
	}
	r := e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[0], "/lock", "lockSecs=60&clientKey=a"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "already handled")
	r = e.c.do(OpDeleteRequestLock, "DELETE", reqPath(e.q, e.ids[0], "/lock", "clientKey=a"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "already handled")
	n, err := e.s.Client().RequestQueue(e.q).UnlockRequests(context.Background(), "a")
	if err != nil || n.UnlockedCount != 0 {
		t.Errorf("unlock after handling: %v, %v", n, err)
	}
	// Anyone may handle a request nobody holds.
	expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[1], "", ""), handledBody("u1")), 200)
	q := e.c.do(OpGetQueue, "GET", "/v2/request-queues/"+e.q, nil).data(t)
	if q["handledRequestCount"].(interface{ String() string }).String() != "2" || q["pendingRequestCount"].(interface{ String() string }).String() != "1" {
		t.Errorf("queue = %v", q)
	}
}

func TestUnlockReleasesExactlyTheCallersLocks(t *testing.T) {
	s, _, q, ids := newQueue(t, 6)
	e := &env{s: s, q: q, ids: ids, c: raw(t, s)}
	e.lock(t, "me", 2)    // u0 u1
	e.lock(t, "other", 1) // u2
	e.lock(t, "me", 1)    // u3
	client := s.Client()
	res, err := client.RequestQueue(q).UnlockRequests(context.Background(), "me")
	if err != nil {
		t.Fatal(err)
	}
	if res.UnlockedCount != 3 {
		t.Errorf("UnlockedCount = %d, want 3", res.UnlockedCount)
	}
	equalIDs(t, idsOf(s.LockedBy(q, "other")), ids[2:3], "other's locks")
	if n := len(s.LockedBy(q, "me")); n != 0 {
		t.Errorf("me still holds %d locks", n)
	}
	equalIDs(t, idsOf(s.Pending(q)), []string{ids[0], ids[1], ids[3], ids[4], ids[5]}, "pending")
	// Unlocking again is harmless and counts nothing.
	res, err = client.RequestQueue(q).UnlockRequests(context.Background(), "me")
	if err != nil || res.UnlockedCount != 0 {
		t.Errorf("second unlock: %+v, %v", res, err)
	}
	// By name too.
	res, err = client.RequestQueue("~q").UnlockRequests(context.Background(), "other")
	if err != nil || res.UnlockedCount != 1 {
		t.Errorf("unlock by ~q: %+v, %v", res, err)
	}
}

func TestUnlockThroughTheSDKReportsAPIErrors(t *testing.T) {
	s := Start(t)
	client := s.Client(apify.WithMaxRetries(0))
	_, err := client.RequestQueue("no-such-queue").UnlockRequests(context.Background(), "k")
	var apiErr *apify.APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, apify.ErrNotFound) || apiErr.Type != "record-not-found" {
		t.Errorf("err = %v", err)
	}
	_, err = client.RequestQueue("~nope").UnlockRequests(context.Background(), "")
	if !errors.Is(err, apify.ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

func TestRunTokens(t *testing.T) {
	s, _, q, ids := newQueue(t, 6, WithToken("plain"), WithRunToken("run1-token", "RUN1"), WithRunToken("run2-token", "RUN2"))
	plain := raw(t, s).withToken("plain")
	run1 := raw(t, s).withToken("run1-token")
	run2 := raw(t, s).withToken("run2-token")
	lockWith := func(c *rawClient, clientKey string) {
		t.Helper()
		expectStatus(t, c.do(OpListAndLockHead, "POST", headLock(q, 60, 1, clientKey), nil), 201)
	}
	lockWith(run1, "a")  // u0: RUN1 and a
	lockWith(run1, "b")  // u1: RUN1 and b
	lockWith(run1, "")   // u2: RUN1 only
	lockWith(plain, "a") // u3: a, outside a run
	lockWith(run2, "c")  // u4: RUN2 and c
	st, _ := s.Request(q, ids[2])
	if st.Lock == nil || st.Lock.RunID != "RUN1" || st.Lock.ClientKey != "" {
		t.Fatalf("u2's lock = %+v", st.Lock)
	}
	equalIDs(t, idsOf(s.LockedByRun(q, "RUN1")), ids[:3], "LockedByRun")

	// Inside the run, a caller holds the run's locks whatever its clientKey.
	expectStatus(t, run1.do(OpProlongRequestLock, "PUT", reqPath(q, ids[1], "/lock", "lockSecs=60"), nil), 200)
	expectStatus(t, run1.do(OpProlongRequestLock, "PUT", reqPath(q, ids[2], "/lock", "lockSecs=60&clientKey=zzz"), nil), 200)
	// Outside it, the clientKey alone decides.
	expectStatus(t, plain.do(OpProlongRequestLock, "PUT", reqPath(q, ids[0], "/lock", "lockSecs=60&clientKey=a"), nil), 200)
	expectError(t, plain.do(OpProlongRequestLock, "PUT", reqPath(q, ids[1], "/lock", "lockSecs=60&clientKey=a"), nil), 403, "request-handled-or-locked")
	expectError(t, run2.do(OpProlongRequestLock, "PUT", reqPath(q, ids[2], "/lock", "lockSecs=60"), nil), 403, "request-handled-or-locked")

	// Unlock inside RUN1 with clientKey a: the run's locks plus a's.
	res, err := s.Client(apify.WithToken("run1-token")).RequestQueue(q).UnlockRequests(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if res.UnlockedCount != 4 {
		t.Errorf("UnlockedCount = %d, want 4 (u0 u1 u2 of the run, u3 of clientKey a)", res.UnlockedCount)
	}
	equalIDs(t, idsOf(s.Locked(q)), ids[4:5], "locks left")

	// Inside RUN2 without a clientKey: the run's locks.
	res, err = s.Client(apify.WithToken("run2-token")).RequestQueue(q).UnlockRequests(context.Background(), "")
	if err != nil || res.UnlockedCount != 1 {
		t.Errorf("RUN2 unlock: %+v, %v", res, err)
	}
}

func TestLockTakenWithoutClientKeyHasNoHolder(t *testing.T) {
	e := newEnv(t)
	r := e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, ""), nil)
	expectStatus(t, r, 201)
	r = e.c.do(OpProlongRequestLock, "PUT", reqPath(e.q, e.ids[0], "/lock", "lockSecs=60"), nil)
	expectError(t, r, 403, "request-handled-or-locked", "sent no clientKey", "pass a clientKey")
	r = e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", ""), handledBody("u0"))
	expectError(t, r, 403, "request-handled-or-locked", "mark as handled", "sent no clientKey")
	r = e.c.do(OpUnlockRequests, "POST", "/v2/request-queues/"+e.q+"/requests/unlock", nil)
	if r.data(t)["unlockedCount"].(interface{ String() string }).String() != "0" {
		t.Errorf("unlock without clientKey: %s", r.Raw)
	}
	e.clock.Advance(time.Minute)
	expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, e.ids[0], "", ""), handledBody("u0")), 200)
}

// hadMultipleClients counts the clientKeys of the calls that take one; a
// call that changes the queue without a clientKey is a new client (as
// Apify documents), seeding before the first keyed call included, but a
// read without one (GET head, the list) is no client at all.
func TestHadMultipleClients(t *testing.T) {
	cases := []struct {
		calls []string // "op:clientKey": lock (head/lock), add, head (GET head), list (GET requests)
		want  bool
	}{
		{[]string{"lock:a"}, false},
		{[]string{"lock:a", "lock:a", "add:a", "head:a", "list:a"}, false},
		{[]string{"lock:a", "lock:b"}, true},
		{[]string{"lock:a", "add:"}, true},
		{[]string{"lock:"}, false},
		{[]string{"lock:", "lock:"}, true},
		{[]string{"add:", "lock:a"}, true},                     // keyless seeding is another client
		{[]string{"lock:a", "head:", "list:", "head:"}, false}, // keyless reads are no client
		{[]string{"head:", "list:", "lock:a"}, false},
		{[]string{"lock:a", "head:b"}, true}, // a read with another key is another client
		{[]string{"list:b", "lock:a"}, true},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.calls, ","), func(t *testing.T) {
			e := newEnv(t)
			for i, call := range tc.calls {
				op, k, _ := strings.Cut(call, ":")
				key := ""
				if k != "" {
					key = "clientKey=" + k
				}
				switch op {
				case "lock":
					expectStatus(t, e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, k), nil), 201)
				case "add":
					expectStatus(t, e.c.do(OpAddRequest, "POST", "/v2/request-queues/"+e.q+"/requests?"+key,
						map[string]any{"url": "https://x.test/n" + itoa(i), "uniqueKey": "n" + itoa(i)}), 201)
				case "head":
					expectStatus(t, e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head?"+key, nil), 200)
				case "list":
					expectStatus(t, e.c.do(OpListRequests, "GET", "/v2/request-queues/"+e.q+"/requests?"+key, nil), 200)
				}
			}
			// Reading the queue object does not count as a client.
			e.c.do(OpGetQueue, "GET", "/v2/request-queues/"+e.q, nil)
			got := e.c.do(OpGetQueue, "GET", "/v2/request-queues/"+e.q, nil).data(t)["hadMultipleClients"]
			if got != tc.want {
				t.Errorf("queue says hadMultipleClients %v, want %v", got, tc.want)
			}
			// GET head reports the same (a keyless one, which does not change it).
			if got := e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head", nil).data(t)["hadMultipleClients"]; got != tc.want {
				t.Errorf("head says hadMultipleClients %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQueueHasLockedRequests(t *testing.T) {
	e := newEnv(t)
	r := e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 3, "a"), nil)
	if r.data(t)["queueHasLockedRequests"] != true {
		t.Errorf("after locking: %s", r.Raw)
	}
	for i, id := range e.ids {
		expectStatus(t, e.c.do(OpUpdateRequest, "PUT", reqPath(e.q, id, "", "clientKey=a"), handledBody("u"+itoa(i))), 200)
	}
	r = e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 3, "a"), nil)
	if r.data(t)["queueHasLockedRequests"] != false || len(r.items(t)) != 0 {
		t.Errorf("after handling everything: %s", r.Raw)
	}
}

func TestQueueModifiedAtMovesWithChanges(t *testing.T) {
	e := newEnv(t)
	e.clock.Advance(time.Second)
	r := e.c.do(OpGetHead, "GET", "/v2/request-queues/"+e.q+"/head", nil)
	if got := r.data(t)["queueModifiedAt"]; got != "2026-03-14T15:09:26.000Z" {
		t.Errorf("a read changed queueModifiedAt to %v", got)
	}
	r = e.c.do(OpListAndLockHead, "POST", headLock(e.q, 60, 1, "a"), nil)
	if got := r.data(t)["queueModifiedAt"]; got != "2026-03-14T15:09:27.000Z" {
		t.Errorf("locking left queueModifiedAt at %v", got)
	}
	if http.StatusCreated != r.Status {
		t.Errorf("status %d", r.Status)
	}
}
