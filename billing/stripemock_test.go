package billing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testStripeKey     = "sk_test_123"
	testWebhookSecret = "whsec_test_secret"
)

// stripeMockVersion is the stripe-mock .ci/run installs.
const stripeMockVersion = "github.com/stripe/stripe-mock@v0.203.0"

var (
	stripeMockOnce sync.Once
	stripeMockPath string
	stripeMockErr  error
)

// stripeMockBinary finds stripe-mock on PATH or in $(go env GOPATH)/bin, or
// else builds it once per test binary with `go install` (from the Go module
// proxy) into a directory under the OS temp dir, reused by later runs.
func stripeMockBinary() (string, error) {
	stripeMockOnce.Do(func() { stripeMockPath, stripeMockErr = findOrBuildStripeMock() })
	return stripeMockPath, stripeMockErr
}

func findOrBuildStripeMock() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(dir, "bin", "stripe-mock")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	gobin := filepath.Join(os.TempDir(), "creditd-stripe-mock-v0.203.0")
	p := filepath.Join(gobin, "stripe-mock")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	cmd := exec.CommandContext(ctx, "go", "install", stripeMockVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("stripe-mock is not on PATH nor in $(go env GOPATH)/bin, and `go install %s` failed: %v: %s",
			stripeMockVersion, err, bytes.TrimSpace(msg))
	}
	return p, nil
}

var listenRE = regexp.MustCompile(`Listening for (HTTP|HTTPS) at address: (\S+)`)

// sharedMock is one stripe-mock per test binary: it keeps no state, so tests
// can share it, and starting it (loading Stripe's OpenAPI spec) costs
// seconds. The first test that needs it starts it; TestMain stops it.
var sharedMock struct {
	once     sync.Once
	url      string
	stop     func()
	noBinary error // stripe-mock could be neither found nor built
	err      error // it was found but did not start
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedMock.stop != nil {
		sharedMock.stop()
	}
	os.Exit(code)
}

// startStripeMock returns the HTTP base URL of the shared stripe-mock, on
// loopback ports chosen by the kernel. Outside CI a binary that can be
// neither found nor built skips the test, saying why; in CI (CI=true) it
// fails it.
func startStripeMock(t *testing.T) string {
	t.Helper()
	sharedMock.once.Do(func() {
		bin, err := stripeMockBinary()
		if err != nil {
			sharedMock.noBinary = err
			return
		}
		sharedMock.url, sharedMock.stop, sharedMock.err = launchStripeMock(bin)
	})
	switch {
	case sharedMock.noBinary != nil && os.Getenv("CI") == "true":
		t.Fatalf("stripe-mock is required in CI: %v", sharedMock.noBinary)
	case sharedMock.noBinary != nil:
		t.Skipf("skipping: %v", sharedMock.noBinary)
	case sharedMock.err != nil:
		t.Fatalf("stripe-mock: %v", sharedMock.err)
	}
	return sharedMock.url
}

func launchStripeMock(bin string) (url string, stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	// Both addresses: with only -http-addr stripe-mock still opens HTTPS on
	// every interface.
	cmd := exec.CommandContext(ctx, bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		cancel()
		return "", nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(done) }()
	stop = func() { cancel(); <-done }

	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil && m[1] == "HTTP" && !sent {
				found <- m[2]
				sent = true
			}
		}
		// Drain until the process exits so it never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case addr := <-found:
		return "http://" + addr, stop, nil
	case <-done:
		stop()
		return "", nil, errors.New("stripe-mock exited before listening")
	case <-time.After(60 * time.Second):
		stop()
		return "", nil, errors.New("stripe-mock printed no HTTP address within 60s")
	}
}

func newTestStripe(t *testing.T, url string) *Stripe {
	t.Helper()
	s, err := NewStripe(StripeOptions{SecretKey: Secret{testStripeKey}, WebhookSecret: Secret{testWebhookSecret}, URL: url})
	if err != nil {
		t.Fatalf("NewStripe: %v", err)
	}
	return s
}
