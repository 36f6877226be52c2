package xds

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// Node metadata keys the control plane adds in sync status.
const (
	metaIdentity   = "IDENTITY"
	metaCertExpiry = "CERT_EXPIRY"
	metaConnected  = "CONNECTED_AT"
)

// serveOperator answers debug requests from an operator identity. Anyone else — in
// particular any workload — is refused.
func (s *Server) serveOperator(ctx context.Context, stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer,
	id identity.Identity, first *discovery.DiscoveryRequest, reqs <-chan *discovery.DiscoveryRequest, recvErr <-chan error) error {
	if !slices.Contains(s.cfg.Operators, id) {
		s.log.Warn("status request refused: not an operator", "identity", id.String(), "type", first.GetTypeUrl())
		return status.Errorf(codes.PermissionDenied, "xds: %s is not an operator identity; status needs a certificate for one of the control plane's operators", id)
	}
	req := first
	for {
		var resp *discovery.DiscoveryResponse
		var err error
		switch req.GetTypeUrl() {
		case TypeDebugSyncz:
			resp, err = s.syncz()
		case TypeDebugConfigDump:
			resp, err = s.configDump(req.GetResourceNames())
		default:
			return status.Errorf(codes.InvalidArgument, "xds: operator streams serve %s and %s, not %q", TypeDebugSyncz, TypeDebugConfigDump, req.GetTypeUrl())
		}
		if err != nil {
			return err
		}
		resp.TypeUrl = req.GetTypeUrl()
		resp.Nonce = strconv.FormatUint(s.nonce.Add(1), 36)
		if err := stream.Send(resp); err != nil {
			return fmt.Errorf("xds: send status: %w", err)
		}
		select {
		case req = <-reqs:
		case err := <-recvErr:
			return recvDone(err)
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) snapshotConns() []*conn {
	s.mu.Lock()
	cs := slices.Collect(maps.Keys(s.conns))
	s.mu.Unlock()
	slices.SortFunc(cs, func(a, b *conn) int {
		if c := strings.Compare(a.workload.Namespace+"/"+a.workload.Name, b.workload.Namespace+"/"+b.workload.Name); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return cs
}

func (s *Server) syncz() (*discovery.DiscoveryResponse, error) {
	var out []*anypb.Any
	for _, c := range s.snapshotConns() {
		cc, err := c.clientConfig()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "xds: status of %s: %v", c.id, err)
		}
		a, err := cc.toAny()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "xds: status of %s: %v", c.id, err)
		}
		out = append(out, a)
	}
	return &discovery.DiscoveryResponse{Resources: out}, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// clientConfig is the CSDS form of the connection's state.
func (c *conn) clientConfig() (*clientConfig, error) {
	labels := map[string]any{}
	for k, v := range c.workload.Labels {
		labels[k] = v
	}
	md := map[string]any{
		MetaNamespace: c.workload.Namespace, MetaServiceAccount: c.workload.ServiceAccount,
		MetaWorkloadName: c.workload.Name, MetaLabels: labels,
		metaIdentity: c.caller.String(), metaConnected: c.connected.UTC().Format(time.RFC3339),
	}
	if !c.certExpiry.IsZero() {
		md[metaCertExpiry] = c.certExpiry.UTC().Format(time.RFC3339)
	}
	sm, err := structpb.NewStruct(md)
	if err != nil {
		return nil, err
	}
	cc := &clientConfig{Node: &core.Node{Id: c.nodeID, Metadata: sm}, ClientScope: c.id}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range Types {
		g := genericXdsConfig{TypeURL: t, ConfigStatus: configNotSent}
		st := c.types[t]
		if st != nil {
			g.VersionInfo, g.LastUpdated = st.acked, ts(st.ackedAt)
			switch {
			case st.sentVersion == "":
				g.ClientStatus = clientRequested
			case st.nack != nil && st.nack.Version == st.sentVersion && st.acked != st.sentVersion:
				g.ConfigStatus, g.ClientStatus = configError, clientNacked
			case st.acked == st.sentVersion:
				g.ConfigStatus, g.ClientStatus = configSynced, clientAcked
			default:
				g.ConfigStatus, g.ClientStatus = configStale, clientRequested
			}
			if st.nack != nil {
				g.ErrorState = &updateFailureState{VersionInfo: st.nack.Version, Details: st.nack.Detail, LastUpdateAttempt: ts(st.nack.At)}
			}
		}
		cc.Generic = append(cc.Generic, g)
	}
	return cc, nil
}

// configDump answers with the config in force on one workload's sidecar: the view its
// sidecar last ACKed on every type. names holds one "namespace/name".
func (s *Server) configDump(names []string) (*discovery.DiscoveryResponse, error) {
	if len(names) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "xds: config dump needs exactly one resource name, the workload as namespace/name; got %d", len(names))
	}
	want := names[0]
	var found []*conn
	for _, c := range s.snapshotConns() {
		if c.workload.Namespace+"/"+c.workload.Name == want {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		return nil, status.Errorf(codes.NotFound, "xds: no sidecar of workload %s is connected", want)
	}
	// Replicas share a view unless their labels differ; the one connected first speaks
	// for the workload, so the answer stays put while replicas come and go.
	c := slices.MinFunc(found, func(a, b *conn) int { return cmp.Compare(a.seq, b.seq) })
	c.mu.Lock()
	v := c.acked
	c.mu.Unlock()
	if v == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "xds: the sidecar of %s (%s) has not accepted any config yet", want, c.id)
	}
	resp := &discovery.DiscoveryResponse{VersionInfo: v.version}
	for _, t := range Types {
		resp.Resources = append(resp.Resources, v.res[t]...)
	}
	return resp, nil
}

