//go:build !unix

package node

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked by another holder")

// flockExclusive takes no lock where flock(2) is missing: the stores'
// own locks (bbolt's) still turn a second process away, later.
func flockExclusive(*os.File) error { return nil }
