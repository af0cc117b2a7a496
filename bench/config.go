package bench

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Op names an operation of the mix.
type Op string

// The operations of the mix. reserve is a Reserve followed by a Settle (or,
// one time in four, a Release) of the same hold; each call is measured on
// its own.
const (
	OpReport  Op = "report"
	OpCheck   Op = "check"
	OpReserve Op = "reserve"
	OpGrant   Op = "grant"
	// OpSettle and OpRelease are measured, not chosen: they follow reserve.
	OpSettle  Op = "settle"
	OpRelease Op = "release"
)

// mixOps are the operations a mix may name, in report order.
var mixOps = []Op{OpReport, OpCheck, OpReserve, OpGrant}

// allOps are every measured operation, in report order.
var allOps = []Op{OpReport, OpCheck, OpReserve, OpSettle, OpRelease, OpGrant}

// Mix is the relative weight of each operation.
type Mix map[Op]int

// DefaultMix is mostly usage reports, as in production.
const DefaultMix = "report=80,check=10,reserve=5,grant=5"

// ParseMix reads "report=80,check=10,reserve=5,grant=5". Weights are
// relative (they need not add to 100); operations left out get 0.
func ParseMix(s string) (Mix, error) {
	m := Mix{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want op=weight, got %q", s, part)
		}
		op := Op(strings.TrimSpace(name))
		if !slices.Contains(mixOps, op) {
			return nil, fmt.Errorf("mix %q: unknown operation %q (want report, check, reserve or grant)", s, name)
		}
		if _, dup := m[op]; dup {
			return nil, fmt.Errorf("mix %q: %s given twice", s, op)
		}
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 || n > 1_000_000 {
			return nil, fmt.Errorf("mix %q: weight of %s must be an integer 0..1000000", s, op)
		}
		m[op] = n
	}
	total := 0
	for _, w := range m {
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: no operation has a weight", s)
	}
	return m, nil
}

// String writes the mix in ParseMix's form.
func (m Mix) String() string {
	var parts []string
	for _, op := range mixOps {
		if w := m[op]; w > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", op, w))
		}
	}
	return strings.Join(parts, ",")
}

// Config is one run.
type Config struct {
	// Addr is the API address of any node (http://host:port). The cluster's
	// other nodes are found through its status.
	Addr string
	// APIKey is sent as a bearer token; it needs the admin scope for setup.
	APIKey string
	// RootCAs verifies the nodes' certificates for an https Addr; nil
	// trusts the system's roots.
	RootCAs *x509.CertPool
	// Spread sends requests to every node in turn (followers forward
	// writes) instead of only to the leader.
	Spread bool

	// Customers is how many customers the setup creates and the load uses.
	Customers int
	// GrantsPerCustomer is how many grants each pool starts with.
	GrantsPerCustomer int
	// Zipf is the skew of customer activity: 0 = uniform, > 1 = Zipf's
	// exponent (1.1 is mildly skewed, 2 puts most load on a few).
	Zipf float64

	// Warmup is load that is not measured; Duration is measured load.
	Warmup, Duration time.Duration
	// Concurrency is how many clients send at once, each waiting for its
	// answer before sending again.
	Concurrency int
	// Rate, when > 0, caps requests/s over all clients (open loop): each
	// request has a scheduled start, and its latency counts from that
	// time, so a slow server is not hidden by clients that wait for it.
	Rate float64
	// Batch is the number of events per ReportUsage.
	Batch int
	// Mix weighs the operations.
	Mix Mix
	// Seed makes the workload (customers, quantities, operations) repeat.
	Seed uint64
	// RandomIDs gives events, grants and reservations ids in random order
	// (as UUIDv4 would be) instead of increasing per client (as UUIDv7 or
	// a counter would be). The state machine's idempotency records are
	// keyed by id, so random ids dirty one B+tree page per event.
	RandomIDs bool
	// RequestTimeout bounds one call.
	RequestTimeout time.Duration

	// Noop says the cluster runs the no-op state machine: no setup, only
	// reports, and no verification; a report is complete when the server
	// answers, since it has no results to give.
	Noop bool
	// NoopEventCost is, with Noop, the CPU the no-op state machine of a
	// local cluster spends per usage event it applies, on every replica
	// (node.NewCostlyNoopStateMachine): a stand-in for a state machine
	// whose apply costs that much. It is recorded in the report; the
	// cluster is configured by whoever starts it.
	NoopEventCost time.Duration
	// SkipVerify skips the end-of-run checks.
	SkipVerify bool
	// RunID prefixes every id the run creates, so runs against one cluster
	// do not collide. "" = derived from the clock.
	RunID string
	// Existing, when set, skips the setup and uses the customers an
	// earlier setup made: the run id of that run, or the --run-id of
	// "creditd bench seed". Customers 0..Customers-1 of it must exist;
	// their starting balances are read first, so the verification still
	// holds. GrantsPerCustomer is then not used.
	Existing string

	// BeforeLoad and AfterLoad, when set, run just before the warmup and
	// just after the measured window (a CPU profile of the load alone).
	BeforeLoad, AfterLoad func()

	// Progress, when set, gets a live line once a second (a terminal).
	Progress io.Writer
	// Log, when set, gets a line per phase.
	Log io.Writer
}

