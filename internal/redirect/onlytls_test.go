package redirect_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/meshtest"
)

// recConn records what one side writes.
type recConn struct {
	net.Conn
	w *bytes.Buffer
}

func (c recConn) Write(b []byte) (int, error) {
	c.w.Write(b)
	return c.Conn.Write(b)
}

// TestOnlyTLS proves the capture check used by the netns test can fail: it accepts the
// bytes of a real TLS 1.3 exchange carrying the secret, and rejects the same secret in
// plaintext HTTP, a capture with nothing sent to the server, and a stream that starts as
// TLS and turns into plaintext.
func TestOnlyTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server"},
		DNSNames: []string{"server"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	secret := "secret-body-42"
	cc, sc := net.Pipe()
	var toServer, toClient bytes.Buffer
	srv := tls.Server(recConn{sc, &toClient}, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	go func() {
		defer srv.Close()
		buf := make([]byte, 64)
		if _, err := srv.Read(buf); err == nil {
			io.WriteString(srv, secret)
		}
	}()
	cli := tls.Client(recConn{cc, &toServer}, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test-only peer
	if _, err := io.WriteString(cli, "GET / HTTP/1.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(cli); string(b) != secret {
		t.Fatalf("TLS exchange returned %q", b)
	}
	cli.Close()

	client, server := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:8080")
	seg := func(from, to netip.AddrPort, b []byte) meshtest.Segment {
		return meshtest.Segment{Src: from, Dst: to, Payload: b}
	}
	// Split the recorded bytes into segments at odd offsets, like a real capture.
	split := func(from, to netip.AddrPort, b []byte) []meshtest.Segment {
		var out []meshtest.Segment
		for len(b) > 0 {
			n := min(len(b), 37)
			out = append(out, seg(from, to, b[:n]))
			b = b[n:]
		}
		return out
	}
	tlsSegs := append(split(client, server, toServer.Bytes()), split(server, client, toClient.Bytes())...)
	if errs := onlyTLS(tlsSegs, "10.0.0.2", secret); len(errs) != 0 {
		t.Errorf("onlyTLS(real TLS exchange) = %v, want no errors", errs)
	}

	tests := []struct {
		name string
		segs []meshtest.Segment
	}{
		{"plaintext HTTP", []meshtest.Segment{
			seg(client, server, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
			seg(server, client, []byte("HTTP/1.1 200 OK\r\n\r\n"+secret)),
		}},
		{"nothing sent to the server", split(server, client, toClient.Bytes())},
		{"TLS then plaintext", append(split(client, server, toServer.Bytes()), seg(client, server, []byte("GET /again HTTP/1.1\r\n\r\n")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if errs := onlyTLS(tt.segs, "10.0.0.2", secret); len(errs) == 0 {
				t.Errorf("onlyTLS(%s) found nothing wrong", tt.name)
			}
		})
	}
}
