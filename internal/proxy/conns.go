package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// connState is what the proxy knows about one accepted connection. Fields are set
// before the connection is handled and then only read, except the atomics.
type connState struct {
	id    uint64
	dir   Direction
	c     net.Conn
	start time.Time
	src   netip.AddrPort
	dst   netip.AddrPort

	proto          protocol
	mode           string // inbound: the PeerAuthentication mode applied; outbound: DestinationRule TLS mode
	tls            bool
	tlsVersion     uint16
	cipher         uint16
	curve          tls.CurveID
	sni            string
	peerPrincipal  string
	localPrincipal string
	xfccHeader     string // "x-forwarded-client-cert: …\r\n", or ""
	xfcc           string

	app  *appTarget // inbound
	port uint32     // inbound: the workload port the connection is for
	// hostRouted: plaintext inbound HTTP in explicit mode with several apps picks the
	// app per request from the Host header's port.
	hostRouted bool
	route      *route // outbound
	// upstream marks a connection the sidecar opened toward a destination (outbound),
	// as opposed to the app's connection to the outbound listener.
	upstream bool

	// ready is set once the fields above are final; info reads them only after.
	ready    atomic.Bool
	idle     atomic.Bool
	requests atomic.Int64
	policy   atomic.Pointer[string] // last admitting policy
}

// ConnInfo is one live connection as the admin endpoint lists it (and `ctl tls-check`
// reads it).
type ConnInfo struct {
	ID            uint64    `json:"id"`
	Direction     string    `json:"direction"`
	Protocol      string    `json:"protocol"`
	Source        string    `json:"source"`
	Destination   string    `json:"destination"`
	Start         time.Time `json:"start"`
	Mode          string    `json:"mode"`
	TLSVersion    string    `json:"tlsVersion,omitempty"`
	CipherSuite   string    `json:"cipherSuite,omitempty"`
	KeyExchange   string    `json:"keyExchange,omitempty"`
	SNI           string    `json:"sni,omitempty"`
	PeerSPIFFEID  string    `json:"peerSpiffeId,omitempty"`
	LocalSPIFFEID string    `json:"localSpiffeId,omitempty"`
	Host          string    `json:"host,omitempty"`
	Requests      int64     `json:"requests"`
	AdmittedBy    string    `json:"admittedBy,omitempty"`
	// Upstream marks an outbound connection the sidecar opened toward a destination
	// (its TLS session is what crosses the network); other outbound entries are the
	// app's connections to the sidecar's outbound listener.
	Upstream bool `json:"upstream,omitempty"`
}

type connTable struct {
	next atomic.Uint64
	mu   sync.Mutex
	m    map[*connState]struct{}
}

func (t *connTable) add(cs *connState) {
	cs.id = t.next.Add(1)
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[*connState]struct{})
	}
	t.m[cs] = struct{}{}
	t.mu.Unlock()
}

func (t *connTable) remove(cs *connState) {
	t.mu.Lock()
	delete(t.m, cs)
	t.mu.Unlock()
}

func (t *connTable) snapshot() []*connState {
	t.mu.Lock()
	out := make([]*connState, 0, len(t.m))
	for cs := range t.m {
		out = append(out, cs)
	}
	// Callers that read fields filter on ready themselves.
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (cs *connState) info() ConnInfo {
	ci := ConnInfo{
		ID: cs.id, Direction: cs.dir.String(), Protocol: cs.proto.String(),
		Source: cs.src.String(), Destination: cs.dst.String(), Start: cs.start, Mode: cs.mode,
		SNI: cs.sni, Requests: cs.requests.Load(), Upstream: cs.upstream,
	}
	if cs.tls {
		ci.TLSVersion = tls.VersionName(cs.tlsVersion)
		ci.CipherSuite = tls.CipherSuiteName(cs.cipher)
		ci.KeyExchange = cs.curve.String()
	}
	if cs.peerPrincipal != "" {
		ci.PeerSPIFFEID = "spiffe://" + cs.peerPrincipal
	}
	if cs.localPrincipal != "" {
		ci.LocalSPIFFEID = "spiffe://" + cs.localPrincipal
	}
	if cs.route != nil {
		ci.Host = cs.route.host
	}
	if p := cs.policy.Load(); p != nil {
		ci.AdmittedBy = *p
	}
	return ci
}

func (cs *connState) setTLS(st tls.ConnectionState) {
	cs.tls = true
	cs.tlsVersion = st.Version
	cs.cipher = st.CipherSuite
	cs.curve = st.CurveID
	cs.sni = st.ServerName
}

// record starts the Record of one request (HTTP) or of the connection (TCP) with what
// the connection already says.
func (cs *connState) record(proto string, start time.Time) Record {
	r := Record{
		Direction: cs.dir, Protocol: proto, Start: start, ConnectionID: cs.id,
		Source: cs.src, Local: cs.dst, Mode: cs.mode, SNI: cs.sni,
		SourcePrincipal: cs.peerPrincipal, LocalPrincipal: cs.localPrincipal,
	}
	if cs.tls {
		r.TLSVersion, r.TLSCipher = cs.tlsVersion, cs.cipher
	}
	if cs.dir == Inbound {
		r.Port = cs.port
		if cs.app != nil {
			r.Upstream = cs.app.addr
		}
	} else if cs.route != nil {
		r.Host, r.Port = cs.route.host, cs.route.port
	}
	return r
}

// decided copies an authorization decision into the record.
func (r *Record) decided(d *Decision) {
	r.Policy, r.Rule = d.Policy, d.Rule
	r.AuditPolicy, r.AuditRule = d.AuditPolicy, d.AuditRule
}
