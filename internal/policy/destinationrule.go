package policy

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshguard/meshguard/internal/config"
)

// DomainSuffix is the cluster domain used to expand short DestinationRule hosts
// ("reviews" in namespace "default" is reviews.default.svc.cluster.local).
const DomainSuffix = "cluster.local"

type drEntry struct {
	o        *config.Object
	seq      int
	host     string // lower-case FQDN or "*.suffix" or "*"
	wildcard bool
}

type drIndex struct {
	byNS map[string]*drBucket
}

type drBucket struct {
	exact    map[string][]drEntry
	wildcard []drEntry // longest suffix first
}

func newDRIndex() *drIndex { return &drIndex{byNS: map[string]*drBucket{}} }

func (di *drIndex) add(o *config.Object, seq int, dr *networking.DestinationRule) {
	h := strings.ToLower(dr.GetHost())
	if h == "" {
		return
	}
	if !strings.Contains(h, ".") && h != "*" {
		h = h + "." + o.Namespace + ".svc." + DomainSuffix
	}
	b := di.byNS[o.Namespace]
	if b == nil {
		b = &drBucket{exact: map[string][]drEntry{}}
		di.byNS[o.Namespace] = b
	}
	e := drEntry{o: o, seq: seq, host: h, wildcard: strings.HasPrefix(h, "*")}
	if e.wildcard {
		b.wildcard = append(b.wildcard, e)
	} else {
		b.exact[h] = append(b.exact[h], e)
	}
}

func (di *drIndex) finish() {
	for _, b := range di.byNS {
		slices.SortStableFunc(b.wildcard, func(x, y drEntry) int { return len(y.host) - len(x.host) })
	}
}

// DestinationRule returns the DestinationRule that applies when client calls host (a
// FQDN such as reviews.default.svc.cluster.local), or nil. Istio's lookup:
//
//   - namespaces are tried in order: the client's, the host's own (from
//     <svc>.<ns>.svc.<suffix>), then the root namespace;
//   - in the client's namespace every rule is visible; in the others a rule is visible
//     when its exportTo (or, without one, meshConfig.defaultDestinationRuleExportTo;
//     "*" when both are empty) holds "*" or the client's namespace;
//   - in the first namespace with a visible rule for host, the most specific host wins:
//     exact, then the longest wildcard suffix ("*.default.svc.cluster.local" before
//     "*.cluster.local" before "*"). Istio stops there: if none of that host's rules
//     applies to the client, there is no DestinationRule (no fall back to a less
//     specific host or to another namespace);
//   - among that host's rules, one whose workloadSelector matches the client (only in
//     the client's namespace) beats the rules without a selector; between competing
//     rules the oldest wins (config.Meta.Older). Istio merges same-host rules (subsets,
//     and a traffic policy from a later rule when the oldest has none); meshguard returns
//     the oldest rule unmerged.
func (ix *Index) DestinationRule(client Workload, host string) *config.Object {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	nss := []string{client.Namespace}
	if parts := strings.Split(host, "."); len(parts) >= 3 && parts[2] == "svc" && parts[1] != client.Namespace {
		nss = append(nss, parts[1])
	}
	if !slices.Contains(nss, ix.rootNS) {
		nss = append(nss, ix.rootNS)
	}
	for _, ns := range nss {
		b := ix.drs.byNS[ns]
		if b == nil {
			continue
		}
		local := ns == client.Namespace
		visible := func(e drEntry) bool { return local || ix.exported(e, client.Namespace) }
		if es := b.mostSpecific(host, visible); len(es) > 0 {
			return pickDR(es, client, local)
		}
	}
	return nil
}

// mostSpecific returns the visible rules of the most specific host that matches host.
func (b *drBucket) mostSpecific(host string, visible func(drEntry) bool) []drEntry {
	var out []drEntry
	for _, e := range b.exact[host] {
		if visible(e) {
			out = append(out, e)
		}
	}
	if len(out) > 0 {
		return out
	}
	best := ""
	for _, e := range b.wildcard { // longest suffix first
		if best != "" && e.host != best {
			if len(e.host) < len(best) {
				break
			}
			continue
		}
		if (e.host == "*" || strings.HasSuffix(host, e.host[1:])) && visible(e) {
			best = e.host
			out = append(out, e)
		}
	}
	return out
}

// pickDR chooses among one host's rules: the oldest whose workloadSelector matches the
// client (selectors count only in the client's own namespace), else the oldest without
// a selector, else nil.
func pickDR(es []drEntry, client Workload, local bool) *config.Object {
	var sel, all *config.Object
	for _, e := range es {
		ml := e.o.DestinationRule().GetWorkloadSelector().GetMatchLabels()
		switch {
		case len(ml) == 0:
			if all == nil || e.o.Older(&all.Meta) {
				all = e.o
			}
		case local && selects(ml, client.Labels):
			if sel == nil || e.o.Older(&sel.Meta) {
				sel = e.o
			}
		}
	}
	if sel != nil {
		return sel
	}
	return all
}

// exported reports whether a rule outside the client's namespace is visible to it.
func (ix *Index) exported(e drEntry, clientNS string) bool {
	exp := e.o.DestinationRule().GetExportTo()
	if len(exp) == 0 {
		exp = ix.mesh.GetDefaultDestinationRuleExportTo()
	}
	if len(exp) == 0 {
		return true
	}
	return slices.Contains(exp, "*") || slices.Contains(exp, clientNS)
}
