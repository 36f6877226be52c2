package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/policy"
)

// state is everything the server derives from one snapshot, shared by all streams.
// Views are computed lazily, once per distinct (namespace, labels).
type state struct {
	snap   *config.Snapshot
	index  *policy.Index
	rootNS string
	enc    map[*config.Object]*anypb.Any
	mesh   *anypb.Any
	meshV  string
	peer   map[string][]*config.Object // PeerAuthentications by namespace
	drs    []*config.Object
	ses    []*config.Object
	wes    map[string][]*config.Object // WorkloadEntries by namespace

	mu    sync.Mutex
	views map[string]*view
}

// view is the config one workload receives: per type URL the encoded resources, and
// the objects behind them (for config dumps). It is immutable, and may be shared by
// the states of several snapshots.
type view struct {
	version string
	res     map[string][]*anypb.Any
	objects []*config.Object
}

// encKey identifies an object's encoding across snapshots: equal content gives an equal
// ResourceVersion, so an unchanged object is not marshaled again. The creation time,
// which the ResourceVersion does not cover, is part of the encoding too.
type encKey struct {
	kind     config.Kind
	key, rev string
	created  int64
}

func encKeyOf(o *config.Object) encKey {
	var created int64
	if !o.CreationTime.IsZero() {
		created = o.CreationTime.UnixNano()
	}
	return encKey{o.Kind, o.Key(), o.ResourceVersion, created}
}

// newState indexes snap and encodes every object it pushes, reusing prev's encodings
// of unchanged objects, and prev's views of the namespaces the change cannot affect
// that live holds (the view keys of connected streams; nil means all), so that views
// of sidecars gone do not pile up.
func newState(snap *config.Snapshot, prev *state, live map[string]bool) (*state, error) {
	st := &state{
		snap: snap, index: policy.NewIndex(snap), enc: make(map[*config.Object]*anypb.Any, len(snap.Objects)),
		peer: map[string][]*config.Object{}, wes: map[string][]*config.Object{}, views: map[string]*view{},
	}
	st.rootNS = st.index.RootNamespace()
	old := map[encKey]*anypb.Any{}
	if prev != nil {
		for o, a := range prev.enc {
			old[encKeyOf(o)] = a
		}
	}
	// What changed since prev, for carrying views over: namespaces of changed
	// namespace-scoped policies; anything else (the registry, exportTo, the root
	// namespace, the mesh config) may change any view.
	kept := make(map[encKey]bool, len(old))
	changedNS := map[string]bool{}
	changedAll := prev == nil
	changed := func(o *config.Object) {
		switch o.Kind {
		case config.KindAuthorizationPolicy, config.KindRequestAuthentication, config.KindPeerAuthentication:
			changedNS[o.Namespace] = true
		default:
			changedAll = true
		}
	}
	for _, o := range snap.Objects {
		if TypeOf(o.Kind) == "" {
			continue
		}
		k := encKeyOf(o)
		a := old[k]
		if a != nil {
			kept[k] = true
		} else if prev != nil {
			changed(o)
		}
		if a == nil {
			var err error
			if a, err = EncodeObject(o); err != nil {
				return nil, err
			}
		}
		st.enc[o] = a
		switch o.Kind {
		case config.KindPeerAuthentication:
			st.peer[o.Namespace] = append(st.peer[o.Namespace], o)
		case config.KindDestinationRule:
			st.drs = append(st.drs, o)
		case config.KindServiceEntry:
			st.ses = append(st.ses, o)
		case config.KindWorkloadEntry:
			st.wes[o.Namespace] = append(st.wes[o.Namespace], o)
		}
	}
	mb, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap.Mesh)
	if err != nil {
		return nil, fmt.Errorf("encode mesh config: %w", err)
	}
	sum := sha256.Sum256(mb)
	st.meshV = hex.EncodeToString(sum[:8])
	if prev != nil && prev.meshV == st.meshV {
		st.mesh = prev.mesh // the same bytes, so that carried views and new ones agree
	} else if st.mesh, err = EncodeMesh(snap.Mesh, st.meshV); err != nil {
		return nil, err
	}
	if prev != nil {
		for o := range prev.enc {
			if !kept[encKeyOf(o)] {
				changed(o) // removed
			}
		}
		if prev.meshV != st.meshV || prev.rootNS != st.rootNS || changedNS[st.rootNS] {
			changedAll = true
		}
	}
	if !changedAll {
		// A workload's view holds its namespace's and the root namespace's policies
		// and the registry: when only other namespaces' policies changed, its view
		// is the same one, and its stream finds nothing to push without computing it.
		prev.mu.Lock()
		for k, v := range prev.views {
			ns, _, _ := strings.Cut(k, "\x00")
			if !changedNS[ns] && (live == nil || live[k]) {
				st.views[k] = v
			}
		}
		prev.mu.Unlock()
	}
	return st, nil
}

