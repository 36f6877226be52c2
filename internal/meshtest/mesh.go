package meshtest

import "strconv"

// EchoMeshYAML is the Istio config of the two-sidecar fixture that several end-to-end
// tests share: the service echo.default.svc.cluster.local served by the workload
// labelled app=server (service account "server") whose sidecar's inbound port is
// serverInbound, ISTIO_MUTUAL between sidecars and STRICT mTLS in namespace default.
// Tests add their own policies beside it.
func EchoMeshYAML(serverInbound int) string {
	return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: ` + strconv.Itoa(serverInbound) + `}
  labels: {app: server}
  serviceAccount: server
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: default}
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
`
}
