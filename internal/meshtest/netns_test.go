package meshtest

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNetnsPair checks the plumbing the network-namespace tests stand on: the veth link
// works in both address families, Forward brings a host loopback service into a
// namespace, and a capture on the veth records exactly the payload that crossed it.
func TestNetnsPair(t *testing.T) {
	a, b := NewNetnsPair(t)
	RequireNetns(t, "tcpdump")

	// A host-side echo service, reachable in A only through Forward.
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	a.Forward(t, "127.0.0.1:15012", host.Addr().String())
	if got := roundTrip(t, a, "127.0.0.1:15012", "via-forward"); got != "via-forward" {
		t.Errorf("echo through Forward = %q, want %q", got, "via-forward")
	}

	// An echo server in B; A reaches it over the veth by IPv4 and IPv6.
	var lb net.Listener
	if err := b.Do(func() (err error) { lb, err = net.Listen("tcp", ":7777"); return err }); err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	go func() {
		for {
			c, err := lb.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	capture := a.StartCapture(t, "tcp port 7777", 1000, 30*time.Second)
	for _, addr := range []netip.AddrPort{netip.AddrPortFrom(b.IP(), 7777), netip.AddrPortFrom(b.IP6(), 7777)} {
		msg := "marker-" + addr.Addr().String()
		if got := roundTrip(t, a, addr.String(), msg); got != msg {
			t.Errorf("echo to %s = %q, want %q", addr, got, msg)
		}
	}
	segs := capture.Stop(t)
	for _, want := range []struct {
		src, dst netip.Addr
		payload  string
	}{
		{a.IP(), b.IP(), "marker-" + b.IP().String()},
		{b.IP(), a.IP(), "marker-" + b.IP().String()},
		{a.IP6(), b.IP6(), "marker-" + b.IP6().String()},
	} {
		found := false
		for _, s := range segs {
			if s.Src.Addr() == want.src && s.Dst.Addr() == want.dst && bytes.Equal(s.Payload, []byte(want.payload)) {
				found = true
			}
		}
		if !found {
			t.Errorf("capture has no segment %s → %s with payload %q; got %d segments", want.src, want.dst, want.payload, len(segs))
		}
	}
	var syns int
	for _, s := range segs {
		if s.SYN {
			syns++
		}
	}
	if syns != 2 {
		t.Errorf("capture saw %d connection attempts, want 2", syns)
	}

	// Processes run inside the namespace see its addresses, not the host's.
	out, err := a.Run(t, 10*time.Second, "ip", "-o", "addr", "show", "dev", a.Dev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, a.Addr.String()) {
		t.Errorf("ip addr in %s = %q, want it to list %s", a.Name, out, a.Addr)
	}
	if _, err := exec.Command("ip", "link", "show", a.Dev).CombinedOutput(); err == nil {
		t.Errorf("veth end %s is visible in the host namespace", a.Dev)
	}
}

func roundTrip(t *testing.T, n *Netns, addr, msg string) string {
	t.Helper()
	var got string
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("round trip to %s in %s: %v", addr, n.Name, err)
	}
	return got
}