func viewKey(w policy.Workload) string {
	var b strings.Builder
	b.WriteString(w.Namespace)
	for _, k := range slices.Sorted(maps.Keys(w.Labels)) {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(w.Labels[k])
	}
	return b.String()
}

// viewFor returns the view of workload w. Only w.Namespace and w.Labels matter: the
// namespace comes from the verified certificate, and labels only choose among objects
// that namespace and the root namespace hold, or that are exported to everyone.
func (st *state) viewFor(w policy.Workload) *view { return st.viewOf(viewKey(w), w) }

// viewOf is viewFor with w's viewKey k computed by the caller (once per stream).
func (st *state) viewOf(k string, w policy.Workload) *view {
	st.mu.Lock()
	v := st.views[k]
	st.mu.Unlock()
	if v != nil {
		return v
	}
	v = st.compute(w)
	st.mu.Lock()
	defer st.mu.Unlock()
	if prev := st.views[k]; prev != nil {
		return prev
	}
	st.views[k] = v
	return v
}

func (st *state) compute(w policy.Workload) *view {
	byType := map[string][]*config.Object{
		TypeAuthorizationPolicy:   st.index.AuthorizationPolicies(w),
		TypeRequestAuthentication: st.index.RequestAuthentications(w),
	}
	for _, ns := range uniq(st.rootNS, w.Namespace) {
		for _, o := range st.peer[ns] {
			if selects(o.PeerAuthentication().GetSelector().GetMatchLabels(), w.Labels) {
				byType[TypePeerAuthentication] = append(byType[TypePeerAuthentication], o)
			}
		}
	}
	for _, o := range st.drs {
		dr := o.DestinationRule()
		if sel := dr.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 && (o.Namespace != w.Namespace || !selects(sel, w.Labels)) {
			continue
		}
		if exported(dr.GetExportTo(), st.snap.Mesh.GetDefaultDestinationRuleExportTo(), o.Namespace, w.Namespace) {
			byType[TypeDestinationRule] = append(byType[TypeDestinationRule], o)
		}
	}
	weSeen := map[*config.Object]bool{}
	for _, o := range st.ses {
		se := o.ServiceEntry()
		if !exported(se.GetExportTo(), st.snap.Mesh.GetDefaultServiceExportTo(), o.Namespace, w.Namespace) {
			continue
		}
		byType[TypeServiceEntry] = append(byType[TypeServiceEntry], o)
		sel := se.GetWorkloadSelector().GetLabels()
		if len(sel) == 0 {
			continue
		}
		// The endpoints of a visible service: WorkloadEntries it selects in its namespace.
		for _, we := range st.wes[o.Namespace] {
			if !weSeen[we] && selects(sel, we.WorkloadEntry().GetLabels()) {
				weSeen[we] = true
				byType[TypeWorkloadEntry] = append(byType[TypeWorkloadEntry], we)
			}
		}
	}
	v := &view{res: map[string][]*anypb.Any{TypeMeshConfig: {st.mesh}}}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", TypeMeshConfig, st.meshV)
	for _, t := range Types[1:] {
		objs := byType[t]
		slices.SortFunc(objs, func(a, b *config.Object) int { return strings.Compare(a.Key(), b.Key()) })
		objs = slices.Compact(objs)
		as := make([]*anypb.Any, len(objs))
		for i, o := range objs {
			as[i] = st.enc[o]
			fmt.Fprintf(h, "%s\x00%s\x00%s\x00", t, o.Key(), o.ResourceVersion)
			if !o.CreationTime.IsZero() {
				// A recreated object (same content, newer) may rank differently.
				fmt.Fprintf(h, "%d\x00", o.CreationTime.UnixNano())
			}
		}
		v.res[t] = as
		v.objects = append(v.objects, objs...)
	}
	v.version = hex.EncodeToString(h.Sum(nil)[:8])
	return v
}

func uniq(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

// selects reports whether every selector pair is among the labels; an empty selector
// selects everything.
func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// exported applies Istio's exportTo: "*" is every namespace, "." the object's own,
// "~" none, anything else a namespace name; an empty list takes the mesh default.
func exported(exportTo, def []string, objNS, clientNS string) bool {
	if len(exportTo) == 0 {
		exportTo = def
	}
	if len(exportTo) == 0 {
		return true
	}
	for _, x := range exportTo {
		switch x {
		case "*", clientNS:
			return true
		case ".":
			if objNS == clientNS {
				return true
			}
		}
	}
	return false
}
