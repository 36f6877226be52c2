// Command meshguard is the zero-trust service-mesh security layer: control plane,
// workload agent, sidecar proxy and operator CLI in one binary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshguard/meshguard/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
