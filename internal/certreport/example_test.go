package certreport_test

import (
	"fmt"
	"time"

	"github.com/meshguard/meshguard/internal/certreport"
)

// A report judges the inventory at one time: soonest expiry first, and what falls
// inside the window counted — `ctl certs` exits 1 when that count is not zero.
func ExampleNewReport() {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	r := certreport.NewReport([]certreport.Cert{
		{Role: certreport.RoleRoot, Name: "root-0", NotAfter: now.AddDate(10, 0, 0)},
		{Role: certreport.RoleIntermediate, Name: "ca-cert", NotAfter: now.Add(36 * time.Hour)},
		{Role: certreport.RoleWorkload, Name: "default/httpbin httpbin-1-1", NotAfter: now.Add(20 * time.Hour)},
	}, now, 24*time.Hour)
	for _, e := range r.Certificates {
		fmt.Println(e.Role, e.TimeLeft, e.Status)
	}
	fmt.Println("expiring:", r.Expiring)
	// Output:
	// workload 20h0m expiring
	// intermediate 36h0m ok
	// root 3653d0h ok
	// expiring: 1
}
