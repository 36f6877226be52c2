package config

import (
	"context"
	"errors"
	"sync"
)

// ConfigStore is where the current configuration comes from: a watched directory
// (config/dirstore) or the Kubernetes API server (config/kubestore). Both hand out
// complete, validated Snapshots; an invalid change never reaches a consumer, which
// keeps the last good Snapshot.
type ConfigStore interface {
	// Snapshot returns the current configuration.
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Watch returns a channel that delivers the current Snapshot as soon as there is
	// one and then each newer one. A slow receiver gets only the latest: intermediate
	// Snapshots are skipped, never queued. The channel is closed when ctx is done.
	Watch(ctx context.Context) <-chan *Snapshot
}

// ErrNoSnapshot is returned by a store that has not loaded any configuration yet.
var ErrNoSnapshot = errors.New("config: no configuration loaded yet")

// StaticStore is an in-memory ConfigStore holding whatever Snapshot it was last given.
// The CLI and tests use it; it is safe for concurrent use.
type StaticStore struct {
	mu      sync.Mutex
	cur     *Snapshot
	changed chan struct{} // closed and replaced by each Set
}

var _ ConfigStore = (*StaticStore)(nil)

// NewStaticStore returns a store holding s, which may be nil for "nothing yet".
func NewStaticStore(s *Snapshot) *StaticStore {
	return &StaticStore{cur: s, changed: make(chan struct{})}
}

// Set replaces the current Snapshot and wakes every watcher.
func (st *StaticStore) Set(s *Snapshot) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cur = s
	close(st.changed)
	st.changed = make(chan struct{})
}

// Snapshot returns the current Snapshot, or ErrNoSnapshot.
func (st *StaticStore) Snapshot(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cur == nil {
		return nil, ErrNoSnapshot
	}
	return st.cur, nil
}

func (st *StaticStore) state() (*Snapshot, <-chan struct{}) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.cur, st.changed
}

// Watch implements ConfigStore. Its goroutine ends when ctx is done.
func (st *StaticStore) Watch(ctx context.Context) <-chan *Snapshot {
	out := make(chan *Snapshot)
	go func() {
		defer close(out)
		var sent *Snapshot
		for {
			cur, changed := st.state()
			if cur != nil && cur != sent {
				select {
				case out <- cur:
					sent = cur
					continue
				case <-changed:
					continue // a newer one replaces cur before anyone took it
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
