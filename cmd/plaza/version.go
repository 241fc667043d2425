package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

const versionUsage = `Usage: plaza version

Prints Plaza's version, the commit it was built from when known, and the Go
toolchain that built it.
`

func (a app) version(args []string) int {
	c := newCommand("version", versionUsage)
	if code, ok := c.parse(a, args); !ok {
		return code
	}
	fmt.Fprintln(a.stdout, versionString())
	return exitOK
}

// versionString reads the version from the build information the Go
// toolchain embeds, so there is nothing to keep in sync by hand.
func versionString() string {
	version, revision, modified := "(devel)", "", false
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	out := "plaza " + version
	if revision != "" {
		if len(revision) > 12 {
			revision = revision[:12]
		}
		out += " " + revision
		if modified {
			out += "+modified"
		}
	}
	return fmt.Sprintf("%s (%s, %s/%s)", out, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
