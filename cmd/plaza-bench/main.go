// Command plaza-bench is a load generator and benchmark runner for Matrix
// homeservers. It speaks only the plain Client-Server API over HTTP and
// imports nothing from Plaza, so the same scenarios measure Plaza, Synapse,
// Conduit or any other server given its base URL.
//
// Run `plaza-bench --help` for the scenarios and flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
