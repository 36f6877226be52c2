package redirect

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetns runs fn with the calling goroutine's OS thread inside the namespace at netns
// (a name or path; empty runs fn directly). Processes started by fn inherit the
// namespace because the fork happens on that thread. The rest of the process is
// untouched.
func inNetns(netns string, fn func() error) error {
	path, err := NetnsPath(netns)
	if err != nil {
		return err
	}
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// On any failure to get back to the original namespace the goroutine exits still
		// locked, and the runtime then destroys the thread rather than reuse it in the
		// wrong namespace.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: open current namespace: %w", path, err)
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: setns: %w (needs CAP_SYS_ADMIN)", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: setns: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
