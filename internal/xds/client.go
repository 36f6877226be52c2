package xds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
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
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
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
			return false, fmt.Errorf("subscribe %s: %w", t, err)
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
			return fmt.Errorf("xds: ack %s: %w", t, err)
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

// decoded is a push, decoded but not yet validated.
type decoded struct {
	objs        []*config.Object
	mesh        *meshv1alpha1.MeshConfig
	meshVersion string
}

// decodePush decodes resources by type URL: exactly one mesh config, and objects with
// unique names per kind.
func decodePush(byType map[string][]*anypb.Any) (*decoded, error) {
	d := &decoded{}
	seen := map[string]bool{}
	for _, t := range Types {
		for i, a := range byType[t] {
			if t == TypeMeshConfig {
				if d.mesh != nil {
					return nil, fmt.Errorf("%s: more than one mesh config", t)
				}
				m, v, err := decodeMeshVersion(a)
				if err != nil {
					return nil, fmt.Errorf("%s resource %d: %w", t, i, err)
				}
				d.mesh, d.meshVersion = m, v
				continue
			}
			o, err := DecodeObject(t, a)
			if err != nil {
				return nil, fmt.Errorf("%s resource %d: %w", t, i, err)
			}
			if k := t + " " + o.Key(); seen[k] {
				return nil, fmt.Errorf("%s resource %d: %s is sent twice", t, i, o.Key())
			} else {
				seen[k] = true
			}
			d.objs = append(d.objs, o)
		}
	}
	if d.mesh == nil {
		return nil, fmt.Errorf("%s: no mesh config in the push", TypeMeshConfig)
	}
	return d, nil
}

// validateFull validates the mesh config and every object exactly as the control
// plane's loader does, by loading their YAML form.
func validateFull(objs []*config.Object, mesh *meshv1alpha1.MeshConfig) error {
	y, err := config.Encode(config.NewSnapshot(objs, mesh))
	if err != nil {
		return err
	}
	_, _, err = (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "push", Data: y})
	return err
}

// validateObjects validates objects under a mesh config that was itself validated
// before. Object validation reads only the mesh's extension providers, so the mesh
// document carries just those: loading the whole MeshConfig again for every push would
// cost each sidecar milliseconds when a mesh-wide policy changes.
func validateObjects(objs []*config.Object, mesh *meshv1alpha1.MeshConfig) error {
	var buf bytes.Buffer
	mc, err := protojson.Marshal(&meshv1alpha1.MeshConfig{ExtensionProviders: mesh.GetExtensionProviders()})
	if err != nil {
		return fmt.Errorf("encode mesh config: %w", err)
	}
	fmt.Fprintf(&buf, "{\"apiVersion\": \"install.istio.io/v1alpha1\", \"kind\": \"IstioOperator\", \"spec\": {\"meshConfig\": %s}}\n", mc)
	for _, o := range objs {
		spec, err := protojson.Marshal(o.Spec)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
		}
		doc, err := json.Marshal(map[string]any{
			"apiVersion": strings.TrimSuffix(TypeOf(o.Kind), "/"+string(o.Kind)),
			"kind":       string(o.Kind),
			"metadata":   map[string]any{"name": o.Name, "namespace": o.Namespace, "labels": o.Labels, "annotations": o.Annotations},
			"spec":       json.RawMessage(spec),
		})
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
		}
		buf.WriteString("---\n")
		buf.Write(doc)
		buf.WriteByte('\n')
	}
	_, _, err = (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "push", Data: buf.Bytes()})
	return err
}

// decodeSnapshot decodes and fully validates resources by type URL.
func decodeSnapshot(byType map[string][]*anypb.Any) (*config.Snapshot, error) {
	d, err := decodePush(byType)
	if err != nil {
		return nil, err
	}
	if err := validateFull(d.objs, d.mesh); err != nil {
		return nil, err
	}
	return config.NewSnapshot(d.objs, d.mesh), nil
}

// validCache remembers which objects already validated under which mesh config, so
// that a push validates only what changed.
type validCache struct {
	mesh string
	ok   map[encKey]bool
}

// validate decodes a push and validates what the cache has not seen; on success the
// cache holds exactly the push.
func (vc *validCache) validate(byType map[string][]*anypb.Any) (*config.Snapshot, error) {
	d, err := decodePush(byType)
	if err != nil {
		return nil, err
	}
	key := func(o *config.Object) encKey { return encKey{o.Kind, o.Key(), o.ResourceVersion} }
	if d.meshVersion == "" || d.meshVersion != vc.mesh {
		err = validateFull(d.objs, d.mesh)
	} else {
		var fresh []*config.Object
		for _, o := range d.objs {
			if !vc.ok[key(o)] {
				fresh = append(fresh, o)
			}
		}
		if len(fresh) > 0 {
			err = validateObjects(fresh, d.mesh)
		}
	}
	if err != nil {
		return nil, err
	}
	vc.mesh, vc.ok = d.meshVersion, make(map[encKey]bool, len(d.objs))
	for _, o := range d.objs {
		vc.ok[key(o)] = true
	}
	return config.NewSnapshot(d.objs, d.mesh), nil
}
