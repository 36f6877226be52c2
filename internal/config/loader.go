package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// File is one configuration file's name (as it should appear in messages) and content.
type File struct {
	Name string
	Data []byte
}

// Loader turns Istio YAML into a validated Snapshot. The zero Loader is ready to use.
//
// Loading is all or nothing: either every document decodes and validates and the
// result is a complete Snapshot, or the error is a Problems list naming each problem
// and there is no Snapshot at all, so a caller can keep its last good configuration.
type Loader struct {
	// DefaultNamespace is the namespace of objects whose metadata has none. Empty means
	// "default", which is what `kubectl apply` does with such a file.
	DefaultNamespace string
	// Translator, when set, receives the documents of the kinds it claims (see
	// Translator) and its objects load as if they had been written out. Nil means such
	// documents are skipped with a warning like any kind meshguard does not use.
	Translator Translator
}

// Load reads the files and directories at paths (directories recursively, files ending
// in .yaml, .yml or .json, skipping names that start with "." such as the "..data"
// links of a mounted ConfigMap) and loads them with LoadFiles. An unreadable path is
// returned as a plain error, not as Problems.
func (l *Loader) Load(ctx context.Context, paths ...string) (*Snapshot, Warnings, error) {
	files, err := ReadFiles(ctx, paths...)
	if err != nil {
		return nil, nil, err
	}
	return l.LoadFiles(ctx, files...)
}

// ReadFiles reads the configuration files at paths, as Load does.
func ReadFiles(ctx context.Context, paths ...string) ([]File, error) {
	var files []File
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read config %s: %w", p, err)
		}
		if !info.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read config file %s: %w", p, err)
			}
			files = append(files, File{Name: p, Data: data})
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("read config directory %s: %w", path, err)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if path != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() || !isConfigFile(d.Name()) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read config file %s: %w", path, err)
			}
			files = append(files, File{Name: path, Data: data})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func isConfigFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// decoded is one object document that decoded, waiting for cross-object validation.
type decoded struct {
	obj   *Object
	rep   Problem
	empty map[string]bool
}

// LoadFiles decodes and validates files as one configuration. The error is Problems
// when the configuration is invalid, or ctx's error.
func (l *Loader) LoadFiles(ctx context.Context, files ...File) (*Snapshot, Warnings, error) {
	defNS := l.DefaultNamespace
	if defNS == "" {
		defNS = "default"
	}
	var problems, warnings []Problem
	var objs []decoded
	var meshes []meshSource
	var configMaps []meshSource // istio ConfigMaps, kept until the root namespace is known
	var translate []Document    // for l.Translator, which needs the root namespace too
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		for i, doc := range splitDocuments(f.Data) {
			src := Source{File: f.Name, Doc: i}
			r := &reporter{base: Problem{Source: src}, problems: &problems, warnings: &warnings}
			d := parseDocument(r, doc, defNS)
			if d == nil || d.apiVersion == "" || d.kind == "" {
				continue
			}
			docs := []*rawDoc{d}
			if d.kind == "List" && d.apiVersion == "v1" {
				// `kubectl get -o yaml` output: each item is a document of its own,
				// reported with the List's DOC_INDEX.
				docs = listItems(r, d, defNS, &problems, &warnings)
			}
			for _, d := range docs {
				r := &reporter{base: Problem{Source: src, Kind: d.kind, Namespace: d.meta.Namespace, Name: d.meta.Name}, problems: &problems, warnings: &warnings}
				if d.apiVersion == "" || d.kind == "" {
					continue
				}
				switch {
				case d.kind == "IstioOperator" && d.apiVersion == "install.istio.io/v1alpha1":
					if m, ok := decodeIstioOperator(r, d); ok {
						meshes = append(meshes, m)
					}
				case d.kind == "ConfigMap" && d.apiVersion == "v1":
					if m, ok := decodeConfigMap(r, d); ok {
						configMaps = append(configMaps, m)
					}
				case l.Translator != nil && l.Translator.Translates(d.apiVersion, d.kind):
					translate = append(translate, Document{APIVersion: d.apiVersion, Kind: d.kind, Meta: d.meta, Body: d.body})
				default:
					if o, empty, ok := decodeObject(r, d); ok {
						objs = append(objs, decoded{obj: o, rep: r.base, empty: empty})
					}
				}
			}
		}
	}

	// The root namespace comes from the mesh config given by an IstioOperator, if any;
	// a ConfigMap named istio counts only in that namespace, as istiod reads it there.
	root := DefaultRootNamespace
	if len(meshes) > 0 {
		root = mergeMesh(meshes[0].user, meshes[0].fields).RootNamespace
	}
	for _, cm := range configMaps {
		if cm.rep.Namespace != root {
			wr := &reporter{base: cm.rep, problems: &problems, warnings: &warnings}
			wr.warnf("metadata.namespace", "skipped: the istio ConfigMap is read only from the root namespace %q", root)
			continue
		}
		meshes = append(meshes, cm)
	}
	mesh := DefaultMeshConfig()
	var given *meshv1alpha1.MeshConfig // nil: the defaults
	if len(meshes) > 0 {
		m := meshes[0]
		mesh = mergeMesh(m.user, m.fields)
		given = mesh
		r := &reporter{base: m.rep, problems: &problems, warnings: &warnings}
		validateMesh(r, m.path, m.user, mesh)
		for _, other := range meshes[1:] {
			r := &reporter{base: other.rep, problems: &problems, warnings: &warnings}
			r.errorf(other.path, "mesh config given more than once; the first is at %s (%s)", m.src, m.kind)
		}
	}

	if len(translate) > 0 {
		tr := l.Translator.Translate(root, translate)
		problems = append(problems, tr.Problems...)
		warnings = append(warnings, tr.Warnings...)
		for _, o := range tr.Objects {
			objs = append(objs, decoded{obj: o, rep: Problem{Source: o.Source, Kind: string(o.Kind), Namespace: o.Namespace, Name: o.Name}})
		}
	}

	// Validate each object, then across objects: duplicates (one object in Kubernetes,
	// whatever the file) and references into the mesh config.
	first := map[string]*Object{}
	for _, d := range objs {
		r := &reporter{base: d.rep, problems: &problems, warnings: &warnings}
		validateObject(r, d.obj, d.empty, mesh)
		key := string(d.obj.Kind) + " " + d.obj.Key()
		if prev, dup := first[key]; dup {
			r.errorf("metadata.name", "duplicate %s %s: already defined at %s", d.obj.Kind, d.obj.Key(), prev.Source)
			continue
		}
		first[key] = d.obj
	}

	order := map[string]int{}
	for i, f := range files {
		if _, ok := order[f.Name]; !ok {
			order[f.Name] = i
		}
	}
	sortProblems(problems, order)
	sortProblems(warnings, order)
	if len(problems) > 0 {
		return nil, warnings, Problems(problems)
	}
	out := make([]*Object, 0, len(objs))
	for _, d := range objs {
		out = append(out, d.obj)
	}
	return NewSnapshot(out, given), warnings, nil
}

