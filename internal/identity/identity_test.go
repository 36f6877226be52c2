package identity_test

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/identity"
)

var parseCases = []struct {
	name    string
	in      string
	want    identity.Identity
	wantErr string
}{
	{name: "ok", in: "spiffe://cluster.local/ns/default/sa/web", want: identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}},
	{name: "dots and dashes", in: "spiffe://example.org/ns/team-a/sa/api.v2_x", want: identity.Identity{TrustDomain: "example.org", Namespace: "team-a", ServiceAccount: "api.v2_x"}},
	{name: "empty", in: "", wantErr: "parse"},
	{name: "wrong scheme", in: "https://cluster.local/ns/default/sa/web", wantErr: "parse"},
	{name: "no path", in: "spiffe://cluster.local", wantErr: "path"},
	{name: "swapped segments", in: "spiffe://cluster.local/sa/web/ns/default", wantErr: "path"},
	{name: "extra segment", in: "spiffe://cluster.local/ns/default/sa/web/x", wantErr: "path"},
	{name: "empty sa", in: "spiffe://cluster.local/ns/default/sa/", wantErr: "parse"},
	{name: "dot segment", in: "spiffe://cluster.local/ns/../sa/web", wantErr: "parse"},
	{name: "upper-case trust domain", in: "spiffe://Cluster.local/ns/default/sa/web", wantErr: "parse"},
	{name: "query", in: "spiffe://cluster.local/ns/default/sa/web?x=1", wantErr: "parse"},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				if !got.IsZero() {
					t.Errorf("Parse(%q) returned partial value %+v with error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in || got.SPIFFEID().String() != tc.in {
				t.Errorf("round trip: String() = %q, SPIFFEID() = %q, want %q", got.String(), got.SPIFFEID(), tc.in)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   identity.Identity
		want string // substring of the error, "" for valid
	}{
		{"valid", identity.Identity{"cluster.local", "ns1", "sa1"}, ""},
		{"no trust domain", identity.Identity{"", "ns1", "sa1"}, "trust domain is empty"},
		{"uri trust domain", identity.Identity{"spiffe://cluster.local", "ns1", "sa1"}, "trust domain"},
		{"no namespace", identity.Identity{"cluster.local", "", "sa1"}, "namespace is empty"},
		{"slash in namespace", identity.Identity{"cluster.local", "a/b", "sa1"}, "namespace"},
		{"dotdot service account", identity.Identity{"cluster.local", "ns1", ".."}, "service account"},
		{"space in service account", identity.Identity{"cluster.local", "ns1", "a b"}, "service account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.id.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tc.id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate(%+v) = %v, want error containing %q", tc.id, err, tc.want)
			}
			if !tc.id.SPIFFEID().IsZero() {
				t.Errorf("SPIFFEID() of invalid %+v = %q, want zero", tc.id, tc.id.SPIFFEID())
			}
		})
	}
}

func TestFromSPIFFEID(t *testing.T) {
	if _, err := identity.FromSPIFFEID(spiffeid.ID{}); err == nil {
		t.Error("FromSPIFFEID(zero) = nil error, want error")
	}
	id := spiffeid.RequireFromString("spiffe://td.example/ns/a/sa/b")
	got, err := identity.FromSPIFFEID(id)
	if err != nil || got.SPIFFEID() != id {
		t.Fatalf("FromSPIFFEID(%q) = %+v, %v", id, got, err)
	}
}

// FuzzParse checks that Parse either fails with a zero value or returns a valid identity
// whose SPIFFE ID formats back to the same string.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := identity.Parse(s)
		if err != nil {
			if !id.IsZero() {
				t.Fatalf("Parse(%q) = %+v with error %v, want zero value", s, id, err)
			}
			return
		}
		if verr := id.Validate(); verr != nil {
			t.Fatalf("Parse(%q) = %+v, which does not Validate: %v", s, id, verr)
		}
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q, want the input back", s, id.String())
		}
		again, err := identity.Parse(id.String())
		if err != nil || again != id {
			t.Fatalf("re-Parse(%q) = %+v, %v; want %+v", id.String(), again, err, id)
		}
	})
}
