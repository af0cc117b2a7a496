package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/node"
)

func TestTheLeaderExportsOnItsSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.Start(ctx, node.Config{
		NodeID: "solo", DataDir: filepath.Join(t.TempDir(), "solo"), RaftAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:1", BootstrapExpect: 1,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second,
		LeaderWait: 10 * time.Second, TickInterval: -1, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		n.Shutdown(sctx)
	}()
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
