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
