package caservice_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/caservice"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/pki"
)

var _ caservice.Metrics = (*metrics.ControlPlane)(nil)

// TestMetrics checks that every outcome is counted once, under the reason that
// matches the refusal the caller sees.
func TestMetrics(t *testing.T) {
	mesh := meshtest.NewCA(t, "cluster.local")
	auth := mesh.Authority(t, time.Now())
	key, _ := pki.GenerateKey(pki.KeyECP256)
	csr, _ := pki.CreateCSR(key, mesh.ID("default", "web").SPIFFEID())
	impersonate, _ := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": "spiffe://cluster.local/ns/default/sa/admin"})
	for _, tc := range []struct {
		name   string
		token  string
		csr    string
		ttl    int64
		meta   *structpb.Struct
		caErr  error
		issued float64
		reason string // refusal reason counted, "" for none
	}{
		{name: "issued", token: "web", csr: string(csr), issued: 1},
		{name: "no token", csr: string(csr), reason: metrics.RefusedAuthentication},
		{name: "empty CSR", token: "web", reason: metrics.RefusedCSRInvalid},
		{name: "unparsable CSR", token: "web", csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", reason: metrics.RefusedCSRInvalid},
		{name: "negative TTL", token: "web", csr: string(csr), ttl: -5, reason: metrics.RefusedTTL},
		{name: "impersonation", token: "web", csr: string(csr), meta: impersonate, reason: metrics.RefusedIdentity},
		{name: "policy refuses identity", token: "web", csr: string(csr), caErr: ca.ErrNotPermitted, reason: metrics.RefusedIdentity},
		{name: "signing failure", token: "web", csr: string(csr), caErr: errors.New("HSM unreachable"), reason: metrics.RefusedSigning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.NewControlPlane(reg, nil)
			if err != nil {
				t.Fatal(err)
			}
			client := serveWith(t, caservice.Config{CA: failingCA{auth, tc.caErr}, Authenticator: bearerIsIdentity{}, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
			}
			_, err = client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: tc.csr, ValidityDuration: tc.ttl, Metadata: tc.meta})
			if (err == nil) != (tc.reason == "") {
				t.Fatalf("CreateCertificate error = %v, want refusal %q", err, tc.reason)
			}
			if got := counter(t, reg, "meshguard_ca_certificates_issued_total", ""); got != tc.issued {
				t.Errorf("issued = %v, want %v", got, tc.issued)
			}
			for _, r := range []string{metrics.RefusedAuthentication, metrics.RefusedCSRInvalid, metrics.RefusedIdentity, metrics.RefusedTTL, metrics.RefusedSigning} {
				want := 0.0
				if r == tc.reason {
					want = 1
				}
				if got := counter(t, reg, "meshguard_ca_certificates_refused_total", r); got != want {
					t.Errorf("refused{reason=%q} = %v, want %v", r, got, want)
				}
			}
		})
	}
}

// counter returns the value of counter name, with label reason when it is not empty.
func counter(t *testing.T, g prometheus.Gatherer, name, reason string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			lv := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					lv = l.GetValue()
				}
			}
			if lv == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{reason=%q} in the registry", name, reason)
	return 0
}
