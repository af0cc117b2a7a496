package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// fakeCluster serves ClusterService.SaveSnapshot with a handler the test
// writes, over h2c as creditd does; n counts the requests from 1.
type fakeCluster struct {
	creditdv1connect.UnimplementedClusterServiceHandler
	save func(ctx context.Context, n int, stream *connect.ServerStream[v1.SaveSnapshotResponse]) error
	mu   sync.Mutex
	reqs int
}

func (f *fakeCluster) SaveSnapshot(ctx context.Context, _ *connect.Request[v1.SaveSnapshotRequest], stream *connect.ServerStream[v1.SaveSnapshotResponse]) error {
	f.mu.Lock()
	f.reqs++
	n := f.reqs
	f.mu.Unlock()
	return f.save(ctx, n, stream)
}

// serveFake serves f on a loopback port until the test ends.
func serveFake(t *testing.T, f *fakeCluster) (addr string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(creditdv1connect.NewClusterServiceHandler(f))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &p}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// tempFiles lists the temporary files of saves to path.
func tempFiles(t *testing.T, path string) []string {
	t.Helper()
	m, err := filepath.Glob(path + "*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// --timeout bounds each wait for snapshot data, not the transfer: a
// snapshot of gigabytes takes longer to arrive than any answer should,
// while a node that stops sending is given up on.
func TestSnapshotSaveTimeoutBoundsEachWaitForDataNotTheTransfer(t *testing.T) {
	chunk := bytes.Repeat([]byte("s"), 1000)
	for _, tc := range []struct {
		name    string
		timeout string
		save    func(ctx context.Context, s *connect.ServerStream[v1.SaveSnapshotResponse]) error
		wantErr string // "" = saved; "any" = some error
	}{
		{
			name:    "a stream that keeps flowing for twice the timeout is saved",
			timeout: "2s",
			save: func(ctx context.Context, s *connect.ServerStream[v1.SaveSnapshotResponse]) error {
				for range 8 { // a chunk every 500ms: 4s in all
					if err := s.Send(&v1.SaveSnapshotResponse{Chunk: chunk}); err != nil {
						return err
					}
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(500 * time.Millisecond):
					}
				}
				return nil
			},
		},
		{
			name:    "a stream that stops after a chunk fails naming --timeout",
			timeout: "1s",
			save: func(ctx context.Context, s *connect.ServerStream[v1.SaveSnapshotResponse]) error {
				if err := s.Send(&v1.SaveSnapshotResponse{Chunk: chunk}); err != nil {
					return err
				}
				<-ctx.Done()
				return ctx.Err()
			},
			wantErr: "--timeout",
		},
		{
			name:    "a node that sends nothing fails",
			timeout: "1s",
			save: func(ctx context.Context, s *connect.ServerStream[v1.SaveSnapshotResponse]) error {
				<-ctx.Done()
				return ctx.Err()
			},
			wantErr: "any",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveFake(t, &fakeCluster{save: func(ctx context.Context, _ int, s *connect.ServerStream[v1.SaveSnapshotResponse]) error {
				return tc.save(ctx, s)
			}})
			path := filepath.Join(t.TempDir(), "backup.snap")
			err := run(t.Context(), []string{"snapshot", "save", path, "--addr", addr, "--timeout", tc.timeout}, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("snapshot save --timeout %s: %v", tc.timeout, err)
			case tc.wantErr == "":
				if b, err := os.ReadFile(path); err != nil || len(b) != 8*len(chunk) {
					t.Errorf("saved %d bytes (%v); want %d", len(b), err, 8*len(chunk))
				}
			case err == nil:
				t.Fatalf("snapshot save --timeout %s succeeded; want an error", tc.timeout)
			case tc.wantErr != "any" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("snapshot save --timeout %s: %v; want an error naming %s", tc.timeout, err, tc.wantErr)
			default:
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a failed save left %s (%v)", path, err)
				}
			}
			if tmp := tempFiles(t, path); len(tmp) > 0 {
				t.Errorf("temporary files left behind: %v", tmp)
			}
		})
	}
}

