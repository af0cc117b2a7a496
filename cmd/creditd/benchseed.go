package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/creditd/creditd/bench"
	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/node"
)

const benchSeedHelp = `
Builds, offline, the state a bench setup of --customers customers with
--grants grants each would make (the bench catalog, then the customers
b<RUN_ID>-c0 … and their promotional grants), and writes it as a snapshot
file that 'creditd snapshot restore' accepts. Through the API this setup is
one write per customer and per grant (a million customers with 3 grants
take hours); here the commands go straight to the state machine,
--commands-per-entry of them per log entry, as the log would carry them.

Then restore it into a data dir, start a node on it, join others (they
catch up from the snapshot), and run 'creditd bench --existing RUN_ID
--customers N' against it: the run reads each customer's starting balance
instead of creating it, and verifies as usual.

Example (the whole procedure: bench/seeded-run.sh):
  creditd bench seed --customers 1000000 --grants 3 --run-id m1 --out m1.snap
  creditd snapshot restore --data-dir a --node-id a --raft-addr 127.0.0.1:17221 m1.snap
  creditd serve --data-dir a --node-id a --rpc-addr 127.0.0.1:17220 --raft-addr 127.0.0.1:17221 --gossip-addr 127.0.0.1:17222
  creditd bench --addr http://127.0.0.1:17220 --existing m1 --customers 1000000 --batch 1000 --concurrency 16`

// maxSeedCommandsPerEntry is fsm's own bound on commands in one log entry.
const maxSeedCommandsPerEntry = 1 << 16

type seedConfig struct {
	out              string
	runID            string
	customers        int
	grants           int
	commandsPerEntry int
	progress         io.Writer // a line per tenth of the customers; nil = none
	now              time.Time // log time of every entry
}

func (c seedConfig) validate() error {
	switch {
	case c.out == "":
		return errors.New("bench seed: --out FILE is required")
	case !bench.ValidRunID(c.runID):
		return fmt.Errorf("bench seed: --run-id %q: want 1 to 16 of [a-z0-9] (customers are named b<RUN_ID>-c<i>)", c.runID)
	case c.customers < 1 || c.customers > bench.MaxCustomers:
		return fmt.Errorf("bench seed: --customers %d is outside 1..%d", c.customers, bench.MaxCustomers)
	case c.grants < 1 || c.grants > bench.MaxGrants:
		return fmt.Errorf("bench seed: --grants %d is outside 1..%d", c.grants, bench.MaxGrants)
	case c.commandsPerEntry < 1+c.grants || c.commandsPerEntry > maxSeedCommandsPerEntry:
		return fmt.Errorf("bench seed: --commands-per-entry %d is outside %d..%d (one customer and its grants go in one entry)",
			c.commandsPerEntry, 1+c.grants, maxSeedCommandsPerEntry)
	}
	return nil
}

func runBenchSeed(ctx context.Context, args []string) error {
	c := seedConfig{now: time.Now()}
	fs := newFlagSet("bench seed", "bench seed --out FILE --run-id ID [flags]", benchSeedHelp)
	fs.StringVar(&c.out, "out", "", "snapshot file to write (replaced if it exists)")
	fs.StringVar(&c.runID, "run-id", "", "names the customers b<RUN_ID>-c<i>; give it to creditd bench --existing")
	fs.IntVar(&c.customers, "customers", 1000, "customers to create")
	fs.IntVar(&c.grants, "grants", 1, "promotional grants per customer, as creditd bench --grants makes them")
	fs.IntVar(&c.commandsPerEntry, "commands-per-entry", 8192, "commands per log entry (one state transaction each)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench seed: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	c.progress = os.Stderr
	t0 := time.Now()
	st, err := seedSnapshot(ctx, c)
	if err != nil {
		return err
	}
	fmt.Printf("seeded %d customers × %d grants (%d commands in %d log entries) into %s: %d bytes, in %.1fs; load average %s\n",
		c.customers, c.grants, st.commands, st.entries, c.out, st.bytes, time.Since(t0).Seconds(), loadavg())
	return nil
}

type seedStats struct {
	commands, entries int
	bytes             int64
}

// seedSnapshot builds the state in a temporary state file beside c.out and
// writes its snapshot to c.out (through a temporary file, renamed once
// synced, so a failed or interrupted seed leaves no half snapshot).
func seedSnapshot(ctx context.Context, c seedConfig) (st seedStats, err error) {
	if err := c.validate(); err != nil {
		return st, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(c.out), ".seed-*")
	if err != nil {
		return st, fmt.Errorf("bench seed: temporary state dir: %w", err)
	}
	defer os.RemoveAll(dir)
	// No fsync per entry: the file is thrown away if the seed fails, and
	// synced once before the snapshot is taken.
	f, err := fsm.Open(filepath.Join(dir, "fsm.db"), fsm.Options{NoSync: true})
	if err != nil {
		return st, fmt.Errorf("bench seed: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bench seed: close the state: %w", cerr))
		}
	}()
	if err := seedState(ctx, f, c, &st); err != nil {
		return st, err
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("bench seed: sync the state: %w", err)
	}
	st.bytes, err = writeFileAtomic(c.out, func(w io.Writer) (int64, error) { return node.WriteStateSnapshot(w, f) })
	if err != nil {
		return st, fmt.Errorf("bench seed: %w", err)
	}
	return st, nil
}

