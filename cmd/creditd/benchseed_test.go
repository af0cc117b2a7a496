package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/bench"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// TestSeededSnapshotServesTheBenchCustomers seeds a small bench setup
// offline, restores it into a data dir the way an operator would
// ('creditd snapshot restore'), runs 'creditd serve' on it, and checks that
// the API answers every seeded customer with the balance a bench setup
// would have given it, and that a bench run on those existing customers
// verifies.
func TestSeededSnapshotServesTheBenchCustomers(t *testing.T) {
	t.Setenv("CREDITD_API_KEYS", "") // loopback clients need no key
	dir := t.TempDir()
	snap := filepath.Join(dir, "seed.snap")
	const customers, grants = 40, 3
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// 4 commands per entry: every customer and its grants in one entry of
	// their own, so the snapshot covers many entries.
	st, err := seedSnapshot(ctx, seedConfig{out: snap, runID: "s1", customers: customers, grants: grants,
		commandsPerEntry: 1 + grants, now: time.Now()})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	if want := 3 + customers*(1+grants); st.commands != want || st.entries != 1+customers {
		t.Fatalf("seed applied %d commands in %d entries; want %d in %d", st.commands, st.entries, want, 1+customers)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".seed-*")); len(left) > 0 {
		t.Errorf("the temporary state is left behind: %v", left)
	}

	rpcAddr, raftAddr, gossipAddr := freePort(t), freePort(t), freePort(t)
	data := filepath.Join(dir, "a")
	nodeFlags := []string{"--data-dir", data, "--node-id", "a", "--raft-addr", raftAddr, "--log-level", "warn"}
	if err := runSnapshot(ctx, append([]string{"restore"}, append(nodeFlags, snap)...)); err != nil {
		t.Fatalf("snapshot restore: %v", err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- runServe(sctx, append(nodeFlags, "--rpc-addr", rpcAddr, "--gossip-addr", gossipAddr, "--shutdown-timeout", "20s"))
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	hc := h2cClient()
	defer hc.CloseIdleConnections()
	url := "http://" + rpcAddr
	balances := creditdv1connect.NewBalanceServiceClient(hc, url)
	balance := func(ctx context.Context, customer string) (string, error) {
		r, err := balances.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: customer, CreditTypeId: bench.CreditTypeID}))
		if err != nil {
			return "", err
		}
		return r.Msg.Balance, nil
	}
	await(t, time.Minute, "the restored node to serve", func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err := balance(cctx, bench.CustomerID("s1", 0))
		return err
	})
	// Each customer holds its grants' sum: 3 × 333,333,333 credits.
	const want = "999999999"
	for i := 0; i < customers; i++ {
		var got string
		err := retry(ctx, func(ctx context.Context) (err error) { got, err = balance(ctx, bench.CustomerID("s1", i)); return err })
		if err != nil || strings.TrimSuffix(got, ".00") != want {
			t.Fatalf("balance of seeded customer %d: %q, %v; want %s", i, got, err, want)
		}
	}
	if _, err := balance(ctx, bench.CustomerID("s1", customers)); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("a customer past the seeded ones: %v; want NotFound", err)
	}

	run := func(n int) (*bench.Report, error) {
		return bench.Run(ctx, bench.Config{Addr: url, Existing: "s1", Customers: n, Duration: time.Second,
			Concurrency: 2, Batch: 5, Seed: 9, Mix: bench.Mix{bench.OpReport: 3, bench.OpCheck: 1}})
	}
	rep, err := run(customers)
	if err != nil {
		t.Fatalf("bench --existing: %v", err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("bench --existing did not verify: %v", err)
	}
	if rep.Total.Requests == 0 {
		t.Fatalf("bench --existing measured no requests: %+v", rep.Total)
	}
	// One customer too many: the run must stop at its setup and name it.
	if _, err := run(customers + 1); err == nil || !strings.Contains(err.Error(), bench.CustomerID("s1", customers)) {
		t.Errorf("bench --existing over a customer that does not exist: %v; want an error naming it", err)
	}
}

func TestSeedRefusesABadConfig(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.snap")
	ok := seedConfig{out: out, runID: "r1", customers: 10, grants: 3, commandsPerEntry: 100}
	for _, tt := range []struct {
		flag string
		mod  func(*seedConfig)
	}{
		{"--out", func(c *seedConfig) { c.out = "" }},
		{"--run-id", func(c *seedConfig) { c.runID = "Bad-ID" }},
		{"--customers", func(c *seedConfig) { c.customers = 0 }},
		{"--grants", func(c *seedConfig) { c.grants = bench.MaxGrants + 1 }},
		{"--commands-per-entry", func(c *seedConfig) { c.commandsPerEntry = 3 }},
	} {
		c := ok
		tt.mod(&c)
		_, err := seedSnapshot(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("with a bad %s: %v", tt.flag, err)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused seed wrote %s: %v", out, err)
	}
}