// ProxyStatus is one connected sidecar as an operator sees it.
type ProxyStatus struct {
	Conn           string            `json:"conn"`
	NodeID         string            `json:"nodeID"`
	Namespace      string            `json:"namespace"`
	Workload       string            `json:"workload"`
	ServiceAccount string            `json:"serviceAccount"`
	Identity       string            `json:"identity"`
	Labels         map[string]string `json:"labels,omitempty"`
	CertExpiry     time.Time         `json:"certExpiry,omitzero"`
	ConnectedAt    time.Time         `json:"connectedAt,omitzero"`
	Types          []TypeStatus      `json:"types"`
}

// TypeStatus is the sync state of one type URL on one sidecar.
type TypeStatus struct {
	TypeURL string `json:"typeURL"`
	// Status is SYNCED, STALE (sent, not yet ACKed), ERROR (NACKed) or NOT_SENT.
	Status  string    `json:"status"`
	Acked   string    `json:"ackedVersion,omitempty"`
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// LastNACK is the sidecar's last rejection, kept after later ACKs.
	LastNACK *NACK `json:"lastNACK,omitempty"`
}

func fetch(ctx context.Context, cc grpc.ClientConnInterface, typeURL string, names ...string) (*discovery.DiscoveryResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("open xds stream: %w", err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "meshguard-ctl"}, TypeUrl: typeURL, ResourceNames: names}); err != nil {
		return nil, fmt.Errorf("request %s: %w", typeURL, sendError(st, err))
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", typeURL, err)
	}
	_ = st.CloseSend()
	return resp, nil
}

// FetchStatus asks the control plane on cc (authenticated as an operator) for the
// status of every connected sidecar.
func FetchStatus(ctx context.Context, cc grpc.ClientConnInterface) ([]ProxyStatus, error) {
	resp, err := fetch(ctx, cc, TypeDebugSyncz)
	if err != nil {
		return nil, err
	}
	out := make([]ProxyStatus, 0, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		c, err := parseClientConfig(a)
		if err != nil {
			return nil, fmt.Errorf("status resource %d: %w", i, err)
		}
		out = append(out, proxyStatus(c))
	}
	return out, nil
}

func proxyStatus(c *clientConfig) ProxyStatus {
	md := c.Node.GetMetadata().GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	tm := func(k string) time.Time {
		t, _ := time.Parse(time.RFC3339, str(k))
		return t
	}
	p := ProxyStatus{
		Conn: c.ClientScope, NodeID: c.Node.GetId(), Namespace: str(MetaNamespace), Workload: str(MetaWorkloadName),
		ServiceAccount: str(MetaServiceAccount), Identity: str(metaIdentity), CertExpiry: tm(metaCertExpiry), ConnectedAt: tm(metaConnected),
	}
	if ls := md[MetaLabels].GetStructValue().GetFields(); len(ls) > 0 {
		p.Labels = map[string]string{}
		for k, v := range ls {
			p.Labels[k] = v.GetStringValue()
		}
	}
	for _, g := range c.Generic {
		t := TypeStatus{TypeURL: g.TypeURL, Status: g.ConfigStatus.String(), Acked: g.VersionInfo}
		if g.LastUpdated != nil {
			t.AckedAt = g.LastUpdated.AsTime()
		}
		if e := g.ErrorState; e != nil {
			t.LastNACK = &NACK{Version: e.VersionInfo, Detail: e.Details, At: e.LastUpdateAttempt.AsTime()}
		}
		p.Types = append(p.Types, t)
	}
	return p
}

// FetchConfigDump asks the control plane on cc (authenticated as an operator) for the
// config in force on the sidecar of workload ns/name, as a Snapshot, and the version
// the sidecar ACKed.
func FetchConfigDump(ctx context.Context, cc grpc.ClientConnInterface, workload string) (*config.Snapshot, string, error) {
	resp, err := fetch(ctx, cc, TypeDebugConfigDump, workload)
	if err != nil {
		return nil, "", err
	}
	byType := map[string][]*anypb.Any{}
	for i, a := range resp.GetResources() {
		t, err := typeOfBody(a)
		if err != nil {
			return nil, "", fmt.Errorf("config dump resource %d: %w", i, err)
		}
		byType[t] = append(byType[t], a)
	}
	snap, err := decodeSnapshot(byType)
	if err != nil {
		return nil, "", fmt.Errorf("config dump: %w", err)
	}
	return snap, resp.GetVersionInfo(), nil
}

