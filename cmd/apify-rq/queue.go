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

const showSynopsis = "--queue ID [--json] " + apiSynopsis

// show prints a queue's counts.
func show(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("show", showSynopsis, stderr)
	api := addAPIFlags("show", fs)
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
	info, err := q.Get(ctx)
	if err != nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	// The API counts no locks: count the locked requests by listing them.
	locked := 0
	for _, err := range q.ListRequests(ctx, apify.ListRequestsOptions{Filter: apify.FilterLocked, PageSize: apify.MaxListPageSize}) {
		if err != nil {
			return api.reportError(err, client.BaseURL(), stderr)
		}
		locked++
	}
	if *asJSON {
		out, _ := json.Marshal(struct {
			*apify.RequestQueueInfo
			LockedRequestCount int `json:"lockedRequestCount"`
		}{info, locked})
		fmt.Fprintf(stdout, "%s\n", out)
		return exitOK
	}
	name := "(unnamed)"
	if info.Name != "" {
		name = info.Name
	}
	multiple := "no"
	if info.HadMultipleClients {
		multiple = "yes"
	}
	for _, row := range [][2]string{
		{"queue", info.ID},
		{"name", name},
		{"total", fmt.Sprint(info.TotalRequestCount)},
		{"handled", fmt.Sprint(info.HandledRequestCount)},
		{"pending", fmt.Sprint(info.PendingRequestCount)},
		{"locked", fmt.Sprint(locked)},
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

// list prints a queue's requests, one per line.
func list(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("list", listSynopsis, stderr)
	api := addAPIFlags("list", fs)
	filterFlag := fs.String("filter", "locked,pending", "which requests to list: locked, pending, `locked,pending` (both), or all (handled ones too)")
	limit := fs.Int("limit", 100, "print at most this many requests; 0 prints them all")
	asJSON := fs.Bool("json", false, "print each request as one line of JSON, every field included")
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
	pageSize := 1000
	if *limit > 0 {
		pageSize = min(*limit+1, apify.MaxListPageSize) // one more, to tell whether there are more
	}
	n := 0
	for req, err := range client.RequestQueue(*api.queue).ListRequests(ctx, apify.ListRequestsOptions{Filter: filter, PageSize: pageSize}) {
		if err != nil {
			return api.reportError(err, client.BaseURL(), stderr)
		}
		if *limit > 0 && n == *limit {
			fmt.Fprintf(stderr, "apify-rq list: stopped after %s; --limit 0 lists them all\n", plural(n, "request"))
			break
		}
		n++
		if *asJSON {
			out, _ := json.Marshal(req)
			fmt.Fprintf(stdout, "%s\n", out)
			continue
		}
		method := req.Method
		if method == "" {
			method = "GET"
		}
		fmt.Fprintf(stdout, "%s\t%s\t%s\n", req.ID, method, oneLine(req.URL))
	}
	return exitOK
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
