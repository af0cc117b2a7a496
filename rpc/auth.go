package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// Scope is what an API key may do. Scopes nest: read includes ingest, admin
// includes read.
type Scope uint8

const (
	// ScopeIngest: UsageService and BalanceService.
	ScopeIngest Scope = iota + 1
	// ScopeRead: ingest, plus the reads of grants, the ledger, the catalog,
	// purchases and the cluster status.
	ScopeRead
	// ScopeAdmin: everything.
	ScopeAdmin
)

func (s Scope) String() string {
	switch s {
	case ScopeIngest:
		return "ingest"
	case ScopeRead:
		return "read"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// ParseScope reads a scope name.
func ParseScope(s string) (Scope, error) {
	switch s {
	case "ingest":
		return ScopeIngest, nil
	case "read":
		return ScopeRead, nil
	case "admin":
		return ScopeAdmin, nil
	}
	return 0, fmt.Errorf("unknown scope %q (want ingest, read or admin)", s)
}

// APIKey is one bearer token and its scope.
type APIKey struct {
	Scope Scope
	Key   string
}

// Limits on keys: a short key is guessable; a long one is a pasted file.
const (
	minKeyLen = 16
	maxKeyLen = 256
	maxKeys   = 1024
	// maxKeysFileBytes holds maxKeys of maxKeyLen with room for comments.
	maxKeysFileBytes = 1 << 20
)

// Fingerprint names a key in logs without revealing it: the first 8 hex
// digits of its SHA-256.
func (k APIKey) Fingerprint() string {
	h := sha256.Sum256([]byte(k.Key))
	return hex.EncodeToString(h[:4])
}

// EnvAPIKeys is the environment variable holding API keys: entries
// "scope:key" separated by commas or whitespace.
const EnvAPIKeys = "CREDITD_API_KEYS"

// ParseAPIKeys reads keys, one "scope:key" per line (or separated by commas).
// Blank lines and lines starting with # are skipped. A key is 16 to 256
// printable ASCII characters without spaces or commas; the same key twice is
// an error. Errors name the line, never the key.
func ParseAPIKeys(r io.Reader) ([]APIKey, error) {
	var keys []APIKey
	seen := make(map[string]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		for _, item := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			scope, key, ok := strings.Cut(item, ":")
			if !ok {
				return nil, fmt.Errorf("api keys line %d: want scope:key", line)
			}
			s, err := ParseScope(scope)
			if err != nil {
				// Not ParseScope's error: it quotes the scope, which is
				// the key itself on a line written key:scope.
				return nil, fmt.Errorf("api keys line %d: unknown scope (want ingest, read or admin, written scope:key)", line)
			}
			if len(key) < minKeyLen || len(key) > maxKeyLen {
				return nil, fmt.Errorf("api keys line %d: a key must be %d to %d characters", line, minKeyLen, maxKeyLen)
			}
			for i := 0; i < len(key); i++ {
				if key[i] <= ' ' || key[i] > '~' {
					return nil, fmt.Errorf("api keys line %d: a key must be printable ASCII without spaces", line)
				}
			}
			if seen[key] {
				return nil, fmt.Errorf("api keys line %d: the same key appears twice", line)
			}
			seen[key] = true
			if len(keys) == maxKeys {
				return nil, fmt.Errorf("api keys: more than %d keys", maxKeys)
			}
			keys = append(keys, APIKey{Scope: s, Key: key})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	return keys, nil
}

// LoadAPIKeys reads keys from a file (if path is not empty) and from the
// CREDITD_API_KEYS value env (if not empty), together: a key in both is an
// error, as it is twice in one, and so are more than 1024 keys in all.
func LoadAPIKeys(path, env string) ([]APIKey, error) {
	var keys []APIKey
	if path != "" {
		k, err := loadAPIKeysFile(path)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k...)
	}
	if env != "" {
		k, err := ParseAPIKeys(strings.NewReader(env))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvAPIKeys, err)
		}
		// Otherwise the environment's scope would silently win over the
		// file's for the same key.
		inFile := make(map[string]bool, len(keys))
		for _, fk := range keys {
			inFile[fk.Key] = true
		}
		for i, ek := range k {
			if inFile[ek.Key] {
				return nil, fmt.Errorf("%s: key %d of %d is also in %s: the same key twice is an error", EnvAPIKeys, i+1, len(k), path)
			}
		}
		keys = append(keys, k...)
	}
	if len(keys) > maxKeys {
		return nil, fmt.Errorf("api keys: %d in %s and %s together, more than %d", len(keys), path, EnvAPIKeys, maxKeys)
	}
	return keys, nil
}

