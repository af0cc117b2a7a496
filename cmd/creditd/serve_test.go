package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// TestRequestTimeoutFlagIsBoundedAndReachesTheAPI: --request-timeout refuses
// values that cannot be meant, names itself when it does, and bounds the
// unary calls of the node serve runs.
func TestRequestTimeoutFlagIsBoundedAndReachesTheAPI(t *testing.T) {
	for _, bad := range []string{"0", "-5s", "60", "500ms", "2h", "soon"} {
		var f serveFlags
		fs := newServeFlagSet(&f)
		fs.SetOutput(io.Discard)
		if err := parseFlags(fs, []string{"--request-timeout", bad}); err == nil || !strings.Contains(err.Error(), "request-timeout") {
			t.Errorf("--request-timeout %s: %v; want an error naming the flag", bad, err)
		}
	}
	var f serveFlags
	fs := newServeFlagSet(&f)
	if err := parseFlags(fs, nil); err != nil || f.requestTimeout.d != 60*time.Second {
		t.Fatalf("no flag: %v, %v; want 60s", f.requestTimeout.d, err)
	}

	// A node serving with --request-timeout 1s cuts a request whose body
	// stopped coming; at the default (60s) it would still hold it when
	// the test gives up below.
	rpcAddr := startServe(t, "--request-timeout", "1s")
	conn, err := net.Dial("tcp", rpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /creditd.v1.UsageService/ReportUsage HTTP/1.1\r\nHost: creditd\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"events\":[")
	// Half the default: far above 1s whatever the load, and below 60s.
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("after 30s the node still holds a request whose body stopped coming: --request-timeout 1s did not reach the API")
	case err != nil:
		t.Logf("the node closed the connection: %v", err)
	default:
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Logf("the node answered %s: %s", res.Status, b)
		if res.StatusCode == http.StatusOK {
			t.Fatalf("a truncated body was accepted")
		}
	}
}

// startServe runs `creditd serve` with args on free loopback ports until the
// test ends, and returns its API address once /healthz answers.
func startServe(t *testing.T, args ...string) (rpcAddr string) {
	t.Helper()
	return startServeOn(t, freePort(t), args...)
}

// startServeOn is startServe with the API listening on rpcListen (a
// wildcard host, say); it returns the API's loopback address.
func startServeOn(t *testing.T, rpcListen string, args ...string) (rpcAddr string) {
	t.Helper()
	// The data dir's cleanup is registered first, so it runs after the
	// node has stopped.
	rpcAddr, dataDir := loopbackAddr(t, rpcListen), t.TempDir()
	args = append([]string{"--data-dir", dataDir, "--rpc-addr", rpcListen, "--raft-addr", freePort(t),
		"--gossip-addr", freePort(t), "--log-level", "error"}, args...)
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	runServeUntilTestEnds(t, "the API", hc, "http://"+rpcAddr, args)
	return rpcAddr
}

// runServeUntilTestEnds runs `creditd serve` with args in this process
// until the test ends (its error, if any, fails the test) and returns once
// url's /healthz answers hc.
func runServeUntilTestEnds(t *testing.T, what string, hc *http.Client, url string, args []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve (%s): %v", what, err)
		}
	})
	await(t, 60*time.Second, what, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("serve ended: %w", err)
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", res.Status)
		}
		return nil
	})
}

