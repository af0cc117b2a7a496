package node

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A cluster on raft-wal replicates, and a crashed node restarts from its
// own WAL and catches up.
func TestClusterOnTheWALLogStore(t *testing.T) {
	c := newTestCluster(t)
	wal := func(cfg *Config) { cfg.LogStore, cfg.NoSync = LogStoreWAL, false }
	c.startThree(wal)
	setupLedger(c)
	for i := range 20 {
		c.mustApply(burn(fmt.Sprintf("w%d", i)))
	}
	victim := "n3"
	if c.leader() == c.node(victim) {
		victim = "n2"
	}
	c.crash(victim)
	for i := range 20 {
		c.mustApply(burn(fmt.Sprintf("x%d", i)))
	}
	c.restart(victim, nil)
	dumps := c.waitConverged()
	var first []byte
	for id, d := range dumps {
		if first == nil {
			first = d
		} else if !bytes.Equal(first, d) {
			t.Fatalf("replica %s differs", id)
		}
	}
}

// A data dir keeps the log store it was created with: the other one would
// start from an empty log.
func TestALogStoreCannotChangeUnderADataDir(t *testing.T) {
	for _, tt := range []struct{ first, second, want string }{
		{LogStoreBolt, LogStoreWAL, "holds a raft-boltdb log"},
		{LogStoreWAL, LogStoreBolt, "holds a raft-wal log"},
	} {
		t.Run(tt.first+" then "+tt.second, func(t *testing.T) {
			c := newTestCluster(t)
			c.start("solo", func(cfg *Config) {
				cfg.BootstrapExpect, cfg.LogStore, cfg.NoSync = 1, tt.first, false
			})
			c.leader()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.node("solo").Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			cfg := c.nodes["solo"].cfg
			c.nodes["solo"].down = true
			c.mu.Unlock()
			cfg.LogStore = tt.second
			n, err := Start(ctx, cfg)
			if err == nil {
				n.Shutdown(ctx)
				t.Fatal("started on another log store")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	if _, err := openLogStore(t.TempDir(), "lsm", false); err == nil || !strings.Contains(err.Error(), "unknown log store") {
		t.Fatalf("unknown store: %v", err)
	}
}

// TestASecondOpenOfTheRaftLogSaysWhoHoldsIt: bbolt waits for a file's lock
// forever unless told otherwise; a restore into a running node's data dir
// hung that way. The second open now gives up and says why, with either log
// store (raft-wal opens its meta store with no timeout at all, so the node
// checks the lock itself first).
func TestASecondOpenOfTheRaftLogSaysWhoHoldsIt(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		noSync bool
	}{{LogStoreBolt, true}, {LogStoreWAL, false}} {
		t.Run(tc.kind, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openLogStore(dir, tc.kind, tc.noSync)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					s.Close()
				}
			}()
			second := make(chan error, 1)
			go func() {
				s2, err := openLogStore(dir, tc.kind, tc.noSync)
				if err == nil {
					s2.Close()
				}
				second <- err
			}()
			select {
			case err = <-second:
			case <-time.After(time.Minute):
				t.Fatal("the second open still waits for the lock after a minute")
			}
			if err == nil || !strings.Contains(err.Error(), "another process holds its lock") {
				t.Fatalf("got %v, want an error saying another process holds the raft log", err)
			}
			// Once the first lets go, the log opens again.
			closed = true
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := openLogStore(dir, tc.kind, tc.noSync)
			if err != nil {
				t.Fatalf("reopen after the first closed: %v", err)
			}
			s2.Close()
		})
	}
}
