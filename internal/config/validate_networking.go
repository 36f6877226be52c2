package config

import (
	"fmt"
	"net/netip"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func (v *validator) destinationRule(dr *networking.DestinationRule) {
	if dr.Host == "" {
		v.errorf("spec.host", "must be set")
	} else if reason := checkWildcardDomain(dr.Host); reason != "" {
		v.errorf("spec.host", "%q: %s", dr.Host, reason)
	}
	v.trafficPolicy("spec.trafficPolicy", dr.TrafficPolicy)
	seen := map[string]bool{}
	for i, s := range dr.Subsets {
		p := idx("spec.subsets", i)
		switch {
		case s.Name == "":
			v.errorf(p+".name", "must be set")
		case !isDNS1123Label(s.Name):
			v.errorf(p+".name", "%q is not a valid subset name: lower-case letters, digits and '-', at most 63 characters", s.Name)
		case seen[s.Name]:
			v.errorf(p+".name", "duplicate subset name %q", s.Name)
		}
		seen[s.Name] = true
		v.labels(p+".labels", s.Labels)
		v.trafficPolicy(p+".trafficPolicy", s.TrafficPolicy)
	}
	if len(dr.Subsets) > 4096 {
		v.errorf("spec.subsets", "at most 4096 subsets allowed, got %d", len(dr.Subsets))
	}
	v.exportTo("spec.exportTo", dr.ExportTo, false)
	if dr.WorkloadSelector != nil {
		v.workloadSelector("spec.workloadSelector", dr.WorkloadSelector)
		for i, e := range dr.ExportTo {
			if e != "." && e != v.ns {
				v.errorf(idx("spec.exportTo", i), "a destination rule with a workload selector cannot be exported beyond its own namespace")
			}
		}
	}
}

func (v *validator) trafficPolicy(path string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	if tp.OutlierDetection == nil && tp.ConnectionPool == nil && tp.LoadBalancer == nil && tp.Tls == nil &&
		tp.PortLevelSettings == nil && tp.Tunnel == nil && tp.ProxyProtocol == nil {
		v.errorf(path, "traffic policy must have at least one field")
		return
	}
	if tp.Tunnel != nil && tp.ProxyProtocol != nil {
		v.errorf(path, "tunnel and proxyProtocol must not be set together")
	}
	v.clientTLS(path+".tls", tp.Tls)
	ports := map[uint32]int{}
	for i, pl := range tp.PortLevelSettings {
		p := idx(path+".portLevelSettings", i)
		if pl.Port == nil {
			v.errorf(p+".port", "must be set: port-level settings need a port number")
			continue
		}
		if !portInRange(pl.Port.Number) {
			v.errorf(p+".port.number", "port must be in the range 1-65535, got %d", pl.Port.Number)
		}
		if prev, dup := ports[pl.Port.Number]; dup {
			v.errorf(p+".port.number", "port %d already has settings at %s", pl.Port.Number, idx(path+".portLevelSettings", prev))
		} else {
			ports[pl.Port.Number] = i
		}
		if pl.OutlierDetection == nil && pl.ConnectionPool == nil && pl.LoadBalancer == nil && pl.Tls == nil {
			v.errorf(p, "port traffic policy must have at least one field")
		}
		v.clientTLS(p+".tls", pl.Tls)
	}
}

// clientTLS ports Istio's ValidateTLS for DestinationRule TLS settings.
func (v *validator) clientTLS(path string, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	if t.CredentialName != "" && strings.HasPrefix(t.CredentialName, "configmap://") {
		ns, _, ok := strings.Cut(strings.TrimPrefix(t.CredentialName, "configmap://"), "/")
		if ok && ns != v.ns {
			v.errorf(path+".credentialName", "invalid configmap:// credentialName: namespace must match the configuration namespace %q", v.ns)
		}
	}
	if t.GetInsecureSkipVerify().GetValue() {
		switch t.Mode {
		case networking.ClientTLSSettings_SIMPLE:
			if t.CaCertificates != "" || t.CredentialName != "" || t.SubjectAltNames != nil {
				v.errorf(path+".insecureSkipVerify", "cannot specify caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true")
			}
		case networking.ClientTLSSettings_MUTUAL:
			if t.CaCertificates != "" || t.SubjectAltNames != nil {
				v.errorf(path+".insecureSkipVerify", "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true")
			}
		}
	}
	files := t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CaCrl != ""
	switch t.Mode {
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		if t.CredentialName != "" {
			if files {
				v.errorf(path+".credentialName", "cannot specify client certificates, CA certificate or CA CRL if credentialName is set")
			}
			return
		}
		if t.Mode == networking.ClientTLSSettings_MUTUAL {
			if t.ClientCertificate == "" {
				v.errorf(path+".clientCertificate", "client certificate required for mode MUTUAL")
			}
			if t.PrivateKey == "" {
				v.errorf(path+".privateKey", "private key required for mode MUTUAL")
			}
		}
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		// The mesh's own certificates are used; files here would be silently ignored.
		if files || t.CredentialName != "" {
			v.warnf(path, "clientCertificate, privateKey, caCertificates, caCrl and credentialName are ignored in mode ISTIO_MUTUAL")
		}
	case networking.ClientTLSSettings_DISABLE:
		if files || t.CredentialName != "" || len(t.SubjectAltNames) > 0 || t.Sni != "" {
			v.warnf(path, "TLS settings are ignored in mode DISABLE")
		}
	}
}

// exportTo ports Istio's validateExportTo: "." (this namespace), "*" (all), "~"
// (nobody, ServiceEntry only) or namespace names, without duplicates, "*" alone.
func (v *validator) exportTo(path string, exportTo []string, serviceEntry bool) {
	seen := map[string]bool{}
	for i, e := range exportTo {
		p := idx(path, i)
		key := e
		if e == "." {
			key = v.ns
		}
		switch {
		case seen[key]:
			v.errorf(p, "duplicate entry %q in exportTo", e)
			continue
		case e == "~" && !serviceEntry:
			v.errorf(p, "%q is only allowed for a ServiceEntry", e)
		case e != "." && e != "*" && e != "~" && !isDNS1123Label(e):
			v.errorf(p, "%q is not \".\", \"*\" or a valid namespace name", e)
		}
		seen[key] = true
	}
	if seen["*"] && len(exportTo) > 1 {
		v.errorf(path, "cannot have both public (*) and non-public exportTo values")
	}
	if seen["~"] && len(exportTo) > 1 {
		v.errorf(path, "cannot export a service entry to no one (~) and someone")
	}
}

// checkWildcardDomain ports Istio's ValidateWildcardDomain: a DNS name whose first
// label may be "*" or start with "*".
func checkWildcardDomain(d string) string {
	if len(d) > 255 {
		return "domain name too long (max 255)"
	}
	first, rest, _ := strings.Cut(d, ".")
	if strings.HasPrefix(first, "*") {
		first = strings.TrimPrefix(first, "*")
		if first != "" && !isDNS1123Label(strings.ToLower(first)) {
			return "invalid first label after the wildcard"
		}
	} else if !isDNS1123Label(strings.ToLower(first)) {
		return "not a valid domain name: labels are letters, digits and '-'; only the first label may be a wildcard"
	}
	if rest == "" {
		return ""
	}
	rest = strings.TrimSuffix(rest, ".")
	for _, l := range strings.Split(rest, ".") {
		if !isDNS1123Label(strings.ToLower(l)) {
			return fmt.Sprintf("invalid label %q: labels are letters, digits and '-'; only the first label may be a wildcard", l)
		}
	}
	return ""
}

func (v *validator) serviceEntry(se *networking.ServiceEntry) {
	if len(se.Hosts) == 0 {
		v.errorf("spec.hosts", "at least one host is required")
	}
	for i, h := range se.Hosts {
		p := idx("spec.hosts", i)
		switch {
		case h == "*":
			v.errorf(p, "hostname cannot be the wildcard *")
		case checkWildcardDomain(h) != "":
			v.errorf(p, "%q: %s", h, checkWildcardDomain(h))
		}
	}
	cidr := false
	for i, a := range se.Addresses {
		p := idx("spec.addresses", i)
		if strings.Contains(a, "/") {
			cidr = true
			if _, err := netip.ParsePrefix(a); err != nil {
				v.errorf(p, "bad CIDR range %q: %v", a, err)
			}
		} else if _, err := netip.ParseAddr(a); err != nil {
			v.errorf(p, "bad IP address %q", a)
		}
	}
	res := se.Resolution
	if cidr && res != networking.ServiceEntry_NONE && res != networking.ServiceEntry_STATIC {
		v.errorf("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
	}
	ports := map[uint32]bool{}
	for i, port := range se.Ports {
		p := idx("spec.ports", i)
		if !portInRange(port.Number) {
			v.errorf(p+".number", "port must be in the range 1-65535, got %d", port.Number)
		}
		if ports[port.Number] {
			v.errorf(p+".number", "port number %d is duplicated", port.Number)
		}
		ports[port.Number] = true
		if port.TargetPort != 0 && !portInRange(port.TargetPort) {
			v.errorf(p+".targetPort", "port must be in the range 1-65535, got %d", port.TargetPort)
		}
		if port.Name != "" && len(port.Name) > 256 {
			v.errorf(p+".name", "longer than 256 characters")
		}
	}
	if se.WorkloadSelector != nil && len(se.Endpoints) > 0 {
		v.errorf("spec.endpoints", "only one of workloadSelector or endpoints may be set")
	}
	if se.WorkloadSelector != nil {
		v.labels("spec.workloadSelector.labels", se.WorkloadSelector.Labels)
	}
	switch {
	case res == networking.ServiceEntry_NONE && len(se.Endpoints) > 0:
		v.errorf("spec.endpoints", "resolution NONE cannot set endpoints")
	case res == networking.ServiceEntry_DNS_ROUND_ROBIN && len(se.Endpoints) > 1:
		v.errorf("spec.endpoints", "resolution DNS_ROUND_ROBIN cannot have more than one endpoint")
	case res == networking.ServiceEntry_STATIC && len(se.Endpoints) == 0 && se.WorkloadSelector == nil:
		v.warnf("spec.endpoints", "resolution STATIC without endpoints or a workloadSelector has nothing to send traffic to")
	}
	for i, ep := range se.Endpoints {
		v.workloadEntry(idx("spec.endpoints", i), ep, true)
	}
	v.exportTo("spec.exportTo", se.ExportTo, true)
}

// workloadEntry checks a WorkloadEntry, on its own or as a ServiceEntry endpoint.
func (v *validator) workloadEntry(path string, we *networking.WorkloadEntry, endpoint bool) {
	if we.Address == "" && we.Network == "" && !endpoint {
		v.errorf(path+".address", "address is required (or network)")
	}
	if len(we.Address) > 256 {
		v.errorf(path+".address", "longer than 256 characters")
	}
	if uds, ok := strings.CutPrefix(we.Address, "unix://"); ok {
		if !strings.HasPrefix(uds, "/") && !strings.HasPrefix(uds, "@") {
			v.errorf(path+".address", "UDS must be an absolute path or abstract socket")
		}
		if strings.HasSuffix(uds, "/") {
			v.errorf(path+".address", "UDS may not be a directory")
		}
		if len(we.Ports) > 0 {
			v.errorf(path+".ports", "UDS may not include ports")
		}
	} else if we.Address != "" {
		if _, err := netip.ParseAddr(we.Address); err != nil && checkWildcardDomain(we.Address) != "" || strings.Contains(we.Address, "*") {
			v.errorf(path+".address", "%q is not an IP address, a DNS name or unix:// socket", we.Address)
		}
	}
	for _, name := range sortedKeys(we.Ports) {
		p := path + ".ports[" + name + "]"
		if !portInRange(we.Ports[name]) {
			v.errorf(p, "port must be in the range 1-65535, got %d", we.Ports[name])
		}
		if len(name) >= 63 || !portName.MatchString(name) {
			v.errorf(p, "port name %q must be valid: letters, digits and '-', not starting or ending with '-'", name)
		}
	}
	v.labels(path+".labels", we.Labels)
	if we.ServiceAccount != "" && !isDNS1123Subdomain(we.ServiceAccount) {
		v.errorf(path+".serviceAccount", "%q is not a valid service account name", we.ServiceAccount)
	}
}
