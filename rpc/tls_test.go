package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/internal/testca"
)

func TestTLSKeyPairLoadNamesTheFileAtFault(t *testing.T) {
	ca := testca.New(t, "test CA")
	good := ca.Issue(t, time.Time{}, time.Time{})
	other := ca.Issue(t, time.Time{}, time.Time{})
	expired := ca.Issue(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := write("cert.pem", good.CertPEM), write("key.pem", good.KeyPEM)
	otherKey := write("other-key.pem", other.KeyPEM)
	expiredCert, expiredKey := write("expired.pem", expired.CertPEM), write("expired-key.pem", expired.KeyPEM)
	garbage := write("garbage.pem", []byte("not PEM at all\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name, cert, key string
		want            []string // every one in the error
	}{
		{"a missing certificate file is named", missing, key, []string{missing}},
		{"a missing key file is named", cert, missing, []string{missing}},
		{"a certificate file without a certificate is named", garbage, key, []string{garbage, "CERTIFICATE"}},
		{"a key file without a key is named", cert, garbage, []string{garbage, "PRIVATE KEY"}},
		{"a key that is not the certificate's names both files", cert, otherKey, []string{cert, otherKey}},
		{"the key given as the certificate is named", key, key, []string{key, "CERTIFICATE"}},
		{"an expired certificate is named and refused", expiredCert, expiredKey, []string{expiredCert, "expired"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeyPair(tc.cert, tc.key, 0, nil)
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	kp, err := LoadKeyPair(cert, key, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := kp.Certificate().Leaf.SerialNumber; got.Cmp(good.Serial) != 0 {
		t.Errorf("serial %s, want %s", got, good.Serial)
	}
}

// serveTLSHandshakes accepts TLS connections with cfg until the test ends,
// completing each handshake and closing it.
func serveTLSHandshakes(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// servedSerial opens a fresh connection and returns the serial of the
// certificate the server presents, verified against pool.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// A certificate is rotated by replacing its files: a new connection gets
// the new one, and a pair that does not load leaves the one served as it
// was, with a log line saying so.
func TestTLSKeyPairServesTheRotatedCertificateAndKeepsTheOldOneWhenTheNewOneDoesNotLoad(t *testing.T) {
	ca := testca.New(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := ca.Issue(t, time.Time{}, time.Time{})
	first.Write(t, certFile, keyFile)
	var logs syncBuffer
	// A negative interval looks at the files on every handshake, so the
	// test needs no wait.
	kp, err := LoadKeyPair(certFile, keyFile, -1, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLSHandshakes(t, kp.ServerConfig())
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
	if got := servedSerial(t, addr, client); got.Cmp(first.Serial) != 0 {
		t.Fatalf("serial %s, want the first certificate's %s", got, first.Serial)
	}

	second := ca.Issue(t, time.Time{}, time.Time{})
	second.Write(t, certFile, keyFile)
	if got := servedSerial(t, addr, client); got.Cmp(second.Serial) != 0 {
		t.Fatalf("after rotation: serial %s, want the second certificate's %s", got, second.Serial)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("no log line of the reload: %s", logs.String())
	}

	// A new certificate whose key has not been written yet: refused, the
	// second pair goes on, and the refusal is logged once.
	third := ca.Issue(t, time.Time{}, time.Time{})
	if err := os.WriteFile(certFile, third.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := servedSerial(t, addr, client); got.Cmp(second.Serial) != 0 {
			t.Fatalf("with a certificate whose key is not there: serial %s, want the second's %s kept", got, second.Serial)
		}
	}
	if n := strings.Count(logs.String(), "TLS certificate not reloaded"); n != 1 {
		t.Errorf("%d log lines of the refused pair, want 1: %s", n, logs.String())
	}
	// Its key arrives: the third pair is served.
	third.Write(t, certFile, keyFile)
	if got := servedSerial(t, addr, client); got.Cmp(third.Serial) != 0 {
		t.Fatalf("once the key came: serial %s, want the third's %s", got, third.Serial)
	}
	// A key file gone (a rotation half done by hand): the third pair goes
	// on, and the refusal is logged once more.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := servedSerial(t, addr, client); got.Cmp(third.Serial) != 0 {
			t.Fatalf("without a key file: serial %s, want the third's %s kept", got, third.Serial)
		}
	}
	if n := strings.Count(logs.String(), "TLS certificate not reloaded"); n != 2 {
		t.Errorf("%d log lines of refused pairs, want 2: %s", n, logs.String())
	}
}

// A client and a server that disagree on TLS fail at once, with an error
// that says so, in both directions; failures that are already clear are
// left as they are.
func TestTLSSchemeMismatchSaysWhichSideSpeaksTLS(t *testing.T) {
	ca := testca.New(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, time.Time{}, time.Time{}).Write(t, certFile, keyFile)
	kp, err := LoadKeyPair(certFile, keyFile, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Proto)) })
	serve := func(cfg *tls.Config) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := NewHTTPServer("", ok)
		hs.ErrorLog = log.New(io.Discard, "", 0)
		if cfg != nil {
			hs.TLSConfig = cfg
			go func() { _ = hs.ServeTLS(ln, "", "") }()
		} else {
			go func() { _ = hs.Serve(ln) }()
		}
		t.Cleanup(func() { _ = hs.Close() })
		return ln.Addr().String()
	}
	tlsAddr, clearAddr := serve(kp.ServerConfig()), serve(nil)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	client := func(roots bool) *http.Client {
		tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{}}
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true)
		if roots {
			tr.TLSClientConfig.RootCAs = ca.Pool()
		}
		return &http.Client{Transport: ExplainSchemeMismatch(tr)}
	}
	for _, tc := range []struct {
		name     string
		url      string
		roots    bool
		mismatch bool // a *SchemeMismatchError
		servTLS  bool // its ServerTLS
		verify   bool // a certificate verification error instead
	}{
		{"a cleartext client at a TLS port is told the server serves TLS", "http://" + tlsAddr, true, true, true, false},
		{"a TLS client at a cleartext port is told the server does not serve TLS", "https://" + clearAddr, true, true, false, false},
		{"a TLS client without the CA gets the certificate error", "https://" + tlsAddr, false, false, false, true},
		{"a refused connection is left as it is", "http://" + closedAddr, true, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.url+"/", nil)
			res, err := client(tc.roots).Do(req)
			if err == nil {
				res.Body.Close()
				t.Fatalf("%s answered %s", tc.url, res.Status)
			}
			var mm *SchemeMismatchError
			if errors.As(err, &mm) != tc.mismatch {
				t.Fatalf("error %v: a scheme mismatch %v, want %v", err, !tc.mismatch, tc.mismatch)
			}
			if tc.mismatch && mm.ServerTLS != tc.servTLS {
				t.Errorf("error %v: ServerTLS %v, want %v", err, mm.ServerTLS, tc.servTLS)
			}
			var verr *tls.CertificateVerificationError
			if errors.As(err, &verr) != tc.verify {
				t.Errorf("error %v: a certificate verification error %v, want %v", err, !tc.verify, tc.verify)
			}
			if ctx.Err() != nil {
				t.Errorf("the request waited out its deadline: %v", err)
			}
			t.Logf("%v", err)
		})
	}
	t.Run("a TLS client with the CA speaks HTTP/2", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+tlsAddr+"/", nil)
		res, err := client(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Errorf("%s, want HTTP/2", res.Proto)
		}
	})
}
