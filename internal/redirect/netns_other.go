//go:build !linux

package redirect

import (
	"fmt"
	"runtime"
)

// inNetns runs fn directly when no namespace is named; network namespaces exist only on
// Linux.
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	return fmt.Errorf("network namespace %q: namespaces need Linux, this is %s", netns, runtime.GOOS)
}
