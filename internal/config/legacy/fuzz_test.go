package legacy

import (
	"strings"
	"testing"
)

// FuzzConvert feeds arbitrary YAML to the legacy loader. Properties: a rejected input
// never yields a partial conversion; an accepted one yields objects that validate,
// encode to YAML the modern loader alone reads back into the same objects, and one
// conversion warning per legacy object.
func FuzzConvert(f *testing.F) {
	for _, tc := range convertCases {
		f.Add(tc.in)
	}
	for _, tc := range refuseCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		convs, warnings, err := convert(t, in)
		if err != nil {
			if convs != nil {
				t.Fatalf("Convert() = %d conversions and error %v; want none with an error", len(convs), err)
			}
			return
		}
		n := 0
		for _, w := range warnings {
			if strings.HasPrefix(w.Reason, "converted to ") {
				n++
			}
		}
		if n != len(convs) {
			t.Fatalf("%d conversion warnings for %d conversions", n, len(convs))
		}
		checkReloads(t, convs)
	})
}
