package proxy_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
)

// The in-process data path: client → client sidecar → (mTLS) → server sidecar → echo,
// all on loopback, 1 KiB responses over keep-alive connections. BenchmarkDirect is the
// same client straight to the echo server, for the proxies' added cost.

func benchGet(b *testing.B, url string, h2c bool) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	b.SetParallelism(8) // 16 concurrent clients on 2 cores, like the fortio runs
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != 1024 {
				b.Errorf("GET = %d with %d bytes", resp.StatusCode, n)
				return
			}
		}
	})
}

func BenchmarkDirect(b *testing.B) {
	echo := meshtest.StartEcho(b)
	benchGet(b, echo.URL+"/?size=1024", false)
}

func benchPair(b *testing.B) *pair {
	echo := meshtest.StartEcho(b)
	return startPairTB(b, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
}

func BenchmarkSidecarPairHTTP1(b *testing.B) {
	pr := benchPair(b)
	benchGet(b, pr.outbound+"/?size=1024", false)
}

func BenchmarkSidecarPairH2C(b *testing.B) {
	pr := benchPair(b)
	benchGet(b, pr.outbound+"/?size=1024", true)
}

// BenchmarkSidecarPairPooledHTTP1 is BenchmarkSidecarPairHTTP1 with pooled HTTP/1.1
// between the sidecars instead of HTTP/2 streams.
func BenchmarkSidecarPairPooledHTTP1(b *testing.B) {
	echo := meshtest.StartEcho(b)
	pr := startPairTB(b, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}, pooledH1: true})
	benchGet(b, pr.outbound+"/?size=1024", false)
}
