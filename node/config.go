package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Config configures one node. Start fills zero fields with the defaults
// below; Validate names the first wrong field.
type Config struct {
	// NodeID identifies the node in raft and gossip. "" = the id stored in
	// DataDir/node-id, created at first start.
	NodeID string
	// DataDir holds the raft log, snapshots and the state file.
	DataDir string

	// RaftAddr is the raft TCP listen address (port 0 picks one).
	RaftAddr string
	// AdvertiseRaftAddr is the raft address others dial; "" = the bound address.
	AdvertiseRaftAddr string
	// GossipAddr is the memberlist listen address, TCP and UDP (port 0 picks one).
	GossipAddr string
	// AdvertiseGossipAddr is the gossip address others use; "" = the bound address.
	AdvertiseGossipAddr string
	// RPCAddr is this node's advertised API address, handed to followers so
	// they can forward writes here when this node leads.
	RPCAddr string

	// Join lists gossip addresses of existing members; the node keeps
	// trying until one answers or it shuts down.
	Join []string
	// BootstrapExpect forms a new cluster when this many nodes, none of
	// which is already in a cluster, have met. 0 = never bootstrap (wait to
	// be added). A node that has raft state never bootstraps. 1 (a cluster
	// of one, formed at start) does not go with Join.
	BootstrapExpect int
	// Voters is how many voters the leader keeps; other members are
	// non-voters, promoted when a voter goes. Default 5.
	Voters int
	// DeadServerTimeout is how long a member must be dead (not left) before
	// the leader removes it from raft, and only if a quorum remains.
	// Default 30m.
	DeadServerTimeout time.Duration
	// GossipReconnectInterval is how often a node asks members gossip
	// holds dead (for up to 72 hours) to rejoin the pool, so a crashed
	// node that comes back without Join is found again.
	// Default 10s.
	GossipReconnectInterval time.Duration
	// LeaveOnShutdown makes Shutdown leave the gossip pool gracefully, so the
	// leader removes this node from raft. Off: a restart keeps membership.
	LeaveOnShutdown bool

	// raftDialAddrs, when set, tells this node where to dial each peer's
	// raft address by server id: tests route pairs through proxies they can
	// cut, to partition the cluster.
	raftDialAddrs raft.ServerAddressProvider
	// memberlistConfig, when set, adjusts memberlist's configuration
	// before it starts: tests lengthen the push-pull interval, so that
	// only a join brings a restarted node back.
	memberlistConfig func(*memberlist.Config)
	// keptMembersWriter, when set, writes keptMembersFile in place of
	// writeFileSynced: tests hold a write in progress.
	keptMembersWriter func(path, content string) error
	// noClusterID, when set, makes the node behave as a build before
	// cluster ids: it makes, adopts and announces none, and refuses
	// nobody (tests of rolling upgrades).
	noClusterID bool

	// Batch bounds group commit.
	Batch BatchConfig

	// TickInterval is how often the leader proposes fsm.Tick. Default 1s;
	// negative disables ticks (benchmarks).
	TickInterval time.Duration

	// SnapshotThreshold is the number of new entries after which raft
	// snapshots and compacts. Default 8192.
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks the threshold. Default 30s.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// slightly lagging followers catch up without a snapshot. Default 10240.
	TrailingLogs uint64
	// SnapshotRetain is how many snapshots are kept on disk. Default 2.
	SnapshotRetain int

	// HeartbeatTimeout and ElectionTimeout are raft's; default 1s each.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// LeaderLeaseTimeout is how long a leader without contact from a quorum
	// keeps leading; default HeartbeatTimeout (a loaded machine should not
	// make a healthy leader step down).
	LeaderLeaseTimeout time.Duration
	// LeaderWait bounds how long Apply waits for a leader to be known (or
	// for this node to be ready to lead) before ErrNoLeader. Default 5s.
	LeaderWait time.Duration
	// ApplyTimeout bounds how long a write may wait to be enqueued into
	// raft. Default 10s.
	ApplyTimeout time.Duration

	// ReadyMaxLag is how many log entries a follower's applied index may
	// trail the commit index it knows and still be ready (Node.Ready, so
	// /readyz and the gRPC health check): one further behind answers reads
	// from an old state. A healthy follower under load trails by the
	// entries in flight (Batch.MaxInflight) plus at most one append of
	// raft's (256 entries), so the default leaves room for 4 such appends
	// and a follower replaying a long log or a snapshot's worth is not
	// ready. Default 1024; negative = none (ready only once it has applied
	// everything it knows committed).
	ReadyMaxLag int

	// NoSync turns fsync off for the raft log. Only for tests.
	NoSync bool

	// FollowerApplyWait is how long a follower gathers committed entries
	// before applying them together in one state transaction: fewer
	// commits, each dirty page written once, and on a host the replicas
	// share, the cores left to the leader while its callers wait. A
	// follower's reads (stale reads, WatchEntries) trail by at most this
	// much more; the leader never waits, and a follower that wins an
	// election applies everything before it takes writes. Default 20ms;
	// negative = apply at once.
	FollowerApplyWait time.Duration

	// StateFsync fsyncs the state file on every apply. Off (the default),
	// the raft log carries durability and the state file is rebuilt from a
	// snapshot and the log after a machine restart that could have torn it
	// (statefile.go).
	StateFsync bool

	// LogCacheEntries is how many recent log entries raft keeps decoded in
	// memory, so the leader replicates them without reading the log store.
	// Followers trail the leader by at most a few batches (Batch.MaxInflight
	// entries in flight), so a few hundred cover them; every cached entry
	// holds a whole batch (up to Batch.MaxBytes), so the cache is a large
	// part of a node's heap: an entry of 1,000 usage events is ≈ 50 KB, so
	// the former fixed 4096 entries held ≈ 200 MB on every node once full
	// (and up to 4 GiB with 1 MiB entries). Default 512 (as Consul and
	// Nomad use); negative = no cache.
	LogCacheEntries int

	// LogStore is where the Raft log lives: LogStoreBolt (the default,
	// raft-boltdb) or LogStoreWAL (raft-wal). A data dir keeps the store it
	// was created with.
	LogStore string

	// StateMachine replaces the fsm (benchmarks use NewNoopStateMachine).
	// nil = open fsm at DataDir/fsm.db; the node then owns and closes it.
	// One with an FSM() *fsm.FSM method (FSMStateMachine, or a wrapper
	// embedding it) is read through Node.FSM; its caller closes it.
	StateMachine StateMachine

	// Logger receives the node's, raft's and memberlist's logs. nil = discard.
	Logger *slog.Logger
}

