package memtrim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
)

// Mapping is one line of /proc/PID/maps that Trim may advise on.
type Mapping struct {
	Start, End uint64
	Perms      string // e.g. "r-xp"
	Path       string
}

// Result says what Trim did.
type Result struct {
	Mappings int    // read-only mappings of the executable advised
	Bytes    uint64 // their total size
}

// ParseMaps reads /proc/PID/maps lines and returns the private, read-only mappings of
// the file at exe (the executable's text and read-only data). Writable mappings are
// never returned: their pages may hold modified data (.data, relocations) that
// MADV_DONTNEED would discard.
func ParseMaps(r io.Reader, exe string) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		// start-end perms offset dev inode [path]
		f := bytes.Fields(sc.Bytes())
		if len(f) < 5 {
			return nil, fmt.Errorf("maps line %d: %d fields, want at least 5", line, len(f))
		}
		if len(f) < 6 || string(f[5]) != exe {
			continue
		}
		perms := string(f[1])
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		dash := bytes.IndexByte(f[0], '-')
		if dash <= 0 {
			return nil, fmt.Errorf("maps line %d: address range %q has no '-'", line, f[0])
		}
		start, err1 := strconv.ParseUint(string(f[0][:dash]), 16, 64)
		end, err2 := strconv.ParseUint(string(f[0][dash+1:]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("maps line %d: bad address range %q", line, f[0])
		}
		out = append(out, Mapping{Start: start, End: end, Perms: perms, Path: exe})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading maps: %w", err)
	}
	return out, nil
}

// Trim drops the resident pages of the running executable's read-only mappings
// (ReleaseExecutable), then returns freed heap to the operating system. Call it once
// start-up work (package initialisers, configuration, the first certificate) is done.
// It lowers the current RSS (VmRSS), not the peak the kernel already recorded (VmHWM).
//
// The order matters for that peak: the kernel records VmHWM at the first page drop,
// and the collection debug.FreeOSMemory runs first reads the stack maps and type data
// of everything live. Dropping the executable's pages before it keeps what the
// collection faults back in out of the recorded peak.
func Trim() (Result, error) {
	res, err := ReleaseExecutable()
	debug.FreeOSMemory()
	return res, err
}

// ReleaseExecutable drops the page-table entries of the running executable's
// read-only mappings (text, read-only data, the runtime's function tables) without
// running the collector, so it is cheap enough to call at every start-up stage. Pages
// still in use fault back in from the page cache (minor faults, no I/O). This lowers
// the process's RSS, not the host's memory use: the pages stay in the page cache,
// shared with every process mapping the binary, and stay charged to the cgroup that
// first read them.
func ReleaseExecutable() (Result, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Result{}, fmt.Errorf("finding the executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return Result{}, fmt.Errorf("reading the process's mappings: %w", err)
	}
	defer f.Close()
	ms, err := ParseMaps(f, exe)
	if err != nil {
		return Result{}, fmt.Errorf("/proc/self/maps: %w", err)
	}
	var res Result
	for _, m := range ms {
		if err := dontNeed(m.Start, m.End-m.Start); err != nil {
			return res, fmt.Errorf("madvise %x-%x %s: %w", m.Start, m.End, m.Perms, err)
		}
		res.Mappings++
		res.Bytes += m.End - m.Start
	}
	return res, nil
}
