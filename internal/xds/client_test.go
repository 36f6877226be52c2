package xds

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// downConn is a control plane that is down: every stream fails at once. It records
// when the client tried.
type downConn struct {
	mu    sync.Mutex
	tries []time.Time
}

func (d *downConn) times() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.tries)
}

func (d *downConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.Unavailable, "down")
}

func (d *downConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	d.mu.Lock()
	d.tries = append(d.tries, time.Now())
	d.mu.Unlock()
	return nil, status.Error(codes.Unavailable, "control plane down")
}

// constReader reads the same byte forever.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	copy(p, bytes.Repeat([]byte{byte(c)}, len(p)))
	return len(p), nil
}

// TestReconnectBackoff: while the control plane is down the client retries after a
// delay that doubles up to MaxBackoff, scaled by a jitter factor in [0.8, 1.2) drawn
// from Rand.
func TestReconnectBackoff(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		rand io.Reader
		want []time.Duration
	}{
		{"lowest jitter", constReader(0x00), []time.Duration{200 * ms, 400 * ms, 800 * ms, 800 * ms}},
		{"middle jitter", bytes.NewReader(bytes.Repeat([]byte{0x80, 0, 0, 0, 0, 0, 0, 0}, 16)), []time.Duration{250 * ms, 500 * ms, 1000 * ms, 1000 * ms}},
		{"highest jitter", constReader(0xff), []time.Duration{300 * ms, 600 * ms, 1200 * ms, 1200 * ms}},
		{"rand fails: no jitter", bytes.NewReader(nil), []time.Duration{250 * ms, 500 * ms, 1000 * ms, 1000 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				conn := &downConn{}
				c, err := NewClient(ClientConfig{Conn: conn, Node: Node{ID: "n"}, MinBackoff: 250 * ms, MaxBackoff: time.Second, Rand: tc.rand})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				for len(conn.times()) <= len(tc.want) {
					time.Sleep(100 * ms)
					synctest.Wait()
				}
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run = %v", err)
				}
				var got []time.Duration
				tries := conn.times()
				for i := 1; i <= len(tc.want); i++ {
					// Jitter is a float factor: compare to the millisecond.
					got = append(got, tries[i].Sub(tries[i-1]).Round(ms))
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("retry delays = %v, want %v", got, tc.want)
				}
				if st := c.Status(); st.Connected || st.LastError == "" {
					t.Errorf("Status() = %+v, want disconnected with the last error", st)
				}
			})
		})
	}
}
