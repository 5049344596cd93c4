//go:build !race

package apifytest

const raceEnabled = false
