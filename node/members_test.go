package node

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// The member table forgets members long gone, so that nodes coming and going
// under new ids do not grow it for ever, but never one raft still has.
func TestTheMemberTableForgetsMembersLongGone(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	members := []struct {
		id    string
		state memberlist.NodeStateType
		ago   time.Duration
	}{
		{"alive-for-ages", memberlist.StateAlive, 1000 * time.Hour},
		{"left-an-hour-ago", memberlist.StateLeft, time.Hour},
		{"left-two-days-ago", memberlist.StateLeft, 48 * time.Hour},
		{"dead-two-days-ago", memberlist.StateDead, 48 * time.Hour},
		{"dead-four-days-ago", memberlist.StateDead, 96 * time.Hour},
		{"dead-voter-four-days-ago", memberlist.StateDead, 96 * time.Hour},
		{"left-voter-two-days-ago", memberlist.StateLeft, 48 * time.Hour},
	}
	table := newMemberTable()
	for _, m := range members {
		table.m[m.id] = memberInfo{meta: nodeMeta{ID: m.id}, state: m.state, since: now.Add(-m.ago)}
	}
	inRaft := func(id string) bool { return id == "dead-voter-four-days-ago" || id == "left-voter-two-days-ago" }

	gone := table.forget(now, inRaft)
	if want := []string{"dead-four-days-ago", "left-two-days-ago"}; !slices.Equal(gone, want) {
		t.Fatalf("forgot %v, want %v", gone, want)
	}
	var kept []string
	for _, mi := range table.list() {
		kept = append(kept, mi.meta.ID)
	}
	want := []string{"alive-for-ages", "dead-two-days-ago", "dead-voter-four-days-ago", "left-an-hour-ago", "left-voter-two-days-ago"}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	if again := table.forget(now, inRaft); len(again) != 0 {
		t.Fatalf("a second pass forgot %v", again)
	}
}
