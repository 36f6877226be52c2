package accesslog

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// seedsFormat is the custom format from the seeds, as a user would put it in
// meshConfig.accessLogFormat (without the newline; Istio adds it).
const seedsFormat = "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% -> %RESPONSE_CODE%"

// TestGolden renders every test entry with Istio's default TEXT and JSON formats and
// with the seeds' format, through the MeshConfig binding, and compares byte for byte
// with testdata/<format>.golden.
func TestGolden(t *testing.T) {
	formats := []struct {
		file     string
		encoding meshconfig.MeshConfig_AccessLogEncoding
		format   string
	}{
		{"default-text.golden", meshconfig.MeshConfig_TEXT, ""},
		{"default-json.golden", meshconfig.MeshConfig_JSON, ""},
		{"seeds-text.golden", meshconfig.MeshConfig_TEXT, seedsFormat},
	}
	for _, tc := range formats {
		t.Run(tc.file, func(t *testing.T) {
			f, err := FormatterFor(tc.encoding, tc.format)
			if err != nil {
				t.Fatalf("FormatterFor(%v, %q): %v", tc.encoding, tc.format, err)
			}
			var got []byte
			for _, e := range testEntries {
				got = append(got, "# "+e.name+"\n"...)
				got = f.Append(got, e.entry())
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run go test -update to create it): %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("output differs from %s (go test -run TestGolden -update rewrites it):\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}
