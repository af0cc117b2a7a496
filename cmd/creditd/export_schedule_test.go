package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/node"
	"github.com/creditd/creditd/rpc"
)

// soloNode starts a single-node cluster with its API on a loopback port
// and applies a small ledger; it returns the node and the API address.
func soloNode(t *testing.T, ctx context.Context) (*node.Node, string) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, node.Config{
		NodeID: "solo", DataDir: filepath.Join(t.TempDir(), "solo"), RaftAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", RPCAddr: ln.Addr().String(), BootstrapExpect: 1,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second,
		LeaderWait: 10 * time.Second, TickInterval: -1, Logger: logger,
	})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	api, err := rpc.New(n, rpc.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: api.Handler(), Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); hs.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		hs.Shutdown(sctx)
		<-served
		n.Shutdown(sctx)
	})
	for _, c := range []fsm.Command{
		fsm.CreateCreditType{ID: "ai", Name: "AI", Scale: 2},
		fsm.UpsertCustomer{ID: "c1", Name: "c1"},
		fsm.CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "ai", Amount: 1000},
		fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 10}}},
	} {
		// Apply waits for a leader (LeaderWait) and fails without one.
		r, err := n.Apply(ctx, c)
		if err == nil {
			err = r.Err
		}
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	return n, ln.Addr().String()
}

func TestTheLeaderExportsOnItsSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, _ := soloNode(t, ctx)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	s := exportSchedule{to: dir, every: time.Minute}
	closeDst, err := s.start(ctx, n, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDst()

	// The loop runs once at once when leadership is held, then every minute.
	dst, err := export.OpenDestination(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	want := n.FSM().LastSeq()
	for {
		m, err := export.ReadManifest(ctx, dst)
		if err == nil && m.WatermarkSeq == want {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no export up to entry %d: %+v, %v", want, m, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExportScheduleRefusesAnAbsurdInterval(t *testing.T) {
	for _, every := range []time.Duration{time.Second, 30 * 24 * time.Hour} {
		s := exportSchedule{to: t.TempDir(), every: every}
		if _, err := s.start(context.Background(), nil, slog.Default()); err == nil {
			t.Errorf("--export-every %s accepted", every)
		}
	}
}

func TestExportAndReportFromARunningNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, addr := soloNode(t, ctx)
	dest := t.TempDir()
	if err := run(ctx, []string{"export", "--addr", addr, "--to", dest, "--progress", "never", "--temp-dir", t.TempDir()}, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := export.OpenDestination(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := export.ReadManifest(ctx, b)
	if err != nil || m.WatermarkSeq != n.FSM().LastSeq() || m.AppliedIndex == 0 {
		t.Fatalf("manifest after export --addr: %+v, %v; want watermark %d", m, err, n.FSM().LastSeq())
	}
	out := filepath.Join(t.TempDir(), "r.csv")
	today := time.Now().UTC().Format(time.DateOnly)
	if err := run(ctx, []string{"report", "--addr", addr, "--from", "2000-01-01", "--to", today, "--format", "csv", "--out", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(data), "ai,,0.00,0.00,10.00,0.10,0.00,0.00,0.00,0.00,9.90,") {
		t.Fatalf("report from the running node:\n%s%v", data, err)
	}
}

// serve checks the export schedule's flags before the node starts: a value
// out of range used to be refused only after the node had bootstrapped a
// cluster in the data dir (a node id, a Raft log and a state file left
// behind for a start that failed).
func TestServeRefusesExportFlagsBeforeTouchingTheDataDir(t *testing.T) {
	for _, args := range [][]string{
		{"--export-every", "30s"},
		{"--export-every", "200h"},
		{"--export-keep-grant-snapshots", "100001"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"--data-dir", dataDir, "--raft-addr", freePort(t), "--gossip-addr", freePort(t),
				"--rpc-addr", freePort(t), "--log-level", "error", "--export-to", t.TempDir()}, args...)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := runServe(ctx, args)
			if err == nil || !strings.Contains(err.Error(), args[len(args)-2]) {
				t.Fatalf("serve %s: %v; want an error naming %s", strings.Join(args, " "), err, args[len(args)-2])
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data dir after the refusal: %v; want none made", err)
			}
		})
	}
}
