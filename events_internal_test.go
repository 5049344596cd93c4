package apify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

func TestParsePlatformEvent(t *testing.T) {
	at := time.Date(2026, 3, 14, 15, 9, 26, 123e6, time.UTC)
	for _, tc := range []struct {
		msg     string
		want    PlatformEvent
		wantErr string
	}{
		{msg: `{"name":"migrating","createdAt":"2026-03-14T15:09:26.123Z","data":{"timeRemainingSecs":7.25}}`,
			want: PlatformEvent{Name: "migrating", CreatedAt: at, TimeRemaining: 7250 * time.Millisecond, Data: json.RawMessage(`{"timeRemainingSecs":7.25}`)}},
		{msg: `{"name":"migrating","data":{"timeRemainingSecs":-3}}`,
			want: PlatformEvent{Name: "migrating", Data: json.RawMessage(`{"timeRemainingSecs":-3}`)}},
		{msg: `{"name":"migrating","data":{"timeRemainingSecs":"soon"}}`,
			want: PlatformEvent{Name: "migrating", Data: json.RawMessage(`{"timeRemainingSecs":"soon"}`)}},
		{msg: `{"name":"migrating","data":{"timeRemainingSecs":1e300}}`,
			want: PlatformEvent{Name: "migrating", TimeRemaining: 365 * 24 * time.Hour, Data: json.RawMessage(`{"timeRemainingSecs":1e300}`)}},
		{msg: `{"name":"migrating"}`, want: PlatformEvent{Name: "migrating"}},
		{msg: `{"name":"persistState","data":{"isMigrating":true}}`,
			want: PlatformEvent{Name: "persistState", IsMigrating: true, Data: json.RawMessage(`{"isMigrating":true}`)}},
		{msg: `{"name":"aborting","data":null,"createdAt":"yesterday"}`, want: PlatformEvent{Name: "aborting"}},
		{msg: `{"name":"aborting","createdAt":17}`, want: PlatformEvent{Name: "aborting"}},
		// Other names pass through, their data untouched.
		{msg: `{"name":"cpuInfo","data":{"isCpuOverloaded":true},"extra":1}`,
			want: PlatformEvent{Name: "cpuInfo", Data: json.RawMessage(`{"isCpuOverloaded":true}`)}},
		{msg: `{"name":"x","data":[1, 2]}`, want: PlatformEvent{Name: "x", Data: json.RawMessage(`[1, 2]`)}},
		{msg: `not json`, wantErr: "not a JSON event object"},
		{msg: `["migrating"]`, wantErr: "not a JSON event object"},
		{msg: `{"name":3}`, wantErr: "not a JSON event object"},
		{msg: `{"data":{}}`, wantErr: "no name"},
		{msg: `{"name":""}`, wantErr: "no name"},
	} {
		got, err := parsePlatformEvent([]byte(tc.msg))
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.msg)
			continue
		}
		require.NoError(t, err, tc.msg)
		require.Equal(t, tc.want, got, tc.msg)
	}
}

// TestSlowSubscriberKeepsLifecycleEvents fills the queue of a subscriber
// that does not read: systemInfo is coalesced to the newest, unknown events
// are dropped oldest first past the bound (with a Warn), and no migrating,
// aborting or persistState is ever dropped.
func TestSlowSubscriberKeepsLifecycleEvents(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	e := &PlatformEvents{
		ch: make(chan PlatformEvent), stop: make(chan struct{}), wake: make(chan struct{}, 1), fwd: make(chan struct{}),
		logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), nil)),
	}
	ev := func(name string, n int) PlatformEvent {
		return PlatformEvent{Name: name, Data: json.RawMessage(fmt.Sprint(n))}
	}
	e.enqueue(ev("persistState", 0))
	for i := range 1000 {
		e.enqueue(ev("systemInfo", i))
		e.enqueue(ev("other", i))
		if i == 500 {
			e.enqueue(ev("migrating", i))
		}
	}
	e.enqueue(ev("aborting", 0))

	go e.forward()
	var got []PlatformEvent
	for len(got) < maxQueuedEvents {
		select {
		case x := <-e.C():
			got = append(got, x)
		case <-time.After(time.Second):
			t.Fatalf("only %d events delivered", len(got))
		}
	}
	select {
	case x := <-e.C():
		t.Fatalf("more than %d events waited: %+v", maxQueuedEvents, x)
	case <-time.After(10 * time.Millisecond):
	}
	require.NoError(t, e.Close())

	count := map[string]int{}
	for _, x := range got {
		count[x.Name]++
	}
	const others = maxQueuedEvents - 4
	require.Equal(t, map[string]int{"persistState": 1, "migrating": 1, "aborting": 1, "systemInfo": 1, "other": others}, count)
	require.Equal(t, "persistState", got[0].Name, "order is kept")
	require.Equal(t, "aborting", got[len(got)-1].Name)
	require.Equal(t, PlatformEvent{Name: "systemInfo", Data: json.RawMessage("999")}, got[len(got)-3], "only the newest systemInfo waits")
	// The "other" events kept are the newest, in order.
	var kept []string
	for _, x := range got {
		if x.Name == "other" {
			kept = append(kept, string(x.Data))
		}
	}
	require.Equal(t, fmt.Sprint(1000-others), kept[0])
	require.Equal(t, "999", kept[len(kept)-1])
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, logs.String(), "dropped an event nobody read")
	require.Contains(t, logs.String(), "event=other")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestUnansweredPingsDropTheConnection: a server that stops answering
// (it never reads, so it never answers a ping) is dropped and dialled
// again, instead of leaving the subscriber waiting forever.
func TestUnansweredPingsDropTheConnection(t *testing.T) {
	eventsMu.Lock()
	old := eventsTimings
	eventsTimings.pingEvery, eventsTimings.pingTimeout = 5*time.Millisecond, 20*time.Millisecond
	eventsTimings.backoffMin, eventsTimings.backoffMax = time.Millisecond, time.Millisecond
	eventsMu.Unlock()
	t.Cleanup(func() {
		eventsMu.Lock()
		eventsTimings = old
		eventsMu.Unlock()
	})

	var accepted atomic.Int32
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted.Add(1)
		select { // never reads: pings go unanswered
		case <-stop:
		case <-time.After(10 * time.Second):
		}
		_ = c.CloseNow()
	}))
	t.Cleanup(srv.Close)
	e, err := SubscribePlatformEvents(context.Background(), PlatformEventsOptions{URL: "ws" + strings.TrimPrefix(srv.URL, "http")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	t.Cleanup(func() { close(stop) }) // runs first: the handlers return

	require.Eventually(t, func() bool { return accepted.Load() >= 2 }, 5*time.Second, time.Millisecond,
		"the unanswered connection was not dropped and dialled again")
	require.NoError(t, e.Err())
}
