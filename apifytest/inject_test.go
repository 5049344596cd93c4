package apifytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rqkit/apify"
	"go.uber.org/goleak"
)

// The faults that slow a call down, hold it for ever, or lose its answer,
// and the ways to aim them (RequestID, Every, InjectFault), seen through
// the SDK: in memory inside a synctest bubble, where the emulator's timers
// run on fake time, and over loopback.

// faultQueue makes a queue holding n requests (u0, u1, ...) and returns its
// ID and the requests' IDs.
func faultQueue(s *Server, n int) (string, []string) {
	q := s.CreateQueue("")
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{URL: "https://example.com/" + itoa(i), UniqueKey: "u" + itoa(i)}
	}
	return q, s.AddRequests(q, reqs...)
}

// lockHead locks n requests of q for key through the SDK.
func lockHead(t *testing.T, c *apify.Client, q, key string, n int) *apify.LockedHead {
	t.Helper()
	head, err := c.RequestQueue(q).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: n, LockDuration: time.Minute, ClientKey: key})
	if err != nil {
		t.Fatalf("head/lock: %v", err)
	}
	if len(head.Items) != n {
		t.Fatalf("head/lock locked %d requests, want %d", len(head.Items), n)
	}
	return head
}

// waitUnheld waits (in real time, up to 5 s) until no call is held by a
// Delay or a Hang: the handlers holding them have returned.
func waitUnheld(t *testing.T, s *Server) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.faults.held.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still held 5 s after their callers gave up", s.faults.held.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// ServeAfterCallerGone: the caller gives up during the Delay, and the call
// is carried out when the delay ends anyway (a lock delete that lands after
// the client moved on). Without it the same call is never served.
func TestFaultServeAfterCallerGone(t *testing.T) {
	for _, ghost := range []bool{true, false} {
		t.Run(fmt.Sprintf("ServeAfterCallerGone=%v", ghost), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewUnstartedServer()
				q, ids := faultQueue(s, 1)
				c := s.Client(apify.WithMaxRetries(0))
				lockHead(t, c, q, "k", 1)
				s.FailNext(OpDeleteRequestLock, 1, Fault{Delay: 5 * time.Second, ServeAfterCallerGone: ghost})
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				start := time.Now()
				err := c.RequestQueue(q).DeleteRequestLock(ctx, ids[0], apify.DeleteLockOptions{ClientKey: "k"})
				if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
					t.Errorf("after %v: %v, want the 1s deadline", time.Since(start), err)
				}
				time.Sleep(3 * time.Second)
				if st, _ := s.Request(q, ids[0]); st.Lock == nil {
					t.Error("the lock was deleted before the delay ended")
				}
				time.Sleep(2 * time.Second)
				synctest.Wait()
				st, _ := s.Request(q, ids[0])
				if deleted := st.Lock == nil; deleted != ghost {
					t.Errorf("lock deleted when the delay ended: %v, want %v", deleted, ghost)
				}
				if n := s.faults.held.Load(); n != 0 {
					t.Errorf("%d calls still held", n)
				}
			})
		})
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "needs a Delay") {
			t.Errorf("ServeAfterCallerGone without a Delay: panic %v", p)
		}
	}()
	NewUnstartedServer().InjectFault(OpDeleteRequestLock, Fault{ServeAfterCallerGone: true, DropResponse: true})
}