// Two saves to one FILE (overlapping cron backups) once shared FILE.tmp:
// the second truncated and overwrote the first's bytes, the first renamed
// the mixture to FILE and reported it saved. Each save now writes a
// temporary file of its own.
func TestOverlappingSnapshotSavesToOneFileNeverMixTheirBytes(t *testing.T) {
	const chunk = 1000
	cont := map[int]chan struct{}{1: make(chan struct{}), 2: make(chan struct{})}
	addr := serveFake(t, &fakeCluster{save: func(ctx context.Context, n int, s *connect.ServerStream[v1.SaveSnapshotResponse]) error {
		mark := byte('A' + n - 1)
		if err := s.Send(&v1.SaveSnapshotResponse{Chunk: bytes.Repeat([]byte{mark}, chunk)}); err != nil {
			return err
		}
		select {
		case <-cont[n]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if n == 2 {
			return connect.NewError(connect.CodeUnavailable, errors.New("node going away"))
		}
		return s.Send(&v1.SaveSnapshotResponse{Chunk: bytes.Repeat([]byte{mark}, chunk)})
	}})
	path := filepath.Join(t.TempDir(), "backup.snap")
	save := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			done <- run(t.Context(), []string{"snapshot", "save", path, "--addr", addr, "--timeout", "60s"}, io.Discard)
		}()
		return done
	}
	// first bytes is whether a temporary file of the saves begins with mark.
	firstBytes := func(mark byte) func() error {
		return func() error {
			for _, tmp := range tempFiles(t, path) {
				if b, _ := os.ReadFile(tmp); len(b) > 0 && b[0] == mark {
					return nil
				}
			}
			return errors.New("not yet")
		}
	}
	first := save()
	await(t, 30*time.Second, "the first save's first chunk in a temporary file", firstBytes('A'))
	second := save()
	await(t, 30*time.Second, "the second save's first chunk in a temporary file", firstBytes('B'))
	close(cont[1])
	errFirst := <-first
	close(cont[2])
	errSecond := <-second
	if errFirst != nil {
		t.Fatalf("the first save failed: %v", errFirst)
	}
	if errSecond == nil {
		t.Errorf("the second save, whose stream failed, reported success")
	}
	got, _ := os.ReadFile(path)
	if want := bytes.Repeat([]byte("A"), 2*chunk); !bytes.Equal(got, want) {
		t.Errorf("the first save reported success, but %s holds %d×'A' and %d×'B' (the second save: %v)",
			filepath.Base(path), bytes.Count(got, []byte("A")), bytes.Count(got, []byte("B")), errSecond)
	}
	if tmp := tempFiles(t, path); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

// main turns SIGINT and SIGTERM into a cancelled context
// (signal.NotifyContext), so the signals no longer end the process by
// themselves: snapshot restore must stop on that context, or a restore of
// a large snapshot (minutes) goes on whatever is sent short of SIGKILL.
// The snapshot comes from a FIFO that keeps the restore reading.
func TestSnapshotRestoreStopsOnSIGINTOrSIGTERM(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "backup.snap")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	w, err := os.OpenFile(fifo, os.O_RDWR, 0) // does not block on Linux
	if err != nil {
		t.Fatal(err)
	}
	var closeOnce sync.Once
	closeW := func() { closeOnce.Do(func() { w.Close() }) }
	defer closeW()
	// A snapshot header (magic, applied index 7), then part of a body.
	hdr := append([]byte("CRDSNAP1"), 0, 0, 0, 0, 0, 0, 0, 7)
	if _, err := w.Write(append(hdr, bytes.Repeat([]byte{0}, 4096)...)); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "new")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"snapshot", "restore", fifo, "--data-dir", dataDir,
			"--node-id", "a", "--raft-addr", freePort(t), "--log-level", "error"}, io.Discard)
	}()
	// raft's snapshot store names the snapshot being written ID.tmp: the
	// restore is copying the body then.
	await(t, 30*time.Second, "the restore copying the snapshot's body", func() error {
		select {
		case err := <-done:
			done <- err
			return nil
		default:
		}
		if m, _ := filepath.Glob(filepath.Join(dataDir, "snapshots", "*.tmp")); len(m) > 0 {
			return nil
		}
		return errors.New("not yet")
	})
	cancel() // what SIGINT or SIGTERM does to run's context
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("snapshot restore stopped with %v; want the cancellation", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("30s after SIGINT (run's context cancelled) snapshot restore is still running")
		closeW()
		<-done
	}
}

// The command snapshot restore prints starts the node as restored: with the
// advertised raft address the restore wrote into the configuration.
func TestTheServeCommandARestorePrintsAdvertisesTheRestoredAddress(t *testing.T) {
	for _, tc := range []struct{ adv, want string }{
		{"", "creditd serve --data-dir d --raft-addr 0.0.0.0:7421"},
		{"10.0.0.5:7421", "creditd serve --data-dir d --raft-addr 0.0.0.0:7421 --advertise-raft-addr 10.0.0.5:7421"},
	} {
		if got := restoredServeCommand("d", "0.0.0.0:7421", tc.adv); got != tc.want {
			t.Errorf("advertised %q: %q, want %q", tc.adv, got, tc.want)
		}
	}
}
