package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestControlplaneAdmin runs `meshguard controlplane --admin` and scrapes it: readiness,
// the control plane's own metrics and the process collectors.
func TestControlplaneAdmin(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := l.Addr().String()
	l.Close() // the command listens on it; another process taking it meanwhile is unlikely
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"controlplane", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--admin", admin}, &stdout, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("exit %d after cancel", code)
			}
		case <-time.After(10 * time.Second):
			t.Error("controlplane did not stop within 10s of cancel")
		}
	}()
	hc := &http.Client{Timeout: 2 * time.Second}
	get := func(path string) (int, string) {
		resp, err := hc.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for code, body := get("/healthz/ready"); code != http.StatusOK; code, body = get("/healthz/ready") {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz/ready = %d %q after 10s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"meshguard_ca_certificates_issued_total 0",
		`meshguard_ca_certificates_refused_total{reason="authentication"} 0`,
		"meshguard_xds_connected_sidecars 0",
		`meshguard_ca_cert_expiry_remaining_seconds{cert="root-0",identity="spiffe://cluster.local",role="root"`,
		`meshguard_ca_cert_expiry_remaining_seconds{cert="serving",identity="spiffe://cluster.local/ns/meshguard-system/sa/meshguard",role="serving"`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
