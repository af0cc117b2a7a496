package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// Verification is what the end-of-run checks found.
type Verification struct {
	OK        bool `json:"ok"`
	Customers int  `json:"customers"`
	// AckedBurned is the credits the clients saw burned (reports and
	// settlements acknowledged); ServerBurned is granted − balance over
	// every customer, as the leader's linearizable reads say.
	AckedBurned  string `json:"acked_burned"`
	ServerBurned string `json:"server_burned"`
	// BalanceMismatches counts customers whose leader balance is not
	// granted − acknowledged burns.
	BalanceMismatches int `json:"balance_mismatches"`
	// Unresolved counts writes whose outcome stayed unknown even after
	// resending them at the end.
	Unresolved int            `json:"unresolved"`
	Replicas   []ReplicaCheck `json:"replicas"`
	Problems   []string       `json:"problems,omitempty"`
}

// ReplicaCheck compares one node's local (stale) balances with the
// leader's linearizable ones, once the node has applied as far.
type ReplicaCheck struct {
	Node         string `json:"node"`
	URL          string `json:"url"`
	AppliedIndex uint64 `json:"applied_index"`
	Mismatches   int    `json:"mismatches"`
}

const maxProblems = 20

func (v *Verification) problem(format string, args ...any) {
	if len(v.Problems) < maxProblems {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	}
}

func (r *runner) verify(ctx context.Context) *Verification {
	v := &Verification{Customers: r.cfg.Customers}
	to := r.cfg.RequestTimeout

	if !r.resolve(ctx, v) {
		// Balances would be off by the writes still unknown, and their
		// reads would wait on the same cluster.
		return v
	}

	n := r.cfg.Customers
	leaderBal := make([]int64, n)
	var maxIndex atomic.Uint64
	err := parallel(ctx, n, verifyParallel, func(ctx context.Context, i int) error {
		return attempt(ctx, to, resolveAttempts, func(ctx context.Context) error {
			res, err := r.leader.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{
				CustomerId: r.customers[i], CreditTypeId: creditTypeID, Consistency: v1.Consistency_CONSISTENCY_LINEARIZABLE}))
			if err != nil {
				return errf(err, "linearizable balance of %s", r.customers[i])
			}
			b, err := parseUnits(res.Msg.Balance, creditScale)
			if err != nil {
				return errf(err, "balance of %s", r.customers[i])
			}
			leaderBal[i] = b
			for {
				m := maxIndex.Load()
				if res.Msg.AppliedIndex <= m || maxIndex.CompareAndSwap(m, res.Msg.AppliedIndex) {
					break
				}
			}
			return nil
		})
	})
	if err != nil {
		v.problem("read the leader's balances: %v", err)
		return v
	}
	var acked, server int64
	for i := 0; i < n; i++ {
		g, b := r.granted[i].Load(), r.burned[i].Load()
		acked += b
		server += g - leaderBal[i]
		if want := g - b; leaderBal[i] != want {
			v.BalanceMismatches++
			v.problem("customer %s: balance %s, but granted %s − acknowledged burns %s = %s",
				r.customers[i], formatUnits(leaderBal[i], creditScale), formatUnits(g, creditScale),
				formatUnits(b, creditScale), formatUnits(want, creditScale))
		}
	}
	v.AckedBurned, v.ServerBurned = formatUnits(acked, creditScale), formatUnits(server, creditScale)
	if acked != server {
		v.problem("credits burned: the clients saw %s acknowledged, the balances say %s", v.AckedBurned, v.ServerBurned)
	}

	// Every replica, once it has applied what the leader had when it
	// answered, must hold the same balances. No writes run now (ticks
	// move the log but not balances: no grant expires, no hold times out
	// within a run).
	for _, ep := range r.nodes {
		rc := ReplicaCheck{Node: ep.id, URL: ep.url}
		applied, err := r.waitApplied(ctx, ep, maxIndex.Load())
		rc.AppliedIndex = applied
		if err != nil {
			v.problem("replica %s: %v", ep.id, err)
			v.Replicas = append(v.Replicas, rc)
			continue
		}
		var mismatches atomic.Int64
		err = parallel(ctx, n, verifyParallel, func(ctx context.Context, i int) error {
			return attempt(ctx, to, resolveAttempts, func(ctx context.Context) error {
				res, err := ep.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{
					CustomerId: r.customers[i], CreditTypeId: creditTypeID, Consistency: v1.Consistency_CONSISTENCY_STALE}))
				if err != nil {
					return errf(err, "stale balance of %s on %s", r.customers[i], ep.id)
				}
				b, err := parseUnits(res.Msg.Balance, creditScale)
				if err != nil {
					return errf(err, "balance of %s on %s", r.customers[i], ep.id)
				}
				if b != leaderBal[i] {
					mismatches.Add(1)
				}
				return nil
			})
		})
		rc.Mismatches = int(mismatches.Load())
		if err != nil {
			v.problem("replica %s: %v", ep.id, err)
		} else if rc.Mismatches > 0 {
			v.problem("replica %s: %d balances differ from the leader's", ep.id, rc.Mismatches)
		}
		v.Replicas = append(v.Replicas, rc)
	}
	v.OK = len(v.Problems) == 0 && v.Unresolved == 0 && v.BalanceMismatches == 0
	return v
}

