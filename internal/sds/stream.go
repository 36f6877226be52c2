package sds

import (
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"slices"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stream is the xDS state of one StreamSecrets call. Only the stream's serving goroutine
// touches it.
type stream struct {
	s   *Server
	log *slog.Logger
	out grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]

	initialized bool
	// names is what the client currently watches; empty means nothing (unsubscribed).
	names []string
	// nonceSent is the nonce of the last response; requests carrying another non-empty
	// nonce are stale and ignored, as the xDS protocol says.
	nonceSent string
	// versionSent is the version of the last response, so the same content is not sent
	// twice: a push happens only when the Source changes what the client watches.
	versionSent string
	// pending is set when the client asked for secrets the Source cannot provide yet.
	pending bool
}

// StreamSecrets serves one SDS stream: it answers the first request and any change of
// the watched names, pushes whenever the Source changes, and handles ACK and NACK
// without re-sending the same version.
func (s *Server) StreamSecrets(out grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]) error {
	ctx := out.Context()
	st := &stream{s: s, log: s.log, out: out}

	reqs := make(chan *discovery.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := out.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	// The change channel is taken before the Source is first read and renewed only after
	// it fires, so no change is missed: every read of the Source happens after the
	// channel in hand was taken.
	updated := s.cfg.Source.Updated()
	for {
		select {
		case <-ctx.Done():
			st.log.Debug("SDS stream closed", "reason", ctx.Err())
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				st.log.Debug("SDS stream closed by client")
				return nil
			}
			return err
		case req := <-reqs:
			if err := st.handle(req); err != nil {
				return err
			}
		case <-updated:
			updated = s.cfg.Source.Updated()
			if err := st.push(); err != nil {
				return err
			}
		}
	}
}

// handle applies one request, following the same ACK/NACK rules as Istio's xds server.
func (st *stream) handle(req *discovery.DiscoveryRequest) error {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return err
	}
	if !st.initialized {
		// Envoy always identifies itself on the first request; Istio's agent requires it.
		if req.GetNode().GetId() == "" {
			return status.Error(codes.InvalidArgument, "missing node information: the first SDS request must carry node.id")
		}
		st.initialized = true
		st.log = st.log.With("node", req.GetNode().GetId())
		st.log.Debug("SDS stream opened")
	}

	if d := req.GetErrorDetail(); d != nil {
		// NACK: the client keeps its previous secrets. Log it and wait for a change of the
		// Source; re-sending the same version would only be rejected again.
		st.log.Warn("SDS client rejected secrets (NACK)",
			"version", req.GetVersionInfo(), "nonce", req.GetResponseNonce(),
			"code", codes.Code(d.GetCode()).String(), "message", d.GetMessage())
		return nil
	}

	if err := checkNames(req.GetResourceNames()); err != nil {
		return status.Error(codes.NotFound, err.Error())
	}
	names := sortedUnique(req.GetResourceNames())

	if len(names) == 0 {
		// Secrets are not a wildcard type: an empty list unsubscribes.
		st.log.Debug("SDS client unsubscribed")
		st.names, st.pending = nil, false
		return nil
	}

	if req.GetResponseNonce() == "" || st.nonceSent == "" {
		// First request, or a client reconnecting with a nonce from an earlier stream:
		// always answer with what is current.
		st.names = names
		st.versionSent = ""
		return st.respond()
	}

	if req.GetResponseNonce() != st.nonceSent {
		st.log.Debug("SDS request with stale nonce ignored", "nonce", req.GetResponseNonce(), "sent", st.nonceSent)
		return nil
	}

	// The nonce matches: an ACK, possibly with a changed subscription.
	added := slices.ContainsFunc(names, func(n string) bool { return !slices.Contains(st.names, n) })
	st.names = names
	if !added {
		st.log.Debug("SDS ACK", "version", req.GetVersionInfo(), "nonce", req.GetResponseNonce())
		return nil
	}
	st.versionSent = ""
	return st.respond()
}

// push is called on a Source change.
func (st *stream) push() error {
	if len(st.names) == 0 {
		return nil
	}
	return st.respond()
}

// respond sends the watched secrets if the Source has them and they differ from what was
// last sent; otherwise it leaves the request pending until the next change.
func (st *stream) respond() error {
	snap, err := st.s.snapshot()
	if err != nil {
		if !st.pending {
			st.log.Info("SDS request waits for a valid certificate", "resources", st.names, "error", err)
		}
		st.pending = true
		return nil
	}
	st.pending = false
	if snap.version(st.names) == st.versionSent {
		return nil
	}
	resp, err := snap.response(st.names, rand.Text())
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := st.out.Send(resp); err != nil {
		return err
	}
	st.nonceSent, st.versionSent = resp.GetNonce(), resp.GetVersionInfo()
	st.log.Debug("SDS secrets sent", "resources", st.names, "version", resp.GetVersionInfo(), "nonce", resp.GetNonce())
	return nil
}
