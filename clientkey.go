package apify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"time"
)

// DefaultClientKey returns the clientKey a crawler should lock requests
// under. Inside an Actor run it is the run's ID (ACTOR_RUN_ID, or the older
// APIFY_ACTOR_RUN_ID), cut to 32 characters: a run that is restarted or
// migrated keeps its ID, so it can release (or keep using) the locks of its
// earlier self. Elsewhere it is a random 32-character key, made once per
// process.
//
// Why not a fresh random key at every start? Locks belong to a key. A crawler
// that restarts under a new key cannot prolong, delete or unlock what its
// previous process locked: those requests stay invisible to everyone until
// their locks expire, minutes or hours later. Outside Apify, choose a key that
// survives restarts (a hostname, a pod name) and pass it explicitly if that
// matters to you.
func DefaultClientKey() string {
	for _, name := range []string{"ACTOR_RUN_ID", "APIFY_ACTOR_RUN_ID"} {
		if key := cutRunes(os.Getenv(name), MaxClientKeyLength); key != "" && validateClientKey(key) == nil {
			return key
		}
	}
	return processKey()
}

var processKey = sync.OnceValue(func() string {
	b := make([]byte, MaxClientKeyLength/2)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
})

func cutRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// DefaultShutdownTimeout bounds [RequestQueueClient.UnlockAtShutdown] when it is given no timeout.
const DefaultShutdownTimeout = 5 * time.Second

// UnlockAtShutdown is UnlockRequests for a crawler's exit path, where ctx is
// usually already cancelled (SIGTERM, an abort, a migration). It runs on a
// context detached from ctx's cancellation (context.WithoutCancel: values
// such as trace IDs are kept) and bounded by its own timeout, so it still
// reaches the API after ctx is cancelled and still cannot hang the exit. A
// timeout <= 0 means [DefaultShutdownTimeout].
//
//	defer func() {
//		res, err := q.UnlockAtShutdown(ctx, clientKey, 5*time.Second)
//		...
//	}()
func (q *RequestQueueClient) UnlockAtShutdown(ctx context.Context, clientKey string, timeout time.Duration) (*UnlockRequestsResult, error) {
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	return q.UnlockRequests(ctx, clientKey)
}
