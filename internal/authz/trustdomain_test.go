package authz

import (
	"slices"
	"testing"
)

// The cases of Istio's own tests for ReplaceTrustDomainAliases, and the patterns.
func TestExpandPrincipals(t *testing.T) {
	cases := []struct {
		name    string
		tds     trustDomains
		in, out []string
	}{
		{"no aliases", newTrustDomains("cluster.local", nil), []string{"cluster.local/ns/foo/sa/bar"}, []string{"cluster.local/ns/foo/sa/bar"}},
		{"any principal", newTrustDomains("td", []string{"td2"}), []string{"*"}, []string{"*"}},
		{"any trust domain", newTrustDomains("td", []string{"td2"}), []string{"*/ns/foo/sa/bar"}, []string{"*/ns/foo/sa/bar"}},
		{"not a SPIFFE principal", newTrustDomains("td", []string{"td2"}), []string{"ns/foo/sa/bar", "td/ns/foo"}, []string{"ns/foo/sa/bar", "td/ns/foo"}},
		{"local to aliases", newTrustDomains("td1", []string{"td2", "td3"}), []string{"td1/ns/foo/sa/bar"}, []string{"td1/ns/foo/sa/bar", "td2/ns/foo/sa/bar", "td3/ns/foo/sa/bar"}},
		{"alias to local", newTrustDomains("td2", []string{"td1"}), []string{"td1/ns/foo/sa/bar"}, []string{"td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"}},
		{"cluster.local to local", newTrustDomains("td1", nil), []string{"cluster.local/ns/foo/sa/bar"}, []string{"td1/ns/foo/sa/bar"}},
		{"foreign kept", newTrustDomains("td1", []string{"td2"}), []string{"other/ns/foo/sa/bar"}, []string{"other/ns/foo/sa/bar"}},
		{"suffix pattern kept for what it covers", newTrustDomains("old-td", []string{"new-td", "td3"}), []string{"*-td/ns/foo/sa/bar"}, []string{"*-td/ns/foo/sa/bar", "td3/ns/foo/sa/bar"}},
		{"prefix pattern", newTrustDomains("td-old", []string{"td-new"}), []string{"td-*/ns/foo/sa/bar"}, []string{"td-old/ns/foo/sa/bar", "td-new/ns/foo/sa/bar"}},
		{"wildcard namespace keeps its pattern", newTrustDomains("td1", []string{"td2"}), []string{"td1/ns/foo/sa/*"}, []string{"td1/ns/foo/sa/*", "td2/ns/foo/sa/*"}},
		{"repeats dropped", newTrustDomains("td1", []string{"td2", "td1", ""}), []string{"td1/ns/a/sa/b", "td2/ns/a/sa/b"}, []string{"td1/ns/a/sa/b", "td2/ns/a/sa/b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.tds.expandPrincipals(tc.in); !slices.Equal(got, tc.out) {
				t.Fatalf("expandPrincipals(%q) with %q = %q, want %q", tc.in, tc.tds, got, tc.out)
			}
		})
	}
}
