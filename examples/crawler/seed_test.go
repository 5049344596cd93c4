package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The instructions in the package documentation, run as written (the
// emulator in-process in place of apify-rq serve, on its own port): the
// crawler seeds the empty queue and crawls it.
func TestCrawlerInstructionsWorkAsWritten(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	const serveLine = "//\tgo run ./cmd/apify-rq serve --queue demo\n"
	m := regexp.MustCompile(`(?m)^//\tAPIFY_API_BASE_URL=http://127\.0\.0\.1:8080 go run \./examples/crawler (.*)$`).FindSubmatch(src)
	require.Contains(t, string(src), serveLine)
	require.NotNil(t, m, "the crawler's command line")
	args := strings.Fields(strings.ReplaceAll(string(m[1]), "'", "")) // as the shell passes them

	srv := apifytest.Start(t, apifytest.WithQueue("demo"))
	t.Setenv("APIFY_API_BASE_URL", srv.URL)
	t.Setenv("APIFY_TOKEN", "")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(append(args, "--work", "1ms"), &out, &errOut), errOut.String())
	assert.Contains(t, out.String(), "crawler: the queue was empty; added 1 start URL\n")
	assert.Contains(t, out.String(), "crawler: handled https://example.com/\n")
	assert.Regexp(t, `(?m)^crawler: queue finished: handled 1, failed 0`, out.String())
}

func TestCrawlerSeedsOnlyAnEmptyQueue(t *testing.T) {
	srv := apifytest.Start(t)
	empty := srv.CreateQueue("empty")
	t.Setenv("APIFY_API_BASE_URL", srv.URL)
	t.Setenv("APIFY_TOKEN", "")

	var out, errOut bytes.Buffer
	code := run([]string{"--queue", empty, "--client-key", "seeder", "--work", "1ms",
		"--seed", "https://s.test/a", "--seed", "https://s.test/b, https://s.test/c"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "added 3 start URLs")
	assert.Regexp(t, `(?m)^crawler: queue finished: handled 3,`, out.String())
	var urls []string
	for _, r := range srv.Handled(empty) {
		urls = append(urls, r.URL)
	}
	assert.Equal(t, []string{"https://s.test/a", "https://s.test/b", "https://s.test/c"}, urls)
	info, err := srv.Client().RequestQueue(empty).Get(context.Background())
	require.NoError(t, err)
	assert.False(t, info.HadMultipleClients, "seeded under the crawler's own clientKey")

	// A queue with requests is left as it is.
	full := seedQueue(t, srv, 2)
	out.Reset()
	require.NoError(t, seed(context.Background(), srv.Client().RequestQueue(full), []string{"https://s.test/new"}, "seeder", &out))
	assert.Equal(t, "crawler: the queue has 2 requests; --seed adds nothing\n", out.String())
	assert.Len(t, srv.Requests(full), 2)

	// A bad seed is a usage error, before any call.
	errOut.Reset()
	assert.Equal(t, 2, run([]string{"--queue", full, "--seed", "example.com"}, &out, &errOut))
	assert.Contains(t, errOut.String(), `"example.com" is not an http or https URL`)
	assert.Equal(t, 2, run([]string{"--queue", full, "https://s.test/x"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "start URLs go in --seed")
}
