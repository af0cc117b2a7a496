package main

import (
	"strings"
	"testing"
	"time"
)

// "creditd status" is what an operator's script runs to learn whether the
// cluster takes writes: a node that knows no leader makes it fail after
// the table, one with a leader makes it succeed.
func TestStatusFailsWhileNoLeaderIsKnown(t *testing.T) {
	led := startServe(t)
	await(t, 60*time.Second, "status with a leader", func() error {
		return runStatus(t.Context(), []string{"--addr", led})
	})

	// One node of an expected three never elects anyone.
	alone := startServe(t, "--bootstrap-expect", "3")
	err := runStatus(t.Context(), []string{"--addr", alone})
	if err == nil || !strings.Contains(err.Error(), "no leader known") {
		t.Fatalf("status of a node waiting for its peers: %v; want an error saying no leader is known", err)
	}
}

// An operator who gives a client command a node's Raft or gossip address
// instead of its API address got "unavailable: unexpected EOF" and nothing
// else: both ports read the HTTP/2 preface as a message of their own and
// hang up. The error names the flag to give instead.
func TestAClientAtANodesRaftOrGossipPortIsToldToGiveItsAPIAddress(t *testing.T) {
	raft, gossip := freePort(t), freePort(t)
	led := startServe(t, "--raft-addr", raft, "--gossip-addr", gossip)
	await(t, 60*time.Second, "status with a leader", func() error {
		return runStatus(t.Context(), []string{"--addr", led})
	})
	for _, addr := range []string{raft, gossip} {
		err := runStatus(t.Context(), []string{"--addr", addr, "--timeout", "20s"})
		if err == nil || !strings.Contains(err.Error(), "serve --rpc-addr") {
			t.Errorf("status --addr %s (not the API): %v; want an error saying to give the node's API address (serve --rpc-addr)", addr, err)
		}
	}
}
