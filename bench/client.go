package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// endpoint is one node's API.
type endpoint struct {
	id      string
	url     string
	usage   creditdv1connect.UsageServiceClient
	balance creditdv1connect.BalanceServiceClient
	grant   creditdv1connect.GrantServiceClient
	catalog creditdv1connect.CatalogServiceClient
	cluster creditdv1connect.ClusterServiceClient
}

func newEndpoint(id, url string, hc *http.Client, apiKey string) *endpoint {
	opts := []connect.ClientOption{connect.WithInterceptors(bearer(apiKey))}
	return &endpoint{
		id:      id,
		url:     url,
		usage:   creditdv1connect.NewUsageServiceClient(hc, url, opts...),
		balance: creditdv1connect.NewBalanceServiceClient(hc, url, opts...),
		grant:   creditdv1connect.NewGrantServiceClient(hc, url, opts...),
		catalog: creditdv1connect.NewCatalogServiceClient(hc, url, opts...),
		cluster: creditdv1connect.NewClusterServiceClient(hc, url, opts...),
	}
}

// rpcURL turns an advertised host:port into a base URL of the same scheme
// as the address the run was given.
func rpcURL(scheme, hostPort string) string {
	if strings.Contains(hostPort, "://") {
		return strings.TrimRight(hostPort, "/")
	}
	return scheme + "://" + hostPort
}

// newHTTPClient speaks cleartext HTTP/2 (h2c) as creditd serves, or HTTP/2
// over TLS for https addresses. Each client is its own connection pool:
// the run spreads its clients over several, as a fleet of callers would.
func newHTTPClient(roots *x509.CertPool) *http.Client {
	t := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Protocols:           new(http.Protocols),
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConnsPerHost: 64,
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	t.Protocols.SetHTTP2(true)
	return &http.Client{Transport: t}
}

func closeHTTPClient(hc *http.Client) {
	if t, ok := hc.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// bearer adds the API key to every request.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// codeName is the name an error is counted under.
func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// retryable says whether a failed write may be sent again. Every write the
// bench makes carries an idempotency key (event, grant and reservation
// ids), so sending it again is safe, and needed: an Unavailable or a
// deadline says nothing about whether it was applied, and the
// verification must know.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted,
		connect.CodeAborted, connect.CodeInternal, connect.CodeUnknown:
		return true
	}
	return false
}

// errf wraps err with what was being done.
func errf(err error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
}
