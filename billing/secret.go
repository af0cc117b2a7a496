package billing

import (
	"bytes"
	"fmt"
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
		readFile = os.ReadFile
	}
	b, err := readFile(path)
	if err != nil {
		// The path is not secret; its content is.
		return Secret{}, fmt.Errorf("read %s_FILE %q: %w", name, path, err)
	}
	if len(b) > maxSecretFileBytes {
		return Secret{}, fmt.Errorf("%s_FILE %q: %d bytes, more than the %d a secret may have", name, path, len(b), maxSecretFileBytes)
	}
	v := string(bytes.TrimSpace(b))
	if v == "" {
		return Secret{}, fmt.Errorf("%s_FILE %q is empty", name, path)
	}
	return Secret{v}, nil
}
