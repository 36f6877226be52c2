package policy

import (
	"cmp"
	"slices"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// DefaultRootNamespace is Istio's root namespace when meshConfig.rootNamespace is unset.
const DefaultRootNamespace = "istio-system"

// Workload is the identity and labels that policy selection looks at.
type Workload struct {
	Namespace      string
	Name           string
	ServiceAccount string
	Labels         map[string]string
}

// Index answers per-workload policy questions for one snapshot. Build it once per
// snapshot with NewIndex; each lookup touches only the root and workload namespaces and,
// within them, only policies keyed by one of the workload's own labels.
type Index struct {
	rootNS string
	mesh   *meshv1alpha1.MeshConfig

	authz *selectorIndex
	reqAn *selectorIndex
	peer  *selectorIndex
	drs   *drIndex
}

// NewIndex indexes a snapshot. Objects that use targetRef/targetRefs are left out: in
// Istio they attach to gateways and waypoints, never to sidecars.
func NewIndex(s *config.Snapshot) *Index {
	ix := &Index{
		rootNS: s.Mesh.GetRootNamespace(),
		mesh:   s.Mesh,
		authz:  newSelectorIndex(),
		reqAn:  newSelectorIndex(),
		peer:   newSelectorIndex(),
		drs:    newDRIndex(),
	}
	if ix.rootNS == "" {
		ix.rootNS = DefaultRootNamespace
	}
	for seq, o := range s.Objects {
		switch o.Kind {
		case config.KindAuthorizationPolicy:
			sp := o.AuthorizationPolicy()
			if sp == nil || sp.GetTargetRef() != nil || len(sp.GetTargetRefs()) > 0 {
				continue
			}
			ix.authz.add(o, seq, sp.GetSelector())
		case config.KindRequestAuthentication:
			sp := o.RequestAuthentication()
			if sp == nil || sp.GetTargetRef() != nil || len(sp.GetTargetRefs()) > 0 {
				continue
			}
			ix.reqAn.add(o, seq, sp.GetSelector())
		case config.KindPeerAuthentication:
			if sp := o.PeerAuthentication(); sp != nil {
				ix.peer.add(o, seq, sp.GetSelector())
			}
		case config.KindDestinationRule:
			if dr := o.DestinationRule(); dr != nil {
				ix.drs.add(o, seq, dr)
			}
		}
	}
	ix.drs.finish()
	return ix
}

// RootNamespace is the mesh's root namespace: policies there apply to every namespace.
func (ix *Index) RootNamespace() string { return ix.rootNS }

// Mesh is the snapshot's effective MeshConfig.
func (ix *Index) Mesh() *meshv1alpha1.MeshConfig { return ix.mesh }

// AuthorizationPolicies returns the AuthorizationPolicies that apply to w: those in the
// root namespace and in w's namespace whose selector is empty or matches w's labels,
// ordered by namespace then name.
func (ix *Index) AuthorizationPolicies(w Workload) []*config.Object {
	return ix.authz.forWorkload(ix.rootNS, w)
}

// RequestAuthentications returns the RequestAuthentications that apply to w, selected as
// AuthorizationPolicies are. All of them apply: their JWT rules are merged.
func (ix *Index) RequestAuthentications(w Workload) []*config.Object {
	return ix.reqAn.forWorkload(ix.rootNS, w)
}

type label struct{ k, v string }

type entry struct {
	o        *config.Object
	seq      int
	selector map[string]string
}

// selectorIndex buckets objects by namespace; within a namespace, objects without a
// selector are kept in a list and objects with one are keyed by the smallest of their
// selector's pairs, so a lookup visits only candidates sharing a label with the workload.
type selectorIndex struct {
	byNS map[string]*nsBucket
}

type nsBucket struct {
	all     []entry
	byLabel map[label][]entry
}

func newSelectorIndex() *selectorIndex { return &selectorIndex{byNS: map[string]*nsBucket{}} }

func (si *selectorIndex) add(o *config.Object, seq int, sel *typev1beta1.WorkloadSelector) {
	b := si.byNS[o.Namespace]
	if b == nil {
		b = &nsBucket{byLabel: map[label][]entry{}}
		si.byNS[o.Namespace] = b
	}
	ml := sel.GetMatchLabels()
	e := entry{o: o, seq: seq, selector: ml}
	if len(ml) == 0 {
		b.all = append(b.all, e)
		return
	}
	var key label
	first := true
	for k, v := range ml {
		if first || k < key.k {
			key, first = label{k, v}, false
		}
	}
	b.byLabel[key] = append(b.byLabel[key], e)
}

func (si *selectorIndex) forWorkload(rootNS string, w Workload) []*config.Object {
	var es []entry
	es = si.collect(es, rootNS, w)
	if w.Namespace != rootNS {
		es = si.collect(es, w.Namespace, w)
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.o.Namespace, b.o.Namespace), cmp.Compare(a.o.Name, b.o.Name), cmp.Compare(a.seq, b.seq))
	})
	out := make([]*config.Object, len(es))
	for i, e := range es {
		out[i] = e.o
	}
	return out
}

func (si *selectorIndex) collect(es []entry, ns string, w Workload) []entry {
	b := si.byNS[ns]
	if b == nil {
		return es
	}
	es = append(es, b.all...)
	for k, v := range w.Labels {
		for _, e := range b.byLabel[label{k, v}] {
			if selects(e.selector, w.Labels) {
				es = append(es, e)
			}
		}
	}
	return es
}

// selects reports whether every selector pair is among the labels.
func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
