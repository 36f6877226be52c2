package certreport_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshguard/meshguard/internal/certreport"
	"github.com/meshguard/meshguard/internal/meshtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// inventory is a mesh whose plugged-in intermediate expires in two days.
func inventory() []certreport.Cert {
	c := func(role, name, id, subject, serial string, left time.Duration) certreport.Cert {
		return certreport.Cert{Role: role, Name: name, Identity: id, Subject: subject, Serial: serial, NotBefore: at.Add(-24 * time.Hour), NotAfter: at.Add(left)}
	}
	return []certreport.Cert{
		c(certreport.RoleRoot, "root-0", "", "CN=meshguard root CA,O=cluster.local", "1f", 3650*24*time.Hour),
		c(certreport.RoleRoot, "root-1", "", "CN=new root CA,O=cluster.local", "2e", 7300*24*time.Hour),
		c(certreport.RoleIntermediate, "ca-cert", "spiffe://cluster.local", "CN=meshguard intermediate,O=cluster.local", "3d", 48*time.Hour),
		c(certreport.RoleServing, "serving", "spiffe://cluster.local/ns/meshguard-system/sa/meshguard", "", "4c", 16*time.Hour),
		c(certreport.RoleWorkload, "default/httpbin httpbin-1-1", "spiffe://cluster.local/ns/default/sa/httpbin", "", "5b", 23*time.Hour+59*time.Minute),
		c(certreport.RoleWorkload, "default/sleep sleep-1-2", "spiffe://cluster.local/ns/default/sa/sleep", "", "6a", -90*time.Minute),
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (run go test -update)", path, err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file   string
		certs  []certreport.Cert
		window time.Duration
		json   bool
	}{
		{"expiring.txt.golden", inventory(), 72 * time.Hour, false},
		{"expiring.json.golden", inventory(), 72 * time.Hour, true},
		{"healthy.txt.golden", inventory()[:2], 72 * time.Hour, false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r := certreport.NewReport(tc.certs, at, tc.window)
			var b bytes.Buffer
			write := r.WriteText
			if tc.json {
				write = r.WriteJSON
			}
			if err := write(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.file, b.Bytes())
		})
	}
}

func TestNewReport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		window   time.Duration
		order    []string
		expiring int
		statuses []string
	}{
		// serving (16h of 40h left) and httpbin (half its life left) renew themselves and
		// are not past their renewal point: inside the window, but not an operator's job.
		{"72h window", 72 * time.Hour, []string{"default/sleep sleep-1-2", "serving", "default/httpbin httpbin-1-1", "ca-cert", "root-0", "root-1"}, 2,
			[]string{certreport.StatusExpired, certreport.StatusOK, certreport.StatusOK, certreport.StatusExpiring, certreport.StatusOK, certreport.StatusOK}},
		{"zero window counts only the expired", 0, nil, 1, nil},
		{"window reaching the first root", 3650 * 24 * time.Hour, nil, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := certreport.NewReport(inventory(), at, tc.window)
			var names, statuses []string
			for _, e := range r.Certificates {
				names, statuses = append(names, e.Name), append(statuses, e.Status)
			}
			if tc.order != nil && !slices.Equal(names, tc.order) {
				t.Errorf("order = %v, want %v", names, tc.order)
			}
			if tc.statuses != nil && !slices.Equal(statuses, tc.statuses) {
				t.Errorf("statuses = %v, want %v", statuses, tc.statuses)
			}
			if r.Expiring != tc.expiring {
				t.Errorf("Expiring = %d, want %d", r.Expiring, tc.expiring)
			}
		})
	}
}

// TestRenewalOverdue: a certificate that renews itself counts only once it is past its
// renewal point (by a tenth of its lifetime); one that nothing renews counts inside the
// window at once.
func TestRenewalOverdue(t *testing.T) {
	cert := func(role string, life, left time.Duration) certreport.Cert {
		return certreport.Cert{Role: role, Name: role, Serial: "1", NotBefore: at.Add(left - life), NotAfter: at.Add(left)}
	}
	for _, tc := range []struct {
		name string
		c    certreport.Cert
		want string
	}{
		{"workload just issued", cert(certreport.RoleWorkload, 24*time.Hour, 24*time.Hour), certreport.StatusOK},
		{"workload at its renewal point", cert(certreport.RoleWorkload, 24*time.Hour, 12*time.Hour), certreport.StatusOK},
		{"workload whose renewal is failing", cert(certreport.RoleWorkload, 24*time.Hour, 9*time.Hour), certreport.StatusExpiring},
		{"serving at a third", cert(certreport.RoleServing, 24*time.Hour, 8*time.Hour), certreport.StatusOK},
		{"serving past renewal", cert(certreport.RoleServing, 24*time.Hour, 5*time.Hour), certreport.StatusExpiring},
		{"intermediate with most of its life left", cert(certreport.RoleIntermediate, 24*time.Hour, 23*time.Hour), certreport.StatusExpiring},
		{"root", cert(certreport.RoleRoot, 240*time.Hour, 71*time.Hour), certreport.StatusExpiring},
	} {
		r := certreport.NewReport([]certreport.Cert{tc.c}, at, 72*time.Hour)
		if got := r.Certificates[0].Status; got != tc.want {
			t.Errorf("%s: status = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFormatLeft(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{30*24*time.Hour + 5*time.Hour + 7*time.Minute, "30d5h"},
		{72 * time.Hour, "3d0h"},
		{72*time.Hour - time.Second, "71h59m"},
		{time.Hour, "1h0m"},
		{59*time.Minute + 59*time.Second + 999*time.Millisecond, "59m59s"},
		{time.Millisecond, "0m0s"},
		{0, "expired 0m1s ago"},
		{-2 * time.Hour, "expired 2h0m ago"},
	} {
		if got := certreport.FormatLeft(tc.d); got != tc.want {
			t.Errorf("FormatLeft(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestFromX509(t *testing.T) {
	ca := meshtest.NewCA(t, "cluster.local")
	c := ca.Issue(t, ca.ID("default", "httpbin"), time.Hour).Leaf
	got := certreport.FromX509(certreport.RoleWorkload, "w", c)
	want := certreport.Cert{Role: certreport.RoleWorkload, Name: "w", Identity: "spiffe://cluster.local/ns/default/sa/httpbin",
		Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("FromX509 (-want +got):\n%s", d)
	}
	if root := certreport.FromX509(certreport.RoleRoot, "root-0", ca.Root); root.Identity != "" && root.Subject == "" {
		t.Errorf("root = %+v, want its subject", root)
	}
}
