package agent

import "context"

// RotateOnce runs one certificate request outside Run, for benchmarks in agent_test.
// The agent must not be running.
func RotateOnce(ctx context.Context, a *Agent) error {
	return a.rotate(ctx, a.cfg.Now(), a.src.current())
}
