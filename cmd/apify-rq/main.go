// Command apify-rq runs the request-queue emulator as a standalone server and
// releases a queue's locks on the Apify API (or any server that speaks it).
//
// Usage:
//
//	apify-rq serve  [--addr 127.0.0.1:8080] [--token T]... [--run-token T=RUN_ID]... [--queue NAME]...
//	apify-rq unlock --queue ID [--client-key K] [--token T] [--base-url URL] [--timeout 1m]
//
// serve runs the emulator of package apifytest, so crawlers in any language
// (the official JavaScript and Python clients included, with
// APIFY_API_BASE_URL set to the printed URL) can run against it. It prints its
// base URL (with --addr 127.0.0.1:0, the port it was given) and the ID of each
// --queue it created, and stops cleanly on SIGINT or SIGTERM.
//
// unlock calls POST /v2/request-queues/{queueId}/requests/unlock and prints the
// number of requests it unlocked. The token and base URL come from
// APIFY_TOKEN and APIFY_API_BASE_URL unless --token and --base-url are given.
//
// Exit codes: 0 success; 1 the server failed (serve); 2 usage error (a bad
// flag or argument); 3 API error (an error response, or a response that is
// not the API's); 4 network error or timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rqkit/apify"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitAPI     = 3
	exitNetwork = 4
)

const usage = `Usage:
  apify-rq serve  [--addr 127.0.0.1:8080] [--token T]... [--run-token T=RUN_ID]... [--queue NAME]...
  apify-rq unlock --queue ID [--client-key K] [--token T] [--base-url URL] [--timeout 1m]

Commands:
  serve   run the request-queue emulator; stop it with Ctrl-C (SIGINT) or SIGTERM
  unlock  release every lock the client key (or the token's Actor run) holds on a queue,
          and print how many requests were unlocked

Run "apify-rq serve --help" or "apify-rq unlock --help" for their flags.
Exit codes: 0 ok, 1 server failure, 2 usage error, 3 API error, 4 network error or timeout.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run is the whole command, with its environment passed in so tests can run it.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "apify-rq: a command is required (serve or unlock)\n\n"+usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args[1:], stdout, stderr)
	case "unlock":
		return unlock(context.Background(), args[1:], stdout, stderr, env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "apify-rq: unknown command %q (want serve or unlock)\n\n%s", args[0], usage)
		return exitUsage
	}
}

// repeated is a flag that may be given more than once.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// secretFlags is a repeated flag whose values are never printed (flag's
// error messages and defaults print String).
type secretFlags struct{ repeated }

func (*secretFlags) String() string { return "" }

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("apify-rq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  apify-rq %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and refuses positional arguments.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (every option is a --flag)\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

func unlock(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("unlock", "--queue ID [--client-key K] [--token T] [--base-url URL] [--timeout 1m]", stderr)
	queue := fs.String("queue", "", "the queue: an `ID` such as WkzbQMuFYuamGv3YF, username~queue-name, or ~queue-name (required)")
	clientKey := fs.String("client-key", "", "release the locks taken with this client `key` (1 to 32 characters); "+
		"without it, only an Actor run's token has locks to release")
	var token secretFlags
	fs.Var(&token, "token", "API `token` (default $APIFY_TOKEN)")
	baseURL := fs.String("base-url", "", "API base `URL` (default $APIFY_API_BASE_URL, else "+apify.DefaultBaseURL+")")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long, retries included")
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	switch {
	case *queue == "":
		fmt.Fprintln(stderr, "apify-rq unlock: --queue is required (a queue ID or username~queue-name)")
		return exitUsage
	case *timeout <= 0:
		fmt.Fprintf(stderr, "apify-rq unlock: --timeout must be positive, such as 30s or 2m; got %v\n", *timeout)
		return exitUsage
	}
	tok := env("APIFY_TOKEN")
	if n := len(token.repeated); n > 0 {
		tok = token.repeated[n-1]
	}
	base := env("APIFY_API_BASE_URL")
	if *baseURL != "" {
		base = *baseURL
	}
	opts := []apify.Option{apify.WithTimeout(min(*timeout, apify.DefaultTimeout))}
	if base != "" {
		opts = append(opts, apify.WithBaseURL(base))
	}
	if tok != "" {
		opts = append(opts, apify.WithToken(tok))
	}
	client, err := apify.NewClient(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq unlock: check --base-url, --token (or APIFY_API_BASE_URL, APIFY_TOKEN): %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := client.RequestQueue(*queue).UnlockRequests(ctx, *clientKey)
	if err != nil {
		return reportUnlockError(err, client.BaseURL(), *timeout, stderr)
	}
	fmt.Fprintln(stdout, res.UnlockedCount)
	return exitOK
}

// reportUnlockError says what went wrong and what to fix, and picks the exit code.
func reportUnlockError(err error, base string, timeout time.Duration, stderr io.Writer) int {
	var apiErr *apify.APIError
	var reqErr *apify.RequestError
	switch {
	case errors.As(err, &apiErr):
		hint := ""
		switch {
		case apiErr.StatusCode == http.StatusUnauthorized:
			hint = "check --token or APIFY_TOKEN"
		case apiErr.StatusCode == http.StatusForbidden:
			hint = "the token may not access this queue; check --token and --queue"
		case apiErr.StatusCode == http.StatusNotFound:
			hint = "check --queue (the username~queue-name form needs a token) and --base-url (" + base + ")"
		case apiErr.StatusCode == http.StatusBadRequest:
			hint = "check --queue and --client-key"
		case apiErr.Temporary():
			hint = "the API is overloaded or failing; try again later"
		case apiErr.StatusCode < 400:
			hint = "is " + base + " the Apify API? check --base-url"
		}
		fmt.Fprintf(stderr, "apify-rq unlock: %v\n", err)
		if hint != "" {
			fmt.Fprintf(stderr, "apify-rq unlock: %s\n", hint)
		}
		return exitAPI
	case errors.Is(err, apify.ErrUnexpectedResponse):
		fmt.Fprintf(stderr, "apify-rq unlock: %v\napify-rq unlock: is %s the Apify API? check --base-url\n", err, base)
		return exitAPI
	case errors.As(err, &reqErr):
		hint := "could not reach " + base + "; check --base-url and the network"
		if reqErr.Timeout() {
			hint = fmt.Sprintf("no answer within --timeout %v; raise it or check --base-url (%s)", timeout, base)
		}
		fmt.Fprintf(stderr, "apify-rq unlock: %v\napify-rq unlock: %s\n", err, hint)
		return exitNetwork
	case errors.Is(err, apify.ErrInvalidClientKey):
		fmt.Fprintf(stderr, "apify-rq unlock: --client-key: %v\n", err)
		return exitUsage
	case errors.Is(err, apify.ErrInvalidQueueID):
		fmt.Fprintf(stderr, "apify-rq unlock: --queue: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "apify-rq unlock: %v\n", err)
	return exitFailure
}
