package fsm

import (
	"encoding/binary"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// stored reads a record as it is on disk, without the overlay readers apply.
func stored[T any, P interface {
	*T
	decode(*dec)
}](h *harness, bucket, key []byte) T {
	h.t.Helper()
	var r T
	err := h.f.db.View(func(tx *bolt.Tx) error {
		d := dec{b: tx.Bucket(bucket).Get(key)}
		P(&r).decode(&d)
		return d.err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) storedPool(customer, ct string) Pool {
	return stored[Pool](h, bPool, poolKey(customer, ct))
}
func (h *harness) storedGrant(id string) Grant { return stored[Grant](h, bGrant, []byte(id)) }

// Burns that leave a grant active are kept in the pool's record, at most
// maxTallies of them; every reader sees the grant as burned, and a grant
// whose tally leaves its pool has its own record rewritten.
func TestBurnsTallyInThePoolRecord(t *testing.T) {
	h := newHarness(t)
	h.seed()
	// Each new grant comes first in burn order (a lower priority number),
	// so each burn below leaves one more grant part-used.
	const grants = maxTallies + 2
	for i := 0; i < grants; i++ {
		h.paid(fmt.Sprintf("g%d", i), 1000, "0.10", func(c *CreateGrant) { c.Priority = uint32(grants - i) })
		h.after(1)
		h.burnCredits(fmt.Sprintf("e%d", i), 100)
	}
	p := h.storedPool("c1", "ai")
	if len(p.tallies) != maxTallies {
		t.Fatalf("pool record holds %d tallies, want %d", len(p.tallies), maxTallies)
	}
	for i := 0; i < grants; i++ {
		id := fmt.Sprintf("g%d", i)
		g := h.grant(id)
		if g.Remaining != 900 || g.Burned != 100 || g.DeferredMicros != 900_000 {
			t.Errorf("%s: remaining %d burned %d deferred %d, want 900, 100, 900000", id, g.Remaining, g.Burned, g.DeferredMicros)
		}
		stored := h.storedGrant(id)
		tallied := i >= grants-maxTallies
		if wantOwn := int64(900); tallied {
			wantOwn = 1000 // its burn lives in the pool's tally
			if stored.Remaining != wantOwn {
				t.Errorf("%s: own record remaining %d, want %d", id, stored.Remaining, wantOwn)
			}
		} else if stored.Remaining != wantOwn {
			t.Errorf("%s: own record remaining %d after its tally left the pool, want %d", id, stored.Remaining, wantOwn)
		}
	}
	var listed int
	err := h.f.View(func(v *View) error {
		return v.ScanGrants(func(g *Grant) error {
			listed++
			if g.Remaining != 900 {
				t.Errorf("ScanGrants: %s remaining %d, want 900", g.ID, g.Remaining)
			}
			return nil
		})
	})
	if err != nil || listed != grants {
		t.Fatalf("ScanGrants: %d grants, %v", listed, err)
	}
	if b := h.balance("c1", "ai"); b.Balance != grants*900 || len(b.Grants) != grants {
		t.Errorf("balance %d over %d grants, want %d over %d", b.Balance, len(b.Grants), grants*900, grants)
	}

	// A revocation rewrites the grant's record, and its tally goes.
	h.ok(RevokeGrant{GrantID: fmt.Sprintf("g%d", grants-1), Amount: 400, Reason: "partial refund"})
	if p := h.storedPool("c1", "ai"); len(p.tallies) != maxTallies-1 {
		t.Errorf("after a revocation the pool holds %d tallies, want %d", len(p.tallies), maxTallies-1)
	}
	if g := h.storedGrant(fmt.Sprintf("g%d", grants-1)); g.Remaining != 500 || g.Burned != 100 {
		t.Errorf("revoked grant's own record: remaining %d burned %d, want 500, 100", g.Remaining, g.Burned)
	}
}

// A state file of format 2 (pool records of version 1, without tallies)
// opens, reads, and goes on being applied to.
func TestFormat2StateFileOpens(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.paid("g1", 1000, "0.10")
	// Rewrite the pool as a version 1 record (no tally list) and mark the
	// file format 2, as the previous release left it.
	err := h.f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bPool)
		k := poolKey("c1", "ai")
		v := append([]byte{}, b.Get(k)...)
		if v[0] != poolRecordVersion || v[len(v)-1] != 0 {
			return fmt.Errorf("unexpected pool record %x", v)
		}
		v[0] = 1
		if err := b.Put(k, v[:len(v)-1]); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(metaFormat, u64key(2))
	})
	if err != nil {
		t.Fatal(err)
	}
	h.f.ap = nil // the applier's cache no longer matches the file
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Open(h.f.path, Options{NoSync: true})
	if err != nil {
		t.Fatalf("open a format 2 file: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	h.f = f
	if b := h.balance("c1", "ai"); b.Balance != 1000 {
		t.Fatalf("balance %d, want 1000", b.Balance)
	}
	h.burnCredits("e1", 300)
	if g := h.grant("g1"); g.Remaining != 700 {
		t.Errorf("remaining %d after a burn, want 700", g.Remaining)
	}
	err = f.db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket(bMeta).Get(metaFormat)); v != stateFormat {
			return fmt.Errorf("format %d after open, want %d", v, stateFormat)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
