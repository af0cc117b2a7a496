package billing

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/creditd/creditd/fsm"
)

// Cluster is what billing needs of a node; *node.Node satisfies it.
type Cluster interface {
	Applier
	FSM() *fsm.FSM
	IsLeader() bool
	Leader() (id, rpcAddr string)
	LinearizableRead(ctx context.Context) error
	RunOnLeader(name string, fn func(ctx context.Context))
	AppliedNotify() <-chan struct{}
}

// AttachOptions tune Attach; the zero value is production's default.
type AttachOptions struct {
	Worker  WorkerOptions  // Provider, Applier, State, Wake and Logger are filled in
	Webhook WebhookOptions // Provider, Applier, State, Leader and Logger are filled in
	// ForwardTLS, when set, forwards webhooks received by a follower to the
	// leader over HTTPS with this configuration (the cluster's API serves
	// TLS); nil = cleartext.
	ForwardTLS *tls.Config
}

// Attached is a connector wired into a node.
type Attached struct {
	// Routes serve the connector's webhook; mount them with
	// rpc.Options.Extra. Empty for the manual connector.
	Routes   map[string]http.Handler
	Provider Provider
	state    StateReader
}

// PaymentAction returns what a front end needs to complete a self-serve
// purchase (Payment.ClientSecret or CheckoutURL) once the worker has
// started its payment; before that, a pending Payment without either.
func (a *Attached) PaymentAction(ctx context.Context, purchaseID string) (Payment, error) {
	return PaymentAction(ctx, a.Provider, a.state, purchaseID)
}

// Attach wires a connector into a node: the purchase worker runs whenever
// the node leads, and the returned routes (for rpc.Options.Extra) serve the
// connector's webhook. cmd/creditd calls it with the --billing name:
//
//	b, err := billing.Attach(n, "stripe", billing.Config{Getenv: os.Getenv, Logger: log}, billing.AttachOptions{})
//	srv, err := rpc.New(n, rpc.Options{Extra: b.Routes, ...})
func Attach(c Cluster, connector string, cfg Config, o AttachOptions) (*Attached, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prov, err := Open(connector, cfg)
	if err != nil {
		return nil, err
	}
	return AttachProvider(c, prov, log, o)
}

// AttachProvider is Attach with a connector already built.
func AttachProvider(c Cluster, prov Provider, log *slog.Logger, o AttachOptions) (*Attached, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wo := o.Worker
	wo.Provider, wo.Applier, wo.State, wo.Wake, wo.Logger = prov, c, c.FSM(), c.AppliedNotify, log
	w, err := NewWorker(wo)
	if err != nil {
		return nil, err
	}
	routes := map[string]http.Handler{}
	if prov.Name() != "manual" {
		ho := o.Webhook
		ho.Provider, ho.Applier, ho.State, ho.Logger = prov, c, c.FSM(), log
		ho.ReadBarrier = c.LinearizableRead
		ho.Leader = func() (bool, string) {
			_, addr := c.Leader()
			return c.IsLeader(), addr
		}
		if o.ForwardTLS != nil {
			ho.ForwardHTTPS = true
			if ho.ForwardClient == nil {
				ho.ForwardClient = &http.Client{Transport: &http.Transport{TLSClientConfig: o.ForwardTLS},
					Timeout: DefaultWebhookTimeout}
			}
		}
		h, err := NewWebhookHandler(ho)
		if err != nil {
			return nil, err
		}
		routes[WebhookPath] = h
	}
	c.RunOnLeader("billing", w.Run)
	log.Info("billing attached", "connector", prov.Name(), "webhook", fmt.Sprint(len(routes) > 0))
	return &Attached{Routes: routes, Provider: prov, state: c.FSM()}, nil
}
