package xds

import (
	"strings"
	"testing"
	"time"

	admin "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	csds "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// csdsCase is one message in both forms: meshguard's clientConfig and Envoy's
// generated csds.ClientConfig (which this test may link; the binary does not).
type csdsCase struct {
	name  string
	ours  *clientConfig
	envoy *csds.ClientConfig
}

func csdsCases(t testing.TB) []csdsCase {
	at := timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC))
	later := timestamppb.New(time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC))
	md, err := structpb.NewStruct(map[string]any{
		MetaNamespace: "prod", MetaWorkloadName: "httpbin", MetaServiceAccount: "httpbin",
		MetaLabels: map[string]any{"app": "httpbin", "version": "v2"}, metaIdentity: "spiffe://cluster.local/ns/prod/sa/httpbin",
	})
	if err != nil {
		t.Fatal(err)
	}
	failed, err := anypb.New(structpb.NewStringValue("AuthorizationPolicy prod/bad"))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := anypb.New(&core.Node{Id: "dumped"})
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "httpbin-prod-1", Cluster: "prod", Metadata: md}
	return []csdsCase{
		{name: "empty", ours: &clientConfig{}, envoy: &csds.ClientConfig{}},
		{name: "empty node", ours: &clientConfig{Node: &core.Node{}}, envoy: &csds.ClientConfig{Node: &core.Node{}}},
		{
			name:  "node and scope only",
			ours:  &clientConfig{Node: &core.Node{Id: "a"}, ClientScope: "7"},
			envoy: &csds.ClientConfig{Node: &core.Node{Id: "a"}, ClientScope: "7"},
		},
		{
			name: "never sent, nil timestamps",
			ours: &clientConfig{Node: node, ClientScope: "1", Generic: []genericXdsConfig{
				{TypeURL: TypeMeshConfig, ConfigStatus: configNotSent},
				{TypeURL: TypeAuthorizationPolicy, ConfigStatus: configNotSent, ClientStatus: clientRequested},
			}},
			envoy: &csds.ClientConfig{Node: node, ClientScope: "1", GenericXdsConfigs: []*csds.ClientConfig_GenericXdsConfig{
				{TypeUrl: TypeMeshConfig, ConfigStatus: csds.ConfigStatus_NOT_SENT},
				{TypeUrl: TypeAuthorizationPolicy, ConfigStatus: csds.ConfigStatus_NOT_SENT, ClientStatus: admin.ClientResourceStatus_REQUESTED},
			}},
		},
		{
			name: "synced and stale",
			ours: &clientConfig{Node: node, ClientScope: "2", Generic: []genericXdsConfig{
				{TypeURL: TypeMeshConfig, VersionInfo: "v2", LastUpdated: at, ConfigStatus: configSynced, ClientStatus: clientAcked},
				{TypeURL: TypePeerAuthentication, VersionInfo: "v1", LastUpdated: at, ConfigStatus: configStale, ClientStatus: clientRequested},
			}},
			envoy: &csds.ClientConfig{Node: node, ClientScope: "2", GenericXdsConfigs: []*csds.ClientConfig_GenericXdsConfig{
				{TypeUrl: TypeMeshConfig, VersionInfo: "v2", LastUpdated: at, ConfigStatus: csds.ConfigStatus_SYNCED, ClientStatus: admin.ClientResourceStatus_ACKED},
				{TypeUrl: TypePeerAuthentication, VersionInfo: "v1", LastUpdated: at, ConfigStatus: csds.ConfigStatus_STALE, ClientStatus: admin.ClientResourceStatus_REQUESTED},
			}},
		},
		{
			name: "NACK with error state",
			ours: &clientConfig{Node: node, ClientScope: "3", Generic: []genericXdsConfig{{
				TypeURL: TypeAuthorizationPolicy, VersionInfo: "v1", LastUpdated: at, ConfigStatus: configError, ClientStatus: clientNacked,
				ErrorState: &updateFailureState{VersionInfo: "v2", Details: "prod/bad: rules[0]: empty method\nprod/bad: rules[0]: empty path", LastUpdateAttempt: later},
			}}},
			envoy: &csds.ClientConfig{Node: node, ClientScope: "3", GenericXdsConfigs: []*csds.ClientConfig_GenericXdsConfig{{
				TypeUrl: TypeAuthorizationPolicy, VersionInfo: "v1", LastUpdated: at, ConfigStatus: csds.ConfigStatus_ERROR, ClientStatus: admin.ClientResourceStatus_NACKED,
				ErrorState: &admin.UpdateFailureState{VersionInfo: "v2", Details: "prod/bad: rules[0]: empty method\nprod/bad: rules[0]: empty path", LastUpdateAttempt: later},
			}}},
		},
		{
			name: "NACK without timestamp",
			ours: &clientConfig{Generic: []genericXdsConfig{{TypeURL: TypeMeshConfig, ConfigStatus: configError, ClientStatus: clientNacked,
				ErrorState: &updateFailureState{VersionInfo: "v9", Details: "bad"}}}},
			envoy: &csds.ClientConfig{GenericXdsConfigs: []*csds.ClientConfig_GenericXdsConfig{{TypeUrl: TypeMeshConfig,
				ConfigStatus: csds.ConfigStatus_ERROR, ClientStatus: admin.ClientResourceStatus_NACKED,
				ErrorState: &admin.UpdateFailureState{VersionInfo: "v9", Details: "bad"}}}},
		},
		{
			// Fields meshguard does not fill in, so that every number in the descriptor is checked.
			name: "every field and enum value",
			ours: &clientConfig{Node: node, ClientScope: "4", Generic: []genericXdsConfig{
				{TypeURL: "t", Name: "n", VersionInfo: "v", XdsConfig: dump, LastUpdated: at, ConfigStatus: configUnknown, ClientStatus: clientDoesNotExist, IsStaticResource: true,
					ErrorState: &updateFailureState{FailedConfiguration: failed, LastUpdateAttempt: later, Details: "d", VersionInfo: "v0"}},
				{ClientStatus: clientReceivedError},
				{ClientStatus: clientTimeout},
				{ConfigStatus: configStatus(42), ClientStatus: clientResourceStatus(43)},
			}},
			envoy: &csds.ClientConfig{Node: node, ClientScope: "4", GenericXdsConfigs: []*csds.ClientConfig_GenericXdsConfig{
				{TypeUrl: "t", Name: "n", VersionInfo: "v", XdsConfig: dump, LastUpdated: at, ConfigStatus: csds.ConfigStatus_UNKNOWN, ClientStatus: admin.ClientResourceStatus_DOES_NOT_EXIST, IsStaticResource: true,
					ErrorState: &admin.UpdateFailureState{FailedConfiguration: failed, LastUpdateAttempt: later, Details: "d", VersionInfo: "v0"}},
				{ClientStatus: admin.ClientResourceStatus_RECEIVED_ERROR},
				{ClientStatus: admin.ClientResourceStatus_TIMEOUT},
				{ConfigStatus: csds.ConfigStatus(42), ClientStatus: admin.ClientResourceStatus(43)},
			}},
		},
	}
}

