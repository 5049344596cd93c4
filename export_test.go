package apify

import "time"

// LongMode is longMode for the external tests (soak, simulation).
var LongMode = longMode

// SetPlatformEventTimings shortens the waits of events connections dialled
// from now until the test ends: the reconnect backoff (from min, doubling,
// at most max) and how long a connection must stay up to count as healthy.
func SetPlatformEventTimings(t interface{ Cleanup(func()) }, backoffMin, backoffMax, healthyAfter time.Duration) {
	eventsMu.Lock()
	old := eventsTimings
	eventsTimings.backoffMin, eventsTimings.backoffMax, eventsTimings.healthyAfter = backoffMin, backoffMax, healthyAfter
	eventsMu.Unlock()
	t.Cleanup(func() {
		eventsMu.Lock()
		eventsTimings = old
		eventsMu.Unlock()
	})
}

// NewMemoryPlatformEvents returns a subscription that delivers the events
// given to send, in memory, with no connection: for tests of Consume's
// reaction to platform events inside a testing/synctest bubble (a
// WebSocket cannot live in one). Close it when done.
func NewMemoryPlatformEvents() (events *PlatformEvents, send func(PlatformEvent)) {
	e := &PlatformEvents{ch: make(chan PlatformEvent), stop: make(chan struct{}), wake: make(chan struct{}, 1), fwd: make(chan struct{})}
	go e.forward()
	return e, e.enqueue
}
