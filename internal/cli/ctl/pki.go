package ctl

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/pki"
)

// Files create-root writes, as Istio's certificate tooling names them.
const (
	rootCertFile = pki.RootCertFile
	rootKeyFile  = "root-key.pem"
)

func newPKICmd(env *cmdenv.Env) *cobra.Command { return newPKICmdAt(env, time.Now) }

// newPKICmdAt takes the clock so that inspect's "time left" is testable.
func newPKICmdAt(env *cmdenv.Env, now func() time.Time) *cobra.Command {
	c := &cobra.Command{
		Use:   "pki",
		Short: "Create and inspect CA certificates (roots, plug-in intermediates)",
	}
	c.AddCommand(newCreateRootCmd(env, now), newCreateIntermediateCmd(env, now), newInspectCmd(env, now))
	return c
}

type createRootOptions struct {
	out, trustDomain string
	ttl              time.Duration
}

func newCreateRootCmd(env *cmdenv.Env, now func() time.Time) *cobra.Command {
	var o createRootOptions
	c := &cobra.Command{
		Use:   "create-root --out DIR",
		Short: "Create a self-signed root CA (ECDSA P-256, 10 years)",
		Long: `Create-root writes root-cert.pem and root-key.pem (mode 0600) into DIR. Existing
files are never overwritten: a replaced root breaks every workload that trusts it.`,
		Example: `  meshguard ctl pki create-root --out ./root
  meshguard ctl pki create-intermediate --root ./root --out ./cacerts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.out == "" {
				return cmdenv.Exit(2, errors.New("create-root: --out DIR is required"))
			}
			if err := refuseExisting(o.out, rootCertFile, rootKeyFile); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-root: %w", err))
			}
			cert, s, err := ca.NewRoot(o.trustDomain, o.ttl, now())
			if err != nil {
				return cmdenv.Exit(2, fmt.Errorf("create-root: %w", err))
			}
			keyPEM, err := pki.EncodeKeyPEM(s.Key)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			if err := os.MkdirAll(o.out, 0o700); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-root: %w", err))
			}
			if err := pki.WriteFileAtomic(filepath.Join(o.out, rootKeyFile), keyPEM, 0o600); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-root: %w", err))
			}
			if err := pki.WriteFileAtomic(filepath.Join(o.out, rootCertFile), pki.EncodeCertsPEM(cert), 0o644); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-root: %w", err))
			}
			fmt.Fprintf(env.Stdout, "wrote %s and %s (serial %s, valid until %s)\n",
				filepath.Join(o.out, rootCertFile), filepath.Join(o.out, rootKeyFile),
				cert.SerialNumber.Text(16), cert.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.out, "out", "", "directory to write root-cert.pem and root-key.pem into")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain recorded in the root (as its SPIFFE ID URI SAN)")
	f.DurationVar(&o.ttl, "ttl", ca.RootTTL, "validity of the root")
	return c
}

func refuseExisting(dir string, names ...string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite it (choose another --out)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

type createIntermediateOptions struct {
	root, out, trustDomain string
	ttl                    time.Duration
}

func newCreateIntermediateCmd(env *cmdenv.Env, now func() time.Time) *cobra.Command {
	var o createIntermediateOptions
	c := &cobra.Command{
		Use:   "create-intermediate --root DIR --out DIR [--ttl 17520h]",
		Short: "Create an intermediate CA as an Istio plug-in CA directory",
		Long: `Create-intermediate signs a new ECDSA P-256 intermediate CA with the root in --root
(root-cert.pem and root-key.pem, as create-root writes them) and writes --out with
Istio's file names: ca-cert.pem, ca-key.pem (0600), cert-chain.pem (intermediate then
root) and root-cert.pem. Start the control plane with --cacerts pointing there, or
load it into Istio's cacerts secret.`,
		Example: `  meshguard ctl pki create-intermediate --root ./root --out ./cacerts
  meshguard ctl pki create-intermediate --root ./root --out ./cluster2 --ttl 8760h
  meshguard controlplane --data-dir /var/lib/meshguard --cacerts ./cacerts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.root == "" || o.out == "" {
				return cmdenv.Exit(2, errors.New("create-intermediate: --root DIR and --out DIR are required"))
			}
			if err := refuseExisting(o.out, pki.CACertFile, pki.CAKeyFile, pki.CertChainFile, pki.RootCertFile); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-intermediate: %w", err))
			}
			rootCert, rootKey, err := loadRoot(o.root)
			if err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-intermediate: %w", err))
			}
			key, err := pki.GenerateKey(pki.KeyECP256)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			t := now()
			inter, err := pki.CreateIntermediate(rootCert, rootKey, key.Public(), pki.CAOptions{
				CommonName: "meshguard intermediate CA", Organization: o.trustDomain, TrustDomain: o.trustDomain, TTL: o.ttl, Now: t,
			})
			if err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-intermediate: %w", err))
			}
			d := &pki.CADir{Cert: inter, Key: key, Chain: []*x509.Certificate{inter, rootCert}, Roots: []*x509.Certificate{rootCert}}
			if err := pki.WriteCADir(o.out, d); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-intermediate: %w", err))
			}
			// Read back what was written, exactly as the control plane will.
			if _, err := pki.LoadCADir(o.out, t); err != nil {
				return cmdenv.Exit(1, fmt.Errorf("create-intermediate: written directory does not validate: %w", err))
			}
			fmt.Fprintf(env.Stdout, "wrote %s (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem; valid until %s)\n",
				o.out, inter.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.root, "root", "", "directory with root-cert.pem and root-key.pem")
	f.StringVar(&o.out, "out", "", "directory to write the plug-in CA files into")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain recorded in the intermediate")
	f.DurationVar(&o.ttl, "ttl", 2*365*24*time.Hour, "validity of the intermediate (capped at the root's expiry)")
	return c
}

func loadRoot(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, rootCertFile), filepath.Join(dir, rootKeyFile)
	b, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("root certificate: %w", err)
	}
	certs, err := pki.ParseCertsPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	b, err = os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("root key: %w", err)
	}
	key, err := pki.ParseKeyPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	// root-cert.pem may hold several roots during rotation: sign with the one the key fits.
	for _, c := range certs {
		if pki.KeyMatchesCert(key, c) {
			if err := pki.CheckCA(c); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", certPath, err)
			}
			return c, key, nil
		}
	}
	return nil, nil, fmt.Errorf("%s matches no certificate in %s", keyPath, certPath)
}

type inspectOptions struct {
	root string
}

func newInspectCmd(env *cmdenv.Env, now func() time.Time) *cobra.Command {
	var o inspectOptions
	c := &cobra.Command{
		Use:   "inspect FILE [--root FILE]",
		Short: "Show the certificates in a PEM file and whether their chain verifies",
		Long: `Inspect prints, for every certificate in FILE: subject, issuer, serial, SPIFFE ID,
SANs, whether it is a CA, key type, validity and time left. Then it reports whether the
chain in FILE (first certificate, the rest as intermediates) verifies against the
roots in --root, or, without --root, against the self-signed certificates in FILE
itself. Exit status 1 when the chain does not verify.`,
		Example: `  meshguard ctl pki inspect /etc/certs/cert-chain.pem --root /var/lib/meshguard/root-cert.pem
  meshguard ctl pki inspect ./cacerts/ca-cert.pem --root ./cacerts/root-cert.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			certs, err := readCerts(args[0])
			if err != nil {
				return cmdenv.Exit(2, fmt.Errorf("inspect: %w", err))
			}
			var roots []*x509.Certificate
			rootsFrom := "--root " + o.root
			if o.root != "" {
				if roots, err = readCerts(o.root); err != nil {
					return cmdenv.Exit(2, fmt.Errorf("inspect: --root: %w", err))
				}
			} else {
				rootsFrom = "the self-signed certificates in " + args[0]
				for _, c := range certs {
					if c.CheckSignatureFrom(c) == nil {
						roots = append(roots, c)
					}
				}
			}
			t := now()
			for i, c := range certs {
				describeCert(env.Stdout, i+1, len(certs), c, t)
			}
			if len(roots) == 0 {
				fmt.Fprintf(env.Stdout, "chain: not verified: %s holds no root; pass --root FILE\n", args[0])
				return cmdenv.Exit(1, nil)
			}
			chains, err := pki.VerifyChain(certs[0], certs[1:], roots, t)
			if err != nil {
				fmt.Fprintf(env.Stdout, "chain: does NOT verify against %s: %v\n", rootsFrom, err)
				return cmdenv.Exit(1, nil)
			}
			var names []string
			for _, c := range chains[0] {
				names = append(names, name(c))
			}
			fmt.Fprintf(env.Stdout, "chain: verifies against %s: %s\n", rootsFrom, strings.Join(names, " -> "))
			return nil
		},
	}
	c.Flags().StringVar(&o.root, "root", "", "PEM file with the trusted root(s)")
	return c
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

