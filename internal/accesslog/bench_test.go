package accesslog

import (
	"context"
	"io"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

// BenchmarkFormat measures rendering one entry into a reused buffer; allocs/op is the
// number that matters on the data path (it should be 0).
func BenchmarkFormat(b *testing.B) {
	cases := []struct {
		name     string
		encoding meshconfig.MeshConfig_AccessLogEncoding
		format   string
	}{
		{"default-text", meshconfig.MeshConfig_TEXT, ""},
		{"default-json", meshconfig.MeshConfig_JSON, ""},
		{"seeds-text", meshconfig.MeshConfig_TEXT, seedsFormat},
		{"strftime-text", meshconfig.MeshConfig_TEXT, "%START_TIME(%Y-%m-%dT%H:%M:%S.%6f%z)% %REQ(:PATH)%"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f, err := FormatterFor(c.encoding, c.format)
			if err != nil {
				b.Fatal(err)
			}
			e := httpEntry()
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				buf = f.Append(buf[:0], e)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkWriterLog measures the data-path cost of Writer.Log (format + enqueue) with
// a draining writer to io.Discard. Entries the writer goroutine could not take in
// time are reported as dropped: on a 2-core machine producer and writer compete.
func BenchmarkWriterLog(b *testing.B) {
	w, err := NewWriter(Stdout, mustText(b, DefaultTextFormat), WriterOptions{Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e := httpEntry()
	b.ReportAllocs()
	for b.Loop() {
		w.Log(e)
	}
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(w.Dropped()), "dropped")
}