// BatchConfig bounds one group-committed log entry.
type BatchConfig struct {
	// Disabled puts every command in its own entry (for comparisons).
	Disabled bool
	// MaxCommands per entry. Default 1024.
	MaxCommands int
	// MaxBytes of encoded commands per entry. Default 1 MiB.
	MaxBytes int
	// MaxWait is how long the dispatcher waits for more commands once it
	// has one and the entry is not full. Default 0: take what is queued
	// now; under load commands queue while earlier entries are in flight,
	// so batches grow without adding latency to a lone writer.
	MaxWait time.Duration
	// MaxInflight is how many entries may be appended and not yet applied.
	// Default 8.
	MaxInflight int
	// QueueSize bounds commands waiting for the dispatcher. Default 16384.
	QueueSize int
}

// Limits on configuration values, so a typo cannot ask for absurd memory.
const (
	maxBatchCommands = 1 << 16
	maxBatchBytes    = 64 << 20
	maxInflight      = 1024
	maxQueueSize     = 1 << 20
	maxEntryBytes    = maxBatchBytes + 1<<20
	maxMetaBytes     = 512 // memberlist's meta limit
	// maxLogCacheEntries × Batch.MaxBytes bounds the log cache's memory.
	maxLogCacheEntries     = 1 << 16
	defaultLogCacheEntries = 512
	// A lag past maxReadyMaxLag entries would make readiness mean nothing.
	maxReadyMaxLag     = 1 << 30
	defaultReadyMaxLag = 1024
	// A follower's reads may trail by FollowerApplyWait: a second is
	// already more than any read should.
	maxFollowerApplyWait     = time.Second
	defaultFollowerApplyWait = 20 * time.Millisecond
)

