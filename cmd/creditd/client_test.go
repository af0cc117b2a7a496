package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node with API keys refuses a client command that sends none, a key it
// does not know, or one whose scope falls short; the node's message speaks
// of an Authorization header, so each refusal also names --api-key, which
// is what a command sends (unary calls and streams alike). An admin key
// goes through.
func TestClientCommandsRefusedForTheirKeyNameAPIKey(t *testing.T) {
	const ingestKey, adminKey = "ingest-key-0123456789", "admin-key-0123456789ab"
	dir := t.TempDir()
	keys := filepath.Join(dir, "api-keys")
	if err := os.WriteFile(keys, []byte("ingest:"+ingestKey+"\nadmin:"+adminKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, "--api-keys-file", keys)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "status without a key", args: []string{"status", "--addr", addr},
			want: []string{"missing API key", "give --api-key KEY (or CREDITD_API_KEY)"}},
		{name: "status with a key the node does not know", args: []string{"status", "--addr", addr, "--api-key", "not-a-key-of-this-node"},
			want: []string{"invalid API key", "--api-key is none of the node's keys"}},
		{name: "export, a stream, without a key", args: []string{"export", "--addr", addr, "--to", "file://" + filepath.Join(dir, "export")},
			want: []string{"missing API key", "give --api-key KEY (or CREDITD_API_KEY)"}},
		{name: "snapshot save with a key of too small a scope", args: []string{"snapshot", "save", filepath.Join(dir, "x.snap"), "--addr", addr, "--api-key", ingestKey},
			want: []string{"needs admin", "give --api-key a key of that scope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "creditd "+strings.Join(tt.args, " "), cli(t, tt.args...), tt.want...)
		})
	}
	await(t, 60*time.Second, "status with the admin key", func() error {
		return cli(t, "status", "--addr", addr, "--api-key", adminKey)
	})
}