// Limits on a run, so a typo cannot ask for absurd memory or time.
const (
	MaxCustomers   = 10_000_000
	MaxGrants      = 1000
	MaxConcurrency = 4096
	MaxBatch       = 10_000 // the API's limit per ReportUsage
	MaxDuration    = 24 * time.Hour
	// MinRate keeps the interval between scheduled requests (1/rate) at
	// 1000 s or less: below about 1e-10 requests/s it would overflow a
	// time.Duration, and a run of MaxDuration still has 86 of them.
	MinRate = 0.001
	MaxRate = 10_000_000
	// MaxNoopEventCost bounds --noop-event-cost: at 10 ms an event, a
	// 1,000-event entry already takes each replica 10 s to apply.
	MaxNoopEventCost = 10 * time.Millisecond
)

// ValidRunID says whether id can be a run id (and so a customer id
// prefix): 1 to 16 of [a-z0-9].
func ValidRunID(id string) bool { return validRunID(id) }

func validRunID(id string) bool {
	return id != "" && len(id) <= 16 && strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.Customers == 0 {
		c.Customers = 1000
	}
	if c.GrantsPerCustomer == 0 {
		c.GrantsPerCustomer = 1
	}
	if c.Duration == 0 {
		c.Duration = 30 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Mix == nil {
		c.Mix, _ = ParseMix(DefaultMix)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.RunID == "" {
		c.RunID = strconv.FormatInt(time.Now().UnixMilli()%(1<<40), 36)
	}
}

// Validate names the first wrong field.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Addr)
	switch {
	case c.Addr == "":
		return errors.New("bench: --addr is required")
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return fmt.Errorf("bench: --addr %q: want http://host:port", c.Addr)
	}
	if err := c.ValidateWorkload(); err != nil {
		return err
	}
	switch {
	case !validRunID(c.RunID):
		return fmt.Errorf("bench: run id %q: want 1 to 16 of [a-z0-9]", c.RunID)
	case c.Existing != "" && c.Existing == c.RunID:
		return fmt.Errorf("bench: --existing %q is this run's own id: event ids would repeat a former run's and be answered as duplicates", c.Existing)
	}
	return nil
}

// ValidateWorkload names the first wrong field of those a command line
// sets (all but the address and the run id, which may not be known yet).
// A command line calls it before Run, whose Defaults would take a 0 given
// on purpose for a field left unset and replace it.
//
// Bounds are written as what is accepted, so that NaN, which every
// comparison answers false, falls outside them.
func (c *Config) ValidateWorkload() error {
	switch {
	case c.Customers < 1 || c.Customers > MaxCustomers:
		return fmt.Errorf("bench: --customers %d is outside 1..%d", c.Customers, MaxCustomers)
	case c.GrantsPerCustomer < 1 || c.GrantsPerCustomer > MaxGrants:
		return fmt.Errorf("bench: --grants %d is outside 1..%d", c.GrantsPerCustomer, MaxGrants)
	case !(c.Zipf == 0 || (c.Zipf > 1 && c.Zipf <= 10)):
		return fmt.Errorf("bench: --zipf %g: want 0 (uniform) or an exponent in (1, 10]", c.Zipf)
	case c.Warmup < 0 || c.Warmup > MaxDuration:
		return fmt.Errorf("bench: --warmup %s is outside 0..%s", c.Warmup, MaxDuration)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("bench: --duration %s is outside (0, %s]", c.Duration, MaxDuration)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return fmt.Errorf("bench: --concurrency %d is outside 1..%d", c.Concurrency, MaxConcurrency)
	case !(c.Rate == 0 || (c.Rate >= MinRate && c.Rate <= MaxRate)):
		return fmt.Errorf("bench: --rate %g: want 0 (as fast as answered) or %g..%d requests/s", c.Rate, MinRate, int64(MaxRate))
	case c.Batch < 1 || c.Batch > MaxBatch:
		return fmt.Errorf("bench: --batch %d is outside 1..%d", c.Batch, MaxBatch)
	case c.RequestTimeout < time.Millisecond || c.RequestTimeout > 10*time.Minute:
		return fmt.Errorf("bench: --timeout %s is outside 1ms..10m", c.RequestTimeout)
	case c.Existing != "" && !validRunID(c.Existing):
		return fmt.Errorf("bench: --existing %q: want the run id of the setup, 1 to 16 of [a-z0-9]", c.Existing)
	case c.Existing != "" && c.Noop:
		return errors.New("bench: --existing and --noop: a no-op cluster has no customers")
	case c.NoopEventCost != 0 && !c.Noop:
		return errors.New("bench: --noop-event-cost is the cost of the no-op state machine: give --noop too")
	case c.NoopEventCost < 0 || c.NoopEventCost > MaxNoopEventCost:
		return fmt.Errorf("bench: --noop-event-cost %s is outside 0..%s", c.NoopEventCost, MaxNoopEventCost)
	}
	if len(c.Mix) == 0 {
		return errors.New("bench: --mix is empty")
	}
	return nil
}
