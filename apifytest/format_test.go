package apifytest

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Printing a Server, as a test's log line might (t.Logf("%v", srv)), never
// shows the tokens it was configured with: every fmt verb and slog print
// its URL and how many tokens it has, nothing more.
func TestFormattingAServerShowsNoToken(t *testing.T) {
	const user, run, plain = "user-tok-SECRET-1", "run-tok-SECRET-2", "plain-tok-SECRET-3"
	started := Start(t, WithToken(plain), WithUserToken(user, "alice"), WithRunToken(run, "RUN1"))
	unstarted := NewUnstartedServer(WithRunToken(run, "RUN1"))
	for _, s := range []*Server{started, unstarted} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, s)
			if strings.Contains(out, "SECRET") || strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", "SECRET")) {
				t.Errorf("%s of a Server shows a token: %s", verb, out)
			}
		}
		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("emulator", "srv", s)
		slog.New(slog.NewJSONHandler(&js, nil)).Info("emulator", "srv", s)
		if strings.Contains(text.String()+js.String(), "SECRET") {
			t.Errorf("slog shows a token:\n%s%s", text.String(), js.String())
		}
	}
	if got, want := fmt.Sprint(started), "apifytest.Server{URL: "+started.URL+", tokens: 3}"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := fmt.Sprintf("%+v", unstarted), "apifytest.Server{URL: not started, tokens: 1}"; got != want {
		t.Errorf("%%+v = %q, want %q", got, want)
	}
	var nilServer *Server
	if got := fmt.Sprint(nilServer); got != "apifytest.Server(nil)" {
		t.Errorf("a nil Server prints %q", got)
	}
}
