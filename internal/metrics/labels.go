package metrics

// Istio's standard label names, in the order Istio's proxies emit them.
var (
	peerLabelNames = []string{
		"reporter",
		"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
		"destination_service", "destination_service_name", "destination_service_namespace", "destination_cluster",
		"request_protocol",
		"source_canonical_service", "destination_canonical_service", "source_canonical_revision", "destination_canonical_revision",
		"connection_security_policy",
	}
	// HTTP metrics add these, which vary per response.
	responseLabelNames = []string{"response_code", "grpc_response_status", "response_flags"}
	// TCP metrics add response_flags only.
	tcpLabelNames = []string{"response_flags"}
)

// Reporter says which proxy reports: the client's ("source") or the server's
// ("destination").
type Reporter string

// The reporter label values Istio uses.
const (
	ReporterSource      Reporter = "source"
	ReporterDestination Reporter = "destination"
)

// Security policy label values: Istio reports mutual_tls when the destination proxy
// terminated mTLS, none for plaintext, unknown from the source side.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityNone      = "none"
	SecurityUnknown   = "unknown"
)

const unknown = "unknown"

// Peer describes one end of the traffic as Istio labels it. Empty fields are reported
// as "unknown", as Istio does when peer metadata is missing.
type Peer struct {
	Workload          string // e.g. "productpage-v1"
	Namespace         string
	Principal         string // SPIFFE ID
	App               string // the workload's app label
	Version           string // the workload's version label
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
}

// ConnLabels are the labels that stay fixed for a connection: who talks to whom, over
// what, how secured. It is comparable, so a sidecar can use it as a map key.
type ConnLabels struct {
	Reporter    Reporter
	Source      Peer
	Destination Peer
	// DestinationService is the service host ("details.default.svc.cluster.local"),
	// DestinationServiceName its short name and DestinationServiceNamespace its
	// namespace.
	DestinationService          string
	DestinationServiceName      string
	DestinationServiceNamespace string
	// RequestProtocol is "http", "grpc" or "tcp".
	RequestProtocol string
	// ConnectionSecurityPolicy is SecurityMutualTLS, SecurityNone or SecurityUnknown.
	ConnectionSecurityPolicy string
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// values returns the label values in peerLabelNames order.
func (l *ConnLabels) values() []string {
	return []string{
		orUnknown(string(l.Reporter)),
		orUnknown(l.Source.Workload), orUnknown(l.Source.Namespace), orUnknown(l.Source.Principal),
		orUnknown(l.Source.App), orUnknown(l.Source.Version), orUnknown(l.Source.Cluster),
		orUnknown(l.Destination.Workload), orUnknown(l.Destination.Namespace), orUnknown(l.Destination.Principal),
		orUnknown(l.Destination.App), orUnknown(l.Destination.Version),
		orUnknown(l.DestinationService), orUnknown(l.DestinationServiceName), orUnknown(l.DestinationServiceNamespace),
		orUnknown(l.Destination.Cluster),
		orUnknown(l.RequestProtocol),
		orUnknown(l.Source.CanonicalService), orUnknown(l.Destination.CanonicalService),
		orUnknown(l.Source.CanonicalRevision), orUnknown(l.Destination.CanonicalRevision),
		orUnknown(l.ConnectionSecurityPolicy),
	}
}
