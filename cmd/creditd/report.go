package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/creditd/creditd/export"
)

const reportHelp = `
Reconciles the ledger over a period, per credit type and currency: opening
and closing balance and deferred revenue; credits granted (paid and
promotional apart); burned and the revenue recognized; expired and the
breakage; revoked and refunded; adjusted. Dates are UTC days and both ends
are included: --from 2026-11-01 --to 2026-11-30 is the month of November.

Every entry is checked as it is read (each pool's balance chain, each
grant's deferred revenue = remaining × cost basis rounded half-even), and
on every row both identities must hold:

  opening + granted − burned − expired − revoked ± adjusted ± repaid = closing   (credits)
  opening + granted − recognized − breakage − refunded ± adjusted = closing     (money)

If anything does not tie out the command prints what and exits with status 1
without a report.

The ledger is read from an export (--export URL: its committed Parquet
files; a location without a manifest.json holds no export and is refused), a
running node (--addr), a snapshot file (--snapshot), or a stopped node's data
dir (--data-dir).

Examples:
  creditd report --from 2026-11-01 --to 2026-11-30 --export /srv/exports/creditd
  creditd report --from 2026-11-01 --to 2026-11-30 --data-dir /var/lib/creditd --format csv > nov.csv
  creditd report --from 2026-11-01 --to 2026-11-30 --snapshot now.snap --format parquet --out nov.parquet`

func runReport(ctx context.Context, args []string) error {
	fs := newFlagSet("report", "report --from DATE --to DATE [--format table|csv|parquet] [flags]", reportHelp)
	var (
		fromS, toS, format, out, exportURL, tempDir, progress string
		timeout                                               time.Duration
	)
	fs.StringVar(&fromS, "from", "", "first day of the period, YYYY-MM-DD (UTC; required)")
	fs.StringVar(&toS, "to", "", "last day of the period, YYYY-MM-DD (UTC, included; required)")
	fs.StringVar(&format, "format", "table", "table, csv or parquet")
	fs.StringVar(&out, "out", "", "write the report to this file (default: standard output; required for parquet on a terminal)")
	var src stateSource
	src.addFlags(fs)
	fs.StringVar(&exportURL, "export", "", "read the ledger from this export (directory or blob URL) instead")
	fs.StringVar(&tempDir, "temp-dir", "", "scratch space for a snapshot or downloaded parts (default: the system's)")
	fs.StringVar(&progress, "progress", "auto", "progress line on stderr: auto (on a terminal), always or never")
	fs.DurationVar(&timeout, "timeout", 6*time.Hour, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("report: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	from, err := parseDay("from", fromS)
	if err != nil {
		return err
	}
	last, err := parseDay("to", toS)
	if err != nil {
		return err
	}
	to := last.AddDate(0, 0, 1)
	if !from.Before(to) {
		return fmt.Errorf("report: --from %s is after --to %s: %w", fromS, toS, errUsage)
	}
	if to.Sub(from) > 100*366*24*time.Hour {
		return fmt.Errorf("report: a period of more than 100 years: %w", errUsage)
	}
	var write func(rep *export.Report, w io.Writer) error
	switch format {
	case "table":
		write = (*export.Report).WriteTable
	case "csv":
		write = (*export.Report).WriteCSV
	case "parquet":
		write = (*export.Report).WriteParquet
		if out == "" && export.IsTerminal(os.Stdout) {
			return fmt.Errorf("report: --format parquet needs --out FILE (or a redirected stdout): %w", errUsage)
		}
	default:
		return fmt.Errorf("report: --format %q: want table, csv or parquet: %w", format, errUsage)
	}
	if _, err := progressOut(progress); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var rep *export.Report
	if exportURL != "" {
		// Read-only: a mistyped --export is refused, not created and read
		// as an empty ledger.
		b, err := export.OpenExport(ctx, exportURL)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer b.Close()
		prog, _ := progressOut(progress)
		rep, err = export.ReportFromExport(ctx, b, tempDir, from, to, export.NewProgress(prog, "report"))
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
	} else {
		f, cleanup, err := src.open(ctx, tempDir)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer cleanup()
		prog, _ := progressOut(progress)
		rep, err = export.ReportFromSource(ctx, export.FromFSM(f), from, to, export.NewProgress(prog, "report"))
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}

	if rep.AsOf.Before(to) {
		fmt.Fprintf(os.Stderr, "creditd report: note: the ledger read runs to %s, before the period ends; later entries may still fall into it\n",
			rep.AsOf.Format(time.RFC3339))
	}
	w := io.Writer(os.Stdout)
	var file *os.File
	if out != "" {
		// Written next to its final name and renamed, so a failed report
		// never leaves a half file under that name.
		if file, err = os.CreateTemp(dirOf(out), ".creditd-report-*"); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer os.Remove(file.Name())
		defer file.Close()
		w = file
	}
	if err := write(rep, w); err != nil {
		return fmt.Errorf("report: write: %w", err)
	}
	if file != nil {
		if err := file.Chmod(0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if err := file.Close(); err != nil {
			return fmt.Errorf("report: write %s: %w", out, err)
		}
		if err := os.Rename(file.Name(), out); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}

func parseDay(flagName, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("report: --%s is required: %w", flagName, errUsage)
	}
	t, err := time.ParseInLocation(time.DateOnly, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("report: --%s %q: want YYYY-MM-DD: %w", flagName, s, errUsage)
	}
	return t, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if os.IsPathSeparator(path[i]) {
			return path[:i+1]
		}
	}
	return "."
}
