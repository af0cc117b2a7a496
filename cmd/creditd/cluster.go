package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

const statusHelp = `
Shows the cluster as the node at --addr sees it: one row per member with its
Raft state, suffrage, applied index, last snapshot index, last contact with
the leader and whether it is ready (as /readyz: "yes", or why not), each
member asked for its own figures ("-" when it does not answer). The leader
is marked with *. A last line names the cluster's id as that node sees it
(the id its nodes announce in gossip, so that two clusters' nodes stay
apart; "none" before the node is in a cluster, or in a cluster formed by a
build before cluster ids). Exits 1 after it when the node knows no leader.

Examples:
  creditd status
  creditd status --addr 10.0.0.2:7420 --api-key "$ADMIN_KEY"
  # a cluster serving TLS (serve --tls-cert) under a private CA:
  creditd status --addr https://10.0.0.2:7420 --ca-cert /etc/creditd/ca.pem`

func runStatus(ctx context.Context, args []string) error {
	var cf clientFlags
	fs := newFlagSet("status", "status [flags]", statusHelp)
	addClientFlags(fs, &cf)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	c, err := cf.cluster(cf.addr)
	if err != nil {
		return err
	}
	resp, err := c.GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
	if err != nil {
		return fmt.Errorf("status of %s: %w", cf.addr, err)
	}
	st := resp.Msg
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tSUFFRAGE\tAPPLIED\tSNAPSHOT\tLAST CONTACT\tREADY")
	for _, m := range st.Members {
		mark := " "
		if m.Leader {
			mark = "*"
		}
		state, applied, snap, contact, ready := "-", "-", "-", "-", "-"
		// Each member reports its own figures; one slow member does not
		// hold up the table for long.
		if m.RpcAddr != "" {
			mctx, mcancel := context.WithTimeout(ctx, 3*time.Second)
			if mc, err := cf.cluster(m.RpcAddr); err == nil {
				if r, err := mc.GetStatus(mctx, connect.NewRequest(&v1.GetStatusRequest{})); err == nil {
					s := r.Msg
					state = s.State
					applied = strconv.FormatUint(s.AppliedIndex, 10)
					snap = strconv.FormatUint(s.LastSnapshotIndex, 10)
					ready = "yes"
					if !s.Ready {
						ready = "no: " + s.NotReadyReason
					}
					switch {
					case s.State == "Leader":
						contact = "(leader)"
					case s.LastContact != nil:
						contact = time.Since(s.LastContact.AsTime()).Round(time.Millisecond).String() + " ago"
					default:
						contact = "never"
					}
				}
			}
			mcancel()
		}
		if state == "-" && m.Gossip != "" && m.Gossip != "alive" {
			state = m.Gossip
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, m.Id, m.RpcAddr, state, m.Suffrage, applied, snap, contact, ready)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	cluster := st.ClusterId
	if cluster == "" {
		cluster = "none (not in a cluster yet, or one formed by a build before cluster ids)"
	}
	fmt.Printf("cluster %s, as %s sees it\n", cluster, st.NodeId)
	// A script or probe that runs status to learn whether the cluster
	// takes writes gets the answer in the exit status too.
	if st.LeaderId == "" {
		return fmt.Errorf("status of %s: no leader known", cf.addr)
	}
	return nil
}

const membersHelp = `
members remove ID removes a node from the Raft configuration (the request
goes to the leader). A non-voter is promoted if a voter went. The removed
node stops taking part: stop it. To bring it back, wipe its data dir and
start it with --join: under a new --node-id it is added at once; under its
old id the leader that removed it adds it once the removal is 10 minutes old.

Examples:
  creditd members remove node-3
  creditd members remove node-3 --addr 10.0.0.1:7420 --api-key "$ADMIN_KEY"`

func runMembers(ctx context.Context, args []string) error {
	var cf clientFlags
	fs := newFlagSet("members", "members remove ID [flags]", membersHelp)
	addClientFlags(fs, &cf)
	if len(args) == 0 || args[0] != "remove" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return nil
		}
		fs.Usage()
		return fmt.Errorf("members: want \"members remove ID\": %w", errUsage)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("members remove: want exactly one node id, got %d arguments: %w", fs.NArg(), errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	c, err := cf.cluster(cf.addr)
	if err != nil {
		return err
	}
	if _, err := c.RemoveMember(ctx, connect.NewRequest(&v1.RemoveMemberRequest{NodeId: fs.Arg(0)})); err != nil {
		return fmt.Errorf("remove member %s: %w", fs.Arg(0), err)
	}
	fmt.Printf("removed %s\n", fs.Arg(0))
	return nil
}

const leaderHelp = `
leader transfer [ID] hands leadership to voter ID, or to the most
up-to-date voter without ID. Writes pause for about one election.

Examples:
  creditd leader transfer
  creditd leader transfer node-2 --addr 10.0.0.1:7420`

func runLeader(ctx context.Context, args []string) error {
	var cf clientFlags
	fs := newFlagSet("leader", "leader transfer [ID] [flags]", leaderHelp)
	addClientFlags(fs, &cf)
	if len(args) == 0 || args[0] != "transfer" {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return fmt.Errorf("leader: want \"leader transfer [ID]\": %w", errUsage)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("leader transfer: want at most one node id: %w", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	c, err := cf.cluster(cf.addr)
	if err != nil {
		return err
	}
	if _, err := c.TransferLeadership(ctx, connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: fs.Arg(0)})); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	fmt.Println("leadership transferred")
	return nil
}

const snapshotHelp = `
snapshot save FILE streams a consistent snapshot of the node at --addr into
FILE (written to a temporary FILE.*.tmp of its own, then renamed). --timeout
bounds the wait for the first bytes and each pause between chunks, not the
whole transfer, which goes on as long as the snapshot keeps flowing.

snapshot restore FILE prepares an EMPTY data dir, offline, to start a new
cluster from FILE (disaster recovery): then start "creditd serve" on that
data dir with the same --node-id and --raft-addr, and join other fresh nodes
to it; they catch up from the snapshot. Ctrl-C or SIGTERM stops a restore
under way.

Examples:
  creditd snapshot save backup.snap --addr 10.0.0.1:7420 --api-key "$ADMIN_KEY"
  creditd snapshot save backup.snap --addr https://10.0.0.1:7420 --ca-cert ca.pem --api-key "$ADMIN_KEY"
  creditd snapshot restore backup.snap --data-dir /var/lib/creditd-new --node-id a
  creditd serve --data-dir /var/lib/creditd-new --node-id a`

func runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore") {
		writeSnapshotUsage(os.Stderr)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return fmt.Errorf("snapshot: want \"snapshot save FILE\" or \"snapshot restore FILE\": %w", errUsage)
	}
	fs := newFlagSet("snapshot "+args[0], "snapshot "+args[0]+" FILE [flags]", snapshotHelp)
	if args[0] == "save" {
		return snapshotSave(ctx, fs, args[1:])
	}
	return snapshotRestore(ctx, fs, args[1:])
}

