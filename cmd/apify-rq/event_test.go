package main

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rqkit/apify"
	"github.com/rqkit/apify/apifytest"
)

// eventsURLs waits for serve to print its events URLs and returns them by run.
func eventsURLs(t *testing.T, sv *served) map[string]string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sv.stdout.String(), "set ACTOR_EVENTS_WEBSOCKET_URL") {
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no events URL:\n%s", sv.stdout.String())
		}
		time.Sleep(time.Millisecond)
	}
	urls := map[string]string{}
	re := regexp.MustCompile(`(?m)^apify-rq: platform events of run (\S+) at (ws://\S+)$`)
	for _, m := range re.FindAllStringSubmatch(sv.stdout.String(), -1) {
		urls[m[1]] = m[2]
	}
	return urls
}

func subscribeTo(t *testing.T, url string, logs ...*syncBuffer) *apify.PlatformEvents {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := apify.PlatformEventsOptions{URL: url}
	if len(logs) > 0 {
		opts.Logger = slog.New(slog.NewTextHandler(logs[0], nil))
	}
	e, err := apify.SubscribePlatformEvents(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func nextEvent(t *testing.T, e *apify.PlatformEvents) apify.PlatformEvent {
	t.Helper()
	select {
	case ev := <-e.C():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
	return apify.PlatformEvent{}
}

// runEvent runs apify-rq event with args and the environment env.
func runEvent(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(append([]string{"event"}, args...), &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

func TestServeEventsAndTheEventCommand(t *testing.T) {
	sv := startServe(t, "--events", "--token", "ev-s3cret", "--run-token", "run-s3cret=RUN7")
	urls := eventsURLs(t, sv)
	if len(urls) != 2 || !strings.HasPrefix(urls[apifytest.DefaultRunID], "ws://127.0.0.1:") || !strings.HasSuffix(urls["RUN7"], "/_emulator/events/RUN7") {
		t.Fatalf("events URLs %v in:\n%s", urls, sv.stdout.String())
	}
	env := map[string]string{"APIFY_API_BASE_URL": sv.base, "APIFY_TOKEN": "ev-s3cret"}

	// Nobody connected yet: the event would reach nobody.
	code, out, errOut := runEvent(env, "aborting")
	if code != exitAPI || out != "" || !strings.Contains(errOut, "409 no-event-connections") || !strings.Contains(errOut, "ACTOR_EVENTS_WEBSOCKET_URL") {
		t.Errorf("nobody connected: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}

	logs := &syncBuffer{}
	e := subscribeTo(t, urls[apifytest.DefaultRunID], logs)
	for _, tc := range []struct {
		args  []string
		check func(apify.PlatformEvent) bool
	}{
		{[]string{"migrating", "--time-remaining", "10s"}, func(ev apify.PlatformEvent) bool {
			return ev.Name == "migrating" && ev.TimeRemaining == 10*time.Second
		}},
		{[]string{"migrating", "--time-remaining", "1500ms"}, func(ev apify.PlatformEvent) bool {
			return ev.TimeRemaining == 1500*time.Millisecond && string(ev.Data) == `{"timeRemainingSecs":1.5}`
		}},
		{[]string{"aborting"}, func(ev apify.PlatformEvent) bool { return ev.Name == "aborting" && ev.Data == nil }},
		{[]string{"persistState", "--migrating"}, func(ev apify.PlatformEvent) bool { return ev.Name == "persistState" && ev.IsMigrating }},
		{[]string{"persistState"}, func(ev apify.PlatformEvent) bool {
			return ev.Name == "persistState" && !ev.IsMigrating && string(ev.Data) == `{"isMigrating":false}`
		}},
		{[]string{"somethingNew", "--data", `{"a": [1, 2]}`}, func(ev apify.PlatformEvent) bool {
			return ev.Name == "somethingNew" && string(ev.Data) == `{"a":[1,2]}`
		}},
		{[]string{"migrating", "--data", `{"timeRemainingSecs": 3}`}, func(ev apify.PlatformEvent) bool {
			return ev.TimeRemaining == 3*time.Second
		}},
		// The flags may come first, as with the other commands.
		{[]string{"--time-remaining", "2s", "migrating"}, func(ev apify.PlatformEvent) bool {
			return ev.Name == "migrating" && ev.TimeRemaining == 2*time.Second
		}},
		{[]string{"--migrating", "persistState", "--timeout", "5s"}, func(ev apify.PlatformEvent) bool {
			return ev.Name == "persistState" && ev.IsMigrating
		}},
	} {
		code, out, errOut := runEvent(env, tc.args...)
		name := tc.args[0]
		if strings.HasPrefix(name, "--") {
			name = map[string]string{"--time-remaining": "migrating", "--migrating": "persistState"}[name]
		}
		if code != exitOK || out != "sent "+name+" to 1 connection\n" || errOut != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tc.args, code, out, errOut)
			continue
		}
		if ev := nextEvent(t, e); !tc.check(ev) {
			t.Errorf("%v: the Actor got %+v (data %s)", tc.args, ev, ev.Data)
		}
	}

	// Every connected run gets it; flags win over the environment.
	other := subscribeTo(t, urls["RUN7"])
	code, out, _ = runEvent(map[string]string{"APIFY_API_BASE_URL": closedServerURL(t), "APIFY_TOKEN": "wrong"},
		"aborting", "--base-url", sv.base+"/v2/", "--token", "run-s3cret")
	if code != exitOK || out != "sent aborting to 2 connections\n" {
		t.Errorf("two connections: exit %d, stdout %q", code, out)
	}
	nextEvent(t, e)
	nextEvent(t, other)

	code, _, errOut = runEvent(map[string]string{"APIFY_API_BASE_URL": sv.base}, "aborting")
	if code != exitAPI || !strings.Contains(errOut, "401 token-not-provided") || !strings.Contains(errOut, "--token or APIFY_TOKEN") {
		t.Errorf("no token: exit %d, stderr:\n%s", code, errOut)
	}

	// serve stops promptly with Actors connected, and ends their connections.
	stopped := make(chan int, 1)
	go func() { stopped <- sv.stop() }()
	select {
	case code := <-stopped:
		if code != exitOK {
			t.Errorf("serve exited %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop with an events connection open")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "code=1001") { // going away: the Actor's connection was ended
		if time.Now().After(deadline) {
			t.Fatalf("the Actor's connection outlived serve; its log:\n%s", logs.String())
		}
		time.Sleep(time.Millisecond)
	}
	for _, s := range []string{"ev-s3cret", "run-s3cret"} {
		if strings.Contains(sv.stdout.String()+sv.stderr.String(), s) {
			t.Errorf("serve printed a token")
		}
	}
}

func TestEventCommandErrors(t *testing.T) {
	noEvents := startServe(t) // without --events
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		has  []string
	}{
		{"no name", nil, []string{"--time-remaining", "1s"}, exitUsage, []string{"NAME is required"}},
		{"no flags at all", nil, nil, exitUsage, []string{"NAME is required"}},
		{"migrating without the time", nil, []string{"migrating"}, exitUsage, []string{"migrating needs --time-remaining"}},
		{"negative time", nil, []string{"migrating", "--time-remaining", "-2s"}, exitUsage, []string{"migrating needs --time-remaining"}},
		{"time for another event", nil, []string{"aborting", "--time-remaining", "1s"}, exitUsage, []string{"--time-remaining goes with migrating only"}},
		{"--migrating for another event", nil, []string{"migrating", "--migrating"}, exitUsage, []string{"--migrating goes with persistState only"}},
		{"--data and a flag it replaces", nil, []string{"persistState", "--migrating", "--data", "{}"}, exitUsage, []string{"--data replaces"}},
		{"--data not JSON", nil, []string{"x", "--data", "{nope"}, exitUsage, []string{"--data is not valid JSON"}},
		{"two names", nil, []string{"aborting", "migrating"}, exitUsage, []string{`unexpected argument "migrating"`}},
		{"two names after the flags", nil, []string{"--timeout", "1s", "aborting", "migrating"}, exitUsage, []string{`unexpected argument "migrating"`}},
		{"bad base URL", nil, []string{"aborting", "--base-url", "ftp://x"}, exitUsage, []string{"--base-url must be"}},
		{"base URL with a query", nil, []string{"aborting", "--base-url", "http://x/?token=t"}, exitUsage, []string{"--base-url must be"}},
		{"bad timeout", nil, []string{"aborting", "--timeout", "0s"}, exitUsage, []string{"--timeout must be positive"}},
		{"nobody listens", map[string]string{"APIFY_API_BASE_URL": closedServerURL(t)}, []string{"aborting"}, exitNetwork,
			[]string{"connection refused", "serve --events"}},
		{"no answer", nil, []string{"aborting", "--base-url", neverAnswers(t), "--timeout", "100ms"}, exitNetwork, []string{"--timeout 100ms"}},
		{"serve without --events", map[string]string{"APIFY_API_BASE_URL": noEvents.base}, []string{"aborting"}, exitAPI,
			[]string{"404 page-not-found", "apify-rq serve --events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runEvent(tc.env, tc.args...)
			if code != tc.code || out != "" {
				t.Errorf("exit %d (want %d), stdout %q, stderr:\n%s", code, tc.code, out, errOut)
			}
			for _, h := range tc.has {
				if !strings.Contains(errOut, h) {
					t.Errorf("stderr does not say %q:\n%s", h, errOut)
				}
			}
		})
	}
}

// event's help agrees with its flags, as TestHelpAgreesWithTheFlags checks
// for the other commands.
func TestEventHelp(t *testing.T) {
	none := func(string) string { return "" }
	var out1, out2, errs bytes.Buffer
	if run([]string{"event", "--help"}, &out1, &errs, none) != 0 || run([]string{"help", "event"}, &out2, &errs, none) != 0 || errs.Len() > 0 {
		t.Fatalf("help: %s", errs.String())
	}
	if out1.String() != out2.String() {
		t.Errorf("event --help and help event differ")
	}
	usageLine, _, _ := strings.Cut(strings.TrimPrefix(out1.String(), "Usage:\n"), "\n")
	var inSynopsis, inFlags []string
	for _, m := range regexp.MustCompile(`\[--([a-z-]+)`).FindAllStringSubmatch(usageLine, -1) {
		inSynopsis = append(inSynopsis, m[1])
	}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(out1.String(), -1) {
		inFlags = append(inFlags, m[1])
	}
	slices.Sort(inSynopsis)
	slices.Sort(inFlags)
	if !slices.Equal(inSynopsis, inFlags) {
		t.Errorf("the synopsis names %v, the flags are %v", inSynopsis, inFlags)
	}
	var top bytes.Buffer
	run([]string{"help"}, &top, &errs, none)
	if !strings.Contains(top.String(), "apify-rq event  "+eventSynopsis) || !strings.Contains(top.String(), "serve --events") {
		t.Errorf("the top-level usage does not show event:\n%s", top.String())
	}
}
