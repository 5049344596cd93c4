package main

import (
	"context"
	"fmt"
	"io"
)

const unlockSynopsis = "--queue ID [--client-key K] [--quiet|-q] " + apiSynopsis

func unlock(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("unlock", unlockSynopsis, stderr)
	api := addAPIFlags("unlock", fs)
	clientKey := fs.String("client-key", "", "release the locks taken with this client `key` (1 to 32 characters); "+
		"without it, only an Actor run's token has locks to release")
	var quiet bool
	fs.BoolVar(&quiet, "quiet", false, "print only the number of requests unlocked, for scripts")
	fs.BoolVar(&quiet, "q", false, "short for --quiet")
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	client, code := api.client(env, stderr)
	if client == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *api.timeout)
	defer cancel()
	q := client.RequestQueue(*api.queue)
	res, err := q.UnlockRequests(ctx, *clientKey)
	if err != nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	if quiet {
		fmt.Fprintln(stdout, res.UnlockedCount)
		return exitOK
	}
	// What stays locked is someone else's: say so, and whose where the
	// server says, so that "unlocked 0" with a wrong key does not read as
	// "nothing is locked".
	msg := "unlocked " + plural(res.UnlockedCount, "request")
	holders, known := lockHolders(ctx, client, *api.queue)
	others := len(holders)
	if !known {
		ids, err := lockedIDs(ctx, q)
		if err != nil {
			fmt.Fprintln(stdout, msg)
			fmt.Fprintf(stderr, "apify-rq unlock: could not count the locks left: %v\n", err)
			return exitOK
		}
		others = len(ids)
	}
	switch {
	case others == 0:
	case known:
		msg += fmt.Sprintf("; %s %s locked by other clients (%s)", plural(others, "request"), stays(others), byHolder(holders))
	default:
		msg += fmt.Sprintf("; %s %s locked by other clients", plural(others, "request"), stays(others))
	}
	fmt.Fprintln(stdout, msg)
	if res.UnlockedCount == 0 && others > 0 {
		who := "no clientKey (and no Actor run's token)"
		if *clientKey != "" {
			who = fmt.Sprintf("clientKey %q", *clientKey)
		}
		fmt.Fprintf(stderr, "apify-rq unlock: %s held none of them; check --client-key (apify-rq list --queue %s --filter locked lists the locked requests)\n",
			who, *api.queue)
	}
	return exitOK
}

func stays(n int) string {
	if n == 1 {
		return "stays"
	}
	return "stay"
}

// plural is "1 request", "3 requests", "0 requests".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