func TestFaultDelay(t *testing.T) {
	t.Run("in memory: held, then served with the clock read after the delay", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 2)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpListAndLockHead, 1, Fault{Delay: 5 * time.Second})
			start := time.Now()
			head := lockHead(t, c, q, "k", 1)
			if d := time.Since(start); d != 5*time.Second {
				t.Errorf("the call took %v, want the 5s delay", d)
			}
			want := start.Add(5*time.Second + time.Minute)
			if got := head.Items[0].LockExpiresAt; !got.Equal(want) {
				t.Errorf("lockExpiresAt = %v, want %v: a minute from the end of the delay", got, want)
			}
			if st, _ := s.Request(q, ids[0]); st.Lock == nil || !st.Lock.ExpiresAt.Equal(want) {
				t.Errorf("the lock = %+v, want one expiring at %v", st.Lock, want)
			}
			if n := s.Calls(OpListAndLockHead); n != 1 {
				t.Errorf("Calls = %d, want 1", n)
			}
			// The next call is not delayed.
			start = time.Now()
			lockHead(t, c, q, "k", 1)
			if d := time.Since(start); d != 0 {
				t.Errorf("the next call took %v", d)
			}
		})
	})

	t.Run("in memory: a caller that gives up ends the delay, and nothing is done", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, _ := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpListAndLockHead, 1, Fault{Delay: time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue(q).ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 1, ClientKey: "k"})
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
				t.Errorf("after %v: %v, want the 1s deadline", time.Since(start), err)
			}
			synctest.Wait() // the server's side notices the caller gone on its own
			if n := s.faults.held.Load(); n != 0 {
				t.Errorf("%d calls still held", n)
			}
			time.Sleep(2 * time.Hour) // were the call still held, it would lock now
			if n := len(s.Locked(q)); n != 0 {
				t.Errorf("the call the caller gave up locked %d requests", n)
			}
			if n := s.Calls(OpListAndLockHead); n != 1 {
				t.Errorf("Calls = %d, want 1", n)
			}
		})
	})

	t.Run("in memory: a delay, then the fault's status", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpGetRequest, 1, Fault{Delay: 2 * time.Second, Status: 503, RetryAfter: "1"})
			start := time.Now()
			_, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
			var apiErr *apify.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.RetryAfter != time.Second {
				t.Errorf("err = %v, want the injected 503", err)
			}
			if d := time.Since(start); d != 2*time.Second {
				t.Errorf("the call took %v, want 2s", d)
			}
		})
	})

	t.Run("over loopback", func(t *testing.T) {
		s := Start(t)
		q, _ := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		const delay = 100 * time.Millisecond
		s.FailNext(OpListAndLockHead, 1, Fault{Delay: delay})
		start := time.Now()
		head := lockHead(t, c, q, "k", 1)
		end := time.Now()
		if d := end.Sub(start); d < delay {
			t.Errorf("the call took %v, less than its %v delay", d, delay)
		}
		exp := head.Items[0].LockExpiresAt
		if earliest := start.Add(delay + time.Minute).Truncate(time.Millisecond); exp.Before(earliest) || exp.After(end.Add(time.Minute)) {
			t.Errorf("lockExpiresAt = %v, want a minute from the end of the delay (%v to %v)", exp, earliest, end.Add(time.Minute))
		}
	})

	t.Run("over loopback: a caller that gives up ends the delay", func(t *testing.T) {
		s := Start(t)
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		s.FailNext(OpUpdateRequest, 1, Fault{Delay: time.Hour}) // a call with a body
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := c.RequestQueue(q).UpdateRequest(ctx, apify.Request{ID: ids[0], UniqueKey: "u0", URL: "https://changed.test/"}, apify.RequestOptions{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the deadline", err)
		}
		waitUnheld(t, s)
		if st, _ := s.Request(q, ids[0]); st.URL != "https://example.com/0" {
			t.Errorf("the call the caller gave up changed the request: %+v", st)
		}
	})
}

