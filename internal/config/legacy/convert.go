package legacy

import (
	"bytes"
	"context"
	"fmt"

	"github.com/meshguard/meshguard/internal/config"
)

// recorder is a Translator that keeps its conversions, for Convert.
type recorder struct {
	convs []Conversion
}

func (r *recorder) Translates(apiVersion, kind string) bool {
	return Translator{}.Translates(apiVersion, kind)
}

func (r *recorder) Translate(root string, docs []config.Document) config.Translation {
	convs, tr := translate(root, docs)
	r.convs = convs
	return tr
}

// Convert loads files with l (its DefaultNamespace applies; its Translator is replaced
// by this package's) and returns each legacy policy with the objects that replace it,
// in file and document order. Everything in files is validated as one configuration,
// modern objects included, so that the replacements are known to load beside them.
// Like the Loader it is all or nothing: on error (config.Problems for an invalid
// configuration) there are no conversions.
func Convert(ctx context.Context, l config.Loader, files ...config.File) ([]Conversion, config.Warnings, error) {
	rec := &recorder{}
	l.Translator = rec
	_, warnings, err := l.LoadFiles(ctx, files...)
	if err != nil {
		return nil, warnings, err
	}
	return rec.convs, warnings, nil
}

// Encode writes conversions as multi-document YAML for Istio and meshguard alike: one
// document per object, each opening with a comment that names the legacy object it
// replaces.
func Encode(convs []Conversion) ([]byte, error) {
	var buf bytes.Buffer
	for _, c := range convs {
		for _, o := range c.Objects {
			doc, err := config.EncodeObject(o)
			if err != nil {
				return nil, fmt.Errorf("encode the conversion of %s: %w", c.Origin(), err)
			}
			sep, body, _ := bytes.Cut(doc, []byte("\n"))
			buf.Write(sep)
			fmt.Fprintf(&buf, "\n# converted from %s\n", c.Origin())
			buf.Write(body)
		}
	}
	return buf.Bytes(), nil
}
