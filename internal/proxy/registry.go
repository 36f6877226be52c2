package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshguard/meshguard/internal/config"
)

// Service is one host of the service registry (Istio's ServiceEntry, with endpoints
// inline or selected WorkloadEntries): where it runs and which identities may serve it.
type Service struct {
	Host      string
	Namespace string
	// Addresses are the service's virtual IPs (ServiceEntry.addresses), for
	// transparent capture.
	Addresses []netip.Addr
	Ports     []ServicePort
	Endpoints []Endpoint
	// SubjectAltNames are extra identities the ServiceEntry says may serve it.
	SubjectAltNames []string
}

// ServicePort is a ServiceEntry port.
type ServicePort struct {
	Number     uint32
	Name       string
	Protocol   string
	TargetPort uint32
}

// Endpoint is one workload serving a Service.
type Endpoint struct {
	// Address is an IP or a DNS name.
	Address string
	// Ports maps service port names to this endpoint's ports (WorkloadEntry.ports).
	Ports map[string]uint32
	// Identity is the workload's SPIFFE ID (from its serviceAccount), zero if unknown.
	Identity spiffeid.ID
}

// PortFor is the endpoint port that serves sp: the WorkloadEntry's port for sp's name,
// else sp's targetPort, else sp's number. In explicit (non-captured) mode this is
// where the target sidecar's inbound listener must be: the mapping is documented in
// docs/ARCHITECTURE.md.
func (e Endpoint) PortFor(sp ServicePort) uint32 {
	if p, ok := e.Ports[sp.Name]; ok && p != 0 {
		return p
	}
	if sp.TargetPort != 0 {
		return sp.TargetPort
	}
	return sp.Number
}

func (s *Service) port(n uint32) (ServicePort, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return ServicePort{}, false
}

// identities are the SPIFFE IDs that secure naming accepts for this service.
func (s *Service) identities() []spiffeid.ID {
	var ids []spiffeid.ID
	for _, e := range s.Endpoints {
		if !e.Identity.IsZero() && !slices.Contains(ids, e.Identity) {
			ids = append(ids, e.Identity)
		}
	}
	for _, san := range s.SubjectAltNames {
		if id, err := spiffeid.FromString(san); err == nil && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// ServicesFromSnapshot builds the registry from a snapshot's ServiceEntries and
// WorkloadEntries. Endpoint identities are spiffe://TD/ns/NS/sa/SA from each
// WorkloadEntry's serviceAccount (inline endpoints take the ServiceEntry's namespace).
// A ServiceEntry with DNS resolution and no endpoints has its host as the endpoint.
func ServicesFromSnapshot(snap *config.Snapshot, td spiffeid.TrustDomain) ([]Service, error) {
	if snap == nil {
		return nil, nil
	}
	wes := snap.OfKind(config.KindWorkloadEntry)
	var out []Service
	for _, o := range snap.OfKind(config.KindServiceEntry) {
		se := o.ServiceEntry()
		where := fmt.Sprintf("%s: ServiceEntry %s", o.Source, o.Key())
		var ports []ServicePort
		for _, p := range se.GetPorts() {
			ports = append(ports, ServicePort{Number: p.GetNumber(), Name: p.GetName(), Protocol: p.GetProtocol(), TargetPort: p.GetTargetPort()})
		}
		var addrs []netip.Addr
		for i, a := range se.GetAddresses() {
			if pfx, err := netip.ParsePrefix(a); err == nil {
				if pfx.IsSingleIP() {
					addrs = append(addrs, pfx.Addr())
				}
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.addresses[%d]: %q is not an IP address or CIDR", where, i, a)
			}
			addrs = append(addrs, ip)
		}
		var eps []Endpoint
		for i, we := range se.GetEndpoints() {
			ep, err := endpointOf(we, o.Namespace, td)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.endpoints[%d]: %w", where, i, err)
			}
			eps = append(eps, ep)
		}
		if sel := se.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
			for _, w := range wes {
				// Istio matches the WorkloadEntry's spec labels and its metadata labels.
				if w.Namespace != o.Namespace || !labelsMatch(sel, w.WorkloadEntry().GetLabels(), w.Labels) {
					continue
				}
				ep, err := endpointOf(w.WorkloadEntry(), w.Namespace, td)
				if err != nil {
					return nil, fmt.Errorf("%s: WorkloadEntry %s: %w", w.Source, w.Key(), err)
				}
				eps = append(eps, ep)
			}
		}
		for _, h := range se.GetHosts() {
			hostEps := eps
			if len(hostEps) == 0 && se.GetResolution() == networking.ServiceEntry_DNS {
				hostEps = []Endpoint{{Address: h}}
			}
			out = append(out, Service{Host: h, Namespace: o.Namespace, Addresses: addrs, Ports: ports,
				Endpoints: hostEps, SubjectAltNames: se.GetSubjectAltNames()})
		}
	}
	return out, nil
}

func endpointOf(we *networking.WorkloadEntry, ns string, td spiffeid.TrustDomain) (Endpoint, error) {
	ep := Endpoint{Address: we.GetAddress(), Ports: we.GetPorts()}
	if ep.Address == "" {
		return ep, fmt.Errorf("address: empty")
	}
	if net.ParseIP(ep.Address) == nil && !validDNSName(ep.Address) {
		return ep, fmt.Errorf("address: %q is neither an IP address nor a DNS name", ep.Address)
	}
	if sa := we.GetServiceAccount(); sa != "" && !td.IsZero() {
		id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
		if err != nil {
			return ep, fmt.Errorf("serviceAccount %q: %w", sa, err)
		}
		ep.Identity = id
	}
	return ep, nil
}

func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c == '.' || c == '-' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')) {
			return false
		}
	}
	return s != ""
}

func labelsMatch(sel, spec, meta map[string]string) bool {
	for k, v := range sel {
		got, ok := spec[k]
		if !ok {
			got, ok = meta[k]
		}
		if !ok || got != v {
			return false
		}
	}
	return true
}

func hostPortKey(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}