func TestFaultHang(t *testing.T) {
	t.Run("in memory: never answered until the caller gives up", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			lockHead(t, c, q, "k", 1)
			before, _ := s.Request(q, ids[0])
			s.FailNext(OpProlongRequestLock, 1, Fault{Hang: true})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue(q).ProlongRequestLock(ctx, ids[0], apify.ProlongLockOptions{ClientKey: "k", LockDuration: time.Hour})
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 10*time.Second {
				t.Errorf("after %v: %v, want the 10s deadline", time.Since(start), err)
			}
			synctest.Wait() // the server's side notices the caller gone on its own
			if n := s.faults.held.Load(); n != 0 {
				t.Errorf("%d calls still held", n)
			}
			if after, _ := s.Request(q, ids[0]); after.Lock == nil || !after.Lock.ExpiresAt.Equal(before.Lock.ExpiresAt) {
				t.Errorf("the hung prolong changed the lock: %+v, was %+v", after.Lock, before.Lock)
			}
		})
	})

	t.Run("in memory: the SDK's attempt timeout ends each hung attempt, and it retries", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithTimeout(time.Second), apify.WithRetryWait(time.Second, time.Second))
			s.FailNext(OpGetRequest, 2, Fault{Hang: true})
			start := time.Now()
			r, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
			if err != nil || r.UniqueKey != "u0" {
				t.Fatalf("%+v, %v", r, err)
			}
			if d := time.Since(start); d != 4*time.Second {
				t.Errorf("took %v, want two 1s attempts and two 1s waits", d)
			}
			if n := s.Calls(OpGetRequest); n != 3 {
				t.Errorf("Calls = %d, want 3 (two hung, one answered)", n)
			}
		})
	})

	t.Run("over loopback: released when the caller gives up, no goroutine left", func(t *testing.T) {
		before := goleak.IgnoreCurrent()
		s := NewServer()
		defer s.Close()
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		s.FailNext(OpUpdateRequest, 1, Fault{Hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := c.RequestQueue(q).UpdateRequest(ctx, apify.Request{ID: ids[0], UniqueKey: "u0", URL: "https://changed.test/"}, apify.RequestOptions{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the deadline", err)
		}
		waitUnheld(t, s) // the handler noticed the closed connection and returned
		if st, _ := s.Request(q, ids[0]); st.URL != "https://example.com/0" {
			t.Errorf("the hung call changed the request: %+v", st)
		}
		c.CloseIdleConnections()
		s.Close()
		goleak.VerifyNone(t, before)
	})

	t.Run("over loopback: Close drops the hung call at once", func(t *testing.T) {
		s := NewServer()
		defer s.Close()
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		s.FailNext(OpGetRequest, 1, Fault{Hang: true})
		done := make(chan error, 1)
		go func() {
			_, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
			done <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); s.faults.held.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the call was not held within 5 s")
			}
		}
		start := time.Now()
		s.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Close took %v: it waited for the hung call", d)
		}
		select {
		case err := <-done:
			if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "connection") {
				t.Errorf("err = %v, want a dropped connection", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the hung call did not return after Close")
		}
		// The handler lets go of the call as the client sees the dropped
		// connection, or a moment after: wait for it, boundedly.
		for deadline := time.Now().Add(5 * time.Second); s.faults.held.Load() != 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls still held 5 s after Close", s.faults.held.Load())
			}
		}
	})

	t.Run("in memory: Close drops the hung call", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpGetRequest, 1, Fault{Hang: true})
			done := make(chan error, 1)
			go func() {
				_, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
				done <- err
			}()
			synctest.Wait() // the call is held
			s.Close()
			if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want a dropped connection (io.ErrUnexpectedEOF)", err)
			}
		})
	})
}

