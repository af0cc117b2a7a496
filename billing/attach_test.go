package billing

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/creditd/creditd/fsm"
)

// fakeCluster is a one-node cluster over localApplier that records the
// leader tasks it is given instead of running them.
type fakeCluster struct {
	*localApplier
	tasks   []string
	readErr error // what LinearizableRead answers
}

func (c *fakeCluster) LinearizableRead(context.Context) error { return c.readErr }

func (c *fakeCluster) FSM() *fsm.FSM            { return c.f }
func (c *fakeCluster) IsLeader() bool           { return true }
func (c *fakeCluster) Leader() (string, string) { return "n1", "127.0.0.1:1" }
func (c *fakeCluster) RunOnLeader(name string, _ func(context.Context)) {
	c.tasks = append(c.tasks, name)
}
func (c *fakeCluster) AppliedNotify() <-chan struct{} { return make(chan struct{}) }

func TestAttach(t *testing.T) {
	env := map[string]string{EnvStripeSecretKey: "sk_test_x", EnvStripeWebhookSecret: "whsec_x"}
	cfg := Config{Getenv: func(k string) string { return env[k] }}
	tests := []struct {
		name      string
		connector string
		wantRoute bool
		wantErr   string
	}{
		{"stripe runs the worker and mounts the webhook", "stripe", true, ""},
		{"manual runs the worker and mounts nothing", "manual", false, ""},
		{"an unknown connector is refused", "paypal", false, "unknown connector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, a := newLocalFSM(t)
			c := &fakeCluster{localApplier: a}
			b, err := Attach(c, tc.connector, cfg, AttachOptions{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Attach error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := b.Routes[WebhookPath]; ok != tc.wantRoute {
				t.Fatalf("routes %v, want webhook route %v", b.Routes, tc.wantRoute)
			}
			if len(c.tasks) != 1 || c.tasks[0] != "billing" {
				t.Fatalf("leader tasks %v, want [billing]", c.tasks)
			}
		})
	}
}

// A leader just elected may not have applied the entries of earlier terms:
// the webhook waits for a linearizable read before it decides from the
// state, and answers 503 (not marked seen) when it cannot have one.
func TestAttachedWebhooksDecideFromTheLatestState(t *testing.T) {
	env := map[string]string{EnvStripeSecretKey: testStripeKey, EnvStripeWebhookSecret: testWebhookSecret,
		EnvStripeAPIURL: "http://127.0.0.1:1"}
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	c := &fakeCluster{localApplier: a, readErr: errors.New("not caught up yet")}
	b, err := Attach(c, "stripe", Config{Getenv: func(k string) string { return env[k] }}, AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b.Routes[WebhookPath])
	t.Cleanup(srv.Close)
	r := &webhookRig{t: t, f: f, a: a, h: b.Routes[WebhookPath].(*WebhookHandler), srv: srv}
	r.start("p1", fsm.FlowSelfServe)

	paid := paymentIntentObj("pi_1", "p1", "succeeded")
	if code, msg := r.send("evt_paid", "payment_intent.succeeded", paid); code != http.StatusServiceUnavailable {
		t.Fatalf("without the latest state: %d %q, want 503", code, msg)
	}
	if st := purchaseStatus(f, "p1"); st != fsm.PurchasePending {
		t.Fatalf("the purchase is %v after an event answered 503", st)
	}
	c.readErr = nil
	r.mustSend("evt_paid", "payment_intent.succeeded", paid)
	if st := purchaseStatus(f, "p1"); st != fsm.PurchaseSucceeded {
		t.Fatalf("the purchase is %v after the event's retry", st)
	}
}
