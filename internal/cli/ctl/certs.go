package ctl

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/certreport"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
)

// Exit statuses of `ctl certs`, for cron and monitoring.
const (
	certsExitExpiring = 1 // a certificate expires inside the window (or has expired)
	certsExitUsage    = 2 // bad flags or credentials files
	certsExitUnknown  = 3 // the inventory could not be read: nothing was checked
)

type certsOptions struct {
	operatorOptions
	within time.Duration
	output string
}

func newCertsCmd(env *cmdenv.Env) *cobra.Command {
	var o certsOptions
	c := &cobra.Command{
		Use:   "certs --controlplane HOST:PORT --cert FILE --key FILE --root-cert FILE [--expiring-within 72h] [-o json]",
		Short: "List every certificate the mesh depends on, soonest expiry first; exit 1 if any expires soon",
		Long: `certs asks the control plane for every certificate the mesh depends on: each root
in the trust bundle, the CA's intermediate (with a plug-in CA), the control plane's
serving certificate and the current certificate of each connected sidecar. It prints
them with identity or subject, serial, expiry and time left, soonest first, and marks
those that expire within --expiring-within as EXPIRING (or EXPIRED).

Roots and intermediates count as soon as they are inside the window: nothing renews
them. Workload and serving certificates renew themselves and are short-lived on purpose
(a healthy 24h workload certificate is always "within 72h"), so they count only once
they are inside the window and past their renewal point (half their lifetime left for
workloads, a third for the serving certificate) by a tenth of their lifetime: their
renewal is failing. Expired certificates always count.

Exit status, for cron and monitoring: 0 when nothing expires within the window, 1 when
something does, 2 for bad flags or unreadable credential files, 3 when the inventory
could not be read (control plane unreachable, credentials refused).

` + operatorHelp,
		Example: `  meshguard ctl certs --controlplane 127.0.0.1:15012 \
      --cert op/cert-chain.pem --key op/key.pem --root-cert op/root-cert.pem
  meshguard ctl certs --controlplane cp.internal:15012 --cert op.pem --key op.key --root-cert root.pem --expiring-within 720h -o json
  # crontab: mail when anything expires within 3 days
  0 * * * * meshguard ctl certs --controlplane cp:15012 --cert op.pem --key op.key --root-cert root.pem >/dev/null || mail -s "mesh certificates" ops`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "table" && o.output != "json" {
				return cmdenv.Exit(certsExitUsage, fmt.Errorf("-o %q: want table or json", o.output))
			}
			if o.within < 0 {
				return cmdenv.Exit(certsExitUsage, fmt.Errorf("--expiring-within %s: want a duration of zero or more", o.within))
			}
			cc, err := dialOperator(&o.operatorOptions)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			certs, err := certreport.Fetch(ctx, cc)
			if err != nil {
				return cmdenv.Exit(certsExitUnknown, fmt.Errorf("control plane %s: %w", o.controlPlane, err))
			}
			r := certreport.NewReport(certs, time.Now(), o.within)
			write := r.WriteText
			if o.output == "json" {
				write = r.WriteJSON
			}
			if err := write(env.Stdout); err != nil {
				return cmdenv.Exit(certsExitUnknown, err)
			}
			if r.Expiring > 0 {
				return cmdenv.Exit(certsExitExpiring, nil)
			}
			return nil
		},
	}
	o.addFlags(c)
	c.Flags().DurationVar(&o.within, "expiring-within", 72*time.Hour, "flag certificates that expire within this long; exit 1 if there is one")
	c.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return c
}
