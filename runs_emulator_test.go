package apify_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

func TestRebootRunAgainstTheEmulator(t *testing.T) {
	srv := apifytest.Start(t, apifytest.WithRunToken("run-token", "RunOfTheToken01"))
	c := srv.Client()
	t.Cleanup(c.CloseIdleConnections)
	ctx := context.Background()

	require.NoError(t, c.RebootRun(ctx, "RunOfTheToken01"))
	require.NoError(t, c.RebootRun(ctx, apifytest.DefaultRunID))
	require.ErrorIs(t, c.RebootRun(ctx, "NoSuchRun"), apify.ErrNotFound)
	require.Equal(t, []string{"RunOfTheToken01", apifytest.DefaultRunID}, srv.Reboots())

	anon, err := apify.NewClient(apify.WithBaseURL(srv.URL))
	require.NoError(t, err)
	require.ErrorIs(t, anon.RebootRun(ctx, apifytest.DefaultRunID), apify.ErrUnauthorized)
	require.Len(t, srv.Reboots(), 2)
}

func TestCurrentRunID(t *testing.T) {
	t.Setenv("ACTOR_RUN_ID", "")
	t.Setenv("APIFY_ACTOR_RUN_ID", "")
	require.Equal(t, "", apify.CurrentRunID())
	t.Setenv("APIFY_ACTOR_RUN_ID", "older")
	require.Equal(t, "older", apify.CurrentRunID())
	t.Setenv("ACTOR_RUN_ID", "current")
	require.Equal(t, "current", apify.CurrentRunID())
}