// TestMaxConnectionsHoldsNewConnectionsUntilOneCloses: with --max-connections
// 2 and two connections open, a third is not served until one closes.
func TestMaxConnectionsHoldsNewConnectionsUntilOneCloses(t *testing.T) {
	for _, bad := range []string{"0", "-1", "2000000"} {
		err := runServe(t.Context(), []string{"--max-connections", bad})
		if err == nil || !strings.Contains(err.Error(), "--max-connections") {
			t.Errorf("--max-connections %s: %v; want an error naming the flag", bad, err)
		}
	}
	rpcAddr := startServe(t, "--max-connections", "2")
	get := func(c net.Conn) error {
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: creditd\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	}
	var held []net.Conn
	// startServe's own connection may still be closing: await both slots.
	for len(held) < 2 {
		c, err := net.Dial("tcp", rpcAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := get(c); err != nil {
			c.Close()
			continue
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", rpcAddr) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	err = get(third)
	third.Close() // or, accepted later, it would hold a slot
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a third connection beside two open ones was served (%v); want it held", err)
	}
	held[0].Close()
	await(t, 30*time.Second, "a connection once one closed", func() error {
		c, err := net.Dial("tcp", rpcAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		return get(c)
	})
	held[1].Close()
}

func TestFollowerApplyWaitIsBoundedByItsFlag(t *testing.T) {
	for _, bad := range []string{"-1ms", "2s"} {
		err := runServe(t.Context(), []string{"--follower-apply-wait", bad})
		if err == nil || !strings.Contains(err.Error(), "--follower-apply-wait") {
			t.Errorf("--follower-apply-wait %s: %v; want an error naming the flag", bad, err)
		}
	}
}

// loopbackAddr is 127.0.0.1 at listen's port: where a test reaches an API
// listening on any host.
func loopbackAddr(t *testing.T, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// serveRefusal runs `creditd serve` with the API on rpcListen, loopback
// Raft and gossip on free ports, and args, and returns the error it stops
// with; a serve that answers /healthz instead fails the test.
func serveRefusal(t *testing.T, rpcListen string, args ...string) error {
	t.Helper()
	probe := loopbackAddr(t, rpcListen)
	args = append([]string{"--data-dir", t.TempDir(), "--rpc-addr", rpcListen, "--raft-addr", freePort(t),
		"--gossip-addr", freePort(t), "--log-level", "error"}, args...)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, args) }()
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return err
		case <-time.After(100 * time.Millisecond):
		}
		if res, err := hc.Get("http://" + probe + "/healthz"); err == nil {
			res.Body.Close()
			cancel()
			<-done
			t.Fatalf("serve %s started and serves", strings.Join(args, " "))
		}
	}
	t.Fatalf("serve %s neither stopped nor served within 60s", strings.Join(args, " "))
	return nil
}

// A node advertises its API address: followers forward writes there and
// "creditd status" asks each member there. Listening on every interface
// (the usual in a container), the listener's own address names no host,
// so such a node must be told what to advertise, as raft refuses such a
// --raft-addr ("not advertisable").
func TestServeAdvertisesAnAPIAddressOthersCanReachOrRefusesToStart(t *testing.T) {
	_, port, _ := net.SplitHostPort(freePort(t))
	for _, tc := range []struct {
		name, listen, advertise string
	}{
		{"a listener on 0.0.0.0 without --advertise-rpc-addr", "0.0.0.0:" + port, ""},
		{"a listener on [::] without --advertise-rpc-addr", "[::]:" + port, ""},
		{"a listener with no host without --advertise-rpc-addr", ":" + port, ""},
		{"an advertised address on 0.0.0.0", "0.0.0.0:" + port, "0.0.0.0:" + port},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			var args []string
			if tc.advertise != "" {
				args = []string{"--advertise-rpc-addr", tc.advertise}
			}
			err := serveRefusal(t, tc.listen, args...)
			if err == nil || !strings.Contains(err.Error(), "--advertise-rpc-addr") {
				t.Errorf("serve --rpc-addr %s %s: %v; want an error naming --advertise-rpc-addr", tc.listen, strings.Join(args, " "), err)
			}
		})
	}

	t.Run("a listener on 0.0.0.0 advertises --advertise-rpc-addr", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(freePort(t))
		advertised := net.JoinHostPort("127.0.0.1", port)
		local := startServeOn(t, "0.0.0.0:"+port, "--advertise-rpc-addr", advertised)
		c := creditdv1connect.NewClusterServiceClient(h2cClient(), "http://"+local)
		var st *v1.GetStatusResponse
		await(t, 60*time.Second, "a status naming the leader", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			r, err := c.GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
			if err != nil {
				return err
			}
			if r.Msg.LeaderId == "" {
				return errors.New("no leader yet")
			}
			st = r.Msg
			return nil
		})
		if st.RpcAddr != advertised || st.LeaderRpcAddr != advertised {
			t.Errorf("rpc_addr %q, leader_rpc_addr %q; want both %q", st.RpcAddr, st.LeaderRpcAddr, advertised)
		}
	})
}

