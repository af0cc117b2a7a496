package bench

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"connectrpc.com/connect"
)

// The leader is looked for for up to a minute while a cluster starts; a
// refusal of the client itself ends the search at once.
func TestDiscoveryStopsAtOnceForTheClientsOwnMistakes(t *testing.T) {
	viaURL := func(err error) error { return &url.Error{Op: "Post", URL: "https://n1:7420", Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		stop bool
	}{
		{"a wrong API key", connect.NewError(connect.CodeUnauthenticated, errors.New("invalid API key")), true},
		{"a key without the scope", connect.NewError(connect.CodePermissionDenied, errors.New("scope")), true},
		{"a certificate of an unknown CA", connect.NewError(connect.CodeUnavailable, viaURL(x509.UnknownAuthorityError{})), true},
		{"a certificate for another host", connect.NewError(connect.CodeUnavailable, viaURL(x509.HostnameError{Host: "n1"})), true},
		{"a node not up yet", connect.NewError(connect.CodeUnavailable, viaURL(errors.New("connection refused"))), false},
		{"no leader yet", errors.New("no leader known yet"), false},
		{"a slow node", connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("wait: %w", errors.New("timeout"))), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wontChangeByWaiting(tc.err); got != tc.stop {
				t.Errorf("wontChangeByWaiting(%v) = %v, want %v", tc.err, got, tc.stop)
			}
		})
	}
}
