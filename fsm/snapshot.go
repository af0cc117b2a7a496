package fsm

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Snapshot is a consistent copy of the whole state, ledger included, taken
// while applies go on: it holds a bbolt read transaction until Release.
type Snapshot struct {
	tx *bolt.Tx
	f  *FSM
}

// Snapshot starts a consistent snapshot; call Release when done.
func (f *FSM) Snapshot() (*Snapshot, error) {
	f.mu.RLock()
	if f.db == nil {
		f.mu.RUnlock()
		return nil, errClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		f.mu.RUnlock()
		return nil, fmt.Errorf("snapshot: begin: %w", err)
	}
	// The read lock is held until Release so Restore cannot close the file
	// under the snapshot.
	return &Snapshot{tx: tx, f: f}, nil
}

// AppliedIndex is the index the snapshot reflects.
func (s *Snapshot) AppliedIndex() uint64 { return getU64(s.tx.Bucket(bMeta), metaApplied) }

// WriteTo streams the snapshot: the state file as of the snapshot.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := s.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("snapshot: write: %w", err)
	}
	return n, nil
}

// Release ends the snapshot's read transaction.
func (s *Snapshot) Release() {
	if s.tx == nil {
		return
	}
	s.tx.Rollback()
	s.tx = nil
	s.f.mu.RUnlock()
}

// Restore replaces the whole state with a snapshot's. The snapshot is
// written beside the state file and checked before it replaces it, so a
// failed restore leaves the old state in place.
func (f *FSM) Restore(r io.Reader) error {
	tmp := f.path + ".restore"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("restore: create %s: %w", tmp, err)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("restore: copy: %w", err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("restore: sync: %w", err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: close: %w", err)
	}
	if err := checkStateFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			return fmt.Errorf("restore: close state: %w", err)
		}
		f.db = nil
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("restore: replace state: %w", err)
	}
	f.ap = nil
	return f.open()
}

// checkStateFile checks that a snapshot is a whole creditd state before it
// replaces one. A snapshot cut short (a copy that stopped, a full disk)
// still opens, since its meta pages come first: its size is checked against
// the size its meta gives, because bbolt reads pages past the end of the
// file as zeros and panics on them (or the process dies of SIGBUS).
func checkStateFile(path string) (err error) {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open snapshot: %w", err)
	}
	defer db.Close()
	defer func() {
		// bbolt asserts its pages' headers by panicking: a snapshot whose
		// bytes are damaged must fail the restore, not end the process.
		if p := recover(); p != nil {
			err = fmt.Errorf("snapshot is damaged: %v", p)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > st.Size() {
			return fmt.Errorf("snapshot is truncated: its state needs %d bytes, the file has %d", need, st.Size())
		}
		m := tx.Bucket(bMeta)
		if m == nil {
			return fmt.Errorf("snapshot has no meta bucket: not a creditd state")
		}
		if v := m.Get(metaFormat); len(v) != 8 || !readableFormat(binary.BigEndian.Uint64(v)) {
			return fmt.Errorf("snapshot format: %w", ErrUnknownVersion)
		}
		return nil
	})
}

// Dump writes the canonical dump: every bucket in a fixed order, every
// record in key order, as hex key and hex value lines. Replicas that applied
// the same log write the same bytes.
func (f *FSM) Dump(w io.Writer) error {
	return f.View(func(v *View) error { return v.Dump(w) })
}

// Dump writes the canonical dump of this view (see FSM.Dump).
func (v *View) Dump(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, name := range allBuckets {
		fmt.Fprintf(bw, "[%s]\n", name)
		if err := dumpBucket(bw, v.tx.Bucket(name), ""); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func dumpBucket(bw *bufio.Writer, b *bolt.Bucket, indent string) error {
	return b.ForEach(func(k, val []byte) error {
		bw.WriteString(indent)
		bw.WriteString(hex.EncodeToString(k))
		if val == nil { // a nested bucket
			bw.WriteString(" {\n")
			if err := dumpBucket(bw, b.Bucket(k), indent+"  "); err != nil {
				return err
			}
			bw.WriteString(indent)
			_, err := bw.WriteString("}\n")
			return err
		}
		bw.WriteByte(' ')
		bw.WriteString(hex.EncodeToString(val))
		return bw.WriteByte('\n')
	})
}
