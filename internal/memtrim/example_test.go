package memtrim_test

import (
	"fmt"
	"strings"

	"github.com/meshguard/meshguard/internal/memtrim"
)

// ParseMaps picks the mappings Trim advises on: the executable's private read-only
// ones, never its writable data.
func ExampleParseMaps() {
	ms, err := memtrim.ParseMaps(strings.NewReader(sampleMaps), exe)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range ms {
		fmt.Printf("%x-%x %s\n", m.Start, m.End, m.Perms)
	}
	// Output:
	// 400000-1021000 r-xp
	// 1021000-1fe2000 r--p
}
