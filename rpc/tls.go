package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultKeyPairCheckEvery is how often, at most, a KeyPair looks at its
// files again: on the first TLS handshake after it has passed, so an idle
// server reads nothing and a busy one reads two small files every few
// seconds.
const DefaultKeyPairCheckEvery = 5 * time.Second

// maxKeyPairFileBytes bounds what a KeyPair reads of a file: a certificate
// chain and its key are a few KiB; anything near this is the wrong file.
const maxKeyPairFileBytes = 1 << 20

// KeyPair is the API's TLS certificate and private key, read from two PEM
// files and read again when they change, so a certificate is rotated
// without a restart: replace both files, and new connections get the new
// pair within the check interval. A pair that does not load (a file half written,
// a certificate replaced before its key) is logged once and the old one
// kept; the next check tries again. Connections already open keep the
// certificate they were made with.
type KeyPair struct {
	certFile, keyFile string
	checkEvery        time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cur     *tls.Certificate
	loaded  [sha256.Size]byte // digest of the files cur came from
	refused [sha256.Size]byte // digest of the last files that did not load (logged once)
	next    time.Time         // no look at the files before this
}

// LoadKeyPair reads the pair and checks it: both files PEM, the key the
// certificate's, the certificate not expired. Errors name the file.
// checkEvery 0 = DefaultKeyPairCheckEvery; a negative one looks on every
// handshake (tests). log receives reloads and refused pairs; nil discards.
func LoadKeyPair(certFile, keyFile string, checkEvery time.Duration, log *slog.Logger) (*KeyPair, error) {
	if checkEvery == 0 {
		checkEvery = DefaultKeyPairCheckEvery
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KeyPair{certFile: certFile, keyFile: keyFile, checkEvery: checkEvery, log: log}
	certPEM, keyPEM, err := k.read()
	if err != nil {
		return nil, err
	}
	cert, err := k.parse(certPEM, keyPEM, time.Now())
	if err != nil {
		return nil, err
	}
	k.cur, k.loaded = cert, digest(certPEM, keyPEM)
	k.next = time.Now().Add(checkEvery)
	return k, nil
}

// Certificate is the pair served now; its Leaf is parsed.
func (k *KeyPair) Certificate() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// ServerConfig is the API's TLS configuration: HTTP/2 by ALPN, HTTP/1.1
// for Connect and gRPC-Web clients and webhooks, TLS 1.2 at least, the
// pair from GetCertificate.
func (k *KeyPair) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: k.GetCertificate,
	}
}

// GetCertificate is tls.Config.GetCertificate: the current pair, after a
// look at the files once the check interval has passed since the last. One
// handshake looks; the others meanwhile get the current pair.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	now := time.Now()
	if now.Before(k.next) {
		defer k.mu.Unlock()
		return k.cur, nil
	}
	k.next = now.Add(k.checkEvery)
	k.mu.Unlock()
	k.reload(now)
	return k.Certificate(), nil
}

// reload reads the files and, when they differ from the pair served,
// serves them if they load.
func (k *KeyPair) reload(now time.Time) {
	certPEM, keyPEM, err := k.read()
	// What was read, or why nothing was: the same refusal is logged once.
	d := sha256.Sum256([]byte(fmt.Sprint(err)))
	if err == nil {
		d = digest(certPEM, keyPEM)
	}
	k.mu.Lock()
	same := d == k.loaded || d == k.refused
	k.mu.Unlock()
	if same {
		return
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = k.parse(certPEM, keyPEM, now)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.refused = d
		k.log.Warn("TLS certificate not reloaded; still serving the previous one", "err", err,
			"serial", k.cur.Leaf.SerialNumber.String(), "not_after", k.cur.Leaf.NotAfter)
		return
	}
	k.cur, k.loaded, k.refused = cert, d, [sha256.Size]byte{}
	k.log.Info("TLS certificate reloaded", "cert", k.certFile, "serial", cert.Leaf.SerialNumber.String(),
		"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
}

func (k *KeyPair) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = readBounded(k.certFile, maxKeyPairFileBytes, "a PEM certificate or key"); err != nil {
		return nil, nil, fmt.Errorf("read the certificate file: %w", err)
	}
	if keyPEM, err = readBounded(k.keyFile, maxKeyPairFileBytes, "a PEM certificate or key"); err != nil {
		return nil, nil, fmt.Errorf("read the key file: %w", err)
	}
	return certPEM, keyPEM, nil
}

// readBounded reads a file of at most limit bytes; a larger one is not
// what (a file named by mistake).
func readBounded(path string, limit int, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not %s", path, limit, what)
	}
	return b, nil
}

