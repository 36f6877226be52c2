// Package cmdenv holds what every meshguard command shares: the global flags (log level
// and format), the logger they configure, and the error that carries an exit status
// through cobra. It imports nothing of meshguard, so both cli and cli/ctl can use it.
package cmdenv

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// Env is built once per command-line invocation and handed to every command constructor.
type Env struct {
	// Stdout and Stderr are where commands print; tests pass buffers.
	Stdout, Stderr io.Writer
	// Logger is valid after the root command's PersistentPreRunE has run.
	Logger *slog.Logger

	logLevel  string
	logFormat string
}

// New returns an Env writing to stdout and stderr with a default text logger.
func New(stdout, stderr io.Writer) *Env {
	return &Env{Stdout: stdout, Stderr: stderr, Logger: slog.New(slog.NewTextHandler(stderr, nil))}
}

// AddFlags registers the global flags on the root command.
func (e *Env) AddFlags(root *cobra.Command) {
	root.PersistentFlags().StringVar(&e.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&e.logFormat, "log-format", "text", "log format: text or json")
}

// Init builds the logger from the global flags.
func (e *Env) Init() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(e.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", e.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(e.logFormat) {
	case "text":
		e.Logger = slog.New(slog.NewTextHandler(e.Stderr, opts))
	case "json":
		e.Logger = slog.New(slog.NewJSONHandler(e.Stderr, opts))
	default:
		return fmt.Errorf("--log-format %q: want text or json", e.logFormat)
	}
	return nil
}

// ExitError asks cli.Run to exit with Code. When Err is nil nothing more is printed:
// the command has already written what the user needs to see.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Exit returns an *ExitError for code with an optional cause.
func Exit(code int, err error) error { return &ExitError{Code: code, Err: err} }