// resolve resends the writes of unknown outcome, in parallel: each carries
// its idempotency key, so the answer is the original outcome, and its
// accounting runs. A write that still gets no answer after its attempts
// says the cluster cannot be reached: the rest would wait as long each, so
// resending stops there, as it does at resolveTimeout, and every write not
// resolved by then counts as unresolved. It reports false when it stopped
// short.
func (r *runner) resolve(ctx context.Context, v *Verification) bool {
	n := len(r.unresolved)
	if n == 0 {
		return true
	}
	ctx, cancel := context.WithTimeoutCause(ctx, resolveTimeout,
		fmt.Errorf("not all resolved within %s", resolveTimeout))
	defer cancel()
	var resolved atomic.Int64
	var mu sync.Mutex
	var refused error // the first answer that was not the outcome
	err := parallel(ctx, n, verifyParallel, func(ctx context.Context, i int) error {
		err := attempt(ctx, r.cfg.RequestTimeout, resolveAttempts, r.unresolved[i])
		switch {
		case err == nil:
			resolved.Add(1)
			return nil
		case retryable(err) || ctx.Err() != nil:
			return err
		}
		mu.Lock()
		if refused == nil {
			refused = err
		}
		mu.Unlock()
		return nil
	})
	v.Unresolved = n - int(resolved.Load())
	switch {
	case err != nil && ctx.Err() != nil:
		v.problem("%d of %d writes of unknown outcome are unresolved: resending them stopped: %v", v.Unresolved, n, context.Cause(ctx))
		return false
	case err != nil:
		v.problem("%d of %d writes of unknown outcome are unresolved: resending them stopped when one failed all %d attempts (the cluster does not answer): %v",
			v.Unresolved, n, resolveAttempts, err)
		return false
	case refused != nil:
		v.problem("%d of %d writes of unknown outcome are unresolved: %v", v.Unresolved, n, refused)
	}
	return true
}

// waitApplied waits until the node has applied index, and returns what it
// has applied.
func (r *runner) waitApplied(ctx context.Context, ep *endpoint, index uint64) (uint64, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var applied uint64
		err := attempt(ctx, r.cfg.RequestTimeout, resolveAttempts, func(ctx context.Context) error {
			res, err := ep.cluster.GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
			if err == nil {
				applied = res.Msg.AppliedIndex
			}
			return err
		})
		switch {
		case err != nil:
			return applied, errf(err, "status")
		case applied >= index:
			return applied, nil
		case time.Now().After(deadline):
			return applied, fmt.Errorf("applied index %d has not reached the leader's %d after 60s", applied, index)
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return applied, ctx.Err()
		}
	}
}