// WriteStatusJSON prints statuses as an indented JSON array, the form of
// `meshguard ctl proxy-status -o json`.
func WriteStatusJSON(w io.Writer, ps []ProxyStatus) error {
	if ps == nil {
		ps = []ProxyStatus{} // "[]", not "null", for an idle control plane
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ps)
}

// shortType is the column header for a type URL: its kind.
func shortType(t string) string { return t[strings.LastIndex(t, "/")+1:] }

// WriteStatusTable prints statuses as a table, one sidecar a row, then each sidecar's
// last NACK with its detail. now is for "expires in".
//
// STATUS is the one status all types share (SYNCED, STALE, ERROR, NOT_SENT), or the
// types that are not SYNCED with theirs. A NACK the sidecar sent for several types at
// once (the client NACKs a whole push) is printed once, naming the types unless it was
// all of them; a multi-line detail (several validation problems) is indented under it.
func WriteStatusTable(w io.Writer, ps []ProxyStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "WORKLOAD\tIDENTITY\tLABELS\tCERT EXPIRES\tVERSION\tSTATUS\n")
	var nacks []string
	for _, p := range ps {
		versions := map[string]bool{}
		statuses := map[string]bool{}
		var bad []string
		type nackKey struct {
			version, detail string
			at              time.Time
		}
		var order []nackKey
		nackTypes := map[nackKey][]string{}
		for _, t := range p.Types {
			versions[t.Acked] = true
			statuses[t.Status] = true
			if t.Status != "SYNCED" {
				bad = append(bad, shortType(t.TypeURL)+"="+t.Status)
			}
			if n := t.LastNACK; n != nil {
				k := nackKey{n.Version, n.Detail, n.At}
				if nackTypes[k] == nil {
					order = append(order, k)
				}
				nackTypes[k] = append(nackTypes[k], shortType(t.TypeURL))
			}
		}
		for _, k := range order {
			types := ""
			if len(nackTypes[k]) < len(p.Types) {
				types = " " + strings.Join(nackTypes[k], ",")
			}
			detail := strings.ReplaceAll(strings.TrimRight(k.detail, "\n"), "\n", "\n  ")
			nacks = append(nacks, fmt.Sprintf("%s/%s (%s)%s: version %s at %s:\n  %s", p.Namespace, p.Workload, p.Conn, types,
				k.version, k.at.UTC().Format(time.RFC3339), detail))
		}
		version := "-"
		if len(versions) == 1 {
			for v := range versions {
				if v != "" {
					version = v
				}
			}
		} else if len(versions) > 1 {
			version = "mixed"
		}
		st := "-"
		switch {
		case len(statuses) == 1:
			for v := range statuses {
				st = v
			}
		case len(bad) > 0:
			st = strings.Join(bad, ",")
		}
		expires := "-"
		if !p.CertExpiry.IsZero() {
			expires = fmt.Sprintf("%s (in %s)", p.CertExpiry.UTC().Format(time.RFC3339), p.CertExpiry.Sub(now).Round(time.Minute))
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Workload, p.Identity, labelString(p.Labels), expires, version, st)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(nacks) > 0 {
		fmt.Fprintln(w, "\nLAST NACKS")
		for _, n := range nacks {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

func labelString(ls map[string]string) string {
	if len(ls) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		parts = append(parts, k+"="+ls[k])
	}
	return strings.Join(parts, ",")
}

// OperatorCredentials are the files an operator presents to read status: a certificate
// chain and key for an operator identity, and the mesh roots that verify the control
// plane.
type OperatorCredentials struct {
	CertFile, KeyFile, RootFile string
	// ServerName overrides the name verified in the control plane's certificate
	// (default: the host of the address).
	ServerName string
}

// DialOperator returns a connection to the control plane at addr (HOST:PORT) presenting
// the operator's certificate. It does not block: errors from the handshake surface on
// the first call.
func DialOperator(addr string, oc OperatorCredentials) (*grpc.ClientConn, error) {
	for _, f := range []struct{ flag, val string }{{"--cert", oc.CertFile}, {"--key", oc.KeyFile}, {"--root-cert", oc.RootFile}} {
		if f.val == "" {
			return nil, fmt.Errorf("%s is required: status is only served to an operator certificate", f.flag)
		}
	}
	cert, err := tls.LoadX509KeyPair(oc.CertFile, oc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load operator certificate %s and key %s: %w", oc.CertFile, oc.KeyFile, err)
	}
	rootPEM, err := os.ReadFile(oc.RootFile)
	if err != nil {
		return nil, fmt.Errorf("read root certificate: %w", err)
	}
	roots, err := pki.ParseCertsPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("root certificate %s: %w", oc.RootFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--controlplane %q: want HOST:PORT: %w", addr, err)
	}
	name := oc.ServerName
	if name == "" {
		name = host
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("dial control plane %s: %w", addr, err)
	}
	return cc, nil
}
