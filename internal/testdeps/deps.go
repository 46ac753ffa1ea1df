package testdeps

import (
	"os"
	"path/filepath"
)

// Chromium is a headless-capable Chromium or Chrome browser: on PATH, or
// installed as a macOS app.
var Chromium = Dep{
	Name: "Chromium",
	Find: firstOf(lookPath("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"),
		executable("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"),
		executable("/Applications/Chromium.app/Contents/MacOS/Chromium")),
	How: "`make test` installs Debian's chromium where apt-get exists and it runs as root; elsewhere install Chromium or Chrome on PATH",
}

// PgBouncer is a PgBouncer program: one on PATH (Homebrew's, a distribution
// package's), else Debian's package that `make test` unpacks under
// bin/pgbouncer where apt-get and dpkg exist (its bin/pgbouncer/pgbouncer
// wrapper sets the library path).
var PgBouncer = Dep{
	Name: "PgBouncer",
	Find: firstOf(lookPath("pgbouncer"), executable("/usr/sbin/pgbouncer"), executable("bin/pgbouncer/pgbouncer")),
	How:  "`brew install pgbouncer` or `apt-get install pgbouncer` (where apt-get and dpkg exist, `make test` unpacks Debian's under bin/ without installing it)",
}

// E2EDir is the directory of the end-to-end tests' npm packages (MCP
// Inspector, the TypeScript SDK), installed by `npm ci` in `make test`.
func E2EDir() string {
	return filepath.Join(RepoRoot(), "cmd", "gatehouse", "testdata", "e2e")
}

// Node is the Node.js that package.json pins (the npm package "node", 22.x:
// MCP Inspector 2.x needs Node >= 22.19, whatever Node runs npm), with the
// end-to-end npm packages installed by `npm ci` in [E2EDir]. Need returns
// that node program; tests run every npm program with it.
var Node = Dep{
	Name: "Node.js with the end-to-end npm packages",
	Find: func() string {
		if _, err := os.Stat(filepath.Join(E2EDir(), "node_modules", ".installed")); err != nil {
			return ""
		}
		return executable(filepath.Join(E2EDir(), "node_modules", ".bin", "node"))()
	},
	How: "install Node.js and npm (https://nodejs.org), then `make test` runs npm ci in cmd/gatehouse/testdata/e2e, which also installs the pinned Node.js 22",
}
