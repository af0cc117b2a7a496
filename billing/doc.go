// Package billing owns creditd's side of the billing system: provider
// connectors behind one interface (Stripe, and "manual" for deals invoiced
// elsewhere), the verified webhook endpoint that turns the provider's events
// into purchase completions, grant revocations (refunds, disputes) and the
// credits given back when a refund fails or a dispute is won, and the purchase
// worker that carries out pending purchases on the leader.
//
// billing never changes state itself: every effect is an fsm command proposed
// through an Applier (in production *node.Node), and every decision it makes
// is idempotent by purchase id, refund id, dispute id or event id, so a webhook that comes
// twice, out of order, or before the API call that caused it returns leads to
// the same end state. Side effects on the outside world (charging a card,
// creating an invoice) are made only by the purchase worker, which runs on the
// leader alone, always with the purchase id (or a key derived from it) as the
// provider's idempotency key: a card is charged once per purchase even when a
// leader dies between the provider call and the commit of its result.
//
// billing imports fsm and the provider SDKs; never raft, node or rpc. Secrets
// (API keys, webhook signing secrets) come from the environment or a file and
// are never logged.
package billing
