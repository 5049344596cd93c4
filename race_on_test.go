//go:build race

package apify

// raceEnabled says the tests run under the race detector, which makes
// every call several times slower: long loops shorten their counts.
const raceEnabled = true
