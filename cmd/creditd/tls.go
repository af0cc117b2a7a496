package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/creditd/creditd/billing"
	"github.com/creditd/creditd/rpc"
)

// serveTLSFlags are serve's TLS flags. TLS covers the API port only (and
// so forwarding between nodes, which goes through it); Raft and gossip stay
// cleartext, for a private network.
type serveTLSFlags struct {
	certFile, keyFile, caFile string
}

func (t *serveTLSFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&t.certFile, "tls-cert", "", fmt.Sprintf("serve the API over TLS (HTTP/2, and HTTP/1.1) with this PEM certificate `FILE` (chain, leaf first), which must name the advertised API host; needs --tls-key. "+
		"Read again when it changes, checked at most every %s on a new connection; a pair that does not load is logged and the old one kept. Every node of a cluster serves TLS or none does", rpc.DefaultKeyPairCheckEvery))
	fs.StringVar(&t.keyFile, "tls-key", "", "PEM private key `FILE` of --tls-cert")
	fs.StringVar(&t.caFile, "tls-ca", "", "PEM bundle `FILE` of the CAs this node trusts for the other nodes' API certificates when it forwards to the leader over TLS (default: the system's roots); needs --tls-cert")
}

// check refuses an incomplete pair and flags that would be ignored.
func (t *serveTLSFlags) check(advertiseRPC string) error {
	switch {
	case t.certFile != "" && t.keyFile == "":
		return errors.New("serve: --tls-cert needs --tls-key, the certificate's private key")
	case t.keyFile != "" && t.certFile == "":
		return errors.New("serve: --tls-key needs --tls-cert, the certificate of the key")
	case t.caFile != "" && t.certFile == "":
		return errors.New("serve: --tls-ca needs --tls-cert: it verifies the other nodes' certificates when this node forwards to them over TLS")
	case strings.Contains(advertiseRPC, "://"):
		return fmt.Errorf("serve: --advertise-rpc-addr %q: give host:port, without a scheme: nodes reach each other's API with https when they serve TLS (--tls-cert) and http when not", advertiseRPC)
	}
	return nil
}

// apiTLS is serve's TLS when on: the API's key pair and the configuration
// of connections to the other nodes' APIs.
type apiTLS struct {
	keys  *rpc.KeyPair
	peers *tls.Config
}

// load reads the pair and the CA bundle; nil without --tls-cert.
func (t *serveTLSFlags) load(logger *slog.Logger) (*apiTLS, error) {
	if t.certFile == "" {
		return nil, nil
	}
	keys, err := rpc.LoadKeyPair(t.certFile, t.keyFile, 0, logger)
	if err != nil {
		return nil, fmt.Errorf("serve: --tls-cert/--tls-key: %w", err)
	}
	peers := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.caFile != "" {
		if peers.RootCAs, err = rpc.LoadCertPool(t.caFile); err != nil {
			return nil, fmt.Errorf("serve: --tls-ca: %w", err)
		}
	}
	return &apiTLS{keys: keys, peers: peers}, nil
}

// warnIfHostNotNamed logs when the certificate does not name the host the
// node advertises: the other nodes forward to that host and would refuse
// the certificate. Not an error: a one-node cluster forwards to nobody.
func (a *apiTLS) warnIfHostNotNamed(advertised string, logger *slog.Logger) {
	host, _, err := net.SplitHostPort(advertised)
	if err != nil {
		return
	}
	leaf := a.keys.Certificate().Leaf
	if err := leaf.VerifyHostname(host); err != nil {
		logger.Warn("the API's TLS certificate does not name the advertised API host: other nodes forwarding writes here will refuse it; "+
			"give the certificate that host (a DNS or IP subject alternative name) or --advertise-rpc-addr a name it holds",
			"advertised", advertised, "dns_names", leaf.DNSNames, "ip_addresses", fmt.Sprint(leaf.IPAddresses))
	}
}

// webhookForwardClient carries the webhooks a follower forwards to the
// leader, over TLS with peers (nil: cleartext); its errors say when the
// leader disagrees on TLS.
func webhookForwardClient(peers *tls.Config) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     peers.Clone(),
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: rpc.ExplainSchemeMismatch(tr), Timeout: billing.DefaultWebhookTimeout}
}

// clientHints adds to a client command's transport failures what to change
// on its command line.
type clientHints struct {
	next   http.RoundTripper
	caCert string
}

func (h clientHints) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := h.next.RoundTrip(r)
	if err == nil {
		return res, nil
	}
	var (
		mismatch  *rpc.SchemeMismatchError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
	)
	switch {
	case errors.As(err, &mismatch) && mismatch.ServerTLS:
		return nil, fmt.Errorf("%w; give --addr https://%s (and --ca-cert FILE when a private CA signed its certificate)", err, mismatch.Addr)
	case errors.As(err, &mismatch):
		return nil, fmt.Errorf("%w; give --addr http://%s", err, mismatch.Addr)
	case errors.As(err, &unknownCA) && h.caCert == "":
		return nil, fmt.Errorf("%w; give --ca-cert FILE, the PEM certificate of the CA that signed the node's certificate", err)
	case errors.As(err, &unknownCA):
		return nil, fmt.Errorf("%w; --ca-cert %s does not hold the CA that signed the node's certificate", err, h.caCert)
	case errors.As(err, &hostname):
		return nil, fmt.Errorf("%w; give --addr a host the node's certificate names", err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "client conn could not be established"):
		// A node's Raft and gossip ports read the HTTP/2 preface as a
		// message of their own and hang up: "unexpected EOF" alone does not
		// say that --addr named the wrong port. When the hang-up comes
		// before the server's settings, HTTP/2 says only that the
		// connection "could not be established" (an unexported error).
		return nil, fmt.Errorf("%w; %s closed the connection without an answer: give --addr a node's API address (serve --rpc-addr), not its --raft-addr or --gossip-addr", err, r.URL.Host)
	}
	return nil, err
}

func (h clientHints) CloseIdleConnections() {
	if c, ok := h.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
