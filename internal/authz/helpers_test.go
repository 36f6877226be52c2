package authz_test

import (
	"testing"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
)

// objects decodes YAML policies into config.Objects.
func objects(tb testing.TB, src string) []*config.Object {
	tb.Helper()
	var out []*config.Object
	for _, o := range meshtest.IstioObjects(tb, src) {
		out = append(out, &config.Object{
			Kind: config.Kind(o.Kind),
			Meta: config.Meta{Namespace: o.Namespace, Name: o.Name, Labels: o.Labels, Annotations: o.Annotations},
			Spec: o.Spec,
		})
	}
	return out
}
