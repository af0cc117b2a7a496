package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// logCapture is a slog handler that keeps every record as one line
// ("LEVEL message key=value …"), to show what an operator reads.
type logCapture struct {
	mu    *sync.Mutex
	lines *[]string
	attrs []slog.Attr
}

func newLogCapture() *logCapture { return &logCapture{mu: &sync.Mutex{}, lines: new([]string)} }

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{mu: c.mu, lines: c.lines, attrs: append(append([]slog.Attr{}, c.attrs...), as...)}
}

func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range c.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
	c.mu.Lock()
	*c.lines = append(*c.lines, b.String())
	c.mu.Unlock()
	return nil
}

// find returns the first line holding every part, or "".
func (c *logCapture) find(parts ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range *c.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return l
		}
	}
	return ""
}

// freeGossipAddr is a loopback address whose port is free for TCP and UDP
// now, for a node that must be named before it starts.
func freeGossipAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return ""
}

// A node restarted without Join before the others noticed it stop is
// alive in their eyes, so nobody asks it to rejoin (only dead members are):
// it used to wait for one of them to push-pull with it (every 30 s, to one
// random member), not ready meanwhile ("leader … known, its API address not
// yet (gossip)"). It now rejoins the members it kept in its data dir. The
// push-pull interval is an hour here, and so is the reconnect interval, so
// only that rejoin can bring it back.
func TestANodeRestartedWithoutJoinRejoinsTheMembersItKept(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) {
		cfg.memberlistConfig = func(mc *memberlist.Config) { mc.PushPullInterval = time.Hour }
		cfg.GossipReconnectInterval = time.Hour
	})
	setupLedger(c)
	victim := "n3"
	if c.leader().ID() == victim {
		victim = "n2"
	}
	keptPath := filepath.Join(c.dir, victim, keptMembersFile)
	waitFor(t, time.Minute, victim+" keeping both other members in "+keptMembersFile, func() bool {
		kept, err := loadKeptMembers(filepath.Dir(keptPath))
		return err == nil && len(kept) == 2
	})
	c.shutdown(victim)
	n := c.restart(victim, func(cfg *Config) { cfg.Join = nil })
	waitFor(t, 2*time.Minute, "the restarted "+victim+" to know the leader's API address and be ready", func() bool {
		_, rpc := n.Leader()
		ok, _ := n.Readiness()
		return rpc != "" && ok
	})
	c.mustApply(burn("after-restart"))
	if dumps := c.waitConverged(); len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
}

// A kept-members file that cannot be used stops nothing: the node starts,
// says so, and joins through Join as before.
func TestAnUnreadableKeptMembersFileStopsNothing(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	victim := "n3"
	if c.leader().ID() == victim {
		victim = "n2"
	}
	c.shutdown(victim)
	if err := os.WriteFile(filepath.Join(c.dir, victim, keptMembersFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := newLogCapture()
	n := c.restart(victim, func(cfg *Config) { cfg.Logger = slog.New(logs) })
	waitFor(t, 2*time.Minute, "the restarted "+victim+" to be ready", func() bool {
		ok, _ := n.Readiness()
		return ok
	})
	if l := logs.find("WARN", "not rejoining the gossip members kept", keptMembersFile); l == "" {
		t.Errorf("no warning names the unreadable %s", keptMembersFile)
	}
	// The node writes the file again once it knows the members.
	waitFor(t, time.Minute, victim+" rewriting "+keptMembersFile, func() bool {
		kept, err := loadKeptMembers(filepath.Join(c.dir, victim))
		return err == nil && len(kept) == 2
	})
}

func TestLoadKeptMembers(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" = no file
		want    int
		errPart string
	}{
		{"no file is no member and no error", "", 0, ""},
		{"a valid file gives its members", `{"v":1,"members":[{"id":"a","gossip":"127.0.0.1:7422"},{"id":"b","gossip":"127.0.0.1:7432"}]}`, 2, ""},
		{"a file cut short is refused", `{"v":1,"members":[{"id":"a"`, 0, keptMembersFile},
		{"another version is refused", `{"v":2,"members":[]}`, 0, "version 2"},
		{"a member without a gossip address is refused", `{"v":1,"members":[{"id":"a","gossip":"nowhere"}]}`, 0, `id "a"`},
		{"a file over the size bound is refused", `{"v":1,"members":[],"pad":"` + strings.Repeat("x", maxKeptMembersBytes) + `"}`, 0, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, keptMembersFile), []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := loadKeptMembers(dir)
			switch {
			case tt.errPart == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)):
				t.Fatalf("error %v, want one holding %q", err, tt.errPart)
			case len(got) != tt.want:
				t.Fatalf("got %d members, want %d", len(got), tt.want)
			}
		})
	}
}

