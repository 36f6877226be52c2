package xds

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/meshguard/meshguard/internal/config"
)

// ClientConfig configures a Client. Conn and Node.ID are required.
type ClientConfig struct {
	// Conn reaches the control plane over mTLS with the workload's mesh certificate.
	// gRPC redials it by itself; the Client reopens the stream.
	Conn grpc.ClientConnInterface
	// Node describes the workload. Namespace and ServiceAccount are optional (the
	// certificate decides them); the labels choose selector-scoped policies.
	Node Node
	// Logger; nil discards.
	Logger *slog.Logger
	// Now stamps status; time.Now when nil.
	Now func() time.Time
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 250ms and 30s). The
	// delay doubles after each failed stream, with ±20% jitter, and starts again from
	// MinBackoff after a stream that delivered config.
	MinBackoff, MaxBackoff time.Duration
	// Rand draws the jitter, so that a fleet restarted together does not reconnect in
	// step; crypto/rand when nil.
	Rand io.Reader
}

// Client is the sidecar's end of the push protocol. It is a config.ConfigStore: the
// snapshot it hands out is the last config it ACKed, kept across disconnects.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
	pub *config.StaticStore

	valid validCache // used by the Run goroutine only

	mu sync.Mutex
	st ClientStatus
}

var _ config.ConfigStore = (*Client)(nil)

// ClientStatus is the client's view of its sync state.
type ClientStatus struct {
	Connected bool
	// Version is the last version ACKed ("" before the first).
	Version  string
	AckedAt  time.Time
	LastNACK *NACK
	// LastError is why the last stream ended.
	LastError string
}

// NewClient checks cfg and returns a Client. It starts nothing: call Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Conn == nil {
		return nil, errors.New("xds: client needs a connection to the control plane")
	}
	if cfg.Node.ID == "" {
		return nil, errors.New("xds: client needs a node ID")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, log: log.With("node", cfg.Node.ID), pub: config.NewStaticStore(nil)}, nil
}

// Snapshot returns the last config the client ACKed, or config.ErrNoSnapshot.
func (c *Client) Snapshot(ctx context.Context) (*config.Snapshot, error) { return c.pub.Snapshot(ctx) }

// Watch delivers the ACKed config and each newer one; see config.ConfigStore.
func (c *Client) Watch(ctx context.Context) <-chan *config.Snapshot { return c.pub.Watch(ctx) }

// Status returns the client's sync state.
func (c *Client) Status() ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Run keeps a stream to the control plane open until ctx ends, reconnecting with
// backoff. Losing the control plane changes nothing in force. It returns nil when ctx
// ends.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	for {
		delivered, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if delivered {
			backoff = c.cfg.MinBackoff
		}
		c.mu.Lock()
		c.st.Connected = false
		if err != nil {
			c.st.LastError = err.Error()
		}
		c.mu.Unlock()
		wait := jittered(backoff, c.cfg.Rand)
		c.log.Warn("control plane stream ended; last accepted config stays in force", "err", err, "retryIn", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// sendError is the reason a client stream's Send failed: gRPC reports a stream the
// server ended (refused the certificate, say) as io.EOF on Send, and the status only
// on Recv.
func sendError(st grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if rerr := st.RecvMsg(new(discovery.DiscoveryResponse)); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// jittered returns d scaled by a factor drawn from r, uniform in [0.8, 1.2). Should r
// fail, d is returned unscaled.
func jittered(d time.Duration, r io.Reader) time.Duration {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return d
	}
	u := float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53) // [0, 1)
	return time.Duration(float64(d) * (0.8 + 0.4*u))
}

// pending collects one push: every type at one version.
type pending struct {
	version string
	res     map[string]*discovery.DiscoveryResponse
}

// stream runs one ADS stream; delivered reports whether it applied any push.
func (c *Client) stream(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(c.cfg.Conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open xds stream: %w", err)
	}
	node, err := c.cfg.Node.proto()
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	acked := c.st.Version
	c.mu.Unlock()
	for i, t := range Types {
		req := &discovery.DiscoveryRequest{TypeUrl: t, VersionInfo: acked}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			return false, fmt.Errorf("subscribe %s: %w", t, sendError(st, err))
		}
	}
	c.mu.Lock()
	c.st.Connected = true
	c.mu.Unlock()
	p := pending{res: map[string]*discovery.DiscoveryResponse{}}
	for {
		resp, err := st.Recv()
		if err != nil {
			return delivered, fmt.Errorf("xds stream: %w", err)
		}
		t := resp.GetTypeUrl()
		if !slices.Contains(Types, t) {
			c.log.Warn("ignoring response of an unknown type", "type", t)
			continue
		}
		if resp.GetVersionInfo() != p.version {
			// The server sends every type of a push with the push's version; a new
			// version means an older incomplete push was superseded.
			p = pending{version: resp.GetVersionInfo(), res: map[string]*discovery.DiscoveryResponse{}}
		}
		p.res[t] = resp
		if len(p.res) < len(Types) {
			continue
		}
		if err := c.apply(ctx, st, p); err != nil {
			return delivered, err
		}
		delivered = true
		p = pending{res: map[string]*discovery.DiscoveryResponse{}}
	}
}

