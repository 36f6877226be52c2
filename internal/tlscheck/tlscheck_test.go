package tlscheck_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/tlscheck"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func readConns(t testing.TB) []proxy.ConnInfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "connections.json"))
	if err != nil {
		t.Fatal(err)
	}
	conns, err := tlscheck.Parse(b)
	if err != nil {
		t.Fatalf("Parse(testdata/connections.json): %v", err)
	}
	return conns
}

func TestGolden(t *testing.T) {
	r := tlscheck.NewReport("127.0.0.1:15020", readConns(t))
	for _, tc := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"connections.txt.golden", func(b *bytes.Buffer) error { return r.WriteText(b) }},
		{"connections.json.golden", func(b *bytes.Buffer) error { return r.WriteJSON(b) }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.write(&b); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read %s: %v (run go test -update)", path, err)
			}
			if d := cmp.Diff(string(want), b.String()); d != "" {
				t.Errorf("%s differs (-want +got):\n%s", path, d)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	mtls := proxy.ConnInfo{Direction: "inbound", Mode: "STRICT", TLSVersion: "TLS 1.3", KeyExchange: "X25519MLKEM768", PeerSPIFFEID: "spiffe://td/ns/a/sa/b"}
	for _, tc := range []struct {
		name string
		in   proxy.ConnInfo
		mode string
		pq   bool
		peer string
	}{
		{"inbound mTLS, hybrid key exchange", mtls, tlscheck.ModeMTLS, true, ""},
		{"inbound mTLS, classical key exchange", with(mtls, func(c *proxy.ConnInfo) { c.KeyExchange = "X25519" }), tlscheck.ModeMTLS, false, ""},
		{"inbound TLS without a peer identity is not mTLS", with(mtls, func(c *proxy.ConnInfo) { c.PeerSPIFFEID = "" }), tlscheck.ModeTLS, true, ""},
		{"inbound plaintext under PERMISSIVE", proxy.ConnInfo{Direction: "inbound", Mode: "PERMISSIVE", Source: "10.0.0.1:1"}, tlscheck.ModePlaintext, false, "10.0.0.1:1"},
		{"inbound plaintext under DISABLE", proxy.ConnInfo{Direction: "inbound", Mode: "DISABLE"}, tlscheck.ModePlaintext, false, ""},
		{"a peer ID alone proves nothing", proxy.ConnInfo{Direction: "inbound", Mode: "PERMISSIVE", PeerSPIFFEID: "spiffe://td/ns/a/sa/b"}, tlscheck.ModePlaintext, false, ""},
		{"upstream ISTIO_MUTUAL", proxy.ConnInfo{Direction: "outbound", Upstream: true, Mode: "ISTIO_MUTUAL", Destination: "10.0.0.2:15006", TLSVersion: "TLS 1.3", KeyExchange: "X25519MLKEM768"}, tlscheck.ModeMTLS, true, "10.0.0.2:15006"},
		{"upstream MUTUAL", proxy.ConnInfo{Direction: "outbound", Upstream: true, Mode: "MUTUAL", TLSVersion: "TLS 1.2"}, tlscheck.ModeMTLS, false, ""},
		{"upstream SIMPLE", proxy.ConnInfo{Direction: "outbound", Upstream: true, Mode: "SIMPLE", TLSVersion: "TLS 1.3"}, tlscheck.ModeTLS, false, ""},
		{"app leg of an ISTIO_MUTUAL route is not itself encrypted", proxy.ConnInfo{Direction: "outbound", Mode: "ISTIO_MUTUAL"}, tlscheck.ModePlaintext, false, ""},
		{"outbound DISABLE", proxy.ConnInfo{Direction: "outbound", Mode: "DISABLE"}, tlscheck.ModePlaintext, false, ""},
		{"outbound passthrough", proxy.ConnInfo{Direction: "outbound", Mode: "PASSTHROUGH"}, tlscheck.ModePassthrough, false, ""},
		{"outbound unknown mode fails closed to plaintext", proxy.ConnInfo{Direction: "outbound", Mode: "SOMETHING_NEW"}, tlscheck.ModePlaintext, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tlscheck.Classify(tc.in)
			if c.Mode != tc.mode || c.PostQuantum != tc.pq || c.Setting != tc.in.Mode {
				t.Errorf("Classify(%+v) = mode %q pq %v setting %q, want %q %v %q", tc.in, c.Mode, c.PostQuantum, c.Setting, tc.mode, tc.pq, tc.in.Mode)
			}
			if tc.peer != "" && c.Peer != tc.peer {
				t.Errorf("Classify(%+v).Peer = %q, want %q", tc.in, c.Peer, tc.peer)
			}
		})
	}
}

