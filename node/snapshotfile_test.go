package node

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// TestAStateBuiltOfflineStartsAClusterThatReplicates builds a state with
// fsm alone (as "creditd bench seed" does), writes it as a snapshot,
// restores it into a data dir and starts a cluster on it: the seeded grant
// is there, a node that joins catches up from it, and new writes replicate
// with raft's log cache turned off.
func TestAStateBuiltOfflineStartsAClusterThatReplicates(t *testing.T) {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "seed.db"), fsm.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var snap bytes.Buffer
	if _, err := WriteStateSnapshot(&snap, f); err == nil || !strings.Contains(err.Error(), "no applied entry") {
		t.Fatalf("a snapshot of an empty state: %v; want it refused", err)
	}
	var enc [][]byte
	for _, c := range []fsm.Command{
		fsm.CreateCreditType{ID: "cr", Name: "Credits"},
		fsm.UpsertCustomer{ID: "c1", Name: "Customer One"},
		fsm.CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "cr", Category: fsm.Promotional, Amount: 1_000_000_000},
	} {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		enc = append(enc, b)
	}
	rs, err := f.Apply([]fsm.Entry{{Index: 7, Data: fsm.EncodeEntry(fsm.TimestampOf(time.Now()), enc)}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs[0] {
		if r.Err != nil {
			t.Fatalf("seed command %d: %v", i, r.Err)
		}
	}
	if _, err := WriteStateSnapshot(&snap, f); err != nil {
		t.Fatalf("write the snapshot: %v", err)
	}

	cfg := testConfig("s1", filepath.Join(t.TempDir(), "s1"), 20998)
	cfg.RaftAddr = freeAddr(t)
	cfg.LogCacheEntries = -1
	if err := RestoreDataDir(cfg, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	c := newTestCluster(t)
	c.start("s1", func(cc *Config) { *cc = cfg })
	if got := c.node("s1").FSM().AppliedIndex(); got < 7 {
		t.Fatalf("restored node applied index %d, want at least the seed's 7", got)
	}
	c.start("s2", func(cc *Config) { cc.Join = []string{c.node("s1").GossipAddr()}; cc.LogCacheEntries = -1 })
	for _, id := range []string{"after-1", "after-2", "after-3"} {
		if res := c.mustApply(burn(id)); !burned(res) {
			t.Fatalf("burn %s on the seeded grant: %+v", id, res)
		}
	}
	c.waitConverged()
	if counts := usageCounts(t, c.node("s2")); len(counts) != 3 {
		t.Errorf("the joined node holds %d usage events, want 3", len(counts))
	}
}
