package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/creditd/creditd/billing"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/internal/testca"
)

// nodeTLS is one node's certificate and key files, issued by ca, whose
// bundle is in caFile.
type nodeTLS struct {
	ca                *testca.CA
	caFile            string
	certFile, keyFile string
	leaf              testca.Leaf
}

func newNodeTLS(t *testing.T, ca *testca.CA) nodeTLS {
	t.Helper()
	dir := t.TempDir()
	n := nodeTLS{ca: ca, caFile: ca.WriteCert(t, dir, "ca.pem"),
		certFile: filepath.Join(dir, "node.pem"), keyFile: filepath.Join(dir, "node-key.pem")}
	n.leaf = ca.Issue(t, time.Time{}, time.Time{})
	n.leaf.Write(t, n.certFile, n.keyFile)
	return n
}

// args are serve's flags for this pair, trusting the CA for peers.
func (n nodeTLS) args() []string {
	return []string{"--tls-cert", n.certFile, "--tls-key", n.keyFile, "--tls-ca", n.caFile}
}

// tlsClient trusts pool (nil: the system's roots) and speaks HTTP/2, or
// HTTP/1.1 only.
func tlsClient(pool *x509.CertPool, http1 bool) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{RootCAs: pool}}
	if http1 {
		tr.Protocols.SetHTTP1(true)
	} else {
		tr.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// servedNode is a `creditd serve` run in this process by serveNode.
type servedNode struct {
	id, rpc, gossip string
	url             string // scheme://rpc
	hc              *http.Client
}

func (s servedNode) cluster() creditdv1connect.ClusterServiceClient {
	return creditdv1connect.NewClusterServiceClient(s.hc, s.url)
}

// serveNode runs `creditd serve` with args on free loopback ports until
// the test ends, and returns once /healthz answers hc at scheme.
func serveNode(t *testing.T, id string, hc *http.Client, scheme string, args ...string) servedNode {
	t.Helper()
	s := servedNode{id: id, rpc: freePort(t), gossip: freePort(t), hc: hc}
	s.url = scheme + "://" + s.rpc
	args = append([]string{"--node-id", id, "--data-dir", t.TempDir(), "--rpc-addr", s.rpc, "--raft-addr", freePort(t),
		"--gossip-addr", s.gossip, "--log-level", "error"}, args...)
	runServeUntilTestEnds(t, id+"'s API", hc, s.url, args)
	return s
}

// awaitCluster waits until every node reports voters voters, a leader and
// that it is ready; it returns the leader's id.
func awaitCluster(t *testing.T, voters int, nodes ...servedNode) (leaderID string) {
	t.Helper()
	await(t, 2*time.Minute, fmt.Sprintf("%d voters with a leader, all ready", voters), func() error {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			st, err := n.cluster().GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			got := 0
			for _, m := range st.Msg.Members {
				if m.Suffrage == "voter" {
					got++
				}
			}
			if got != voters || !st.Msg.Ready || st.Msg.LeaderId == "" {
				return fmt.Errorf("%s: %d voters, ready %v (%s), leader %q", n.id, got, st.Msg.Ready, st.Msg.NotReadyReason, st.Msg.LeaderId)
			}
			leaderID = st.Msg.LeaderId
		}
		return nil
	})
	return leaderID
}

// upsertCustomer writes through n, retrying while the cluster has no
// leader for a moment (UNAVAILABLE); the write is idempotent.
func upsertCustomer(ctx context.Context, n servedNode, id string) error {
	c := creditdv1connect.NewCatalogServiceClient(n.hc, n.url)
	return retry(ctx, func(ctx context.Context) error {
		_, err := c.UpsertCustomer(ctx, connect.NewRequest(&v1.UpsertCustomerRequest{Id: id, Name: id}))
		return err
	})
}

// forwarded reads creditd_rpc_forwarded_total from n's /metrics.
func forwarded(t *testing.T, n servedNode) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/metrics", nil)
	res, err := n.hc.Do(req)
	if err != nil {
		t.Fatalf("%s /metrics: %v", n.id, err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "creditd_rpc_forwarded_total "); ok {
			got, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("%s /metrics: %q", n.id, sc.Text())
			}
			return got
		}
	}
	t.Fatalf("%s /metrics: no creditd_rpc_forwarded_total", n.id)
	return 0
}

