package config

import (
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// DefaultRootNamespace is Istio's default meshConfig.rootNamespace: policies there apply
// mesh-wide, and the `istio` ConfigMap is read from it.
const DefaultRootNamespace = "istio-system"

// DefaultMeshConfig returns Istio's default MeshConfig, the values an Istio install uses
// for every field the user leaves out (istio's pkg/config/mesh DefaultMeshConfig). Each
// call returns a new message the caller may modify.
func DefaultMeshConfig() *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{
		EnableTracing:                  true,
		AccessLogEncoding:              meshv1alpha1.MeshConfig_TEXT,
		ProtocolDetectionTimeout:       durationpb.New(0),
		IngressService:                 "istio-ingressgateway",
		IngressControllerMode:          meshv1alpha1.MeshConfig_STRICT,
		IngressClass:                   "istio",
		TrustDomain:                    "cluster.local",
		TrustDomainAliases:             []string{},
		EnableAutoMtls:                 wrapperspb.Bool(true),
		OutboundTrafficPolicy:          &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY},
		LocalityLbSetting:              &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)},
		Certificates:                   []*meshv1alpha1.Certificate{},
		DefaultConfig:                  defaultProxyConfig(),
		RootNamespace:                  DefaultRootNamespace,
		ProxyListenPort:                15001,
		ConnectTimeout:                 durationpb.New(10 * time.Second),
		DefaultServiceExportTo:         []string{"*"},
		DefaultVirtualServiceExportTo:  []string{"*"},
		DefaultDestinationRuleExportTo: []string{"*"},
		DnsRefreshRate:                 durationpb.New(60 * time.Second),
		ServiceSettings:                []*meshv1alpha1.MeshConfig_ServiceSettings{},
		DefaultProviders:               &meshv1alpha1.MeshConfig_DefaultProviders{},
		ExtensionProviders: []*meshv1alpha1.MeshConfig_ExtensionProvider{
			{Name: "prometheus", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Prometheus{
				Prometheus: &meshv1alpha1.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{}}},
			{Name: "stackdriver", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Stackdriver{
				Stackdriver: &meshv1alpha1.MeshConfig_ExtensionProvider_StackdriverProvider{}}},
			{Name: "envoy", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
				EnvoyFileAccessLog: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"}}},
		},
	}
}

func defaultProxyConfig() *meshv1alpha1.ProxyConfig {
	return &meshv1alpha1.ProxyConfig{
		ConfigPath:               "./etc/istio/proxy",
		ClusterName:              &meshv1alpha1.ProxyConfig_ServiceCluster{ServiceCluster: "istio-proxy"},
		DrainDuration:            durationpb.New(45 * time.Second),
		TerminationDrainDuration: durationpb.New(5 * time.Second),
		ProxyAdminPort:           15000,
		Concurrency:              wrapperspb.Int32(2),
		ControlPlaneAuthPolicy:   meshv1alpha1.AuthenticationPolicy_MUTUAL_TLS,
		DiscoveryAddress:         "istiod.istio-system.svc:15012",
		BinaryPath:               "/usr/local/bin/envoy",
		StatNameLength:           189,
		StatusPort:               15020,
	}
}

// meshSource is a MeshConfig as one document gave it, before merging with the defaults.
type meshSource struct {
	src    Source
	kind   string // IstioOperator or ConfigMap, for messages
	path   string // where in the document: spec.meshConfig or data.mesh
	user   *meshv1alpha1.MeshConfig
	fields map[string]any // the user's JSON object, to know which fields were given
	rep    Problem
}

// decodeMesh strictly decodes v, found at path, as a MeshConfig.
func decodeMesh(r *reporter, path string, v any) (*meshv1alpha1.MeshConfig, map[string]any, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		r.errorf(path, "got %s, want an object (MeshConfig)", jsonType(v))
		return nil, nil, false
	}
	mc := new(meshv1alpha1.MeshConfig)
	if _, ok := decodeSpec(r, path, obj, mc); !ok {
		return nil, nil, false
	}
	return mc, obj, true
}

