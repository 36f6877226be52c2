package dirstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/dirstore"
)

func policy(ns, name, action string) string {
	return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ` + name + `
  namespace: ` + ns + `
spec:
  action: ` + action + `
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/` + ns + `/sa/client"]
`
}

const badPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bad
  namespace: default
spec:
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [""]
`

const meshWithProvider = `apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    extensionProviders:
    - name: ext
      envoyExtAuthzGrpc:
        service: ext.default.svc.cluster.local
        port: 9000
`

const customPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: custom
  namespace: default
spec:
  action: CUSTOM
  provider:
    name: ext
  rules:
  - to:
    - operation:
        paths: ["/admin"]
`

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// atomicSave writes the way editors and `kubectl cp` do: a temporary file renamed over
// the target.
func atomicSave(t *testing.T, dir, name, data string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func keys(s *config.Snapshot) []string {
	var out []string
	for _, o := range s.Objects {
		out = append(out, o.Key())
	}
	slices.Sort(out)
	return out
}

func newStore(t *testing.T, dir string) *dirstore.Store {
	t.Helper()
	s, err := dirstore.New(dirstore.Config{Dir: dir, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReload drives Reload directly: each step changes files, reloads, and checks what
// is in force and what is refused.
func TestReload(t *testing.T) {
	type step struct {
		name    string
		do      func(t *testing.T, dir string)
		want    []string // object keys in force
		refused []string // refused files (base names)
		reason  string   // substring of the first refusal's message
	}
	rm := func(name string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	wr := func(name, data string) func(*testing.T, string) {
		return func(t *testing.T, dir string) { write(t, dir, name, data) }
	}
	tests := []struct {
		name  string
		init  map[string]string
		steps []step
	}{
		{
			name: "add, change, delete",
			init: map[string]string{"a.yaml": policy("default", "a", "ALLOW")},
			steps: []step{
				{name: "add", do: wr("b.yaml", policy("default", "b", "DENY")), want: []string{"default/a", "default/b"}},
				{name: "nested dir", do: wr("sub/c.yaml", policy("prod", "c", "DENY")), want: []string{"default/a", "default/b", "prod/c"}},
				{name: "delete", do: rm("a.yaml"), want: []string{"default/b", "prod/c"}},
			},
		},
		{
			name: "invalid change keeps the file's last good version",
			init: map[string]string{"a.yaml": policy("default", "a", "ALLOW")},
			steps: []step{
				{name: "break a", do: wr("a.yaml", policy("default", "a2", "ALLOW")+"---\n"+badPolicy),
					want: []string{"default/a"}, refused: []string{"a.yaml"}, reason: "methods[0]: empty value not allowed"},
				{name: "good change elsewhere still applies", do: wr("b.yaml", policy("default", "b", "DENY")),
					want: []string{"default/a", "default/b"}, refused: []string{"a.yaml"}},
				{name: "fix a", do: wr("a.yaml", policy("default", "a2", "ALLOW")),
					want: []string{"default/a2", "default/b"}},
			},
		},
		{
			name: "new invalid file is not applied",
			init: map[string]string{"a.yaml": policy("default", "a", "ALLOW")},
			steps: []step{
				{name: "add bad", do: wr("bad.yaml", badPolicy), want: []string{"default/a"}, refused: []string{"bad.yaml"}},
				{name: "delete bad clears refusal", do: rm("bad.yaml"), want: []string{"default/a"}},
			},
		},
		{
			name: "duplicate across files refuses the new file",
			init: map[string]string{"a.yaml": policy("default", "a", "ALLOW")},
			steps: []step{
				{name: "dup", do: wr("b.yaml", policy("default", "a", "DENY")), want: []string{"default/a"},
					refused: []string{"b.yaml"}, reason: "duplicate AuthorizationPolicy default/a"},
			},
		},
		{
			name: "deleting what another file needs is refused",
			init: map[string]string{"mesh.yaml": meshWithProvider, "custom.yaml": customPolicy},
			steps: []step{
				{name: "delete mesh", do: rm("mesh.yaml"), want: []string{"default/custom"},
					refused: []string{"mesh.yaml"}, reason: `extension provider "ext" is not defined`},
				{name: "delete the user too", do: rm("custom.yaml"), want: nil},
			},
		},
		{
			name: "unparseable YAML",
			init: map[string]string{"a.yaml": policy("default", "a", "ALLOW")},
			steps: []step{
				{name: "garbage", do: wr("a.yaml", "kind: [\n"), want: []string{"default/a"}, refused: []string{"a.yaml"}, reason: "not valid YAML"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, d := range tt.init {
				write(t, dir, n, d)
			}
			s := newStore(t, dir)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			waitVersion(t, s, func(string) bool { return true })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			for _, st := range tt.steps {
				st.do(t, dir)
				if err := s.Reload(context.Background()); err != nil {
					t.Fatalf("%s: Reload: %v", st.name, err)
				}
				snap, err := s.Snapshot(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if got := keys(snap); !slices.Equal(got, st.want) {
					t.Errorf("%s: in force %v, want %v", st.name, got, st.want)
				}
				status := s.Status()
				var refused []string
				for _, r := range status.Refused {
					refused = append(refused, filepath.Base(r.File))
				}
				if !slices.Equal(refused, st.refused) {
					t.Errorf("%s: refused %v, want %v", st.name, refused, st.refused)
				}
				if st.reason != "" && (len(status.Refused) == 0 || !strings.Contains(status.Refused[0].Message(), st.reason)) {
					t.Errorf("%s: refusal %+v, want a message containing %q", st.name, status.Refused, st.reason)
				}
				if status.Version != snap.Version {
					t.Errorf("%s: Status.Version %q, snapshot %q", st.name, status.Version, snap.Version)
				}
			}
		})
	}
}

func TestRefusalMessageIsValidateForm(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	runStore(t, s)
	write(t, dir, "bad.yaml", badPolicy)
	if err := s.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs := s.Status().Refused
	if len(rs) != 1 {
		t.Fatalf("Refused = %v, want one", rs)
	}
	want := filepath.Join(dir, "bad.yaml") + ":0: AuthorizationPolicy default/bad: spec.rules[0].to[0].operation.methods[0]: empty value not allowed"
	if got := rs[0].Message(); got != want {
		t.Errorf("Message() = %q, want %q", got, want)
	}
}

func TestStartupRefusesInvalidDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", policy("default", "a", "ALLOW"))
	write(t, dir, "bad.yaml", badPolicy)
	s := newStore(t, dir)
	err := s.Run(context.Background())
	var ps config.Problems
	if !errors.As(err, &ps) || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("Run = %v, want config.Problems naming bad.yaml", err)
	}
	if _, err := s.Snapshot(context.Background()); !errors.Is(err, config.ErrNoSnapshot) {
		t.Errorf("Snapshot after failed start = %v, want ErrNoSnapshot", err)
	}
}

func runStore(t *testing.T, s *dirstore.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitVersion(t, s, func(string) bool { return true })
}

func waitVersion(t *testing.T, s *dirstore.Store, ok func(string) bool) *config.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for snap := range s.Watch(ctx) {
		if ok(snap.Version) {
			return snap
		}
	}
	t.Fatalf("no matching snapshot within 10s; status %+v", s.Status())
	return nil
}

// TestWatch exercises the fsnotify path: each kind of file-system change is noticed
// without calling Reload.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", policy("default", "a", "ALLOW"))
	s := newStore(t, dir)
	runStore(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := s.Watch(ctx)
	<-w // the current snapshot
	next := func(what string, want []string) {
		t.Helper()
		for {
			select {
			case snap, ok := <-w:
				if !ok {
					t.Fatalf("%s: watch ended; status %+v", what, s.Status())
				}
				if slices.Equal(keys(snap), want) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%s: not seen; status %+v", what, s.Status())
			}
		}
	}
	write(t, dir, "b.yaml", policy("default", "b", "ALLOW"))
	next("create", []string{"default/a", "default/b"})
	write(t, dir, "b.yaml", policy("default", "b2", "ALLOW"))
	next("write", []string{"default/a", "default/b2"})
	atomicSave(t, dir, "a.yaml", policy("default", "a3", "ALLOW"))
	next("atomic save", []string{"default/a3", "default/b2"})
	if err := os.Rename(filepath.Join(dir, "b.yaml"), filepath.Join(dir, "b.txt")); err != nil {
		t.Fatal(err)
	}
	next("rename away", []string{"default/a3"})
	write(t, dir, "sub/c.yaml", policy("prod", "c", "ALLOW"))
	next("new subdirectory", []string{"default/a3", "prod/c"})
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	next("delete", []string{"prod/c"})
	// An invalid save produces no snapshot; the following good one does.
	before := s.Status().Version
	atomicSave(t, dir, "d.yaml", badPolicy)
	write(t, dir, "e.yaml", policy("default", "e", "DENY"))
	next("good file after a bad one", []string{"default/e", "prod/c"})
	if s.Status().Version == before {
		t.Error("version did not change")
	}
	if rs := s.Status().Refused; len(rs) != 1 || filepath.Base(rs[0].File) != "d.yaml" {
		t.Errorf("Refused = %+v, want d.yaml", rs)
	}
}

// TestConfigMapSymlinkSwap covers the layout kubelet gives a mounted ConfigMap: the
// visible files are links into ..data, which is itself a link swapped atomically.
func TestConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mk := func(ts, data string) {
		write(t, dir, ts+"/policy.yaml", data)
	}
	mk("..v1", policy("default", "one", "ALLOW"))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, dir)
	runStore(t, s)
	mk("..v2", policy("default", "two", "ALLOW"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	snap := waitVersion(t, s, func(string) bool {
		snap, _ := s.Snapshot(context.Background())
		return slices.Equal(keys(snap), []string{"default/two"})
	})
	if got := keys(snap); !slices.Equal(got, []string{"default/two"}) {
		t.Errorf("in force %v, want [default/two]", got)
	}
}

func TestNewRequiresDir(t *testing.T) {
	if _, err := dirstore.New(dirstore.Config{}); err == nil {
		t.Fatal("New with no Dir succeeded")
	}
}

// TestIncrementalMatchesFullLoad makes a deterministic series of valid edits (object
// files changed, added, deleted; the mesh config changed) and checks after each
// reload that the snapshot in force is exactly what a full load of the directory
// gives: same version, same objects from the same file and document.
func TestIncrementalMatchesFullLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "mesh.yaml", meshWithProvider)
	for i := range 4 {
		write(t, dir, fmt.Sprintf("f%d.yaml", i), policy("ns"+strconv.Itoa(i), "p", "ALLOW"))
	}
	s := newStore(t, dir)
	runStore(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 40 {
		f := fmt.Sprintf("f%d.yaml", rng.IntN(6))
		switch r := rng.IntN(10); {
		case r == 0:
			write(t, dir, "mesh.yaml", strings.Replace(meshWithProvider, "port: 9000", fmt.Sprintf("port: %d", 9000+step), 1))
		case r < 3:
			_ = os.Remove(filepath.Join(dir, f))
		case r < 5:
			write(t, dir, f, strings.Replace(customPolicy, "name: custom", "name: custom-"+f[:2], 1)+"---\n"+policy("ns"+f[1:2], fmt.Sprintf("q%d", step), "DENY"))
		default:
			write(t, dir, f, policy("ns"+f[1:2], fmt.Sprintf("p%d", step), "ALLOW")+"---\n"+policy("other", f[:2], "AUDIT"))
		}
		if err := s.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Snapshot(context.Background())
		want, _, err := (&config.Loader{}).Load(context.Background(), dir)
		if err != nil {
			t.Fatalf("step %d: full load: %v", step, err)
		}
		if got.Version != want.Version || len(got.Objects) != len(want.Objects) {
			t.Fatalf("step %d: in force %s %v, full load %s %v", step, got.Version, keys(got), want.Version, keys(want))
		}
		for i := range got.Objects {
			if got.Objects[i].Source != want.Objects[i].Source {
				t.Errorf("step %d: %s from %v, full load says %v", step, got.Objects[i].Key(), got.Objects[i].Source, want.Objects[i].Source)
			}
		}
		if rs := s.Status().Refused; len(rs) > 0 {
			t.Fatalf("step %d: refused %+v", step, rs)
		}
	}
}

// BenchmarkReloadOneFile is the reload after one file of 100 policies changes in a
// directory of 5,000.
func BenchmarkReloadOneFile(b *testing.B) {
	dir := b.TempDir()
	file := func(ns, gen int) string {
		var sb strings.Builder
		for i := range 100 {
			sb.WriteString("---\n" + policy(fmt.Sprintf("ns%d", ns), fmt.Sprintf("p%d-%d", i, gen), "ALLOW"))
		}
		return sb.String()
	}
	for ns := range 50 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("ns%d.yaml", ns)), []byte(file(ns, 0)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	s, err := dirstore.New(dirstore.Config{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	for s.Status().Version == "" {
		time.Sleep(10 * time.Millisecond)
	}
	gen := 0
	for b.Loop() {
		gen++
		if err := os.WriteFile(filepath.Join(dir, "ns7.yaml"), []byte(file(7, gen)), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := s.Reload(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLegacyPolicyFollowsItsService checks that an Istio 1.0 Policy loads as its modern
// equivalents and that a change to the Service it targets — another file — changes
// the translation: the incremental fast path must not reuse a stale translation.
func TestLegacyPolicyFollowsItsService(t *testing.T) {
	dir := t.TempDir()
	policy := `apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: customer-mtls, namespace: customer}
spec:
  targets: [{name: customer}]
  peers: [{mtls: {}}]
`
	service := func(app string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: customer, namespace: customer}\nspec:\n  selector: {app: " + app + "}\n  ports: [{name: http, port: 8080}]\n"
	}
	write(t, dir, "policy.yaml", policy)
	write(t, dir, "service.yaml", service("customer"))
	s := newStore(t, dir)
	selector := func() string {
		t.Helper()
		if err := s.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pas := snap.OfKind(config.KindPeerAuthentication)
		if len(pas) != 1 {
			t.Fatalf("snapshot has %d PeerAuthentications, want 1 translated from the Policy: %v", len(pas), keys(snap))
		}
		return pas[0].PeerAuthentication().GetSelector().GetMatchLabels()["app"]
	}
	if got := selector(); got != "customer" {
		t.Fatalf("translated selector app=%q, want customer", got)
	}
	write(t, dir, "service.yaml", service("customer-v2"))
	if got := selector(); got != "customer-v2" {
		t.Fatalf("after the Service changed, translated selector app=%q, want customer-v2", got)
	}
}
