package memtrim_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/memtrim"
)

const exe = "/usr/local/bin/meshguard"

const sampleMaps = `00400000-01021000 r-xp 00000000 fd:01 123 /usr/local/bin/meshguard
01021000-01fe2000 r--p 00c21000 fd:01 123 /usr/local/bin/meshguard
01fe2000-02093000 rw-p 01be2000 fd:01 123 /usr/local/bin/meshguard
02093000-040df000 rw-p 00000000 00:00 0
c000000000-c000400000 rw-p 00000000 00:00 0
7f0000000000-7f0000021000 r--p 00000000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1000-7ffd2000 r-xp 00000000 00:00 0                          [vdso]
`

func TestParseMaps(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []memtrim.Mapping
		wantErr string
	}{
		{
			name: "text and rodata of the executable only",
			in:   sampleMaps,
			want: []memtrim.Mapping{
				{Start: 0x400000, End: 0x1021000, Perms: "r-xp", Path: exe},
				{Start: 0x1021000, End: 0x1fe2000, Perms: "r--p", Path: exe},
			},
		},
		{name: "writable data never", in: "01fe2000-02093000 rw-p 01be2000 fd:01 123 " + exe + "\n"},
		{name: "shared mapping never", in: "00400000-01021000 r-xs 00000000 fd:01 123 " + exe + "\n"},
		{name: "other file", in: "00400000-01021000 r-xp 00000000 fd:01 123 /usr/bin/other\n"},
		{name: "empty", in: ""},
		{name: "short line", in: "00400000-01021000 r-xp\n", wantErr: "maps line 1: 2 fields"},
		{name: "bad range", in: "zz-01021000 r-xp 00000000 fd:01 123 " + exe + "\n", wantErr: "maps line 1: bad address range"},
		{name: "no dash", in: "00400000 r-xp 00000000 fd:01 123 " + exe + "\n", wantErr: "has no '-'"},
		{name: "inverted range", in: "02000000-01000000 r-xp 00000000 fd:01 123 " + exe + "\n", wantErr: "bad address range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := memtrim.ParseMaps(strings.NewReader(tt.in), exe)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMaps error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseMaps = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("mapping %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParseMaps: whatever the input, every mapping returned is a non-empty, private,
// read-only range of the executable; never a writable one.
func FuzzParseMaps(f *testing.F) {
	f.Add(sampleMaps)
	f.Add("00400000-01021000 r-xp 00000000 fd:01 123 " + exe + "\n")
	f.Add("01fe2000-02093000 rw-p 01be2000 fd:01 123 " + exe + "\n")
	f.Add("ffffffffffffffff-0 r--p 0 0 0 " + exe)
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := memtrim.ParseMaps(strings.NewReader(in), exe)
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.End <= m.Start || m.Path != exe || len(m.Perms) != 4 || m.Perms[0] != 'r' || m.Perms[1] != '-' || m.Perms[3] != 'p' {
				t.Fatalf("ParseMaps(%q) returned %+v", in, m)
			}
		}
	})
}

// TestReleaseLowersRSS releases this test binary's pages for real, both ways, and
// checks that its file-backed resident memory went down and that the process still
// runs the code it dropped.
func TestReleaseLowersRSS(t *testing.T) {
	for _, tt := range []struct {
		name string
		fn   func() (memtrim.Result, error)
	}{
		{"Trim", memtrim.Trim},
		{"ReleaseExecutable", memtrim.ReleaseExecutable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Fault the code and data back in, so that there is something to drop.
			_ = strconv.Itoa(12345) + strings.ToUpper("warm")
			before := statusKiB(t, "RssFile")
			res, err := tt.fn()
			if err != nil {
				t.Fatal(err)
			}
			after := statusKiB(t, "RssFile")
			if res.Mappings < 2 || res.Bytes == 0 {
				t.Errorf("%s = %+v, want the executable's text and read-only data", tt.name, res)
			}
			if after >= before {
				t.Errorf("RssFile %d kB after %s, %d kB before: want lower", after, tt.name, before)
			}
			// Code and read-only data fault back in from the page cache.
			if got := strconv.Itoa(12345) + strings.ToUpper("ok"); got != "12345OK" {
				t.Fatalf("after %s: %q", tt.name, got)
			}
		})
	}
}

func TestAfterStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { memtrim.After(ctx, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("After did not return when its context ended")
	}
}

func statusKiB(t *testing.T, field string) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("/proc/self/status %s: %v", field, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/self/status has no %s", field)
	return 0
}
