// Command skipped prints, after `make test`, one line per missing optional
// program naming the tests that skipped for want of it and how to get it,
// read from the file that [testdeps.Need] appends to (testdeps.LogEnv).
// go test shows no skip messages for packages that pass, so without this
// line a partial run would look whole.
//
// Usage: go run ./internal/testdeps/skipped FILE
//
// It exits 0 when nothing was skipped or when some tests were (a loudly
// partial run is green on a developer's machine), and 1 when some were
// while CI is "true" (where every skip is a failure), or on bad usage.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: skipped FILE")
		os.Exit(1)
	}
	lines, err := summary(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "skipped:", err)
		os.Exit(1)
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	if len(lines) > 0 && os.Getenv("CI") == "true" {
		os.Exit(1)
	}
}

// summary reads the skip log (dep, test and how, tab-separated) and returns
// one line per dep, sorted; a missing file means nothing was skipped.
func summary(name string) ([]string, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tests := map[string][]string{}
	how := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) != 3 {
			continue
		}
		tests[parts[0]] = append(tests[parts[0]], parts[1])
		how[parts[0]] = parts[2]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var lines []string
	for dep, ts := range tests {
		sort.Strings(ts)
		lines = append(lines, fmt.Sprintf("*** PARTIAL TEST RUN: %d test(s) SKIPPED because %s is missing (%s); get it with: %s",
			len(ts), dep, strings.Join(ts, ", "), how[dep]))
	}
	sort.Strings(lines)
	return lines, nil
}