// cli runs a creditd client command in this process with a deadline.
func cli(t *testing.T, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err := run(ctx, args, io.Discard)
	if ctx.Err() != nil {
		t.Fatalf("creditd %s waited out its deadline: %v", strings.Join(args, " "), err)
	}
	return err
}

// stdoutOf runs fn with the process's standard output going to a pipe,
// and returns what it wrote. Only for tests that are not parallel.
func stdoutOf(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		read <- b
	}()
	saved := os.Stdout
	os.Stdout = w
	err = fn()
	os.Stdout = saved
	w.Close()
	out := <-read
	r.Close()
	return string(out), err
}

// wantErr fails unless err says every one of want.
func wantErr(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error; want one saying %q", what, want)
	}
	t.Logf("%s: %v", what, err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not say %q", what, err, w)
		}
	}
}

// Three nodes serving TLS: a follower forwards writes to the leader over
// HTTPS, trusting --tls-ca; clients that trust the CA speak HTTP/2 (or
// HTTP/1.1) and the CLI's commands take https:// and --ca-cert; a client
// that does not trust the CA, or speaks cleartext, is told why it fails.
func TestATLSClusterForwardsOverTLSAndItsClientsNeedTheCA(t *testing.T) {
	// The stripe connector, for its webhook route; its API is never
	// reached (no purchase is made).
	const webhookSecret = "whsec_creditd_tls_test"
	t.Setenv(billing.EnvStripeSecretKey, "sk_test_creditd_tls_test")
	t.Setenv(billing.EnvStripeWebhookSecret, webhookSecret)
	t.Setenv(billing.EnvStripeAPIURL, "http://127.0.0.1:1")
	ca := testca.New(t, "creditd test CA")
	hc := tlsClient(ca.Pool(), false)
	t1 := newNodeTLS(t, ca)
	n1 := serveNode(t, "t1", hc, "https", append(t1.args(), "--billing", "stripe")...)
	nodes := []servedNode{n1}
	for _, id := range []string{"t2", "t3"} {
		nt := newNodeTLS(t, ca)
		nodes = append(nodes, serveNode(t, id, hc, "https", append(nt.args(), "--billing", "stripe", "--join", n1.gossip)...))
	}
	leaderID := awaitCluster(t, 3, nodes...)
	var follower servedNode
	for _, n := range nodes {
		if n.id != leaderID {
			follower = n
		}
	}

	t.Run("a write sent to a follower is forwarded over TLS and answered", func(t *testing.T) {
		before := forwarded(t, follower)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := upsertCustomer(ctx, follower, "forwarded-over-tls"); err != nil {
			t.Fatalf("write through follower %s: %v", follower.id, err)
		}
		if after := forwarded(t, follower); after <= before {
			t.Errorf("follower %s forwarded %d requests before the write and %d after: the write was not forwarded", follower.id, before, after)
		}
		// The leader has it: a linearizable read there finds it.
		var leader servedNode
		for _, n := range nodes {
			if n.id == leaderID {
				leader = n
			}
		}
		c := creditdv1connect.NewCatalogServiceClient(leader.hc, leader.url)
		if _, err := c.GetCustomer(ctx, connect.NewRequest(&v1.GetCustomerRequest{Id: "forwarded-over-tls"})); err != nil {
			t.Errorf("the leader does not have the forwarded write: %v", err)
		}
	})

	t.Run("a webhook posted to a follower is forwarded to the leader over TLS", func(t *testing.T) {
		// A follower verifies the signature, then passes the event on to
		// the leader, which answers; an event type creditd does not act on
		// is answered 200 "ignored". Over HTTP/1.1, as Stripe posts.
		payload, err := json.Marshal(map[string]any{"id": "evt_tls_forward", "object": "event", "api_version": stripe.APIVersion,
			"type": "customer.created", "created": time.Now().Unix(), "livemode": false,
			"data": map[string]any{"object": map[string]any{"id": "cus_1", "object": "customer"}}})
		if err != nil {
			t.Fatal(err)
		}
		signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: webhookSecret, Timestamp: time.Now()})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, follower.url+billing.WebhookPath, bytes.NewReader(payload))
		req.Header.Set("Stripe-Signature", signed.Header)
		req.Header.Set("Content-Type", "application/json")
		res, err := tlsClient(ca.Pool(), true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "ignored") {
			t.Errorf("webhook through follower %s: %s %s; want 200 and the leader's \"ignored\"", follower.id, res.Status, body)
		}
	})

	t.Run("clients that trust the CA speak HTTP/2, or HTTP/1.1", func(t *testing.T) {
		for _, http1 := range []bool{false, true} {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, follower.url+"/healthz", nil)
			res, err := tlsClient(ca.Pool(), http1).Do(req)
			cancel()
			if err != nil {
				t.Fatalf("HTTP/1.1 only %v: %v", http1, err)
			}
			res.Body.Close()
			if want := map[bool]int{false: 2, true: 1}[http1]; res.ProtoMajor != want || res.TLS == nil {
				t.Errorf("HTTP/1.1 only %v: %s (TLS %v); want HTTP/%d over TLS", http1, res.Proto, res.TLS != nil, want)
			}
		}
	})

	t.Run("a client without the CA is refused with a certificate error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, follower.url+"/healthz", nil)
		res, err := tlsClient(nil, false).Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatal("a client trusting only the system's roots was served")
		}
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("error %v; want x509.UnknownAuthorityError", err)
		}
		wantErr(t, "status without --ca-cert", cli(t, "status", "--addr", follower.url, "--timeout", "20s"),
			"certificate signed by unknown authority", "--ca-cert")
		other := testca.New(t, "another CA").WriteCert(t, t.TempDir(), "other-ca.pem")
		wantErr(t, "status with another CA's --ca-cert", cli(t, "status", "--addr", follower.url, "--ca-cert", other, "--timeout", "20s"),
			"certificate signed by unknown authority", other)
	})

	t.Run("a cleartext client at a TLS port is told to use https", func(t *testing.T) {
		wantErr(t, "status --addr http://", cli(t, "status", "--addr", "http://"+follower.rpc, "--timeout", "20s"),
			"serves TLS", "--addr https://"+follower.rpc)
		wantErr(t, "status --addr host:port", cli(t, "status", "--addr", follower.rpc, "--timeout", "20s"),
			"serves TLS", "--addr https://"+follower.rpc)
	})

	t.Run("status, snapshot save and export take https:// and --ca-cert", func(t *testing.T) {
		// status asks each member at its advertised host:port, with the
		// scheme of --addr: every row has the member's own state.
		out, err := stdoutOf(t, func() error {
			return cli(t, "status", "--addr", follower.url, "--ca-cert", t1.caFile, "--timeout", "20s")
		})
		if err != nil {
			t.Errorf("status: %v", err)
		}
		// The cluster's id, as the node asked sees it (a joined node has
		// it once it is in the leader's configuration, so it may be none
		// yet).
		if !strings.Contains(out, "\ncluster ") || !strings.Contains(out, ", as "+follower.id+" sees it\n") {
			t.Errorf("status does not end with the cluster's id as %s sees it:\n%s", follower.id, out)
		}
		for _, n := range nodes {
			row := ""
			for line := range strings.Lines(out) {
				if f := strings.Fields(strings.TrimPrefix(line, "*")); len(f) > 2 && f[0] == n.id {
					row = line
					if f[1] != n.rpc || (f[2] != "Leader" && f[2] != "Follower") {
						t.Errorf("status row of %s: %q; want its address and its own state", n.id, line)
					}
				}
			}
			if row == "" {
				t.Errorf("status has no row for %s:\n%s", n.id, out)
			}
		}
		snap := filepath.Join(t.TempDir(), "s.snap")
		if err := cli(t, "snapshot", "save", snap, "--addr", follower.url, "--ca-cert", t1.caFile); err != nil {
			t.Errorf("snapshot save: %v", err)
		} else if fi, err := os.Stat(snap); err != nil || fi.Size() == 0 {
			t.Errorf("snapshot save wrote %v, %v", fi, err)
		}
		// The ledger holds no entry yet: export reads the node's snapshot
		// over TLS and finds nothing to write.
		if err := cli(t, "export", "--addr", follower.url, "--ca-cert", t1.caFile, "--to", t.TempDir(), "--progress", "never"); err != nil {
			t.Errorf("export: %v", err)
		}
	})

	t.Run("bench takes https:// and --ca-cert", func(t *testing.T) {
		args := []string{"bench", "--addr", follower.url, "--customers", "3", "--concurrency", "2", "--warmup", "0s",
			"--duration", "500ms", "--json"}
		if _, err := stdoutOf(t, func() error { return cli(t, append(args, "--ca-cert", t1.caFile)...) }); err != nil {
			t.Errorf("bench with the CA: %v", err)
		}
		_, err := stdoutOf(t, func() error { return cli(t, args...) })
		wantErr(t, "bench without --ca-cert", err, "certificate signed by unknown authority")
	})
}

