package proxy_test

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
)

// TestInboundTrustDomains: a peer chained to the mesh root is admitted only in the
// workload's own trust domain or in one of meshConfig.trustDomainAliases, as Istio's
// sidecars validate the peer's trust domain.
func TestInboundTrustDomains(t *testing.T) {
	echo := meshtest.StartEcho(t)
	ca := newTestCA(t, "cluster.local")
	oldTD := spiffeid.RequireTrustDomainFromString("old-td")
	clientIn := func(td string) spiffeid.ID {
		return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(td), clientPath)
	}
	cases := []struct {
		name       string
		aliases    []spiffeid.TrustDomain
		client     spiffeid.ID
		wantAdmit  bool
		wantReason string // the handshake-failure metric's reason when refused
	}{
		{"own trust domain", nil, clientIn("cluster.local"), true, ""},
		{"same root, another trust domain, no alias", nil, clientIn("old-td"), false, "peer_trust_domain_mismatch"},
		{"same root, an alias", []spiffeid.TrustDomain{oldTD}, clientIn("old-td"), true, ""},
		{"same root, neither own nor alias", []spiffeid.TrustDomain{oldTD}, clientIn("other-td"), false, "peer_trust_domain_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certs := newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle())
			obs := &handshakeReasons{}
			sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{Certs: certs, Apps: []netip.AddrPort{echo.Addr}, Observer: obs,
				Policy: &proxy.Policy{PeerAuthn: strict(), TrustDomainAliases: tc.aliases}})
			c, err := mtlsDial(t, sc.Inbound, ca.svidFor(t, tc.client, time.Time{}, time.Time{}), "", "http/1.1")
			if err == nil {
				c.Close()
			}
			if admitted := err == nil; admitted != tc.wantAdmit {
				t.Errorf("admitted = %v (err %v), want %v", admitted, err, tc.wantAdmit)
			}
			if tc.wantReason != "" && !obs.await(tc.wantReason) {
				t.Errorf("handshake failures %q, want one with reason %q", obs.get(), tc.wantReason)
			}
		})
	}
}

// handshakeReasons is an Observer that keeps the reasons of failed handshakes.
type handshakeReasons struct {
	mu      sync.Mutex
	reasons []string
}

func (h *handshakeReasons) Observe(*proxy.Record) {}

func (h *handshakeReasons) HandshakeFailed(_ proxy.Direction, reason string) {
	h.mu.Lock()
	h.reasons = append(h.reasons, reason)
	h.mu.Unlock()
}

func (h *handshakeReasons) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reasons)
}

// await waits up to 5 s for reason: the sidecar reports after the client has seen the
// alert.
func (h *handshakeReasons) await(reason string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if slices.Contains(h.get(), reason) {
			return true
		}
	}
	return false
}

// TestOutboundTrustDomainAliases is a trust domain migration from old-td to
// cluster.local: the server still holds an old-td certificate while the registry names
// its service account in cluster.local. Secure naming accepts the old name only when
// old-td is an alias; each side lists the other's trust domain as one.
func TestOutboundTrustDomainAliases(t *testing.T) {
	echo := meshtest.StartEcho(t)
	local := spiffeid.RequireTrustDomainFromString("cluster.local")
	oldTD := spiffeid.RequireTrustDomainFromString("old-td")
	serverPolicy := proxy.Policy{PeerAuthn: strict(), TrustDomainAliases: []spiffeid.TrustDomain{local}}
	for _, h2up := range []bool{false, true} {
		for _, tc := range []struct {
			name    string
			aliases []spiffeid.TrustDomain
			want    int
		}{
			{"old-td is an alias", []spiffeid.TrustDomain{oldTD}, 200},
			{"no alias: refused", nil, 503},
		} {
			t.Run(tc.name+map[bool]string{false: ", pooled HTTP/1.1", true: ", multiplexed"}[h2up], func(t *testing.T) {
				pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: serverPolicy, serverTrustDomain: "old-td",
					clientAliases: tc.aliases, pooledH1: !h2up})
				resp, _ := get(t, httpClient(), pr.outbound+"/hello", nil)
				if resp.StatusCode != tc.want {
					t.Errorf("GET = %d, want %d", resp.StatusCode, tc.want)
				}
			})
		}
	}
}
