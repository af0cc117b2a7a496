package billing

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// These tests go through the real stripe-go client to stripe-mock, which
// checks request and response shapes (not flows: it keeps no state).
func TestStripeConnectorAgainstStripeMock(t *testing.T) {
	url := startStripeMock(t)
	s := newTestStripe(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("ensure customer creates one and keeps a known one", func(t *testing.T) {
		ref, err := s.EnsureCustomer(ctx, CustomerInfo{ID: "cust-1", Name: "Acme"})
		if err != nil || !strings.HasPrefix(ref, "cus_") {
			t.Fatalf("EnsureCustomer = %q, %v; want a cus_ id", ref, err)
		}
		kept, err := s.EnsureCustomer(ctx, CustomerInfo{ID: "cust-1", ProviderRef: "cus_known"})
		if err != nil || kept != "cus_known" {
			t.Fatalf("EnsureCustomer with a ref = %q, %v; want cus_known", kept, err)
		}
	})
	t.Run("off-session charge creates a confirmed payment intent", func(t *testing.T) {
		p, err := s.ChargeOffSession(ctx, PaymentRequest{PurchaseID: "pur-1", CustomerRef: "cus_123",
			AmountMicros: 12_500_000, Currency: "USD", IdempotencyKey: "pur-1"})
		if err != nil {
			t.Fatalf("ChargeOffSession: %v", err)
		}
		if !strings.HasPrefix(p.Ref, "pi_") {
			t.Fatalf("payment ref = %q, want a pi_ id", p.Ref)
		}
	})
	t.Run("on-session payment returns a client secret", func(t *testing.T) {
		p, err := s.StartOnSession(ctx, PaymentRequest{PurchaseID: "pur-2", CustomerRef: "cus_123",
			AmountMicros: 5_000_000, Currency: "EUR", IdempotencyKey: "pur-2"})
		if err != nil {
			t.Fatalf("StartOnSession: %v", err)
		}
		if p.Ref == "" || p.ClientSecret == "" {
			t.Fatalf("payment = %+v, want a ref and a client secret", p)
		}
	})
	t.Run("invoice is created, given a line and finalized", func(t *testing.T) {
		inv, err := s.CreateInvoice(ctx, InvoiceRequest{PurchaseID: "pur-3", CustomerRef: "cus_123",
			AmountMicros: 1_000_000_000, Currency: "USD", Description: "1000 AI credits", IdempotencyKey: "pur-3"})
		if err != nil {
			t.Fatalf("CreateInvoice: %v", err)
		}
		if !strings.HasPrefix(inv.Ref, "in_") || inv.PurchaseID != "pur-3" {
			t.Fatalf("invoice = %+v, want an in_ id for pur-3", inv)
		}
	})
	t.Run("an abandoned payment is canceled", func(t *testing.T) {
		p, err := s.CancelPayment(ctx, "pi_123")
		if err != nil || p.Ref == "" {
			t.Fatalf("CancelPayment = %+v, %v", p, err)
		}
	})
	t.Run("payment and invoice look-ups map their status", func(t *testing.T) {
		// stripe-mock's payment carries no purchase id: the invoice it paid
		// is asked, and named.
		p, err := s.LookupPayment(ctx, "pi_123")
		if err != nil || p.Ref == "" || !strings.HasPrefix(p.InvoiceRef, "in_") {
			t.Fatalf("LookupPayment = %+v, %v; want the invoice it paid named", p, err)
		}
		inv, err := s.LookupInvoice(ctx, "in_123")
		if err != nil || inv.Ref == "" {
			t.Fatalf("LookupInvoice = %+v, %v", inv, err)
		}
	})
	t.Run("refunds are created and listed per charge", func(t *testing.T) {
		rp := &stripe.RefundCreateParams{Charge: stripe.String("ch_123"), Amount: stripe.Int64(500)}
		rp.SetIdempotencyKey("refund-test")
		r, err := s.client.V1Refunds.Create(ctx, rp)
		if err != nil || r.ID == "" {
			t.Fatalf("create refund = %v, %v", r, err)
		}
		rs, err := s.Refunds(ctx, "ch_123")
		if err != nil {
			t.Fatalf("Refunds: %v", err)
		}
		for _, x := range rs {
			if x.ID == "" {
				t.Fatalf("refund without id in %+v", rs)
			}
		}
	})
	t.Run("a purchase's payments, invoice and invoice lines are looked up by customer and creation time", func(t *testing.T) {
		// stripe-mock's fixtures carry no creditd metadata: nothing is
		// found, and the resumed invoice is made whole.
		started := time.Now().Add(-25 * time.Hour)
		pays, err := s.FindPayments(ctx, PaymentRequest{PurchaseID: "pur-4", CustomerRef: "cus_123", StartedAt: started})
		if err != nil || len(pays) != 0 {
			t.Fatalf("FindPayments = %+v, %v; want none", pays, err)
		}
		if has, err := s.hasLine(ctx, "in_123", "pur-4"); err != nil || has {
			t.Fatalf("hasLine = %v, %v; want false", has, err)
		}
		inv, err := s.CreateInvoice(ctx, InvoiceRequest{PurchaseID: "pur-4", CustomerRef: "cus_123", AmountMicros: 1_000_000,
			Currency: "USD", IdempotencyKey: "pur-4", StartedAt: started, Resume: true})
		if err != nil || !strings.HasPrefix(inv.Ref, "in_") {
			t.Fatalf("CreateInvoice resumed = %+v, %v; want an in_ id", inv, err)
		}
	})
	t.Run("a dispute is read with its charge, payment and money movements", func(t *testing.T) {
		// stripe-mock's dispute is an inquiry: no money moved.
		d, err := s.LookupDispute(ctx, "dp_123")
		if err != nil || d.ID != "dp_123" || d.ChargeRef == "" || d.AmountMinor <= 0 || d.HoldsFunds || d.Reinstated {
			t.Fatalf("LookupDispute = %+v, %v; want dp_123 of a charge, holding no money", d, err)
		}
	})
	t.Run("a charge's disputes are listed with their money movements", func(t *testing.T) {
		ds, err := s.Disputes(ctx, "ch_123")
		if err != nil || len(ds) == 0 {
			t.Fatalf("Disputes = %+v, %v; want stripe-mock's dispute", ds, err)
		}
		for _, d := range ds {
			if d.ID == "" || d.AmountMinor <= 0 || d.HoldsFunds {
				t.Fatalf("dispute %+v: want an id, an amount and no money moved (an inquiry)", d)
			}
		}
		if _, err := s.Disputes(ctx, ""); !errors.Is(err, ErrPermanent) {
			t.Fatalf("Disputes(\"\") error = %v, want ErrPermanent", err)
		}
	})
	t.Run("a malformed request is a permanent error", func(t *testing.T) {
		_, err := s.LookupInvoice(ctx, "")
		if !errors.Is(err, ErrPermanent) {
			t.Fatalf("LookupInvoice(\"\") error = %v, want ErrPermanent", err)
		}
	})
}

func TestStripeRequiresSecretsFromEnvOrFile(t *testing.T) {
	files := map[string]string{"/run/secrets/key": "sk_test_file\n", "/run/secrets/whsec": "whsec_file"}
	readFile := func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, errors.New("no such file")
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"keys from the environment", map[string]string{EnvStripeSecretKey: "sk_test_env", EnvStripeWebhookSecret: "whsec_env"}, ""},
		{"keys from files", map[string]string{EnvStripeSecretKey + "_FILE": "/run/secrets/key", EnvStripeWebhookSecret + "_FILE": "/run/secrets/whsec"}, ""},
		{"a missing key is named", map[string]string{EnvStripeWebhookSecret: "whsec_env"}, EnvStripeSecretKey},
		{"a missing webhook secret is named", map[string]string{EnvStripeSecretKey: "sk_test_env"}, EnvStripeWebhookSecret},
		{"an unreadable file is named", map[string]string{EnvStripeSecretKey + "_FILE": "/nope", EnvStripeWebhookSecret: "w"}, "/nope"},
		{"a bad URL is refused", map[string]string{EnvStripeSecretKey: "k", EnvStripeWebhookSecret: "w", EnvStripeAPIURL: "ftp://x"}, "not an http(s) URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Getenv: func(k string) string { return tc.env[k] }, ReadFile: readFile}
			_, err := Open("stripe", cfg)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Open: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Open error = %v, want one naming %q", err, tc.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), "sk_test") || strings.Contains(err.Error(), "whsec_")) {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret{"sk_live_verysecret"}
	for _, got := range []string{s.String(), s.GoString(), s.LogValue().String()} {
		if strings.Contains(got, "verysecret") {
			t.Fatalf("secret printed as %q", got)
		}
	}
}

func TestOpenUnknownConnectorNamesTheKnownOnes(t *testing.T) {
	_, err := Open("paypal", Config{})
	if err == nil || !strings.Contains(err.Error(), "manual") || !strings.Contains(err.Error(), "stripe") {
		t.Fatalf("Open(paypal) error = %v, want one listing manual and stripe", err)
	}
	p, err := Open("manual", Config{})
	if err != nil || p.Name() != "manual" {
		t.Fatalf("Open(manual) = %v, %v", p, err)
	}
}

// A secret file is read only up to a byte past the most a secret may have:
// a wrong path to a device that never ends (/dev/zero) or a large file is
// refused by the size check, naming the variable, instead of being read
// whole (it hung start-up, growing memory). Real files, the production
// reader.
func TestASecretFileIsReadOnlyAsFarAsASecretCanGo(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte("k"), size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"a key of the most a secret may have", write("max", maxSecretFileBytes), ""},
		{"a byte more", write("more", maxSecretFileBytes+1), "more than the 4096 bytes"},
		{"a large file", write("large", 64<<20), "more than the 4096 bytes"},
		{"a device that never ends", "/dev/zero", "more than the 4096 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.path); err != nil {
				t.Skipf("%s: %v", tc.path, err) // /dev/zero on a system without it
			}
			cfg := Config{Getenv: func(k string) string {
				if k == EnvStripeSecretKey+"_FILE" {
					return tc.path
				}
				return ""
			}}
			s, err := LoadSecret(cfg, EnvStripeSecretKey)
			switch {
			case tc.wantErr == "" && (err != nil || len(s.Reveal()) != maxSecretFileBytes):
				t.Fatalf("LoadSecret: %d bytes, %v", len(s.Reveal()), err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) ||
				!strings.Contains(err.Error(), EnvStripeSecretKey+"_FILE")):
				t.Fatalf("LoadSecret error = %v, want one naming %s_FILE and %q", err, EnvStripeSecretKey, tc.wantErr)
			}
		})
	}
}
