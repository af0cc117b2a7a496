package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// dataDirLockFile is held, with an exclusive flock, by the one process
// using a data dir. Without it a second serve (or restore) on a running
// node's dir got as far as rewriting the state file's boot marker and the
// node-id file before a store's own lock turned it away: a marker claiming
// unsynced writes made the running node's sound state look torn to the
// next start after a power loss, which then rebuilt it from the log.
const dataDirLockFile = "lock"

// ErrDataDirInUse is returned by Start and RestoreDataDir for a data dir
// another process (or another Node in this one) holds.
var ErrDataDirInUse = errors.New("data dir in use")

// lockDataDir takes dir's lock, before anything in dir is read or written.
// The lock goes with the process: a node killed without Shutdown leaves
// the file but not the lock.
func lockDataDir(dir string) (unlock func() error, err error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open data dir lock %s: %w", path, err)
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%w: %s is held by another creditd process using %s (stop it, or use another --data-dir)", ErrDataDirInUse, path, dir)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", path, err)
	}
	// The file's content is for the operator who finds it; the flock is
	// what counts.
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d\n", os.Getpid())
	}
	return f.Close, nil // closing the descriptor releases the flock
}
