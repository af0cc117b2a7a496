package rpc

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

func TestEventResultsPB(t *testing.T) {
	scales := map[string]uint8{"usd": 2, "tokens": 0}
	results := []fsm.EventResult{
		{EventID: "e1", Status: fsm.EventBurned, CreditTypeID: "usd", Credits: 1250, BalanceAfter: -5, AvailableAfter: 0,
			Burns: []fsm.GrantBurn{{GrantID: "g1", Amount: 1000}, {GrantID: "g2", Amount: 245}, {Amount: 5}}},
		{EventID: "e2", Status: fsm.EventDenied, CreditTypeID: "tokens", Credits: 7, BalanceAfter: 3, AvailableAfter: 3,
			Available: 3, Reason: "not enough credits: available 3, needed 7"},
		{EventID: "e3", Status: fsm.EventRejected, Code: fsm.CodeNotFound, Field: "customer_id", Reason: "no customer c9"},
		{EventID: "e4", Status: fsm.EventRejected, Code: fsm.CodeConflict, Field: "event_id", Reason: "reported before"},
		{EventID: "e5", Status: fsm.EventBurned, Duplicate: true, CreditTypeID: "tokens", Credits: 0, BalanceAfter: 9223372036854775807, AvailableAfter: 1},
		{EventID: "e6", Status: fsm.EventBurned, CreditTypeID: "usd", Credits: 1, BalanceAfter: 1, AvailableAfter: 1,
			Burns: []fsm.GrantBurn{{GrantID: "g3", Amount: 1}}},
	}
	want := []*v1.EventResult{
		{EventId: "e1", Status: v1.EventStatus_EVENT_STATUS_BURNED, CreditTypeId: "usd", Credits: "12.50", BalanceAfter: "-0.05",
			AvailableAfter: "0.00", Burns: []*v1.GrantBurn{{GrantId: "g1", Amount: "10.00"}, {GrantId: "g2", Amount: "2.45"}, {Amount: "0.05"}}},
		{EventId: "e2", Status: v1.EventStatus_EVENT_STATUS_DENIED, CreditTypeId: "tokens", Credits: "7", BalanceAfter: "3",
			AvailableAfter: "3", Available: "3", Reason: "not enough credits: available 3, needed 7"},
		{EventId: "e3", Status: v1.EventStatus_EVENT_STATUS_REJECTED, ErrorCode: connectCodeName(fsm.CodeNotFound), Field: "customer_id", Reason: "no customer c9"},
		{EventId: "e4", Status: v1.EventStatus_EVENT_STATUS_REJECTED, ErrorCode: connectCodeName(fsm.CodeConflict), Field: "id", Reason: "reported before"},
		{EventId: "e5", Status: v1.EventStatus_EVENT_STATUS_BURNED, Duplicate: true, CreditTypeId: "tokens", Credits: "0",
			BalanceAfter: "9223372036854775807", AvailableAfter: "1"},
		{EventId: "e6", Status: v1.EventStatus_EVENT_STATUS_BURNED, CreditTypeId: "usd", Credits: "0.01", BalanceAfter: "0.01",
			AvailableAfter: "0.01", Burns: []*v1.GrantBurn{{GrantId: "g3", Amount: "0.01"}}},
	}
	got := eventResultsPB(results, func(id string) uint8 { return scales[id] })
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("result %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	// Burns of neighbouring results share a slice: an append to one must
	// not reach the next.
	_ = append(got[0].Burns, &v1.GrantBurn{GrantId: "appended"})
	if !proto.Equal(got[5], want[5]) {
		t.Errorf("an append to result 0's burns changed result 5: %v", got[5])
	}
}

// applyAnswering applies cmds as entry index of f with ApplyAnswering; during
// the answer (before the commit) it runs during and returns its error.
func applyAnswering(t *testing.T, f *fsm.FSM, index uint64, during func(results []fsm.Result) error, cmds ...fsm.Command) {
	t.Helper()
	enc := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		enc[i] = b
	}
	var duringErr error
	answer := func(rs [][]fsm.Result) {
		if during != nil {
			duringErr = during(rs[0])
		}
	}
	rs, err := f.ApplyAnswering([]fsm.Entry{{Index: index, Data: fsm.EncodeEntry(fsm.TimestampOf(time.Now()), enc)}}, answer)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs[0] {
		if r.Err != nil {
			t.Fatalf("command %d (%T): %v", i, cmds[i], r.Err)
		}
	}
	if duringErr != nil {
		t.Fatal(duringErr)
	}
}

