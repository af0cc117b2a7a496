package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

const exportHelp = `
Exports the ledger and the grants to Parquet files for finance, in a
directory or a blob bucket URL (file:///path, file://./relative/path,
s3://bucket?region=…, gs://bucket; credentials from each cloud's usual
environment):

  manifest.json                                         the commit record and watermark
  ledger/date=YYYY-MM-DD/part-<first>-<last>.parquet    ledger entries by UTC date
  grants/snapshot=<seq>/grants.parquet                  every grant at the cut of entry <seq>
  _lists/ledger/date=YYYY-MM-DD-<hash>.json             a closed day's parts (named in the manifest)
  _lists/grants/date=YYYY-MM-DD-<hash>.json             a closed day's snapshots, when all are kept

ledger/ and grants/ hold only Parquet, so warehouses can load them as
folders; a list is named for its content (<hash>: the start of its SHA-256).

Each run writes only what follows the manifest's watermark, then commits the
manifest: running it twice exports nothing twice, and a run cut short (crash,
kill, network) is completed by the next one.

The state is read from a running node's applied state (--addr: the node
streams a snapshot of it), a snapshot file (--snapshot FILE, saved by
"creditd snapshot save"), or a stopped node's data dir (--data-dir). The
cluster's leader can also export on a schedule: serve --export-to URL
--export-every DURATION.

Examples:
  creditd export --addr 10.0.0.1:7420 --api-key "$ADMIN_KEY" --to s3://finance/creditd?region=eu-west-1
  creditd export --data-dir /var/lib/creditd --to /srv/exports/creditd
  creditd export --snapshot now.snap --to file:///srv/exports/creditd`

