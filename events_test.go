package apify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// logBuffer collects a logger's text records, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// eventsServer starts an emulator that serves platform events, and makes
// reconnects quick: a 1-4 ms backoff, and a connection counts as healthy
// only after an hour, so every reconnect in these tests waits the backoff.
func eventsServer(t *testing.T, opts ...apifytest.Option) *apifytest.Server {
	t.Helper()
	apify.SetPlatformEventTimings(t, time.Millisecond, 4*time.Millisecond, time.Hour)
	return apifytest.Start(t, append([]apifytest.Option{apifytest.WithPlatformEvents()}, opts...)...)
}

// subscribe subscribes to url, closing the subscription when the test ends.
func subscribe(t *testing.T, url string, logger ...*slog.Logger) *apify.PlatformEvents {
	t.Helper()
	opts := apify.PlatformEventsOptions{URL: url}
	if len(logger) > 0 {
		opts.Logger = logger[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := apify.SubscribePlatformEvents(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// next returns the next event, failing the test after 5 s.
func next(t *testing.T, e *apify.PlatformEvents) apify.PlatformEvent {
	t.Helper()
	select {
	case ev, ok := <-e.C():
		require.True(t, ok, "the channel was closed")
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
		return apify.PlatformEvent{}
	}
}

// nothingWithin asserts that no event arrives within d.
func nothingWithin(t *testing.T, e *apify.PlatformEvents, d time.Duration) {
	t.Helper()
	select {
	case ev := <-e.C():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, time.Millisecond, what)
}

func TestPlatformEventsAreDeliveredParsed(t *testing.T) {
	clock := apifytest.NewManualClock(time.Date(2026, 3, 14, 15, 9, 26, 250e6, time.UTC))
	srv := eventsServer(t, apifytest.WithClock(clock))
	e := subscribe(t, srv.EventsURL())
	require.Equal(t, 1, srv.EventConnections(), "SubscribePlatformEvents returns once connected")

	require.NoError(t, srv.SendEvent("migrating", map[string]any{"timeRemainingSecs": 12.5}))
	ev := next(t, e)
	require.Equal(t, "migrating", ev.Name)
	require.Equal(t, 12500*time.Millisecond, ev.TimeRemaining)
	require.True(t, ev.CreatedAt.Equal(clock.Now()), "createdAt %v", ev.CreatedAt)
	require.JSONEq(t, `{"timeRemainingSecs":12.5}`, string(ev.Data))

	clock.Advance(time.Second)
	require.NoError(t, srv.SendEvent("persistState", map[string]bool{"isMigrating": true}))
	ev = next(t, e)
	require.Equal(t, apify.PlatformEvent{Name: "persistState", CreatedAt: clock.Now(), IsMigrating: true, Data: json.RawMessage(`{"isMigrating":true}`)}, ev)

	require.NoError(t, srv.SendEvent("aborting", nil))
	ev = next(t, e)
	require.Equal(t, "aborting", ev.Name)
	require.Nil(t, ev.Data, "aborting carries no data")
	require.Zero(t, ev.TimeRemaining)

	// An unknown event passes through untouched, its data byte for byte.
	raw := json.RawMessage(`{"b":[1,2.50,"x"],"a":{"nested":null}}`)
	require.NoError(t, srv.SendEvent("somethingNew", raw))
	ev = next(t, e)
	require.Equal(t, "somethingNew", ev.Name)
	require.Equal(t, string(raw), string(ev.Data))
	nothingWithin(t, e, 10*time.Millisecond)
}

func TestPlatformEventsReconnectAfterADrop(t *testing.T) {
	srv := eventsServer(t)
	var logs logBuffer
	e := subscribe(t, srv.EventsURL(), logs.logger())
	require.Equal(t, 1, srv.DropEventConnections())
	eventually(t, "a reconnect", func() bool { return srv.EventConnections() == 1 })
	require.Equal(t, 2, srv.EventConnectionAttempts())

	require.NoError(t, srv.SendEvent("migrating", map[string]any{"timeRemainingSecs": 5}))
	ev := next(t, e)
	require.Equal(t, "migrating", ev.Name)
	require.Equal(t, 5*time.Second, ev.TimeRemaining)
	require.Contains(t, logs.String(), "the connection dropped")
	require.NoError(t, e.Err())

	// A close that is not permanent (1001, 1011) reconnects too.
	for _, code := range []int{1001, 1011} {
		attempts := srv.EventConnectionAttempts()
		require.Equal(t, 1, srv.CloseEventConnections(code))
		eventually(t, "a reconnect", func() bool {
			return srv.EventConnections() == 1 && srv.EventConnectionAttempts() == attempts+1
		})
		require.NoError(t, srv.SendEvent("aborting", nil))
		require.Equal(t, "aborting", next(t, e).Name)
	}
}

func TestPlatformEventsHealthyConnectionReconnectsAtOnce(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithPlatformEvents())
	// A backoff of an hour: only the healthy rule can make it reconnect.
	apify.SetPlatformEventTimings(t, time.Hour, time.Hour, time.Millisecond)
	e := subscribe(t, srv.EventsURL())
	time.Sleep(5 * time.Millisecond) // up for longer than healthyAfter
	srv.DropEventConnections()
	eventually(t, "an immediate reconnect", func() bool { return srv.EventConnections() == 1 })
	require.NoError(t, srv.SendEvent("aborting", nil))
	require.Equal(t, "aborting", next(t, e).Name)
}

func TestPlatformEventsShortLivedConnectionWaitsTheBackoff(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithPlatformEvents())
	apify.SetPlatformEventTimings(t, time.Hour, time.Hour, time.Hour)
	subscribe(t, srv.EventsURL())
	srv.DropEventConnections()
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 1, srv.EventConnectionAttempts(), "reconnected without waiting the backoff")
}

func TestPlatformEventsNeverReconnectAfterAPermanentClose(t *testing.T) {
	for _, code := range []int{1008, 1002, 1003, 1007, 1010} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv := eventsServer(t)
			var logs logBuffer
			e := subscribe(t, srv.EventsURL(), logs.logger())
			require.Equal(t, 1, srv.CloseEventConnections(code))
			eventually(t, "the permanent failure", func() bool { return e.Err() != nil })
			require.Contains(t, e.Err().Error(), "code "+strconv.Itoa(code))
			// 50 ms is more than ten backoffs of at most 4 ms: a client that
			// reconnected would have by now.
			time.Sleep(50 * time.Millisecond)
			require.Equal(t, 1, srv.EventConnectionAttempts(), "reconnected after close code %d", code)
			require.Contains(t, logs.String(), "level=ERROR")

			// Another subscription in the process does not dial again either.
			again := subscribe(t, srv.EventsURL())
			require.Error(t, again.Err())
			require.Equal(t, 1, srv.EventConnectionAttempts())
			nothingWithin(t, again, 5*time.Millisecond)
		})
	}
}

