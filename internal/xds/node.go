package xds

import (
	"fmt"
	"maps"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Node metadata keys, as Istio's proxies send them (pkg/model NodeMetadata JSON names).
const (
	MetaNamespace      = "NAMESPACE"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaWorkloadName   = "WORKLOAD_NAME"
	MetaName           = "NAME"
	MetaLabels         = "LABELS"
)

// Node is what a sidecar says about itself. The control plane believes only what the
// certificate cannot tell it: the workload name and labels. Namespace and service
// account, when given, must match the certificate.
type Node struct {
	// ID identifies the proxy instance, e.g. "sidecar~10.0.0.7~reviews-v1-abc.default".
	ID             string
	Namespace      string
	ServiceAccount string
	// WorkloadName is the workload (deployment) name; several replicas share it.
	WorkloadName string
	Labels       map[string]string
}

// proto returns n as an Envoy Node with Istio's metadata keys.
func (n Node) proto() (*core.Node, error) {
	md := map[string]any{}
	for k, v := range map[string]string{MetaNamespace: n.Namespace, MetaServiceAccount: n.ServiceAccount, MetaWorkloadName: n.WorkloadName} {
		if v != "" {
			md[k] = v
		}
	}
	if len(n.Labels) > 0 {
		ls := map[string]any{}
		for k, v := range n.Labels {
			ls[k] = v
		}
		md[MetaLabels] = ls
	}
	s, err := structpb.NewStruct(md)
	if err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	return &core.Node{Id: n.ID, Metadata: s}, nil
}

// nodeInfo reads a Node from an Envoy Node. Values of the wrong JSON type are errors, not
// silently dropped: a sidecar whose labels vanish would get the wrong policies.
func nodeInfo(p *core.Node) (Node, error) {
	n := Node{ID: p.GetId()}
	if n.ID == "" {
		return n, fmt.Errorf("id is empty; the first request on a stream must carry the node")
	}
	f := p.GetMetadata().GetFields()
	str := func(k string) (string, error) {
		v, ok := f[k]
		if !ok {
			return "", nil
		}
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return "", fmt.Errorf("metadata %s: want a string", k)
		}
		return s.StringValue, nil
	}
	var err error
	if n.Namespace, err = str(MetaNamespace); err != nil {
		return n, err
	}
	if n.ServiceAccount, err = str(MetaServiceAccount); err != nil {
		return n, err
	}
	if n.WorkloadName, err = str(MetaWorkloadName); err != nil {
		return n, err
	}
	if n.WorkloadName == "" {
		if n.WorkloadName, err = str(MetaName); err != nil {
			return n, err
		}
	}
	if lv, ok := f[MetaLabels]; ok {
		ls := lv.GetStructValue()
		if ls == nil {
			return n, fmt.Errorf("metadata %s: want an object of strings", MetaLabels)
		}
		n.Labels = make(map[string]string, len(ls.GetFields()))
		for _, k := range slices.Sorted(maps.Keys(ls.GetFields())) {
			s, ok := ls.GetFields()[k].GetKind().(*structpb.Value_StringValue)
			if !ok {
				return n, fmt.Errorf("metadata %s[%s]: want a string", MetaLabels, k)
			}
			n.Labels[k] = s.StringValue
		}
	}
	return n, nil
}