// maxCABundleBytes bounds a CA bundle: the system's own is ≈ 200 KiB.
const maxCABundleBytes = 4 << 20

// LoadCertPool reads a PEM bundle of CA certificates, for peers (serve
// --tls-ca) and clients (--ca-cert) to verify nodes' certificates by.
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := readBounded(path, maxCABundleBytes, "a PEM bundle of CA certificates")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// parse turns the files' bytes into a certificate, naming the file at
// fault.
func (k *KeyPair) parse(certPEM, keyPEM []byte, now time.Time) (*tls.Certificate, error) {
	if !hasPEMBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return nil, fmt.Errorf("certificate file %s holds no PEM CERTIFICATE block", k.certFile)
	}
	if !hasPEMBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return nil, fmt.Errorf("key file %s holds no PEM PRIVATE KEY block", k.keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s with key file %s: %w", k.certFile, k.keyFile, err)
	}
	if cert.Leaf == nil {
		return nil, fmt.Errorf("certificate file %s: no leaf certificate", k.certFile)
	}
	if now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate file %s: the certificate (serial %s) expired at %s",
			k.certFile, cert.Leaf.SerialNumber, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

func hasPEMBlock(b []byte, want func(typ string) bool) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if want(blk.Type) {
			return true
		}
	}
}

func digest(certPEM, keyPEM []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// SchemeMismatchError says that a client and the server at Addr disagree
// on TLS: a cleartext (h2c) client reached a TLS port (ServerTLS), or a TLS
// client reached a cleartext one. Without it the client would see only
// "unexpected EOF" or "server gave HTTP response to HTTPS client".
type SchemeMismatchError struct {
	Addr      string
	ServerTLS bool
	Err       error // the transport's own error
}

func (e *SchemeMismatchError) Error() string {
	if e.ServerTLS {
		return fmt.Sprintf("%s serves TLS (https://), and this client spoke cleartext (http://) to it: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("%s serves cleartext (http://), not TLS, and this client spoke TLS (https://) to it: %v", e.Addr, e.Err)
}

func (e *SchemeMismatchError) Unwrap() error { return e.Err }

// tlsProbeTimeout bounds the handshake that tells whether a server speaks
// TLS, after a request to it failed.
const tlsProbeTimeout = 3 * time.Second

// ExplainSchemeMismatch wraps a client transport: when a request fails in
// a way a client and server that disagree on TLS fail (not a refused
// connection, not a certificate the client does not trust, not the
// caller's own deadline), it tries a TLS handshake with the server, within
// tlsProbeTimeout, and when the server's answer contradicts the request's
// scheme returns a *SchemeMismatchError instead.
func ExplainSchemeMismatch(next http.RoundTripper) http.RoundTripper {
	return schemeExplainer{next: next}
}

type schemeExplainer struct{ next http.RoundTripper }

func (s schemeExplainer) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := s.next.RoundTrip(r)
	if err == nil || r.Context().Err() != nil || !mayBeSchemeMismatch(err) {
		return res, err
	}
	servesTLS, known := probeTLS(r.Context(), r.URL.Host)
	if known && servesTLS == (r.URL.Scheme != "https") {
		return nil, &SchemeMismatchError{Addr: r.URL.Host, ServerTLS: servesTLS, Err: err}
	}
	return res, err
}

// CloseIdleConnections passes on to the wrapped transport, for
// http.Client.CloseIdleConnections.
func (s schemeExplainer) CloseIdleConnections() {
	if c, ok := s.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// mayBeSchemeMismatch leaves out failures that are already clear.
func mayBeSchemeMismatch(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false
	}
	var verr *tls.CertificateVerificationError
	return !errors.As(err, &verr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// probeTLS says whether the server at hostPort answers a TLS handshake
// (servesTLS), or answers it in cleartext (not servesTLS); known is false
// when it says neither (unreachable, a timeout). The handshake verifies
// nothing: it only asks which protocol the port speaks, and sends no data.
func probeTLS(ctx context.Context, hostPort string) (servesTLS, known bool) {
	ctx, cancel := context.WithTimeout(ctx, tlsProbeTimeout)
	defer cancel()
	host, _, _ := net.SplitHostPort(hostPort)
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: tlsProbeTimeout},
		Config: &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: true, //nolint:gosec // a probe of the protocol: no data is sent on it
			NextProtos:         []string{"h2", "http/1.1"},
		},
	}
	conn, err := d.DialContext(ctx, "tcp", hostPort)
	if err == nil {
		conn.Close()
		return true, true
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return false, true
	}
	return false, false
}