// TestClientConfigWireCompatible checks both directions against Envoy's generated type:
// what meshguard sends decodes as the same csds.ClientConfig, byte for byte; what an
// Envoy-typed sender sends decodes as the same clientConfig.
func TestClientConfigWireCompatible(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	for _, tc := range csdsCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tc.ours.toAny()
			if err != nil {
				t.Fatalf("toAny: %v", err)
			}
			if want := "type.googleapis.com/envoy.service.status.v3.ClientConfig"; a.GetTypeUrl() != want {
				t.Errorf("type URL %q, want %q", a.GetTypeUrl(), want)
			}
			got := new(csds.ClientConfig)
			if err := a.UnmarshalTo(got); err != nil {
				t.Fatalf("decode ours as Envoy's type: %v", err)
			}
			if d := cmp.Diff(tc.envoy, got, protocmp.Transform()); d != "" {
				t.Errorf("ours decoded by Envoy's type (-want +got):\n%s", d)
			}
			m, err := tc.ours.message()
			if err != nil {
				t.Fatal(err)
			}
			ourBytes, err := det.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			envoyBytes, err := det.Marshal(tc.envoy)
			if err != nil {
				t.Fatal(err)
			}
			if string(ourBytes) != string(envoyBytes) {
				t.Errorf("encoding differs from Envoy's:\n ours  %x\n envoy %x", ourBytes, envoyBytes)
			}

			ea, err := anypb.New(tc.envoy)
			if err != nil {
				t.Fatal(err)
			}
			back, err := parseClientConfig(ea)
			if err != nil {
				t.Fatalf("parseClientConfig(Envoy's): %v", err)
			}
			if d := cmp.Diff(tc.ours, back, protocmp.Transform()); d != "" {
				t.Errorf("Envoy's decoded by parseClientConfig (-want +got):\n%s", d)
			}
		})
	}
}

