package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// proc is one `creditd serve` process of the test.
type proc struct {
	id                     string
	rpc, raft, gossip, dir string
	join                   string
	cmd                    *exec.Cmd
	log                    *os.File
	exited                 chan struct{} // closed once cmd has exited
	waitErr                error         // cmd.Wait's, once exited is closed
}

// freePort returns a port free for both TCP and UDP (gossip uses both).
func freePort(t *testing.T) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func (p *proc) start(t *testing.T, bin string) {
	t.Helper()
	args := []string{"serve", "--node-id", p.id, "--data-dir", p.dir,
		"--rpc-addr", p.rpc, "--raft-addr", p.raft, "--gossip-addr", p.gossip,
		"--log-format", "json", "--log-level", "debug", "--shutdown-timeout", "20s"}
	if p.join != "" {
		args = append(args, "--join", p.join)
	}
	log, err := os.OpenFile(filepath.Join(filepath.Dir(p.dir), p.id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.log = log
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.Env = append(os.Environ(), "CREDITD_API_KEYS=")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.id, err)
	}
	exited, cmd := make(chan struct{}), p.cmd
	p.exited = exited
	go func() { p.waitErr = cmd.Wait(); close(exited) }()
}

// startServing starts the process and waits until it serves its API. A
// port freePort picked may be taken by someone else before the process
// binds it: then the process exits, and startServing gives it fresh ports
// and starts it again (before any other process knows its addresses).
func (p *proc) startServing(t *testing.T, bin string) {
	t.Helper()
	p.serveRetrying(t, bin, func() {
		t.Logf("%s could not bind a port (taken since freePort chose it); trying fresh ports", p.id)
		p.rpc, p.raft, p.gossip = freePort(t), freePort(t), freePort(t)
	})
}

// restartServing starts a process that has run before and waits until it
// serves its API. Its Raft address is in the cluster's configuration, so
// it must come back on the same ports: if one was taken meanwhile (by an
// outgoing connection's ephemeral port, say), it waits and tries again.
func (p *proc) restartServing(t *testing.T, bin string) {
	t.Helper()
	p.serveRetrying(t, bin, func() {
		t.Logf("%s could not bind its old ports; trying again in a second", p.id)
		time.Sleep(time.Second)
	})
}

// serveRetrying starts the process until it serves its API, calling
// portTaken before each new attempt when the process exited because an
// address was in use (at most 5 attempts).
func (p *proc) serveRetrying(t *testing.T, bin string, portTaken func()) {
	t.Helper()
	logPath := filepath.Join(filepath.Dir(p.dir), p.id+".log")
	// thisRun is what the current attempt logged: the log is appended to
	// across restarts, and an earlier run's lines must not count.
	var from int64
	thisRun := func() []byte {
		b, _ := os.ReadFile(logPath)
		return b[min(from, int64(len(b))):]
	}
	for attempt := 1; ; attempt++ {
		from = 0
		if fi, err := os.Stat(logPath); err == nil {
			from = fi.Size()
		}
		p.start(t, bin)
		await(t, 2*time.Minute, p.id+" serving its API", func() error {
			select {
			case <-p.exited:
				return nil
			default:
			}
			if bytes.Contains(thisRun(), []byte("serving the API")) {
				return nil
			}
			return errors.New("not yet")
		})
		select {
		case <-p.exited:
		default:
			return
		}
		b := thisRun()
		p.cmd = nil
		p.log.Close()
		if !bytes.Contains(b, []byte("address already in use")) || attempt == 5 {
			t.Fatalf("%s exited at start:\n%s", p.id, b)
		}
		portTaken()
	}
}

func (p *proc) stop(sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
	p.log.Close()
}

func h2cClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

