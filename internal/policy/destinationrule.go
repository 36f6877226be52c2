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
// FQDN such as reviews.default.svc.cluster.local), or nil. Istio's rules, simplified:
//
//   - namespaces are tried in order: the client's, the host's own (from
//     <svc>.<ns>.svc.<suffix>), then the root namespace; the first with a match wins;
//   - a rule is visible to the client when its exportTo is empty or holds "*" or the
//     client's namespace, or holds "." and it lives in the client's namespace;
//   - a rule with a workloadSelector applies only to matching clients in its namespace;
//   - within a namespace an exact host beats wildcards, and the longest wildcard suffix
//     wins ("*.default.svc.cluster.local" before "*.cluster.local" before "*");
//   - DestinationRules for one host are not merged: the first by name wins.
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
		if o := pickDR(b.exact[host], client); o != nil {
			return o
		}
		for _, e := range b.wildcard {
			if (e.host == "*" || strings.HasSuffix(host, e.host[1:])) && applies(e, client) {
				return e.o
			}
		}
	}
	return nil
}

func pickDR(es []drEntry, client Workload) *config.Object {
	var best *drEntry
	for i := range es {
		if applies(es[i], client) && (best == nil || es[i].o.Name < best.o.Name) {
			best = &es[i]
		}
	}
	if best == nil {
		return nil
	}
	return best.o
}

func applies(e drEntry, client Workload) bool {
	dr := e.o.DestinationRule()
	if sel := dr.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 {
		if e.o.Namespace != client.Namespace || !selects(sel, client.Labels) {
			return false
		}
	}
	exp := dr.GetExportTo()
	if len(exp) == 0 {
		return true
	}
	for _, x := range exp {
		switch x {
		case "*", client.Namespace:
			return true
		case ".":
			if e.o.Namespace == client.Namespace {
				return true
			}
		}
	}
	return false
}
