// Command apify-rq runs the request-queue emulator as a standalone server,
// and shows, lists and unlocks a queue on the Apify API (or any server that
// speaks it, the emulator included).
//
// Usage:
//
//	apify-rq serve  [--addr 127.0.0.1:8080] [--token T]... [--run-token T=RUN_ID]... [--queue NAME]... [--rate-limits on] [--events] [--log] [--read-timeout 30s] [--idle-timeout 60s] [--max-conns 512]
//	apify-rq show   --queue ID [--json] [--token T] [--base-url URL] [--timeout 1m]
//	apify-rq list   --queue ID [--filter locked,pending] [--limit 100] [--json] [--token T] [--base-url URL] [--timeout 1m]
//	apify-rq unlock --queue ID [--client-key K] [--quiet|-q] [--token T] [--base-url URL] [--timeout 1m]
//	apify-rq add    --queue ID [--client-key K] [--forefront] [--quiet|-q] [--token T] [--base-url URL] [--timeout 1m] [URL]...
//	apify-rq version
//	apify-rq event  NAME [--time-remaining 10s] [--migrating] [--data JSON] [--token T] [--base-url URL] [--timeout 10s]
//	apify-rq help [COMMAND]
//
// serve runs the emulator of package apifytest, so crawlers in any language
// (the official JavaScript and Python clients included, with
// APIFY_API_BASE_URL set to the printed URL) can run against it. It prints its
// base URL (with --addr 127.0.0.1:0, the port it was given) and the ID of each
// --queue it created, and stops cleanly on SIGINT or SIGTERM.
//
// show prints a queue's counts in words: total; handled, and how many of
// those failed; pending (not handled yet), and how many of those are locked
// right now and how many wait. list prints a queue's requests, one per line
// (ID, method, URL, state: pending, handled, failed, or locked, with the
// lock's holder and expiry where the server says, as the emulator does), or
// as JSON lines with --json. unlock calls POST
// /v2/request-queues/{queueId}/requests/unlock and prints how many requests
// it unlocked and how many stay locked by other clients ("unlocked 3
// requests; 2 stay locked by other clients"; with --quiet, the bare
// number). add adds requests: the URLs given, or, with none, one URL or
// one JSON request (the API's fields) a line from stdin, all checked before
// any is sent; --client-key should be the key of the crawler that will
// consume the queue. version prints the version.
//
// With --events, serve also serves the Apify platform's events of an Actor
// run over WebSocket, and prints the URL to set ACTOR_EVENTS_WEBSOCKET_URL
// to; event sends one to every connected Actor: "apify-rq event migrating
// --time-remaining 10s", "apify-rq event aborting", "apify-rq event
// persistState --migrating", or any NAME with --data JSON. It goes to the
// emulator at --base-url (default $APIFY_API_BASE_URL, else
// http://127.0.0.1:8080), through its POST /_emulator/events, with the
// token when the emulator has any.
//
// The token and base URL come from APIFY_TOKEN and
// APIFY_API_BASE_URL unless --token and --base-url are given; prefer the
// variable for the token, since a flag shows in the process list.
//
// "apify-rq COMMAND --help" and "apify-rq help COMMAND" print a command's
// flags to stdout.
//
// Exit codes: 0 success; 1 the server failed (serve); 2 usage error (a bad
// flag or argument); 3 API error (an error response, or a response that is
// not the API's); 4 network error or timeout.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
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
  apify-rq serve  ` + serveSynopsis + `
  apify-rq show   ` + showSynopsis + `
  apify-rq list   ` + listSynopsis + `
  apify-rq unlock ` + unlockSynopsis + `
  apify-rq add    ` + addSynopsis + `
  apify-rq version
  apify-rq event  ` + eventSynopsis + `
  apify-rq help [COMMAND]

Commands:
  serve   run the request-queue emulator; stop it with Ctrl-C (SIGINT) or SIGTERM
  show    print a queue's counts: total, handled (and failed), pending (locked and waiting)
  list    print a queue's requests, one per line, with who holds each lock where the server says
  unlock  release every lock the client key (or the token's Actor run) holds on a queue,
          print how many requests were unlocked and how many stay locked by others
  add     add the URLs given, or one URL or JSON request a line from stdin
  version print the version
  event   send a platform event (migrating, aborting, persistState, ...) to the Actors
          connected to a running "apify-rq serve --events"

The token comes from APIFY_TOKEN and the API's address from APIFY_API_BASE_URL
(default https://api.apify.com), unless --token or --base-url is given.
Run "apify-rq help COMMAND" or "apify-rq COMMAND --help" for a command's flags.
Exit codes: 0 ok, 1 server failure, 2 usage error, 3 API error, 4 network error or timeout.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run is the whole command, with its environment passed in so tests can run it.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "apify-rq: a command is required (serve, show, list, unlock, add, version or event)\n\n"+usage)
		return exitUsage
	}
	if args[0] == "help" && len(args) > 1 && args[1] != "help" {
		return run(append([]string{args[1], "--help"}, args[2:]...), stdout, stderr, env)
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args[1:], stdout, stderr)
	case "show":
		return show(context.Background(), args[1:], stdout, stderr, env)
	case "list":
		return list(context.Background(), args[1:], stdout, stderr, env)
	case "unlock":
		return unlock(context.Background(), args[1:], stdout, stderr, env)
	case "add":
		return add(context.Background(), args[1:], stdout, stderr, env)
	case "version", "--version", "-version":
		return version(args[1:], stdout, stderr)
	case "event":
		return event(context.Background(), args[1:], stdout, stderr, env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "apify-rq: unknown command %q (want serve, show, list, unlock, add, version or event)\n\n%s", args[0], usage)
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
		fmt.Fprintf(fs.Output(), "Usage:\n  apify-rq %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and refuses positional arguments. Help asked for
// (-h, --help) goes to stdout; a bad flag's message and the usage go to
// stderr.
func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (every option is a --flag)\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

// parseFlags is parse for a command that takes arguments after its flags.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	var msg bytes.Buffer
	fs.SetOutput(&msg)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK, false
	}
	_, _ = msg.WriteTo(stderr)
	if err != nil {
		return exitUsage, false
	}
	return 0, true
}
