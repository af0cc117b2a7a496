package rpc

import (
	"testing"

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
