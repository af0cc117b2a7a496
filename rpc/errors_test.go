package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/node"
)

func TestErrorCodes(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name string
		err  error
		want connect.Code
	}{
		{"a wrong field is invalid", &fsm.Error{Code: fsm.CodeInvalid, Field: "amount", Msg: "bad"}, connect.CodeInvalidArgument},
		{"an unknown id is not found", &fsm.Error{Code: fsm.CodeNotFound, Field: "grant_id"}, connect.CodeNotFound},
		{"a taken id already exists", &fsm.Error{Code: fsm.CodeAlreadyExists}, connect.CodeAlreadyExists},
		{"a reused idempotency key already exists", &fsm.Error{Code: fsm.CodeConflict}, connect.CodeAlreadyExists},
		{"too few credits is a failed precondition", &fsm.Error{Code: fsm.CodeInsufficient, Available: 1, Needed: 2}, connect.CodeFailedPrecondition},
		{"a wrong state is a failed precondition", &fsm.Error{Code: fsm.CodeFailedPrecondition}, connect.CodeFailedPrecondition},
		{"a wrapped domain error keeps its code", fmt.Errorf("apply: %w", &fsm.Error{Code: fsm.CodeNotFound}), connect.CodeNotFound},
		{"no leader is unavailable", fmt.Errorf("wait: %w", node.ErrNoLeader), connect.CodeUnavailable},
		{"an unknown outcome is unavailable", fmt.Errorf("x: %w: %w", node.ErrNoLeader, node.ErrOutcomeUnknown), connect.CodeUnavailable},
		{"a node shutting down is unavailable", node.ErrShuttingDown, connect.CodeUnavailable},
		{"a snapshot of nothing applied is unavailable", fmt.Errorf("save snapshot: %w", node.ErrNothingApplied), connect.CodeUnavailable},
		{"an unforwardable write is unavailable", &node.NotLeaderError{}, connect.CodeUnavailable},
		{"a full queue is resource exhausted", node.ErrQueueFull, connect.CodeResourceExhausted},
		{"a deadline is a deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded},
		{"a cancellation is a cancellation", context.Canceled, connect.CodeCanceled},
		{"a Connect error passes through", connect.NewError(connect.CodeAborted, errors.New("x")), connect.CodeAborted},
		{"anything else is internal", errors.New("disk on fire"), connect.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.toConnect(context.Background(), tc.err)
			if got := connect.CodeOf(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
	// The cause of an internal error stays in the log, not the answer.
	if err := s.toConnect(context.Background(), errors.New("disk on fire at /var/lib")); err.Error() == "" || containsAny(err.Error(), "disk", "/var") {
		t.Fatalf("internal error leaks its cause: %v", err)
	}
	// Insufficient credits are written in the credit type's scale.
	err := s.toConnect(context.Background(), inCredits(&fsm.Error{Code: fsm.CodeInsufficient, Available: 1250, Needed: 99999}, "ai", 2))
	ic := insufficientDetail(t, err.(*connect.Error))
	if ic.Available != "12.50" || ic.Needed != "999.99" || ic.CreditTypeId != "ai" {
		t.Fatalf("InsufficientCredits = %v", ic)
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestAmountsAndMoney(t *testing.T) {
	for _, tc := range []struct {
		in    string
		scale uint8
		want  int64
		ok    bool
	}{
		{"12.5", 2, 1250, true},
		{"12", 2, 1200, true},
		{"0.01", 2, 1, true},
		{"12.345", 2, 0, false},
		{"-1", 2, 0, false},
		{"1e3", 2, 0, false},
		{" 1", 2, 0, false},
		{"1152921504606846977", 0, 0, false}, // fsm.MaxAmount + 1
		{"99999999999999999999", 0, 0, false},
	} {
		got, err := parseAmount("amount", tc.in, tc.scale, false, true)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseAmount(%q, %d) = %d, %v; want %d ok=%v", tc.in, tc.scale, got, err, tc.want, tc.ok)
		}
	}
	for micros, want := range map[int64]string{19990000: "19.99", 1234567: "1.234567", 0: "0.00", -560000: "-0.56", 5: "0.000005"} {
		if got := money(micros); got != want {
			t.Errorf("money(%d) = %q, want %q", micros, got, want)
		}
	}
}
