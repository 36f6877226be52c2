package memtrim

import "syscall"

func dontNeed(addr, length uint64) error {
	// A raw syscall: the range is the process's own mapping, not a Go slice.
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(addr), uintptr(length), syscall.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
