package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	bolt "go.etcd.io/bbolt"
)

// Log stores a node can keep its Raft log in (Config.LogStore).
const (
	// LogStoreBolt is raft-boltdb/v2: one B+tree file, DATA_DIR/raft.db.
	LogStoreBolt = "bolt"
	// LogStoreWAL is raft-wal: append-only segment files in DATA_DIR/raft-wal,
	// which write less per entry than a B+tree.
	LogStoreWAL = "wal"
)

// logStore is a Raft log and stable store that can be closed.
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// openLogStore opens the configured log store in dataDir. A data dir keeps
// the store it was created with: opening it with the other is refused, since
// the new store would start empty and the node would forget the log.
func openLogStore(dataDir, kind string, noSync bool) (logStore, error) {
	boltPath := filepath.Join(dataDir, "raft.db")
	walDir := filepath.Join(dataDir, "raft-wal")
	switch kind {
	case "", LogStoreBolt:
		if exists(walDir) {
			return nil, fmt.Errorf("%s holds a raft-wal log: start with --log-store=%s", dataDir, LogStoreWAL)
		}
		s, err := raftboltdb.New(raftboltdb.Options{Path: boltPath, NoSync: noSync,
			BoltOptions: &bolt.Options{Timeout: lockWait}})
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open raft log %s: %s: %w", boltPath, errHeldByAnother, err)
		}
		if err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", boltPath, err)
		}
		return s, nil
	case LogStoreWAL:
		if exists(boltPath) {
			return nil, fmt.Errorf("%s holds a raft-boltdb log: start with --log-store=%s", dataDir, LogStoreBolt)
		}
		if noSync {
			return nil, errors.New("the wal log store always syncs; NoSync is for raft-boltdb in tests")
		}
		if err := os.MkdirAll(walDir, 0o700); err != nil {
			return nil, fmt.Errorf("create raft log dir %s: %w", walDir, err)
		}
		if err := checkUnlocked(filepath.Join(walDir, metadb.FileName)); err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", walDir, err)
		}
		// raft-wal's Close leaves its meta store open (and its file
		// locked), so the node owns the meta store and closes it itself.
		meta := &metadb.BoltMetaDB{}
		w, err := raftwal.Open(walDir, raftwal.WithMetaStore(meta))
		if err != nil {
			meta.Close()
			return nil, fmt.Errorf("open raft log %s: %w", walDir, err)
		}
		return walStore{WAL: w, meta: meta}, nil
	}
	return nil, fmt.Errorf("unknown log store %q (want %s or %s)", kind, LogStoreBolt, LogStoreWAL)
}

// lockWait is how long opening a bbolt file waits for another process to
// let go of it. bbolt's default is forever: a second process on a data dir
// (a restore into a running node's dir, say) would hang instead of saying why.
const lockWait = 5 * time.Second

// errHeldByAnother says what a lock timeout on a data dir's file means.
const errHeldByAnother = "another process holds its lock (is a creditd already running on this data dir?)"

// checkUnlocked fails if another process holds the bbolt file at path.
// raft-wal opens its meta store with no lock timeout, so the node takes a
// shared lock first, with one, and lets go of it at once; a file that does
// not exist yet holds no lock.
func checkUnlocked(path string) error {
	if !exists(path) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, ReadOnly: true})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%s: %s: %w", path, errHeldByAnother, err)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	return db.Close()
}

// walStore is raft-wal with the meta store it does not close.
type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func (s walStore) Close() error { return errors.Join(s.WAL.Close(), s.meta.Close()) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
