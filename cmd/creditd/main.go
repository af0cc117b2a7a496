// Command creditd runs a creditd node (serve) and talks to a running
// cluster (status, members, leader, snapshot, …).
//
// Each subcommand lives in its own file and is registered in commands
// below with one line; it gets the process's context (cancelled on SIGINT
// or SIGTERM) and its arguments after the subcommand's name.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

// commands is the table of subcommands: add yours here.
var commands = map[string]command{
	"serve":    {"run a node (a single-node cluster with no flags)", runServe},
	"status":   {"show the cluster as a node sees it", runStatus},
	"members":  {"manage cluster members: members remove ID", runMembers},
	"leader":   {"manage leadership: leader transfer [ID]", runLeader},
	"snapshot": {"save a snapshot, or restore one into a new data dir", runSnapshot},
	"export":   {"export the ledger and grants to Parquet (incremental, exactly once)", runExport},
	"report":   {"reconcile a period: balances, grants, burns, revenue; fails if it does not tie out", runReport},
	"bench":    {"drive a cluster with load and verify it: latency percentiles, events/s, the no-op ceiling", runBench},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		if err != errUsage { // the bare one comes after the usage text
			// errUsage marks the exit status; its text says nothing.
			fmt.Fprintln(os.Stderr, "creditd:", strings.TrimSuffix(err.Error(), ": "+errUsage.Error()))
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "creditd:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		usage(stderr)
		return flag.ErrHelp
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "creditd: unknown command %q\n\n", name)
		usage(stderr)
		return errUsage
	}
	return cmd.run(ctx, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `creditd is a Raft-replicated credit ledger.

Usage:
  creditd <command> [flags]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Every flag can also be set with an environment variable CREDITD_<NAME>
(upper case, dashes as underscores): --data-dir is CREDITD_DATA_DIR. A flag
on the command line wins over the environment.

Examples:
  creditd serve                                    # one node, data in ./creditd-data, API on 127.0.0.1:7420
  creditd serve --data-dir d2 --rpc-addr 127.0.0.1:7430 --raft-addr 127.0.0.1:7431 \
                --gossip-addr 127.0.0.1:7432 --join 127.0.0.1:7422
  creditd status --addr http://127.0.0.1:7420
  creditd <command> --help                         # the command's flags
`)
}

// newFlagSet makes a subcommand's flag set with a usage text of summary
// and examples followed by the flags.
func newFlagSet(name, synopsis, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: creditd %s\n\n%s\n\nFlags (each also CREDITD_<NAME>):\n", synopsis, strings.TrimSpace(help))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, flags before or after the positional arguments
// ("snapshot restore FILE --data-dir d" as well as "--data-dir d FILE";
// "--" ends the flags), then fills every flag not given on the command line
// from its CREDITD_<NAME> environment variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var positional []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return usageError(err)
		}
		rest := fs.Args()
		// Parse stops at the first non-flag argument, or just after "--".
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Leave the positional arguments where fs.Args finds them.
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return usageError(err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return usageError(errors.Join(errs...))
}

// usageError marks err, a command line (or a CREDITD_ variable) that does not
// parse, for the usage exit status (2), as an unknown command and a missing
// required flag are: a script can tell a mistyped call from a failed one.
func usageError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errUsage)
}

func envName(flagName string) string {
	return "CREDITD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listFlag is a comma-separated list flag (repeatable).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