// apply validates a complete push and ACKs it, or NACKs it and changes nothing.
func (c *Client) apply(ctx context.Context, st grpc.BidiStreamingClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse], p pending) error {
	byType := make(map[string][]*anypb.Any, len(p.res))
	for t, r := range p.res {
		byType[t] = r.GetResources()
	}
	snap, verr := c.valid.validate(byType)
	c.mu.Lock()
	prev := c.st.Version
	c.mu.Unlock()
	for _, t := range Types {
		req := &discovery.DiscoveryRequest{TypeUrl: t, ResponseNonce: p.res[t].GetNonce(), VersionInfo: p.version}
		if verr != nil {
			req.VersionInfo = prev
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: verr.Error()}
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds: ack %s: %w", t, sendError(st, err))
		}
	}
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if verr != nil {
		c.st.LastNACK = &NACK{Version: p.version, Detail: verr.Error(), At: now}
		c.log.Error("rejected config push (NACK); last accepted config stays in force", "version", p.version, "err", verr)
		return nil
	}
	c.st.Version, c.st.AckedAt = p.version, now
	c.pub.Set(snap)
	c.log.Info("config applied", "version", p.version, "objects", len(snap.Objects))
	return nil
}

// validCache holds the objects of the last push the client accepted, by the bytes
// they arrived as, and the mesh config they were validated under, so that a push
// decodes and validates only the resources that changed. The zero value is empty.
type validCache struct {
	mesh    *meshv1alpha1.MeshConfig
	meshRaw string // the mesh config resource as it arrived
	objs    map[string]*config.Object
}

// resourceKey identifies a resource by its type URL and exact bytes: equal bytes
// decode to an equal object, whatever the control plane claims about versions.
func resourceKey(t string, a *anypb.Any) string {
	return t + "\x00" + a.GetTypeUrl() + "\x00" + string(a.GetValue())
}

// validate decodes and validates a push (resources by type URL) as the control plane's
// loader validates config: exactly one mesh config, valid; objects with unique names
// per kind, each valid under it. Only what the cache has not seen is decoded and
// validated, and everything when the mesh config changed. On success the cache holds
// exactly the push; on failure it is unchanged.
func (vc *validCache) validate(byType map[string][]*anypb.Any) (*config.Snapshot, error) {
	ms := byType[TypeMeshConfig]
	switch len(ms) {
	case 0:
		return nil, fmt.Errorf("%s: no mesh config in the push", TypeMeshConfig)
	case 1:
	default:
		return nil, fmt.Errorf("%s: more than one mesh config", TypeMeshConfig)
	}
	mesh, meshRaw := vc.mesh, resourceKey(TypeMeshConfig, ms[0])
	meshChanged := mesh == nil || meshRaw != vc.meshRaw
	if meshChanged {
		m, err := DecodeMesh(ms[0])
		if err != nil {
			return nil, fmt.Errorf("%s resource 0: %w", TypeMeshConfig, err)
		}
		if err := validateMesh(m); err != nil {
			return nil, err
		}
		mesh = m
	}
	objs := make(map[string]*config.Object, len(vc.objs))
	var all, fresh []*config.Object
	seen := map[string]bool{}
	for _, t := range Types[1:] {
		for i, a := range byType[t] {
			k := resourceKey(t, a)
			o := vc.objs[k]
			if o == nil {
				var err error
				if o, err = DecodeObject(t, a); err != nil {
					return nil, fmt.Errorf("%s resource %d: %w", t, i, err)
				}
				fresh = append(fresh, o)
			}
			if id := t + " " + o.Key(); seen[id] {
				return nil, fmt.Errorf("%s resource %d: %s is sent twice", t, i, o.Key())
			} else {
				seen[id] = true
			}
			objs[k] = o
			// NewSnapshot stamps ResourceVersion on the objects it is given, and the
			// cached ones belong to the snapshot in force: give it copies.
			c := *o
			all = append(all, &c)
		}
	}
	check := fresh
	if meshChanged {
		// Objects validate against the mesh config (CUSTOM providers): a new one
		// revalidates everything.
		check = all
	}
	if err := config.ValidateObjects(check, mesh); err != nil {
		return nil, err
	}
	vc.mesh, vc.meshRaw, vc.objs = mesh, meshRaw, objs
	return config.NewSnapshot(all, mesh), nil
}

// validateMesh validates a pushed mesh config as the control plane's loader does, by
// loading its YAML form. It runs only when the mesh config changes.
func validateMesh(m *meshv1alpha1.MeshConfig) error {
	y, err := config.Encode(&config.Snapshot{Mesh: m})
	if err != nil {
		return err
	}
	_, _, err = (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: TypeMeshConfig, Data: y})
	return err
}

// decodeSnapshot decodes and fully validates resources by type URL.
func decodeSnapshot(byType map[string][]*anypb.Any) (*config.Snapshot, error) {
	return new(validCache).validate(byType)
}
