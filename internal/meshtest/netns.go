package meshtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is one network namespace made by NewNetnsPair: loopback up, one end of the veth
// pair with an address in a private /30 that exists only inside the two namespaces.
type Netns struct {
	// Name is the `ip netns` name; Path is its bind mount (/run/netns/Name), what
	// `meshguard init --netns` takes.
	Name, Path string
	// Dev is this namespace's veth end; Addr its IPv4 address with the /30 prefix
	// length, Addr6 its IPv6 address in a random unique-local /64.
	Dev   string
	Addr  netip.Prefix
	Addr6 netip.Prefix
	// Peer is the namespace at the other end of the veth.
	Peer *Netns
}

// IP is the namespace's IPv4 address on the veth.
func (n *Netns) IP() netip.Addr { return n.Addr.Addr() }

// IP6 is the namespace's IPv6 address on the veth.
func (n *Netns) IP6() netip.Addr { return n.Addr6.Addr() }

// RequireNetns skips the test, with a message saying what is missing, unless it runs as
// root with the iproute2 `ip` tool and nsenter available. CI runs as root and installs
// them (scripts/test-deps.sh).
func RequireNetns(tb testing.TB, tools ...string) {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("network-namespace test: needs Linux")
	}
	if os.Geteuid() != 0 {
		tb.Skip("network-namespace test: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create namespaces; CI runs it as root")
	}
	for _, tool := range append([]string{"ip", "nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("network-namespace test: %s not installed (run scripts/test-deps.sh)", tool)
		}
	}
}

// NewNetnsPair creates two namespaces A and B joined by a veth pair, with A at .1 and B
// at .2 of a random /30 in 10.0.0.0/8, and at ::1 and ::2 of a random fd00::/8 /64. Names are unique per call. Both namespaces (and
// with them the veth pair) are removed in t.Cleanup, also when the test fails half-way.
// It skips like RequireNetns.
func NewNetnsPair(tb testing.TB) (a, b *Netns) {
	tb.Helper()
	RequireNetns(tb)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:4])
	// Interface names are at most 15 bytes: "mg" + 8 hex + "a".
	a = &Netns{Name: "mg-" + id + "-a", Dev: "mg" + id + "a"}
	b = &Netns{Name: "mg-" + id + "-b", Dev: "mg" + id + "b"}
	a.Peer, b.Peer = b, a
	base := [4]byte{10, 200 + rnd[0]%50, rnd[1], rnd[2] &^ 3}
	a.Addr = netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 1}), 30)
	b.Addr = netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 2}), 30)
	v6 := [16]byte{0xfd, rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]}
	v6[15] = 1
	a.Addr6 = netip.PrefixFrom(netip.AddrFrom16(v6), 64)
	v6[15] = 2
	b.Addr6 = netip.PrefixFrom(netip.AddrFrom16(v6), 64)

	for _, n := range []*Netns{a, b} {
		n.Path = filepath.Join("/run/netns", n.Name)
		ipCmd(tb, "netns", "add", n.Name)
		tb.Cleanup(func() {
			// Deleting the namespace also destroys its veth end and, with it, the pair.
			if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
				tb.Errorf("meshtest: remove netns %s: %v: %s", n.Name, err, out)
			}
		})
	}
	ipCmd(tb, "link", "add", a.Dev, "netns", a.Name, "type", "veth", "peer", "name", b.Dev, "netns", b.Name)
	for _, n := range []*Netns{a, b} {
		ipCmd(tb, "-n", n.Name, "link", "set", "lo", "up")
		ipCmd(tb, "-n", n.Name, "addr", "add", n.Addr.String(), "dev", n.Dev)
		// nodad: usable at once instead of after duplicate address detection.
		ipCmd(tb, "-n", n.Name, "addr", "add", n.Addr6.String(), "dev", n.Dev, "nodad")
		ipCmd(tb, "-n", n.Name, "link", "set", n.Dev, "up")
	}
	return a, b
}

