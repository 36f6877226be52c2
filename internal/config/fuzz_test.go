package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader as one YAML file and checks its
// contract: a rejected input yields no snapshot and a non-empty Problems list whose
// entries name the file; an accepted input survives Encode and load unchanged.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/defects", "testdata/istio-examples", "testdata/seeds"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte(twoPolicies))
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, _, err := loadFiles(t, File{Name: "fuzz.yaml", Data: data})
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("LoadFiles() error = %v, want a non-empty Problems", err)
			}
			if snap != nil {
				t.Fatalf("LoadFiles() returned a snapshot with problems %v", err)
			}
			for _, p := range ps {
				if p.Source.File != "fuzz.yaml" || p.Reason == "" {
					t.Fatalf("problem %q does not name the file and a reason", p)
				}
			}
			return
		}
		roundTrip(t, snap)
	})
}