func with(c proxy.ConnInfo, f func(*proxy.ConnInfo)) proxy.ConnInfo { f(&c); return c }

var badDocs = []struct{ name, doc, want string }{
	{"empty", ``, "EOF"},
	{"not JSON", `<html>`, "invalid character"},
	{"no list", `{}`, `no "connections" list`},
	{"null list", `{"connections": null}`, `no "connections" list`},
	{"list of the wrong type", `{"connections": {"id": 1}}`, "cannot unmarshal"},
	{"bad direction", `{"connections": [{"id": 1, "direction": "sideways"}]}`, `connections[0]: direction "sideways"`},
	{"missing direction", `{"connections": [{"id": 1}]}`, `connections[0]: direction ""`},
	{"trailing data", `{"connections": []} {"connections": []}`, "trailing data"},
	{"wrong field type", `{"connections": [{"id": "one", "direction": "inbound"}]}`, "cannot unmarshal"},
}

func TestParse(t *testing.T) {
	for _, tc := range badDocs {
		t.Run(tc.name, func(t *testing.T) {
			conns, err := tlscheck.Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) || conns != nil {
				t.Errorf("Parse(%q) = %v, %v; want no connections and an error containing %q", tc.doc, conns, err, tc.want)
			}
		})
	}
	t.Run("empty list", func(t *testing.T) {
		conns, err := tlscheck.Parse([]byte(`{"connections": []}`))
		if err != nil || conns == nil || len(conns) != 0 {
			t.Errorf("Parse(empty list) = %v, %v; want an empty list", conns, err)
		}
	})
	t.Run("unknown fields from a newer sidecar are ignored", func(t *testing.T) {
		conns, err := tlscheck.Parse([]byte(`{"version": 2, "connections": [{"id": 1, "direction": "inbound", "newField": true}]}`))
		if err != nil || len(conns) != 1 {
			t.Errorf("Parse = %v, %v; want one connection", conns, err)
		}
	})
}

// FuzzParse: the sidecar's answer is untrusted. Parse either refuses it with no
// connections, or returns connections that all have a direction, survive a round trip
// through the same JSON, and classify into a known mode.
func FuzzParse(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", "connections.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	for _, tc := range badDocs {
		f.Add([]byte(tc.doc))
	}
	modes := map[string]bool{tlscheck.ModeMTLS: true, tlscheck.ModeTLS: true, tlscheck.ModePlaintext: true, tlscheck.ModePassthrough: true}
	f.Fuzz(func(t *testing.T, doc []byte) {
		conns, err := tlscheck.Parse(doc)
		if err != nil {
			if conns != nil {
				t.Fatalf("Parse refused %q but returned %d connections", doc, len(conns))
			}
			return
		}
		b, err := json.Marshal(map[string]any{"connections": conns})
		if err != nil {
			t.Fatal(err)
		}
		again, err := tlscheck.Parse(b)
		if err != nil || !reflect.DeepEqual(normalize(again), normalize(conns)) {
			t.Fatalf("round trip of %q: %v\n%+v\n%+v", doc, err, conns, again)
		}
		r := tlscheck.NewReport("x:1", conns)
		listed := 0
		for _, ci := range conns {
			// The app's legs of encrypted routes are shown through the upstream entries.
			if !(ci.Direction == "outbound" && !ci.Upstream && (ci.Mode == "ISTIO_MUTUAL" || ci.Mode == "MUTUAL" || ci.Mode == "SIMPLE")) {
				listed++
			}
		}
		if len(r.Connections) != listed {
			t.Fatalf("report has %d connections, want %d of the %d parsed", len(r.Connections), listed, len(conns))
		}
		for _, c := range r.Connections {
			if !modes[c.Mode] {
				t.Fatalf("connection %+v classified into unknown mode %q", c, c.Mode)
			}
			if c.Mode == tlscheck.ModeMTLS && c.TLSVersion == "" {
				t.Fatalf("%+v called mTLS without TLS", c)
			}
			if c.Mode == tlscheck.ModeMTLS && c.Direction == "inbound" && (c.TLSVersion == "" || c.PeerID == "") {
				t.Fatalf("inbound %+v called mTLS without TLS and a peer identity", c)
			}
		}
	})
}

// normalize drops what JSON does not round-trip exactly: monotonic clock and location.
func normalize(cs []proxy.ConnInfo) []proxy.ConnInfo {
	out := make([]proxy.ConnInfo, len(cs))
	for i, c := range cs {
		c.Start = c.Start.UTC().Round(0)
		out[i] = c
	}
	return out
}