// A cluster where some nodes serve TLS and others do not cannot forward,
// nor can a node that does not trust the leader's certificate: the write
// fails at once with FAILED_PRECONDITION saying why, instead of hanging or
// being retried as UNAVAILABLE. A client speaking TLS to a cleartext node
// is told to use http.
func TestAMixedTLSAndCleartextClusterFailsWithAClearError(t *testing.T) {
	ca := testca.New(t, "creditd test CA")
	tlsHC, clearHC := tlsClient(ca.Pool(), false), h2cClient()
	type side int
	const (
		cleartext   side = iota
		withTLS          // --tls-ca names the CA
		withTLSNoCA      // the system's roots, which do not hold the test CA
	)
	start := func(t *testing.T, id string, s side, args ...string) servedNode {
		switch s {
		case withTLS:
			return serveNode(t, id, tlsHC, "https", append(newNodeTLS(t, ca).args(), args...)...)
		case withTLSNoCA:
			return serveNode(t, id, tlsHC, "https", append(newNodeTLS(t, ca).args()[:4], args...)...)
		}
		return serveNode(t, id, clearHC, "http", args...)
	}
	for _, tc := range []struct {
		name             string
		leader, follower side
		want             []string
	}{
		{"a TLS follower of a cleartext leader", cleartext, withTLS,
			[]string{"this node serves TLS and the leader does not", "every node of a cluster must serve TLS"}},
		{"a cleartext follower of a TLS leader", withTLS, cleartext,
			[]string{"the leader serves TLS and this node does not", "every node of a cluster must serve TLS"}},
		{"a TLS follower that does not trust the leader's CA", withTLS, withTLSNoCA,
			[]string{"certificate is not trusted by this node", "--tls-ca", "unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leader := start(t, "lead", tc.leader)
			follower := start(t, "follow", tc.follower, "--join", leader.gossip)
			if id := awaitCluster(t, 2, leader, follower); id != leader.id {
				t.Fatalf("leader %s; want %s, which formed the cluster", id, leader.id)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := upsertCustomer(ctx, follower, "mixed")
			if ctx.Err() != nil {
				t.Fatalf("the forwarded write waited out its deadline: %v", err)
			}
			if connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Errorf("code %v, want FAILED_PRECONDITION: %v", connect.CodeOf(err), err)
			}
			wantErr(t, "a write through the follower", err, tc.want...)

			for _, n := range []servedNode{leader, follower} {
				if strings.HasPrefix(n.url, "http://") {
					wantErr(t, "status --addr https:// of the cleartext node", cli(t, "status", "--addr", "https://"+n.rpc, "--timeout", "20s"),
						"serves cleartext", "--addr http://"+n.rpc)
				}
			}
		})
	}
}

