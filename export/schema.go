package export

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// Fixed decimal types of every exported amount. Credit amounts are int64
// units of their credit type's scale (at most fsm.MaxCreditScale = 9), so
// scale 9 holds every one of them exactly; 38 digits is the widest decimal
// warehouses load natively (BigQuery NUMERIC is exactly DECIMAL(38,9)).
var (
	creditsType   = &arrow.Decimal128Type{Precision: 38, Scale: creditsScale}
	moneyType     = &arrow.Decimal128Type{Precision: 38, Scale: moneyScale}
	costBasisType = &arrow.Decimal128Type{Precision: 38, Scale: costBasisScale}
	timestampType = arrow.FixedWidthTypes.Timestamp_us // microseconds, UTC
)

const (
	creditsScale   = 9  // fsm.MaxCreditScale
	moneyScale     = 6  // fsm.MoneyScale
	costBasisScale = 12 // fsm.MaxDecimalScale
)

// Column documents one exported column. The README's schema tables are
// checked against these lists by a test, so the documentation cannot drift.
type Column struct {
	Name     string
	Type     arrow.DataType
	Nullable bool
	// Dict says the column is dictionary encoded in Parquet (low cardinality).
	Dict bool
	Doc  string
}

// LedgerColumns is the schema of ledger/date=…/part-….parquet, one row per
// ledger entry, in sequence order.
var LedgerColumns = []Column{
	{"seq", arrow.PrimitiveTypes.Int64, false, false, "ledger sequence number: 1, 2, 3… in apply order, gapless across all parts"},
	{"time", timestampType, false, false, "log time of the command that made the entry (leader's clock, UTC, microseconds)"},
	{"customer_id", arrow.BinaryTypes.String, false, true, "customer of the pool"},
	{"credit_type_id", arrow.BinaryTypes.String, false, true, "credit type of the pool"},
	{"credit_scale", arrow.PrimitiveTypes.Int32, false, false, "decimal places of the credit type (amount × 10^credit_scale is the integer amount fsm stores)"},
	{"grant_id", arrow.BinaryTypes.String, true, false, "grant the entry touched; null for an overdraft shortfall (usage burned beyond the grants)"},
	{"grant_category", arrow.BinaryTypes.String, true, true, "paid or promotional, the category of grant_id; null when grant_id is null"},
	{"kind", arrow.BinaryTypes.String, false, true, "grant, burn, expire, revoke, adjust or repay"},
	{"amount", creditsType, false, false, "signed change to the pool balance in credits: + grant, − burn, − expire, − revoke, ± adjust, 0 for repay"},
	{"repaid", creditsType, false, false, "repay only: credits moved out of grant_id to cover the pool's overdraft (the pool balance does not change); 0 otherwise"},
	{"balance_after", creditsType, false, false, "pool balance (Σ remaining of live grants − overdraft) right after this entry"},
	{"cost_basis", costBasisType, false, false, "price per whole credit of grant_id in currency; 0 for promotional grants and shortfalls"},
	{"currency", arrow.BinaryTypes.String, true, true, "ISO 4217 code of cost_basis and money_amount; null for promotional grants and shortfalls"},
	{"money_amount", moneyType, false, false, "signed change to deferred revenue in currency: + grant, − burn and − repay (recognized revenue), − expire (breakage), − revoke (refund), ± adjust"},
	{"cause_kind", arrow.BinaryTypes.String, false, true, "what caused the entry: usage, reservation, purchase, grant, revoke, adjust, tick or none"},
	{"cause_id", arrow.BinaryTypes.String, true, false, "id of the cause: the usage event id, reservation id, purchase id, grant request id, revoke request id or adjustment id; null when none"},
	{"source_kind", arrow.BinaryTypes.String, true, true, "where grant_id came from: manual, purchase, invoice or payment; null when grant_id is null"},
	{"source_ref", arrow.BinaryTypes.String, true, false, "reference of the grant's source (purchase id, invoice or payment id); null when empty"},
	{"reason", arrow.BinaryTypes.String, true, false, "operator's reason of a revocation or adjustment; null when empty"},
}

// GrantColumns is the schema of grants/snapshot=…/grants.parquet: every
// grant in the replica's state at the cut whose last ledger entry is the
// snapshot's sequence, in grant id order.
var GrantColumns = []Column{
	{"snapshot_seq", arrow.PrimitiveTypes.Int64, false, false, "last ledger entry of the cut: the amounts are the grant's right after this entry"},
	{"grant_id", arrow.BinaryTypes.String, false, false, "grant id (also its idempotency key)"},
	{"customer_id", arrow.BinaryTypes.String, false, true, "customer of the pool"},
	{"credit_type_id", arrow.BinaryTypes.String, false, true, "credit type of the pool"},
	{"credit_scale", arrow.PrimitiveTypes.Int32, false, false, "decimal places of the credit type"},
	{"category", arrow.BinaryTypes.String, false, true, "paid or promotional"},
	{"status", arrow.BinaryTypes.String, false, true, "pending, active, depleted, expired or revoked, at the cut: may reflect a later command that wrote no ledger entry"},
	{"amount", creditsType, false, false, "credits granted, plus adjustments"},
	{"remaining", creditsType, false, false, "credits not yet burned, expired, revoked or repaid"},
	{"burned", creditsType, false, false, "credits burned from the grant so far (including overdraft repaid from it)"},
	{"expired", creditsType, false, false, "credits expired so far"},
	{"revoked", creditsType, false, false, "credits revoked so far"},
	{"adjusted", creditsType, false, false, "signed sum of operator adjustments so far"},
	{"cost_basis", costBasisType, false, false, "price per whole credit; 0 for promotional"},
	{"currency", arrow.BinaryTypes.String, true, true, "ISO 4217 code; null for promotional"},
	{"deferred_revenue", moneyType, false, false, "remaining × cost_basis rounded half-even to micros: revenue not yet recognized"},
	{"priority", arrow.PrimitiveTypes.Int64, false, false, "burn priority, 0 highest"},
	{"effective_at", timestampType, false, false, "when the grant starts to burn"},
	{"expires_at", timestampType, true, false, "when the remainder expires; null = never"},
	{"source_kind", arrow.BinaryTypes.String, false, true, "manual, purchase, invoice or payment"},
	{"source_ref", arrow.BinaryTypes.String, true, false, "purchase id, invoice or payment id; null when empty"},
	{"reason", arrow.BinaryTypes.String, true, false, "reason of the revocation, if any"},
	{"created_at", timestampType, false, false, "log time the grant was created"},
	{"updated_at", timestampType, false, false, "log time of its last change, at the cut: may be later than snapshot_seq's entry"},
}

func arrowSchema(cols []Column) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: c.Name, Type: c.Type, Nullable: c.Nullable}
	}
	return arrow.NewSchema(fields, nil)
}

var (
	ledgerSchema = arrowSchema(LedgerColumns)
	grantSchema  = arrowSchema(GrantColumns)
)