// writeSnapshotUsage is "creditd snapshot --help": save and restore take
// different flags (a client's, a node's), so it lists both sets; a single
// flag set here would list none.
func writeSnapshotUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: creditd snapshot save|restore FILE [flags]\n\n%s\n", strings.TrimSpace(snapshotHelp))
	save := flag.NewFlagSet("snapshot save", flag.ContinueOnError)
	addSnapshotSaveFlags(save, new(clientFlags))
	restore := flag.NewFlagSet("snapshot restore", flag.ContinueOnError)
	addNodeFlags(restore, new(serveFlags))
	for _, fs := range []*flag.FlagSet{save, restore} {
		fmt.Fprintf(w, "\nFlags of %s (each also CREDITD_<NAME>):\n", fs.Name())
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// addSnapshotSaveFlags are a client's flags, but --timeout bounds each wait
// for data instead of the whole answer: a snapshot of gigabytes takes far
// longer than any timeout meant for an answer to arrive.
func addSnapshotSaveFlags(fs *flag.FlagSet, f *clientFlags) {
	addClientFlags(fs, f)
	fs.Lookup("timeout").Usage = "how long to wait for the snapshot's first bytes, and then for each next chunk; the whole transfer may take longer"
}

func snapshotSave(ctx context.Context, fs *flag.FlagSet, args []string) error {
	var cf clientFlags
	addSnapshotSaveFlags(fs, &cf)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("snapshot save: want one FILE: %w", errUsage)
	}
	path := fs.Arg(0)
	c, err := cf.cluster(cf.addr)
	if err != nil {
		return err
	}
	// An idle timer, not a deadline: it is stopped while a chunk is
	// written, and restarted for each wait for the next.
	stalled := fmt.Errorf("no snapshot data from %s for %s (--timeout)", cf.addr, cf.timeout)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(cf.timeout, func() { cancel(stalled) })
	defer idle.Stop()
	size, err := writeFileAtomic(path, func(w io.Writer) (size int64, err error) {
		stream, err := c.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
		if err != nil {
			return 0, err
		}
		defer stream.Close()
		for stream.Receive() {
			idle.Stop()
			n, err := w.Write(stream.Msg().Chunk)
			size += int64(n)
			if err != nil {
				return size, err
			}
			idle.Reset(cf.timeout)
		}
		return size, stream.Err()
	})
	if err != nil {
		if context.Cause(ctx) == stalled {
			return fmt.Errorf("snapshot save: %w", stalled)
		}
		return fmt.Errorf("snapshot save: %w", err)
	}
	fmt.Printf("saved %d bytes to %s\n", size, path)
	return nil
}

