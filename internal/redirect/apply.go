package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Options say where rules are applied.
type Options struct {
	// Netns is the network namespace to program: a name as `ip netns` creates it
	// (resolved under /run/netns) or a path such as /proc/PID/ns/net. Empty means the
	// caller's own namespace.
	Netns string
	// Logger receives one line per tool run at debug level; nil discards.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// NetnsPath resolves a --netns value: a path is used as is, a name is looked up under
// /run/netns. The namespace file must exist.
func NetnsPath(netns string) (string, error) {
	if netns == "" {
		return "", nil
	}
	path := netns
	if !strings.Contains(netns, "/") {
		if netns == "." || netns == ".." {
			return "", fmt.Errorf("netns %q: not a namespace name", netns)
		}
		path = filepath.Join("/run/netns", netns)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("netns %q: %w (create it with `ip netns add`, or pass /proc/PID/ns/net)", netns, err)
	}
	return path, nil
}

// Apply programs c's rules in the target namespace. It is idempotent: applying the same
// or a changed Config again leaves exactly one copy of meshguard's rules. With
// nftables the table is replaced atomically; with iptables meshguard's chains are
// flushed and refilled in one iptables-restore call per family, and the jumps from the
// built-in chains are added only when missing. Each backend manages only its own rules:
// to switch backends, Cleanup with the old one first.
func Apply(ctx context.Context, c Config, o Options) error {
	rules, err := Render(c)
	if err != nil {
		return err
	}
	return inNetns(o.Netns, func() error {
		switch c.Backend {
		case Nftables:
			return run(ctx, o.logger(), rules.Nft, "nft", "-f", "-")
		default:
			if err := applyIptables(ctx, o.logger(), "iptables", rules.IPv4); err != nil {
				return err
			}
			if rules.IPv6 != nil {
				return applyIptables(ctx, o.logger(), "ip6tables", rules.IPv6)
			}
			// IPv6 off: remove what an earlier IPv6 apply left. Failing here only keeps
			// IPv6 captured (stricter than asked), and hosts without ip6tables or IPv6
			// NAT have nothing to remove, so it is a warning, not an error.
			if err := cleanupIptables(ctx, o.logger(), "ip6tables"); err != nil && !errors.Is(err, errNotInstalled) {
				o.logger().Warn("could not remove earlier IPv6 redirect rules", "err", err)
			}
			return nil
		}
	})
}

func applyIptables(ctx context.Context, log *slog.Logger, tool string, p *IptablesProgram) error {
	var missing []string
	for _, j := range p.Jumps {
		err := run(ctx, log, "", tool, append([]string{"-t", "nat", "-C"}, j...)...)
		var ee *exec.ExitError
		switch {
		case err == nil: // already present
		case errors.As(err, &ee):
			missing = append(missing, "-A "+strings.Join(j, " ")+"\n")
		default:
			return err
		}
	}
	in := strings.TrimSuffix(p.Restore, "COMMIT\n") + strings.Join(missing, "") + "COMMIT\n"
	return run(ctx, log, in, tool+"-restore", "--noflush")
}

// cleanupJumps are every jump meshguard may have added to a built-in chain.
var cleanupJumps = [][]string{
	{chainPrerouting, "-p", "tcp", "-j", chainInbound},
	{chainOutput, "-p", "tcp", "-j", chainOutbound},
}

// Cleanup removes meshguard's rules for c.Backend (and IPv6 when c.IPv6) from the target
// namespace. Removing rules that are not there is not an error; anything meshguard
// created that is still present afterwards is.
func Cleanup(ctx context.Context, c Config, o Options) error {
	if c.Backend != Nftables && c.Backend != Iptables {
		return fmt.Errorf("--mode: %q is not a backend; want nftables or iptables", c.Backend)
	}
	return inNetns(o.Netns, func() error {
		if c.Backend == Nftables {
			in := fmt.Sprintf("add table inet %s\ndelete table inet %s\n", NftTable, NftTable)
			return run(ctx, o.logger(), in, "nft", "-f", "-")
		}
		tools := []string{"iptables"}
		if c.IPv6 {
			tools = append(tools, "ip6tables")
		}
		for _, tool := range tools {
			if err := cleanupIptables(ctx, o.logger(), tool); err != nil {
				return err
			}
		}
		return nil
	})
}

func cleanupIptables(ctx context.Context, log *slog.Logger, tool string) error {
	var ee *exec.ExitError
	for _, j := range cleanupJumps {
		// A jump added twice by hand must go too; bounded so a broken tool cannot spin.
		for range 64 {
			err := run(ctx, log, "", tool, append([]string{"-t", "nat", "-D"}, j...)...)
			if errors.As(err, &ee) {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	for _, verb := range []string{"-F", "-X"} {
		for _, ch := range ownChains {
			if err := run(ctx, log, "", tool, "-t", "nat", verb, ch); err != nil && !errors.As(err, &ee) {
				return err
			}
		}
	}
	out, err := output(ctx, log, tool+"-save", "-t", "nat")
	if err != nil {
		return err
	}
	if strings.Contains(out, "MESHGUARD_") {
		return fmt.Errorf("%s cleanup: meshguard rules remain in the nat table after removal:\n%s", tool, out)
	}
	return nil
}

// errNotInstalled marks a missing rule tool.
var errNotInstalled = errors.New("not installed")

// run executes one tool, feeding it stdin, and folds its stderr into the error.
func run(ctx context.Context, log *slog.Logger, stdin, name string, args ...string) error {
	_, err := execTool(ctx, log, stdin, name, args...)
	return err
}

func output(ctx context.Context, log *slog.Logger, name string, args ...string) (string, error) {
	return execTool(ctx, log, "", name, args...)
}

func execTool(ctx context.Context, log *slog.Logger, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	log.Debug("ran redirect tool", "cmd", name, "args", args, "err", err)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("%s: %w (Debian: apt-get install %s)", name, errNotInstalled, packageOf(name))
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

func packageOf(tool string) string {
	if tool == "nft" {
		return "nftables"
	}
	return "iptables"
}
