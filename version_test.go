package apify

import (
	"os"
	"regexp"
	"testing"
)

// The newest release in CHANGELOG.md is the Version the module reports in
// its User-Agent: a release that bumps one without the other fails here.
func TestVersionMatchesChangelog(t *testing.T) {
	b, err := os.ReadFile("CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("CHANGELOG.md has no release heading such as \"## [1.2.3] - 2026-01-31\"")
	}
	if got := string(m[1]); got != Version {
		t.Errorf("CHANGELOG.md's newest release is %s, Version is %s", got, Version)
	}
}
