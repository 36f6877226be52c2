//go:build !race

package meshtest

// RaceEnabled reports a -race build (see race_on.go).
const RaceEnabled = false
