package apify

import (
	"os"
	"testing"
	"time"
)

// The long tests (the soak, the shared-queue simulation, the connection
// counts) run briefly by default, so that `go test ./...` stays quick, and
// in full when APIFY_SOAK asks:
//
//	APIFY_SOAK=full go test -run 'Soak|Simulated|NoNewConnections' .   # their full length (.ci/run does this)
//	APIFY_SOAK=5m   go test -run Soak .                                 # full, and the soak for 5 minutes
//
// -short skips the soak and the simulation altogether.
const soakEnv = "APIFY_SOAK"

// longMode reads APIFY_SOAK: whether the long tests run in full, and how long
// the soak runs (brief when not full).
func longMode(t testing.TB, brief, full time.Duration) (bool, time.Duration) {
	t.Helper()
	switch v := os.Getenv(soakEnv); v {
	case "":
		return false, brief
	case "full":
		return true, full
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want \"full\" or a positive duration such as 5m", soakEnv, v)
		}
		return true, d
	}
}
