package controlplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

// BenchmarkCreateCertificate measures end-to-end CreateCertificate over TLS on loopback
// with 100 concurrent clients, each on its own connection with its own bootstrap token,
// calling in a closed loop. CSRs are made before the clock starts: key generation is
// the client's cost. Reports p50/p99 latency and certificates per second.
//
// "token" authenticates every call with a bootstrap token (first certificates);
// "mtls-renewal" with the client's mesh certificate (the steady state of a mesh).
// The "-NNNNqps" variants hold the same 100 clients to a fixed aggregate rate instead.
func BenchmarkCreateCertificate(b *testing.B) {
	cp := meshtest.StartControlPlane(b, meshtest.ControlPlaneOptions{})
	b.Run("token", func(b *testing.B) { benchCreate(b, cp, false) })
	b.Run("mtls-renewal", func(b *testing.B) { benchCreate(b, cp, true) })
	b.Run("mtls-renewal-1000qps", func(b *testing.B) { benchCreateAtRate(b, cp, 1000) })
	b.Run("mtls-renewal-2000qps", func(b *testing.B) { benchCreateAtRate(b, cp, 2000) })
}

type benchClient struct {
	conn *grpc.ClientConn
	ctx  context.Context
}

// benchClients connects n clients, each with its own bootstrap token (and, for
// renewal, its own mesh certificate), and warms each connection's TLS handshake.
func benchClients(b *testing.B, cp *meshtest.ControlPlane, n int, renewal bool, csr string) []benchClient {
	cs := make([]benchClient, n)
	for i := range cs {
		tokenCtx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cp.Token(b, "bench", fmt.Sprintf("sa%d", i), time.Hour))
		cs[i].conn, cs[i].ctx = cp.Dial(b, nil), tokenCtx
		if renewal {
			key, _ := pki.GenerateKey(pki.KeyECP256)
			resp, err := pb.NewIstioCertificateServiceClient(cs[i].conn).CreateCertificate(tokenCtx, &pb.IstioCertificateRequest{Csr: newCSR(b, key, "").pem, ValidityDuration: 3600})
			if err != nil {
				b.Fatal(err)
			}
			leaf, inter, _ := parseChain(b, resp)
			mesh := &tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
			for _, c := range inter {
				mesh.Certificate = append(mesh.Certificate, c.Raw)
			}
			cs[i].conn, cs[i].ctx = cp.Dial(b, mesh), context.Background()
		}
		if _, err := pb.NewIstioCertificateServiceClient(cs[i].conn).CreateCertificate(cs[i].ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600}); err != nil {
			b.Fatal(err)
		}
	}
	return cs
}

func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "certs/s")
}

// benchCreate: closed loop, every client calls again as soon as it has its answer. This
// measures capacity; latency then is mostly queueing (≥ clients ÷ throughput).
func benchCreate(b *testing.B, cp *meshtest.ControlPlane, renewal bool) {
	const clients = 100
	csr := newCSR(b, nil, "").pem
	cs := benchClients(b, cp, clients, renewal, csr)
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range cs {
		wg.Go(func() {
			c := pb.NewIstioCertificateServiceClient(cs[i].conn)
			for {
				n := next.Add(1) - 1
				if n >= int64(b.N) {
					return
				}
				t := time.Now()
				if _, err := c.CreateCertificate(cs[i].ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600}); err != nil {
					b.Error(err)
					return
				}
				lat[n] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

// benchCreateAtRate: open loop, 100 clients together sending qps requests per second,
// each on its own schedule. Latency is measured from the scheduled send time, so a
// stalled server is charged for the requests it delayed (no coordinated omission).
// This is the latency a fleet of agents renewing at a given rate sees.
func benchCreateAtRate(b *testing.B, cp *meshtest.ControlPlane, qps int) {
	const clients = 100
	csr := newCSR(b, nil, "").pem
	cs := benchClients(b, cp, clients, true, csr)
	perClient := (b.N + clients - 1) / clients
	interval := time.Duration(clients) * time.Second / time.Duration(qps)
	lat := make([]time.Duration, clients*perClient)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range cs {
		wg.Go(func() {
			c := pb.NewIstioCertificateServiceClient(cs[i].conn)
			// Spread the clients' phases evenly over one interval.
			due := start.Add(interval * time.Duration(i) / clients)
			for k := range perClient {
				time.Sleep(time.Until(due))
				if _, err := c.CreateCertificate(cs[i].ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600}); err != nil {
					b.Error(err)
					return
				}
				lat[i*perClient+k] = time.Since(due)
				due = due.Add(interval)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}
