//go:build race

package meshtest

// RaceEnabled reports a -race build: the race detector makes sync.Pool drop items at
// random, so allocation counts do not hold under it.
const RaceEnabled = true
