// Package rpc owns creditd's public API: the Connect handlers of the
// creditd.v1 services, their authentication (API keys with scopes),
// validation of every request field, the mapping of domain errors to Connect
// codes, and the forwarding of writes and linearizable reads from followers
// to the leader.
//
// Handlers are thin: they decode and validate a request, turn it into one
// fsm command (node.Apply) or one read of the replica's state (fsm View),
// and encode the answer. They never change state themselves and never talk
// to the billing provider. Cross-cutting concerns (request ids, logging,
// metrics, auth) are interceptors.
//
// Amounts travel as decimal strings in the credit type's scale and are
// converted with fsm.ParseUnits/FormatUnits using the scale read from the
// replica's state; money travels as a decimal string of the currency unit
// (fsm.MoneyScale places).
//
// Writes and linearizable reads run on the leader. On a follower, node.Apply
// and node.LinearizableRead answer *node.NotLeaderError, and handle sends
// the same request to the leader's advertised API address with a generated
// Connect client (HTTP/2, h2c unless Options.ForwardTLS), carrying the
// caller's API key and request id and marked with ForwardedHeader: a node
// that is not the leader refuses a forwarded request instead of forwarding
// it again, saying so (notLeaderHeader), and the follower sends it on to the
// leader it learns (leadership moved meanwhile). Before a write, a handler
// reads what it needs from its own replica (credit type scales, a feature's
// credit type: facts that never change once created); what it does not find
// it reads again once the state is confirmed current (node.LinearizableRead:
// a follower forwards, a leader still applying earlier entries waits) rather
// than answer NOT_FOUND. Stale reads and WatchEntries are served by the
// replica called, with its applied index; not by one whose state machine
// failed (node.Failure), which will never apply more: reads are refused,
// a new WatchEntries stream fails at once and an open one ends once it has
// sent what the replica applied, all UNAVAILABLE naming the node.
//
// JSON requests are decoded strictly (jsonCodec: unknown fields and enum
// names refused) and, for every protocol whose message comes whole
// (compressed with gzip or not, or in a Connect GET's query string), once
// before Connect (strictJSON), so that a decoding failure is an
// INVALID_ARGUMENT naming its field like any other.
//
// Error codes, in one place (toConnect):
//
//	fsm.CodeInvalid            INVALID_ARGUMENT  (FieldViolation detail)
//	fsm.CodeNotFound           NOT_FOUND
//	fsm.CodeAlreadyExists      ALREADY_EXISTS
//	fsm.CodeConflict           ALREADY_EXISTS: an idempotency key reused with
//	                           another payload names something that exists
//	                           and differs, which is what ALREADY_EXISTS says;
//	                           retrying cannot succeed, unlike
//	                           FAILED_PRECONDITION whose state may change.
//	fsm.CodeInsufficient       FAILED_PRECONDITION (InsufficientCredits detail)
//	fsm.CodeFailedPrecondition FAILED_PRECONDITION
//	node.ErrNoLeader, ErrShuttingDown, no reachable leader  UNAVAILABLE
//	node.ErrStateMachineFailed UNAVAILABLE: this node applies nothing until
//	                           restarted; the others go on
//	node.ErrQueueFull          RESOURCE_EXHAUSTED
//	anything else              INTERNAL (logged with the request id)
package rpc