func name(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return fmt.Sprintf("%q", s)
	}
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return "serial " + c.SerialNumber.Text(16)
}

func describeCert(w io.Writer, i, n int, c *x509.Certificate, now time.Time) {
	var sans []string
	for _, u := range c.URIs {
		sans = append(sans, "URI:"+u.String())
	}
	for _, d := range c.DNSNames {
		sans = append(sans, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		sans = append(sans, "IP:"+ip.String())
	}
	spiffe := "(none)"
	if id, err := pki.SPIFFEIDFromCert(c); err == nil {
		spiffe = id.String()
	} else if len(c.URIs) > 0 {
		spiffe = "(invalid: " + err.Error() + ")"
	}
	isCA := "no"
	if c.IsCA {
		isCA = "yes"
	}
	fmt.Fprintf(w, "certificate %d of %d\n", i, n)
	fmt.Fprintf(w, "  subject:    %s\n", orNone(c.Subject.String()))
	fmt.Fprintf(w, "  issuer:     %s\n", orNone(c.Issuer.String()))
	fmt.Fprintf(w, "  serial:     %s\n", c.SerialNumber.Text(16))
	fmt.Fprintf(w, "  SPIFFE ID:  %s\n", spiffe)
	fmt.Fprintf(w, "  SANs:       %s\n", orNone(strings.Join(sans, ", ")))
	fmt.Fprintf(w, "  CA:         %s\n", isCA)
	fmt.Fprintf(w, "  key:        %s\n", pki.DescribePublicKey(c.PublicKey))
	fmt.Fprintf(w, "  valid:      %s to %s\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  time left:  %s\n", timeLeft(c, now))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func timeLeft(c *x509.Certificate, now time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return "not yet valid (starts in " + c.NotBefore.Sub(now).Round(time.Second).String() + ")"
	case now.After(c.NotAfter):
		return "EXPIRED " + now.Sub(c.NotAfter).Round(time.Second).String() + " ago"
	}
	return c.NotAfter.Sub(now).Round(time.Second).String()
}
