package certreport

import (
	"cmp"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Certificate roles, from the most to the least fundamental.
const (
	RoleRoot         = "root"
	RoleIntermediate = "intermediate"
	RoleServing      = "serving"
	RoleWorkload     = "workload"
)

// Cert is one certificate of the inventory: the facts, no judgement.
type Cert struct {
	Role string `json:"role"`
	// Name tells certificates of one role apart: "root-0", "ca-cert", "serving", or
	// the workload and stream of a sidecar ("default/httpbin httpbin-1-3").
	Name string `json:"name"`
	// Identity is the SPIFFE ID (the URI SAN) when there is one.
	Identity  string    `json:"identity,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

// FromX509 describes c under role and name.
func FromX509(role, name string, c *x509.Certificate) Cert {
	out := Cert{Role: role, Name: name, Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	if len(c.URIs) > 0 {
		out.Identity = c.URIs[0].String()
	}
	return out
}

// Entry is a certificate with its time left at the report's time.
type Entry struct {
	Cert
	// SecondsLeft is negative once expired.
	SecondsLeft int64  `json:"secondsLeft"`
	TimeLeft    string `json:"timeLeft"`
	// Status is "ok", "expiring" (inside the window and, for a certificate that renews
	// itself, past its renewal point: see renewalOverdue) or "expired".
	Status string `json:"status"`
}

// Statuses of an Entry.
const (
	StatusOK       = "ok"
	StatusExpiring = "expiring"
	StatusExpired  = "expired"
)

// Report is the inventory judged at one time against one window.
type Report struct {
	At time.Time `json:"at"`
	// Window is the --expiring-within duration; Expiring counts the certificates
	// inside it, the expired ones included.
	Window       string  `json:"expiringWithin"`
	Expiring     int     `json:"expiring"`
	Certificates []Entry `json:"certificates"`
}

// NewReport judges certs at now: sorted by time left (soonest first; ties by role, then
// name), each inside window flagged.
func NewReport(certs []Cert, now time.Time, window time.Duration) Report {
	r := Report{At: now.UTC(), Window: window.String(), Certificates: make([]Entry, 0, len(certs))}
	for _, c := range certs {
		left := c.NotAfter.Sub(now)
		e := Entry{Cert: c, SecondsLeft: int64(left / time.Second), TimeLeft: FormatLeft(left), Status: StatusOK}
		e.NotBefore, e.NotAfter = e.NotBefore.UTC(), e.NotAfter.UTC()
		switch {
		case left <= 0:
			e.Status = StatusExpired
		case left <= window && renewalOverdue(c, left):
			e.Status = StatusExpiring
		}
		if e.Status != StatusOK {
			r.Expiring++
		}
		r.Certificates = append(r.Certificates, e)
	}
	slices.SortStableFunc(r.Certificates, func(a, b Entry) int {
		return cmp.Or(a.NotAfter.Compare(b.NotAfter), cmp.Compare(roleRank(a.Role), roleRank(b.Role)), cmp.Compare(a.Name, b.Name))
	})
	return r
}

// renewalOverdue reports whether c, inside the window, needs an operator. Roots and
// intermediates always do: nothing renews them. Workload and serving certificates renew
// themselves (at half their lifetime left, Istio's default grace ratio, and at a third)
// and the CA issues short ones on purpose, so a healthy 24h workload certificate is
// always "within 72h"; they count only once they are past their renewal point by a
// tenth of their lifetime (room for jitter and back-dating) — i.e. renewal is failing.
func renewalOverdue(c Cert, left time.Duration) bool {
	var renewAt float64
	switch c.Role {
	case RoleWorkload:
		renewAt = 0.5
	case RoleServing:
		renewAt = 1.0 / 3
	default:
		return true
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return left < time.Duration(float64(life)*(renewAt-0.1))
}

func roleRank(role string) int {
	switch role {
	case RoleRoot:
		return 0
	case RoleIntermediate:
		return 1
	case RoleServing:
		return 2
	}
	return 3
}

// FormatLeft is a duration for people: "29d23h", "71h59m", "59m59s", and for an
// expired certificate "expired 2h0m ago".
func FormatLeft(d time.Duration) string {
	if d <= 0 {
		return "expired " + FormatLeft(-d+time.Second) + " ago"
	}
	d = d.Truncate(time.Second)
	switch {
	case d >= 72*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
}

// WriteText prints the report as a table, soonest expiry first, and a summary line.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "ROLE\tNAME\tIDENTITY / SUBJECT\tSERIAL\tNOT AFTER\tTIME LEFT\tSTATUS\n")
	for _, e := range r.Certificates {
		// A CA is known by its subject, a workload by its SPIFFE ID.
		who := e.Identity
		if who == "" || e.Role == RoleRoot || e.Role == RoleIntermediate {
			who = e.Subject
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Role, e.Name, who, e.Serial, e.NotAfter.Format(time.RFC3339), e.TimeLeft, statusText(e.Status))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	if r.Expiring == 0 {
		_, err = fmt.Fprintf(w, "\nnone of %d certificates expires within %s\n", len(r.Certificates), r.Window)
	} else {
		_, err = fmt.Fprintf(w, "\n%d of %d certificates expire within %s\n", r.Expiring, len(r.Certificates), r.Window)
	}
	return err
}

// WriteJSON prints the report as indented JSON, for scripts.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func statusText(s string) string {
	if s == StatusOK {
		return "ok"
	}
	return map[string]string{StatusExpiring: "EXPIRING", StatusExpired: "EXPIRED"}[s]
}
