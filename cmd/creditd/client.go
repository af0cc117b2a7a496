package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/rpc"
)

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	addr    string
	apiKey  string
	caCert  string
	timeout time.Duration
}

func addClientFlags(fs *flag.FlagSet, f *clientFlags) {
	fs.StringVar(&f.addr, "addr", "http://127.0.0.1:7420", "API address of any node: http://host:port (or host:port) for a cluster serving cleartext HTTP/2, https://host:port for one serving TLS (serve --tls-cert)")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM `FILE` of the CA certificate(s) to trust for an https:// --addr, instead of the system's roots (a private CA)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (admin scope) sent as a bearer token; not needed from loopback without keys")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the answer")
}

// baseURL turns host:port into http://host:port.
func baseURL(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--addr %q: want http://host:port, https://host:port or host:port", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// url is addr's base URL. An address without a scheme (a member's
// advertised host:port) takes --addr's: every node of a cluster serves TLS
// or none does.
func (f *clientFlags) url(addr string) (string, error) {
	if !strings.Contains(addr, "://") && strings.HasPrefix(f.addr, "https://") {
		addr = "https://" + addr
	}
	u, err := baseURL(addr)
	if err != nil {
		return "", err
	}
	if f.caCert != "" && !strings.HasPrefix(u, "https://") {
		return "", fmt.Errorf("--ca-cert %s is for an https:// --addr; %s is cleartext", f.caCert, u)
	}
	return u, nil
}

// httpClient speaks HTTP/2, cleartext (h2c) to an http:// address and over
// TLS to an https:// one (trusting --ca-cert's CAs when given), and adds
// the API key to every request. Its failures say when the node disagrees
// on TLS or its certificate is not trusted, and what to give instead.
func (f *clientFlags) httpClient() (*http.Client, error) {
	t := &http.Transport{
		Protocols:             new(http.Protocols),
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: f.timeout,
		IdleConnTimeout:       30 * time.Second,
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	t.Protocols.SetHTTP2(true)
	if f.caCert != "" {
		pool, err := rpc.LoadCertPool(f.caCert)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	next := clientHints{next: rpc.ExplainSchemeMismatch(t), caCert: f.caCert}
	return &http.Client{Transport: bearer{key: f.apiKey, next: next}}, nil
}

type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.key != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return b.next.RoundTrip(r)
}

func (f *clientFlags) cluster(addr string) (creditdv1connect.ClusterServiceClient, error) {
	u, err := f.url(addr)
	if err != nil {
		return nil, err
	}
	hc, err := f.httpClient()
	if err != nil {
		return nil, err
	}
	return creditdv1connect.NewClusterServiceClient(hc, u, connect.WithInterceptors(keyHint{apiKey: f.apiKey})), nil
}

// keyHint adds to a refusal for the API key what to give instead: the
// node's message speaks of an Authorization header, which a client command
// sends from --api-key (or CREDITD_API_KEY).
type keyHint struct{ apiKey string }

func (h keyHint) explain(err error) error {
	switch code := connect.CodeOf(err); {
	case code == connect.CodeUnauthenticated && h.apiKey == "":
		return fmt.Errorf("%w; give --api-key KEY (or CREDITD_API_KEY)", err)
	case code == connect.CodeUnauthenticated:
		return fmt.Errorf("%w; --api-key is none of the node's keys", err)
	case code == connect.CodePermissionDenied && h.apiKey != "":
		// Without a key, the node has none and refuses a client that is
		// not on its loopback: no key would help.
		return fmt.Errorf("%w; give --api-key a key of that scope", err)
	}
	return err
}

func (h keyHint) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			return nil, h.explain(err)
		}
		return res, nil
	}
}

func (h keyHint) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return keyHintConn{StreamingClientConn: next(ctx, spec), hint: h}
	}
}

func (h keyHint) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// keyHintConn is a stream whose refusal says what to give: a server stream
// (SaveSnapshot) learns of it on its first Receive.
type keyHintConn struct {
	connect.StreamingClientConn
	hint keyHint
}

func (c keyHintConn) Receive(msg any) error {
	if err := c.StreamingClientConn.Receive(msg); err != nil {
		if errors.Is(err, io.EOF) {
			return err
		}
		return c.hint.explain(err)
	}
	return nil
}
