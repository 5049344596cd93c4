package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/rqkit/apify"
)

const addSynopsis = "--queue ID [--client-key K] [--forefront] [--quiet|-q] " + apiSynopsis + " [URL]..."

// stdin is where add reads requests when it is given no URL; tests replace it.
var stdin io.Reader = os.Stdin

// add adds requests to a queue: the URLs given, or else one URL or one JSON
// request a line from stdin, all checked before any is sent, then sent with
// BatchAddRequests (25 a call).
func add(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("add", addSynopsis, stderr)
	api := addAPIFlags("add", fs)
	clientKey := fs.String("client-key", "", "add as this client `key` (1 to 32 characters): give the key of the crawler "+
		"that will consume the queue, so that the queue reads as one client (a call without a clientKey counts as a new client)")
	forefront := fs.Bool("forefront", false, "add the requests at the front of the queue instead of the back")
	var quiet bool
	fs.BoolVar(&quiet, "quiet", false, "print only the number of requests that were new, for scripts")
	fs.BoolVar(&quiet, "q", false, "short for --quiet")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	var reqs []apify.Request
	if fs.NArg() > 0 {
		for i, arg := range fs.Args() {
			if strings.HasPrefix(arg, "-") {
				fmt.Fprintf(stderr, "apify-rq add: %q looks like a flag after the URLs; give every flag before the first URL\n", arg)
				return exitUsage
			}
			r, err := urlRequest(arg)
			if err != nil {
				fmt.Fprintf(stderr, "apify-rq add: URL %d: %v\n", i+1, err)
				return exitUsage
			}
			reqs = append(reqs, r)
		}
	} else {
		if f, ok := stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(stderr, "apify-rq add: reading requests from the terminal, one URL or JSON request a line; end with Ctrl-D")
			}
		}
		var err error
		if reqs, err = readRequests(stdin); err != nil {
			fmt.Fprintf(stderr, "apify-rq add: stdin: %v\n", err)
			return exitUsage
		}
		if len(reqs) == 0 {
			fmt.Fprintln(stderr, "apify-rq add: no requests: give URLs as arguments, or one URL or JSON request a line on stdin")
			return exitUsage
		}
	}
	client, code := api.client(env, stderr)
	if client == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *api.timeout)
	defer cancel()
	res, err := client.RequestQueue(*api.queue).BatchAddRequests(ctx, reqs, apify.RequestOptions{ClientKey: *clientKey, Forefront: *forefront})
	if res == nil {
		return api.reportError(err, client.BaseURL(), stderr)
	}
	fresh, handled := 0, 0
	for _, p := range res.Processed {
		switch {
		case !p.WasAlreadyPresent:
			fresh++
		case p.WasAlreadyHandled:
			handled++
		}
	}
	if quiet {
		fmt.Fprintln(stdout, fresh)
	} else {
		msg := fmt.Sprintf("added %s: %d new, %d already in the queue", plural(len(res.Processed), "request"), fresh, len(res.Processed)-fresh)
		if handled > 0 {
			msg += fmt.Sprintf(" (%d of them handled)", handled)
		}
		fmt.Fprintln(stdout, msg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq add: %s not added:\n", plural(len(res.Unprocessed), "request"))
		for _, r := range res.Unprocessed {
			fmt.Fprintf(stderr, "  %s\n", oneLine(r.URL))
		}
		return api.reportError(err, client.BaseURL(), stderr)
	}
	return exitOK
}

// readRequests reads one request a line: a URL, or a JSON object with the
// API's request fields ({"url": ..., "userData": {...}}). Empty lines and
// lines starting with "#" are skipped. Every line is checked; the first bad
// one is reported by its number.
func readRequests(r io.Reader) ([]apify.Request, error) {
	var out []apify.Request
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 10<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var req apify.Request
		var err error
		if strings.HasPrefix(line, "{") {
			req, err = jsonRequest(line)
		} else {
			req, err = urlRequest(line)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, req)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// urlRequest is the request of a bare URL: GET, its uniqueKey the URL.
func urlRequest(raw string) (apify.Request, error) {
	if err := checkURL(raw); err != nil {
		return apify.Request{}, err
	}
	return apify.Request{URL: raw, UniqueKey: raw}, nil
}

// jsonRequest reads a request from a JSON object with the API's field
// names; uniqueKey defaults to url.
func jsonRequest(line string) (apify.Request, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	var req apify.Request
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("not a request as JSON (the API's fields: url, uniqueKey, method, userData, headers, payload, noRetry, ...): %v", err)
	}
	if dec.More() || dec.InputOffset() != int64(len(line)) {
		if rest := bytes.TrimSpace([]byte(line[dec.InputOffset():])); len(rest) > 0 {
			return req, errors.New("more than one JSON value on the line")
		}
	}
	switch {
	case req.URL == "":
		return req, errors.New(`the request has no "url"`)
	case req.ID != "":
		return req, errors.New(`the request has an "id": the queue gives it one from its uniqueKey`)
	}
	if err := checkURL(req.URL); err != nil {
		return req, err
	}
	if req.UniqueKey == "" {
		req.UniqueKey = req.URL
	}
	return req, nil
}

// checkURL refuses what is not an absolute http or https URL.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %v", oneLine(raw), errors.Unwrap(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http or https URL (such as https://example.com/)", oneLine(raw))
	case u.Host == "":
		return fmt.Errorf("%q has no host", oneLine(raw))
	}
	return nil
}