func await(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// retry repeats an API call while the cluster has no leader (Unavailable)
// or the call times out; the calls it wraps are idempotent.
func retry(ctx context.Context, call func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := call(cctx)
		cancel()
		code := connect.CodeOf(err)
		if err == nil || (code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded && code != connect.CodeUnknown) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestThreeProcessesSurviveSIGKILLAndKeepBalances(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "creditd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	procs := make([]*proc, 3)
	for i := range procs {
		procs[i] = &proc{id: fmt.Sprintf("p%d", i+1), rpc: freePort(t), raft: freePort(t), gossip: freePort(t),
			dir: filepath.Join(dir, fmt.Sprintf("p%d", i+1), "data")}
		if err := os.MkdirAll(filepath.Dir(procs[i].dir), 0o750); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			procs[i].join = procs[0].gossip
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.stop(syscall.SIGTERM)
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(filepath.Join(filepath.Dir(p.dir), p.id+".log"))
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("--- %s log tail ---\n%s", p.id, b)
			}
		}
	})
	// One at a time, so the others join the first at the address it
	// really has.
	for i, p := range procs {
		if i > 0 {
			p.join = procs[0].gossip
		}
		p.startServing(t, bin)
	}
	hc := h2cClient()
	url := func(p *proc) string { return "http://" + p.rpc }
	cluster := func(p *proc) creditdv1connect.ClusterServiceClient {
		return creditdv1connect.NewClusterServiceClient(hc, url(p))
	}
	await(t, 2*time.Minute, "3 voters with a leader", func() error {
		for _, p := range procs {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := cluster(p).GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
			cancel()
			if err != nil {
				return err
			}
			voters := 0
			for _, m := range st.Msg.Members {
				if m.Suffrage == "voter" {
					voters++
				}
			}
			if voters != 3 || !st.Msg.Ready || st.Msg.LeaderId == "" {
				return fmt.Errorf("%s: %d voters, ready %v, leader %q", p.id, voters, st.Msg.Ready, st.Msg.LeaderId)
			}
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Set up through a node that may well be a follower: writes forward.
	catalog := creditdv1connect.NewCatalogServiceClient(hc, url(procs[1]))
	grants := creditdv1connect.NewGrantServiceClient(hc, url(procs[2]))
	must := func(what string, err error) {
		t.Helper()
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("create credit type", retry(ctx, func(ctx context.Context) error {
		_, err := catalog.CreateCreditType(ctx, connect.NewRequest(&v1.CreateCreditTypeRequest{Id: "cr", Name: "Credits"}))
		return err
	}))
	must("create customer", retry(ctx, func(ctx context.Context) error {
		_, err := catalog.UpsertCustomer(ctx, connect.NewRequest(&v1.UpsertCustomerRequest{Id: "c1", Name: "One"}))
		return err
	}))
	must("create grant", retry(ctx, func(ctx context.Context) error {
		_, err := grants.CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{Id: "g1", CustomerId: "c1", CreditTypeId: "cr",
			Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1000"}))
		return err
	}))
	report := func(p *proc, id string) {
		t.Helper()
		usage := creditdv1connect.NewUsageServiceClient(hc, url(p))
		err := retry(ctx, func(ctx context.Context) error {
			r, err := usage.ReportUsage(ctx, connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: id, CustomerId: "c1", CreditTypeId: "cr", Credits: "1"}}}))
			if err == nil && r.Msg.Results[0].Status != v1.EventStatus_EVENT_STATUS_BURNED {
				return fmt.Errorf("event %s: status %v", id, r.Msg.Results[0].Status)
			}
			return err
		})
		if err != nil {
			t.Fatalf("report %s via %s: %v", id, p.id, err)
		}
	}
	for i := range 60 {
		report(procs[i%3], fmt.Sprintf("before-%d", i))
	}

	// SIGKILL the first node (it bootstrapped the cluster, so it likely
	// leads), keep writing through the others, then bring it back.
	procs[0].stop(syscall.SIGKILL)
	for i := range 40 {
		report(procs[1+i%2], fmt.Sprintf("during-%d", i))
	}
	procs[0].restartServing(t, bin)
	for i := range 20 {
		report(procs[i%3], fmt.Sprintf("after-%d", i))
	}

	const want = "880" // 1000 − 120 events of 1 credit
	for _, p := range procs {
		balances := creditdv1connect.NewBalanceServiceClient(hc, url(p))
		await(t, 2*time.Minute, p.id+"'s local balance", func() error {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			defer ccancel()
			r, err := balances.GetBalance(cctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "c1", CreditTypeId: "cr", Consistency: v1.Consistency_CONSISTENCY_STALE}))
			if err != nil {
				return err
			}
			if r.Msg.Balance != want {
				return fmt.Errorf("balance %s, want %s", r.Msg.Balance, want)
			}
			return nil
		})
		var r *connect.Response[v1.GetBalanceResponse]
		err := retry(ctx, func(ctx context.Context) error {
			var err error
			r, err = balances.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "c1", CreditTypeId: "cr"}))
			return err
		})
		if err != nil || r.Msg.Balance != want {
			t.Fatalf("%s linearizable balance: %v %v, want %s", p.id, err, r, want)
		}
	}
	// SIGTERM ends every process cleanly.
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.exited
		err := p.waitErr
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Errorf("%s exited with %v after SIGTERM", p.id, err)
		}
		p.cmd = nil
		p.log.Close()
	}
	_ = strconv.Itoa
}
