package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/creditd/creditd/fsm"
)

// The state file (fsm.db) is committed without fsync on every apply. Raft's
// log, fsynced on a quorum before anything is acknowledged, already makes
// every write durable; a second fsync per apply, on the same disk, doubled
// the latency of a write. A process crash (SIGKILL, a panic) loses nothing:
// the kernel's page cache holds every commit and writes it out. A power loss
// or a kernel crash can lose or tear those writes, so the state file is
// trusted only when the machine has not restarted since it was last written,
// or when it was synced at a clean shutdown. The marker beside it says
// which: the boot id of the machine whose page cache may hold its unsynced
// commits, or "synced". A state file that fails the check is moved aside and
// the node rebuilds it from its newest snapshot and the log
// (catchUpFromLocalSnapshot, then raft's replay).
//
// Where the boot id cannot be read (not Linux), or with Config.StateFsync,
// every apply is fsynced as before.

const (
	stateFileName     = "fsm.db"
	stateMarkerSuffix = ".boot"
	stateSynced       = "synced"
	bootIDPath        = "/proc/sys/kernel/random/boot_id"
)

// stateFile is the open state file and how it must be closed.
type stateFile struct {
	f      *fsm.FSM
	marker string
	noSync bool
}

func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// openStateFile opens dir/fsm.db, first moving it aside when a power loss
// may have torn it.
func openStateFile(dir string, fsyncEveryApply bool, logger *slog.Logger) (*stateFile, error) {
	path := filepath.Join(dir, stateFileName)
	marker := path + stateMarkerSuffix
	boot := bootID()
	s := &stateFile{marker: marker, noSync: !fsyncEveryApply && boot != ""}

	prev, err := os.ReadFile(marker)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new data dir, or one written with fsync on every apply.
	case err != nil:
		return nil, fmt.Errorf("read state marker %s: %w", marker, err)
	default:
		was := strings.TrimSpace(string(prev))
		if was != stateSynced && was != boot {
			if err := setStateAside(path, logger, was, boot); err != nil {
				return nil, err
			}
		}
	}

	if s.noSync {
		// Durable before the first unsynced commit: a power loss from here
		// on is noticed at the next start.
		if err := writeFileSynced(marker, boot); err != nil {
			return nil, fmt.Errorf("write state marker: %w", err)
		}
	}
	s.f, err = fsm.Open(path, fsm.Options{NoSync: s.noSync})
	if err != nil {
		return nil, err
	}
	if !s.noSync {
		// Commits of an earlier run in this boot may still be unsynced.
		if err := s.f.Sync(); err != nil {
			return nil, errors.Join(err, s.f.Close())
		}
		if err := writeFileSynced(marker, stateSynced); err != nil {
			return nil, errors.Join(fmt.Errorf("write state marker: %w", err), s.f.Close())
		}
	}
	return s, nil
}

// CheckStateFile says whether a stopped node's dir/fsm.db can be read
// offline: not when the machine restarted after the node last wrote it
// without fsync (the node itself would set it aside and rebuild it).
func CheckStateFile(dir string) error {
	path := filepath.Join(dir, stateFileName)
	prev, err := os.ReadFile(path + stateMarkerSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state marker: %w", err)
	}
	if was := strings.TrimSpace(string(prev)); was != stateSynced && was != bootID() {
		return fmt.Errorf("%s was last written without fsync before the machine restarted and may be torn; start the node (it rebuilds the state) or export a snapshot", path)
	}
	return nil
}

func setStateAside(path string, logger *slog.Logger, was, boot string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	aside := fmt.Sprintf("%s.untrusted-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	logger.Warn("the machine restarted since the state file was last written without fsync; setting it aside and rebuilding from the newest snapshot and the log",
		"state", path, "set_aside_as", aside, "written_in_boot", was, "this_boot", boot)
	if err := os.Rename(path, aside); err != nil {
		return fmt.Errorf("set aside state file %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// close syncs the state and marks it synced, so the next start trusts it
// even after a reboot.
func (s *stateFile) close() error {
	if !s.noSync {
		return s.f.Close()
	}
	if err := s.f.Sync(); err != nil {
		return errors.Join(err, s.f.Close())
	}
	if err := s.f.Close(); err != nil {
		return err
	}
	if err := writeFileSynced(s.marker, stateSynced); err != nil {
		return fmt.Errorf("write state marker: %w", err)
	}
	return nil
}

// writeFileSynced replaces path with content, durably.
func writeFileSynced(path, content string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
