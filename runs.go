package apify

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
)

// RebootRun restarts the Actor run runID at once: the platform kills its
// process and starts it again with the same run ID and storages. An Actor
// calls it on itself after a migrating event, once its state is saved, to
// move on sooner than the platform would ([ErrMigrating]); the run ID of
// the current run is in ACTOR_RUN_ID ([CurrentRunID]). Only a RUNNING run
// can be rebooted.
//
// The run ID goes into the path as one escaped segment; an empty one, "."
// or "..", invalid UTF-8, or control characters are rejected before any
// I/O with an error wrapping [ErrInvalidInput].
//
// A reboot is not idempotent: a second one that reaches the platform after
// the first has restarted the run reboots the new process too, losing
// its work. So the call is retried only when the platform cannot have
// acted on it: after a 429, and after a network failure before the request
// left (no connection could be made). A 5xx, a timeout or a connection
// dropped after sending is returned at once, not retried.
//
// It calls POST /v2/actor-runs/{runId}/reboot.
func (c *Client) RebootRun(ctx context.Context, runID string) error {
	if err := validateID("run ID", runID); err != nil {
		return fmt.Errorf("apify: RebootRun: %w: %w", ErrInvalidInput, err)
	}
	resp, err := c.do(ctx, apiRequest{
		method: http.MethodPost,
		ep: endpoint{
			path:    c.basePath + "/v2/actor-runs/" + runID + "/reboot",
			rawPath: c.baseRawPath + "/v2/actor-runs/" + url.PathEscape(runID) + "/reboot",
		},
	})
	if err != nil {
		return err
	}
	_, err = decodeData[struct {
		ID string `json:"id"`
	}](resp)
	return err
}

// CurrentRunID returns the ID of the Actor run this process is part of
// (ACTOR_RUN_ID, or the older APIFY_ACTOR_RUN_ID), or "" outside an Actor
// run.
func CurrentRunID() string {
	for _, name := range []string{"ACTOR_RUN_ID", "APIFY_ACTOR_RUN_ID"} {
		if id := os.Getenv(name); id != "" {
			return id
		}
	}
	return ""
}
