package dirstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

// DefaultDebounce is how long the directory must stay quiet after a change before a
// reload: long enough to see an editor's write-rename-chmod sequence as one change,
// short enough to stay well inside the one-second push target.
const DefaultDebounce = 50 * time.Millisecond

// Config configures a Store. Dir is required.
type Config struct {
	// Dir is the directory of Istio YAML files.
	Dir string
	// Loader decodes and validates; the zero Loader is used when nil.
	Loader *config.Loader
	// Logger receives reloads and refusals; nil discards.
	Logger *slog.Logger
	// Debounce overrides DefaultDebounce.
	Debounce time.Duration
	// Now stamps Status; time.Now when nil.
	Now func() time.Time
}

// Store is a config.ConfigStore over a watched directory.
type Store struct {
	cfg  Config
	log  *slog.Logger
	pub  *config.StaticStore
	mu   sync.Mutex // guards the fields below and serializes reloads
	good map[string][]byte
	st   Status
	// objs holds the objects in force by file, for the incremental fast path; nil
	// forces a full load.
	objs map[string][]*config.Object
}

var _ config.ConfigStore = (*Store)(nil)

// Status is what the store has in force and what it refused.
type Status struct {
	// Version is the version of the snapshot in force ("" before the first load).
	Version string
	// LoadedAt is when that snapshot was accepted.
	LoadedAt time.Time
	// Files lists the files whose content is in force, sorted. A file deleted from
	// disk whose deletion was refused is still listed.
	Files []string
	// Refused lists the files whose current content on disk is not in force, sorted by
	// file name.
	Refused []Refusal
	// Warnings are the loader's warnings for the snapshot in force.
	Warnings config.Warnings
}

// Refusal is one file whose current content was refused.
type Refusal struct {
	File string
	// Deleted is set when the refused change is the file's deletion.
	Deleted bool
	// Problems are the validation problems: the file's own, or, when the change broke
	// other files, theirs.
	Problems config.Problems
	At       time.Time
}

// Message is the refusal as `meshguard ctl validate` prints it: one problem a line.
func (r Refusal) Message() string {
	lines := make([]string, len(r.Problems))
	for i, p := range r.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// New returns a Store for cfg.Dir. It checks the configuration but reads nothing: Run
// does the first load.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("dirstore: config directory not set")
	}
	if cfg.Loader == nil {
		// Istio 1.0 Policy/MeshPolicy load as their modern equivalents (legacy.Translator).
		cfg.Loader = &config.Loader{Translator: legacy.Translator{}}
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{cfg: cfg, log: log.With("configDir", cfg.Dir), pub: config.NewStaticStore(nil), good: map[string][]byte{}}, nil
}

// Snapshot returns the snapshot in force, or config.ErrNoSnapshot before Run's first load.
func (s *Store) Snapshot(ctx context.Context) (*config.Snapshot, error) { return s.pub.Snapshot(ctx) }

// Watch delivers the snapshot in force and each newer one; see config.ConfigStore.
func (s *Store) Watch(ctx context.Context) <-chan *config.Snapshot { return s.pub.Watch(ctx) }

// Status returns a copy of the store's status.
func (s *Store) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Files = append([]string(nil), st.Files...)
	st.Refused = append([]Refusal(nil), st.Refused...)
	return st
}

// Run loads the directory, failing if any file in it is invalid, then watches it and
// reloads on every change until ctx ends. It returns nil when ctx ends.
func (s *Store) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config directory %s: %w", s.cfg.Dir, err)
	}
	defer w.Close()
	// Watch before the first read so that a change made during it is not missed.
	if err := s.watchTree(w, s.cfg.Dir); err != nil {
		return err
	}
	if err := s.initial(ctx); err != nil {
		return err
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch config directory %s: watcher closed", s.cfg.Dir)
			}
			if ev.Has(fsnotify.Create) {
				// A new subdirectory must be watched too; errors surface on reload.
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() && !hidden(ev.Name) {
					_ = s.watchTree(w, ev.Name)
				}
			}
			timer.Reset(s.cfg.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch config directory %s: watcher closed", s.cfg.Dir)
			}
			// An overflow loses events: reload to catch up rather than trust them.
			s.log.Warn("config directory watch error; reloading", "err", err)
			timer.Reset(s.cfg.Debounce)
		case <-timer.C:
			if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("config reload failed; last good config stays in force", "err", err)
			}
		}
	}
}

func hidden(path string) bool { return strings.HasPrefix(filepath.Base(path), ".") }