// loadAPIKeysFile reads a keys file of at most maxKeysFileBytes. A larger
// one is refused, not cut: a key cut at the limit would be a shorter key,
// still long enough to be accepted.
func loadAPIKeysFile(path string) ([]APIKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open api keys file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeysFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read api keys file %s: %w", path, err)
	}
	if len(b) > maxKeysFileBytes {
		return nil, fmt.Errorf("api keys file %s: larger than %d bytes", path, maxKeysFileBytes)
	}
	keys, err := ParseAPIKeys(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// procedureScope is the scope each procedure needs; procedures not listed
// (none today) need admin.
var procedureScope = map[string]Scope{
	creditdv1connect.UsageServiceReportUsageProcedure:    ScopeIngest,
	creditdv1connect.UsageServiceCheckProcedure:          ScopeIngest,
	creditdv1connect.UsageServiceReserveProcedure:        ScopeIngest,
	creditdv1connect.UsageServiceSettleProcedure:         ScopeIngest,
	creditdv1connect.UsageServiceReleaseProcedure:        ScopeIngest,
	creditdv1connect.BalanceServiceGetBalanceProcedure:   ScopeIngest,
	creditdv1connect.GrantServiceListGrantsProcedure:     ScopeRead,
	creditdv1connect.LedgerServiceListEntriesProcedure:   ScopeRead,
	creditdv1connect.LedgerServiceWatchEntriesProcedure:  ScopeRead,
	creditdv1connect.CatalogServiceGetCustomerProcedure:  ScopeRead,
	creditdv1connect.CatalogServiceListFeaturesProcedure: ScopeRead,
	creditdv1connect.PurchaseServiceGetPurchaseProcedure: ScopeRead,
	creditdv1connect.ClusterServiceGetStatusProcedure:    ScopeRead,
}

func scopeFor(procedure string) Scope {
	if s, ok := procedureScope[procedure]; ok {
		return s
	}
	return ScopeAdmin
}

// authenticator checks bearer tokens against the configured keys.
type authenticator struct {
	hashes [][sha256.Size]byte
	keys   []APIKey
}

func newAuthenticator(keys []APIKey) *authenticator {
	a := &authenticator{keys: keys, hashes: make([][sha256.Size]byte, len(keys))}
	for i, k := range keys {
		a.hashes[i] = sha256.Sum256([]byte(k.Key))
	}
	return a
}

type principalKey struct{}

// principal is who made a request, for logs: "key:" and a key's
// fingerprint, or "loopback". A refused request has one too, so that its log
// line says who was refused: the fingerprint of a key that lacks the scope,
// or one of the principals below, never the token itself.
func principalFrom(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(string)
	return p
}

const (
	principalNoKey      = "no key"
	principalUnknownKey = "unknown key"
	principalNotLocal   = "not loopback"
)

func withPrincipal(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

var (
	errNoKey       = errors.New("missing API key: send Authorization: Bearer <key>")
	errBadKey      = errors.New("invalid API key")
	errNotLoopback = errors.New("no API keys are configured: only loopback clients are accepted")
)

// authorize returns the context with the principal and, when the request
// is refused, a Connect error.
// Every key is compared (in constant time, on hashes of equal length) so
// the time taken says nothing about which key nearly matched.
func (a *authenticator) authorize(ctx context.Context, procedure, peerAddr, authz string) (context.Context, error) {
	if len(a.keys) == 0 {
		if !isLoopback(peerAddr) {
			return withPrincipal(ctx, principalNotLocal), connect.NewError(connect.CodePermissionDenied, errNotLoopback)
		}
		return withPrincipal(ctx, "loopback"), nil
	}
	token, ok := bearerToken(authz)
	if !ok {
		return withPrincipal(ctx, principalNoKey), connect.NewError(connect.CodeUnauthenticated, errNoKey)
	}
	h := sha256.Sum256([]byte(token))
	match := -1
	for i := range a.hashes {
		if subtle.ConstantTimeCompare(h[:], a.hashes[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		// Not even a fingerprint: a mistyped token may be most of a real
		// key, of this cluster or another.
		return withPrincipal(ctx, principalUnknownKey), connect.NewError(connect.CodeUnauthenticated, errBadKey)
	}
	k := a.keys[match]
	ctx = withPrincipal(ctx, "key:"+k.Fingerprint())
	if need := scopeFor(procedure); k.Scope < need {
		return ctx, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("API key %s has scope %s; %s needs %s", k.Fingerprint(), k.Scope, procedure, need))
	}
	return ctx, nil
}

// bearerToken is the token of an Authorization header "Bearer <token>". The
// scheme is case-insensitive (RFC 9110 §11.1): some clients send "bearer".
func bearerToken(authz string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authz), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func isLoopback(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		a, err := netip.ParseAddr(addr)
		return err == nil && a.Unmap().IsLoopback()
	}
	return ap.Addr().Unmap().IsLoopback()
}
