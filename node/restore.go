package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// RestoreDataDir prepares an empty data dir, offline, to start a new
// cluster from a snapshot saved by SaveSnapshot (disaster recovery). It
// writes the snapshot into raft's snapshot store at the snapshot's own
// applied index, with a configuration of this node alone, and restores the
// state file from it. Started afterwards (no bootstrap needed), the node
// elects itself; other nodes join it as usual and catch up from the
// snapshot. Because raft's log starts after the snapshot's index, no new
// entry is ever skipped as already applied. Start refuses Join on the dir
// until it has run (errRestoredJoins): it is a new cluster, never a member
// of the one the snapshot came from.
//
// cfg needs DataDir, NodeID (or DataDir/node-id) and the raft address the
// node will advertise (AdvertiseRaftAddr, else RaftAddr; not port 0).
//
// A restore that fails leaves the data dir as it found it: what it wrote is
// removed and the node id is kept only once the state is restored, so the
// retry, with the right file or another id, starts over.
func RestoreDataDir(cfg Config, r io.Reader) (err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	addr := cfg.AdvertiseRaftAddr
	if addr == "" {
		addr = cfg.RaftAddr
	}
	if _, port, _ := splitHostPort(addr); port == "0" {
		return fmt.Errorf("restore: the raft address %q must name a fixed port", addr)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("restore: create data dir %s: %w", cfg.DataDir, err)
	}
	lockPath := filepath.Join(cfg.DataDir, dataDirLockFile)
	lockWasThere := exists(lockPath)
	unlockDir, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer func() { // last of all
		if err != nil && !lockWasThere {
			_ = os.Remove(lockPath) // as found; still ours until unlocked
		}
		err = errors.Join(err, unlockDir())
	}()
	var keepID bool
	if cfg.NodeID, keepID, err = nodeIDFor(cfg.DataDir, cfg.NodeID); err != nil {
		return err
	}
	index, err := readSnapshotHeader(r)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if index == 0 {
		return errors.New("restore: the snapshot holds no applied entry")
	}

	// nodeIDFor refused a dir holding state under no id, so whatever of
	// these exists now is this restore's, except what was there before.
	var made []string
	for _, name := range []string{"raft.db", "raft-wal", "snapshots", "fsm.db", "fsm.db.boot"} {
		if path := filepath.Join(cfg.DataDir, name); !exists(path) {
			made = append(made, path)
		}
	}
	defer func() { // runs last: after the stores below are closed
		if err == nil {
			if keepID {
				err = keepNodeID(cfg.DataDir, cfg.NodeID)
			}
			return
		}
		for _, path := range made {
			if rerr := os.RemoveAll(path); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore: remove %s after the failure: %w", path, rerr))
			}
		}
	}()

	store, err := openLogStore(cfg.DataDir, cfg.LogStore, false)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, newHclog(cfg.Logger, "raft-snapshots"))
	if err != nil {
		return fmt.Errorf("restore: open snapshot store: %w", err)
	}
	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return fmt.Errorf("restore: check raft state: %w", err)
	}
	if has {
		return fmt.Errorf("restore: %s already holds raft state; restore into an empty data dir", cfg.DataDir)
	}
	statePath := filepath.Join(cfg.DataDir, "fsm.db")
	if _, err := os.Stat(statePath); err == nil {
		return fmt.Errorf("restore: %s already exists; restore into an empty data dir", statePath)
	}

	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}}
	_, trans := raft.NewInmemTransport("") // only encodes the legacy peer list
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return fmt.Errorf("restore: create raft snapshot: %w", err)
	}
	if _, err := writeSnapshotHeader(sink, index); err != nil {
		return errors.Join(fmt.Errorf("restore: write snapshot: %w", err), sink.Cancel())
	}
	if _, err := io.Copy(sink, r); err != nil {
		return errors.Join(fmt.Errorf("restore: write snapshot: %w", err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("restore: close snapshot: %w", err)
	}
	// raft starts its terms after the snapshot's.
	if err := store.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		return fmt.Errorf("restore: save current term: %w", err)
	}
	// A new cluster: its gossip refuses the one the snapshot came from
	// (clusterid.go).
	clusterID, err := newClusterID()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := saveClusterID(store, clusterID); err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	// Restore the state now, so a broken snapshot fails here and not at
	// the first start.
	_, rc, err := snaps.Open(sink.ID())
	if err != nil {
		return fmt.Errorf("restore: reopen snapshot: %w", err)
	}
	defer rc.Close()
	if _, err := readSnapshotHeader(rc); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f, err := fsm.Open(statePath, fsm.Options{})
	if err != nil {
		return fmt.Errorf("restore: open state: %w", err)
	}
	if err := f.Restore(rc); err != nil {
		return errors.Join(fmt.Errorf("restore: state: %w", err), f.Close())
	}
	if got := f.AppliedIndex(); got != index {
		return errors.Join(fmt.Errorf("restore: state says applied index %d, snapshot header %d", got, index), f.Close())
	}
	return f.Close()
}

// errRestoredJoins refuses Config.Join on a data dir that RestoreDataDir
// prepared and that has not run yet. The restore starts a new cluster of
// this node alone, its raft terms anew: joined to a running cluster (the
// one whose member it restored, under that member's id), it elected itself
// before the leader reached it and then led the cluster's members at the
// cluster's own term, so that two leaders wrote different entries under the
// same index and term; a write it acknowledged was in no other node's
// ledger, and the replicas diverged for good. Like BootstrapExpect 1 with
// Join, a cluster of one joins nobody.
func errRestoredJoins(dir string, join []string) error {
	return fmt.Errorf("start refused: data dir %s was restored from a snapshot as a new one-node cluster and has not run yet, "+
		"and --join (Join) %s would join it to a running cluster: it would elect itself and fork that cluster; "+
		"start it without --join, as the first node of the restored cluster, and join fresh nodes to it; "+
		"to bring a member of a running cluster back, start it on an empty data dir with --join (it catches up from the leader)",
		dir, strings.Join(join, ","))
}

// restoredNotRun reports whether the raft state is what RestoreDataDir
// leaves: no log and term 1. Any node that has run in a cluster has a later
// term (the first election makes it 2), a node bootstrapped with
// BootstrapExpect has its configuration in its log, and one that installed
// a leader's snapshot has that leader's term.
func restoredNotRun(logs raft.LogStore, stable raft.StableStore) (bool, error) {
	last, err := logs.LastIndex()
	if err != nil {
		return false, fmt.Errorf("read raft log: %w", err)
	}
	term, err := stable.GetUint64([]byte("CurrentTerm"))
	// Never set: raft-boltdb says so with an error, raft-wal with 0.
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return false, fmt.Errorf("read raft term: %w", err)
	}
	return last == 0 && term <= 1, nil
}