func (c *Config) setDefaults() {
	if c.Voters == 0 {
		c.Voters = 5
	}
	if c.DeadServerTimeout == 0 {
		c.DeadServerTimeout = 30 * time.Minute
	}
	if c.GossipReconnectInterval == 0 {
		c.GossipReconnectInterval = 10 * time.Second
	}
	if c.Batch.MaxCommands == 0 {
		c.Batch.MaxCommands = 1024
	}
	if c.Batch.MaxBytes == 0 {
		c.Batch.MaxBytes = 1 << 20
	}
	if c.Batch.MaxInflight == 0 {
		c.Batch.MaxInflight = 8
	}
	if c.Batch.QueueSize == 0 {
		c.Batch.QueueSize = 16384
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 30 * time.Second
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.LogCacheEntries == 0 {
		c.LogCacheEntries = defaultLogCacheEntries
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Second
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 5 * time.Second
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = defaultReadyMaxLag
	}
	if c.FollowerApplyWait == 0 {
		c.FollowerApplyWait = defaultFollowerApplyWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration after defaults are applied.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("node config: DataDir is required")
	}
	if len(c.NodeID) > 128 {
		return fmt.Errorf("node config: NodeID %q is longer than 128 bytes", c.NodeID)
	}
	// The id travels in HTTP headers (a follower names itself on what it
	// forwards) and is how operators name the node in the API; net/http
	// refuses a header value with a control character in it.
	if strings.IndexFunc(c.NodeID, unicode.IsControl) >= 0 {
		return fmt.Errorf("node config: NodeID %q holds a control character", c.NodeID)
	}
	for _, a := range []struct{ name, addr string }{
		{"RaftAddr", c.RaftAddr}, {"GossipAddr", c.GossipAddr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("node config: %s %q is not host:port: %w", a.name, a.addr, err)
		}
	}
	for _, a := range []struct{ name, addr string }{
		{"AdvertiseRaftAddr", c.AdvertiseRaftAddr}, {"AdvertiseGossipAddr", c.AdvertiseGossipAddr}, {"RPCAddr", c.RPCAddr},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("node config: %s %q is not host:port: %w", a.name, a.addr, err)
		}
	}
	for i, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("node config: Join[%d] %q is not host:port: %w", i, j, err)
		}
	}
	switch {
	case c.BootstrapExpect < 0 || c.BootstrapExpect > 64:
		return fmt.Errorf("node config: BootstrapExpect %d is outside 0..64", c.BootstrapExpect)
	case c.BootstrapExpect == 1 && len(c.Join) > 0:
		// A cluster of one forms at once, before the join is tried: joined
		// to a running cluster, the node would take writes of its own.
		return errors.New("node config: BootstrapExpect 1 with Join: a node that forms a cluster of one joins nobody; " +
			"drop Join to form one, or BootstrapExpect to be added to the cluster Join reaches")
	case c.Voters < 1 || c.Voters > 64:
		return fmt.Errorf("node config: Voters %d is outside 1..64", c.Voters)
	case c.Batch.MaxCommands < 1 || c.Batch.MaxCommands > maxBatchCommands:
		return fmt.Errorf("node config: Batch.MaxCommands %d is outside 1..%d", c.Batch.MaxCommands, maxBatchCommands)
	case c.Batch.MaxBytes < 1024 || c.Batch.MaxBytes > maxBatchBytes:
		return fmt.Errorf("node config: Batch.MaxBytes %d is outside 1024..%d", c.Batch.MaxBytes, maxBatchBytes)
	case c.Batch.MaxWait < 0 || c.Batch.MaxWait > time.Second:
		return fmt.Errorf("node config: Batch.MaxWait %s is outside 0..1s", c.Batch.MaxWait)
	case c.Batch.MaxInflight < 1 || c.Batch.MaxInflight > maxInflight:
		return fmt.Errorf("node config: Batch.MaxInflight %d is outside 1..%d", c.Batch.MaxInflight, maxInflight)
	case c.Batch.QueueSize < 1 || c.Batch.QueueSize > maxQueueSize:
		return fmt.Errorf("node config: Batch.QueueSize %d is outside 1..%d", c.Batch.QueueSize, maxQueueSize)
	case c.TickInterval > 0 && c.TickInterval < 10*time.Millisecond:
		return fmt.Errorf("node config: TickInterval %s is below 10ms", c.TickInterval)
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return fmt.Errorf("node config: HeartbeatTimeout %s is below 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("node config: ElectionTimeout %s is below HeartbeatTimeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("node config: LeaderLeaseTimeout %s is above HeartbeatTimeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.LeaderWait < 0 || c.LeaderWait > 5*time.Minute:
		return fmt.Errorf("node config: LeaderWait %s is outside 0..5m", c.LeaderWait)
	case c.FollowerApplyWait > maxFollowerApplyWait:
		return fmt.Errorf("node config: FollowerApplyWait %s is above %s", c.FollowerApplyWait, maxFollowerApplyWait)
	case c.ReadyMaxLag > maxReadyMaxLag:
		return fmt.Errorf("node config: ReadyMaxLag %d is above %d entries", c.ReadyMaxLag, maxReadyMaxLag)
	case c.LogCacheEntries > maxLogCacheEntries:
		return fmt.Errorf("node config: LogCacheEntries %d is above %d", c.LogCacheEntries, maxLogCacheEntries)
	case c.SnapshotRetain < 1 || c.SnapshotRetain > 100:
		return fmt.Errorf("node config: SnapshotRetain %d is outside 1..100", c.SnapshotRetain)
	case c.DeadServerTimeout < time.Second:
		return fmt.Errorf("node config: DeadServerTimeout %s is below 1s", c.DeadServerTimeout)
	case c.GossipReconnectInterval < 100*time.Millisecond || c.GossipReconnectInterval > time.Hour:
		return fmt.Errorf("node config: GossipReconnectInterval %s is outside 100ms..1h", c.GossipReconnectInterval)
	}
	return nil
}

// readyMaxLag is ReadyMaxLag in entries, after defaults.
func (c *Config) readyMaxLag() uint64 {
	if c.ReadyMaxLag < 0 {
		return 0
	}
	return uint64(c.ReadyMaxLag)
}

func splitHostPort(addr string) (host, port string, err error) { return net.SplitHostPort(addr) }