func ipCmd(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("meshtest: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Command returns a command that runs inside the namespace as the current user.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
}

// CommandAs returns a command that runs inside the namespace as uid:gid with no
// supplementary groups: how a test runs a sidecar as the proxy user that the redirect
// rules exempt.
func (n *Netns) CommandAs(ctx context.Context, uid, gid uint32, name string, args ...string) *exec.Cmd {
	pre := []string{"--net=" + n.Path, "--setuid", strconv.FormatUint(uint64(uid), 10), "--setgid", strconv.FormatUint(uint64(gid), 10), "--", name}
	return exec.CommandContext(ctx, "nsenter", append(pre, args...)...)
}

// Run runs a command to completion inside the namespace, bounded by timeout, and returns
// its stdout; on failure the error carries stderr.
func (n *Netns) Run(tb testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s in netns %s: %w: %s", name, strings.Join(args, " "), n.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Proc is a background process started by StartProc.
type Proc struct {
	Cmd  *exec.Cmd
	name string
	mu   sync.Mutex
	out  bytes.Buffer // stdout and stderr, interleaved
	done chan struct{}
	err  error
}

// Output returns what the process has written so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error once Done is closed.
func (p *Proc) Err() error { <-p.done; return p.err }

func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// StartProc starts cmd in the background (build it with Command or CommandAs). In cleanup
// it is sent SIGTERM, then SIGKILL after 5 s, and its output is logged when the test
// failed. If ready is non-empty StartProc waits, up to 20 s, until the output contains it,
// failing the test if the process exits first or the wait times out.
func StartProc(tb testing.TB, name string, cmd *exec.Cmd, ready string) *Proc {
	tb.Helper()
	p := &Proc{Cmd: cmd, name: name, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	// Its own process group, so that cleanup reaches children (nsenter execs in place,
	// but a sidecar may spawn helpers).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("meshtest: start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		stopProc(p)
		if tb.Failed() {
			tb.Logf("--- output of %s (%v):\n%s", name, p.err, p.Output())
		}
	})
	if ready == "" {
		return p
	}
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.Output(), ready) {
		select {
		case <-p.done:
			tb.Fatalf("meshtest: %s exited before ready (%v):\n%s", name, p.err, p.Output())
		case <-deadline:
			tb.Fatalf("meshtest: %s not ready after 20s (waiting for %q):\n%s", name, ready, p.Output())
		case <-tick.C:
		}
	}
	return p
}

func stopProc(p *Proc) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Do runs fn on an OS thread inside the namespace. Sockets created by fn belong to the
// namespace for their whole life, so a test can dial or listen there in-process.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If the thread cannot return to the original namespace the goroutine exits still
		// locked and the runtime discards the thread.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// WaitTCP waits, up to timeout, until something accepts TCP connections at addr inside
// the namespace.
func (n *Netns) WaitTCP(tb testing.TB, addr string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := n.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("meshtest: nothing accepts on %s in netns %s after %v: %v", addr, n.Name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Forward makes a service on the host's loopback (target, e.g. a control plane started
// with StartControlPlane) reachable inside the namespace at listen (e.g.
// "127.0.0.1:15012"): the listening socket is created in the namespace, each accepted
// connection is relayed to target from the host. It stops when the test ends. Traffic
// never leaves loopback and the namespace.
func (n *Netns) Forward(tb testing.TB, listen, target string) {
	tb.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", listen)
		return err
	}); err != nil {
		tb.Fatalf("meshtest: forward %s in netns %s: %v", listen, n.Name, err)
	}
	var wg sync.WaitGroup
	conns := make(map[net.Conn]struct{})
	var mu sync.Mutex
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				down.Close()
				continue
			}
			track(down, true)
			track(up, true)
			wg.Add(2)
			relay := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				// Half-close so the other direction can finish, then forget the conn.
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go func() {
				relay(up, down)
			}()
			go func() {
				relay(down, up)
				down.Close()
				up.Close()
				track(down, false)
				track(up, false)
			}()
		}
	}()
}

// Capture is a running tcpdump on a namespace's veth, writing a pcap file.
type Capture struct {
	Path string
	proc *Proc
}

// StartCapture starts tcpdump on the namespace's veth end, writing every full packet
// matching filter (a pcap filter such as "tcp", may be empty) to a pcap file in a
// temporary directory. It is bounded: tcpdump stops by itself after maxPackets packets
// or timeout, whichever comes first; Stop ends it earlier. StartCapture returns once
// tcpdump is capturing.
func (n *Netns) StartCapture(tb testing.TB, filter string, maxPackets int, timeout time.Duration) *Capture {
	tb.Helper()
	RequireNetns(tb, "tcpdump")
	path := filepath.Join(tb.TempDir(), n.Dev+".pcap")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	tb.Cleanup(cancel)
	// --immediate-mode and -U hand over and write each packet as it arrives, so Stop
	// loses nothing (by default the kernel ring holds packets for up to a second); -Z root keeps write
	// access to the test's temporary directory.
	args := []string{"-i", n.Dev, "-n", "-s", "0", "-U", "--immediate-mode", "-Z", "root", "-c", strconv.Itoa(maxPackets), "-w", path}
	if filter != "" {
		args = append(args, filter)
	}
	p := StartProc(tb, "tcpdump on "+n.Dev, n.Command(ctx, "tcpdump", args...), "listening on")
	return &Capture{Path: path, proc: p}
}

