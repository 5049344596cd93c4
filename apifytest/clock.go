package apifytest

import (
	"sync"
	"time"
)

// Clock tells the emulator what time it is. Lock expiry, lockExpiresAt,
// handledAt defaults and the queue's timestamps all come from it, so a test
// that controls the Clock controls when locks expire.
type Clock interface {
	// Now returns the current time. The server calls it from many
	// goroutines at once, one per call it serves, so it must be safe for
	// concurrent use.
	Now() time.Time
}

// systemClock is the default Clock: time.Now, which is fake time inside a
// testing/synctest bubble.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that moves only when told to, so lock expiry can be
// tested without sleeping. It is safe for concurrent use.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a ManualClock that reads start until moved.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start}
}

// Now returns the clock's current time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward when d is negative).
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *ManualClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
