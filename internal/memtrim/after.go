package memtrim

import (
	"context"
	"log/slog"
	"time"
)

// After waits d (unless ctx ends first), then calls Trim once and logs what it did.
// A sidecar calls it in its own goroutine at start-up: by then initialisation,
// configuration loading and the first certificate are done, and what they touched
// is no longer needed resident.
func After(ctx context.Context, d time.Duration, log *slog.Logger) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	res, err := Trim()
	if err != nil {
		log.Warn("memory trim failed", "err", err)
		return
	}
	log.Debug("memory trimmed", "mappings", res.Mappings, "bytes", res.Bytes)
}
