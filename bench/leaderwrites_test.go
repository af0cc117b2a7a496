package bench

import (
	"strings"
	"testing"
)

func TestParseWriteCounters(t *testing.T) {
	full := `# HELP creditd_rpc_forwarded_total x
creditd_rpc_forwarded_total 3
# HELP creditd_write_entries_total log entries this node appended as leader
# TYPE creditd_write_entries_total counter
creditd_write_entries_total 120
creditd_write_commands_total 480
creditd_write_applied_entries_total 118
creditd_write_commit_seconds_sum 0.59
creditd_write_apply_seconds_sum 1.18
`
	for _, tc := range []struct {
		name, text string
		want       writeCounters
		err        string
	}{
		{"all five samples", full, writeCounters{entries: 120, commands: 480, applied: 118, commitSec: 0.59, applySec: 1.18}, ""},
		{"one missing", strings.Replace(full, "creditd_write_apply_seconds_sum 1.18\n", "", 1), writeCounters{}, "4 of the 5"},
		{"a value that is no number", strings.Replace(full, "480", "many", 1), writeCounters{}, "creditd_write_commands_total"},
		{"no write samples", "creditd_rpc_forwarded_total 3\n", writeCounters{}, "0 of the 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWriteCounters(strings.NewReader(tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestLeaderWritesBetweenTwoReads(t *testing.T) {
	start := writeCounters{entries: 100, commands: 300, applied: 99, commitSec: 1, applySec: 2}
	for _, tc := range []struct {
		name string
		end  writeCounters
		want *LeaderWrites
	}{
		{"entries applied", writeCounters{entries: 200, commands: 700, applied: 199, commitSec: 1.5, applySec: 2.8},
			&LeaderWrites{Entries: 100, CommandsPerEntry: 4, CommitMs: 5, ApplyMs: 8}},
		{"nothing written", start, nil},
		{"the node restarted", writeCounters{entries: 10, commands: 10, applied: 10, commitSec: 0.1, applySec: 0.1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := leaderWrites(start, tc.end)
			if (got == nil) != (tc.want == nil) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got == nil {
				return
			}
			near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
			if got.Entries != tc.want.Entries || !near(got.CommandsPerEntry, tc.want.CommandsPerEntry) ||
				!near(got.CommitMs, tc.want.CommitMs) || !near(got.ApplyMs, tc.want.ApplyMs) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
