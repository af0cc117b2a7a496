package fsm

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status here")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// A state file without a stored freelist (a restored snapshot, or one
// written by an older creditd) is read whole at open to rebuild the
// freelist; Open must not leave all those pages resident in the process.
func TestOpenLeavesOnlyTheWorkingSetResident(t *testing.T) {
	h := newHarness(t)
	h.ok(CreateCreditType{ID: "ai", Scale: 0})
	var cmds []Command
	for i := range 5000 {
		cu := fmt.Sprintf("cust-%06d", i)
		cmds = append(cmds, UpsertCustomer{ID: cu})
		for g := range 3 {
			cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("%s-g%d", cu, g), CustomerID: cu, CreditTypeID: "ai", Amount: 1000})
		}
	}
	h.apply(cmds...)
	path := h.f.path
	h.f.Close()

	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put([]byte("x"), nil) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	before := rssFileKB(t)
	f, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	grew := rssFileKB(t) - before
	if limit := int(st.Size() / 1024 / 4); grew > limit {
		t.Errorf("opening a %d KB state file left %d KB more of it resident, want under %d KB", st.Size()/1024, grew, limit)
	}
}
