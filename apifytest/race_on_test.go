//go:build race

package apifytest

// raceEnabled says the tests run under the race detector, which makes
// compression several times slower: the bomb tests shrink their bombs.
const raceEnabled = true
