package sidecar

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Go runtime defaults for a sidecar process. A sidecar's live heap is a few MB of
// buffers and policy. A higher GC percentage bounded by a soft memory limit trades a
// little memory, capped, for fewer collections during allocation bursts (handshakes,
// config pushes). The HTTP/1.1 data path allocates almost nothing per request, so on
// steady traffic 100 and 400 measure the same within noise (bench/proxy.sh,
// docs/performance.md). Under load the limit, not the percentage, sets the heap goal:
// 14 MiB keeps the sidecar's anonymous memory about 2 MB lower than 16 MiB did, with
// no measurable cost in CPU per request or maximum throughput (bench/proxy.sh, three
// 10 s runs each); 12 MiB is below what the runtime needs at 32 connections and the
// collector runs almost continuously (throughput halves).
const (
	DefaultGCPercent   = 400
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
