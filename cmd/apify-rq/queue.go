package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rqkit/apify"
)

const showSynopsis = "--queue ID [--failed=false] [--json] " + apiSynopsis

// show prints a queue's counts, in words.
func show(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("show", showSynopsis, stderr)
	api := addAPIFlags("show", fs)
	countFailed := fs.Bool("failed", true, "count the failed requests, which lists every request of the queue; "+
		"--failed=false skips that on a big queue")
	asJSON := fs.Bool("json", false, "print the queue as one JSON object, for scripts")
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
	// The queue first: its hadMultipleClients is then what it was before
	// this command looked.
	info, err := q.Get(ctx)
	if err != nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	// The API counts neither locks nor failures: count them by listing.
	locked, err := lockedIDs(ctx, q)
	if err != nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	var nFailed *int
	if *countFailed {
		n := 0
		for req, err := range q.ListRequests(ctx, apify.ListRequestsOptions{PageSize: apify.MaxListPageSize}) {
			if err != nil {
				return api.reportError(err, client.BaseURL(), stderr)
			}
			if failed(req) {
				n++
			}
		}
		nFailed = &n
	}
	waiting := max(info.PendingRequestCount-len(locked), 0)
	if *asJSON {
		out, _ := json.Marshal(struct {
			*apify.RequestQueueInfo
			LockedRequestCount  int  `json:"lockedRequestCount"`
			WaitingRequestCount int  `json:"waitingRequestCount"`
			FailedRequestCount  *int `json:"failedRequestCount"`
		}{info, len(locked), waiting, nFailed})
		fmt.Fprintf(stdout, "%s\n", out)
		return exitOK
	}
	name := "(unnamed)"
	if info.Name != "" {
		name = info.Name
	}
	multiple := "no: one client at most (calls with one clientKey)"
	if info.HadMultipleClients {
		multiple = "yes: calls with more than one clientKey, or changes made without one"
	}
	handled := fmt.Sprint(info.HandledRequestCount)
	if nFailed != nil {
		handled += fmt.Sprintf(", of which %d failed (given up on, with errors)", *nFailed)
	}
	for _, row := range [][2]string{
		{"queue", info.ID},
		{"name", name},
		{"total", fmt.Sprint(info.TotalRequestCount)},
		{"handled", handled},
		{"pending", fmt.Sprintf("%d not handled yet: %d locked (taken by a client) and %d waiting to be taken",
			info.PendingRequestCount, len(locked), waiting)},
		{"multiple clients", multiple},
		{"created", showTime(info.CreatedAt)},
		{"modified", showTime(info.ModifiedAt)},
		{"accessed", showTime(info.AccessedAt)},
	} {
		fmt.Fprintf(stdout, "%-17s %s\n", row[0]+":", row[1])
	}
	return exitOK
}

// showTime prints a time as the API sends it: UTC, with milliseconds, in a
// fixed width so that a column of them lines up.
func showTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

const listSynopsis = "--queue ID [--filter locked,pending] [--limit 100] [--json] " + apiSynopsis

// list prints a queue's requests, one per line, with their state: the lock
// holder and expiry where the server says (the emulator does; Apify's API
// says only which requests are locked).
func list(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("list", listSynopsis, stderr)
	api := addAPIFlags("list", fs)
	filterFlag := fs.String("filter", "locked,pending", "which requests to list: locked, pending, `locked,pending` (both), or all (handled ones too)")
	limit := fs.Int("limit", 100, "print at most this many requests; 0 prints them all")
	asJSON := fs.Bool("json", false, "print each request as one line of JSON, every field included, and \"lock\" when it is locked")
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	filter, err := parseFilter(*filterFlag)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq list: --filter: %v\n", err)
		return exitUsage
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "apify-rq list: --limit must be 0 (all) or more; got %d\n", *limit)
		return exitUsage
	}
	client, code := api.client(env, stderr)
	if client == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *api.timeout)
	defer cancel()
	q := client.RequestQueue(*api.queue)
	pageSize := 1000
	if *limit > 0 {
		pageSize = min(*limit+1, apify.MaxListPageSize) // one more, to tell whether there are more
	}
	// Which requests are locked, and by whom when the server says.
	var holders map[string]holder
	var locked map[string]bool
	holdersKnown := false
	if filter != apify.FilterPending {
		if holders, holdersKnown = lockHolders(ctx, client, *api.queue); !holdersKnown && filter != apify.FilterLocked {
			if locked, err = lockedIDs(ctx, q); err != nil {
				return api.reportError(err, client.BaseURL(), stderr)
			}
		}
	}
	n, unknownHolder := 0, false
	for req, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: filter, PageSize: pageSize}) {
		if err != nil {
			return api.reportError(err, client.BaseURL(), stderr)
		}
		if *limit > 0 && n == *limit {
			fmt.Fprintf(stderr, "apify-rq list: stopped after %s; --limit 0 lists them all\n", plural(n, "request"))
			break
		}
		n++
		h, isHeld := holders[req.ID]
		isLocked := isHeld || locked[req.ID] || (filter == apify.FilterLocked && req.HandledAt.IsZero())
		unknownHolder = unknownHolder || (isLocked && !isHeld)
		if *asJSON {
			var lock *lockJSON
			if isLocked {
				lock = &lockJSON{}
				if isHeld {
					lock = &lockJSON{ClientKey: h.ClientKey, RunID: h.RunID, ExpiresAt: showTime(h.ExpiresAt)}
				}
			}
			out, _ := json.Marshal(struct {
				*apify.Request
				Lock *lockJSON `json:"lock,omitempty"`
			}{req, lock})
			fmt.Fprintf(stdout, "%s\n", out)
			continue
		}
		method := req.Method
		if method == "" {
			method = "GET"
		}
		state := "pending"
		switch {
		case isHeld:
			state = "locked by " + h.who() + " until " + showTime(h.ExpiresAt)
		case isLocked:
			state = "locked"
		case failed(req):
			state = "failed"
		case !req.HandledAt.IsZero():
			state = "handled"
		}
		fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", req.ID, method, oneLine(req.URL), state)
	}
	if unknownHolder && !holdersKnown && !*asJSON {
		fmt.Fprintln(stderr, "apify-rq list: the API does not say who holds a lock, nor until when (the emulator, apify-rq serve, does)")
	}
	return exitOK
}

// lockJSON is the lock of a request in list --json: empty when the server
// does not say who holds it.
type lockJSON struct {
	ClientKey string `json:"clientKey,omitempty"`
	RunID     string `json:"runId,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// parseFilter reads --filter.
func parseFilter(v string) (apify.RequestFilter, error) {
	if v == "all" {
		return 0, nil
	}
	var f apify.RequestFilter
	for _, part := range strings.Split(v, ",") {
		switch strings.TrimSpace(part) {
		case "locked":
			f |= apify.FilterLocked
		case "pending":
			f |= apify.FilterPending
		default:
			return 0, fmt.Errorf("%q is not locked, pending, locked,pending or all", v)
		}
	}
	return f, nil
}

// oneLine keeps a URL from breaking the one-request-per-line output.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
