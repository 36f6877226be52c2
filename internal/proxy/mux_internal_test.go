package proxy

import "testing"

// TestRecentValues: recent values come back without allocating, equal to what was
// asked for; credentials are never kept.
func TestRecentValues(t *testing.T) {
	var r recentValues
	for _, tc := range []struct {
		name, value string
		cached      bool
	}{
		{"content-type", "text/plain", true},
		{"content-length", "1024", true},
		{"authorization", "Bearer abc", false},
		{"cookie", "session=1", false},
		{"set-cookie", "session=2", false},
		{"proxy-authorization", "Basic eA==", false},
	} {
		b := []byte(tc.value)
		if got := r.value(tc.name, b); got != tc.value {
			t.Fatalf("%s: got %q, want %q", tc.name, got, tc.value)
		}
		allocs := testing.AllocsPerRun(10, func() {
			if got := r.value(tc.name, b); got != tc.value {
				t.Fatalf("%s: got %q, want %q", tc.name, got, tc.value)
			}
		})
		if cached := allocs == 0; cached != tc.cached {
			t.Errorf("%s: %v allocations per lookup; cached %v, want %v", tc.name, allocs, cached, tc.cached)
		}
		for _, v := range r.v {
			if v == tc.value && !tc.cached {
				t.Errorf("%s: value kept in the cache", tc.name)
			}
		}
	}
	// Eight more distinct values push the first ones out.
	for i := range len(r.v) {
		r.get([]byte{'v', byte('0' + i)})
	}
	for _, v := range r.v {
		if v == "text/plain" {
			t.Errorf("cache %q: still holds text/plain after %d newer values", r.v, len(r.v))
		}
	}
}