// A ReportUsage answer is formatted while the leader's state commits: the
// scale of a credit type committed before is read without waiting for that
// commit, and one created in the same entry as the burn waits for it
// rather than formatting with no scale.
func TestResultScalesDoNotWaitForTheCommitUnlessTheyMust(t *testing.T) {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "state.db"), fsm.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	applyAnswering(t, f, 1, nil,
		fsm.CreateCreditType{ID: "usd", Name: "dollars", Scale: 2},
		fsm.UpsertCustomer{ID: "c1"},
		fsm.CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "usd", Category: fsm.Promotional, Amount: 1000})

	burn := func(id, ct string) fsm.Command {
		return fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: ct, Credits: 250}}}
	}
	// Called from the answer itself: a read that waited for the commit
	// would wait for this very call to return, so it must not wait.
	applyAnswering(t, f, 2, func(rs []fsm.Result) error {
		done := make(chan error, 1)
		go func() {
			scaleOf, err := resultScales(f, rs[0].Value.([]fsm.EventResult))
			if err == nil && scaleOf("usd") != 2 {
				err = fmt.Errorf("scale of usd %d, want 2", scaleOf("usd"))
			}
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("the scale of a committed credit type waited for the commit in flight")
		}
	}, burn("u1", "usd"))

	// The credit type and a burn in it, group-committed into one entry:
	// only the commit has the scale.
	scaleOfNew := make(chan uint8, 1)
	applyAnswering(t, f, 3, func(rs []fsm.Result) error {
		started := make(chan struct{})
		go func() {
			close(started)
			scaleOf, err := resultScales(f, rs[3].Value.([]fsm.EventResult))
			if err != nil {
				t.Error(err)
			}
			scaleOfNew <- scaleOf("eur")
		}()
		<-started
		// Let the read find the committed state without "eur" before this
		// entry commits; a slower goroutine only reads after the commit, and
		// the test passes without testing the wait (it cannot fail wrongly).
		time.Sleep(20 * time.Millisecond)
		return nil
	},
		fsm.CreateCreditType{ID: "eur", Name: "euros", Scale: 3},
		fsm.UpsertCustomer{ID: "c2"},
		fsm.CreateGrant{ID: "g2", CustomerID: "c2", CreditTypeID: "eur", Category: fsm.Promotional, Amount: 1000},
		fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u2", CustomerID: "c2", CreditTypeID: "eur", Credits: 250}}})
	if got := <-scaleOfNew; got != 3 {
		t.Errorf("scale of a credit type created in the burn's own entry = %d, want 3", got)
	}
}

// The largest ReportUsage answer there can be (every result burned, with
// the longest ids and amounts, across more grants than a result lists)
// fits what the server may send even at the smallest request bound.
func TestTheLargestUsageAnswerFitsTheSendLimit(t *testing.T) {
	id := func(c byte) string { return strings.Repeat(string(c), fsm.MaxIDLen) }
	burns := make([]fsm.GrantBurn, 3*maxBurnsListed)
	for i := range burns {
		burns[i] = fsm.GrantBurn{GrantID: id('g'), Amount: math.MinInt64}
	}
	results := make([]fsm.EventResult, fsm.MaxEventsPerBatch)
	for i := range results {
		results[i] = fsm.EventResult{EventID: id('e'), Status: fsm.EventBurned, Duplicate: true, CreditTypeID: id('c'),
			Credits: math.MinInt64, Burns: burns, BalanceAfter: math.MinInt64, AvailableAfter: math.MinInt64}
	}
	answer := &v1.ReportUsageResponse{Results: eventResultsPB(results, func(string) uint8 { return 18 })}
	smallest := Options{MaxMessageBytes: 1 << 10}
	if size, limit := proto.Size(answer), smallest.answerMaxBytes(); size > limit {
		t.Fatalf("the largest answer is %d bytes; the server may send %d", size, limit)
	}
	if r := answer.Results[0]; len(r.Burns) != maxBurnsListed || int(r.BurnsOmitted) != len(burns)-maxBurnsListed {
		t.Fatalf("%d burns listed, %d omitted", len(r.Burns), r.BurnsOmitted)
	}
}
