package main

import (
	"strings"
	"testing"
)

// node.Config reads a 0 in these settings as "unset": serve started with
// --voters 0 ran with 5 voters, --dead-server-timeout 0 with 30 minutes,
// --leader-wait 0 with 5s, --batch-max-commands 0 with 1024. Other values
// node refused naming its own fields ("node config: Voters 65 is outside
// 1..64", "Join[0]", "Batch.MaxBytes", "RaftAddr"), which no flag is
// called. And a --join naming only this node's own gossip address joined
// itself ("joined the gossip pool … contacted=1") and waited alone for a
// leader, with no error. Each is refused now, naming the flag.
func TestServeRefusesClusterFlagsNodeWouldMisreadNamingTheFlag(t *testing.T) {
	own := freePort(t)
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--voters", "0"}, "--voters"},
		{[]string{"--voters", "-1"}, "--voters"},
		{[]string{"--voters", "65"}, "--voters"},
		{[]string{"--dead-server-timeout", "0s"}, "--dead-server-timeout"},
		{[]string{"--dead-server-timeout", "-1s"}, "--dead-server-timeout"},
		{[]string{"--leader-wait", "0s"}, "--leader-wait"},
		{[]string{"--leader-wait", "6m"}, "--leader-wait"},
		{[]string{"--heartbeat-timeout", "0s"}, "--heartbeat-timeout"},
		{[]string{"--heartbeat-timeout", "1ms"}, "--heartbeat-timeout"},
		{[]string{"--election-timeout", "0s"}, "--election-timeout"},
		{[]string{"--election-timeout", "500ms"}, "--election-timeout"},
		{[]string{"--batch-max-commands", "0"}, "--batch-max-commands"},
		{[]string{"--batch-max-commands", "65537"}, "--batch-max-commands"},
		{[]string{"--batch-max-bytes", "0"}, "--batch-max-bytes"},
		{[]string{"--batch-max-bytes", "10"}, "--batch-max-bytes"},
		{[]string{"--batch-max-inflight", "0"}, "--batch-max-inflight"},
		{[]string{"--batch-queue", "0"}, "--batch-queue"},
		{[]string{"--batch-max-wait", "-1ms"}, "--batch-max-wait"},
		{[]string{"--batch-max-wait", "2s"}, "--batch-max-wait"},
		{[]string{"--bootstrap-expect", "65"}, "--bootstrap-expect"},
		{[]string{"--bootstrap-expect", "1", "--join", "127.0.0.1:1"}, "--bootstrap-expect"},
		{[]string{"--raft-addr", "7421"}, "--raft-addr"},
		{[]string{"--gossip-addr", "localhost"}, "--gossip-addr"},
		{[]string{"--advertise-gossip-addr", "10.0.0.1"}, "--advertise-gossip-addr"},
		{[]string{"--join", "7422"}, "--join"},
		{[]string{"--join", "http://127.0.0.1:7422"}, "--join"},
		{[]string{"--gossip-addr", own, "--join", own}, "--join"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			err := serveRefusal(t, freePort(t), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("serve %s: %v; want an error naming %s", strings.Join(tc.args, " "), err, tc.flag)
			}
		})
	}
}

// A --join list may name this node among the others (one list for every
// node): only a list of nothing but itself is refused.
func TestServeAcceptsAJoinListThatNamesItselfAmongOthers(t *testing.T) {
	var f serveFlags
	fs := newServeFlagSet(&f)
	own, other := "127.0.0.1:17522", "127.0.0.1:17532"
	if err := parseFlags(fs, []string{"--gossip-addr", own, "--join", own + "," + other}); err != nil {
		t.Fatal(err)
	}
	if err := checkNodeFlags(&f); err != nil {
		t.Errorf("--join %s,%s with --gossip-addr %s: %v; want it accepted", own, other, own, err)
	}
	var d serveFlags
	if err := parseFlags(newServeFlagSet(&d), nil); err != nil {
		t.Fatal(err)
	}
	if err := checkNodeFlags(&d); err != nil {
		t.Errorf("the defaults: %v; want them accepted", err)
	}
}
