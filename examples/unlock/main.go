// Command unlock releases every lock a crawler holds on an Apify request
// queue, with one call to UnlockRequests.
//
// With APIFY_TOKEN set, it unlocks a queue on the real API (or on
// APIFY_API_BASE_URL): APIFY_QUEUE_ID, or inside an Actor run the run's
// default queue (apify.DefaultRequestQueueID), as the clientKey
// APIFY_CLIENT_KEY (default: apify.DefaultClientKey, the Actor run ID inside
// a run).
//
// Without APIFY_TOKEN it runs offline: it starts the apifytest emulator
// in-process, creates a queue, adds 25 requests, locks 10 of them under a
// clientKey (as a crawler would before it is stopped), releases them with
// UnlockRequests, and shows that the head has all 25 pending again.
//
//	go run ./examples/unlock
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

func main() {
	os.Exit(run(os.Stdout, os.Stderr))
}

func run(stdout, stderr io.Writer) int {
	// Whatever happens, the call gives up after 10 seconds: an exit path
	// must never hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var err error
	if os.Getenv("APIFY_TOKEN") == "" {
		err = offline(ctx, stdout)
	} else {
		err = online(ctx, stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "unlock:", err)
		var apiErr *apify.APIError
		if errors.As(err, &apiErr) && apiErr.Type != "" {
			fmt.Fprintf(stderr, "unlock: the API answered %d %s\n", apiErr.StatusCode, apiErr.Type)
		}
		return 1
	}
	return 0
}

// online unlocks a real queue.
func online(ctx context.Context, out io.Writer) error {
	queueID := os.Getenv("APIFY_QUEUE_ID")
	if queueID == "" {
		queueID = apify.DefaultRequestQueueID() // set inside an Actor run
	}
	if queueID == "" {
		return errors.New("APIFY_QUEUE_ID is not set (and this is not an Actor run, which has a default queue): export the ID (or username~name) of the queue to unlock")
	}
	clientKey := os.Getenv("APIFY_CLIENT_KEY")
	if clientKey == "" {
		clientKey = apify.DefaultClientKey()
	}
	c, err := apify.NewClientFromEnv()
	if err != nil {
		return err
	}
	res, err := c.RequestQueue(queueID).UnlockRequests(ctx, clientKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unlocked %d requests in queue %s held by client %s\n", res.UnlockedCount, queueID, clientKey)
	return nil
}

// offline shows the unlock against the in-process emulator.
func offline(ctx context.Context, out io.Writer) error {
	srv := apifytest.NewServer()
	defer srv.Close()
	fmt.Fprintln(out, "APIFY_TOKEN is not set: running against the in-process request-queue emulator")

	c := srv.Client()
	queueID := srv.CreateQueue("unlock-example")
	q := c.RequestQueue(queueID)
	const clientKey = "example-crawler"

	batch := make([]apify.Request, 25)
	for i := range batch {
		u := fmt.Sprintf("https://example.com/page/%d", i+1)
		batch[i] = apify.Request{URL: u, UniqueKey: u}
	}
	added, err := q.BatchAddRequests(ctx, batch, apify.RequestOptions{ClientKey: clientKey})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "added %d requests to queue %s\n", len(added.Processed), queueID)

	// A crawler locks work from the head of the queue...
	locked, err := q.ListAndLockHead(ctx, apify.LockHeadOptions{Limit: 10, LockDuration: time.Hour, ClientKey: clientKey})
	if err != nil {
		return err
	}
	head, err := q.ListHead(ctx, apify.ListHeadOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "locked %d requests for an hour as client %q; the head shows %d pending\n",
		len(locked.Items), clientKey, len(head.Items))

	// ...and is stopped. Without the unlock, those 10 requests would sit
	// unseen for an hour. One call releases them all:
	res, err := q.UnlockRequests(ctx, clientKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unlocked %d requests\n", res.UnlockedCount)

	head, err = q.ListHead(ctx, apify.ListHeadOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the head shows %d pending again\n", len(head.Items))
	return nil
}
