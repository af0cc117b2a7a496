package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFlagsComeFromTheEnvironmentUnlessGivenOnTheCommandLine(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		dataDir string
		join    string
		wait    time.Duration
		wantErr string
	}{
		{name: "defaults", dataDir: "creditd-data", wait: 5 * time.Second},
		{name: "environment sets a flag", env: map[string]string{"CREDITD_DATA_DIR": "/env", "CREDITD_JOIN": "a:1,b:2"}, dataDir: "/env", join: "a:1,b:2", wait: 5 * time.Second},
		{name: "command line wins", env: map[string]string{"CREDITD_DATA_DIR": "/env"}, args: []string{"--data-dir", "/cli"}, dataDir: "/cli", wait: 5 * time.Second},
		{name: "a bad environment value names the variable", env: map[string]string{"CREDITD_LEADER_WAIT": "soon"}, wantErr: "CREDITD_LEADER_WAIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var f serveFlags
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			addNodeFlags(fs, &f)
			fs.Var(&f.join, "join", "")
			fs.DurationVar(&f.leaderWait, "leader-wait", 5*time.Second, "")
			err := parseFlags(fs, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.dataDir != tt.dataDir || f.join.String() != tt.join || f.leaderWait != tt.wait {
				t.Errorf("got data-dir %q join %q leader-wait %s", f.dataDir, f.join.String(), f.leaderWait)
			}
		})
	}
}

func TestFlagsMayFollowPositionalArguments(t *testing.T) {
	tests := []struct {
		args    []string
		dataDir string
		rest    []string
	}{
		{[]string{"--data-dir", "d", "backup.snap"}, "d", []string{"backup.snap"}},
		{[]string{"backup.snap", "--data-dir", "d"}, "d", []string{"backup.snap"}},
		{[]string{"a", "--data-dir=d", "b"}, "d", []string{"a", "b"}},
		{[]string{"--data-dir", "d", "--", "--not-a-flag", "x"}, "d", []string{"--not-a-flag", "x"}},
		{nil, "creditd-data", nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var f serveFlags
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			addNodeFlags(fs, &f)
			if err := parseFlags(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			if f.dataDir != tt.dataDir || strings.Join(fs.Args(), "|") != strings.Join(tt.rest, "|") {
				t.Errorf("data-dir %q, args %q; want %q, %q", f.dataDir, fs.Args(), tt.dataDir, tt.rest)
			}
		})
	}
}

func TestUnknownCommandsAndHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"frobnicate"}, &out); !errors.Is(err, errUsage) || !strings.Contains(out.String(), "unknown command") {
		t.Errorf("unknown command: %v, %q", err, out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "serve") {
		t.Errorf("help: %v, %q", err, out.String())
	}
}

// A command line that does not parse exits with the usage status (2), as an
// unknown command does, whichever command and whatever the mistake; --help
// is not a mistake.
func TestACommandLineThatDoesNotParseIsAUsageError(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{name: "an unknown flag", args: []string{"status", "--adr", "127.0.0.1:1"}},
		{name: "an unknown flag after a positional argument", args: []string{"members", "remove", "node-1", "--adr", "127.0.0.1:1"}},
		{name: "a flag without its value", args: []string{"export", "--addr", "127.0.0.1:1", "--to"}},
		{name: "a value that does not parse", args: []string{"status", "--timeout", "soon"}},
		{name: "a misspelt flag of report", args: []string{"report", "--form", "2026-11-01", "--to", "2026-11-30"}},
		{name: "a variable that does not parse", env: map[string]string{"CREDITD_TIMEOUT": "soon"}, args: []string{"status"}},
		{name: "an argument status does not take", args: []string{"status", "extra"}},
		{name: "an argument serve does not take", args: []string{"serve", "--data-dir", t.TempDir(), "extra"}},
		{name: "an argument bench does not take", args: []string{"bench", "extra"}},
		{name: "an argument bench seed does not take", args: []string{"bench", "seed", "extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := run(t.Context(), tt.args, io.Discard)
			if !errors.Is(err, errUsage) {
				t.Errorf("creditd %s: %v; want a usage error (exit status 2)", strings.Join(tt.args, " "), err)
			}
		})
	}
	if err := run(t.Context(), []string{"status", "--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		t.Errorf("creditd status --help: %v; want help (exit status 0), not a usage error", err)
	}
}

func TestBaseURLAcceptsHostPortOrURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "127.0.0.1:7420", want: "http://127.0.0.1:7420"},
		{in: "http://127.0.0.1:7420/", want: "http://127.0.0.1:7420"},
		{in: "ftp://x:1", err: "--addr"},
	}
	for _, tt := range tests {
		got, err := baseURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: got %q, %v; want an error", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestServeRefusesANegativeReadyMaxLagAndMapsZeroToNone(t *testing.T) {
	err := runServe(t.Context(), []string{"--ready-max-lag", "-1", "--data-dir", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--ready-max-lag") {
		t.Fatalf("got %v, want an error naming --ready-max-lag", err)
	}
	if got := readyMaxLag(0); got >= 0 {
		t.Errorf("--ready-max-lag 0 gives node ReadyMaxLag %d, want negative (none; 0 would be the default)", got)
	}
	if got := readyMaxLag(100); got != 100 {
		t.Errorf("--ready-max-lag 100 gives node ReadyMaxLag %d", got)
	}
}

// "creditd snapshot --help" once printed an empty flag list: the flags
// belong to save and restore, which take different ones.
func TestSnapshotHelpListsTheFlagsOfSaveAndRestore(t *testing.T) {
	var out bytes.Buffer
	writeSnapshotUsage(&out)
	text := out.String()
	save, restore, ok := strings.Cut(text, "Flags of snapshot restore")
	if !ok || !strings.Contains(save, "Flags of snapshot save") {
		t.Fatalf("want a flag list for each subcommand:\n%s", text)
	}
	for _, f := range []string{"-addr", "-api-key", "-timeout"} {
		if !strings.Contains(save, f+" ") {
			t.Errorf("snapshot save's flags lack %s:\n%s", f, save)
		}
	}
	for _, f := range []string{"-data-dir", "-node-id", "-raft-addr"} {
		if !strings.Contains(restore, f+" ") {
			t.Errorf("snapshot restore's flags lack %s:\n%s", f, restore)
		}
	}
}

// --bootstrap-expect's default depends on --join: its help once showed the
// sentinel "(default -1)", and -1 given by hand passed for "unset".
func TestBootstrapExpectDefaultsByJoinAndRefusesNegatives(t *testing.T) {
	parse := func(args ...string) (serveFlags, error) {
		var f serveFlags
		fs := newServeFlagSet(&f)
		fs.SetOutput(io.Discard)
		return f, parseFlags(fs, args)
	}
	if f, err := parse(); err != nil || f.bootstrapExpect.set {
		t.Errorf("no flag: %+v, %v; want unset", f.bootstrapExpect, err)
	}
	if f, err := parse("--bootstrap-expect", "3"); err != nil || !f.bootstrapExpect.set || f.bootstrapExpect.n != 3 {
		t.Errorf("3: %+v, %v", f.bootstrapExpect, err)
	}
	if f, err := parse("--bootstrap-expect", "0"); err != nil || !f.bootstrapExpect.set || f.bootstrapExpect.n != 0 {
		t.Errorf("0: %+v, %v", f.bootstrapExpect, err)
	}
	for _, bad := range []string{"-1", "two"} {
		if _, err := parse("--bootstrap-expect", bad); err == nil || !strings.Contains(err.Error(), "bootstrap-expect") {
			t.Errorf("%s: %v; want an error naming the flag", bad, err)
		}
	}
	var f serveFlags
	fs := newServeFlagSet(&f)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "(default -1)") || !strings.Contains(help.String(), "-bootstrap-expect N") {
		t.Errorf("help:\n%s", help.String())
	}
}
