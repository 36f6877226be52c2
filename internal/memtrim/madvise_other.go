//go:build !linux

package memtrim

import "errors"

func dontNeed(addr, length uint64) error {
	return errors.New("memtrim: only implemented on Linux")
}
