package sidecar

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Go runtime defaults for a sidecar process. Under load the heap goal sets most of a
// sidecar's anonymous memory: with 400 the soft limit capped it at about twice the
// live heap (anonymous memory ~9.9 MB under bench/proxy.sh's load); with 50 it is 1.5
// times the live heap (~7.3 MB), about 1.5-2 MB less peak RSS. That used to cost
// throughput; since the multiplexed path allocates 4 times per request
// (TestMuxRequestAllocs) the collector runs 16 times in 6 s of maximum throughput on
// the server sidecar at 50, about 0.4% of a core (gctrace), against 8 times at 400
// (docs/performance.md). The limit stays as a backstop for bursts (handshake storms,
// config pushes).
const (
	DefaultGCPercent   = 50
	DefaultMemoryLimit = "14MiB"
)

// SetRuntimeDefaults applies the GC percentage and soft memory limit unless the
// environment (GOGC, GOMEMLIMIT) already set them; explicit flags (forced) win over
// the environment. limit is a size like "16MiB", "0" for none.
func SetRuntimeDefaults(gcPercent int, limit string, forceGC, forceLimit bool) error {
	if forceGC || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if forceLimit || os.Getenv("GOMEMLIMIT") == "" {
		n, err := parseSize(limit)
		if err != nil {
			return fmt.Errorf("--memory-limit %q: %w", limit, err)
		}
		if n > 0 {
			debug.SetMemoryLimit(n)
		}
	}
	return nil
}

// parseSize reads GOMEMLIMIT's syntax: a number with an optional B, KiB, MiB, GiB or
// TiB suffix.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a size such as 16MiB, 512KiB or 0")
	}
	return n * mult, nil
}