// seedState applies the bench catalog, then the customers with their
// grants, in entries of at most c.commandsPerEntry commands. Every command
// must succeed: a refusal means the state would not be what a bench setup
// makes.
func seedState(ctx context.Context, f *fsm.FSM, c seedConfig, st *seedStats) error {
	rate, err := fsm.ParseDecimal(bench.FeatureRate, fsm.MaxDecimalScale)
	if err != nil {
		return fmt.Errorf("bench seed: feature rate %q: %w", bench.FeatureRate, err)
	}
	price, err := fsm.ParseDecimal(bench.PlanPricePerCredit, fsm.MaxDecimalScale)
	if err != nil {
		return fmt.Errorf("bench seed: plan price %q: %w", bench.PlanPricePerCredit, err)
	}
	ts := fsm.TimestampOf(c.now)
	var (
		cmds  []fsm.Command
		index uint64
	)
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("bench seed: interrupted: %w", err)
		}
		enc := make([][]byte, len(cmds))
		for i, cmd := range cmds {
			if enc[i], err = fsm.EncodeCommand(cmd); err != nil {
				return fmt.Errorf("bench seed: encode %T: %w", cmd, err)
			}
		}
		index++
		rs, err := f.Apply([]fsm.Entry{{Index: index, Data: fsm.EncodeEntry(ts, enc)}})
		if err != nil {
			return fmt.Errorf("bench seed: apply entry %d: %w", index, err)
		}
		for i, r := range rs[0] {
			if r.Err != nil {
				return fmt.Errorf("bench seed: %T %+v: %w", cmds[i], cmds[i], r.Err)
			}
		}
		st.commands += len(cmds)
		st.entries++
		cmds = cmds[:0]
		return nil
	}

	cmds = append(cmds,
		fsm.CreateCreditType{ID: bench.CreditTypeID, Name: bench.CreditTypeName, Scale: bench.CreditScale},
		fsm.UpsertFeature{ID: bench.FeatureID, Name: bench.FeatureName, CreditTypeID: bench.CreditTypeID, Rate: rate},
		fsm.UpsertPlan{Plan: fsm.Plan{ID: bench.PlanID, Name: bench.PlanName, CreditTypeID: bench.CreditTypeID,
			Currency: bench.PlanCurrency, PricePerCredit: price, Overdraft: fsm.OverdraftDeny}})
	if err := flush(); err != nil {
		return err
	}
	amount := bench.GrantUnits(c.grants)
	tenth := max(c.customers/10, 1)
	for i := 0; i < c.customers; i++ {
		if len(cmds)+1+c.grants > c.commandsPerEntry {
			if err := flush(); err != nil {
				return err
			}
		}
		id := bench.CustomerID(c.runID, i)
		cmds = append(cmds, fsm.UpsertCustomer{ID: id, Name: id, PlanID: bench.PlanID})
		for g := 0; g < c.grants; g++ {
			cmds = append(cmds, fsm.CreateGrant{ID: bench.GrantID(id, g), CustomerID: id, CreditTypeID: bench.CreditTypeID,
				Category: fsm.Promotional, Amount: amount, Priority: bench.GrantPriority(g)})
		}
		if c.progress != nil && (i+1)%tenth == 0 {
			fmt.Fprintf(c.progress, "seed: %d of %d customers\n", i+1, c.customers)
		}
	}
	return flush()
}

// writeFileAtomic writes path through a temporary file of its own beside
// it (PATH.*.tmp: two writers to one path never share one), synced and
// renamed, then syncs the directory so the rename outlives a crash. A
// reader never sees a partial file; a failed write leaves path as it was
// and removes its temporary file.
func writeFileAtomic(path string, write func(io.Writer) (int64, error)) (n int64, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	out, err := os.CreateTemp(dir, base+".*.tmp")
	if err != nil {
		return 0, fmt.Errorf("create a temporary file for %s: %w", path, err)
	}
	tmp := out.Name()
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp)
		}
	}()
	n, err = write(out)
	if err != nil {
		out.Close()
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return n, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := out.Close(); err != nil {
		return n, fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return n, fmt.Errorf("rename %s: %w", tmp, err)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return n, fmt.Errorf("sync directory %s after renaming %s: %w", dir, base, err)
	}
	return n, nil
}

// syncDir makes the entries of dir (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