func runExport(ctx context.Context, args []string) error {
	fs := newFlagSet("export", "export --to URL [--addr HOST:PORT | --snapshot FILE | --data-dir DIR] [flags]", exportHelp)
	var src stateSource
	src.addFlags(fs)
	var (
		to, tempDir, progress                 string
		rowGroupRows, fileRows, keepSnapshots int
		timeout                               time.Duration
	)
	fs.StringVar(&to, "to", "", "destination: a directory or a blob URL (required)")
	fs.StringVar(&tempDir, "temp-dir", "", "where parts are written before they are stored (default: the system's)")
	fs.StringVar(&progress, "progress", "auto", "progress line on stderr: auto (on a terminal), always or never")
	fs.IntVar(&rowGroupRows, "row-group-rows", export.DefaultRowGroupRows, "rows per Parquet row group")
	fs.IntVar(&fileRows, "file-rows", export.DefaultFileRows, "most rows in one ledger part")
	fs.IntVar(&keepSnapshots, "keep-grant-snapshots", 0, fmt.Sprintf("keep only the newest N grants snapshots (0: all; N at most %d)", export.MaxKeepGrantSnapshots))
	fs.DurationVar(&timeout, "timeout", 6*time.Hour, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("export: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	if to == "" {
		return fmt.Errorf("export: --to is required: %w", errUsage)
	}
	if err := checkKeepSnapshots("--keep-grant-snapshots", keepSnapshots); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// Here, not only in export.New: that runs once the state is fetched,
	// which for a large cluster is minutes after the typo.
	for _, f := range []struct {
		name    string
		v, most int
	}{{"--row-group-rows", rowGroupRows, export.MaxRowGroupRows}, {"--file-rows", fileRows, export.MaxFileRows}} {
		if f.v < export.MinRows || f.v > f.most {
			return fmt.Errorf("export: %s %d: want %d to %d: %w", f.name, f.v, export.MinRows, f.most, errUsage)
		}
	}
	prog, err := progressOut(progress)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The destination first: a wrong --to must not wait for a snapshot of
	// a large cluster to be fetched. A directory this creates for a run
	// that then fails (an unreachable node, a refusal) is removed again:
	// left empty, it would look like an export.
	dst, discard, err := export.OpenDestinationForRun(ctx, to)
	if err != nil {
		return err
	}
	defer dst.Close()
	res, err := func() (export.Result, error) {
		f, cleanup, err := src.open(ctx, tempDir)
		if err != nil {
			return export.Result{}, fmt.Errorf("export: %w", err)
		}
		defer cleanup()
		e, err := export.New(export.FromFSM(f), dst, export.Options{
			RowGroupRows: rowGroupRows, FileRows: fileRows, TempDir: tempDir, Progress: prog, KeepGrantSnapshots: keepSnapshots,
		})
		if err != nil {
			return export.Result{}, err
		}
		return e.Run(ctx)
	}()
	if err != nil {
		// Also after a timeout or an interrupt, which ended ctx.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer dcancel()
		if derr := discard(dctx); derr != nil {
			return fmt.Errorf("%w (and: %v)", err, derr)
		}
		return err
	}
	if res.Entries == 0 {
		fmt.Printf("nothing new: %s already holds the ledger up to entry %d\n", to, res.ToSeq)
		return nil
	}
	fmt.Println(exportSummary(res, to))
	return nil
}

// exportSummary is the line a run that exported something prints.
func exportSummary(res export.Result, to string) string {
	var size int64
	for _, p := range res.Parts {
		size += p.Bytes
	}
	var grants int64
	if res.Grants != nil {
		grants = res.Grants.Rows
	}
	return fmt.Sprintf("exported ledger entries %d..%d (%s, %s, %s) and %s to %s in %s",
		res.FromSeq, res.ToSeq, count(res.Entries, "entry", "entries"), count(int64(len(res.Parts)), "part", "parts"),
		count(size, "byte", "bytes"), count(grants, "grant", "grants"), to, res.Elapsed.Round(time.Millisecond))
}

// count says "1 part", "2 parts".
func count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// progressOut resolves --progress: a progress line belongs on a terminal.
func progressOut(mode string) (io.Writer, error) {
	switch mode {
	case "auto":
		if export.IsTerminal(os.Stderr) {
			return os.Stderr, nil
		}
		return nil, nil
	case "always":
		return os.Stderr, nil
	case "never":
		return nil, nil
	}
	return nil, fmt.Errorf("--progress %q: want auto, always or never: %w", mode, errUsage)
}

// stateSource is where export and report read the state from.
type stateSource struct {
	addr, apiKey, caCert, snapshot, dataDir string
}

func (s *stateSource) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.addr, "addr", "", "read a running node's applied state through its API (http://host:port or host:port; https://host:port when it serves TLS)")
	fs.StringVar(&s.apiKey, "api-key", "", "API key (admin scope) for --addr")
	fs.StringVar(&s.caCert, "ca-cert", "", "PEM `FILE` of the CA certificate(s) to trust for an https:// --addr, instead of the system's roots")
	fs.StringVar(&s.snapshot, "snapshot", "", "read the state from this snapshot file")
	fs.StringVar(&s.dataDir, "data-dir", "creditd-data", "read the state of a stopped node's data dir (when neither --addr nor --snapshot)")
}

// open returns the state to read and a func that releases it.
func (s *stateSource) open(ctx context.Context, tempDir string) (*fsm.FSM, func(), error) {
	if s.addr != "" && s.snapshot != "" {
		return nil, nil, fmt.Errorf("give --addr or --snapshot, not both: %w", errUsage)
	}
	if s.addr == "" && s.caCert != "" {
		return nil, nil, fmt.Errorf("--ca-cert goes with an https:// --addr: %w", errUsage)
	}
	if s.addr == "" {
		return openStateForReading(s.dataDir, s.snapshot, tempDir)
	}
	path, err := fetchSnapshot(ctx, clientFlags{addr: s.addr, apiKey: s.apiKey, caCert: s.caCert, timeout: time.Minute}, tempDir)
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(path)
	return openStateForReading("", path, tempDir)
}

// fetchSnapshot streams the node's snapshot into a temporary file.
func fetchSnapshot(ctx context.Context, cf clientFlags, tempDir string) (string, error) {
	addr := cf.addr
	c, err := cf.cluster(addr)
	if err != nil {
		return "", err
	}
	out, err := os.CreateTemp(tempDir, "creditd-export-*.snap")
	if err != nil {
		return "", err
	}
	stream, err := c.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
	if err == nil {
		for stream.Receive() {
			if _, err = out.Write(stream.Msg().Chunk); err != nil {
				break
			}
		}
		if err == nil {
			err = stream.Err()
		}
		stream.Close()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		return "", fmt.Errorf("snapshot of %s: %w", addr, err)
	}
	return out.Name(), nil
}

