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
	res, err := client.RequestQueue(*api.queue).UnlockRequests(ctx, *clientKey)
	if err != nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	if quiet {
		fmt.Fprintln(stdout, res.UnlockedCount)
	} else {
		fmt.Fprintf(stdout, "unlocked %s\n", plural(res.UnlockedCount, "request"))
	}
	return exitOK
}

// plural is "1 request", "3 requests", "0 requests".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
