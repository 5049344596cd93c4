package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rqkit/apify"
)

// apiFlags are the flags every command that calls the API shares.
type apiFlags struct {
	cmd     string
	queue   *string
	token   secretFlags
	baseURL *string
	timeout *time.Duration
}

// apiSynopsis is the synopsis of the apiFlags, for usage lines.
const apiSynopsis = "[--token T] [--base-url URL] [--timeout 1m]"

func addAPIFlags(cmd string, fs *flag.FlagSet) *apiFlags {
	a := &apiFlags{cmd: cmd}
	a.queue = fs.String("queue", "", "the queue: an `ID` such as WkzbQMuFYuamGv3YF, username~queue-name, or ~queue-name (required)")
	fs.Var(&a.token, "token", "API `token` (default $APIFY_TOKEN; prefer the variable: a flag shows in ps)")
	a.baseURL = fs.String("base-url", "", "API base `URL` (default $APIFY_API_BASE_URL, else "+apify.DefaultBaseURL+")")
	a.timeout = fs.Duration("timeout", time.Minute, "give up after this long, retries included")
	return a
}

// client checks the flags and makes the client. On failure it has printed
// why, and returns the exit code.
func (a *apiFlags) client(env func(string) string, stderr io.Writer) (*apify.Client, int) {
	switch {
	case *a.queue == "":
		fmt.Fprintf(stderr, "apify-rq %s: --queue is required (a queue ID or username~queue-name)\n", a.cmd)
		return nil, exitUsage
	case *a.timeout <= 0:
		fmt.Fprintf(stderr, "apify-rq %s: --timeout must be positive, such as 30s or 2m; got %v\n", a.cmd, *a.timeout)
		return nil, exitUsage
	}
	tok := env("APIFY_TOKEN")
	if n := len(a.token.repeated); n > 0 {
		tok = a.token.repeated[n-1]
	}
	base := env("APIFY_API_BASE_URL")
	if *a.baseURL != "" {
		base = *a.baseURL
	}
	opts := []apify.Option{apify.WithTimeout(min(*a.timeout, apify.DefaultTimeout))}
	if base != "" {
		opts = append(opts, apify.WithBaseURL(base))
	}
	if tok != "" {
		opts = append(opts, apify.WithToken(tok))
	}
	client, err := apify.NewClient(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq %s: check --base-url, --token (or APIFY_API_BASE_URL, APIFY_TOKEN): %v\n", a.cmd, err)
		return nil, exitUsage
	}
	return client, exitOK
}

// reportError says what went wrong and what to fix, and picks the exit code.
func (a *apiFlags) reportError(err error, base string, stderr io.Writer) int {
	prefix := "apify-rq " + a.cmd + ": "
	var apiErr *apify.APIError
	var reqErr *apify.RequestError
	switch {
	case errors.As(err, &apiErr):
		hint := ""
		switch {
		case apiErr.StatusCode == http.StatusUnauthorized:
			hint = "check --token or APIFY_TOKEN"
		case apiErr.StatusCode == http.StatusForbidden:
			hint = "the token may not do this on this queue; check --token and --queue"
		case apiErr.StatusCode == http.StatusNotFound:
			hint = "check --queue (the username~queue-name form needs a token) and --base-url (" + base + ")"
		case apiErr.StatusCode == http.StatusBadRequest:
			hint = "check --queue and the other flags"
		case apiErr.Temporary():
			hint = "the API is overloaded or failing; try again later"
		case apiErr.StatusCode < 400:
			hint = "is " + base + " the Apify API? check --base-url"
		}
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		if hint != "" {
			fmt.Fprintf(stderr, "%s%s\n", prefix, hint)
		}
		return exitAPI
	case errors.Is(err, apify.ErrUnexpectedResponse):
		fmt.Fprintf(stderr, "%s%v\n%sis %s the Apify API? check --base-url\n", prefix, err, prefix, base)
		return exitAPI
	case errors.As(err, &reqErr):
		hint := "could not reach " + base + "; check --base-url and the network"
		// The timeout ended the call, but when the last attempt failed for
		// another reason (connection refused, say), that is the problem.
		var netErr *net.OpError
		if reqErr.Timeout() && !(errors.As(err, &netErr) && !netErr.Timeout()) {
			hint = fmt.Sprintf("no answer within --timeout %v; raise it or check --base-url (%s)", *a.timeout, base)
		}
		fmt.Fprintf(stderr, "%s%v\n%s%s\n", prefix, err, prefix, hint)
		return exitNetwork
	case errors.Is(err, apify.ErrInvalidClientKey):
		fmt.Fprintf(stderr, "%s--client-key: %v\n", prefix, err)
		return exitUsage
	case errors.Is(err, apify.ErrInvalidQueueID):
		fmt.Fprintf(stderr, "%s--queue: %v\n", prefix, err)
		return exitUsage
	case errors.Is(err, apify.ErrInvalidInput):
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "%s%v\n", prefix, err)
	return exitFailure
}