func (s *Store) watchTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("watch config directory %s: %w", p, err)
		}
		if !d.IsDir() {
			return nil
		}
		if p != root && hidden(p) {
			return fs.SkipDir
		}
		if err := w.Add(p); err != nil {
			return fmt.Errorf("watch config directory %s: %w", p, err)
		}
		return nil
	})
}

// initial is the all-or-nothing first load.
func (s *Store) initial(ctx context.Context) error {
	files, err := config.ReadFiles(ctx, s.cfg.Dir)
	if err != nil {
		return err
	}
	snap, warns, err := s.cfg.Loader.LoadFiles(ctx, files...)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				s.log.Error("config problem", "problem", p.String())
			}
			return fmt.Errorf("load config directory %s: %w", s.cfg.Dir, err)
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range files {
		s.good[f.Name] = f.Data
	}
	s.objs = byFile(snap)
	s.accept(snap, warns)
	s.log.Info("config loaded", "version", snap.Version, "files", len(files), "objects", len(snap.Objects))
	return nil
}

// Reload reads the directory and applies every change that validates, as the package
// documentation describes. Run calls it after each change; it is exported for callers
// that know the directory changed (tests, SIGHUP). The error is for failures to read
// the directory or a cancelled ctx, not for refused files, which go to Status.
func (s *Store) Reload(ctx context.Context) error {
	files, err := config.ReadFiles(ctx, s.cfg.Dir)
	if err != nil {
		return err
	}
	disk := make(map[string][]byte, len(files))
	for _, f := range files {
		disk[f.Name] = f.Data
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	// pending: changed files still in the candidate; nil data means deleted.
	pending := map[string]bool{}
	cand := make(map[string][]byte, len(s.good)+len(disk))
	for n, d := range s.good {
		cand[n] = d
		if dd, ok := disk[n]; !ok || !bytes.Equal(dd, d) {
			pending[n] = true
		}
	}
	for n, d := range disk {
		if _, ok := s.good[n]; !ok {
			pending[n] = true
		}
		cand[n] = d
	}
	for n := range pending {
		if _, ok := disk[n]; !ok {
			delete(cand, n)
		}
	}
	now := s.cfg.Now()
	refused := map[string]Refusal{}
	// A refusal stays until its file changes: keep those whose content is unchanged.
	for _, r := range s.st.Refused {
		if pending[r.File] {
			refused[r.File] = r
		}
	}
	if len(pending) == 0 {
		s.setRefused(refused)
		return nil
	}
	if snap, warns, ok := s.incremental(ctx, pending, cand); ok {
		for n := range pending {
			delete(refused, n)
		}
		s.good = cand
		s.setRefused(refused)
		old := s.st.Version
		s.accept(snap, warns)
		if snap.Version != old {
			s.log.Info("config reloaded", "version", snap.Version, "previous", old, "objects", len(snap.Objects), "changedFiles", len(pending), "refusedFiles", len(refused))
		}
		return nil
	}
	for {
		snap, warns, err := s.cfg.Loader.LoadFiles(ctx, sortedFiles(cand)...)
		if err == nil {
			for n := range pending {
				delete(refused, n)
			}
			s.good = cand
			s.objs = byFile(snap)
			s.setRefused(refused)
			old := s.st.Version
			s.accept(snap, warns)
			if snap.Version != old {
				s.log.Info("config reloaded", "version", snap.Version, "previous", old, "objects", len(snap.Objects), "refusedFiles", len(refused))
			}
			return nil
		}
		var ps config.Problems
		if !errors.As(err, &ps) {
			return err
		}
		byFile := map[string]config.Problems{}
		for _, p := range ps {
			byFile[p.Source.File] = append(byFile[p.Source.File], p)
		}
		var blame []string
		for n := range pending {
			if len(byFile[n]) > 0 {
				blame = append(blame, n)
			}
		}
		if len(blame) == 0 {
			// The problems are in files that did not change: the changes together broke
			// them, and which one is to blame is not knowable. Refuse them all.
			for n := range pending {
				blame = append(blame, n)
				byFile[n] = ps
			}
		}
		sort.Strings(blame)
		for _, n := range blame {
			_, onDisk := disk[n]
			r := Refusal{File: n, Deleted: !onDisk, Problems: byFile[n], At: now}
			if prev, ok := s.refusedEntry(n); ok && sameProblems(prev.Problems, r.Problems) {
				r.At = prev.At // the same refusal again: keep when it started
			} else {
				for _, p := range r.Problems {
					s.log.Error("config file refused; its last good version stays in force", "file", n, "deleted", r.Deleted, "problem", p.String())
				}
			}
			refused[n] = r
			delete(pending, n)
			if d, ok := s.good[n]; ok {
				cand[n] = d
			} else {
				delete(cand, n)
			}
		}
		if len(pending) == 0 {
			// Only refusals: what is in force does not change.
			s.setRefused(refused)
			return nil
		}
	}
}

func (s *Store) refusedEntry(file string) (Refusal, bool) {
	for _, r := range s.st.Refused {
		if r.File == file {
			return r, true
		}
	}
	return Refusal{}, false
}

func sameProblems(a, b config.Problems) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *Store) setRefused(m map[string]Refusal) {
	out := make([]Refusal, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	s.st.Refused = out
}

// accept records snap as in force and publishes it when its content changed.
func (s *Store) accept(snap *config.Snapshot, warns config.Warnings) {
	files := make([]string, 0, len(s.good))
	for n := range s.good {
		files = append(files, n)
	}
	sort.Strings(files)
	s.st.Files, s.st.Warnings = files, warns
	if snap.Version == s.st.Version {
		return // same content (a comment changed): nothing to push
	}
	s.st.Version, s.st.LoadedAt = snap.Version, s.cfg.Now()
	s.pub.Set(snap)
}

func sortedFiles(m map[string][]byte) []config.File {
	out := make([]config.File, 0, len(m))
	for n, d := range m {
		out = append(out, config.File{Name: n, Data: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func byFile(snap *config.Snapshot) map[string][]*config.Object {
	m := map[string][]*config.Object{}
	for _, o := range snap.Objects {
		m[o.Source.File] = append(m[o.Source.File], o)
	}
	return m
}

// mayHoldMesh reports whether a file could give the mesh config (an IstioOperator or
// the istio ConfigMap). A false positive only costs a full load.
func mayHoldMesh(data []byte) bool {
	return bytes.Contains(data, []byte("IstioOperator")) || bytes.Contains(data, []byte("ConfigMap"))
}

// mayHoldLegacy reports whether a file could hold an Istio 1.0 authentication policy.
func mayHoldLegacy(data []byte) bool {
	return bytes.Contains(data, []byte("authentication.istio.io"))
}

// incremental is the fast path of Reload for the common change: files of objects only,
// which validate. Validation of an object depends on the object itself, the mesh config
// and, across objects, on names being unique; so it loads the changed files together
// with the files that may hold the mesh config, checks names across everything, and
// reuses the objects of unchanged files. Anything else (a mesh config change, a
// problem, a duplicate) returns false and Reload does the full load, which gives the
// exact same result and messages. s.mu is held.
func (s *Store) incremental(ctx context.Context, pending map[string]bool, cand map[string][]byte) (*config.Snapshot, config.Warnings, bool) {
	if s.objs == nil {
		return nil, nil, false
	}
	for n := range pending {
		if mayHoldMesh(s.good[n]) || mayHoldMesh(cand[n]) {
			return nil, nil, false
		}
	}
	// A translated legacy policy depends on other files (the Services it targets, the
	// narrower policies that override it): with any in the directory, load everything.
	if s.cfg.Loader.Translator != nil {
		for _, d := range cand {
			if mayHoldLegacy(d) {
				return nil, nil, false
			}
		}
	}
	load := map[string][]byte{}
	for n, d := range cand {
		if pending[n] || mayHoldMesh(d) {
			load[n] = d
		}
	}
	part, warns, err := s.cfg.Loader.LoadFiles(ctx, sortedFiles(load)...)
	if err != nil {
		return nil, nil, false
	}
	objs := map[string][]*config.Object{}
	for n, os := range s.objs {
		if !pending[n] {
			objs[n] = os
		}
	}
	for _, o := range part.Objects {
		if pending[o.Source.File] {
			objs[o.Source.File] = append(objs[o.Source.File], o)
		}
	}
	var all []*config.Object
	seen := map[string]bool{}
	for _, os := range objs {
		for _, o := range os {
			k := string(o.Kind) + " " + o.Key()
			if seen[k] {
				return nil, nil, false
			}
			seen[k] = true
			// NewSnapshot stamps ResourceVersion on its objects: give it copies, since
			// the objects of unchanged files are shared with the snapshot in force.
			c := *o
			all = append(all, &c)
		}
	}
	snap := config.NewSnapshot(all, part.GivenMesh())
	// Warnings: the previous ones of unchanged files, this load's of changed files.
	var ws config.Warnings
	for _, w := range s.st.Warnings {
		if !pending[w.Source.File] {
			ws = append(ws, w)
		}
	}
	for _, w := range warns {
		if pending[w.Source.File] {
			ws = append(ws, w)
		}
	}
	s.objs = byFile(snap)
	return snap, ws, true
}
