package apify

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any test leaves a goroutine behind: a reader
// stuck on a body that never ends, a timer of a backoff wait, a connection
// of a server or transport that was not closed. Tests that start servers or
// transports close them (and their idle connections) in t.Cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