func TestPlatformEventsSecondConnectionForTheRunIsRefused(t *testing.T) {
	srv := eventsServer(t)
	other := subscribe(t, srv.EventsURL()) // holds the run's one connection
	// Another process of the same run: a different URL string for the same
	// run, so it does not share the first one's connection.
	second := subscribe(t, srv.EventsURL()+"?second")
	eventually(t, "the 1008 close", func() bool { return second.Err() != nil })
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 2, srv.EventConnectionAttempts(), "no reconnect storm after 1008")
	require.NoError(t, other.Err())
	require.NoError(t, srv.SendEvent("aborting", nil))
	require.Equal(t, "aborting", next(t, other).Name)
}

func TestPlatformEventsSubscribersShareOneConnection(t *testing.T) {
	srv := eventsServer(t)
	a := subscribe(t, srv.EventsURL())
	b := subscribe(t, srv.EventsURL())
	c := subscribe(t, srv.EventsURL())
	require.Equal(t, 1, srv.EventConnectionAttempts())
	require.Equal(t, 1, srv.EventConnections())

	require.NoError(t, srv.SendEvent("systemInfo", map[string]any{"memCurrentBytes": 42}))
	for _, e := range []*apify.PlatformEvents{a, b, c} {
		ev := next(t, e)
		require.Equal(t, "systemInfo", ev.Name)
		require.JSONEq(t, `{"memCurrentBytes":42}`, string(ev.Data))
	}
	// Each subscriber has its own copy of Data.
	require.NoError(t, srv.SendEvent("x", map[string]int{"n": 1}))
	evA, evB := next(t, a), next(t, b)
	evA.Data[0] = '!'
	require.JSONEq(t, `{"n":1}`, string(evB.Data))
	next(t, c)

	// The connection outlives all but the last subscriber.
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	require.Equal(t, 1, srv.EventConnections())
	require.NoError(t, srv.SendEvent("aborting", nil))
	require.Equal(t, "aborting", next(t, c).Name)
	_, open := <-a.C()
	require.False(t, open, "Close closes the channel")

	require.NoError(t, c.Close())
	eventually(t, "the last Close to close the connection", func() bool { return srv.EventConnections() == 0 })

	// Subscribing afterwards dials anew.
	d := subscribe(t, srv.EventsURL())
	require.Equal(t, 2, srv.EventConnectionAttempts())
	require.NoError(t, srv.SendEvent("aborting", nil))
	require.Equal(t, "aborting", next(t, d).Name)
}

func TestPlatformEventsCloseStopsEverything(t *testing.T) {
	srv := eventsServer(t)
	ignore := goleak.IgnoreCurrent()
	e, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: srv.EventsURL()})
	require.NoError(t, err)
	f, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: srv.EventsURL()})
	require.NoError(t, err)
	require.NoError(t, srv.SendEvent("persistState", map[string]bool{"isMigrating": false})) // waits unread in both
	srv.DropEventConnections()                                                               // the hub is reconnecting
	var wg sync.WaitGroup
	for range 3 { // Close is idempotent and safe from several goroutines
		wg.Go(func() { assert.NoError(t, e.Close()) })
		wg.Go(func() { assert.NoError(t, f.Close()) })
	}
	wg.Wait()
	_, open := <-e.C()
	require.False(t, open)
	goleak.VerifyNone(t, ignore)
	eventually(t, "no connection", func() bool { return srv.EventConnections() == 0 })
}