// The kept members are bounded, alive ones first, and leave out members
// that left for good.
func TestKeptMembersAreBoundedAliveFirstWithoutLeftOnes(t *testing.T) {
	table := newMemberTable()
	for i := range 2 * maxKeptMembers {
		id := fmt.Sprintf("m%03d", i)
		state := memberlist.StateAlive
		switch i % 3 {
		case 1:
			state = memberlist.StateDead
		case 2:
			state = memberlist.StateLeft
		}
		table.m[id] = memberInfo{meta: nodeMeta{ID: id}, state: state, gossipAddr: fmt.Sprintf("127.0.0.1:%d", 10000+i)}
	}
	kept := table.keep()
	if len(kept) != maxKeptMembers { // 2/3 of them did not leave, more than the bound
		t.Fatalf("kept %d members, want the bound %d", len(kept), maxKeptMembers)
	}
	seenDead := false
	for _, km := range kept {
		st := table.m[km.ID].state
		if st == memberlist.StateLeft {
			t.Fatalf("kept %s, which left", km.ID)
		}
		if st == memberlist.StateDead {
			seenDead = true
		} else if seenDead {
			t.Fatalf("alive %s comes after a dead member", km.ID)
		}
	}
}

// memberlist counts a contact with the node itself as a successful join:
// "--join own,other" stopped at once with contacted=1 and never tried
// other again. The node's own address is now left out, and it goes on
// trying other until it answers.
func TestAJoinThroughItsOwnAddressGoesOnTryingTheOthers(t *testing.T) {
	c := newTestCluster(t)
	own, other := freeGossipAddr(t), freeGossipAddr(t)
	logs := newLogCapture()
	a := c.start("a", func(cfg *Config) {
		cfg.GossipAddr = own
		cfg.Join = []string{own, other}
		cfg.Logger = slog.New(logs)
	})
	// Its first attempt is over (whatever it concluded) before b is up.
	waitFor(t, time.Minute, "a's first join attempt", func() bool {
		return logs.find("join failed") != "" || logs.find("joined the gossip pool") != ""
	})
	c.start("b", func(cfg *Config) { cfg.GossipAddr = other })
	waitFor(t, 2*time.Minute, "a to meet b through its join list", func() bool {
		mi, ok := a.members.get("b")
		return ok && mi.state == memberlist.StateAlive
	})
	if l := logs.find("not joining through this node's own gossip address"); l == "" {
		t.Errorf("a did not say it left its own address out of the join")
	}
}

// An address that is not a gossip port (an API port answers HTTP, a raft
// port hangs up) failed the join with memberlist's words only; the log now
// asks whether it is a node's --gossip-addr.
func TestAJoinThroughAnotherProtocolsPortAsksForAGossipAddr(t *testing.T) {
	c := newTestCluster(t)
	raftNode := c.start("r", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer api.Close()
	tests := []struct {
		name string
		addr string
	}{
		{"an HTTP API port", api.Listener.Addr().String()},
		{"a raft port", raftNode.RaftAddr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := newLogCapture()
			id := "j-" + strings.ReplaceAll(tt.name, " ", "-")
			c.start(id, func(cfg *Config) {
				cfg.Join = []string{tt.addr}
				cfg.Logger = slog.New(logs)
			})
			waitFor(t, time.Minute, "the join to fail", func() bool { return logs.find("join failed") != "" })
			if l := logs.find("join failed", "is it a node's --gossip-addr?"); l == "" {
				t.Errorf("the join failure does not ask for a gossip address: %s", logs.find("join failed"))
			}
			c.shutdown(id)
		})
	}
}

