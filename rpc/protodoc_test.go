package rpc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/creditd/creditd/fsm"
)

// fieldComment is the comment block right above the first line of a .proto
// file of proto/creditd/v1 that starts with decl ("string name"), joined
// into one line.
func fieldComment(t *testing.T, file, decl string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "proto", "creditd", "v1", file))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if l := strings.TrimSpace(l); l != decl && !strings.HasPrefix(l, decl+" ") {
			continue
		}
		var c []string
		for j := i - 1; j >= 0 && strings.HasPrefix(strings.TrimSpace(lines[j]), "//"); j-- {
			c = append([]string{strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[j]), "//"))}, c...)
		}
		return strings.Join(c, " ")
	}
	t.Fatalf("%s: no line starts with %q", file, decl)
	return ""
}

// TestProtoDocumentsTheLimits: the .proto comments, which are the API's
// reference (and gen/'s doc comments), state the limits this package
// enforces, with the numbers the code uses.
func TestProtoDocumentsTheLimits(t *testing.T) {
	keyMax := strconv.Itoa(fsm.MaxIDLen - len(fsm.PurchaseGrantPrefix))
	for _, tc := range []struct{ file, field, want string }{
		{"purchase.proto", "string idempotency_key", "at most " + keyMax + " characters"},
		{"purchase.proto", "string provider_ref", "no control characters"},
		{"purchase.proto", "string provider_status", "no control characters"},
		{"purchase.proto", "string provider_status", operatorStatus(fsm.OutcomeSucceeded)},
		{"purchase.proto", "string provider_status", operatorStatus(fsm.OutcomeFailed)},
		{"purchase.proto", "string provider_status", operatorStatus(fsm.OutcomeInvoicePaid)},
		{"purchase.proto", "string failure_reason", "no control characters except newline, carriage return and tab"},
		{"catalog.proto", "string billing_ref", "no control characters"},
		{"grant.proto", "string source_ref", "no control characters"},
		{"types.proto", "package creditd.v1;", "hold no control characters"},
	} {
		if c := fieldComment(t, tc.file, tc.field); !strings.Contains(c, tc.want) {
			t.Errorf("%s %s: comment %q does not say %q", tc.file, tc.field, c, tc.want)
		}
	}
}