// Flags that node.Config would take with another meaning, or serve would
// run with broken: node reads a negative --tick-interval as "no ticks" (a
// benchmark setting), so expiries and reservation timeouts stop happening
// without traffic; a --shutdown-timeout of 0 or less hands SIGTERM an
// expired context (no leadership handover, no draining); node.Config reads
// a --snapshot-threshold or --trailing-logs of 0 as "unset" and would run
// with 8192 and 10240 instead.
func TestServeRefusesTimingAndSnapshotFlagsOutsideTheirRange(t *testing.T) {
	for _, args := range [][]string{
		{"--tick-interval", "-1s"},
		{"--tick-interval", "0s"},
		{"--tick-interval", "5ms"},
		{"--tick-interval", "2h"},
		{"--shutdown-timeout", "0s"},
		{"--shutdown-timeout", "-5s"},
		{"--shutdown-timeout", "500ms"},
		{"--shutdown-timeout", "11m"},
		{"--snapshot-threshold", "0"},
		{"--trailing-logs", "0"},
		{"--snapshot-interval", "0s"},
		{"--snapshot-interval", "-1s"},
		{"--snapshot-interval", "500ms"},
		{"--snapshot-interval", "25h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			err := serveRefusal(t, freePort(t), args...)
			if err == nil || !strings.Contains(err.Error(), args[0]) {
				t.Errorf("serve %s: %v; want an error naming %s", strings.Join(args, " "), err, args[0])
			}
		})
	}
}

// http.Server.Shutdown only waits for connections to go idle. A client that
// stopped reading a stream holds its handler in Send; once
// --shutdown-timeout has passed, serve closes the connection rather than
// leave the handler (and whatever it holds of the node) running. The
// client here speaks HTTP/2 by hand, to announce a flow-control window of
// 0: the server can send it no byte of the snapshot.
func TestServeClosesConnectionsStillBusyAfterTheShutdownTimeout(t *testing.T) {
	rpcAddr, dataDir := freePort(t), t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--data-dir", dataDir, "--rpc-addr", rpcAddr, "--raft-addr", freePort(t),
			"--gossip-addr", freePort(t), "--log-level", "error", "--shutdown-timeout", "1s"})
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	c := creditdv1connect.NewClusterServiceClient(h2cClient(), "http://"+rpcAddr)
	await(t, 60*time.Second, "a state with an applied entry to snapshot", func() error {
		cctx, ccancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer ccancel()
		r, err := c.GetStatus(cctx, connect.NewRequest(&v1.GetStatusRequest{}))
		if err != nil {
			return err
		}
		if r.Msg.AppliedIndex == 0 {
			return errors.New("nothing applied yet")
		}
		return nil
	})

	conn, err := net.Dial("tcp", rpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", rpcAddr},
		{":path", creditdv1connect.ClusterServiceSaveSnapshotProcedure},
		{"content-type", "application/connect+proto"}, {"connect-protocol-version", "1"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// One message: no flags, length 0 (an empty SaveSnapshotRequest).
	if err := fr.WriteData(1, true, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	// The answer's headers go out with the first message, whose bytes
	// then wait for a window that never opens.
	for answered := false; !answered; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer to SaveSnapshot: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 || f.PseudoValue("status") != "200" || f.StreamEnded() {
				t.Fatalf("SaveSnapshot answered %v", f.Fields)
			}
			answered = true
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("SaveSnapshot ended: %v", f)
		}
	}

	if err := conn.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		for {
			if _, err := fr.ReadFrame(); err != nil {
				closed <- err
				return
			}
		}
	}()
	cancel() // SIGTERM
	select {
	case err := <-done:
		stopped = true
		t.Logf("serve stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve with --shutdown-timeout 1s still runs 60s after SIGTERM")
	}
	select {
	case err := <-closed:
		t.Logf("the stalled client's connection ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Errorf("30s after serve stopped, the connection of a client stalled in SaveSnapshot is still open")
	}
}
