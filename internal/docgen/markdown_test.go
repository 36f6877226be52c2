package docgen_test

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/docgen"
)

var update = flag.Bool("update", false, "rewrite docs/reference/cli.md from the command tree")

const reference = "../../docs/reference/cli.md"

// TestCLIReference fails when the committed CLI reference does not match the command
// tree: someone changed a command, flag or help text without regenerating it.
func TestCLIReference(t *testing.T) {
	got := docgen.Markdown(cli.NewRootCmd(cmdenv.New(io.Discard, io.Discard)))
	if *update {
		if err := os.WriteFile(reference, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(reference)
	if err != nil {
		t.Fatalf("read %s: %v (generate it: go test ./internal/docgen -run TestCLIReference -update)", reference, err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s is stale; regenerate it with\n\tgo test ./internal/docgen -run TestCLIReference -update\n(-committed +generated):\n%s", filepath.Base(reference), d)
	}
}

func TestMarkdown(t *testing.T) {
	root := &cobra.Command{Use: "tool", Short: "A tool"}
	root.PersistentFlags().String("log-level", "info", "log level")
	sub := &cobra.Command{
		Use:   "run -f FILE",
		Short: "Run things",
		Long: `Run reads FILE.

Each line is printed as:

  FILE:LINE: reason

and then it exits.`,
		Example: "  tool run -f x.yaml",
		RunE:    func(*cobra.Command, []string) error { return nil },
	}
	sub.Flags().StringP("filename", "f", "", "input file")
	hidden := &cobra.Command{Use: "secret", Short: "hidden", Hidden: true, Run: func(*cobra.Command, []string) {}}
	root.AddCommand(sub, hidden)

	got := string(docgen.Markdown(root))
	tests := []struct {
		name      string
		want      string
		wantCount int
	}{
		{"header", "<!-- Generated from the cobra command tree", 1},
		{"index entry", "  - [tool run](#tool-run) — Run things\n", 1},
		{"section", "\n## tool run\n\nRun things\n", 1},
		{"usage line", "```\ntool run -f FILE [flags]\n```", 1},
		{"root usage line", "```\ntool [flags]\n```", 1},
		{"indented Long block fenced", "Each line is printed as:\n\n```\n  FILE:LINE: reason\n```\n\nand then it exits.", 1},
		{"example", "### Examples\n\n```sh\n  tool run -f x.yaml\n```", 1},
		{"own flags", "### Flags\n\n```\n  -f, --filename string   input file\n  -h, --help              help for run\n```", 1},
		{"inherited flags", "### Global flags\n\n```\n      --log-level string   log level (default \"info\")\n```", 1},
		{"subcommand list", "### Subcommands\n\n- [tool run](#tool-run) — Run things\n", 1},
		{"hidden command left out", "secret", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := strings.Count(got, tc.want); n != tc.wantCount {
				t.Errorf("Markdown() contains %q %d times, want %d; output:\n%s", tc.want, n, tc.wantCount, got)
			}
		})
	}
	if again := docgen.Markdown(root); !bytes.Equal(again, []byte(got)) {
		t.Errorf("Markdown() is not deterministic: %s", cmp.Diff(got, string(again)))
	}
}
