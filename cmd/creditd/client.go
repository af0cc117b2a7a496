package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	addr    string
	apiKey  string
	timeout time.Duration
}

func addClientFlags(fs *flag.FlagSet, f *clientFlags) {
	fs.StringVar(&f.addr, "addr", "http://127.0.0.1:7420", "API address of any node (http://host:port or host:port)")
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
		return "", fmt.Errorf("--addr %q: want http://host:port or host:port", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// httpClient speaks cleartext HTTP/2 (h2c), as creditd serves, and adds the
// API key to every request.
func (f *clientFlags) httpClient() *http.Client {
	t := &http.Transport{
		Protocols:             new(http.Protocols),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: f.timeout,
		IdleConnTimeout:       30 * time.Second,
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	t.Protocols.SetHTTP2(true)
	return &http.Client{Transport: bearer{key: f.apiKey, next: t}}
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
	u, err := baseURL(addr)
	if err != nil {
		return nil, err
	}
	return creditdv1connect.NewClusterServiceClient(f.httpClient(), u), nil
}
