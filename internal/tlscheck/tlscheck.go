package tlscheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/meshguard/meshguard/internal/proxy"
)

// ConnectionsPath is where the sidecar admin lists live connections.
const ConnectionsPath = "/debug/connections"

// maxBody bounds what is read from the admin: a busy sidecar's list is well below it.
const maxBody = 32 << 20

// Modes: what protects a connection.
const (
	ModeMTLS        = "mTLS"        // both sides presented verified certificates
	ModeTLS         = "TLS"         // encrypted, the client not authenticated (DestinationRule SIMPLE)
	ModePlaintext   = "plaintext"   // no TLS: PERMISSIVE or DISABLE
	ModePassthrough = "passthrough" // opaque bytes the sidecar did not terminate
)

// Conn is one live connection as tls-check reports it.
type Conn struct {
	ID        uint64 `json:"id"`
	Direction string `json:"direction"`
	// Peer is the other end: the client for inbound, the upstream for outbound.
	Peer        string `json:"peerAddress"`
	Host        string `json:"host,omitempty"`
	PeerID      string `json:"peerSpiffeId,omitempty"`
	LocalID     string `json:"localSpiffeId,omitempty"`
	Protocol    string `json:"protocol"`
	TLSVersion  string `json:"tlsVersion,omitempty"`
	CipherSuite string `json:"cipherSuite,omitempty"`
	KeyExchange string `json:"keyExchange,omitempty"`
	PostQuantum bool   `json:"postQuantum"`
	Mode        string `json:"mode"`
	// Setting is what decided the mode: the PeerAuthentication mode for inbound, the
	// DestinationRule TLS mode for outbound.
	Setting string `json:"setting"`
	// AdmittedBy is the authorization policy whose rule admitted the connection's last
	// request; empty when no policy applied (allowed by default) or none was evaluated.
	AdmittedBy string `json:"admittedBy,omitempty"`
}

// Report is a sidecar's connections, inbound first.
type Report struct {
	Sidecar     string `json:"sidecar"`
	Connections []Conn `json:"connections"`
	MTLS        int    `json:"mtls"`
	PostQuantum int    `json:"postQuantum"`
	Plaintext   int    `json:"plaintext"`
}

// Fetch reads the live connections from the sidecar admin at addr (HOST:PORT).
func Fetch(ctx context.Context, c *http.Client, addr string) ([]proxy.ConnInfo, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("sidecar admin address %q: want HOST:PORT: %w", addr, err)
	}
	url := "http://" + addr + ConnectionsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("sidecar admin %s: %w", addr, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sidecar admin %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", url, maxBody)
	}
	conns, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return conns, nil
}

// Parse decodes the admin's {"connections":[…]} document. Unknown fields are ignored
// (a newer sidecar may add some); anything else malformed is an error.
func Parse(b []byte) ([]proxy.ConnInfo, error) {
	var doc struct {
		Connections *[]proxy.ConnInfo `json:"connections"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("connections document: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("connections document: trailing data after the JSON object")
	}
	if doc.Connections == nil {
		return nil, errors.New(`connections document: no "connections" list`)
	}
	for i, c := range *doc.Connections {
		if c.Direction != "inbound" && c.Direction != "outbound" {
			return nil, fmt.Errorf("connections[%d]: direction %q: want inbound or outbound", i, c.Direction)
		}
	}
	return *doc.Connections, nil
}

// Classify says what protects one connection.
func Classify(ci proxy.ConnInfo) Conn {
	c := Conn{
		ID: ci.ID, Direction: ci.Direction, Peer: ci.Source, Host: ci.Host, PeerID: ci.PeerSPIFFEID, LocalID: ci.LocalSPIFFEID,
		Protocol: ci.Protocol, TLSVersion: ci.TLSVersion, CipherSuite: ci.CipherSuite, KeyExchange: ci.KeyExchange,
		PostQuantum: strings.Contains(ci.KeyExchange, "MLKEM"), Setting: ci.Mode, AdmittedBy: ci.AdmittedBy,
	}
	if ci.Direction == "outbound" {
		c.Peer = ci.Destination
	}
	switch {
	case ci.TLSVersion != "" && ci.PeerSPIFFEID != "" && ci.Direction == "inbound":
		// The inbound listener only learns a peer SPIFFE ID from a verified client
		// certificate.
		c.Mode = ModeMTLS
	case ci.TLSVersion != "" && ci.Upstream && (ci.Mode == "ISTIO_MUTUAL" || ci.Mode == "MUTUAL"):
		// The sidecar's own session toward the destination, presenting its certificate.
		c.Mode = ModeMTLS
	case ci.TLSVersion != "":
		c.Mode = ModeTLS
	case ci.Direction == "outbound":
		switch ci.Mode {
		case "PASSTHROUGH":
			c.Mode = ModePassthrough
		default:
			c.Mode = ModePlaintext
		}
	default:
		c.Mode = ModePlaintext
	}
	return c
}

// appLeg reports whether ci is the app's plaintext connection to the outbound listener
// of a route the sidecar encrypts: the sidecar's upstream entries show that traffic as
// it crosses the network, so the app's leg is not listed (it never leaves loopback).
func appLeg(ci proxy.ConnInfo) bool {
	if ci.Direction != "outbound" || ci.Upstream {
		return false
	}
	switch ci.Mode {
	case "ISTIO_MUTUAL", "MUTUAL", "SIMPLE":
		return true
	}
	return false
}

// NewReport classifies conns of the sidecar at addr, inbound first, each direction in
// the admin's order.
func NewReport(addr string, conns []proxy.ConnInfo) Report {
	r := Report{Sidecar: addr, Connections: []Conn{}}
	for _, dir := range []string{"inbound", "outbound"} {
		for _, ci := range conns {
			if ci.Direction != dir || appLeg(ci) {
				continue
			}
			c := Classify(ci)
			switch c.Mode {
			case ModeMTLS:
				r.MTLS++
			case ModePlaintext:
				r.Plaintext++
			}
			if c.PostQuantum {
				r.PostQuantum++
			}
			r.Connections = append(r.Connections, c)
		}
	}
	return r
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText prints the report as a table and a summary line.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "DIRECTION\tPEER\tPEER ID\tLOCAL ID\tPROTOCOL\tMODE\tTLS\tCIPHER SUITE\tKEY EXCHANGE\tADMITTED BY\n")
	for _, c := range r.Connections {
		peer := c.Peer
		if c.Host != "" {
			peer = c.Host + " (" + c.Peer + ")"
		}
		kx := dash(c.KeyExchange)
		if c.PostQuantum {
			kx += " (post-quantum)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s (%s)\t%s\t%s\t%s\t%s\n", c.Direction, dash(peer), dash(c.PeerID), dash(c.LocalID),
			dash(c.Protocol), c.Mode, dash(c.Setting), dash(c.TLSVersion), dash(c.CipherSuite), kx, dash(c.AdmittedBy))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d connections on %s: %d mTLS (%d post-quantum), %d plaintext\n",
		len(r.Connections), r.Sidecar, r.MTLS, r.PostQuantum, r.Plaintext)
	return err
}

// WriteJSON prints the report as indented JSON, for scripts.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
