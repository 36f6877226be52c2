package legacy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/meshguard/meshguard/internal/config"
)

// policy is a namespaced Policy document with spec (flow-style YAML).
func policy(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", name, ns, spec)
}

func meshPolicy(spec string) string {
	return "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: " + spec + "\n"
}

// svc is a Service in namespace shop with selector app=NAME and the given ports.
func svc(name, ports string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: shop}\nspec: {selector: {app: %s}, ports: %s}\n", name, name, ports)
}

func docs(ds ...string) string { return strings.Join(ds, "---\n") }

const jwtOrigin = `{issuer: "https://idp.example.com", jwksUri: "https://idp.example.com/jwks.json"}`

// summarize renders conversions one object a line: KIND NS/NAME compact-JSON-spec.
func summarize(t *testing.T, convs []Conversion) []string {
	t.Helper()
	var out []string
	for _, c := range convs {
		for _, o := range c.Objects {
			js, err := protojson.Marshal(o.Spec)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := json.Compact(&b, js); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %s %s", o.Kind, o.Key(), b.String()))
		}
	}
	return out
}

var protocmpTransform = protocmp.Transform()

func convert(t testing.TB, yaml string) ([]Conversion, config.Warnings, error) {
	t.Helper()
	return Convert(context.Background(), config.Loader{}, config.File{Name: "in.yaml", Data: []byte(yaml)})
}

