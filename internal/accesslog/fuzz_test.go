package accesslog

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzParseText checks the properties of the format-string compiler on arbitrary
// input: a rejected format yields no formatter and a *FormatError whose position is
// inside the input; an accepted one renders back (String) to a format that compiles to
// the same canonical text and the same output for every test entry.
func FuzzParseText(f *testing.F) {
	f.Add(DefaultTextFormat)
	f.Add(seedsFormat)
	for _, tc := range textCases {
		f.Add(tc.format)
	}
	for _, tc := range textErrorCases {
		f.Add(tc.format)
	}
	f.Fuzz(func(t *testing.T, format string) {
		tf, err := ParseText(format)
		if err != nil {
			var fe *FormatError
			if tf != nil {
				t.Fatalf("ParseText(%q) returned a formatter and error %v", format, err)
			}
			if !errors.As(err, &fe) || fe.Pos < 0 || fe.Pos >= len(format) {
				t.Fatalf("ParseText(%q) error = %#v, want *FormatError with a position inside the format", format, err)
			}
			return
		}
		canon := tf.String()
		tf2, err := ParseText(canon)
		if err != nil {
			t.Fatalf("ParseText(%q) ok, but its String() %q fails: %v", format, canon, err)
		}
		if got := tf2.String(); got != canon {
			t.Fatalf("String() not stable: %q → %q", canon, got)
		}
		for _, e := range testEntries {
			a, b := tf.Append(nil, e.entry()), tf2.Append(nil, e.entry())
			if string(a) != string(b) {
				t.Fatalf("format %q and its String() %q render %s differently: %q vs %q", format, canon, e.name, a, b)
			}
		}
	})
}

// FuzzParseJSON checks the JSON compiler: rejected formats yield no formatter, accepted
// ones render every test entry as exactly one valid JSON object per line, and String()
// round-trips.
func FuzzParseJSON(f *testing.F) {
	f.Add(DefaultJSONFormat)
	f.Add(`{"a":{"b":"%REQ(:PATH):3% x"},"n":1,"t":true,"z":null}`)
	f.Add(`{"policy":"%AUTHZ_POLICY%"}`)
	f.Add(`{"a":"%NOPE%"}`)
	f.Add(`{"a":"1","a":"2"}`)
	f.Fuzz(func(t *testing.T, format string) {
		jf, err := ParseJSON(format)
		if err != nil {
			var fe *FormatError
			if jf != nil || !errors.As(err, &fe) {
				t.Fatalf("ParseJSON(%q) = %v, %v; want no formatter and a *FormatError", format, jf, err)
			}
			return
		}
		for _, e := range testEntries {
			line := jf.Append(nil, e.entry())
			if len(line) == 0 || line[len(line)-1] != '\n' || !json.Valid(line) {
				t.Fatalf("ParseJSON(%q) renders %s as invalid JSON: %q", format, e.name, line)
			}
			for _, c := range line[:len(line)-1] {
				if c == '\n' {
					t.Fatalf("ParseJSON(%q) renders %s on several lines: %q", format, e.name, line)
				}
			}
		}
		canon := jf.String()
		jf2, err := ParseJSON(canon)
		if err != nil || jf2.String() != canon {
			t.Fatalf("JSON String() round trip of %q: %q → %v, %v", format, canon, jf2, err)
		}
	})
}
