package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rqkit/apify"
)

const eventSynopsis = "NAME [--time-remaining 10s] [--migrating] [--data JSON] [--token T] [--base-url URL] [--timeout 10s]"

// defaultServeBase is where serve listens by default, and where event
// sends when neither --base-url nor APIFY_API_BASE_URL says otherwise.
const defaultServeBase = "http://127.0.0.1:8080"

// event sends one platform event to a running "apify-rq serve --events",
// through the emulator's POST /_emulator/events.
func event(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := newFlagSet("event", eventSynopsis, stderr)
	remaining := fs.Duration("time-remaining", -1, "migrating: the time left before the platform kills the process, such as 10s (sent as timeRemainingSecs)")
	migrating := fs.Bool("migrating", false, "persistState: the state is saved because a migration follows (isMigrating)")
	data := fs.String("data", "", "the event's data as `JSON`, for any event (instead of --time-remaining or --migrating)")
	var token secretFlags
	fs.Var(&token, "token", "the emulator's `token`, when it has any (default $APIFY_TOKEN)")
	baseURL := fs.String("base-url", "", "the emulator's base `URL` (default $APIFY_API_BASE_URL, else "+defaultServeBase+")")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")

	// NAME comes first, or after the flags (event --base-url U migrating).
	name := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if rest := fs.Args(); name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
		if code, ok := parseFlags(fs, rest, stdout, stderr); !ok { // flags after NAME too
			return code
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apify-rq event: unexpected argument %q (one event NAME, then --flags)\n", fs.Arg(0))
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	body, msg := eventBody(name, set, *remaining, *migrating, *data)
	if msg != "" {
		fmt.Fprintf(stderr, "apify-rq event: %s\n", msg)
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "apify-rq event: --timeout must be positive, such as 10s; got %v\n", *timeout)
		return exitUsage
	}
	base := env("APIFY_API_BASE_URL")
	if *baseURL != "" {
		base = *baseURL
	}
	if base == "" {
		base = defaultServeBase
	}
	base = strings.TrimSuffix(strings.TrimSuffix(strings.TrimRight(base, "/"), "/v2"), "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		fmt.Fprintf(stderr, "apify-rq event: --base-url must be the emulator's http:// address, such as %s, without user info or query\n", defaultServeBase)
		return exitUsage
	}
	tok := env("APIFY_TOKEN")
	if n := len(token.repeated); n > 0 {
		tok = token.repeated[n-1]
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_emulator/events", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "apify-rq event: %v\n", err)
		return exitUsage
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "apify-rq/"+apify.Version)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	// One attempt: an event sent twice is two events.
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		hint := "is apify-rq serve --events running there? check --base-url"
		if ctx.Err() != nil {
			hint = fmt.Sprintf("no answer within --timeout %v; check --base-url", *timeout)
		}
		fmt.Fprintf(stderr, "apify-rq event: POST %s/_emulator/events: %v\napify-rq event: %s\n", base, err, hint)
		return exitNetwork
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var out struct {
		Data struct {
			Connections int `json:"connections"`
		} `json:"data"`
		Error struct {
			Type, Message string
		} `json:"error"`
	}
	decodeErr := json.Unmarshal(raw, &out)
	if resp.StatusCode == http.StatusOK && decodeErr == nil {
		fmt.Fprintf(stdout, "sent %s to %s\n", name, plural(out.Data.Connections, "connection"))
		return exitOK
	}
	what := fmt.Sprintf("%d %s", resp.StatusCode, out.Error.Type)
	if out.Error.Message != "" {
		what += ": " + out.Error.Message
	}
	fmt.Fprintf(stderr, "apify-rq event: POST %s/_emulator/events: %s\n", base, strings.TrimSpace(what))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		fmt.Fprintln(stderr, "apify-rq event: there is no events endpoint there; start the emulator with apify-rq serve --events, and check --base-url")
	case resp.StatusCode == http.StatusConflict:
		fmt.Fprintln(stderr, "apify-rq event: connect the Actor first: set ACTOR_EVENTS_WEBSOCKET_URL to the events URL serve printed")
	case resp.StatusCode == http.StatusUnauthorized:
		fmt.Fprintln(stderr, "apify-rq event: the emulator has tokens; pass one with --token or APIFY_TOKEN")
	}
	return exitAPI
}

// eventBody builds the JSON body {"name", "data"} from the flags, or says
// what is wrong with them.
func eventBody(name string, set map[string]bool, remaining time.Duration, migrating bool, data string) ([]byte, string) {
	if name == "" {
		return nil, "the event NAME is required, before the flags: apify-rq event migrating --time-remaining 10s"
	}
	var d any
	switch {
	case set["time-remaining"] && name != apify.PlatformEventMigrating:
		return nil, "--time-remaining goes with migrating only"
	case set["migrating"] && name != apify.PlatformEventPersistState:
		return nil, "--migrating goes with persistState only"
	case set["data"] && (set["time-remaining"] || set["migrating"]):
		return nil, "--data replaces --time-remaining and --migrating; give one or the other"
	case set["data"]:
		if !json.Valid([]byte(data)) {
			return nil, fmt.Sprintf("--data is not valid JSON: %q", data)
		}
		d = json.RawMessage(data)
	case name == apify.PlatformEventMigrating:
		if !set["time-remaining"] || remaining < 0 {
			return nil, "migrating needs --time-remaining, the time left before the process is killed, such as 10s (0 or more)"
		}
		d = map[string]float64{"timeRemainingSecs": remaining.Seconds()}
	case name == apify.PlatformEventPersistState:
		d = map[string]bool{"isMigrating": migrating}
	}
	b, err := json.Marshal(struct {
		Name string `json:"name"`
		Data any    `json:"data,omitempty"`
	}{name, d})
	if err != nil {
		return nil, err.Error()
	}
	return b, ""
}
