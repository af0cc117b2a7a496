package main

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// node.Config's bounds on what serve passes it from flags. node.Config reads
// a 0 in these fields as "unset" and puts its default in its place, so
// --voters 0 ran with 5 voters and --dead-server-timeout 0 with 30 minutes;
// and it refuses other values under its own field names ("Voters",
// "Batch.MaxBytes", "Join[0]"), which no flag is called. serve checks them
// first, naming the flag.
const (
	maxVoters            = 64
	maxBootstrapExpect   = 64
	maxFlagBatchCommands = 1 << 16
	minFlagBatchBytes    = 1024
	maxFlagBatchBytes    = 64 << 20
	maxFlagBatchWait     = time.Second
	maxFlagBatchInflight = 1024
	maxFlagBatchQueue    = 1 << 20
	minHeartbeatTimeout  = 5 * time.Millisecond
	maxLeaderWait        = 5 * time.Minute
	minDeadServerTimeout = time.Second
)

// checkNodeFlags refuses the cluster and group-commit flags that node.Config
// would take for its default (a 0) or refuse under a field name of its own,
// and a --join that names only this node's own gossip address (the node
// would join itself and wait, alone, for a leader that never comes).
func checkNodeFlags(f *serveFlags) error {
	for _, a := range []struct{ flag, addr string }{
		{"--raft-addr", f.raftAddr}, {"--gossip-addr", f.gossipAddr},
		{"--advertise-raft-addr", f.advRaft}, {"--advertise-gossip-addr", f.advGossip},
	} {
		if a.addr == "" && strings.HasPrefix(a.flag, "--advertise-") {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("serve: %s %q is not host:port: %w", a.flag, a.addr, err)
		}
	}
	own := 0
	for _, j := range f.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("serve: --join %q is not host:port (a member's --gossip-addr): %w", j, err)
		}
		if j == f.gossipAddr || (f.advGossip != "" && j == f.advGossip) {
			own++
		}
	}
	if own > 0 && own == len(f.join) {
		return fmt.Errorf("serve: --join %s names this node's own gossip address (--gossip-addr %s): give another member's --gossip-addr, or leave --join out to form a new cluster",
			strings.Join(f.join, ","), f.gossipAddr)
	}
	if f.bootstrapExpect.set {
		switch n := f.bootstrapExpect.n; {
		case n > maxBootstrapExpect:
			return fmt.Errorf("serve: --bootstrap-expect %d is above %d", n, maxBootstrapExpect)
		case n == 1 && len(f.join) > 0:
			return fmt.Errorf("serve: --bootstrap-expect 1 with --join: a cluster of one forms at once, before the join is tried, and would take writes of its own; " +
				"leave --join out to form a cluster of one, or --bootstrap-expect to be added to the cluster --join reaches")
		}
	}
	ints := []struct {
		flag     string
		v        int
		min, max int
	}{
		{"--voters", f.voters, 1, maxVoters},
		{"--batch-max-commands", f.batchMaxCommands, 1, maxFlagBatchCommands},
		{"--batch-max-bytes", f.batchMaxBytes, minFlagBatchBytes, maxFlagBatchBytes},
		{"--batch-max-inflight", f.batchMaxInflight, 1, maxFlagBatchInflight},
		{"--batch-queue", f.batchQueue, 1, maxFlagBatchQueue},
	}
	for _, c := range ints {
		if c.v < c.min || c.v > c.max {
			return fmt.Errorf("serve: %s %d is outside %d..%d", c.flag, c.v, c.min, c.max)
		}
	}
	switch {
	case f.batchMaxWait < 0 || f.batchMaxWait > maxFlagBatchWait:
		return fmt.Errorf("serve: --batch-max-wait %s is outside 0..%s (0 takes what is queued)", f.batchMaxWait, maxFlagBatchWait)
	case f.heartbeatTimeout < minHeartbeatTimeout:
		return fmt.Errorf("serve: --heartbeat-timeout %s is below %s", f.heartbeatTimeout, minHeartbeatTimeout)
	case f.electionTimeout < f.heartbeatTimeout:
		return fmt.Errorf("serve: --election-timeout %s is below --heartbeat-timeout %s", f.electionTimeout, f.heartbeatTimeout)
	case f.leaderWait <= 0 || f.leaderWait > maxLeaderWait:
		return fmt.Errorf("serve: --leader-wait %s: want more than 0 and at most %s (how long a write waits for a leader)", f.leaderWait, maxLeaderWait)
	case f.deadServerTimeout < minDeadServerTimeout:
		return fmt.Errorf("serve: --dead-server-timeout %s is below %s", f.deadServerTimeout, minDeadServerTimeout)
	}
	return nil
}
