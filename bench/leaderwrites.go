package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// LeaderWrites is how the leader's writes went while the load was measured,
// from its /metrics at the start and the end: where a write's time went
// before the client had its answer.
type LeaderWrites struct {
	// Entries the leader appended and Commands in them (group commit puts
	// CommandsPerEntry callers' commands in one log entry).
	Entries          uint64  `json:"entries"`
	CommandsPerEntry float64 `json:"commands_per_entry"`
	// CommitMs is the mean time from append to a quorum's commit, ApplyMs
	// from commit to the entry's results, per applied entry.
	CommitMs float64 `json:"commit_ms"`
	ApplyMs  float64 `json:"apply_ms"`
}

// writeCounters are the leader's write totals (rpc's creditd_write_*).
type writeCounters struct {
	entries, commands, applied float64
	commitSec, applySec        float64
}

// metricsTimeout bounds each read of /metrics.
const metricsTimeout = 5 * time.Second

// maxMetricsBytes bounds what is read of a /metrics answer.
const maxMetricsBytes = 1 << 20

// readWriteCounters reads the leader's write totals from its /metrics.
func readWriteCounters(ctx context.Context, hc *http.Client, baseURL string) (writeCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/metrics", nil)
	if err != nil {
		return writeCounters{}, fmt.Errorf("read %s/metrics: %w", baseURL, err)
	}
	res, err := hc.Do(req)
	if err != nil {
		return writeCounters{}, fmt.Errorf("read %s/metrics: %w", baseURL, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return writeCounters{}, fmt.Errorf("read %s/metrics: %s", baseURL, res.Status)
	}
	return parseWriteCounters(io.LimitReader(res.Body, maxMetricsBytes))
}

// parseWriteCounters takes the creditd_write_* samples of Prometheus text.
func parseWriteCounters(r io.Reader) (writeCounters, error) {
	var c writeCounters
	fields := map[string]*float64{
		"creditd_write_entries_total":         &c.entries,
		"creditd_write_commands_total":        &c.commands,
		"creditd_write_applied_entries_total": &c.applied,
		"creditd_write_commit_seconds_sum":    &c.commitSec,
		"creditd_write_apply_seconds_sum":     &c.applySec,
	}
	seen := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		dst, wanted := fields[name]
		if !ok || !wanted {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return writeCounters{}, fmt.Errorf("metrics: %s: %w", name, err)
		}
		*dst = v
		seen++
	}
	if err := sc.Err(); err != nil {
		return writeCounters{}, fmt.Errorf("metrics: %w", err)
	}
	if seen != len(fields) {
		return writeCounters{}, fmt.Errorf("metrics: %d of the %d creditd_write_* samples (an older creditd?)", seen, len(fields))
	}
	return c, nil
}

// leaderWrites is what happened between two reads of one leader's totals;
// nil when none of its entries applied, or when the totals went back (the
// node restarted).
func leaderWrites(start, end writeCounters) *LeaderWrites {
	entries, commands, applied := end.entries-start.entries, end.commands-start.commands, end.applied-start.applied
	if entries <= 0 || applied <= 0 || commands < 0 || end.commitSec < start.commitSec || end.applySec < start.applySec {
		return nil
	}
	return &LeaderWrites{
		Entries:          uint64(entries),
		CommandsPerEntry: commands / entries,
		CommitMs:         (end.commitSec - start.commitSec) * 1000 / applied,
		ApplyMs:          (end.applySec - start.applySec) * 1000 / applied,
	}
}