func snapshotRestore(ctx context.Context, fs *flag.FlagSet, args []string) error {
	var f serveFlags
	addNodeFlags(fs, &f)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("snapshot restore: want one FILE: %w", errUsage)
	}
	logger, err := newLogger(os.Stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	defer in.Close()
	cfg := node.Config{
		NodeID:            f.nodeID,
		DataDir:           f.dataDir,
		RaftAddr:          f.raftAddr,
		AdvertiseRaftAddr: f.advRaft,
		GossipAddr:        "127.0.0.1:0", // not used offline
		Logger:            logger,
	}
	// ctx ends on SIGINT or SIGTERM, which would otherwise not stop a
	// restore that reads for minutes: the reader fails once ctx is done,
	// and a read blocked on a pipe or FIFO is woken by a deadline (a
	// regular file's reads do not block, and take no deadline).
	stop := context.AfterFunc(ctx, func() { _ = in.SetReadDeadline(time.Now()) })
	defer stop()
	if err := node.RestoreDataDir(cfg, node.ContextReader(ctx, in)); err != nil {
		return err
	}
	abs, _ := filepath.Abs(f.dataDir)
	// The data dir keeps the node's id, so serve needs no --node-id.
	id, err := node.KeptNodeID(f.dataDir)
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	fmt.Printf("restored %s into %s as node %s; start it with: %s\n", fs.Arg(0), abs, id,
		restoredServeCommand(f.dataDir, f.raftAddr, f.advRaft))
	return nil
}

// restoredServeCommand is the serve command that starts a restored data
// dir. The raft configuration holds the advertised raft address, so serve
// must advertise the same one, or the node would not find itself in it.
func restoredServeCommand(dataDir, raftAddr, advertiseRaftAddr string) string {
	cmd := "creditd serve --data-dir " + dataDir + " --raft-addr " + raftAddr
	if advertiseRaftAddr != "" {
		cmd += " --advertise-raft-addr " + advertiseRaftAddr
	}
	return cmd
}
