package metrics_test

import (
	"fmt"
	"time"

	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// The inbound proxy resolves a connection's labels once and records each request on
// the handle.
func ExampleSidecar_Conn() {
	reg := prometheus.NewRegistry()
	s, err := metrics.NewSidecar(reg, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	conn := s.Conn(metrics.ConnLabels{
		Reporter:                 metrics.ReporterDestination,
		Source:                   metrics.Peer{Workload: "frontend", Namespace: "shop", Principal: "spiffe://cluster.local/ns/shop/sa/frontend"},
		Destination:              metrics.Peer{Workload: "cart", Namespace: "shop"},
		RequestProtocol:          "http",
		ConnectionSecurityPolicy: metrics.SecurityMutualTLS,
	})
	conn.RecordRequest(metrics.Request{ResponseCode: 200, Duration: 4 * time.Millisecond})
	conn.RecordRequest(metrics.Request{ResponseCode: 403, Duration: time.Millisecond})
	s.AuthzDenied("ns[shop]-policy[deny-anon]-rule[0]", false)

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var code, principal string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "response_code":
					code = l.GetValue()
				case "source_principal":
					principal = l.GetValue()
				}
			}
			fmt.Println(code, principal, m.GetCounter().GetValue())
		}
	}
	// Output:
	// 200 spiffe://cluster.local/ns/shop/sa/frontend 1
	// 403 spiffe://cluster.local/ns/shop/sa/frontend 1
}
