package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/rqkit/apify"
)

// version prints the module's version (apify.Version, which the library
// also sends in its User-Agent) and the Go it was built with.
func version(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", stderr)
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	fmt.Fprintf(stdout, "apify-rq %s (%s, %s/%s)\n", apify.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
