package config

// Document is one YAML document the Loader hands to its Translator instead of decoding
// it: its apiVersion and kind, its metadata (namespace defaulted as for every object)
// and the whole document as encoding/json decodes it with UseNumber, for the translator
// to decode strictly itself.
type Document struct {
	APIVersion string
	Kind       string
	Meta       // Meta.Source says where the document is
	Body       map[string]any
}

// Translation is what a Translator makes of its documents. Objects are validated,
// checked for duplicates and loaded like any decoded object, reported under their own
// kind and name with Meta.Source pointing at the document they came from. Problems make
// the load fail as any other problem does; Warnings are passed on.
type Translation struct {
	Objects  []*Object
	Problems []Problem
	Warnings []Problem
}

// Translator turns documents of kinds the Loader does not read itself, such as Istio's
// retired authentication.istio.io API, into objects of the kinds it does. The Loader
// calls Translate once per load, with every claimed document of every file, because a
// document may depend on another (a policy naming a Service) and on the root namespace,
// which is known only when all files are read. Implementations live outside this
// package (it imports no other meshguard package) and are set on Loader.Translator.
type Translator interface {
	// Translates reports whether the translator reads documents of apiVersion and kind.
	Translates(apiVersion, kind string) bool
	// Translate converts docs, in file and document order. rootNamespace is the mesh's
	// root namespace (mesh-wide objects go there).
	Translate(rootNamespace string, docs []Document) Translation
}
