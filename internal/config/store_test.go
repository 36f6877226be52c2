package config

import (
	"context"
	"errors"
	"testing"
	"time"
)

func receive(t *testing.T, ch <-chan *Snapshot) *Snapshot {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatal("Watch channel closed early")
		}
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a snapshot")
	}
	return nil
}

func TestStaticStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := NewStaticStore(nil)
	if _, err := st.Snapshot(ctx); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Snapshot() on an empty store = %v, want ErrNoSnapshot", err)
	}
	w := st.Watch(ctx)
	s1 := mustLoad(t, twoPolicies)
	st.Set(s1)
	if got := receive(t, w); got != s1 {
		t.Fatalf("Watch delivered %v, want the snapshot just set", got)
	}
	// Two Sets before the watcher reads: it gets only the latest.
	s2, s3 := NewSnapshot(nil, nil), NewSnapshot(s1.Objects[:1], nil)
	st.Set(s2)
	st.Set(s3)
	if got := receive(t, w); got != s3 {
		t.Fatalf("Watch delivered %v, want only the latest snapshot", got.Version)
	}
	if got, err := st.Snapshot(ctx); err != nil || got != s3 {
		t.Fatalf("Snapshot() = %v, %v; want the latest", got, err)
	}
	// A new watcher starts with the current snapshot.
	if got := receive(t, st.Watch(ctx)); got != s3 {
		t.Fatalf("new Watch delivered %v first, want the current snapshot", got.Version)
	}
	cancel()
	select {
	case _, ok := <-w:
		if ok {
			t.Fatal("Watch delivered after cancel, want the channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch channel not closed after ctx was cancelled")
	}
	if _, err := st.Snapshot(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot(cancelled ctx) = %v, want context.Canceled", err)
	}
}