// openStateForReading opens a stopped node's state, or restores a snapshot
// into a temporary data dir and opens that. The state file stays locked
// while open, so a running node's data dir is refused within seconds.
func openStateForReading(dataDir, snapshot, tempDir string) (*fsm.FSM, func(), error) {
	if snapshot == "" {
		path := filepath.Join(dataDir, "fsm.db")
		if _, err := os.Stat(path); err != nil {
			return nil, nil, fmt.Errorf("no state in --data-dir %s: %w", dataDir, err)
		}
		if err := node.CheckStateFile(dataDir); err != nil {
			return nil, nil, err
		}
		f, err := fsm.Open(path, fsm.Options{})
		if err != nil {
			return nil, nil, fmt.Errorf("open %s (is a node running on it? export a snapshot instead): %w", path, err)
		}
		return f, func() { f.Close() }, nil
	}
	in, err := os.Open(snapshot)
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	dir, err := os.MkdirTemp(tempDir, "creditd-export-state-*")
	if err != nil {
		return nil, nil, err
	}
	cfg := node.Config{NodeID: "export", DataDir: dir, RaftAddr: "127.0.0.1:1", GossipAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := node.RestoreDataDir(cfg, in); err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("read snapshot %s: %w", snapshot, err)
	}
	f, err := fsm.Open(filepath.Join(dir, "fsm.db"), fsm.Options{NoSync: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return f, func() { f.Close(); os.RemoveAll(dir) }, nil
}

// exportSchedule is serve's --export-to and --export-every: the leader
// exports on a schedule.
type exportSchedule struct {
	to    string
	every time.Duration
	keep  int
}

func (s *exportSchedule) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.to, "export-to", "", "export the ledger and grants to this directory or blob URL while this node leads (see creditd export --help)")
	fs.DurationVar(&s.every, "export-every", time.Hour, "how often the leader exports, with --export-to")
	fs.IntVar(&s.keep, "export-keep-grant-snapshots", 0,
		fmt.Sprintf("with --export-to, keep only the newest N grants snapshots (0: all; N at most %d)", export.MaxKeepGrantSnapshots))
}

// checkKeepSnapshots refuses a retention the export does not take, naming
// the flag: the snapshots it keeps are listed in the manifest itself.
func checkKeepSnapshots(flagName string, keep int) error {
	if keep < 0 || keep > export.MaxKeepGrantSnapshots {
		return fmt.Errorf("%s %d: want 0 (keep every snapshot) to %d: %w", flagName, keep, export.MaxKeepGrantSnapshots, errUsage)
	}
	return nil
}

// start opens the destination and registers the export loop with the node;
// it runs while this node leads. The returned func closes the destination
// after the node has shut down.
// check refuses the schedule's flags; serve calls it before the node
// starts, so that a wrong value leaves no data dir behind.
func (s *exportSchedule) check() error {
	if s.to == "" {
		return nil
	}
	if s.every < time.Minute || s.every > 7*24*time.Hour {
		return fmt.Errorf("--export-every %s: want 1m to 168h", s.every)
	}
	return checkKeepSnapshots("--export-keep-grant-snapshots", s.keep)
}

func (s *exportSchedule) start(ctx context.Context, n *node.Node, logger *slog.Logger) (func(), error) {
	if s.to == "" {
		return func() {}, nil
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	dst, err := export.OpenDestination(ctx, s.to)
	if err != nil {
		return nil, err
	}
	e, err := export.New(export.FromFSM(n.FSM()), dst, export.Options{
		Barrier:            n.LinearizableRead,
		KeepGrantSnapshots: s.keep,
		Logger:             logger.With("component", "export", "to", s.to),
	})
	if err != nil {
		return nil, errors.Join(err, dst.Close())
	}
	n.RunOnLeader("export", e.Every(s.every))
	return func() { dst.Close() }, nil
}