// Replacing the certificate and key files of a running node: a new
// connection gets the new certificate, without a restart.
func TestServeServesARotatedTLSCertificateToNewConnections(t *testing.T) {
	ca := testca.New(t, "creditd test CA")
	nt := newNodeTLS(t, ca)
	n := serveNode(t, "rot", tlsClient(ca.Pool(), false), "https", nt.args()...)
	served := func() (*big.Int, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool()}}
		c, err := d.DialContext(ctx, "tcp", n.rpc)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	if got, err := served(); err != nil || got.Cmp(nt.leaf.Serial) != 0 {
		t.Fatalf("serial %v, %v; want the first certificate's %s", got, err, nt.leaf.Serial)
	}
	next := ca.Issue(t, time.Time{}, time.Time{})
	next.Write(t, nt.certFile, nt.keyFile)
	// The files are looked at on a new connection at most every 5s.
	await(t, time.Minute, "the rotated certificate on a new connection", func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if got.Cmp(next.Serial) != 0 {
			return fmt.Errorf("serial %s, want the new %s", got, next.Serial)
		}
		return nil
	})
}

// TLS flags that do not go together, or files that do not hold what they
// should, stop serve at start with the flag or the file named; so do the
// client commands' --ca-cert without an https:// address.
func TestTLSFlagsThatDoNotGoTogetherAreRefusedNamingTheFlag(t *testing.T) {
	ca := testca.New(t, "creditd test CA")
	nt := newNodeTLS(t, ca)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other-key.pem")
	if err := os.WriteFile(otherKey, ca.Issue(t, time.Time{}, time.Time{}).KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"--tls-cert without --tls-key", []string{"--tls-cert", nt.certFile}, []string{"--tls-key"}},
		{"--tls-key without --tls-cert", []string{"--tls-key", nt.keyFile}, []string{"--tls-cert"}},
		{"--tls-ca without --tls-cert", []string{"--tls-ca", nt.caFile}, []string{"--tls-ca", "--tls-cert"}},
		{"a missing certificate file", []string{"--tls-cert", missing, "--tls-key", nt.keyFile}, []string{"--tls-cert", missing}},
		{"a key that is not the certificate's", []string{"--tls-cert", nt.certFile, "--tls-key", otherKey}, []string{nt.certFile, otherKey}},
		{"a CA bundle without a certificate", append(nt.args()[:4], "--tls-ca", garbage), []string{"--tls-ca", garbage}},
		{"an advertised API address with a scheme", append(nt.args(), "--advertise-rpc-addr", "https://127.0.0.1:7420"), []string{"--advertise-rpc-addr"}},
	} {
		t.Run("serve refuses "+tc.name, func(t *testing.T) {
			wantErr(t, "serve "+strings.Join(tc.args, " "), serveRefusal(t, freePort(t), tc.args...), tc.want...)
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"status with --ca-cert and an http:// address", []string{"status", "--addr", "http://127.0.0.1:7420", "--ca-cert", nt.caFile}, []string{"--ca-cert"}},
		{"status with a --ca-cert that holds no certificate", []string{"status", "--addr", "https://127.0.0.1:7420", "--ca-cert", garbage}, []string{"--ca-cert", garbage}},
		{"snapshot save with --ca-cert and a host:port address", []string{"snapshot", "save", filepath.Join(dir, "s.snap"), "--addr", "127.0.0.1:7420", "--ca-cert", nt.caFile}, []string{"--ca-cert"}},
		{"export with --ca-cert and no --addr", []string{"export", "--to", t.TempDir(), "--data-dir", t.TempDir(), "--ca-cert", nt.caFile}, []string{"--ca-cert", "--addr"}},
		{"bench with --ca-cert and an http:// address", []string{"bench", "--addr", "http://127.0.0.1:7420", "--ca-cert", nt.caFile}, []string{"--ca-cert"}},
		{"bench with a --ca-cert that holds no certificate", []string{"bench", "--addr", "https://127.0.0.1:7420", "--ca-cert", garbage}, []string{"--ca-cert", garbage}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			wantErr(t, strings.Join(tc.args, " "), cli(t, tc.args...), tc.want...)
		})
	}
}