// Stop ends the capture and returns the TCP segments it recorded.
func (c *Capture) Stop(tb testing.TB) []Segment {
	tb.Helper()
	select {
	case <-c.proc.done:
	default:
		// On SIGINT tcpdump stops at once and drops packets it has not read yet, so first
		// let it catch up: wait (up to 3 s) until the file has not grown for 250 ms.
		c.settle(250*time.Millisecond, 3*time.Second)
		_ = c.proc.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.proc.done:
		case <-time.After(5 * time.Second):
			stopProc(c.proc)
		}
	}
	f, err := os.Open(c.Path)
	if err != nil {
		tb.Fatalf("meshtest: capture %s: %v (tcpdump: %s)", c.Path, err, c.proc.Output())
	}
	defer f.Close()
	segs, err := ReadPcap(f)
	if err != nil {
		tb.Fatalf("meshtest: read capture %s: %v", c.Path, err)
	}
	return segs
}

func (c *Capture) settle(quiet, limit time.Duration) {
	size := func() int64 {
		fi, err := os.Stat(c.Path)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	deadline := time.Now().Add(limit)
	last, since := size(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < quiet {
		time.Sleep(25 * time.Millisecond)
		if s := size(); s != last {
			last, since = s, time.Now()
		}
	}
}

// Segment is one captured TCP segment.
type Segment struct {
	Src, Dst netip.AddrPort
	// SYN is set for connection attempts (SYN without ACK).
	SYN     bool
	Payload []byte
}

// ReadPcap decodes the TCP segments in a classic pcap file with Ethernet framing (what
// tcpdump -w writes for a veth). Non-TCP packets are skipped.
func ReadPcap(r io.Reader) ([]Segment, error) {
	br := bufio.NewReader(r)
	var gh [24]byte
	if _, err := io.ReadFull(br, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	var le bool
	switch {
	case bytes.Equal(gh[:4], []byte{0xd4, 0xc3, 0xb2, 0xa1}), bytes.Equal(gh[:4], []byte{0x4d, 0x3c, 0xb2, 0xa1}):
		le = true
	case bytes.Equal(gh[:4], []byte{0xa1, 0xb2, 0xc3, 0xd4}), bytes.Equal(gh[:4], []byte{0xa1, 0xb2, 0x3c, 0x4d}):
	default:
		return nil, fmt.Errorf("pcap header: magic %x is not a pcap file", gh[:4])
	}
	u32 := func(b []byte) uint32 {
		if le {
			return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		}
		return uint32(b[3]) | uint32(b[2])<<8 | uint32(b[1])<<16 | uint32(b[0])<<24
	}
	if lt := u32(gh[20:24]); lt != 1 {
		return nil, fmt.Errorf("pcap header: link type %d, want 1 (Ethernet)", lt)
	}
	var segs []Segment
	for {
		var rh [16]byte
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// A capture killed mid-write may end in a partial record.
				return segs, nil
			}
			return segs, err
		}
		n := u32(rh[8:12])
		if n > 1<<18 {
			return segs, fmt.Errorf("pcap record of %d bytes", n)
		}
		pkt := make([]byte, n)
		if _, err := io.ReadFull(br, pkt); err != nil {
			return segs, nil
		}
		if s, ok := decodeTCP(pkt); ok {
			segs = append(segs, s)
		}
	}
}

func decodeTCP(p []byte) (Segment, bool) {
	if len(p) < 14 {
		return Segment{}, false
	}
	eth := uint16(p[12])<<8 | uint16(p[13])
	p = p[14:]
	var src, dst netip.Addr
	var proto byte
	switch eth {
	case 0x0800:
		if len(p) < 20 {
			return Segment{}, false
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(p[2])<<8 | int(p[3])
		if ihl < 20 || total < ihl || len(p) < total {
			return Segment{}, false
		}
		proto = p[9]
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		p = p[ihl:total]
	case 0x86dd:
		if len(p) < 40 {
			return Segment{}, false
		}
		plen := int(p[4])<<8 | int(p[5])
		proto = p[6] // extension headers are not expected on a test veth
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		if len(p) < 40+plen {
			return Segment{}, false
		}
		p = p[40 : 40+plen]
	default:
		return Segment{}, false
	}
	if proto != 6 || len(p) < 20 {
		return Segment{}, false
	}
	off := int(p[12]>>4) * 4
	if off < 20 || len(p) < off {
		return Segment{}, false
	}
	flags := p[13]
	return Segment{
		Src:     netip.AddrPortFrom(src, uint16(p[0])<<8|uint16(p[1])),
		Dst:     netip.AddrPortFrom(dst, uint16(p[2])<<8|uint16(p[3])),
		SYN:     flags&0x02 != 0 && flags&0x10 == 0,
		Payload: p[off:],
	}, true
}
