package rpc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

// snapshotChunk bounds one SaveSnapshot message.
const snapshotChunk = 1 << 20

func (a *api) GetStatus(ctx context.Context, req *connect.Request[v1.GetStatusRequest]) (*connect.Response[v1.GetStatusResponse], error) {
	st := a.s.n.Status()
	out := &v1.GetStatusResponse{
		NodeId:            st.NodeID,
		State:             st.State,
		LeaderId:          st.LeaderID,
		LeaderRpcAddr:     st.LeaderRPCAddr,
		Ready:             st.Ready,
		NotReadyReason:    st.NotReadyReason,
		Term:              st.Term,
		LastLogIndex:      st.LastLogIndex,
		CommitIndex:       st.CommitIndex,
		AppliedIndex:      st.AppliedIndex,
		RaftAddr:          st.RaftAddr,
		GossipAddr:        st.GossipAddr,
		RpcAddr:           st.RPCAddr,
		LastSnapshotIndex: st.LastSnapshotIndex,
		ClusterId:         st.ClusterID,
	}
	if !st.LastContact.IsZero() {
		out.LastContact = timestamppb.New(st.LastContact)
	}
	if f := a.s.n.FSM(); f != nil {
		out.LastSeq = f.LastSeq()
		out.LastTime = ts(f.LastTime())
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, &v1.Member{
			Id:       m.ID,
			RaftAddr: m.RaftAddr,
			RpcAddr:  m.RPCAddr,
			Voter:    m.Suffrage == "voter",
			Leader:   m.Leader,
			Suffrage: m.Suffrage,
			Gossip:   m.Gossip,
		})
	}
	return connect.NewResponse(out), nil
}

// checkNodeID checks a member's id. Node ids are the operator's
// (--node-id, node.Config.NodeID): up to 128 bytes of any text, not only the
// characters of the API's ids, so only what no node id can hold is refused.
func checkNodeID(field, id string, required bool) error {
	if id == "" {
		if required {
			return invalidField(field, "is required")
		}
		return nil
	}
	return checkText(field, id, maxNodeIDLen)
}

// maxNodeIDLen is node.Config.Validate's bound on a node id.
const maxNodeIDLen = 128

func memberError(err error, id string) error {
	if errors.Is(err, node.ErrUnknownMember) {
		return notFoundField("node_id", "no member %s in the Raft configuration", id)
	}
	if errors.Is(err, node.ErrLastVoter) {
		return preconditionField("node_id", "%s is the only voter; add another before removing it", id)
	}
	if errors.Is(err, node.ErrNoOtherVoter) {
		return preconditionField("node_id", "the cluster has no other voter to hand leadership to")
	}
	if errors.Is(err, node.ErrTransferToSelf) {
		return invalidField("node_id", "%s is the leader already; name another voter, or none for the most up-to-date one", id)
	}
	if errors.Is(err, node.ErrNotAVoter) {
		return preconditionField("node_id", "%s is not a voter; only a voter can lead", id)
	}
	if errors.Is(err, node.ErrTransferFailed) {
		// Not a bug nor a storage failure: the target is down or behind,
		// or another transfer is under way. Leadership stays; retry.
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("leadership stays with this node: %w", err))
	}
	return err
}

func (a *api) RemoveMember(ctx context.Context, req *connect.Request[v1.RemoveMemberRequest]) (*connect.Response[v1.RemoveMemberResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.RemoveMemberRequest]) (*connect.Response[v1.RemoveMemberResponse], error) {
		return c.cluster.RemoveMember
	}, func(ctx context.Context, m *v1.RemoveMemberRequest) (*v1.RemoveMemberResponse, error) {
		if err := checkNodeID("node_id", m.NodeId, true); err != nil {
			return nil, err
		}
		if err := a.s.n.RemoveMember(ctx, m.NodeId); err != nil {
			return nil, memberError(err, m.NodeId)
		}
		return &v1.RemoveMemberResponse{}, nil
	})
}

func (a *api) TransferLeadership(ctx context.Context, req *connect.Request[v1.TransferLeadershipRequest]) (*connect.Response[v1.TransferLeadershipResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.TransferLeadershipRequest]) (*connect.Response[v1.TransferLeadershipResponse], error) {
		return c.cluster.TransferLeadership
	}, func(ctx context.Context, m *v1.TransferLeadershipRequest) (*v1.TransferLeadershipResponse, error) {
		if err := checkNodeID("node_id", m.NodeId, false); err != nil {
			return nil, err
		}
		if err := a.s.n.TransferLeadership(ctx, m.NodeId); err != nil {
			return nil, memberError(err, m.NodeId)
		}
		return &v1.TransferLeadershipResponse{}, nil
	})
}

// chunkWriter sends what is written as SaveSnapshot messages of at most
// snapshotChunk bytes.
type chunkWriter struct {
	stream *connect.ServerStream[v1.SaveSnapshotResponse]
	buf    []byte
	arm    func() // gives the next send its write deadline
	done   <-chan struct{}
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(snapshotChunk-len(w.buf), len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == snapshotChunk {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	select {
	case <-w.done:
		return connect.NewError(connect.CodeUnavailable, errors.New("the server is shutting down; save the snapshot again"))
	default:
	}
	w.arm()
	err := w.stream.Send(&v1.SaveSnapshotResponse{Chunk: w.buf})
	w.buf = w.buf[:0] // Send has marshaled the message: the buffer is free
	return err
}

func (a *api) SaveSnapshot(ctx context.Context, req *connect.Request[v1.SaveSnapshotRequest], stream *connect.ServerStream[v1.SaveSnapshotResponse]) error {
	select {
	case a.s.snaps <- struct{}{}:
		defer func() { <-a.s.snaps }()
	default:
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"%d snapshots are being saved from this node already, its limit; retry when one has finished, or save from another node", cap(a.s.snaps)))
	}
	w := &chunkWriter{stream: stream, buf: make([]byte, 0, snapshotChunk), arm: func() { a.s.streams.armSend(ctx) }, done: a.s.done}
	if err := a.s.n.SaveSnapshot(ctx, w); err != nil {
		return a.s.toConnect(ctx, err)
	}
	return a.s.toConnect(ctx, w.flush())
}
