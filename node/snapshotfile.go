package node

import (
	"errors"
	"fmt"
	"io"

	"github.com/creditd/creditd/fsm"
)

// WriteStateSnapshot writes a state built offline (fsm.Open and Apply, no
// raft) in the snapshot format SaveSnapshot writes, so RestoreDataDir
// ("creditd snapshot restore") can start a cluster from it. It is how
// "creditd bench seed" builds a large state without millions of API
// writes. The state must have applied at least one entry: its applied
// index becomes the snapshot's, and the restored raft log starts after it.
func WriteStateSnapshot(w io.Writer, f *fsm.FSM) (n int64, err error) {
	s, err := f.Snapshot()
	if err != nil {
		return 0, fmt.Errorf("write state snapshot: %w", err)
	}
	defer s.Release()
	index := s.AppliedIndex()
	if index == 0 {
		return 0, errors.New("write state snapshot: the state holds no applied entry")
	}
	n, err = writeSnapshotHeader(w, index)
	if err != nil {
		return n, fmt.Errorf("write state snapshot header: %w", err)
	}
	m, err := s.WriteTo(w)
	n += m
	if err != nil {
		return n, fmt.Errorf("write state snapshot at index %d: %w", index, err)
	}
	return n, nil
}
