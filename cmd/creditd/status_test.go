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
