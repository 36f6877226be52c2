package controlplane_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/meshtest"
)

// BenchmarkCreateCertificate measures end-to-end CreateCertificate over TLS on loopback
// with 100 concurrent clients, each on its own connection with its own bootstrap token,
// calling in a closed loop. CSRs are made before the clock starts: key generation is
// the client's cost. Reports p50/p99 latency and certificates per second.
func BenchmarkCreateCertificate(b *testing.B) {
	const clients = 100
	cp := meshtest.StartControlPlane(b, meshtest.ControlPlaneOptions{})
	csr := newCSR(b, nil, "").pem
	type client struct {
		conn *grpc.ClientConn
		ctx  context.Context
	}
	cs := make([]client, clients)
	for i := range cs {
		cs[i].conn = cp.Dial(b, nil)
		cs[i].ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cp.Token(b, "bench", "sa", time.Hour))
		// Warm the connection (TLS handshake) outside the measurement.
		if _, err := pb.NewIstioCertificateServiceClient(cs[i].conn).CreateCertificate(cs[i].ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600}); err != nil {
			b.Fatal(err)
		}
	}
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
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
}