// Two processes with the same node id: memberlist logged only "Conflicting
// address for a. Mine: … Theirs: …", and the second one waited for ever,
// "no leader known". Both now log that two nodes run with the same
// --node-id, naming the id and both addresses, and the second one's
// readiness reason says so; the first one stays ready.
func TestASecondNodeWithTheSameIDIsReportedAsSuch(t *testing.T) {
	c := newTestCluster(t)
	firstLogs := newLogCapture()
	first := c.start("a", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.Logger = slog.New(firstLogs)
	})
	waitFor(t, time.Minute, "a to lead", func() bool { ok, _ := first.Readiness(); return ok })

	secondLogs := newLogCapture()
	cfg := testConfig("a", filepath.Join(c.dir, "a-again"), 20099)
	cfg.Join = []string{first.GossipAddr()}
	cfg.Logger = slog.New(secondLogs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the second a: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = second.Shutdown(ctx)
	})

	var reason string
	waitFor(t, 2*time.Minute, "the second a's readiness reason to name the conflict", func() bool {
		_, reason = second.Readiness()
		return strings.Contains(reason, "same --node-id")
	})
	for _, part := range []string{`"a"`, first.GossipAddr(), second.GossipAddr()} {
		if !strings.Contains(reason, part) {
			t.Errorf("reason %q does not name %s", reason, part)
		}
	}
	for name, logs := range map[string]*logCapture{"first": firstLogs, "second": secondLogs} {
		if l := logs.find("ERROR", "same --node-id", first.GossipAddr(), second.GossipAddr()); l == "" {
			t.Errorf("the %s a logged no error naming the duplicate --node-id and both addresses", name)
		}
	}
	if ok, why := first.Readiness(); !ok {
		t.Errorf("the first a is not ready: %s", why)
	}
}

// A node that leaves the pool leaves it for good: it forgets the members
// it kept, so a later start does not rejoin by itself (only Join brings it
// back, as before members were kept).
func TestANodeThatLeavesForgetsTheMembersItKept(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) { cfg.LeaveOnShutdown = true })
	setupLedger(c)
	victim := "n3"
	if c.leader().ID() == victim {
		victim = "n2"
	}
	dir := filepath.Join(c.dir, victim)
	waitFor(t, time.Minute, victim+" keeping both other members", func() bool {
		kept, err := loadKeptMembers(dir)
		return err == nil && len(kept) == 2
	})
	c.shutdown(victim)
	if _, err := os.Stat(filepath.Join(dir, keptMembersFile)); !os.IsNotExist(err) {
		t.Fatalf("%s still holds %s after leaving (stat: %v)", victim, keptMembersFile, err)
	}
}

// A conflict over the node's id is added to the reason a node is not
// ready, and never makes a ready node unready.
func TestAnIDConflictIsInTheReasonOfANodeNotReady(t *testing.T) {
	const conflict = `another node at gossip address 127.0.0.1:7432 also has this node's id "a"`
	tests := []struct {
		name   string
		in     readiness
		ready  bool
		reason string
	}{
		{"a node with no leader says both", readiness{selfID: "a", idConflict: conflict}, false, "no leader known; " + conflict},
		{"a ready leader stays ready", readiness{selfID: "a", writable: true, idConflict: conflict}, true, ""},
		{"without a conflict the reason is the rule's", readiness{selfID: "a"}, false, "no leader known"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready, reason := tt.in.check()
			if ready != tt.ready || reason != tt.reason {
				t.Fatalf("got (%v, %q), want (%v, %q)", ready, reason, tt.ready, tt.reason)
			}
		})
	}
}

func TestIsOwnGossipAddr(t *testing.T) {
	n := &Node{gossipAddr: "127.0.0.1:7422", cfg: Config{GossipAddr: "0.0.0.0:7422"}}
	tests := []struct {
		addr string
		own  bool
	}{
		{"127.0.0.1:7422", true},
		{"127.0.0.2:7422", true}, // loopback, and bound to every interface
		{"0.0.0.0:7422", true},
		{"127.0.0.1:7432", false},
		{"10.0.0.9:7422", false},
		{"node-b:7422", false},
	}
	for _, tt := range tests {
		if got := n.isOwnGossipAddr(tt.addr); got != tt.own {
			t.Errorf("isOwnGossipAddr(%s) = %v, want %v", tt.addr, got, tt.own)
		}
	}
}
