package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's code snippets are this package's code, compiled and tested
// here: each snippet, marked "<!-- snippet: FILE NAME -->" in the README,
// is the region of FILE between "// README: NAME" and "// README: end"
// (less its common indentation), and every region is in the README.
func TestREADMESnippetsAreThisCode(t *testing.T) {
	readme := readFile(t, "../../README.md")
	marked := regexp.MustCompile("(?m)^<!-- snippet: (\\S+) ([^>]+?) -->\n```go\n((?s:.*?))```\n").FindAllStringSubmatch(readme, -1)
	require.Len(t, marked, 3, "the README's snippets: seed and consume, handler, test")
	seen := map[string]bool{}
	for _, m := range marked {
		file, name, snippet := m[1], m[2], m[3]
		seen[file+" "+name] = true
		want := region(t, readFile(t, filepath.Join("../..", file)), name)
		assert.Equal(t, want, snippet, "the README's snippet %q differs from %s: copy the region over", name, file)
	}
	for _, file := range []string{"main.go", "handler.go", "quickstart_test.go"} {
		for _, m := range regexp.MustCompile(`(?m)^// README: (.+)$`).FindAllStringSubmatch(readFile(t, file), -1) {
			if m[1] != "end" {
				assert.True(t, seen["examples/quickstart/"+file+" "+m[1]], "region %q of %s is not in the README", m[1], file)
			}
		}
	}
}

// region returns the lines between "// README: name" and the next
// "// README: end", blank lines at either end and common tabs dropped.
func region(t *testing.T, src, name string) string {
	t.Helper()
	_, after, ok := strings.Cut(src, "\n// README: "+name+"\n")
	require.True(t, ok, "no region %q", name)
	body, _, ok := strings.Cut(after, "\n// README: end\n")
	require.True(t, ok, "region %q does not end", name)
	lines := strings.Split(strings.Trim(body, "\n"), "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			n := len(l) - len(strings.TrimLeft(l, "\t"))
			if indent < 0 || n < indent {
				indent = n
			}
		}
	}
	for i, l := range lines {
		if len(l) >= indent {
			lines[i] = l[max(indent, 0):]
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// The README's two commands are the ones that work on a fresh machine, and
// CI runs the main example exactly as the README says.
func TestREADMECommands(t *testing.T) {
	readme := readFile(t, "../../README.md")
	block := regexp.MustCompile("(?s)## Quick start\n.*?```sh\n(.*?)```").FindStringSubmatch(readme)
	require.NotNil(t, block)
	var cmds []string
	for _, l := range strings.Split(strings.TrimSpace(block[1]), "\n") {
		cmd, _, _ := strings.Cut(l, "#")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	require.Equal(t, []string{"go run ./examples/quickstart", "go test ./..."}, cmds)
	ci := readFile(t, "../../.ci/run")
	assert.Regexp(t, `(?m)^  env -u APIFY_TOKEN -u APIFY_QUEUE_ID `+regexp.QuoteMeta(cmds[0])+`$`, ci, "CI runs the README's main example, offline")
	assert.Regexp(t, `(?m)^go test \./\.\.\.$`, ci)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
