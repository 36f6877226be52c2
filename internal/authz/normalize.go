package authz

import (
	"fmt"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// Normalization selects how request paths are normalized before matching, as
// meshConfig.pathNormalization does in Istio. The normalized path is also the one a proxy
// must forward, so that the backend sees exactly what was authorized.
type Normalization int

// The normalization levels. BASE is the zero value because it is Istio's default; by
// strength the order is NONE < BASE < MERGE_SLASHES < DECODE_AND_MERGE_SLASHES, each
// after NONE including the one before it.
const (
	// NormalizeBase decodes percent-encoded unreserved characters once, turns backslashes
	// into slashes and resolves "." and ".." segments (RFC 3986). Istio's default.
	NormalizeBase Normalization = iota
	// NormalizeNone uses the path as received; only the query and fragment are ignored
	// for matching and %00 is still rejected.
	NormalizeNone
	// NormalizeMergeSlashes is BASE and then merges runs of slashes.
	NormalizeMergeSlashes
	// NormalizeDecodeAndMergeSlashes first decodes %2F and %5C (any case), then applies
	// MERGE_SLASHES. The strictest level; Istio recommends it against CVE-2021-31920.
	NormalizeDecodeAndMergeSlashes
)

// NormalizationFromMesh maps a MeshConfig value to a Normalization; DEFAULT and unset
// mean BASE, as in Istio.
func NormalizationFromMesh(m *meshv1alpha1.MeshConfig) Normalization {
	switch m.GetPathNormalization().GetNormalization() {
	case meshv1alpha1.MeshConfig_ProxyPathNormalization_NONE:
		return NormalizeNone
	case meshv1alpha1.MeshConfig_ProxyPathNormalization_MERGE_SLASHES:
		return NormalizeMergeSlashes
	case meshv1alpha1.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES:
		return NormalizeDecodeAndMergeSlashes
	default:
		return NormalizeBase
	}
}

func (n Normalization) String() string {
	switch n {
	case NormalizeNone:
		return "NONE"
	case NormalizeBase:
		return "BASE"
	case NormalizeMergeSlashes:
		return "MERGE_SLASHES"
	case NormalizeDecodeAndMergeSlashes:
		return "DECODE_AND_MERGE_SLASHES"
	}
	return fmt.Sprintf("Normalization(%d)", int(n))
}

// NormalizePath normalizes a request target in origin form (path, optional ?query,
// optional #fragment) and returns the normalized path with its query, ready to forward;
// the fragment is dropped. It fails with an *InvalidRequestError (HTTP 400) for a path
// that does not start with "/" or that contains NUL, raw or as %00, whatever the level.
// Decoding happens once: %252F stays %252F, so nothing decodes into a new escape that a
// second pass would see differently.
func NormalizePath(target string, n Normalization) (string, error) {
	// NUL anywhere in the target, query included, is rejected (Envoy checks :path whole).
	if strings.IndexByte(target, 0) >= 0 || strings.Contains(target, "%00") {
		return "", &InvalidRequestError{Field: "path", Reason: "contains NUL (%00)"}
	}
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	path, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	np, err := normalizePathOnly(path, n)
	if err != nil {
		return "", err
	}
	if np == path {
		return target, nil
	}
	return np + query, nil
}

// matchPath returns the part of a normalized target that policies match: no query.
func matchPath(normalized string) string {
	if i := strings.IndexByte(normalized, '?'); i >= 0 {
		return normalized[:i]
	}
	return normalized
}

func normalizePathOnly(p string, n Normalization) (string, error) {
	if p == "" || p[0] != '/' {
		return "", &InvalidRequestError{Field: "path", Reason: fmt.Sprintf("%q is not an absolute path", truncate(p))}
	}
	if n == NormalizeNone {
		return p, nil
	}
	if !needsNormalizing(p, n) {
		return p, nil
	}
	b := make([]byte, 0, len(p))
	kept := 0
	// Pass 1: single percent-decoding of the characters Istio decodes, and backslashes.
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case isUnreserved(v):
				c = v
			case (v == '/' || v == '\\') && n == NormalizeDecodeAndMergeSlashes:
				c = v
			default:
				// Keep the escape, with upper-case hex as RFC 3986 recommends.
				b = append(b, '%', upperHex(p[i+1]), upperHex(p[i+2]))
				kept++
				i += 2
				continue
			}
			i += 2
		}
		if c == '\\' {
			c = '/'
		}
		b = append(b, c)
	}
	// Decoding once must not assemble a new escape ("%2%66" gives "%2f"): a backend that
	// decodes again would see a path the policy never saw. Fail closed.
	if countEscapes(b) != kept {
		return "", &InvalidRequestError{Field: "path", Reason: "percent-decoding forms a new percent-escape (double-encoding)"}
	}
	b = removeDotSegments(b)
	if n >= NormalizeMergeSlashes {
		b = mergeSlashes(b)
	}
	return string(b), nil
}

// needsNormalizing reports whether any step could change p; the common clean path then
// costs no allocation.
func needsNormalizing(p string, n Normalization) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', '\\':
			return true
		case '.':
			if p[i-1] == '/' { // p[0] is '/', so i ≥ 1
				return true
			}
		case '/':
			if n >= NormalizeMergeSlashes && i+1 < len(p) && p[i+1] == '/' {
				return true
			}
		}
	}
	return false
}

func countEscapes(b []byte) int {
	n := 0
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' && isHex(b[i+1]) && isHex(b[i+2]) {
			n++
		}
	}
	return n
}

// removeDotSegments implements RFC 3986 section 5.2.4 over an absolute path. ".." at the
// root stays at the root, so "/../admin" becomes "/admin", never a relative path.
func removeDotSegments(in []byte) []byte {
	out := make([]byte, 0, len(in))
	for len(in) > 0 {
		switch {
		case hasPrefix(in, "/./"):
			in = in[2:]
		case string(in) == "/.":
			in = []byte{'/'}
		case hasPrefix(in, "/../"):
			in = in[3:]
			out = dropLastSegment(out)
		case string(in) == "/..":
			in = []byte{'/'}
			out = dropLastSegment(out)
		default:
			// Move the first segment ("/" plus everything up to the next "/") to out.
			j := 1
			for j < len(in) && in[j] != '/' {
				j++
			}
			out = append(out, in[:j]...)
			in = in[j:]
		}
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out
}

func dropLastSegment(out []byte) []byte {
	if i := lastSlash(out); i >= 0 {
		return out[:i]
	}
	return out[:0]
}

func lastSlash(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '/' {
			return i
		}
	}
	return -1
}

func mergeSlashes(b []byte) []byte {
	w := 0
	for r := 0; r < len(b); r++ {
		if b[r] == '/' && w > 0 && b[w-1] == '/' {
			continue
		}
		b[w] = b[r]
		w++
	}
	return b[:w]
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// isUnreserved is the set Istio decodes under BASE: ALPHA, DIGIT, "-", ".", "_", "~".
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