func sortProblems(ps []Problem, order map[string]int) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Source, ps[j].Source
		if order[a.File] != order[b.File] {
			return order[a.File] < order[b.File]
		}
		return a.Doc < b.Doc
	})
}

// NewSnapshot builds a Snapshot of objects and mesh (nil means Istio's defaults): the
// objects sorted by kind, namespace and name, each given a ResourceVersion, and the
// snapshot a Version, all derived from content alone so that the same configuration
// read from differently named files gets the same versions. It does not validate.
func NewSnapshot(objs []*Object, mesh *meshv1alpha1.MeshConfig) *Snapshot {
	defaulted, digest := mesh == nil, defaultMeshDigest
	if defaulted {
		mesh = DefaultMeshConfig()
	} else {
		digest = meshDigest(mesh)
	}
	objs = append([]*Object(nil), objs...)
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	h := sha256.New()
	for _, o := range objs {
		if o.sum == ([32]byte{}) {
			o.sum = objectHash(o)
			o.ResourceVersion = hex.EncodeToString(o.sum[:8])
		}
		h.Write(o.sum[:])
	}
	h.Write([]byte(digest))
	return &Snapshot{Objects: objs, Mesh: mesh, Version: hex.EncodeToString(h.Sum(nil)[:12]), defaultMesh: defaulted}
}

// defaultMeshDigest is the SHA-256 of DefaultMeshConfig deterministically marshalled,
// written down so that a snapshot with the default mesh config (no mesh config given:
// the common case for a sidecar) does not marshal it. Marshalling builds the protobuf
// reflection and coding tables of MeshConfig and of every message it contains, about
// 0.5 MB that a sidecar would keep for its lifetime for nothing else (docs/
// performance.md). TestDefaultMeshDigest fails, with the value to put here, when the
// defaults change.
const defaultMeshDigest = "5c0db3681a7cc2ba3af93dea9aad6efb7062725dc2b0188b6c2a29bb52dcef6b"

// meshDigest is the hex SHA-256 of mesh deterministically marshalled.
func meshDigest(mesh *meshv1alpha1.MeshConfig) string {
	mb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(mesh)
	sum := sha256.Sum256(mb)
	return hex.EncodeToString(sum[:])
}

func objectHash(o *Object) [32]byte {
	var b bytes.Buffer
	// JSON encoding sorts map keys, which makes labels and annotations deterministic.
	fields := []any{o.Kind, o.Namespace, o.Name, o.Labels, o.Annotations}
	if !o.CreationTime.IsZero() {
		// Age decides ties between policies, so it is content.
		fields = append(fields, o.CreationTime)
	}
	hdr, _ := json.Marshal(fields)
	b.Write(hdr)
	spec, _ := proto.MarshalOptions{Deterministic: true}.Marshal(o.Spec)
	b.Write(spec)
	return sha256.Sum256(b.Bytes())
}

func decodeJSON(js []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// listItems unpacks a v1 List into its items.
func listItems(r *reporter, d *rawDoc, defNS string, problems, warnings *[]Problem) []*rawDoc {
	checkTopLevel(r, d.body, "apiVersion", "kind", "metadata", "items")
	items, ok := d.body["items"].([]any)
	if !ok {
		if d.body["items"] != nil {
			r.errorf("items", "got %s, want a list", jsonType(d.body["items"]))
		}
		return nil
	}
	var out []*rawDoc
	for i, item := range items {
		ir := &reporter{base: Problem{Source: d.src}, problems: problems, warnings: warnings}
		js, err := json.Marshal(item)
		if err != nil {
			ir.errorf(idx("items", i), "cannot re-encode as JSON: %v", err)
			continue
		}
		if it := parseDocument(ir, js, defNS); it != nil {
			out = append(out, it)
		}
	}
	return out
}
