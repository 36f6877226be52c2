package archtest

import (
	"debug/elf"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/meshguard/meshguard"

type pkg struct {
	ImportPath  string
	Dir         string
	Name        string
	GoFiles     []string
	Imports     []string
	Deps        []string
	TestImports []string
}

// listPackages runs `go list -deps=false -json ./...` over the module.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if len(pkgs) < 3 {
		t.Fatalf("go list found %d packages, want the whole module", len(pkgs))
	}
	return pkgs
}

func rel(importPath string) string { return strings.TrimPrefix(importPath, module+"/") }

func TestEveryPackageHasOneDocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		var withDoc []string
		fset := token.NewFileSet()
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(fset, filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.HasPrefix(af.Doc.Text(), "Package "+p.Name+" ") ||
				af.Doc != nil && p.Name == "main" && strings.HasPrefix(af.Doc.Text(), "Command ") {
				withDoc = append(withDoc, f)
			}
		}
		if len(withDoc) != 1 {
			t.Errorf("%s: package comments in %v, want exactly one file with \"// Package %s ...\"", rel(p.ImportPath), withDoc, p.Name)
		}
	}
}

func TestImportBoundaries(t *testing.T) {
	pkgs := listPackages(t)
	dataPlane := []string{"internal/proxy", "internal/sds", "internal/agent", "internal/authz"}
	forbidden := []string{module + "/internal/ca", module + "/internal/caservice", module + "/internal/config/kubestore", "k8s.io/client-go"}
	for _, p := range pkgs {
		r := rel(p.ImportPath)
		for _, dp := range dataPlane {
			if r != dp && !strings.HasPrefix(r, dp+"/") {
				continue
			}
			for _, d := range p.Deps {
				for _, f := range forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s: the data plane must not link the CA or Kubernetes client code", r, d)
					}
				}
			}
		}
		for _, imp := range p.Imports {
			switch {
			case imp == module+"/internal/controlplane" || imp == module+"/internal/sidecar":
				// meshtest is test-only (checked below) and starts real control planes and sidecars.
				if !strings.HasPrefix(r, "internal/cli") && !strings.HasPrefix(r, "internal/demo") && r != "internal/meshtest" {
					t.Errorf("%s imports wiring package %s; only cli, demo and meshtest may", r, rel(imp))
				}
			case imp == module+"/internal/cli":
				if r != "cmd/meshguard" && !strings.HasPrefix(r, "internal/docgen") {
					t.Errorf("%s imports internal/cli; only cmd/meshguard may", r)
				}
			case imp == module+"/internal/meshtest":
				t.Errorf("%s imports internal/meshtest outside a _test.go file", r)
			}
		}
	}
}

// TestNoGlobalExitOrLoggers enforces the single exit in main and injected loggers.
func TestNoGlobalExitOrLoggers(t *testing.T) {
	banned := map[string]string{
		"os.Exit":              "only cmd/meshguard/main.go exits",
		"log.Fatal":            "return an error instead",
		"log.Fatalf":           "return an error instead",
		"log.Printf":           "use the injected *slog.Logger",
		"log.Println":          "use the injected *slog.Logger",
		"slog.Info":            "use the injected *slog.Logger",
		"slog.Warn":            "use the injected *slog.Logger",
		"slog.Error":           "use the injected *slog.Logger",
		"slog.Debug":           "use the injected *slog.Logger",
		"slog.Default":         "use the injected *slog.Logger",
		"slog.SetDefault":      "no global state",
		"http.HandleFunc":      "use a local *http.ServeMux",
		"http.Handle":          "use a local *http.ServeMux",
		"http.DefaultServeMux": "use a local *http.ServeMux",
	}
	for _, p := range listPackages(t) {
		for _, f := range p.GoFiles {
			path := filepath.Join(p.Dir, f)
			if rel(p.ImportPath) == "cmd/meshguard" && f == "main.go" {
				continue
			}
			fset := token.NewFileSet()
			af, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(af, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				id, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				if why, bad := banned[id.Name+"."+sel.Sel.Name]; bad {
					t.Errorf("%s: %s.%s: %s", fset.Position(sel.Pos()), id.Name, sel.Sel.Name, why)
				}
				return true
			})
		}
	}
}

// TestBinaryStaysLean keeps out of the one binary the generated packages that cost every
// process memory at start-up without any command needing them: every linked package's
// initialisers run (protobuf registration) whatever the subcommand, so a sidecar pays for
// them. Envoy's admin and status trees pull in ~17 config packages; operator status
// uses internal/xds's own CSDS descriptors (csds.go) instead, and this is its guard.
func TestBinaryStaysLean(t *testing.T) {
	banned := []string{
		"github.com/envoyproxy/go-control-plane/envoy/admin/",
		"github.com/envoyproxy/go-control-plane/envoy/service/status/",
		"github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/",
		"github.com/envoyproxy/go-control-plane/envoy/config/cluster/",
		"github.com/envoyproxy/go-control-plane/envoy/config/listener/",
		"github.com/envoyproxy/go-control-plane/envoy/config/route/",
		"k8s.io/",
	}
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/cmd/meshguard" {
			continue
		}
		for _, d := range p.Deps {
			for _, b := range banned {
				if strings.HasPrefix(d, b) {
					t.Errorf("cmd/meshguard links %s; every command would pay its initialisation (see docs/performance.md, Memory)", d)
				}
			}
		}
		return
	}
	t.Fatal("cmd/meshguard not found by go list")
}

// TestShippedBinaryPrunesMethods builds cmd/meshguard as the Makefile does and checks
// that the linker could drop unused methods. If anything reachable calls a method by
// name through reflection (text/template and html/template do; gRPC links both through
// golang.org/x/net/trace unless built with -tags grpcnotrace, cobra only for a custom
// help template), the linker keeps every exported method of every type: all the
// generated getters and validators of Istio's and Envoy's types, ~7.7 MB of binary that
// every process's initialisers then touch, ~3 MiB of each sidecar's resident memory
// (docs/performance.md, Memory). Envoy's generated ValidateAll methods, which nothing
// calls, are the witness.
func TestShippedBinaryPrunesMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "meshguard")
	cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", bin, module+"/cmd/meshguard")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags grpcnotrace cmd/meshguard: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("reading the built binary: %v", err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("reading the built binary's symbols: %v", err)
	}
	var kept, reflective []string
	for _, s := range syms {
		switch {
		case strings.HasSuffix(s.Name, ").ValidateAll"):
			kept = append(kept, s.Name)
		case s.Name == "text/template.(*state).evalCall", strings.HasPrefix(s.Name, "golang.org/x/net/trace."):
			reflective = append(reflective, s.Name)
		}
	}
	if len(kept) > 0 {
		t.Errorf("the linker kept %d unused methods (e.g. %s): something reachable calls methods by name through reflection, so no exported method is pruned; linked: %v",
			len(kept), kept[0], first(reflective, 3))
	}
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
