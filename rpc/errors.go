package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

// invalidField is a validation error of one request field. It is an
// *fsm.Error so that the handlers' errors and the state machine's take the
// same path to a Connect code.
func invalidField(field, format string, args ...any) error {
	return &fsm.Error{Code: fsm.CodeInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func notFoundField(field, format string, args ...any) error {
	return &fsm.Error{Code: fsm.CodeNotFound, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func preconditionField(field, format string, args ...any) error {
	return &fsm.Error{Code: fsm.CodeFailedPrecondition, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// prefixed puts a message path in front of a domain error's field, so that
// an error of the plan's "currency" reads "plan.currency" in UpsertPlan.
func prefixed(prefix string, err error) error {
	var fe *fsm.Error
	if !errors.As(err, &fe) || fe.Field == "" {
		return err
	}
	c := *fe
	c.Field = prefix + c.Field
	return &c
}

// renamedField renames a domain error's field from → to, for a request
// whose field has another name than the state machine's.
func renamedField(err error, from, to string) error {
	var fe *fsm.Error
	if !errors.As(err, &fe) || fe.Field != from {
		return err
	}
	c := *fe
	c.Field = to
	return &c
}

// creditsError carries the credit type of an insufficient-credits error, so
// that its available and needed amounts can be written in that type's scale.
type creditsError struct {
	err          error
	creditTypeID string
	scale        uint8
}

func (e *creditsError) Error() string { return e.err.Error() }
func (e *creditsError) Unwrap() error { return e.err }

// inCredits tags err with the credit type its amounts are in.
func inCredits(err error, creditTypeID string, scale uint8) error {
	if err == nil {
		return nil
	}
	return &creditsError{err: err, creditTypeID: creditTypeID, scale: scale}
}

// toConnect maps any error a handler meets to a Connect error. It is the
// only place that chooses codes (see the package doc for the table).
func (s *Server) toConnect(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce // already a Connect error, e.g. from the leader we forwarded to
	}
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return s.domainError(fe, err)
	}
	var nl *node.NotLeaderError
	var big *node.CommandTooLargeError
	switch {
	case errors.As(err, &big):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the request encodes to %d bytes, more than the %d a log entry holds; send it in smaller parts", big.Size, big.Limit))
	case errors.As(err, &nl):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("this node is not the leader and the request could not be forwarded: %s", nl.Error()))
	case errors.Is(err, node.ErrStateMachineFailed):
		// The node logged the failure when it came. Other replicas hold
		// the same state and go on; this one stays behind until restarted.
		return s.stateMachineFailed("use another node (a write may be retried there with the same id)")
	case errors.Is(err, node.ErrOutcomeUnknown):
		return connect.NewError(connect.CodeUnavailable, errors.New("leadership was lost while the write was in flight; its outcome is unknown: retry with the same id"))
	case errors.Is(err, node.ErrNoLeader):
		return connect.NewError(connect.CodeUnavailable, errors.New("no leader: the cluster cannot take writes now; retry"))
	case errors.Is(err, node.ErrShuttingDown):
		return connect.NewError(connect.CodeUnavailable, errors.New("the node is shutting down; retry"))
	case errors.Is(err, node.ErrNothingApplied):
		return connect.NewError(connect.CodeUnavailable, errors.New("the node has applied nothing yet (it is starting or waits to join a cluster); retry"))
	case errors.Is(err, node.ErrQueueFull):
		return connect.NewError(connect.CodeResourceExhausted, errors.New("the leader's write queue is full; retry later"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	rid := requestIDFrom(ctx)
	s.log.ErrorContext(ctx, "internal error", slog.String("request_id", rid), slog.Any("err", err))
	return connect.NewError(connect.CodeInternal, fmt.Errorf("internal error (request id %s)", rid))
}

// stateMachineFailed is what a client is told by a node whose state machine
// failed (node.ErrStateMachineFailed), followed by what to do. It names the
// node: a follower passes on what the leader it forwarded to answered.
func (s *Server) stateMachineFailed(then string) error {
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the state machine on node %s failed: it applies nothing more until that node is restarted; %s", s.n.ID(), then))
}

func (s *Server) domainError(fe *fsm.Error, err error) error {
	var ce *connect.Error
	switch fe.Code {
	case fsm.CodeInvalid:
		ce = connect.NewError(connect.CodeInvalidArgument, fe)
	case fsm.CodeNotFound:
		ce = connect.NewError(connect.CodeNotFound, fe)
	case fsm.CodeAlreadyExists, fsm.CodeConflict:
		ce = connect.NewError(connect.CodeAlreadyExists, fe)
	case fsm.CodeFailedPrecondition:
		ce = connect.NewError(connect.CodeFailedPrecondition, fe)
	case fsm.CodeInsufficient:
		ce = connect.NewError(connect.CodeFailedPrecondition, fe)
		d := &v1.InsufficientCredits{}
		var cr *creditsError
		if errors.As(err, &cr) {
			d.CreditTypeId = cr.creditTypeID
			d.Available = fsm.FormatUnits(fe.Available, cr.scale)
			d.Needed = fsm.FormatUnits(fe.Needed, cr.scale)
			ce = connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("not enough credits: available %s, needed %s", d.Available, d.Needed))
		} else {
			d.Available = fsm.FormatUnits(fe.Available, 0)
			d.Needed = fsm.FormatUnits(fe.Needed, 0)
		}
		addDetail(ce, d)
	default:
		ce = connect.NewError(connect.CodeInternal, fe)
	}
	if fe.Field != "" {
		addDetail(ce, &v1.FieldViolation{Field: fe.Field, Description: fe.Msg})
	}
	return ce
}

func addDetail(ce *connect.Error, m proto.Message) {
	if d, err := connect.NewErrorDetail(m); err == nil {
		ce.AddDetail(d)
	}
}

// connectCodeName is how a rejected usage event reports the code its error
// would have had.
func connectCodeName(c fsm.Code) string {
	switch c {
	case fsm.CodeInvalid:
		return connect.CodeInvalidArgument.String()
	case fsm.CodeNotFound:
		return connect.CodeNotFound.String()
	case fsm.CodeAlreadyExists, fsm.CodeConflict:
		return connect.CodeAlreadyExists.String()
	case fsm.CodeInsufficient, fsm.CodeFailedPrecondition:
		return connect.CodeFailedPrecondition.String()
	}
	return connect.CodeInternal.String()
}