// convertCases is the conversion table: what each old field becomes. The package
// documentation's table says the same in prose; refuseCases holds the refusals.
var convertCases = []struct {
	name string
	in   string
	want []string
}{
	{"namespace policy, mtls given as null is STRICT (the article)", policy("customer", "default", "{peers: [{mtls: null}]}"),
		[]string{`PeerAuthentication customer/default {"mtls":{"mode":"STRICT"}}`}},
	{"mtls {} is STRICT", policy("shop", "default", "{peers: [{mtls: {}}]}"),
		[]string{`PeerAuthentication shop/default {"mtls":{"mode":"STRICT"}}`}},
	{"mtls mode PERMISSIVE", policy("shop", "default", "{peers: [{mtls: {mode: PERMISSIVE}}]}"),
		[]string{`PeerAuthentication shop/default {"mtls":{"mode":"PERMISSIVE"}}`}},
	{"no peers is no peer authentication: DISABLE", policy("shop", "default", "{}"),
		[]string{`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`}},
	{"empty spec is DISABLE too", "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: shop}\n",
		[]string{`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`}},
	{"MeshPolicy goes to the root namespace", meshPolicy("{peers: [{mtls: {mode: PERMISSIVE}}]}"),
		[]string{`PeerAuthentication istio-system/default {"mtls":{"mode":"PERMISSIVE"}}`}},
	{"MeshPolicy follows the mesh config's root namespace", docs(
		"apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {meshConfig: {rootNamespace: mesh-root}}\n",
		meshPolicy("{peers: [{mtls: {}}]}")),
		[]string{`PeerAuthentication mesh-root/default {"mtls":{"mode":"STRICT"}}`}},
	{"MeshPolicy ignores a namespace in metadata (cluster-scoped)",
		"apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: shop}\nspec: {peers: [{mtls: {}}]}\n",
		[]string{`PeerAuthentication istio-system/default {"mtls":{"mode":"STRICT"}}`}},
	{"target service becomes the Service's selector", docs(policy("shop", "cart-mtls", "{targets: [{name: cart}], peers: [{mtls: {}}]}"), svc("cart", "[{name: http, port: 80}]")),
		[]string{`PeerAuthentication shop/cart-mtls {"selector":{"matchLabels":{"app":"cart"}},"mtls":{"mode":"STRICT"}}`}},
	{"target ports become portLevelMtls on the workload port", docs(
		policy("shop", "cart-mtls", "{targets: [{name: cart, ports: [{number: 80}, {name: grpc}, {number: 8443}]}], peers: [{mtls: {mode: PERMISSIVE}}]}"),
		svc("cart", "[{name: http, port: 80, targetPort: 9080}, {name: grpc, port: 7070}, {name: https, port: 8443, targetPort: 9080}]")),
		[]string{`PeerAuthentication shop/cart-mtls {"selector":{"matchLabels":{"app":"cart"}},"portLevelMtls":{"7070":{"mode":"PERMISSIVE"},"9080":{"mode":"PERMISSIVE"}}}`}},
	{"target port without peers disables mTLS on that port only", docs(
		policy("shop", "cart-plain", "{targets: [{name: cart, ports: [{number: 80}]}]}"), svc("cart", "[{name: http, port: 80}]")),
		[]string{`PeerAuthentication shop/cart-plain {"selector":{"matchLabels":{"app":"cart"}},"portLevelMtls":{"80":{"mode":"DISABLE"}}}`}},
	{"two targets: one set of objects per service", docs(
		policy("shop", "front", "{targets: [{name: cart}, {name: web}], peers: [{mtls: {}}]}"),
		svc("cart", "[{port: 80}]"), svc("web", "[{port: 80}]")),
		[]string{
			`PeerAuthentication shop/front-cart {"selector":{"matchLabels":{"app":"cart"}},"mtls":{"mode":"STRICT"}}`,
			`PeerAuthentication shop/front-web {"selector":{"matchLabels":{"app":"web"}},"mtls":{"mode":"STRICT"}}`,
		}},
	{"origins: RequestAuthentication plus a DENY without a request principal", policy("shop", "default", "{origins: [{jwt: "+jwtOrigin+"}]}"),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"https://idp.example.com","jwksUri":"https://idp.example.com/jwks.json","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}]}],"action":"DENY"}`,
		}},
	{"jwt audiences, inline jwks, headers and params", policy("shop", "default",
		`{origins: [{jwt: {issuer: a, audiences: [aud-x, aud-y], jwks: '{"keys":[{"kty":"oct","k":"AAAA"}]}', jwtHeaders: [x-token], jwtParams: [tok]}}]}`),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"a","audiences":["aud-x","aud-y"],"jwks":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}","fromHeaders":[{"name":"x-token"}],"fromParams":["tok"],"forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}]}],"action":"DENY"}`,
		}},
	{"two origins with the same trigger rules", policy("shop", "default",
		`{origins: [{jwt: {issuer: a, triggerRules: [{includedPaths: [{prefix: /api/}]}]}}, {jwt: {issuer: b, triggerRules: [{includedPaths: [{prefix: /api/}]}]}}]}`),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"a","forwardOriginalToken":true},{"issuer":"b","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}],"to":[{"operation":{"paths":["/api/*"]}}]}],"action":"DENY"}`,
		}},
	{"trigger rules: exact, prefix, suffix; one DENY rule each", policy("shop", "default",
		`{peers: [{mtls: {}}], origins: [{jwt: {issuer: a, triggerRules: [{excludedPaths: [{exact: /health}, {prefix: /status/}]}, {includedPaths: [{suffix: .json}], excludedPaths: [{exact: /public.json}]}]}}]}`),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"STRICT"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"a","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}],"to":[{"operation":{"notPaths":["/health","/status/*"]}}]},{"from":[{"source":{"notRequestPrincipals":["*"]}}],"to":[{"operation":{"paths":["*.json"],"notPaths":["/public.json"]}}]}],"action":"DENY"}`,
		}},
	{"a trigger rule without paths triggers everywhere", policy("shop", "default",
		`{origins: [{jwt: {issuer: a, triggerRules: [{includedPaths: [{exact: /a}]}, {}]}}]}`),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"a","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}]}],"action":"DENY"}`,
		}},
	{"proto snake_case names are read too", policy("shop", "default",
		`{origins: [{jwt: {issuer: a, jwks_uri: "https://idp/jwks", trigger_rules: [{excluded_paths: [{exact: /health}]}]}}], principal_binding: USE_ORIGIN}`),
		[]string{
			`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`,
			`RequestAuthentication shop/default {"jwtRules":[{"issuer":"a","jwksUri":"https://idp/jwks","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy shop/default-require-jwt {"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}],"to":[{"operation":{"notPaths":["/health"]}}]}],"action":"DENY"}`,
		}},
	{"the article's service policy: USE_ORIGIN converts", docs(
		policy("customer", "customer-jwt-policy", "{targets: [{name: customer}], peers: [{mtls: null}], origins: [{jwt: "+jwtOrigin+"}], principalBinding: USE_ORIGIN}"),
		"apiVersion: v1\nkind: Service\nmetadata: {name: customer, namespace: customer}\nspec: {selector: {app: customer}, ports: [{name: http, port: 8080}]}\n"),
		[]string{
			`PeerAuthentication customer/customer-jwt-policy {"selector":{"matchLabels":{"app":"customer"}},"mtls":{"mode":"STRICT"}}`,
			`RequestAuthentication customer/customer-jwt-policy {"selector":{"matchLabels":{"app":"customer"}},"jwtRules":[{"issuer":"https://idp.example.com","jwksUri":"https://idp.example.com/jwks.json","forwardOriginalToken":true}]}`,
			`AuthorizationPolicy customer/customer-jwt-policy-require-jwt {"selector":{"matchLabels":{"app":"customer"}},"rules":[{"from":[{"source":{"notRequestPrincipals":["*"]}}]}],"action":"DENY"}`,
		}},
	{"narrower policies without origins beside a mesh policy without origins", docs(
		meshPolicy("{peers: [{mtls: {}}]}"), policy("shop", "default", "{peers: [{mtls: {mode: PERMISSIVE}}]}")),
		[]string{
			`PeerAuthentication istio-system/default {"mtls":{"mode":"STRICT"}}`,
			`PeerAuthentication shop/default {"mtls":{"mode":"PERMISSIVE"}}`,
		}},
	{"peerIsOptional and originIsOptional without methods are ignored", policy("shop", "default", "{peerIsOptional: true, originIsOptional: true}"),
		[]string{`PeerAuthentication shop/default {"mtls":{"mode":"DISABLE"}}`}},
}

func TestConvert(t *testing.T) {
	for _, tc := range convertCases {
		t.Run(tc.name, func(t *testing.T) {
			convs, warnings, err := convert(t, tc.in)
			if err != nil {
				t.Fatalf("Convert() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, summarize(t, convs)); diff != "" {
				t.Errorf("Convert() objects (-want +got):\n%s", diff)
			}
			// One warning per legacy object names every replacement.
			for _, c := range convs {
				n := 0
				for _, w := range warnings {
					if w.Source == c.Source && strings.HasPrefix(w.Reason, "converted to ") {
						n++
						for _, o := range c.Objects {
							if !strings.Contains(w.Reason, fmt.Sprintf("%s %s", o.Kind, o.Key())) {
								t.Errorf("warning %q does not name %s %s", w, o.Kind, o.Key())
							}
						}
					}
				}
				if n != 1 {
					t.Errorf("%d conversion warnings for %s, want 1 (warnings: %v)", n, c.Origin(), warnings)
				}
			}
			checkReloads(t, convs)
		})
	}
}

// checkReloads asserts that every generated object passes the config validation and
// that the YAML Encode writes loads through the modern loader alone into the same
// objects.
func checkReloads(t testing.TB, convs []Conversion) {
	t.Helper()
	var objs []*config.Object
	for _, c := range convs {
		objs = append(objs, c.Objects...)
	}
	if err := config.ValidateObjects(objs, nil); err != nil {
		t.Errorf("generated objects do not validate: %v", err)
	}
	y, err := Encode(convs)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "converted.yaml", Data: y})
	if err != nil {
		t.Fatalf("converted YAML does not load: %v\n%s", err, y)
	}
	if len(snap.Objects) != len(objs) {
		t.Fatalf("converted YAML loads %d objects, want %d", len(snap.Objects), len(objs))
	}
	for _, o := range objs {
		var got *config.Object
		for _, s := range snap.Objects {
			if s.Kind == o.Kind && s.Key() == o.Key() {
				got = s
			}
		}
		if got == nil {
			t.Errorf("%s %s missing after reload", o.Kind, o.Key())
			continue
		}
		if diff := cmp.Diff(o.Spec, got.Spec, protocmpTransform); diff != "" {
			t.Errorf("%s %s changed through YAML (-converted +reloaded):\n%s", o.Kind, o.Key(), diff)
		}
	}
}

// refuseCases is the refusal table: each old field or combination with no faithful
// modern equivalent, and the field the problem names.
var refuseCases = []struct {
	name, in, field, reason string
}{
	{"unknown field", policy("shop", "default", "{peer: [{mtls: {}}]}"), "spec.peer", `unknown field "peer"`},
	{"unknown field deep", policy("shop", "default", "{peers: [{mtls: {mod: STRICT}}]}"), "spec.peers[0].mtls.mod", `unknown field "mod"`},
	{"both spellings", policy("shop", "default", "{originIsOptional: false, origin_is_optional: false}"), "spec.origin_is_optional", "given twice"},
	{"wrong JSON type", policy("shop", "default", "{peers: mtls}"), "spec.peers", "want a list"},
	{"unknown top-level field", "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: shop}\nspecs: {}\n", "specs", "unknown top-level field"},
	{"mesh policy not named default", "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec: {}\n", "metadata.name", `must be named "default"`},
	{"mesh policy with targets", meshPolicy("{targets: [{name: a}]}"), "spec.targets", "must not have targets"},
	{"namespace policy not named default", policy("shop", "mtls", "{peers: [{mtls: {}}]}"), "metadata.name", `must be named "default"`},
	{"service policy named default", docs(policy("shop", "default", "{targets: [{name: cart}]}"), svc("cart", "[{port: 80}]")), "metadata.name", "must not have targets"},
	{"policy in the root namespace", policy("istio-system", "default", "{peers: [{mtls: {}}]}"), "metadata.namespace", "root namespace"},
	{"target labels", policy("shop", "cart", "{targets: [{name: cart, labels: {app: cart}}]}"), "spec.targets[0].labels", "never implemented"},
	{"target name not a short name", policy("shop", "cart", "{targets: [{name: cart.shop.svc.cluster.local}]}"), "spec.targets[0].name", "short name"},
	{"target service not in the input", policy("shop", "cart", "{targets: [{name: cart}], peers: [{mtls: {}}]}"), "spec.targets[0].name", "Service shop/cart is not in the input"},
	{"target service without selector", docs(policy("shop", "cart", "{targets: [{name: cart}]}"), "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {type: ExternalName, externalName: cart.example.com}\n"), "spec.targets[0].name", "no spec.selector"},
	{"target port not on the service", docs(policy("shop", "cart", "{targets: [{name: cart, ports: [{number: 81}]}]}"), svc("cart", "[{name: http, port: 80}]")), "spec.targets[0].ports[0]", "has no port 81 (it has: http 80)"},
	{"named targetPort", docs(policy("shop", "cart", "{targets: [{name: cart, ports: [{name: http}]}]}"), svc("cart", "[{name: http, port: 80, targetPort: web}]")), "spec.targets[0].ports[0]", "named container port"},
	{"port with both number and name", policy("shop", "cart", "{targets: [{name: cart, ports: [{number: 80, name: http}]}]}"), "spec.targets[0].ports[0]", "exactly one of number or name"},
	{"origins limited to ports", docs(policy("shop", "cart", "{targets: [{name: cart, ports: [{number: 80}]}], origins: [{jwt: "+jwtOrigin+"}]}"), svc("cart", "[{port: 80}]")), "spec.targets[0].ports", "every port"},
	{"one service, two policies", docs(policy("shop", "a", "{targets: [{name: cart}]}"), policy("shop", "b", "{targets: [{name: cart}]}"), svc("cart", "[{port: 80}]")), "spec.targets[0].name", "chosen arbitrarily"},
	{"peer jwt", policy("shop", "default", "{peers: [{jwt: {issuer: a}}]}"), "spec.peers[0].jwt", "never available"},
	{"second peer method", policy("shop", "default", "{peers: [{mtls: {}}, {mtls: {}}]}"), "spec.peers[1]", "only one mtls peer method"},
	{"empty peer method", policy("shop", "default", "{peers: [{}]}"), "spec.peers[0]", "give one peer method"},
	{"allowTls", policy("shop", "default", "{peers: [{mtls: {allowTls: true}}]}"), "spec.peers[0].mtls.allowTls", "without a client certificate"},
	{"unknown mTLS mode", policy("shop", "default", "{peers: [{mtls: {mode: DISABLE}}]}"), "spec.peers[0].mtls.mode", `unknown mode "DISABLE"`},
	{"peerIsOptional with peers", policy("shop", "default", "{peers: [{mtls: {}}], peerIsOptional: true}"), "spec.peerIsOptional", "no modern equivalent"},
	{"originIsOptional with origins", policy("shop", "default", "{origins: [{jwt: "+jwtOrigin+"}], originIsOptional: true}"), "spec.originIsOptional", "invalid token"},
	{"USE_ORIGIN without origins", policy("shop", "default", "{peers: [{mtls: {}}], principalBinding: USE_ORIGIN}"), "spec.principalBinding", "fail every request"},
	{"unknown binding", policy("shop", "default", "{principalBinding: 1}"), "spec.principalBinding", "want a string"},
	{"unknown binding name", policy("shop", "default", "{principalBinding: USE_BOTH}"), "spec.principalBinding", `unknown binding "USE_BOTH"`},
	{"origin without jwt", policy("shop", "default", "{origins: [{jwt: null}]}"), "spec.origins[0].jwt.issuer", "must be set"},
	{"origin empty", policy("shop", "default", "{origins: [{}]}"), "spec.origins[0].jwt", "JWT is the only origin method"},
	{"duplicate issuer", policy("shop", "default", "{origins: [{jwt: {issuer: a}}, {jwt: {issuer: a}}]}"), "spec.origins[1].jwt.issuer", "already used"},
	{"jwks and jwksUri", policy("shop", "default", `{origins: [{jwt: {issuer: a, jwks: "{}", jwksUri: "https://idp/jwks"}}]}`), "spec.origins[0].jwt.jwks", "only one of jwks and jwksUri"},
	{"jwksUri not a URL", policy("shop", "default", `{origins: [{jwt: {issuer: a, jwksUri: "idp/jwks"}}]}`), "spec.origins[0].jwt.jwksUri", "not an http:// or https:// URL"},
	{"empty audience", policy("shop", "default", `{origins: [{jwt: {issuer: a, audiences: [""]}}]}`), "spec.origins[0].jwt.audiences[0]", "non-empty"},
	{"ingress-authorization header", policy("shop", "default", `{origins: [{jwt: {issuer: a, jwtHeaders: [ingress-authorization]}}]}`), "spec.origins[0].jwt.jwtHeaders[0]", "ambiguous"},
	{"regex trigger", policy("shop", "default", `{origins: [{jwt: {issuer: a, triggerRules: [{includedPaths: [{regex: "^/api/.*"}]}]}}]}`), "spec.origins[0].jwt.triggerRules[0].includedPaths[0].regex", "cannot be converted"},
	{"wildcard in exact trigger path", policy("shop", "default", `{origins: [{jwt: {issuer: a, triggerRules: [{excludedPaths: [{exact: "/a*"}]}]}}]}`), "spec.origins[0].jwt.triggerRules[0].excludedPaths[0].exact", "matched literally"},
	{"template in prefix trigger path", policy("shop", "default", `{origins: [{jwt: {issuer: a, triggerRules: [{excludedPaths: [{prefix: "/{x}"}]}]}}]}`), "spec.origins[0].jwt.triggerRules[0].excludedPaths[0].prefix", "matched literally"},
	{"two kinds of match", policy("shop", "default", `{origins: [{jwt: {issuer: a, triggerRules: [{excludedPaths: [{exact: /a, prefix: /b}]}]}}]}`), "spec.origins[0].jwt.triggerRules[0].excludedPaths[0]", "exactly one of exact"},
	{"different trigger rules per origin", policy("shop", "default", `{origins: [{jwt: {issuer: a}}, {jwt: {issuer: b, triggerRules: [{includedPaths: [{prefix: /b}]}]}}]}`), "spec.origins[1].jwt.triggerRules", "any of its issuers"},
	{"mesh origins under a namespace policy", docs(meshPolicy("{origins: [{jwt: "+jwtOrigin+"}]}"), policy("shop", "default", "{peers: [{mtls: {}}]}")), "spec.origins", "Policy shop/default (in.yaml:1) overrides"},
	{"namespace origins under a service policy", docs(policy("shop", "default", "{origins: [{jwt: "+jwtOrigin+"}]}"), policy("shop", "cart", "{targets: [{name: cart}]}"), svc("cart", "[{port: 80}]")), "spec.origins", "Policy shop/cart (in.yaml:1) overrides"},
	{"modern validation still applies: bad inline jwks", policy("shop", "default", `{origins: [{jwt: {issuer: a, jwks: "not json"}}]}`), "spec.jwtRules[0].jwks", "jwks parse error"},
}

func TestConvertRefuses(t *testing.T) {
	for _, tc := range refuseCases {
		t.Run(tc.name, func(t *testing.T) {
			convs, _, err := convert(t, tc.in)
			if convs != nil {
				t.Errorf("Convert() = %d conversions with an error, want none", len(convs))
			}
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Convert() error = %v, want Problems", err)
			}
			for _, p := range ps {
				if p.Field == tc.field && strings.Contains(p.Reason, tc.reason) {
					return
				}
			}
			t.Errorf("Convert() problems:\n%v\nwant one at %s containing %q", err, tc.field, tc.reason)
		})
	}
}

// TestLoaderTranslates is the loader integration: with the Translator set, legacy
// policies load as their modern objects beside modern ones, and a refused one fails the
// whole load; without it they are skipped as before.
func TestLoaderTranslates(t *testing.T) {
	in := docs(policy("shop", "default", "{peers: [{mtls: {}}], origins: [{jwt: "+jwtOrigin+"}]}"),
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: shop}\nspec: {rules: [{}]}\n")
	l := config.Loader{Translator: Translator{}}
	snap, warnings, err := l.LoadFiles(context.Background(), config.File{Name: "in.yaml", Data: []byte(in)})
	if err != nil {
		t.Fatalf("LoadFiles() error = %v", err)
	}
	var got []string
	for _, o := range snap.Objects {
		got = append(got, fmt.Sprintf("%s %s %s", o.Kind, o.Key(), o.Source))
	}
	want := []string{
		"AuthorizationPolicy shop/allow-all in.yaml:1",
		"AuthorizationPolicy shop/default-require-jwt in.yaml:0",
		"PeerAuthentication shop/default in.yaml:0",
		"RequestAuthentication shop/default in.yaml:0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot objects (-want +got):\n%s", diff)
	}
	if len(warnings) == 0 || !strings.Contains(warnings[0].String(), "in.yaml:0: Policy shop/default: -: converted to PeerAuthentication shop/default, RequestAuthentication shop/default, AuthorizationPolicy shop/default-require-jwt") {
		t.Errorf("warnings = %v, want the conversion first", warnings)
	}

	t.Run("refused fails the load", func(t *testing.T) {
		bad := docs(in, policy("web", "default", "{peerIsOptional: true, peers: [{mtls: {}}]}"))
		snap, _, err := l.LoadFiles(context.Background(), config.File{Name: "in.yaml", Data: []byte(bad)})
		var ps config.Problems
		if snap != nil || !errors.As(err, &ps) || len(ps) != 1 || ps[0].String() != "in.yaml:2: Policy web/default: spec.peerIsOptional: "+ps[0].Reason {
			t.Errorf("LoadFiles() = %v, %v; want no snapshot and the one problem", snap, err)
		}
	})
	t.Run("duplicates with modern objects are found", func(t *testing.T) {
		dup := docs(in, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {}\n")
		_, _, err := l.LoadFiles(context.Background(), config.File{Name: "in.yaml", Data: []byte(dup)})
		if err == nil || !strings.Contains(err.Error(), "duplicate PeerAuthentication shop/default") {
			t.Errorf("LoadFiles() error = %v, want a duplicate", err)
		}
	})
	t.Run("without a translator they are skipped", func(t *testing.T) {
		snap, warnings, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "in.yaml", Data: []byte(in)})
		if err != nil || len(snap.Objects) != 1 || !strings.Contains(fmt.Sprint(warnings), "skipped") {
			t.Errorf("LoadFiles() = %v, %v, %v; want the modern object only and a skip warning", snap, warnings, err)
		}
	})
	t.Run("unused services are skipped with a warning", func(t *testing.T) {
		_, warnings, err := l.LoadFiles(context.Background(), config.File{Name: "in.yaml", Data: []byte(svc("cart", "[{port: 80}]"))})
		if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0].Reason, "skipped") {
			t.Errorf("LoadFiles() = %v, %v; want one skip warning", warnings, err)
		}
	})
}