// TestClientConfigEnumNames checks that the names proxy-status prints are Envoy's.
func TestClientConfigEnumNames(t *testing.T) {
	for n := range int32(len(configStatusNames) + 1) {
		if got, want := configStatus(n).String(), csds.ConfigStatus(n).String(); got != want {
			t.Errorf("configStatus(%d).String() = %q, want %q", n, got, want)
		}
	}
	for n := range int32(len(clientResourceStatusNames) + 1) {
		if got, want := clientResourceStatus(n).String(), admin.ClientResourceStatus(n).String(); got != want {
			t.Errorf("clientResourceStatus(%d).String() = %q, want %q", n, got, want)
		}
	}
}

func TestParseClientConfigRejects(t *testing.T) {
	wrongType, err := anypb.New(&core.Node{Id: "x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    *anypb.Any
		want string
	}{
		{"other type", wrongType, "mismatched message type"},
		{"truncated", &anypb.Any{TypeUrl: "type.googleapis.com/envoy.service.status.v3.ClientConfig", Value: []byte{0x0a, 0x05, 0x0a}}, "envoy.service.status.v3.ClientConfig"},
		{"invalid UTF-8 in client_scope", &anypb.Any{TypeUrl: "type.googleapis.com/envoy.service.status.v3.ClientConfig", Value: []byte{0x22, 0x01, 0xff}}, "envoy.service.status.v3.ClientConfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClientConfig(tc.a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseClientConfig = %+v, %v; want an error containing %q", c, err, tc.want)
			}
			if c != nil {
				t.Errorf("parseClientConfig returned a partial value %+v with its error", c)
			}
		})
	}
}

// FuzzParseClientConfig holds the decoder to Envoy's: whatever Envoy's generated type
// accepts, parseClientConfig accepts with the same content, and what it accepts
// re-encodes to something Envoy's type reads back the same.
func FuzzParseClientConfig(f *testing.F) {
	for _, tc := range csdsCases(f) {
		b, err := proto.Marshal(tc.envoy)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x00}) // the deprecated xds_config, which ours keeps as unknown
	f.Fuzz(func(t *testing.T, b []byte) {
		ours, err := parseClientConfig(&anypb.Any{TypeUrl: "type.googleapis.com/envoy.service.status.v3.ClientConfig", Value: b})
		envoy := new(csds.ClientConfig)
		envoyErr := proto.Unmarshal(b, envoy)
		if envoyErr == nil {
			if err != nil {
				t.Fatalf("Envoy's type accepts %x, parseClientConfig: %v", b, err)
			}
			if d := cmp.Diff(fromEnvoy(envoy), ours, protocmp.Transform()); d != "" {
				t.Fatalf("parseClientConfig(%x) differs from Envoy's decoding (-envoy +ours):\n%s", b, d)
			}
		}
		if err != nil {
			return
		}
		a, err := ours.toAny()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", ours, err)
		}
		again := new(csds.ClientConfig)
		if err := a.UnmarshalTo(again); err != nil {
			t.Fatalf("Envoy's type rejects our re-encoding of %x: %v", b, err)
		}
		if d := cmp.Diff(ours, fromEnvoy(again), protocmp.Transform()); d != "" {
			t.Fatalf("re-encoding of %x changed (-ours +envoy):\n%s", b, d)
		}
	})
}

// fromEnvoy is the clientConfig an Envoy-typed message should decode to (the
// deprecated xds_config aside).
func fromEnvoy(e *csds.ClientConfig) *clientConfig {
	c := &clientConfig{Node: e.GetNode(), ClientScope: e.GetClientScope()}
	for _, g := range e.GetGenericXdsConfigs() {
		o := genericXdsConfig{
			TypeURL: g.GetTypeUrl(), Name: g.GetName(), VersionInfo: g.GetVersionInfo(), XdsConfig: g.GetXdsConfig(),
			LastUpdated: g.GetLastUpdated(), ConfigStatus: configStatus(g.GetConfigStatus()),
			ClientStatus: clientResourceStatus(g.GetClientStatus()), IsStaticResource: g.GetIsStaticResource(),
		}
		if es := g.GetErrorState(); es != nil {
			o.ErrorState = &updateFailureState{FailedConfiguration: es.GetFailedConfiguration(), LastUpdateAttempt: es.GetLastUpdateAttempt(),
				Details: es.GetDetails(), VersionInfo: es.GetVersionInfo()}
		}
		c.Generic = append(c.Generic, o)
	}
	return c
}
