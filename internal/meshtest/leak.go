package meshtest

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// CheckNoLeaks fails the test if, after every other cleanup has run, goroutines whose
// stacks contain any of frames are still running 5s later. Call it first in the test
// so that its cleanup runs last, after the servers it watches have stopped.
func CheckNoLeaks(tb testing.TB, frames ...string) {
	tb.Helper()
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			var leaked []string
			for _, g := range strings.Split(stacks, "\n\n") {
				for _, f := range frames {
					if strings.Contains(g, f) {
						leaked = append(leaked, g)
						break
					}
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				tb.Errorf("%d leaked goroutines:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