func TestFaultDropResponse(t *testing.T) {
	// A lost delete-lock answer: the lock is gone, and the SDK's retry
	// finds it gone (403), or, without retries, the caller sees a
	// connection closed before the response.
	deleteLock := func(t *testing.T, s *Server, c *apify.Client, q, id string, retries int) {
		t.Helper()
		lockHead(t, c, q, "k", 1)
		s.FailNext(OpDeleteRequestLock, 1, Fault{DropResponse: true})
		err := c.RequestQueue(q).DeleteRequestLock(context.Background(), id, apify.DeleteLockOptions{ClientKey: "k"})
		if st, _ := s.Request(q, id); st.Lock != nil {
			t.Errorf("the lock is still there: %+v", st.Lock)
		}
		var apiErr *apify.APIError
		switch {
		case retries > 0 && (!errors.As(err, &apiErr) || apiErr.StatusCode != 403 || apiErr.Attempts != 2 ||
			!strings.Contains(apiErr.Message, "not locked")):
			t.Errorf("err = %v, want the retry's 403: not locked", err)
		case retries == 0 && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF):
			t.Errorf("err = %v, want a connection closed before the response", err)
		}
		if n := s.Calls(OpDeleteRequestLock); n != retries+1 {
			t.Errorf("Calls = %d, want %d", n, retries+1)
		}
	}

	t.Run("in memory: the work is done, the retry sees it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			deleteLock(t, s, s.Client(), q, ids[0], 1)
		})
	})

	t.Run("in memory: without retries, a connection closed before the response", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			deleteLock(t, s, s.Client(apify.WithMaxRetries(0)), q, ids[0], 0)
		})
	})

	t.Run("over loopback: the work is done, the retry sees it", func(t *testing.T) {
		s := Start(t)
		q, ids := faultQueue(s, 1)
		c := s.Client()
		defer c.CloseIdleConnections()
		deleteLock(t, s, c, q, ids[0], 1)
	})

	t.Run("over loopback: without retries, a connection closed before the response", func(t *testing.T) {
		s := Start(t)
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		deleteLock(t, s, c, q, ids[0], 0)
	})

	t.Run("in memory: a lost add answer, retried: already present", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q := s.CreateQueue("")
			s.FailNext(OpAddRequest, 1, Fault{DropResponse: true, Delay: time.Second})
			start := time.Now()
			reg, err := s.Client().RequestQueue(q).AddRequest(context.Background(), apify.Request{URL: "https://a.test/", UniqueKey: "a"}, apify.RequestOptions{})
			if err != nil || !reg.WasAlreadyPresent {
				t.Errorf("%+v, %v: want the retry to find the request the lost call added", reg, err)
			}
			if len(s.Requests(q)) != 1 || time.Since(start) < time.Second {
				t.Errorf("%d requests after %v", len(s.Requests(q)), time.Since(start))
			}
		})
	})
}

