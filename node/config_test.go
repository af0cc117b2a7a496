package node

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesTheWrongField(t *testing.T) {
	valid := func() Config {
		c := Config{DataDir: "d", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
		c.setDefaults()
		return c
	}
	tests := []struct {
		name  string
		mod   func(*Config)
		field string // "" = valid
	}{
		{"defaults are valid", func(*Config) {}, ""},
		{"a data dir is required", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"the raft address needs a port", func(c *Config) { c.RaftAddr = "localhost" }, "RaftAddr"},
		{"the gossip address needs a port", func(c *Config) { c.GossipAddr = "x" }, "GossipAddr"},
		{"an advertised API address needs a port", func(c *Config) { c.RPCAddr = "nohost" }, "RPCAddr"},
		{"join addresses need a port", func(c *Config) { c.Join = []string{"127.0.0.1:1", "bad"} }, "Join[1]"},
		{"bootstrap-expect is bounded", func(c *Config) { c.BootstrapExpect = 65 }, "BootstrapExpect"},
		{"voters are at least one", func(c *Config) { c.Voters = -1 }, "Voters"},
		{"batch commands are bounded", func(c *Config) { c.Batch.MaxCommands = maxBatchCommands + 1 }, "Batch.MaxCommands"},
		{"batch bytes are bounded", func(c *Config) { c.Batch.MaxBytes = 10 }, "Batch.MaxBytes"},
		{"batch wait is bounded", func(c *Config) { c.Batch.MaxWait = 2 * time.Second }, "Batch.MaxWait"},
		{"in-flight entries are bounded", func(c *Config) { c.Batch.MaxInflight = maxInflight + 1 }, "Batch.MaxInflight"},
		{"the queue is bounded", func(c *Config) { c.Batch.QueueSize = maxQueueSize + 1 }, "Batch.QueueSize"},
		{"ticks are not too fast", func(c *Config) { c.TickInterval = time.Millisecond }, "TickInterval"},
		{"election follows heartbeat", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }, "ElectionTimeout"},
		{"the lease fits in a heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }, "LeaderLeaseTimeout"},
		{"the leader wait is bounded", func(c *Config) { c.LeaderWait = time.Hour }, "LeaderWait"},
		{"node ids are short", func(c *Config) { c.NodeID = strings.Repeat("x", 129) }, "NodeID"},
		// Followers send their id in a header (Creditd-Forwarded-By), which
		// net/http refuses to carry with a control character in it.
		{"node ids hold no control character", func(c *Config) { c.NodeID = "db\n1" }, "NodeID"},
		{"node ids hold no tab", func(c *Config) { c.NodeID = "db\t1" }, "NodeID"},
		{"the log cache is bounded", func(c *Config) { c.LogCacheEntries = maxLogCacheEntries + 1 }, "LogCacheEntries"},
		{"the log cache may be off", func(c *Config) { c.LogCacheEntries = -1 }, ""},
		{"the ready lag is bounded", func(c *Config) { c.ReadyMaxLag = maxReadyMaxLag + 1 }, "ReadyMaxLag"},
		{"the ready lag may be none", func(c *Config) { c.ReadyMaxLag = -1 }, ""},
		{"a follower's apply wait is bounded", func(c *Config) { c.FollowerApplyWait = maxFollowerApplyWait + 1 }, "FollowerApplyWait"},
		{"a follower may apply at once", func(c *Config) { c.FollowerApplyWait = -1 }, ""},
		{"gossip reconnects are not too frequent", func(c *Config) { c.GossipReconnectInterval = time.Millisecond }, "GossipReconnectInterval"},
		{"gossip reconnects are not too rare", func(c *Config) { c.GossipReconnectInterval = 2 * time.Hour }, "GossipReconnectInterval"},
		{"a cluster of one joins nobody", func(c *Config) { c.BootstrapExpect, c.Join = 1, []string{"127.0.0.1:7422"} }, "BootstrapExpect"},
		{"nodes that expect others may join them", func(c *Config) { c.BootstrapExpect, c.Join = 3, []string{"127.0.0.1:7422"} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field+" ")):
				t.Fatalf("got %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func TestSnapshotHeaderRoundTripsAndRejectsForeignData(t *testing.T) {
	var b strings.Builder
	if _, err := writeSnapshotHeader(&b, 42); err != nil {
		t.Fatal(err)
	}
	got, err := readSnapshotHeader(strings.NewReader(b.String() + "state"))
	if err != nil || got != 42 {
		t.Fatalf("got %d, %v; want 42", got, err)
	}
	if _, err := readSnapshotHeader(strings.NewReader("not a snapshot at all")); err == nil {
		t.Fatal("foreign data accepted as a snapshot")
	}
	if _, err := readSnapshotHeader(strings.NewReader("CRD")); err == nil {
		t.Fatal("a truncated header accepted")
	}
}