func TestPlatformEventsOutsideApify(t *testing.T) {
	t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", "")
	t.Setenv("APIFY_ACTOR_EVENTS_WS_URL", "")
	ignore := goleak.IgnoreCurrent()
	e, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{})
	require.NoError(t, err)
	nothingWithin(t, e, 5*time.Millisecond)
	require.NoError(t, e.Err())
	require.NoError(t, e.Close())
	require.NoError(t, e.Close())
	_, open := <-e.C()
	require.False(t, open)
	goleak.VerifyNone(t, ignore)
}

func TestPlatformEventsURLFromTheEnvironment(t *testing.T) {
	current, older := eventsServer(t), eventsServer(t)
	t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", current.EventsURL())
	t.Setenv("APIFY_ACTOR_EVENTS_WS_URL", older.EventsURL())
	e := subscribe(t, "")
	require.Equal(t, 1, current.EventConnections())
	require.Equal(t, 0, older.EventConnectionAttempts(), "ACTOR_EVENTS_WEBSOCKET_URL wins")
	require.NoError(t, current.SendEvent("aborting", nil))
	require.Equal(t, "aborting", next(t, e).Name)
	require.NoError(t, e.Close())

	t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", "")
	subscribe(t, "")
	require.Equal(t, 1, older.EventConnections(), "the older variable when the current one is unset")
}

func TestSubscribePlatformEventsRefusesBadURLsBeforeIO(t *testing.T) {
	srv := eventsServer(t)
	httpURL := "http" + strings.TrimPrefix(srv.EventsURL(), "ws")
	for _, tc := range []struct{ url, env, want string }{
		{url: httpURL, want: "is not a ws:// or wss:// URL"},
		{url: "ws:///no-host", want: "has no host"},
		{url: "ws://h/%zz", want: "does not parse"},
		{env: httpURL + "?token=SECRET", want: "ACTOR_EVENTS_WEBSOCKET_URL"},
	} {
		t.Setenv("ACTOR_EVENTS_WEBSOCKET_URL", tc.env)
		_, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: tc.url})
		require.ErrorIs(t, err, apify.ErrInvalidInput, tc.url+tc.env)
		require.Contains(t, err.Error(), tc.want)
		require.NotContains(t, err.Error(), "SECRET")
	}
	var nilCtx context.Context // a nil ctx is refused, not dereferenced
	_, err := apify.SubscribePlatformEvents(nilCtx, apify.PlatformEventsOptions{URL: srv.EventsURL()})
	require.Error(t, err)
	require.Equal(t, 0, srv.EventConnectionAttempts(), "nothing was dialled")
}

func TestSubscribePlatformEventsCtxBoundsTheFirstAttempt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers the handshake
	require.NoError(t, err)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	e, err := apify.SubscribePlatformEvents(ctx, apify.PlatformEventsOptions{URL: "ws://" + ln.Addr().String() + "/events"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Nil(t, e)
	require.Less(t, time.Since(start), 2*time.Second)
	goleak.VerifyNone(t, ignore) // nothing left behind

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	_, err = apify.SubscribePlatformEvents(cancelled, apify.PlatformEventsOptions{URL: "ws://" + ln.Addr().String() + "/events"})
	require.ErrorIs(t, err, context.Canceled)
}

func TestSubscribePlatformEventsFirstDialFailsThenConnects(t *testing.T) {
	apify.SetPlatformEventTimings(t, time.Millisecond, 4*time.Millisecond, time.Hour)
	srv := apifytest.NewServer(apifytest.WithPlatformEvents())
	url := srv.EventsURL()
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nobody listens: the first attempt is refused

	var logs logBuffer
	e, err := apify.SubscribePlatformEvents(context.Background(), apify.PlatformEventsOptions{URL: url + "?token=SECRET", Logger: logs.logger()})
	require.NoError(t, err, "a failed first attempt is not an error")
	t.Cleanup(func() { _ = e.Close() })
	eventually(t, "a logged failure", func() bool { return strings.Contains(logs.String(), "cannot connect") })
	require.NotContains(t, logs.String(), "SECRET", "the URL's query never reaches a log record")

	// The emulator comes back on the same address: the subscription connects.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	back := apifytest.NewUnstartedServer(apifytest.WithPlatformEvents())
	hs := back.HTTPServer()
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close(); back.Close() })
	eventually(t, "the background reconnect", func() bool { return back.EventConnections() == 1 })
	require.NoError(t, back.SendEvent("migrating", map[string]any{"timeRemainingSecs": 1}))
	require.Equal(t, time.Second, next(t, e).TimeRemaining)
	require.NotContains(t, logs.String(), "SECRET")
}