func TestFaultResponseDelay(t *testing.T) {
	t.Run("in memory: served at once, the answer held back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 2)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpListAndLockHead, 1, Fault{ResponseDelay: 5 * time.Second})
			start := time.Now()
			type result struct {
				head *apify.LockedHead
				err  error
			}
			done := make(chan result, 1)
			go func() {
				head, err := c.RequestQueue(q).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: "k"})
				done <- result{head, err}
			}()
			synctest.Wait() // served; the answer is on hold
			want := start.Add(time.Minute)
			if st, _ := s.Request(q, ids[0]); st.Lock == nil || !st.Lock.ExpiresAt.Equal(want) {
				t.Errorf("before the answer, the lock = %+v, want one taken on arrival, expiring at %v", st.Lock, want)
			}
			if n := s.faults.held.Load(); n != 1 {
				t.Errorf("%d calls held, want 1", n)
			}
			r := <-done
			if r.err != nil || len(r.head.Items) != 1 || r.head.Items[0].ID != ids[0] {
				t.Fatalf("%+v, %v", r.head, r.err)
			}
			if d := time.Since(start); d != 5*time.Second {
				t.Errorf("the answer came after %v, want the 5s delay", d)
			}
			if got := r.head.Items[0].LockExpiresAt; !got.Equal(want) {
				t.Errorf("lockExpiresAt = %v, want %v: counted from the call's arrival, not its answer", got, want)
			}
			start = time.Now()
			lockHead(t, c, q, "k", 1)
			if d := time.Since(start); d != 0 {
				t.Errorf("the next call took %v", d)
			}
			if n, f := s.Calls(OpListAndLockHead), s.Faulted(OpListAndLockHead); n != 2 || f != 1 {
				t.Errorf("Calls = %d, Faulted = %d, want 2 and 1", n, f)
			}
		})
	})

	t.Run("in memory: a caller that gives up loses the answer, the work is done", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpUpdateRequest, 1, Fault{ResponseDelay: time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.RequestQueue(q).UpdateRequest(ctx, apify.Request{ID: ids[0], UniqueKey: "u0", URL: "https://changed.test/"}, apify.RequestOptions{})
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
				t.Errorf("after %v: %v, want the 1s deadline", time.Since(start), err)
			}
			synctest.Wait() // the server's side notices the caller gone on its own
			if n := s.faults.held.Load(); n != 0 {
				t.Errorf("%d calls still held", n)
			}
			if st, _ := s.Request(q, ids[0]); st.URL != "https://changed.test/" {
				t.Errorf("the request = %+v: the update was not made", st)
			}
		})
	})

	t.Run("in memory: after a Delay, and then lost (DropResponse)", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpListAndLockHead, 1, Fault{Delay: 2 * time.Second, ResponseDelay: 3 * time.Second, DropResponse: true})
			start := time.Now()
			_, err := c.RequestQueue(q).ListAndLockHead(context.Background(), apify.LockHeadOptions{Limit: 1, LockDuration: time.Minute, ClientKey: "k"})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want a connection closed before the response", err)
			}
			if d := time.Since(start); d != 5*time.Second {
				t.Errorf("the connection dropped after %v, want 2s + 3s", d)
			}
			want := start.Add(2*time.Second + time.Minute)
			if st, _ := s.Request(q, ids[0]); st.Lock == nil || !st.Lock.ExpiresAt.Equal(want) {
				t.Errorf("the lock = %+v, want one taken after the Delay, expiring at %v", st.Lock, want)
			}
		})
	})

	t.Run("in memory: Close drops the held answer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpGetRequest, 1, Fault{ResponseDelay: time.Hour})
			done := make(chan error, 1)
			go func() {
				_, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
				done <- err
			}()
			synctest.Wait()
			s.Close()
			if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want a dropped connection (io.ErrUnexpectedEOF)", err)
			}
		})
	})

	t.Run("over loopback: served at once, the answer held back", func(t *testing.T) {
		s := Start(t)
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		const delay = 200 * time.Millisecond
		s.FailNext(OpListAndLockHead, 1, Fault{ResponseDelay: delay})
		start := time.Now()
		locked := make(chan time.Duration, 1)
		go func() { // when does the lock show up on the server?
			for {
				if len(s.Locked(q)) > 0 {
					locked <- time.Since(start)
					return
				}
				if time.Since(start) > 10*time.Second {
					locked <- -1
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		head := lockHead(t, c, q, "k", 1)
		end := time.Now()
		if d := end.Sub(start); d < delay {
			t.Errorf("the answer came after %v, before its %v delay", d, delay)
		}
		if d := <-locked; d < 0 || d >= delay {
			t.Errorf("the lock showed up after %v, want before the answer (%v)", d, delay)
		}
		exp := head.Items[0].LockExpiresAt
		if latest := end.Add(time.Minute - delay); exp.Before(start.Add(time.Minute).Truncate(time.Millisecond)) || exp.After(latest) {
			t.Errorf("lockExpiresAt = %v, want a minute from the call's arrival (%v to %v)", exp, start.Add(time.Minute), latest)
		}
		if st, _ := s.Request(q, ids[0]); st.Lock == nil {
			t.Errorf("not locked")
		}
	})

	t.Run("over loopback: a caller that gives up ends the wait, no goroutine left", func(t *testing.T) {
		before := goleak.IgnoreCurrent()
		s := NewServer()
		defer s.Close()
		q, ids := faultQueue(s, 1)
		c := s.Client(apify.WithMaxRetries(0))
		defer c.CloseIdleConnections()
		s.FailNext(OpUpdateRequest, 1, Fault{ResponseDelay: time.Hour}) // a call with a body
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.RequestQueue(q).UpdateRequest(ctx, apify.Request{ID: ids[0], UniqueKey: "u0", URL: "https://changed.test/"}, apify.RequestOptions{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the deadline", err)
		}
		waitUnheld(t, s) // the handler noticed the closed connection and returned
		if st, _ := s.Request(q, ids[0]); st.URL != "https://changed.test/" {
			t.Errorf("the request = %+v: the update was not made", st)
		}
		c.CloseIdleConnections()
		s.Close()
		goleak.VerifyNone(t, before)
	})
}

func TestFaultTargets(t *testing.T) {
	t.Run("RequestID: only calls on that request match; others pass without using the fault", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 2)
			c := s.Client(apify.WithMaxRetries(0))
			lockHead(t, c, q, "k", 2)
			a, b := ids[0], ids[1]
			s.FailNext(OpProlongRequestLock, 1, Fault{Status: 500, RequestID: a})
			prolong := func(id string) error {
				_, err := c.RequestQueue(q).ProlongRequestLock(context.Background(), id, apify.ProlongLockOptions{ClientKey: "k"})
				return err
			}
			for i, step := range []struct {
				id      string
				wantErr bool
			}{{b, false}, {b, false}, {a, true}, {a, false}, {b, false}} {
				if err := prolong(step.id); (err != nil) != step.wantErr || (err != nil && !errors.Is(err, apify.ErrServerError)) {
					t.Errorf("call %d on %s: err = %v, want an error: %v", i+1, step.id, err, step.wantErr)
				}
			}
			if n := s.Calls(OpProlongRequestLock); n != 5 {
				t.Errorf("Calls = %d, want 5", n)
			}
		})
	})

	t.Run("Every, and InjectFault until removed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			get := func() error { _, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0]); return err }
			remove := s.InjectFault(OpGetRequest, Fault{Status: 503, Every: 3})
			var failed []int
			for i := 1; i <= 10; i++ {
				if err := get(); err != nil {
					failed = append(failed, i)
				}
			}
			if !equalInts(failed, []int{3, 6, 9}) {
				t.Errorf("failed calls %v, want every 3rd: [3 6 9]", failed)
			}
			remove()
			remove() // harmless
			for i := range 5 {
				if err := get(); err != nil {
					t.Errorf("call %d after remove: %v", i+1, err)
				}
			}
			if n, f := s.Calls(OpGetRequest), s.Faulted(OpGetRequest); n != 15 || f != 3 {
				t.Errorf("Calls = %d, Faulted = %d, want 15 and 3", n, f)
			}
		})
	})

	t.Run("FailNext with Every: n counts the faulted calls", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			s.FailNext(OpGetRequest, 2, Fault{Status: 500, Every: 2})
			var failed []int
			for i := 1; i <= 7; i++ {
				if _, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0]); err != nil {
					failed = append(failed, i)
				}
			}
			if !equalInts(failed, []int{2, 4}) {
				t.Errorf("failed calls %v, want [2 4]", failed)
			}
		})
	})

	t.Run("FailNext first, then InjectFault's in the order injected", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client(apify.WithMaxRetries(0))
			removeFirst := s.InjectFault(OpGetRequest, Fault{Status: 502, Every: 2})
			removeSecond := s.InjectFault(OpGetRequest, Fault{Status: 503})
			s.FailNext(OpGetRequest, 1, Fault{Status: 500})
			var got []int
			for range 5 {
				_, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0])
				var apiErr *apify.APIError
				if !errors.As(err, &apiErr) {
					t.Fatalf("err = %v", err)
				}
				got = append(got, apiErr.StatusCode)
			}
			// FailNext's 500; then the first InjectFault sees calls 2 to 5
			// and takes every 2nd of them; the second takes the rest.
			if !equalInts(got, []int{500, 503, 502, 503, 502}) {
				t.Errorf("statuses %v", got)
			}
			removeFirst()
			removeSecond()
			if _, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0]); err != nil {
				t.Errorf("after both removed: %v", err)
			}
		})
	})

	t.Run("InjectFault with a Delay on every call: a slow API", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewUnstartedServer()
			q, ids := faultQueue(s, 1)
			c := s.Client()
			remove := s.InjectFault(OpGetRequest, Fault{Delay: 200 * time.Millisecond})
			start := time.Now()
			for range 3 {
				if _, err := c.RequestQueue(q).GetRequest(context.Background(), ids[0]); err != nil {
					t.Fatal(err)
				}
			}
			if d := time.Since(start); d != 600*time.Millisecond {
				t.Errorf("3 calls took %v, want 3 × 200ms", d)
			}
			remove()
		})
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		op   Operation
		f    Fault
		msg  string
	}{
		{"nothing", OpGetHead, Fault{}, "the Fault does nothing"},
		{"only a target", OpGetRequest, Fault{RequestID: "x", Every: 2}, "the Fault does nothing"},
		{"status 200", OpGetHead, Fault{Status: 200}, "Fault.Status 200 is not an error status"},
		{"negative delay", OpGetHead, Fault{Delay: -time.Second}, "Fault.Delay is -1s"},
		{"negative every", OpGetHead, Fault{Status: 500, Every: -2}, "Fault.Every is -2"},
		{"hang and a status", OpGetHead, Fault{Hang: true, Status: 500}, "Fault.Hang never answers"},
		{"hang and a delay", OpGetHead, Fault{Hang: true, Delay: time.Second}, "Fault.Hang never answers"},
		{"hang and a lost answer", OpGetHead, Fault{Hang: true, DropResponse: true}, "Fault.Hang never answers"},
		{"lost answer and a status", OpGetHead, Fault{DropResponse: true, Status: 503}, "Fault.DropResponse serves the call"},
		{"lost answer and a dropped connection", OpGetHead, Fault{DropResponse: true, DropConnection: true}, "Fault.DropResponse serves the call"},
		{"negative answer delay", OpGetHead, Fault{ResponseDelay: -time.Second}, "Fault.ResponseDelay is -1s"},
		{"answer delay and a status", OpGetHead, Fault{ResponseDelay: time.Second, Status: 503}, "Fault.ResponseDelay holds back the answer"},
		{"answer delay and a dropped connection", OpGetHead, Fault{ResponseDelay: time.Second, DropConnection: true}, "Fault.ResponseDelay holds back the answer"},
		{"hang and an answer delay", OpGetHead, Fault{Hang: true, ResponseDelay: time.Second}, "Fault.Hang never answers"},
		{"a RequestID on head", OpGetHead, Fault{Status: 500, RequestID: "x"}, "does not name a request"},
		{"unknown op", "requestQueue_teleport", Fault{Status: 500}, `unknown operation "requestQueue_teleport"`},
	}
	s := NewUnstartedServer()
	for _, tc := range cases {
		for _, fn := range []string{"FailNext", "InjectFault"} {
			t.Run(fn+": "+tc.name, func(t *testing.T) {
				defer func() {
					p, _ := recover().(string)
					if !strings.HasPrefix(p, "apifytest: "+fn+": ") || !strings.Contains(p, tc.msg) {
						t.Errorf("panic %q, want one from %s saying %q", p, fn, tc.msg)
					}
				}()
				if fn == "FailNext" {
					s.FailNext(tc.op, 1, tc.f)
				} else {
					s.InjectFault(tc.op, tc.f)
				}
			})
		}
	}
	// Faults that are fine.
	for _, f := range []Fault{
		{Delay: time.Second}, {Hang: true, RequestID: "x", Every: 3}, {DropResponse: true, Delay: time.Second},
		{Status: 503, Delay: time.Second}, {DropConnection: true, Delay: time.Second},
		{ResponseDelay: time.Second}, {ResponseDelay: time.Second, Delay: time.Second}, {ResponseDelay: time.Second, DropResponse: true},
	} {
		s.InjectFault(OpGetRequest, f)()
		s.FailNext(OpGetRequest, 1, f)
	}
}
