package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
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
	// The data dir's cleanup is registered first, so it runs after the
	// node has stopped.
	rpcAddr, dataDir := freePort(t), t.TempDir()
	args = append([]string{"--data-dir", dataDir, "--rpc-addr", rpcAddr, "--raft-addr", freePort(t),
		"--gossip-addr", freePort(t), "--log-level", "error"}, args...)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	await(t, 60*time.Second, "the API", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("serve ended: %w", err)
		default:
		}
		res, err := hc.Get("http://" + rpcAddr + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", res.Status)
		}
		return nil
	})
	return rpcAddr
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
