package billing

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// maxSecretFileBytes bounds a secret file: keys are short; anything larger
// is a wrong path.
const maxSecretFileBytes = 4096

// Secret is a credential. It prints and logs as "[redacted]", so passing one
// to a logger or a format verb by mistake leaks nothing.
type Secret struct{ value string }

// Reveal returns the credential, for the one call that needs it.
func (s Secret) Reveal() string { return s.value }

// Empty reports whether no credential was configured.
func (s Secret) Empty() bool { return s.value == "" }

func (s Secret) String() string               { return "[redacted]" }
func (s Secret) GoString() string             { return "billing.Secret([redacted])" }
func (s Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (s Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// readSecretFile reads at most one byte more than a secret may have, so a
// wrong path (a device such as /dev/zero, a large file) is refused by the
// size check instead of being read whole.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
}

// LoadSecret reads a secret from the environment variable name or, when that
// is empty, from the file named by name+"_FILE" (a mounted secret). Secrets
// never come from flags, which show in ps.
func LoadSecret(cfg Config, name string) (Secret, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return Secret{v}, nil
	}
	path := strings.TrimSpace(getenv(name + "_FILE"))
	if path == "" {
		return Secret{}, nil
	}
	readFile := cfg.ReadFile
	if readFile == nil {
		readFile = readSecretFile
	}
	b, err := readFile(path)
	if err != nil {
		// The path is not secret; its content is.
		return Secret{}, fmt.Errorf("read %s_FILE %q: %w", name, path, err)
	}
	if len(b) > maxSecretFileBytes {
		return Secret{}, fmt.Errorf("%s_FILE %q: more than the %d bytes a secret may have", name, path, maxSecretFileBytes)
	}
	v := string(bytes.TrimSpace(b))
	if v == "" {
		return Secret{}, fmt.Errorf("%s_FILE %q is empty", name, path)
	}
	return Secret{v}, nil
}