// decodeMeshYAML decodes the `mesh` key of the istio ConfigMap: a YAML document held in
// a string.
func decodeMeshYAML(r *reporter, path, text string) (*meshv1alpha1.MeshConfig, map[string]any, bool) {
	if strings.TrimSpace(text) == "" {
		return new(meshv1alpha1.MeshConfig), map[string]any{}, true
	}
	js, err := yaml.YAMLToJSONStrict([]byte(text))
	if err != nil {
		r.errorf(path, "not valid YAML: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
		return nil, nil, false
	}
	v, err := decodeJSON(js)
	if err != nil {
		r.errorf(path, "not valid JSON: %v", err)
		return nil, nil, false
	}
	return decodeMesh(r, path, v)
}

// mergeMesh returns Istio's defaults overlaid with what the user gave, with Istio's
// merge rules (pkg/config/mesh ApplyMeshConfig): every top-level field the user sets
// replaces the default, except defaultConfig and defaultProviders, which merge field by
// field, extensionProviders, which merge by name, and trustDomainAliases, which are
// the union of both.
func mergeMesh(user *meshv1alpha1.MeshConfig, fields map[string]any) *meshv1alpha1.MeshConfig {
	out := DefaultMeshConfig()
	if user == nil {
		return out
	}
	dst, src := out.ProtoReflect(), user.ProtoReflect()
	for k, v := range fields {
		fd := fieldByName(dst.Descriptor(), k)
		if fd == nil {
			continue // decodeMesh already rejected it
		}
		sub, _ := v.(map[string]any)
		switch fd.Name() {
		case "default_config":
			if user.DefaultConfig != nil {
				overlay(out.DefaultConfig.ProtoReflect(), user.DefaultConfig.ProtoReflect(), sub)
				if user.DefaultConfig.ProxyMetadata != nil {
					md := map[string]string{}
					for mk, mv := range defaultProxyConfig().ProxyMetadata {
						md[mk] = mv
					}
					for mk, mv := range user.DefaultConfig.ProxyMetadata {
						md[mk] = mv
					}
					out.DefaultConfig.ProxyMetadata = md
				}
			}
		case "default_providers":
			if user.DefaultProviders != nil {
				overlay(out.DefaultProviders.ProtoReflect(), user.DefaultProviders.ProtoReflect(), sub)
			}
		case "extension_providers":
			for _, p := range user.ExtensionProviders {
				i := slices.IndexFunc(out.ExtensionProviders, func(e *meshv1alpha1.MeshConfig_ExtensionProvider) bool { return e.Name == p.Name })
				if i >= 0 {
					out.ExtensionProviders[i] = p
				} else {
					out.ExtensionProviders = append(out.ExtensionProviders, p)
				}
			}
		case "trust_domain_aliases":
			set := map[string]bool{}
			for _, a := range append(out.TrustDomainAliases, user.TrustDomainAliases...) {
				set[a] = true
			}
			out.TrustDomainAliases = make([]string, 0, len(set))
			for a := range set {
				out.TrustDomainAliases = append(out.TrustDomainAliases, a)
			}
			sort.Strings(out.TrustDomainAliases)
		default:
			copyField(dst, src, fd)
		}
	}
	return proto.Clone(out).(*meshv1alpha1.MeshConfig)
}

func fieldByName(md protoreflect.MessageDescriptor, k string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(k); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(k)
}

// overlay copies onto dst each field of src named in fields.
func overlay(dst, src protoreflect.Message, fields map[string]any) {
	for k := range fields {
		if fd := fieldByName(dst.Descriptor(), k); fd != nil {
			copyField(dst, src, fd)
		}
	}
}

func copyField(dst, src protoreflect.Message, fd protoreflect.FieldDescriptor) {
	if src.Has(fd) {
		dst.Set(fd, src.Get(fd))
	} else {
		dst.Clear(fd)
	}
}

// validateMesh checks the MeshConfig for what meshguard relies on: user is what the
// document gave (its list indexes are the ones to report), mc the merged result.
func validateMesh(r *reporter, path string, user, mc *meshv1alpha1.MeshConfig) {
	if !isDNS1123Label(mc.RootNamespace) {
		r.errorf(path+".rootNamespace", "%q is not a valid namespace name", mc.RootNamespace)
	}
	if mc.TrustDomain == "" {
		r.errorf(path+".trustDomain", "must not be empty")
	} else if err := checkTrustDomain(mc.TrustDomain); err != "" {
		r.errorf(path+".trustDomain", "%q %s", mc.TrustDomain, err)
	}
	for i, a := range user.TrustDomainAliases {
		if err := checkTrustDomain(a); err != "" {
			r.errorf(idx(path+".trustDomainAliases", i), "%q %s", a, err)
		}
	}
	seen := map[string]bool{}
	for i, p := range user.ExtensionProviders {
		f := idx(path+".extensionProviders", i)
		switch {
		case p.Name == "":
			r.errorf(f+".name", "must not be empty")
		case seen[p.Name]:
			r.errorf(f+".name", "duplicate extension provider name %q", p.Name)
		}
		seen[p.Name] = true
		if p.Provider == nil {
			r.errorf(f, "no provider type set for extension provider %q", p.Name)
		}
	}
}

// checkTrustDomain applies the SPIFFE trust domain character rules.
func checkTrustDomain(td string) string {
	if td == "" {
		return "must not be empty"
	}
	for _, c := range td {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "is not a valid trust domain: lower-case letters, digits, '.', '-' and '_' only"
		}
	}
	return ""
}
