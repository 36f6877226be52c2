package docgen

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Header is the first lines of the generated file: where it comes from and how to
// regenerate it.
const Header = `# CLI reference

<!-- Generated from the cobra command tree by internal/docgen; do not edit.
     Regenerate: go test ./internal/docgen -run TestCLIReference -update -->

Every meshguard command, its flags and examples, generated from the binary's own
command tree. ` + "`meshguard help COMMAND`" + ` prints the same text.
`

// Markdown renders root and every available (not hidden, not deprecated) subcommand, in
// the order cobra lists them (sorted by name), as one Markdown document.
//
// It first settles the tree as cobra does before executing it (help flags, persistent
// flags merged into each command), so the output matches `--help` and does not depend
// on what was called on the tree before.
func Markdown(root *cobra.Command) []byte {
	walk(root, func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		c.LocalFlags() // merges the parents' persistent flags
	})
	var b bytes.Buffer
	b.WriteString(Header)
	b.WriteString("\n")
	walk(root, func(c *cobra.Command) {
		depth := strings.Count(c.CommandPath(), " ")
		fmt.Fprintf(&b, "%s- [%s](#%s) — %s\n", strings.Repeat("  ", depth), c.CommandPath(), anchor(c), c.Short)
	})
	walk(root, func(c *cobra.Command) { writeCommand(&b, c) })
	return b.Bytes()
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
			continue
		}
		walk(sub, fn)
	}
}

// anchor is the GitHub-style heading anchor of c's section.
func anchor(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

func writeCommand(b *bytes.Buffer, c *cobra.Command) {
	fmt.Fprintf(b, "\n## %s\n\n%s\n", c.CommandPath(), c.Short)
	if c.Long != "" {
		fmt.Fprintf(b, "\n%s\n", fence(c.Long))
	}
	fmt.Fprintf(b, "\n```\n%s\n```\n", c.UseLine())
	if c.HasExample() {
		fmt.Fprintf(b, "\n### Examples\n\n```sh\n%s\n```\n", strings.TrimRight(c.Example, "\n"))
	}
	if f := c.NonInheritedFlags(); f.HasAvailableFlags() {
		fmt.Fprintf(b, "\n### Flags\n\n```\n%s```\n", f.FlagUsages())
	}
	if f := c.InheritedFlags(); f.HasAvailableFlags() {
		fmt.Fprintf(b, "\n### Global flags\n\n```\n%s```\n", f.FlagUsages())
	}
	var subs []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			subs = append(subs, fmt.Sprintf("- [%s](#%s) — %s", sub.CommandPath(), anchor(sub), sub.Short))
		}
	}
	if len(subs) > 0 {
		fmt.Fprintf(b, "\n### Subcommands\n\n%s\n", strings.Join(subs, "\n"))
	}
}

// fence keeps a Long text's layout: paragraphs stay prose, and indented blocks (command
// lines, formats) become code blocks so Markdown does not reflow them.
func fence(long string) string {
	lines := strings.Split(strings.TrimRight(long, "\n"), "\n")
	var out []string
	inCode := false
	for i, l := range lines {
		indented := strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "\t")
		switch {
		case indented && !inCode:
			out = append(out, "```")
			inCode = true
		case !indented && inCode && l != "":
			out = append(out, "```")
			inCode = false
		case !indented && inCode && l == "" && !nextIndented(lines, i):
			out = append(out, "```")
			inCode = false
		}
		out = append(out, l)
	}
	if inCode {
		out = append(out, "```")
	}
	return strings.Join(out, "\n")
}

func nextIndented(lines []string, i int) bool {
	for _, l := range lines[i+1:] {
		if l == "" {
			continue
		}
		return strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "\t")
	}
	return false
}
